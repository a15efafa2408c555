"""A real conversation turn: real model, real grammar, real Assist tools, a real light turns on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from custom_components.gemma_edge.const import CONF_MAX_TOKENS, CONF_TOOL_CHOICE, DOMAIN
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import chat_session, device_registry as dr, entity_registry as er, intent, issue_registry as ir, llm
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from .conftest import SMALL_MODEL_AGENT, async_create_local_entry, record_steps


def agent_id(hass: HomeAssistant, entry: ConfigEntry) -> str:
    states = [s for s in hass.states.async_all("conversation") if s.entity_id.startswith("conversation.")]
    return next(s.entity_id for s in states if "gemma" in s.entity_id)


async def converse_streaming(
    hass: HomeAssistant, entry: ConfigEntry, text: str, conversation_id: str | None = None, device_id: str | None = None
) -> tuple[conversation.ConversationResult, list[dict[str, Any]]]:
    """Converse the way the Assist pipeline does, recording the streamed deltas."""
    deltas: list[dict[str, Any]] = []
    with (
        chat_session.async_get_chat_session(hass, conversation_id) as session,
        conversation.async_get_chat_log(
            hass, session, chat_log_delta_listener=lambda _log, delta: deltas.append(delta)
        ),
    ):
        result = await conversation.async_converse(
            hass, text, session.conversation_id, Context(), language="en", agent_id=agent_id(hass, entry),
            device_id=device_id,
        )
    return result, deltas


async def _act_and_answer(hass: HomeAssistant, entry: ConfigEntry, text: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """One turn that must call a declared tool: the call runs, its result goes back, the answer streams."""
    result, deltas = await converse_streaming(hass, entry, text)
    await hass.async_block_till_done()
    assert result.response.response_type is not intent.IntentResponseType.ERROR, result.response.speech
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert len(calls) == 1, deltas
    results = [d for d in deltas if d.get("role") == "tool_result"]
    assert [r["tool_name"] for r in results] == [calls[0].tool_name]
    declared = {tool.name for tool in chat_log_tools(hass, entry, result.conversation_id)}
    assert calls[0].tool_name in declared
    # the answer (the model's words after a read, the outcomes after an action) is a sentence
    speech = result.response.speech["plain"]["speech"]
    assert speech.strip() and not [bad for bad in ("{", "<|", '"name":') if bad in speech], speech
    return calls, deltas


def chat_log_tools(hass: HomeAssistant, entry: ConfigEntry, conversation_id: str) -> list[Any]:
    with (
        chat_session.async_get_chat_session(hass, conversation_id) as session,
        conversation.async_get_chat_log(hass, session) as chat_log,
    ):
        return list(chat_log.llm_api.tools) if chat_log.llm_api else []


async def test_smollm2_calls_a_declared_tool(hass: HomeAssistant, smollm2_entry: ConfigEntry) -> None:
    """SmolLM2-135M picks its tool poorly, but its call is always grammar-valid and executed."""
    sensor = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{smollm2_entry.entry_id}_model_status")
    assert sensor is not None and hass.states.get(sensor).state == "ready"
    seen: list[str] = []

    @callback
    def record(event: Event[EventStateChangedData]) -> None:
        seen.append(event.data["new_state"].state)

    async_track_state_change_event(hass, sensor, record)
    await _act_and_answer(hass, smollm2_entry, "Turn on the kitchen light")
    # the model status sensor showed the work and the figures of the last step
    assert "busy" in seen and seen[-1] == "ready"
    attributes = hass.states.get(sensor).attributes
    assert attributes["prompt_tokens"] > 100
    assert attributes["completion_tokens"] >= 2
    assert attributes["prompt_tokens"] == attributes["reused_tokens"] + attributes["evaluated_tokens"]


async def test_gemma3_turns_on_kitchen_light(hass: HomeAssistant, gemma3_path: Path, lights: list[str]) -> None:
    entry = await async_create_local_entry(hass, gemma3_path, SMALL_MODEL_AGENT)
    events = []
    hass.bus.async_listen("test_light_on", events.append)
    calls, _ = await _act_and_answer(hass, entry, "Turn on the kitchen light")
    assert calls[0].tool_name == "HassTurnOn"
    assert calls[0].tool_args.get("name") == "Kitchen Light"
    assert hass.states.get("light.kitchen_light").state == "on"
    assert [e.data["name"] for e in events] == ["Kitchen Light"]
    assert hass.states.get("light.bedroom_lamp").state != "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_auto_tool_choice_answers_in_text(hass: HomeAssistant, smollm2_path: Path, lights: list[str]) -> None:
    """With tool use left to the model, a greeting streams a text answer (no tool run)."""
    entry = await async_create_local_entry(hass, smollm2_path, {**SMALL_MODEL_AGENT, CONF_TOOL_CHOICE: "auto"})
    result, deltas = await converse_streaming(hass, entry, "Hello! Who are you?")
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert result.response.speech["plain"]["speech"].strip()
    assert not [d for d in deltas if d.get("tool_calls")]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_multi_turn_history_reaches_the_model(hass: HomeAssistant, smollm2_entry: ConfigEntry) -> None:
    """The second turn of a conversation is built on the first (same conversation id)."""
    first, _ = await converse_streaming(hass, smollm2_entry, "Turn on the kitchen light")
    engine = smollm2_entry.runtime_data.engine
    first_prompt_tokens = engine.last_stats.prompt_tokens
    second, _ = await converse_streaming(hass, smollm2_entry, "And the porch light", first.conversation_id)
    assert second.conversation_id == first.conversation_id
    assert engine.last_stats.prompt_tokens > first_prompt_tokens
    # the earlier turn's prompt is reused from the KV cache instead of evaluated again
    assert engine.last_stats.reused_tokens > first_prompt_tokens // 2


async def test_context_overflow_is_a_clear_answer(hass: HomeAssistant, smollm2_path: Path, lights: list[str]) -> None:
    entry = await async_create_local_entry(hass, smollm2_path, {**SMALL_MODEL_AGENT, CONF_MAX_TOKENS: 100_000})
    result, _ = await converse_streaming(hass, entry, "Turn on the kitchen light")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert "too long" in result.response.speech["plain"]["speech"]
    assert hass.states.get("light.kitchen_light").state != "on"
    assert not ir.async_get(hass).issues  # an oversized answer is not "too many devices"
    await hass.config_entries.async_unload(entry.entry_id)


class DoorbellAPI(llm.API):
    """A one-tool LLM API: the model's only move is pressing the (real) doorbell button."""

    def __init__(self, hass: HomeAssistant) -> None:
        super().__init__(hass=hass, id="doorbell_test", name="Doorbell")

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(self, "You can ring the doorbell.", llm_context, [RingDoorbellTool()])


