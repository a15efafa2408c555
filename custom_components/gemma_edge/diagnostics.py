"""Diagnostics: engine settings, state and the last generation's figures, cloud sync.

Nothing secret: personal details, the server's API key and cloud sync's URL, secret
and webhook id are redacted.
"""

from __future__ import annotations

from dataclasses import asdict
import sqlite3
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from . import GemmaConfigEntry
from .action_events import event_data
from .actions.ledger import LedgerError
from .cloud_sync import CloudSync
from .const import (
    CONF_SERVER_API_KEY,
    CONF_SYNC_SECRET,
    CONF_SYNC_URL,
    CONF_SYNC_WEBHOOK_ID,
)
from .engine.host_platform import detect_host
from .engine.server_model import ServerModel
from .llama_runtime import checked_cpu_variant, checked_version

# Conversation instructions and what people said can hold personal details; a server's
# API key is a secret.
TO_REDACT = {
    "prompt",
    "reason",
    "text",
    "answer",
    CONF_SERVER_API_KEY,
    CONF_SYNC_SECRET,
    CONF_SYNC_URL,
    CONF_SYNC_WEBHOOK_ID,
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: GemmaConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings, engine state, hub and recent actions, redacted."""
    engine = entry.runtime_data.engine
    executor = entry.runtime_data.executor
    model = engine.model
    recent = await executor.async_recent(20) if executor.error is None else []
    host = await hass.async_add_executor_job(detect_host)
    sync = entry.runtime_data.cloud_sync
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
        "cloud_sync": await _async_sync_diagnostics(sync) if sync else None,
    }


async def _async_sync_diagnostics(sync: CloudSync) -> dict[str, Any]:
    """Return the sync status, the outbox's figures and its latest envelopes."""
    status = sync.status
    try:
        recent = await sync.executor.async_on_ledger(sync.outbox.recent, 20)
        waiting = await sync.executor.async_on_ledger(sync.remote.book.waiting)
    except (LedgerError, sqlite3.Error) as err:
        recent, waiting = [{"error": str(err)}], None
    return {
        "state": status.state,
        "last_error": status.last_error,
        "last_success": status.last_success,
        "outbox": asdict(status.stats) if status.stats else None,
        "recent_events": recent,
        "remote_actions": sorted(sync.remote.specs),
        "remote_actions_waiting": waiting,
    }
