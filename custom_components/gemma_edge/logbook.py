"""Logbook entries for agent actions that read as sentences."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.logbook import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.core import Event, HomeAssistant, callback

from .action_events import EVENT_ACTION, event_sentence
from .cloud_remote import EVENT_REMOTE_ACTION, remote_result_sentence
from .const import DOMAIN


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, Any]]], None],
) -> None:
    """Describe the agent's actions and remote actions' results in the logbook.

    E.g. "Gemma turned on Kitchen Light (asked in Assist)", "Gemma: order groceries
    done: Delivery at 5 pm."
    """

    @callback
    def describe(event: Event) -> dict[str, Any]:
        entity_ids = event.data.get("entity_ids") or []
        entry = {
            LOGBOOK_ENTRY_NAME: "Gemma",
            LOGBOOK_ENTRY_MESSAGE: event_sentence(hass, event.data),
        }
        if entity_ids:
            entry[LOGBOOK_ENTRY_ENTITY_ID] = entity_ids[0]
        return entry

    @callback
    def describe_remote(event: Event) -> dict[str, Any]:
        return {
            LOGBOOK_ENTRY_NAME: "Gemma",
            LOGBOOK_ENTRY_MESSAGE: remote_result_sentence(event.data),
        }

    async_describe_event(DOMAIN, EVENT_ACTION, describe)
    async_describe_event(DOMAIN, EVENT_REMOTE_ACTION, describe_remote)
