"""``python -m cloud``: the reference cloud's command line."""

from cloud.cli import main

raise SystemExit(main())
