"""Vision in Home Assistant: camera snapshots through the conversation tool, the AI Task entity
and the gemma_edge.ask action, on real small models with a tiny random-weight projector.

The projector's weights are random, so the tests never assert what the model says about a
picture; they assert what is deterministic: which camera was asked, image token counts, that
structured results validate, the actions taken, and the errors.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge import camera_vision
from custom_components.gemma_edge.const import CONF_CAMERA_MIN_INTERVAL, CONF_MAX_TOKENS, CONF_TEMPERATURE, DOMAIN
from custom_components.gemma_edge.tool_runner import LOOK_TOOL, ToolRunner
from custom_components.gemma_edge.tools import tool_specs
from custom_components.gemma_edge.actions.policy import SensitivePolicy
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er, issue_registry as ir, llm

from .cameras import StillCamera, async_setup_cameras, picture
from .conftest import SMALL_MODEL_AGENT, async_create_local_entry, record_steps

FRONT_DOOR_TOKENS = 144  # 1280x720 shrunk to 768x432: 16 x 9 blocks of 48 px


class CamerasOnlyAPI(llm.API):
    """An LLM API without tools: the only tool the agent has is our camera tool."""

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(api=self, api_prompt="You can look at the home's cameras.", llm_context=llm_context, tools=[])


@pytest.fixture
async def cameras(hass: HomeAssistant) -> dict[str, StillCamera]:
    cams = {
        "front": StillCamera("Front Door", picture(1280, 720)),
        "garage": StillCamera("Garage", picture(640, 480, "PNG"), content_type="image/png"),
        "webp": StillCamera("Patio", picture(900, 900, "WEBP"), content_type="image/webp"),
        "broken": StillCamera("Broken", OSError("connection refused")),
        "garbage": StillCamera("Garbage", b"\x00\x01 this is not a picture"),
        "slow": StillCamera("Slow", picture(64, 64), hang_s=5),
    }
    await async_setup_cameras(hass, list(cams.values()))
    async_expose_entity(hass, conversation.DOMAIN, "camera.front_door", True)
    for entity_id in ("camera.garage", "camera.patio", "camera.broken", "camera.garbage", "camera.slow"):
        async_expose_entity(hass, conversation.DOMAIN, entity_id, False)
    return cams


@pytest.fixture
async def vision_entry(
    hass: HomeAssistant, smollm2_path: Path, projectors: dict[str, Path], cameras: dict[str, StillCamera],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncGenerator[ConfigEntry]:  # fmt: skip
    """SmolLM2 with its tiny projector, the test cameras, and a short snapshot timeout."""
    monkeypatch.setattr(camera_vision, "SNAPSHOT_TIMEOUT_S", 0.2)
    entry = await async_create_local_entry(hass, smollm2_path, mmproj_path=projectors["smollm2"])
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)


def _turns_today(hass: HomeAssistant, entry: ConfigEntry) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_turns_today")
    assert entity_id is not None
    return entity_id


async def test_conversation_looks_at_an_exposed_camera(
    hass: HomeAssistant, gemma3_path: Path, projectors: dict[str, Path], cameras: dict[str, StillCamera]
) -> None:
    """The model calls the camera tool (its grammar offers only exposed cameras), the snapshot is
    shown in the next step, and later turns do not carry the picture again."""
    llm.async_register_api(hass, CamerasOnlyAPI(hass=hass, id="cameras_only", name="Cameras only"))
    entry = await async_create_local_entry(
        hass, gemma3_path, {**SMALL_MODEL_AGENT, CONF_LLM_HASS_API: ["cameras_only"]}, mmproj_path=projectors["gemma3"]
    )
    steps = record_steps(entry.runtime_data.engine)
    result = await conversation.async_converse(
        hass, "What do you see at the front door?", None, Context(), agent_id="conversation.gemma_conversation"
    )
    assert result.response.response_type is not conversation.intent.IntentResponseType.ERROR
    assert cameras["front"].snapshots == 1 and cameras["garage"].snapshots == 0
    assert [step.image_tokens for step in steps] == [0, FRONT_DOOR_TOKENS]
    # the next turn: the earlier picture is not evaluated again (the tool may take a new one)
    await conversation.async_converse(hass, "And now?", result.conversation_id, Context(), agent_id="conversation.gemma_conversation")
    assert steps[2].image_tokens == 0
    # the dashboard's usage figures: two model turns, every snapshot the tool took looked at
    usage = hass.states.get(_turns_today(hass, entry)).attributes
    assert (usage["model"], usage["images"]) == (2, cameras["front"].snapshots + cameras["garage"].snapshots)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_camera_tool_refuses_unexposed_and_broken_cameras(
    hass: HomeAssistant, vision_entry: ConfigEntry, cameras: dict[str, StillCamera]
) -> None:
    entry = vision_entry
    api = await llm.async_get_api(hass, "assist", llm.LLMContext("test", Context(), None, None, None))
    runner = ToolRunner(
        hass, entry.runtime_data.executor, api, conversation_id="c1", turn_text="look", parent_context_id=None,
        sensitive_policy=SensitivePolicy.CONFIRM, vision=entry.runtime_data.vision,
    )  # fmt: skip
    result = await runner.async_run(llm.ToolInput(LOOK_TOOL, {"camera": "Garage"}))
    assert "no camera called Garage exposed" in result["error_text"]
    assert cameras["garage"].snapshots == 0
    for name, reason in (("Broken", "connection refused"), ("Garbage", "cannot be used"), ("Slow", "No snapshot")):
        async_expose_entity(hass, conversation.DOMAIN, f"camera.{name.lower()}", True)
        result = await runner.async_run(llm.ToolInput(LOOK_TOOL, {"camera": name}))
        assert reason in result["error_text"], result
    result = await runner.async_run(llm.ToolInput(LOOK_TOOL, {"camera": "Front Door"}))
    assert result["camera"] == "Front Door" and result["size"] == "768x432"


STRUCTURE = {
    "people": {"description": "people in the picture", "required": True, "selector": {"number": {"min": 0, "max": 20}}},
    "door_open": {"required": True, "selector": {"boolean": {}}},
    "weather": {"required": True, "selector": {"select": {"options": ["sunny", "cloudy", "rain", "snow"]}}},
    "note": {"selector": {"text": {}}},
}


def check_structured(data: Any) -> None:
    assert isinstance(data, dict) and set(data) <= set(STRUCTURE)
    assert {"people", "door_open", "weather"} <= set(data)
    assert isinstance(data["people"], (int, float)) and math.isfinite(data["people"])
    assert isinstance(data["door_open"], bool)
    assert data["weather"] in STRUCTURE["weather"]["selector"]["select"]["options"]
    assert isinstance(data.get("note", ""), str)


async def test_ai_task_structured_output_from_a_camera_always_validates(
    hass: HomeAssistant, vision_entry: ConfigEntry, cameras: dict[str, StillCamera]
) -> None:
    """ai_task.generate_data with a camera snapshot and a structure, sampled at temperature 1:
    the grammar built from the structure makes every result validate."""
    entry = vision_entry
    hass.config_entries.async_update_entry(entry, options={**entry.options, "camera_min_interval": 0})
    task = next(s for s in entry.subentries.values() if s.subentry_type == "ai_task_data")
    hass.config_entries.async_update_subentry(entry, task, data={CONF_TEMPERATURE: 1.0, CONF_MAX_TOKENS: 400})
    await hass.async_block_till_done()
    steps = record_steps(entry.runtime_data.engine)
    runs = 12
    for _ in range(runs):
        response = await hass.services.async_call(
            "ai_task", "generate_data",
            {
                "task_name": "front door check", "entity_id": "ai_task.gemma_ai_task",
                "instructions": "Look at the front door camera and describe what you see.",
                "structure": STRUCTURE,
                "attachments": [{"media_content_id": "media-source://camera/camera.front_door", "media_content_type": "image/jpeg"}],
            },
            blocking=True, return_response=True,
        )  # fmt: skip
        check_structured(response["data"])
    assert cameras["front"].snapshots == runs
    assert [step.image_tokens for step in steps] == [FRONT_DOOR_TOKENS] * runs
    # a plain text task (no structure) from a PNG camera
    response = await hass.services.async_call(
        "ai_task", "generate_data",
        {"task_name": "garage", "entity_id": "ai_task.gemma_ai_task", "instructions": "Describe the garage.",
         "attachments": [{"media_content_id": "media-source://camera/camera.garage", "media_content_type": "image/png"}]},
        blocking=True, return_response=True,
    )  # fmt: skip
    assert isinstance(response["data"], str) and steps[-1].image_tokens == 130


async def test_automation_analysis_is_rate_limited_per_camera(
    hass: HomeAssistant, vision_entry: ConfigEntry, cameras: dict[str, StillCamera]
) -> None:
    call = {
        "task_name": "motion", "entity_id": "ai_task.gemma_ai_task", "instructions": "Anyone there?",
        "attachments": [{"media_content_id": "media-source://camera/camera.garage", "media_content_type": "image/png"}],
    }  # fmt: skip
    # an hour between analyses: a loaded CI machine cannot outlast the window between two calls
    hass.config_entries.async_update_entry(vision_entry, options={**vision_entry.options, CONF_CAMERA_MIN_INTERVAL: 3600})
    await hass.async_block_till_done()
    await hass.services.async_call("ai_task", "generate_data", call, blocking=True, return_response=True)
    with pytest.raises(ServiceValidationError, match="analysed less than 3600 s ago"):
        await hass.services.async_call("ai_task", "generate_data", call, blocking=True, return_response=True)
    with pytest.raises(ServiceValidationError, match="analysed less than 3600 s ago"):
        await hass.services.async_call(DOMAIN, "ask", {"text": "Anyone?", "camera_entity_id": "camera.garage"}, blocking=True, return_response=True)
    # another camera is not limited by the first
    response = await hass.services.async_call(
        DOMAIN, "ask", {"text": "Anyone?", "camera_entity_id": ["camera.patio"]}, blocking=True, return_response=True
    )
    assert isinstance(response["text"], str)
    assert cameras["garage"].snapshots == 2  # the refused AI Task's snapshot was taken by HA, not analysed


async def test_ask_with_a_camera_returns_text_and_actions(
    hass: HomeAssistant, gemma3_path: Path, projectors: dict[str, Path], lights: list[str], cameras: dict[str, StillCamera]
) -> None:
    """gemma_edge.ask shows the snapshot with the words; the actions taken come back with the text
    (the same records as the gemma_edge_action events). The random projector makes what the model
    does after seeing the picture arbitrary, so the light is switched by a request without one."""
    entry = await async_create_local_entry(hass, gemma3_path, SMALL_MODEL_AGENT, mmproj_path=projectors["gemma3"])
    async_expose_entity(hass, conversation.DOMAIN, "camera.front_door", False)  # only the Assist tools
    steps = record_steps(entry.runtime_data.engine)
    events: list[dict[str, Any]] = []
    hass.bus.async_listen("gemma_edge_action", lambda event: events.append(dict(event.data)))

    async def ask(data: dict[str, Any]) -> dict[str, Any]:
        events.clear()
        response = await hass.services.async_call(DOMAIN, "ask", data, blocking=True, return_response=True)
        await hass.async_block_till_done()
        assert isinstance(response["text"], str) and response["conversation_id"]
        # the caller gets its own words back; the recorded event does not keep them (privacy option off)
        assert [{**a, "reason": None} for a in response["actions"]] == events
        assert all(a["reason"] == data["text"] for a in response["actions"])
        return response

    response = await ask({"text": "Turn on the kitchen light"})
    assert [(a["service"], a["entity_ids"], a["status"], a["source"]) for a in response["actions"]] == [
        ("light.turn_on", ["light.kitchen_light"], "executed", "service")
    ]
    assert hass.states.get("light.kitchen_light").state == "on"
    first_step = len(steps)
    await ask({"text": "Is someone at the door?", "camera_entity_id": ["camera.front_door"], "agent_id": "conversation.gemma_conversation"})
    assert steps[first_step].image_tokens == FRONT_DOOR_TOKENS and cameras["front"].snapshots == 1
    assert hass.states.get(_turns_today(hass, entry)).attributes["images"] == 1
    await hass.config_entries.async_unload(entry.entry_id)


async def test_ask_bad_cameras_are_clear_errors(hass: HomeAssistant, vision_entry: ConfigEntry) -> None:
    for entity_id, reason in (
        ("camera.broken", "No snapshot from camera.broken: connection refused"),
        ("camera.slow", "No snapshot from camera.slow"),
        ("camera.garbage", "The image from camera.garbage cannot be used"),
        ("camera.missing", "No snapshot from camera.missing"),
    ):
        with pytest.raises(HomeAssistantError, match=reason):
            await hass.services.async_call(DOMAIN, "ask", {"text": "Hi", "camera_entity_id": entity_id}, blocking=True, return_response=True)
    with pytest.raises(ServiceValidationError, match="not a Gemma Edge Agent"):
        await hass.services.async_call(DOMAIN, "ask", {"text": "Hi", "agent_id": "conversation.other"}, blocking=True, return_response=True)
    # the engine still answers afterwards
    response = await hass.services.async_call(DOMAIN, "ask", {"text": "Hi"}, blocking=True, return_response=True)
    assert isinstance(response["text"], str)


async def test_missing_projector_costs_vision_only(
    hass: HomeAssistant, smollm2_path: Path, tmp_path: Path, cameras: dict[str, StillCamera]
) -> None:
    """A projector file that is not a projector: a Repairs issue, the agent loads and talks, images are refused."""
    projector = tmp_path / "mmproj.gguf"
    projector.write_bytes(b"GGUF")  # a file at setup time, unreadable as a projector
    entry = await async_create_local_entry(hass, smollm2_path, mmproj_path=projector)
    assert not entry.runtime_data.engine.has_vision
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"vision_unavailable_{entry.entry_id}") is not None
    with pytest.raises(ServiceValidationError, match="cannot see images"):
        await hass.services.async_call(DOMAIN, "ask", {"text": "Hi", "camera_entity_id": "camera.garage"}, blocking=True, return_response=True)
    with pytest.raises(HomeAssistantError, match="cannot see images"):
        await hass.services.async_call(
            "ai_task", "generate_data",
            {"task_name": "t", "entity_id": "ai_task.gemma_ai_task", "instructions": "Describe.",
             "attachments": [{"media_content_id": "media-source://camera/camera.garage", "media_content_type": "image/png"}]},
            blocking=True, return_response=True,
        )  # fmt: skip
    response = await hass.services.async_call(DOMAIN, "ask", {"text": "Hi"}, blocking=True, return_response=True)
    assert isinstance(response["text"], str)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_camera_tool_is_offered_with_vision_and_exposed_cameras(hass: HomeAssistant, vision_entry: ConfigEntry) -> None:
    api = await llm.async_get_api(hass, "assist", llm.LLMContext("test", Context(), None, None, None))
    look = next(spec for spec in tool_specs(hass, api, vision=True) if spec.name == LOOK_TOOL)
    assert look.grammar_schema["properties"]["camera"]["enum"] == ["Front Door"]
    assert "enum" not in look.parameters["properties"]["camera"]  # names stay out of the prompt
    assert LOOK_TOOL not in {spec.name for spec in tool_specs(hass, api, vision=False)}
    async_expose_entity(hass, conversation.DOMAIN, "camera.front_door", False)
    assert LOOK_TOOL not in {spec.name for spec in tool_specs(hass, api, vision=True)}


async def test_ai_task_image_files_from_the_media_browser(
    hass: HomeAssistant, smollm2_path: Path, projectors: dict[str, Path], tmp_path: Path
) -> None:
    """Attachments from local media: a WebP photo is converted and seen; a text file is refused."""
    (tmp_path / "door.webp").write_bytes(picture(1600, 1200, "WEBP"))
    (tmp_path / "notes.txt").write_text("not a picture")
    hass.config.media_dirs = {"local": str(tmp_path)}  # before media_source is set up with the entry
    entry = await async_create_local_entry(hass, smollm2_path, mmproj_path=projectors["smollm2"])
    steps = record_steps(entry.runtime_data.engine)

    async def task(name: str, mime: str) -> dict[str, Any]:
        return await hass.services.async_call(
            "ai_task", "generate_data",
            {"task_name": "file", "entity_id": "ai_task.gemma_ai_task", "instructions": "Describe it.",
             "attachments": [{"media_content_id": f"media-source://media_source/local/{name}", "media_content_type": mime}]},
            blocking=True, return_response=True,
        )  # fmt: skip

    response = await task("door.webp", "image/webp")
    assert isinstance(response["data"], str)
    assert steps[-1].image_tokens == 192  # 1600x1200 shrunk to 768x576: 16 x 12 blocks
    with pytest.raises(HomeAssistantError, match="is not an image"):
        await task("notes.txt", "text/plain")
    await hass.config_entries.async_unload(entry.entry_id)


async def test_no_memory_for_the_projector_costs_vision_only(
    hass: HomeAssistant, smollm2_path: Path, projectors: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory for the model but not for model + projector: the agent loads without vision, and
    a Repairs issue says why."""
    from custom_components.gemma_edge.engine import preflight  # noqa: PLC0415

    model_needs = int(smollm2_path.stat().st_size * 1.1) + (300 << 20)
    monkeypatch.setattr(preflight, "available_memory_bytes", lambda: model_needs + 100_000)
    entry = await async_create_local_entry(hass, smollm2_path, mmproj_path=projectors["smollm2"])
    assert not entry.runtime_data.engine.has_vision
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"vision_unavailable_{entry.entry_id}")
    assert issue is not None and "memory" in issue.translation_placeholders["error"]
    await hass.config_entries.async_unload(entry.entry_id)
