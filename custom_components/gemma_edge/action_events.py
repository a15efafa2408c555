"""What the agent did, told to Home Assistant.

The gemma_edge_action event, a dispatcher signal for the dashboards' entities, and
sentences about actions in Home Assistant's language (the ``common`` translations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_CORE_CONFIG_UPDATE
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.translation import async_get_translations
from homeassistant.util.hass_dict import HassKey

from .actions.describe import describe_action
from .actions.outcomes import ActionOutcome
from .const import CONF_KEEP_WORDS, DEFAULT_KEEP_WORDS, DOMAIN

EVENT_ACTION = f"{DOMAIN}_action"
# The ``common`` translations in Home Assistant's language, prefix removed.
_PHRASES: HassKey[dict[str, str]] = HassKey(f"{DOMAIN}_phrases")


async def async_load_phrases(hass: HomeAssistant) -> None:
    """Load the sentences about actions in Home Assistant's language.

    English fills what a language lacks. Loaded again when the language changes.
    """
    prefix = f"component.{DOMAIN}.common."
    translations = await async_get_translations(
        hass, hass.config.language, "common", [DOMAIN]
    )
    hass.data[_PHRASES] = {
        key.removeprefix(prefix): text
        for key, text in translations.items()
        if key.startswith(prefix)
    }


def _phrases(hass: HomeAssistant) -> dict[str, str]:
    # Loaded by the integration's setup; empty before (describe_action copes).
    return hass.data.get(_PHRASES, {})


def asked_note(hass: HomeAssistant, words: str) -> str:
    """Return the note of what the user said, for a calendar event's description."""
    template = _phrases(hass).get("calendar_asked", "{words}")
    return template.format(words=words)


@callback
def async_follow_language(hass: HomeAssistant) -> None:
    """Load the sentences again whenever Home Assistant's language changes."""
    language = hass.config.language

    async def reload(_event: Event) -> None:
        nonlocal language
        if hass.config.language != language:
            language = hass.config.language
            await async_load_phrases(hass)

    hass.bus.async_listen(EVENT_CORE_CONFIG_UPDATE, reload)


def signal_action(entry_id: str) -> str:
    """Return the dispatcher signal carrying each ActionOutcome of an entry."""
    return f"{DOMAIN}_{entry_id}_action"


@dataclass(frozen=True)
class TurnReport:
    """How one turn of an agent went: the path that understood it and its time."""

    agent: str  # the entity id of the conversation agent or AI Task entity
    path: str  # "matcher" (Home Assistant's sentences) or "model"
    seconds: float
    actions: int
    conversation_id: str = ""
    source: str = ""  # conversation, service (gemma_edge.ask) or ai_task
    language: str = ""
    # the ids of the turn's actions (their contexts, and the ledger's action ids)
    action_ids: tuple[str, ...] = ()
    # what was said: the user's words and the answer (reported only when chosen)
    words: str = ""
    answer: str = ""
    # images the model looked at: attached to the turn and snapshots its tools took
    images: int = 0


@dataclass(frozen=True)
class SpeechReport:
    """One transcription by a speech-to-text entity of the entry."""

    audio_seconds: float
    transcribe_seconds: float


def signal_speech(entry_id: str) -> str:
    """Return the dispatcher signal carrying a SpeechReport after each transcription."""
    return f"{DOMAIN}_{entry_id}_speech"


def signal_turn(entry_id: str) -> str:
    """Return the dispatcher signal carrying a TurnReport after each turn."""
    return f"{DOMAIN}_{entry_id}_turn"


def keeps_words(entry: ConfigEntry) -> bool:
    """Return whether the user chose to keep their words with the actions.

    Those words are recorded for everyone to read.
    """
    return bool(entry.options.get(CONF_KEEP_WORDS, DEFAULT_KEEP_WORDS))


def event_data(outcome: ActionOutcome, *, with_words: bool = True) -> dict[str, Any]:
    """Return the documented fields of a gemma_edge_action event.

    ``reason`` (the user's words) is None unless ``with_words``.
    """
    return outcome.as_event(with_words=with_words)


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
        _phrases(hass),
    )


@callback
def event_sentence(hass: HomeAssistant, data: Mapping[str, Any]) -> str:
    """Describe a gemma_edge_action event's action in one sentence (the logbook)."""
    entity_ids = data.get("entity_ids") or []
    return describe_action(
        data.get("service", ""),
        friendly_name(hass, entity_ids[0]) if entity_ids else "",
        data.get("status", ""),
        data.get("message", ""),
        data.get("source", ""),
        _phrases(hass),
    )
