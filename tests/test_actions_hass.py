"""The executor in a real Home Assistant: Assist tool calls become idempotent service actions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge.actions.outcomes import ActionRequest
from custom_components.gemma_edge.actions.records import ServiceAction
from custom_components.gemma_edge.action_events import EVENT_ACTION
from custom_components.gemma_edge.const import CONF_KEEP_WORDS
from custom_components.gemma_edge.tool_runner import ToolRunner
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

from .conftest import async_create_local_entry


@pytest.fixture
async def home(hass: HomeAssistant, smollm2_path: Path) -> tuple[ConfigEntry, list[Event]]:
    """Real template lights, a lock, a button, a broken and a hanging light; our entry loaded."""
    def light(name: str, on: list[dict[str, Any]]) -> dict[str, Any]:
        key = name.lower().replace(" ", "_")
        return {
            "name": name, "unique_id": key,
            "state": f"{{{{ is_state('input_boolean.{key}', 'on') }}}}",
            "level": f"{{{{ state_attr('input_number.{key}', 'initial') | int(0) }}}}",
            "turn_on": on + [{"action": "input_boolean.turn_on", "target": {"entity_id": f"input_boolean.{key}"}}],
            "turn_off": [{"action": "input_boolean.turn_off", "target": {"entity_id": f"input_boolean.{key}"}}],
            "set_level": [{"event": "test_level", "event_data": {"name": name, "level": "{{ brightness }}"}}]
            + [{"action": "input_boolean.turn_on", "target": {"entity_id": f"input_boolean.{key}"}}],
        }  # fmt: skip

    names = {"Kitchen Light": [], "Broken Light": [{"action": "light.does_not_exist"}],
             "Slow Light": [{"delay": 30}]}  # fmt: skip
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {n.lower().replace(" ", "_"): {} for n in [*names, "Front Door"]}}
    )
    assert await async_setup_component(
        hass,
        "template",
        {"template": [
            {"light": [light(name, on) for name, on in names.items()]},
            {"button": [{"name": "Doorbell", "unique_id": "doorbell", "press": [{"event": "test_doorbell"}]}]},
        ]},
    )  # fmt: skip
    await hass.async_block_till_done()
    entry = await async_create_local_entry(hass, smollm2_path)
    entry.runtime_data.executor.call_timeout_s = 1.0
    entry.runtime_data.executor.verify_timeout_s = 0.5
    events: list[Event] = []
    hass.bus.async_listen(EVENT_ACTION, recorder(events))
    yield entry, events
    await hass.config_entries.async_unload(entry.entry_id)




def recorder(events: list[Event]) -> Any:
    @callback
    def record(event: Event) -> None:
        events.append(event)

    return record


async def run(hass: HomeAssistant, entry: ConfigEntry, text: str, tool: str, args: dict[str, Any], conversation_id: str = "conv1") -> dict[str, Any]:
    from custom_components.gemma_edge.actions.policy import SensitivePolicy  # noqa: PLC0415

    context = Context()
    llm_context = llm.LLMContext(platform="gemma_edge", context=context, language="en", assistant="conversation", device_id=None)
    api = await llm.async_get_api(hass, llm.LLM_API_ASSIST, llm_context)
    tool_runner = ToolRunner(
        hass, entry.runtime_data.executor, api, conversation_id=conversation_id, turn_text=text,
        parent_context_id=context.id, sensitive_policy=SensitivePolicy.CONFIRM,
    )  # fmt: skip
    result = await tool_runner.async_run(llm.ToolInput(tool, args, external=True))
    await hass.async_block_till_done()
    return result


def statuses(result: dict[str, Any]) -> list[str]:
    return [r["status"] for r in result.get("results", [])]


async def test_turn_on_once_then_deduplicated_then_no_op(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    entry, events = home
    service_calls: list[Event] = []
    hass.bus.async_listen("call_service", callback(lambda e: service_calls.append(e) if e.data["domain"] == "light" else None))
    first = await run(hass, entry, "Turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"})
    assert statuses(first) == ["executed"]
    assert hass.states.get("light.kitchen_light").state == "on"
    # the model repeats itself in the same turn / the satellite retries the same words
    again = await run(hass, entry, "Turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light", "confirm": True})
    assert statuses(again) == ["deduplicated"]
    # a new request while it is already on: nothing to do
    new_turn = await run(hass, entry, "Kitchen light on please", "HassTurnOn", {"name": "Kitchen Light"})
    assert statuses(new_turn) == ["no_op"] and "already on" in new_turn["results"][0]["message"]
    assert len(service_calls) == 1
    # the service call ran in the action's own context (a ULID, kept by the recorder)
    assert service_calls[0].context.id == events[0].data["action_id"]
    assert [e.data["status"] for e in events] == ["executed", "deduplicated", "no_op"]
    assert events[0].data["service"] == "light.turn_on" and events[0].data["entity_ids"] == ["light.kitchen_light"]
    assert events[0].data["source"] == "conversation" and events[0].data["conversation_id"] == "conv1"


async def test_toggle_and_brightness_become_absolute(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    entry, events = home
    await run(hass, entry, "kitchen on", "HassTurnOn", {"name": "Kitchen Light"})
    # HassToggle is not among Assist's LLM tools: a model cannot call it
    assert (await run(hass, entry, "toggle the kitchen light", "HassToggle", {"name": "Kitchen Light"}))["error"] == "no such tool"
    # a toggle from elsewhere (a cloud command) becomes the absolute opposite of the current state
    toggled = await entry.runtime_data.executor.async_execute(
        ActionRequest(ServiceAction("light", "toggle", "light.kitchen_light"), scope="cloud-1", source="cloud")
    )
    assert toggled.status.value == "executed"
    assert events[-1].data["service"] == "light.turn_off"
    assert hass.states.get("light.kitchen_light").state == "off"
    dimmed = await run(hass, entry, "kitchen at 40 percent", "HassLightSet", {"name": "Kitchen Light", "brightness": 40})
    assert statuses(dimmed) in (["executed"], ["unconfirmed"])
    assert events[-1].data["data"] == {"brightness_pct": 40}


async def test_one_shot_button_and_quick_repeat(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    entry, _ = home
    async_expose_entity(hass, "conversation", "button.doorbell", True)  # buttons are not exposed by default
    rings: list[Event] = []
    hass.bus.async_listen("test_doorbell", recorder(rings))
    first = await run(hass, entry, "ring the doorbell", "HassTurnOn", {"name": "Doorbell"})
    assert statuses(first) == ["executed"]
    repeat = await run(hass, entry, "ring the doorbell again", "HassTurnOn", {"name": "Doorbell"})
    assert statuses(repeat) == ["needs_confirmation"]
    confirmed = await run(hass, entry, "yes, ring it again", "HassTurnOn", {"name": "Doorbell", "confirm": True})
    assert statuses(confirmed) == ["executed"]
    assert len(rings) == 2


async def test_bad_input(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    entry, _ = home
    unknown = await run(hass, entry, "turn on the garden", "HassTurnOn", {"name": "Garden"})
    assert unknown["error"] == "no action taken" and unknown["reason"] == "name"
    assert unknown["error_text"] == "no exposed device is called Garden"
    broken = await run(hass, entry, "broken on", "HassTurnOn", {"name": "Broken Light"})
    assert statuses(broken) == ["failed"] and "does_not_exist" in broken["results"][0]["message"]
    slow = await run(hass, entry, "slow on", "HassTurnOn", {"name": "Slow Light"})
    assert statuses(slow) == ["indeterminate"]
    invalid = await run(hass, entry, "set it", "HassLightSet", {"name": "Kitchen Light", "brightness": "bright"})
    assert "error" in invalid


async def test_activity_surfaces(hass: HomeAssistant, home, hass_client) -> None:  # noqa: ANN001
    """Sensors, calendar, logbook sentences and diagnostics show what the agent did."""
    from custom_components.gemma_edge import logbook as gemma_logbook  # noqa: PLC0415
    from homeassistant.helpers import entity_registry as er  # noqa: PLC0415
    from pytest_homeassistant_custom_component.components.diagnostics import (  # noqa: PLC0415
        get_diagnostics_for_config_entry,
    )

    entry, events = home
    await run(hass, entry, "Turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"})
    await run(hass, entry, "Turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"})
    await run(hass, entry, "Kitchen light on", "HassTurnOn", {"name": "Kitchen Light"})
    registry = er.async_get(hass)

    def entity(platform: str, key: str) -> str:
        entity_id = registry.async_get_entity_id(platform, "gemma_edge", f"{entry.entry_id}_{key}")
        assert entity_id is not None
        return entity_id

    today = hass.states.get(entity("sensor", "actions_today"))
    assert today.state == "3"
    assert today.attributes["executed"] == 1 and today.attributes["deduplicated"] == 1 and today.attributes["no_op"] == 1
    last = hass.states.get(entity("sensor", "last_action"))
    assert last.state == "left Kitchen Light as it was (already on) (asked in Assist)"
    assert last.attributes["status"] == "no_op" and last.attributes["entity_ids"] == ["light.kitchen_light"]

    descriptions = {}
    gemma_logbook.async_describe_events(hass, lambda domain, event_type, describe: descriptions.update({event_type: describe}))
    entries = [descriptions["gemma_edge_action"](event) for event in events]
    assert entries[0] == {
        "name": "Gemma", "message": "turned on Kitchen Light (asked in Assist)", "entity_id": "light.kitchen_light",
    }  # fmt: skip
    assert entries[1]["message"] == "ignored a repeated request to turn on Kitchen Light (asked in Assist)"

    calendar = entity("calendar", "agent_activity")
    now = dt_util.utcnow()
    response = await hass.services.async_call(
        "calendar", "get_events",
        {"entity_id": calendar, "start_date_time": now - timedelta(hours=1), "end_date_time": now + timedelta(hours=1)},
        blocking=True, return_response=True,
    )  # fmt: skip
    summaries = [event["summary"] for event in response[calendar]["events"]]
    assert summaries == [
        "turned on Kitchen Light (asked in Assist)",
        "left Kitchen Light as it was (already on) (asked in Assist)",
    ]  # the deduplicated repeat is not a new action: it shares the first one's key
    assert hass.states.get(calendar).state == "on"

    assert await async_setup_component(hass, "diagnostics", {})
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    recent = diagnostics["actions"]["recent"]
    assert [a["status"] for a in recent] == ["no_op", "executed"]
    assert recent[0]["reason"] == "**REDACTED**"

    # what was said is nowhere that is recorded or readable by every user, unless the user chose so
    assert {e.data["reason"] for e in events} == {None}
    assert last.attributes["reason"] is None
    assert [event.get("description") for event in response[calendar]["events"]] == [None, None]
    hass.config_entries.async_update_entry(entry, options={**entry.options, CONF_KEEP_WORDS: True})
    await hass.async_block_till_done()
    await run(hass, entry, "Kitchen light off please", "HassTurnOff", {"name": "Kitchen Light"})
    assert events[-1].data["reason"] == "Kitchen light off please"
    assert hass.states.get(entity("sensor", "last_action")).attributes["reason"] == "Kitchen light off please"


async def test_sensitive_lock_confirmation_round_trip(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    entry, events = home
    assert await async_setup_component(
        hass, "lock", {"lock": [{"platform": "template", "name": "Front Door", "unique_id": "front_door",
                                 "value_template": "{{ is_state('input_boolean.front_door', 'on') }}",
                                 "lock": [{"action": "input_boolean.turn_on", "target": {"entity_id": "input_boolean.front_door"}}],
                                 "unlock": [{"action": "input_boolean.turn_off", "target": {"entity_id": "input_boolean.front_door"}}]}]},
    )  # fmt: skip
    async_expose_entity(hass, "conversation", "lock.front_door", True)
    await hass.async_block_till_done()
    asked = await run(hass, entry, "lock the front door", "HassTurnOn", {"name": "Front Door"})
    assert statuses(asked) == ["needs_confirmation"]
    assert hass.states.get("lock.front_door").state == "unlocked"
    # the model cannot confirm on its own in the same turn
    same_turn = await run(hass, entry, "lock the front door", "HassTurnOn", {"name": "Front Door", "confirm": True})
    assert statuses(same_turn) == ["deduplicated"]
    # the user says yes in the next turn
    done = await run(hass, entry, "yes", "HassTurnOn", {"name": "Front Door", "confirm": True})
    assert statuses(done) == ["executed"]
    assert hass.states.get("lock.front_door").state == "locked"


async def test_tool_specs_declare_light_schemas_and_constrain_the_grammar(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    from custom_components.gemma_edge.tools import tool_specs  # noqa: PLC0415

    llm_context = llm.LLMContext(platform="gemma_edge", context=Context(), language="en", assistant="conversation", device_id=None)
    api = await llm.async_get_api(hass, llm.LLM_API_ASSIST, llm_context)
    turn_on = next(spec for spec in tool_specs(hass, api) if spec.name == "HassTurnOn")
    # the prompt declares plain strings (names are in Assist's overview once) ...
    assert "enum" not in turn_on.parameters["properties"]["name"]
    assert "area" in turn_on.parameters["properties"]
    # ... the grammar only lets the model write exposed names, and needs a target
    assert "Kitchen Light" in turn_on.constraints["properties"]["name"]["enum"]
    assert "Doorbell" not in turn_on.constraints["properties"]["name"]["enum"]  # not exposed
    assert "area" not in turn_on.constraints["properties"]  # this home has no areas
    assert turn_on.constraints["anyOf"] == [{"required": ["name"]}]
    assert turn_on.constraints["properties"]["confirm"]["type"] == "boolean"
    live = next(spec for spec in tool_specs(hass, api) if spec.name == "GetLiveContext")
    assert "confirm" not in live.parameters.get("properties", {})  # read-only tools need no confirmation


async def test_the_same_words_later_are_a_new_request(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    """A turn and its retries share keys; the same words after anything else, or after the retry
    window, act again (desired state converges) and never replay an earlier turn's outcome."""
    entry, _ = home
    light = "light.kitchen_light"
    off = await run(hass, entry, "turn off the kitchen light", "HassTurnOff", {"name": "Kitchen Light"})
    assert statuses(off) == ["no_op"]
    on = await run(hass, entry, "turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"})
    assert statuses(on) == ["executed"] and hass.states.get(light).state == "on"
    off = await run(hass, entry, "turn off the kitchen light", "HassTurnOff", {"name": "Kitchen Light"})
    assert statuses(off) == ["executed"] and hass.states.get(light).state == "off"
    # someone switches it on by hand; the same words again, after the retry window, act again
    turns = entry.runtime_data.executor.turns
    await hass.services.async_call("light", "turn_on", {"entity_id": light}, blocking=True)
    await hass.async_block_till_done()
    assert hass.states.get(light).state == "on"
    turns.clock = lambda: 1e9  # the retry window has passed
    again = await run(hass, entry, "turn off the kitchen light", "HassTurnOff", {"name": "Kitchen Light"})
    assert statuses(again) == ["executed"] and hass.states.get(light).state == "off"
    # a failure is not replayed into a new turn: asking again tries again
    first = await run(hass, entry, "broken on", "HassTurnOn", {"name": "Broken Light"})
    assert statuses(first) == ["failed"]
    retry = await run(hass, entry, "broken on", "HassTurnOn", {"name": "Broken Light"})
    assert statuses(retry) == ["deduplicated"]  # a retry within seconds: the recorded outcome
    turns.clock = lambda: 2e9
    later = await run(hass, entry, "broken on", "HassTurnOn", {"name": "Broken Light"})
    assert statuses(later) == ["failed"] and "already handled" not in later["results"][0]["message"]


