#!/usr/bin/env python3
"""Start Home Assistant (arguments as for `hass`), accepting Python 3.13.0/3.13.1.

Home Assistant 2026.2 asks for Python >= 3.13.2 but runs on 3.13.0, the newest 3.13 these
development machines have; on a newer Python this is the plain `hass` command.
"""

import sys

from homeassistant import __main__ as hass_main

hass_main.validate_python = lambda: None

if __name__ == "__main__":
    sys.exit(hass_main.main())
