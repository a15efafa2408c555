"""Tools other than device intents: scripts (long ones are never cut off, their response data
reaches the model) and tools that only read (never treated as actions)."""

from __future__ import annotations

from datetime import timedelta
import json
from typing import Any

from pytest_homeassistant_custom_component.common import async_fire_time_changed
import yaml

from custom_components.gemma_edge.engine.prompt_budget import compact_live_context
from custom_components.gemma_edge.tools import tool_specs
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers import intent, llm
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

from .demo_agent import ask, state
from .scripted_model import call

SCRIPTS = {
    "slow_routine": {
        "alias": "Slow Routine",
        "sequence": [{"delay": {"seconds": 30}}, {"action": "light.turn_on", "target": {"entity_id": "light.bed_light"}}],
    },
    "garden_report": {
        "alias": "Garden Report",
        "sequence": [
            {"variables": {"report": {"soil_moisture": 31, "rain_today_mm": 4}}},
            {"stop": "report ready", "response_variable": "report"},
        ],
    },
}


async def _scripts(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, "script", {"script": SCRIPTS})
    await hass.async_block_till_done()
    for object_id in SCRIPTS:
        async_expose_entity(hass, conversation.DOMAIN, f"script.{object_id}", True)


async def test_a_long_script_is_never_cut_off(hass: HomeAssistant, agent: Any) -> None:
    """A script with a 30 s delay outlives the call timeout: it is reported running (not
    indeterminate), it is not cancelled, asking again does not start it twice, and its outcome is
    recorded and announced when it ends."""
    entry, model, _calls = agent
    await _scripts(hass)
    executor = entry.runtime_data.executor
    executor.call_timeout_s = 0.2
    events: list[Event] = []

    @callback
    def record(event: Event) -> None:
        events.append(event)

    hass.bus.async_listen("gemma_edge_action", record)
    assert state(hass, "light.bed_light") == "off"
    model.script(call("slow_routine"))
    assert await ask(hass, "Run the slow routine", conversation_id="routine") == "I started to run Slow Routine; it is still running."
    assert [e.data["status"] for e in events] == ["running"]
    # the retry of that turn, and the same words in a new turn, do not start it a second time
    model.script(call("slow_routine"))
    await ask(hass, "Run the slow routine", conversation_id="routine")
    executor.turns.clock = lambda: 1e12  # the retry window has passed: a new turn
    model.script(call("slow_routine"))
    await ask(hass, "Run the slow routine", conversation_id="routine")
    assert [e.data["status"] for e in events] == ["running", "rejected", "needs_confirmation"]
    assert state(hass, "script.slow_routine") == "on"

    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31), fire_all=True)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert state(hass, "light.bed_light") == "on"  # the script ran to its end
    assert events[-1].data["status"] == "executed" and events[-1].data["key"] == events[0].data["key"]
    recorded = {o.key: o.status.value for o in await executor.async_recent()}
    assert recorded[events[0].data["key"]] == "executed"


async def test_a_script_s_response_data_reaches_the_model(hass: HomeAssistant, agent: Any) -> None:
    _entry, model, _calls = agent
    await _scripts(hass)
    model.script(call("garden_report"), "The soil moisture is 31 percent and it rained 4 millimetres today.")
    answer = await ask(hass, "How is the garden doing?")
    assert answer == "The soil moisture is 31 percent and it rained 4 millimetres today."
    assert len(model.requests) == 2
    assert '"soil_moisture":31' in model.requests[1].prompt.replace('\\"', '"')


class _GardenQuestion(intent.IntentHandler):
    """A custom intent that only answers (like another integration's question intent)."""

    intent_type = "AskGardenQuestion"
    description = "Answers questions about the garden"

    def __init__(self) -> None:
        self.asked = 0

    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        self.asked += 1
        response = intent_obj.create_response()
        response.async_set_speech("The garden is fine.")
        return response


async def test_tools_not_known_to_act_pass_through_as_reads(hass: HomeAssistant, agent: Any) -> None:
    """Asked twice within a minute, a question is answered twice: no confirmation, no ledger key
    (it used to become a one-shot action needing confirmation the second time)."""
    entry, model, _calls = agent
    handler = _GardenQuestion()
    intent.async_register(hass, handler)
    llm_context = llm.LLMContext("gemma_edge", Context(), "en", conversation.DOMAIN, None)
    specs = {s.name: s for s in tool_specs(hass, await llm.async_get_api(hass, llm.LLM_API_ASSIST, llm_context))}
    assert "confirm" not in specs["AskGardenQuestion"].parameters.get("properties", {})
    assert "confirm" in specs["HassTurnOn"].parameters["properties"]
    for _ in range(2):
        model.script(call("AskGardenQuestion"), "The garden is fine.")
        assert await ask(hass, "How is the garden?") == "The garden is fine."
    assert handler.asked == 2
    assert await entry.runtime_data.executor.async_recent() == []


async def test_the_live_context_reaches_the_model_compactly(hass: HomeAssistant, agent: Any) -> None:
    """GetLiveContext's answer is re-read in every later step: one line per entity, every
    entity and state kept, in far fewer tokens (counted with the model's own tokenizer)."""
    entry, model, _calls = agent
    model.script(call("GetLiveContext"), "Yes, the kitchen lights are on.")
    assert await ask(hass, "Are the kitchen lights on?") == "Yes, the kitchen lights are on."
    assert "Kitchen Lights (light, Kitchen): on, " in model.requests[1].prompt

    llm_context = llm.LLMContext("gemma_edge", Context(), "en", conversation.DOMAIN, None)
    api = await llm.async_get_api(hass, llm.LLM_API_ASSIST, llm_context)
    full = (await api.async_call_tool(llm.ToolInput("GetLiveContext", {})))["result"]
    compact = compact_live_context(full)
    for entity in yaml.safe_load(full.partition("\n")[2]):
        assert f"{entity['names']} (" in compact and f"): {entity['state']}" in compact
    engine = entry.runtime_data.engine
    full_tokens, compact_tokens = [
        await engine.async_count_tokens([{"role": "user", "content": json.dumps(text)}], []) for text in (full, compact)
    ]
    print(f"live context: {full_tokens} tokens as YAML, {compact_tokens} compact")
    assert compact_tokens < 0.7 * full_tokens


class _BrokenTool(llm.Tool):
    name = "broken_tool"
    description = "Another API's tool with a bug"

    async def async_call(self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext) -> Any:
        raise RuntimeError("boom")


class _BrokenAPI(llm.API):
    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(self, "", llm_context, [_BrokenTool()])


async def test_a_tool_s_own_bug_is_an_answer(hass: HomeAssistant, agent: Any) -> None:
    """A RuntimeError from another API's tool is an outcome the user hears, not a failed turn."""
    entry, model, _calls = agent
    llm.async_register_api(hass, _BrokenAPI(hass=hass, id="broken_test", name="Broken"))
    subentry = next(iter(s for s in entry.subentries.values() if s.subentry_type == "conversation"))
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, "llm_hass_api": ["broken_test"]})
    await hass.async_block_till_done()
    model.script(call("broken_tool"))
    assert await ask(hass, "Do the broken thing") == "I could not run broken tool: boom."
