"""Instant commands on the demo home: Home Assistant's sentence matcher before the model,
through the same ToolRunner and executor (issue 14, first part)."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS
from homeassistant.components import conversation
from homeassistant.core import Context, Event, HomeAssistant, callback

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


@pytest.mark.parametrize(
    ("words", "entity_id", "expected", "answer"),
    [
        ("Turn off the kitchen lights", "light.kitchen_lights", "off", "Turned off Kitchen Lights."),
        ("turn on the bed light", "light.bed_light", "on", "Turned on Bed Light."),
        ("Close the kitchen window", "cover.kitchen_window", "closed", "Closed Kitchen Window."),
        ("Turn off the ceiling lights", "light.ceiling_lights", "off", "Turned off Ceiling Lights."),
        ("Turn on the decorative lights", "switch.decorative_lights", "on", "Turned on Decorative Lights."),
    ],
)
async def test_a_recognised_command_acts_without_the_model(
    hass: HomeAssistant, instant_agent: Any, words: str, entity_id: str, expected: str, answer: str
) -> None:
    entry, model, _calls = instant_agent
    opposite = {"on": "turn_off", "off": "turn_on", "closed": "open_cover"}[expected]
    await hass.services.async_call(entity_id.split(".")[0], opposite, {"entity_id": entity_id}, blocking=True)
    await hass.async_block_till_done()
    events: list[Event] = []

    @callback
    def record(event: Event) -> None:
        events.append(event)

    hass.bus.async_listen("gemma_edge_action", record)
    assert await ask(hass, words) == answer
    assert state(hass, entity_id) == expected
    assert model.requests == []  # the model never generated
    assert [(e.data["entity_ids"], e.data["status"], e.data["source"]) for e in events] == [
        ([entity_id], "executed", "conversation")
    ]


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