class RingDoorbellTool(llm.Tool):
    name = "ring_doorbell"
    description = "Presses the doorbell button once."

    async def async_call(self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext) -> Any:
        await hass.services.async_call("button", "press", {"entity_id": "button.doorbell"}, blocking=True)
        return {"rang": True}


async def test_retried_turn_acts_once(hass: HomeAssistant, smollm2_path: Path, lights: list[str]) -> None:
    """The model calls the doorbell tool; a satellite retries the same words in the same
    conversation; the model calls it again; then the user asks again in other words. The retry
    is deduplicated; another API's tool is not known to act or only read, so asking again in a new
    turn runs it again without a question."""
    rings: list[Event] = []
    hass.bus.async_listen("rang", callback(lambda event: rings.append(event)))
    llm.async_register_api(hass, DoorbellAPI(hass))
    entry = await async_create_local_entry(hass, smollm2_path, {**SMALL_MODEL_AGENT, "llm_hass_api": ["doorbell_test"]})
    statuses: list[str] = []
    hass.bus.async_listen("gemma_edge_action", callback(lambda event: statuses.append(event.data["status"])))
    first, deltas = await converse_streaming(hass, entry, "Ring the doorbell")
    assert [c.tool_name for d in deltas for c in d.get("tool_calls") or []] == ["ring_doorbell"]
    _, retry_deltas = await converse_streaming(hass, entry, "Ring the doorbell", first.conversation_id)
    assert [c.tool_name for d in retry_deltas for c in d.get("tool_calls") or []] == ["ring_doorbell"]
    await converse_streaming(hass, entry, "Please ring it once more", first.conversation_id)
    await hass.async_block_till_done()
    assert len(rings) == 2
    assert statuses == ["executed", "deduplicated", "executed"]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_agent_primes_its_prefix_and_new_conversations_share_it(
    hass: HomeAssistant, smollm2_entry: ConfigEntry
) -> None:
    """After start (and after exposure changes) the agent's static prefix is evaluated in the
    background; every new conversation then evaluates only its own turn."""
    engine = smollm2_entry.runtime_data.engine
    steps = record_steps(engine)
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31))
    await hass.async_block_till_done(wait_background_tasks=True)
    first_steps = len(steps)
    first, _ = await converse_streaming(hass, smollm2_entry, "Turn on the kitchen light")
    second_steps = len(steps)
    second, _ = await converse_streaming(hass, smollm2_entry, "Turn off the porch light")
    assert second.conversation_id != first.conversation_id
    # the first step of each new conversation: system prompt and tools came from the cache,
    # only the user's turn was evaluated
    for stats in (steps[first_steps], steps[second_steps]):
        assert stats.reused_tokens > 1000 and stats.evaluated_tokens <= 16 + 64, stats

    # exposing another device changes the overview: the prefix is primed again in the background
    async_expose_entity(hass, "conversation", "button.doorbell", True)
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=62))
    await hass.async_block_till_done(wait_background_tasks=True)
    after_steps = len(steps)
    await converse_streaming(hass, smollm2_entry, "Turn on the bedroom lamp")
    after = steps[after_steps]
    assert after.prompt_tokens > steps[second_steps].prompt_tokens  # the doorbell joined the prompt
    assert after.reused_tokens > 1000 and after.evaluated_tokens <= 16 + 64, after


