"""What the agent did, told to Home Assistant.

The gemma_edge_action event and a dispatcher signal.
"""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .actions.describe import describe_action
from .actions.executor import ActionOutcome
from .const import CONF_KEEP_WORDS, DEFAULT_KEEP_WORDS, DOMAIN

EVENT_ACTION = f"{DOMAIN}_action"


def signal_action(entry_id: str) -> str:
    """Return the dispatcher signal carrying each ActionOutcome of an entry."""
    return f"{DOMAIN}_{entry_id}_action"


def keeps_words(entry: ConfigEntry) -> bool:
    """Return whether the user chose to keep their words with the actions.

    Those words are recorded for everyone to read.
    """
    return bool(entry.options.get(CONF_KEEP_WORDS, DEFAULT_KEEP_WORDS))


def event_data(outcome: ActionOutcome, *, with_words: bool = True) -> dict[str, Any]:
    """Return the documented fields of a gemma_edge_action event.

    ``reason`` (the user's words) is None unless ``with_words``.
    """
    action = outcome.action
    return {
        "key": outcome.key,
        "action_id": outcome.action_id or None,
        "tool": outcome.tool,
        "service": f"{action.domain}.{action.service}",
        "entity_ids": [action.entity_id] if action.domain != "tool" else [],
        "data": action.data,
        "status": outcome.status.value,
        "message": outcome.message,
        "kind": outcome.kind.value,
        "conversation_id": outcome.conversation_id,
        "source": outcome.source,
        "reason": outcome.reason if with_words else None,
    }


@callback
def announce_outcome(
    hass: HomeAssistant, entry: ConfigEntry, outcome: ActionOutcome
) -> None:
    """Fire the event and tell the entities.

    The event is fired in the action's own context, so logbook and traces link up.
    """
    context = Context(id=outcome.action_id) if outcome.action_id else None
    hass.bus.async_fire(
        EVENT_ACTION,
        event_data(outcome, with_words=keeps_words(entry)),
        context=context,
    )
    async_dispatcher_send(hass, signal_action(entry.entry_id), outcome)


def friendly_name(hass: HomeAssistant, entity_id: str) -> str:
    """Return the entity's friendly name, or its id when it has no state."""
    state = hass.states.get(entity_id)
    return state.name if state is not None else entity_id


def outcome_sentence(hass: HomeAssistant, outcome: ActionOutcome) -> str:
    """Describe the outcome in one sentence.

    E.g. "turned on Kitchen Light (asked in Assist)".
    """
    action = outcome.action
    return describe_action(
        f"{action.domain}.{action.service}",
        friendly_name(hass, action.entity_id),
        outcome.status.value,
        outcome.message,
        outcome.source,
    )
