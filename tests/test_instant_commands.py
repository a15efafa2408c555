"""Instant commands on the demo home: Home Assistant's sentence matcher before the model,
through the same ToolRunner and executor (issue 14)."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN
from homeassistant.components import conversation
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm

from .demo_agent import AGENT, ask, state
from .scripted_model import call


def _instant(hass: HomeAssistant, entry: Any, on: bool) -> None:
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, CONF_INSTANT_COMMANDS: on})


@pytest.fixture
async def instant_agent(hass: HomeAssistant, agent: Any) -> Any:
    entry, model, calls = agent
    _instant(hass, entry, True)
    await hass.async_block_till_done()
    return entry, model, calls


# (words, the home before: service calls, what must change: {entity_id: (attribute or "state", value)}, answer)
COMMANDS: list[tuple[str, list[tuple[str, dict[str, Any]]], dict[str, tuple[str, Any]], str]] = [
    ("Turn off the kitchen lights", [("light.turn_on", {"entity_id": "light.kitchen_lights"})],
     {"light.kitchen_lights": ("state", "off")}, "Turned off Kitchen Lights."),
    ("turn on the bed light", [("light.turn_off", {"entity_id": "light.bed_light"})],
     {"light.bed_light": ("state", "on")}, "Turned on Bed Light."),
    ("Close the kitchen window", [("cover.open_cover", {"entity_id": "cover.kitchen_window"})],
     {"cover.kitchen_window": ("state", "closed")}, "Closed Kitchen Window."),
    ("Turn off the ceiling lights", [("light.turn_on", {"entity_id": "light.ceiling_lights"})],
     {"light.ceiling_lights": ("state", "off")}, "Turned off Ceiling Lights."),
    ("Turn on the decorative lights", [("switch.turn_off", {"entity_id": "switch.decorative_lights"})],
     {"switch.decorative_lights": ("state", "on")}, "Turned on Decorative Lights."),
    ("Turn off the AC", [("switch.turn_on", {"entity_id": "switch.ac"})], {"switch.ac": ("state", "off")}, "Turned off AC."),
    ("Turn off the lights in the kitchen", [("light.turn_on", {"entity_id": "light.kitchen_lights"})],
     {"light.kitchen_lights": ("state", "off")}, "Turned off Kitchen Lights."),
    ("Turn on the lights in the living room", [("light.turn_off", {"entity_id": "all"})],
     {"light.ceiling_lights": ("state", "on"), "light.living_room_rgbww_lights": ("state", "on")},
     "Turned on Ceiling Lights. Turned on Living Room RGBWW Lights."),
    ("Set the bed light brightness to 40%", [("light.turn_on", {"entity_id": "light.bed_light", "brightness_pct": 100})],
     {"light.bed_light": ("brightness", 102)}, "Turned on Bed Light at 40%."),
    ("Turn off the living room fan", [("fan.turn_on", {"entity_id": "fan.living_room_fan"})],
     {"fan.living_room_fan": ("state", "off")}, "Turned off Living Room Fan."),
    ("Turn on the ceiling fan", [("fan.turn_off", {"entity_id": "fan.ceiling_fan"})],
     {"fan.ceiling_fan": ("state", "on")}, "Turned on Ceiling Fan."),
    ("Set the ceiling fan to 50 percent", [("fan.turn_on", {"entity_id": "fan.ceiling_fan", "percentage": 100})],
     {"fan.ceiling_fan": ("percentage", 50)}, "Turned on Ceiling Fan at 50%."),
]  # fmt: skip


@pytest.mark.parametrize(("words", "before", "changes", "answer"), COMMANDS, ids=[c[0] for c in COMMANDS])
async def test_a_recognised_command_acts_without_the_model(
    hass: HomeAssistant,
    instant_agent: Any,
    words: str,
    before: list[tuple[str, dict[str, Any]]],
    changes: dict[str, tuple[str, Any]],
    answer: str,
) -> None:
    """A dozen everyday commands on the demo home: the right devices change, nothing else does,
    the answer is the outcome, and the model never generates."""
    entry, model, calls = instant_agent
    for service, data in before:
        domain, name = service.split(".")
        await hass.services.async_call(domain, name, data, blocking=True)
    await hass.async_block_till_done()
    calls.clear()
    events = _record_actions(hass)
    assert await ask(hass, words) == answer
    for entity_id, (attribute, value) in changes.items():
        assert state(hass, entity_id, None if attribute == "state" else attribute) == value, entity_id
    assert model.requests == []  # the model never generated
    assert {entity for c in calls for entity in [c["entity_id"]]} == set(changes)  # nothing else was called
    assert {(tuple(e.data["entity_ids"]), e.data["source"], e.data["path"]) for e in events} == {
        ((entity_id,), "conversation", "matcher") for entity_id in changes
    }
    assert {e.data["status"] for e in events} == {"executed"}


async def test_a_sensitive_device_still_asks_first(hass: HomeAssistant, instant_agent: Any) -> None:
    _entry, model, calls = instant_agent
    speech = await ask(hass, "Open the garage door")
    assert "confirmation" in speech
    assert state(hass, "cover.garage_door") == "closed" and calls == [] and model.requests == []


async def test_anything_else_goes_to_the_model_and_sees_what_was_done(hass: HomeAssistant, instant_agent: Any) -> None:
    _entry, model, _calls = instant_agent
    conversation_id = "instant"
    result = await conversation.async_converse(
        hass, "Turn off the kitchen lights", conversation_id, Context(), language="en", agent_id=AGENT
    )
    assert result.response.speech["plain"]["speech"] == "Turned off Kitchen Lights."
    assert model.requests == []
    model.script(call("HassTurnOn", name="Kitchen Lights"))
    await conversation.async_converse(
        hass, "Actually, switch that back please", conversation_id, Context(), language="en", agent_id=AGENT
    )
    await hass.async_block_till_done()
    assert len(model.requests) == 1  # not a sentence Home Assistant knows: the model answered
    prompt = model.requests[0].prompt
    assert "Turn off the kitchen lights" in prompt and "HassTurnOff" in prompt  # the matched turn is history
    assert state(hass, "light.kitchen_lights") == "on"


async def test_with_the_option_off_the_model_answers(hass: HomeAssistant, agent: Any) -> None:
    entry, model, _calls = agent
    _instant(hass, entry, False)
    await hass.async_block_till_done()
    model.script(call("HassTurnOff", name="Kitchen Lights"))
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."
    assert len(model.requests) == 1


def _record_actions(hass: HomeAssistant) -> list[Event]:
    events: list[Event] = []

    @callback
    def record(event: Event) -> None:
        events.append(event)

    hass.bus.async_listen("gemma_edge_action", record)
    return events


async def _converse(hass: HomeAssistant, words: str, conversation_id: str, device_id: str | None = None) -> str:
    result = await conversation.async_converse(
        hass, words, conversation_id, Context(), language="en", agent_id=AGENT, device_id=device_id
    )
    await hass.async_block_till_done()
    return result.response.speech["plain"]["speech"]


def _model_status(hass: HomeAssistant, entry: Any) -> Any:
    sensor = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_model_status")
    assert sensor is not None
    return hass.states.get(sensor)


async def test_the_path_is_in_the_event_and_on_the_model_status_sensor(hass: HomeAssistant, agent: Any) -> None:
    """path: matcher for a recognised command, path: model for what the model answered; the model
    status sensor shows the last turn's path and counts turns by path."""
    entry, model, _calls = agent
    _instant(hass, entry, True)
    await hass.async_block_till_done()
    events = _record_actions(hass)
    await ask(hass, "Turn off the kitchen lights")
    status = _model_status(hass, entry).attributes
    assert status["last_turn_path"] == "matcher" and status["last_turn_actions"] == 1
    assert status["last_turn_agent"] == AGENT and status["turns_by_path"] == {"matcher": 1}
    model.script(call("HassTurnOn", name="Kitchen Lights"))
    await ask(hass, "Switch the kitchen back on, would you")
    status = _model_status(hass, entry).attributes
    assert status["last_turn_path"] == "model" and status["turns_by_path"] == {"matcher": 1, "model": 1}
    assert [(e.data["status"], e.data["path"]) for e in events] == [("executed", "matcher"), ("executed", "model")]
    # the recorded outcome keeps its path (dashboards read the ledger after a restart)
    recent = await entry.runtime_data.executor.async_recent(10)
    assert sorted(outcome.path for outcome in recent) == ["matcher", "model"]


