"""faster-whisper, installed only when speech-to-text is wanted.

CTranslate2 (faster-whisper's engine) publishes no musl wheels: on Home Assistant OS
and Container it cannot be installed, and speech goes through the Whisper add-on
(Wyoming) instead. The conversation agent never depends on it.
"""

from __future__ import annotations

import importlib.util

from homeassistant.core import HomeAssistant
from homeassistant.requirements import async_process_requirements

from .const import DOMAIN
from .engine.host_platform import detect_host

FASTER_WHISPER = "faster-whisper==1.2.1"


def faster_whisper_installed() -> bool:
    """Return whether faster-whisper can be imported."""
    return importlib.util.find_spec("faster_whisper") is not None


async def async_faster_whisper_problem(hass: HomeAssistant) -> str | None:
    """Return why faster-whisper cannot run here.

    None: it is installed, or can be (glibc). Cheap, for the speech flow: the install
    itself (CTranslate2, onnxruntime: hundreds of MB) happens when the entity is set up.
    """
    if await hass.async_add_executor_job(faster_whisper_installed):
        return None
    host = await hass.async_add_executor_job(detect_host)
    if host.libc == "glibc":
        return None
    return (
        "CTranslate2, which faster-whisper runs on, publishes no builds for "
        f"{host.libc} ({host.machine})"
    )


async def async_install_faster_whisper(hass: HomeAssistant) -> None:
    """Install faster-whisper if missing (Home Assistant's installer).

    Raises HomeAssistantError (RequirementsNotFound) where it cannot be installed.
    """
    await async_process_requirements(hass, f"{DOMAIN}.stt", [FASTER_WHISPER])
