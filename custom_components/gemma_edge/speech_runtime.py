"""faster-whisper, installed only when speech-to-text is wanted.

CTranslate2 (faster-whisper's engine) publishes no musl wheels: on Home Assistant OS and
Container the install fails, and speech goes through the Whisper add-on (Wyoming) instead. The
conversation agent never depends on it.
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.requirements import async_process_requirements

from .const import DOMAIN

FASTER_WHISPER = "faster-whisper==1.2.1"


async def async_install_faster_whisper(hass: HomeAssistant) -> None:
    """Install faster-whisper if missing (Home Assistant's installer); raises HomeAssistantError
    (RequirementsNotFound) where it cannot be installed."""
    await async_process_requirements(hass, f"{DOMAIN}.stt", [FASTER_WHISPER])
