"""What the engine's config flow checks before it keeps a model.

A local GGUF file (and its vision projector) or a llama.cpp server. Shared by setup,
reauthentication and reconfiguration; each check returns the form's errors (empty when
all is well).
"""

from __future__ import annotations

import os
from pathlib import Path

from homeassistant.core import HomeAssistant

from .const import CONF_MMPROJ_PATH, CONF_MODEL_PATH, LOGGER
from .engine.gguf_info import GGUFError, GGUFInfo, read_gguf_info
from .engine.llama_model import EngineError, EngineSettings, ModelLoadError
from .engine.server_model import ServerAuthError, probe_server


def validate_model_file(path: str) -> GGUFInfo:
    """Check a local model file (blocking).

    Raises GGUFError with the form's error key in args[0].
    """
    if not path or not Path(path).is_file():
        raise GGUFError("model_not_found")
    try:
        info = read_gguf_info(path)
    except GGUFError as err:
        LOGGER.info("Rejected model file %s: %s", path, err)
        raise GGUFError("not_gguf") from err
    if not info.is_text_model:
        raise GGUFError("unsupported_architecture")
    return info


async def async_check_model_files(
    hass: HomeAssistant, path: str, mmproj: str
) -> tuple[dict[str, str], GGUFInfo | None]:
    """Check a model file and an optional projector; return errors and its info."""
    try:
        info = await hass.async_add_executor_job(validate_model_file, path)
    except GGUFError as err:
        return {CONF_MODEL_PATH: str(err)}, None
    except Exception:
        LOGGER.exception("Unexpected error while checking %s", path)
        return {"base": "unknown"}, None
    if mmproj and not await hass.async_add_executor_job(os.path.isfile, mmproj):
        return {CONF_MMPROJ_PATH: "mmproj_not_found"}, info
    return {}, info


async def async_check_server(
    hass: HomeAssistant, settings: EngineSettings
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Probe a llama.cpp server; return errors and its (kind, model name)."""
    url = settings.server_url
    try:
        found = await hass.async_add_executor_job(probe_server, settings)
    except ServerAuthError:
        return {"base": "invalid_auth"}, None
    except ModelLoadError as err:
        LOGGER.warning("The llama.cpp server at %s cannot be used: %s", url, err)
        return {"base": "server_model_unsupported"}, None
    except EngineError as err:
        LOGGER.warning("Cannot reach the llama.cpp server at %s: %s", url, err)
        return {"base": "cannot_connect"}, None
    except Exception:
        LOGGER.exception("Unexpected error while probing %s", url)
        return {"base": "unknown"}, None
    return {}, found