async def test_a_bare_yes_confirms_the_question_without_the_model(hass: HomeAssistant, instant_agent: Any) -> None:
    """"Open the garage door" is recognised and asks first; the user's bare "yes" in the next turn
    confirms that very call at once (no generation), through the executor's confirmation rules;
    a second "yes" has nothing left to confirm and goes to the model."""
    _entry, model, calls = instant_agent
    events = _record_actions(hass)
    conversation_id = "garage"

    assert await _converse(hass, "Open the garage door", conversation_id) == "I need your confirmation to open Garage Door. Should I go ahead?"
    assert await _converse(hass, "Yes please.", conversation_id) == "Opened Garage Door."
    assert model.requests == []
    assert calls == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]
    assert [(e.data["status"], e.data["path"]) for e in events] == [("needs_confirmation", "matcher"), ("executed", "matcher")]
    await _converse(hass, "yes", conversation_id)  # nothing was asked in the turn before: the model answers (its empty answer)
    assert len(model.requests) == 1 and len(calls) == 1


async def test_a_yes_that_says_more_goes_to_the_model(hass: HomeAssistant, instant_agent: Any) -> None:
    """"yes, close it instead" is not a bare yes: the model reads it (and the matched question in the
    history); its confirmed call still needs the question to have been about that very action."""
    _entry, model, calls = instant_agent
    conversation_id = "garage"

    assert "confirmation" in await _converse(hass, "Open the garage door", conversation_id)
    model.script(call("HassTurnOn", name="Garage Door", confirm=True))
    await _converse(hass, "yes, open it now", conversation_id)
    assert len(model.requests) == 1 and "Open the garage door" in model.requests[0].prompt
    assert calls == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]


