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
from .const import DOMAIN


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, Any]]], None],
) -> None:
    """Describe the agent's actions in the logbook.

    E.g. "Gemma turned on Kitchen Light (asked in Assist)".
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

    async_describe_event(DOMAIN, EVENT_ACTION, describe)