async def test_ask_from_an_automation_with_a_fixed_conversation_acts_each_run(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    """gemma_edge.ask with a fixed conversation_id: each run of the automation is a new request."""
    entry, _ = home
    turns = entry.runtime_data.executor.turns
    for run_number in range(3):
        turns.clock = lambda n=run_number: 1e9 + 60 * n  # one run a minute
        await hass.services.async_call("light", "turn_off", {"entity_id": "light.kitchen_light"}, blocking=True)
        await hass.async_block_till_done()
        result = await run(hass, entry, "evening: kitchen light on", "HassTurnOn", {"name": "Kitchen Light"}, "automation-1")
        assert statuses(result) == ["executed"], run_number
        assert hass.states.get("light.kitchen_light").state == "on"


async def test_activity_sentences_follow_home_assistant_s_language(hass: HomeAssistant, home) -> None:  # noqa: ANN001
    """Logbook, calendar and the "Last action" state are written from the integration's
    translations in Home Assistant's language, and follow it when the user changes it."""
    from custom_components.gemma_edge import logbook as gemma_logbook  # noqa: PLC0415
    from homeassistant.helpers import entity_registry as er  # noqa: PLC0415

    entry, events = home
    registry = er.async_get(hass)
    last_action = registry.async_get_entity_id("sensor", "gemma_edge", f"{entry.entry_id}_last_action")
    assert last_action is not None
    await run(hass, entry, "Turn on the kitchen light", "HassTurnOn", {"name": "Kitchen Light"})
    assert hass.states.get(last_action).state == "turned on Kitchen Light (asked in Assist)"

    await hass.config.async_update(language="de")
    await hass.async_block_till_done()
    await run(hass, entry, "Mach das Küchenlicht aus", "HassTurnOff", {"name": "Kitchen Light"})
    assert hass.states.get(last_action).state == "hat Kitchen Light ausgeschaltet (in Assist gefragt)"
    descriptions = {}
    gemma_logbook.async_describe_events(hass, lambda domain, event_type, describe: descriptions.update({event_type: describe}))
    assert descriptions["gemma_edge_action"](events[-1])["message"] == "hat Kitchen Light ausgeschaltet (in Assist gefragt)"
    # the earlier action is described in the new language too: sentences are made when read
    assert descriptions["gemma_edge_action"](events[0])["message"] == "hat Kitchen Light eingeschaltet (in Assist gefragt)"