async def test_a_bare_yes_after_a_model_question_is_confirmed_too(hass: HomeAssistant, instant_agent: Any) -> None:
    """The model asked (a name Home Assistant's sentences do not know); the bare "yes" confirms its
    call without a second generation."""
    _entry, model, calls = instant_agent
    conversation_id = "garage"

    model.script(call("HassTurnOn", name="Garage Door"))
    assert "confirmation" in await _converse(hass, "Would you be so kind as to open up the garage door", conversation_id)
    assert await _converse(hass, "ok, go ahead", conversation_id) == "Opened Garage Door."
    assert len(model.requests) == 1
    assert calls == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]


@pytest.mark.parametrize("instant", [True, False], ids=["matcher", "model"])
async def test_sensitive_and_unexposed_devices_get_the_same_answers_on_both_paths(
    hass: HomeAssistant, agent: Any, instant: bool
) -> None:
    """The garage door asks first whichever path understood it; the unexposed front door lock is
    never matched (Home Assistant's sentences see exposed entities only), so the model answers."""
    entry, model, calls = agent
    _instant(hass, entry, instant)
    await hass.async_block_till_done()
    model.script(call("HassTurnOn", name="Garage Door"))
    assert await ask(hass, "Open the garage door") == "I need your confirmation to open Garage Door. Should I go ahead?"
    assert len(model.requests) == (0 if instant else 1)
    model.requests.clear()
    model.outputs.clear()
    model.script(call("HassTurnOff", name="Front Door"))
    speech = await ask(hass, "Unlock the front door")
    assert len(model.requests) == 1  # not matched: the lock is not exposed
    assert "Front Door" in speech
    assert calls == [] and state(hass, "lock.front_door") == "locked" and state(hass, "cover.garage_door") == "closed"


