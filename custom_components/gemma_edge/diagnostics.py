"""Diagnostics: engine settings, state and the last generation's figures.

Nothing secret: personal details and the server's API key are redacted.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from . import GemmaConfigEntry
from .action_events import event_data
from .const import CONF_SERVER_API_KEY, CONF_SYNC_SECRET, CONF_SYNC_URL
from .engine.host_platform import detect_host
from .engine.server_model import ServerModel
from .llama_runtime import checked_cpu_variant, checked_version

# Conversation instructions and what people said can hold personal details; a server's
# API key is a secret.
TO_REDACT = {"prompt", "reason", CONF_SERVER_API_KEY, CONF_SYNC_SECRET, CONF_SYNC_URL}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: GemmaConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings, engine state, hub and recent actions, redacted."""
    engine = entry.runtime_data.engine
    executor = entry.runtime_data.executor
    model = engine.model
    recent = await executor.async_recent(20) if executor.error is None else []
    host = await hass.async_add_executor_job(detect_host)
    return {
        "entry": {
            "data": async_redact_data(dict(entry.data), TO_REDACT),
            "options": dict(entry.options),
        },
        "subentries": [
            {
                "type": sub.subentry_type,
                "title": sub.title,
                "data": async_redact_data(dict(sub.data), TO_REDACT),
            }
            for sub in entry.subentries.values()
        ],
        "engine": {
            "status": engine.status,
            "last_error": engine.last_error,
            "architecture": model.architecture if model else None,
            "chat_format": model.chat_format.name
            if model and model.chat_format
            else None,
            "server": {"kind": model.kind, "model": model.model_id}
            if isinstance(model, ServerModel)
            else None,
            "threads": engine.settings.resolved_threads(),
            "context_size": engine.n_ctx,
            "last_generation": engine.last_stats.as_dict()
            if engine.last_stats
            else None,
        },
        "hub": {
            "platform": host.describe(),
            "llama_cpp_python": checked_version(hass),
            "cpu_variant_fallback": checked_cpu_variant(hass),
        },
        "vision": {
            "projector": engine.settings.mmproj_path,
            "available": engine.has_vision,
            "max_image_side": entry.runtime_data.vision.max_side,
            "camera_min_interval_s": entry.runtime_data.vision.min_interval,
        },
        "actions": {
            "ledger_error": executor.error,
            "recent": [
                async_redact_data(event_data(outcome), TO_REDACT) for outcome in recent
            ],
        },
    }
