"""The ``ask``, ``sync_now`` and ``get_dashboard`` actions of ``gemma_edge``.

Ask an agent (optionally showing it camera snapshots) from an automation and get
``{text, actions, conversation_id}`` back; deliver the cloud outbox now; get a ready
dashboard of an engine with its entity ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import voluptuous as vol

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .action_events import event_data
from .const import DOMAIN
from .dashboard import dashboard_config, entry_entities

if TYPE_CHECKING:
    from . import GemmaConfigEntry
    from .conversation import GemmaConversationEntity

SERVICE_ASK = "ask"
SERVICE_SYNC_NOW = "sync_now"
SERVICE_GET_DASHBOARD = "get_dashboard"
ATTR_CONFIG_ENTRY_ID = "config_entry_id"
ATTR_AGENT_ID = "agent_id"
ATTR_TEXT = "text"
ATTR_CAMERAS = "camera_entity_id"
ATTR_CONVERSATION_ID = "conversation_id"

ASK_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_TEXT): cv.string,
        vol.Optional(ATTR_CAMERAS, default=[]): cv.entity_ids,
        vol.Optional(ATTR_AGENT_ID): cv.entity_id,
        vol.Optional(ATTR_CONVERSATION_ID): cv.string,
    }
)

GET_DASHBOARD_SCHEMA = vol.Schema({vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string})


def _find_agent(
    hass: HomeAssistant, agent_id: str | None
) -> tuple[GemmaConfigEntry, GemmaConversationEntity]:
    """Return the entry and conversation entity of an agent.

    The agent with the given id, or the first agent of a loaded entry.
    """
    for entry in hass.config_entries.async_entries(DOMAIN):
        if entry.state is not ConfigEntryState.LOADED:
            continue
        agents = entry.runtime_data.agents
        if agent_id is None and agents:
            return entry, next(iter(agents.values()))
        if agent_id in agents:
            return entry, agents[agent_id]
    if agent_id is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="no_agent"
        )
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="agent_not_found",
        translation_placeholders={"agent": agent_id},
    )


async def _async_ask(call: ServiceCall) -> ServiceResponse:
    hass = call.hass
    entry, agent = _find_agent(hass, call.data.get(ATTR_AGENT_ID))
    runtime = entry.runtime_data
    cameras: list[str] = call.data[ATTR_CAMERAS]
    if cameras and not runtime.engine.has_vision:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="vision_unavailable",
            translation_placeholders={
                "error": "no vision projector (mmproj) is configured"
            },
        )
    images = [
        await runtime.vision.async_snapshot(entity_id, automation=True)
        for entity_id in cameras
    ]
    result, outcomes = await agent.async_ask(
        call.data[ATTR_TEXT], images, call.data.get(ATTR_CONVERSATION_ID), call.context
    )
    speech = result.response.speech.get("plain", {}).get("speech", "")
    return {
        "text": speech,
        "response_type": result.response.response_type.value,
        "conversation_id": result.conversation_id,
        "actions": [event_data(outcome) for outcome in outcomes],
    }


async def _async_sync_now(call: ServiceCall) -> None:
    """Deliver every engine's outbox now, retries included."""
    syncing = [
        entry.runtime_data.cloud_sync
        for entry in call.hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED
        and entry.runtime_data.cloud_sync is not None
    ]
    if not syncing:
        raise ServiceValidationError(
            translation_domain=DOMAIN, translation_key="no_cloud_sync"
        )
    for sync in syncing:
        await sync.async_sync_now()


async def _async_get_dashboard(call: ServiceCall) -> ServiceResponse:
    """Return the dashboard of an engine (the first loaded one by default)."""
    wanted = call.data.get(ATTR_CONFIG_ENTRY_ID)
    for entry in call.hass.config_entries.async_entries(DOMAIN):
        if entry.state is ConfigEntryState.LOADED and wanted in (None, entry.entry_id):
            return dashboard_config(entry.title, entry_entities(call.hass, entry))
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="engine_not_found",
        translation_placeholders={"entry": wanted or "(any)"},
    )


def async_register_services(hass: HomeAssistant) -> None:
    """Register the integration's actions (once, at integration setup)."""
    hass.services.async_register(DOMAIN, SERVICE_SYNC_NOW, _async_sync_now)
    hass.services.async_register(
        DOMAIN,
        SERVICE_ASK,
        _async_ask,
        schema=ASK_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_GET_DASHBOARD,
        _async_get_dashboard,
        schema=GET_DASHBOARD_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