@pytest.mark.parametrize("instant", [True, False], ids=["matcher", "model"])
async def test_a_retried_turn_acts_once_on_both_paths(hass: HomeAssistant, agent: Any, instant: bool) -> None:
    """A client retrying a turn (same words, same conversation, seconds later) gets the recorded
    outcome; the light switched back on in between stays on."""
    entry, model, calls = agent
    _instant(hass, entry, instant)
    await hass.async_block_till_done()
    events = _record_actions(hass)

    async def turn() -> str:
        model.script(call("HassTurnOff", name="Kitchen Lights"))
        return await _converse(hass, "Turn off the kitchen lights", "retried")

    assert await turn() == "Turned off Kitchen Lights."
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.kitchen_lights"}, blocking=True)
    assert await turn() == "I already did that: Kitchen Lights."
    assert state(hass, "light.kitchen_lights") == "on"
    assert [c["service"] for c in calls if c["entity_id"] == "light.kitchen_lights"] == ["light.turn_off", "light.turn_on"]
    path = "matcher" if instant else "model"
    assert [(e.data["status"], e.data["path"]) for e in events] == [("executed", path), ("deduplicated", path)]
    assert len(model.requests) == (0 if instant else 2)


async def test_questions_about_the_home_are_answered_from_its_state(hass: HomeAssistant, instant_agent: Any) -> None:
    """Questions Home Assistant's sentences recognise get its own answer from the current state, no
    model and no action; the model sees the question and answer in a later turn."""
    entry, model, calls = instant_agent
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.kitchen_lights"}, blocking=True)
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    calls.clear()
    events = _record_actions(hass)
    conversation_id = "questions"

    assert await _converse(hass, "Is the garage door open?", conversation_id) == "No, closed"
    assert await _converse(hass, "Is the bed light on?", conversation_id) == "No, off"
    assert (await _converse(hass, "Which lights are on?", conversation_id)).startswith("Ceiling Lights, Entrance Color + White Lights, Kitchen Lights")
    assert await _converse(hass, "What is the outside temperature?", conversation_id) == "Outside temperature is 15.6 °C"
    assert await _converse(hass, "What time is it?", conversation_id)  # its result holds a datetime.time: the next prompt must cope
    assert model.requests == [] and calls == [] and events == []
    assert _model_status(hass, entry).attributes["turns_by_path"] == {"matcher": 5}
    model.script(call("HassTurnOff", name="Kitchen Lights"))
    await _converse(hass, "Right, switch the kitchen off then", conversation_id)
    prompt = model.requests[0].prompt
    assert "Is the bed light on?" in prompt and "No, off" in prompt  # the answered questions are history
    assert state(hass, "light.kitchen_lights") == "off"


@pytest.mark.parametrize("yes", ["yes", "yes, open it"])
async def test_a_question_in_between_is_a_turn_a_later_yes_confirms_nothing(
    hass: HomeAssistant, instant_agent: Any, yes: str
) -> None:
    """"Open the garage door", then "What time is it?" (answered by Home Assistant), then "yes": the
    yes answers the time, not the garage door; even the model's confirmed call is refused."""
    _entry, model, calls = instant_agent
    assert "confirmation" in await _converse(hass, "Open the garage door", "between")
    assert await _converse(hass, "What time is it?", "between")
    model.script(call("HassTurnOn", name="Garage Door", confirm=True))
    assert "confirmation" in await _converse(hass, yes, "between")
    assert len(model.requests) == 1  # not a bare yes to a question right before: the model read it
    assert calls == [] and state(hass, "cover.garage_door") == "closed"


async def test_the_same_command_after_a_question_is_a_new_request(hass: HomeAssistant, instant_agent: Any) -> None:
    """Same words again after something else was said are not a retry: they act again."""
    _entry, _model, _calls = instant_agent
    assert await _converse(hass, "Turn off the kitchen lights", "again") == "Turned off Kitchen Lights."
    assert (await _converse(hass, "Which lights are on?", "again")).startswith("Ceiling Lights")
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.kitchen_lights"}, blocking=True)
    assert await _converse(hass, "Turn off the kitchen lights", "again") == "Turned off Kitchen Lights."
    assert state(hass, "light.kitchen_lights") == "off"