async def test_a_satellite_in_an_area_starts_from_the_primed_prefix(hass: HomeAssistant, smollm2_entry: ConfigEntry) -> None:
    """Assist's prompt names the satellite's area near its top ("You are in area Kitchen ..."),
    so a satellite shared no cached prefix with the primed prompt and its first turn evaluated
    the whole prompt again. The area line now travels with the user's words."""
    from homeassistant.helpers import area_registry as ar  # noqa: PLC0415

    kitchen = ar.async_get(hass).async_create("Kitchen")
    satellite = dr.async_get(hass).async_get_or_create(
        config_entry_id=smollm2_entry.entry_id, identifiers={("test", "kitchen_satellite")}, name="Kitchen satellite"
    )
    dr.async_get(hass).async_update_device(satellite.id, area_id=kitchen.id)
    engine = smollm2_entry.runtime_data.engine
    steps = record_steps(engine)
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31))
    await hass.async_block_till_done(wait_background_tasks=True)
    primed = len(steps)
    prompts: list[str] = []
    render = engine.model.chat_format.render
    engine.model.chat_format.render = lambda messages, tools: prompts.append(text := render(messages, tools)) or text
    await converse_streaming(hass, smollm2_entry, "Turn on the lights", device_id=satellite.id)
    first = steps[primed]
    assert first.reused_tokens > 1000 and first.evaluated_tokens <= 16 + 64, first
    assert "(You are in area Kitchen and all generic commands" in prompts[-1]


async def test_too_many_exposed_entities_degrade_visibly(hass: HomeAssistant, smollm2_path: Path, lights: list[str]) -> None:
    """A home too large for the context: the overview is compacted, then left to GetLiveContext,
    with a Repairs issue giving the numbers; the turn still works, nothing is cut off silently."""
    entry = await async_create_local_entry(hass, smollm2_path, SMALL_MODEL_AGENT)
    hass.config_entries.async_update_entry(entry, options={"context_size": 2048, "threads": 0, "flash_attention": True})
    await hass.async_block_till_done()
    issues = ir.async_get(hass)
    subentry = next(iter(entry.subentries.values()))
    issue_id = f"prompt_too_large_{entry.entry_id}_{subentry.subentry_id}"
    engine = entry.runtime_data.engine
    modes = {}
    for count in (EXTRA_COMPACT, EXTRA_DROP):
        for index in range(count):
            hass.states.async_set(f"light.extra_{index}", "off", {"friendly_name": f"Extra Light {index}"})
        result, _ = await converse_streaming(hass, entry, "Turn on the kitchen light")
        assert result.response.response_type is not intent.IntentResponseType.ERROR, result.response.speech
        issue = issues.async_get_issue(DOMAIN, issue_id)
        assert issue is not None
        modes[count] = issue.translation_placeholders["mode"]
        assert int(issue.translation_placeholders["needed"]) > int(issue.translation_placeholders["budget"])
        assert engine.last_stats.prompt_tokens + 48 <= 2048
    assert modes == {EXTRA_COMPACT: "compact device list", EXTRA_DROP: "devices looked up with GetLiveContext"}
    # back to a small home: the issue goes away
    for index in range(EXTRA_DROP):
        hass.states.async_remove(f"light.extra_{index}")
    await converse_streaming(hass, entry, "Turn on the kitchen light")
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    await hass.config_entries.async_unload(entry.entry_id)


EXTRA_COMPACT, EXTRA_DROP = 30, 200