async def test_what_the_matcher_cannot_do_goes_to_the_model_and_leaves_no_trace(hass: HomeAssistant, instant_agent: Any) -> None:
    """A question Home Assistant recognises but cannot answer (no thermostat in the garage) and a
    command that reaches no device (the living room as an area, which has no media player) go to
    the model, with nothing half-done in the conversation."""
    _entry, model, calls = instant_agent
    await _converse(hass, "What is the temperature in the garage?", "partial")
    assert len(model.requests) == 1
    assert "HassClimateGetTemperature" not in model.requests[0].prompt.split("What is the temperature in the garage?")[-1]
    await hass.services.async_call("media_player", "media_play", {"entity_id": "media_player.living_room"}, blocking=True)
    calls.clear()
    await _converse(hass, "Pause the music in the living room", "partial")
    assert len(model.requests) == 2 and calls == []
    assert "HassMediaPause" not in model.requests[1].prompt.split("Pause the music in the living room")[-1]


async def test_a_satellite_s_area_filled_in_by_home_assistant_is_used(
    hass: HomeAssistant, instant_agent: Any, demo_home: dict[str, str]
) -> None:
    """"Turn off the lights" said to the kitchen satellite: Home Assistant's sentences fill in the
    kitchen; the always-act-first agent's strict names are for its model, not for them."""
    entry, model, calls = instant_agent
    satellite = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={("test", "kitchen-satellite")}, name="Kitchen satellite"
    )
    dr.async_get(hass).async_update_device(satellite.id, area_id=demo_home["Kitchen"])
    assert await _converse(hass, "Turn off the lights", "satellite", device_id=satellite.id) == "Turned off Kitchen Lights."
    assert model.requests == []
    assert calls == [{"service": "light.turn_off", "entity_id": "light.kitchen_lights"}]


class SecondAPI(llm.API):
    """Any second LLM API: with two, Home Assistant prefixes every tool with its API's id."""

    def __init__(self, hass: HomeAssistant) -> None:
        super().__init__(hass=hass, id="second_test", name="Second")

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(self, "Nothing here.", llm_context, [])


async def test_with_two_llm_apis_intents_keep_their_rules(hass: HomeAssistant, instant_agent: Any) -> None:
    """Assist's intents become "assist__HassTurnOn": the matcher still handles commands, and the
    model's prefixed call still goes through per-device resolution (the garage door asks first)."""
    entry, model, calls = instant_agent
    llm.async_register_api(hass, SecondAPI(hass))
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, "llm_hass_api": ["assist", "second_test"]})
    await hass.async_block_till_done()
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."
    assert model.requests == []
    model.script(call("assist__HassTurnOn", name="Garage Door"))
    assert await ask(hass, "Would you be so kind as to open up the garage door") == (
        "I need your confirmation to open Garage Door. Should I go ahead?"
    )
    assert len(model.requests) == 1 and state(hass, "cover.garage_door") == "closed"
    assert [c["service"] for c in calls] == ["light.turn_off"]


async def test_the_conversation_trace_says_the_path(hass: HomeAssistant, instant_agent: Any) -> None:
    from homeassistant.components.conversation import trace  # noqa: PLC0415

    _entry, model, _calls = instant_agent
    await ask(hass, "Turn off the kitchen lights")
    model.script(call("HassTurnOn", name="Kitchen Lights"))
    await ask(hass, "Switch the kitchen back on, would you")
    paths = [
        event["data"]["path"]
        for recorded in trace.async_get_traces()
        for event in recorded.as_dict()["events"]
        if event["event_type"] == conversation.ConversationTraceEventType.AGENT_DETAIL and "path" in event["data"]
    ]
    assert paths[-2:] == ["matcher", "model"]
