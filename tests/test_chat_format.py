"""Prompt rendering: our built-in Gemma 4 format matches Google's official template byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.gemma_edge.engine.chat_format import (
    Gemma4Format,
    GemmaTurnFormat,
    JinjaFormat,
    Message,
    message_images,
)
from custom_components.gemma_edge.engine.vision import MEDIA_MARKER
from custom_components.gemma_edge.engine.grammar import ToolSpec
from custom_components.gemma_edge.engine.tool_calls import ToolCall

from .conftest import MODELS

TEMPLATE = MODELS / "gemma-4-chat-template.jinja"

TOOLS = [
    ToolSpec(
        "HassTurnOn",
        "Turns on a device.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": ["Kitchen Light", "Porch Light"]},
                "domain": {"type": "array", "items": {"type": "string"}},
                "brightness": {"type": "integer", "description": "Percent"},
            },
            "required": ["name"],
        },
    ),
    ToolSpec("GetLiveContext", "Current states.", {"type": "object", "properties": {}, "required": []}),
]

CONVERSATIONS: dict[str, tuple[list[Message], list[ToolSpec]]] = {
    "plain": ([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}], []),
    "no system": ([{"role": "user", "content": "Hi"}], []),
    "tools": ([{"role": "system", "content": "Control the home."}, {"role": "user", "content": "Lights on"}], TOOLS),
    "tool round trip": (
        [
            {"role": "system", "content": "Control the home."},
            {"role": "user", "content": "Turn on the kitchen light"},
            {"role": "assistant", "content": "", "tool_calls": [ToolCall("HassTurnOn", {"name": "Kitchen Light", "brightness": 50})]},
            {"role": "tool", "tool_name": "HassTurnOn", "result": {"success": True, "targets": ["light.kitchen"]}},
        ],
        TOOLS,
    ),
    "two turns": (
        [
            {"role": "system", "content": "Control the home."},
            {"role": "user", "content": "Turn on the kitchen light"},
            {"role": "assistant", "content": "", "tool_calls": [ToolCall("HassTurnOn", {"name": "Kitchen Light"})]},
            {"role": "tool", "tool_name": "HassTurnOn", "result": {"success": True}},
            {"role": "assistant", "content": "Done, the kitchen light is on."},
            {"role": "user", "content": "Thanks"},
        ],
        TOOLS,
    ),
    "image": ([{"role": "system", "content": "Describe pictures."}, {"role": "user", "content": "Who is there?", "images": [b"jpeg"]}], []),
    "camera look": (
        [
            {"role": "system", "content": "Control the home."},
            {"role": "user", "content": "Is the garage door open?"},
            {"role": "assistant", "content": "", "tool_calls": [ToolCall("LookAtCamera", {"camera": "Garage"})]},
            {"role": "tool", "tool_name": "LookAtCamera", "result": {"camera": "Garage", "image": "the snapshot follows"}},
            {"role": "user", "content": "(The current picture of Garage.)", "images": [b"jpeg"]},
        ],
        TOOLS,
    ),
}


@pytest.fixture(scope="module")
def official() -> JinjaFormat:
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: run scripts/setup")
    return JinjaFormat(TEMPLATE.read_text(), bos="<bos>", eos="<eos>")


@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_builtin_gemma4_matches_official_template(official: JinjaFormat, case: str) -> None:
    messages, tools = CONVERSATIONS[case]
    assert official.syntax == "native"
    assert Gemma4Format().render(messages, tools) == official.render(messages, tools)


def test_gemma_turns_fold_system_and_tools_into_the_first_user_turn() -> None:
    messages, tools = CONVERSATIONS["tool round trip"]
    text = GemmaTurnFormat().render(messages, tools)
    assert text.startswith("<bos><start_of_turn>user\nControl the home.\n\nYou can control the home")
    assert '{"name": "HassTurnOn", "arguments": {"name": "Kitchen Light", "brightness": 50}}<end_of_turn>' in text
    assert "<start_of_turn>user\nResult of HassTurnOn:" in text
    assert text.endswith("<start_of_turn>model\n")


def test_prompt_prefix_is_stable_across_turns() -> None:
    """Later turns only append: the earlier prompt is a prefix (the KV cache can be reused)."""
    first: list[Any] = CONVERSATIONS["tool round trip"][0]
    later: list[Any] = CONVERSATIONS["two turns"][0]
    for fmt in (Gemma4Format(), GemmaTurnFormat()):
        earlier = fmt.render(first[:2], TOOLS)
        assert fmt.render(later, TOOLS).startswith(earlier.rsplit("<start_of_turn>model", 1)[0].rsplit("<|turn>model", 1)[0])




@pytest.mark.parametrize("chat_format", [Gemma4Format(), GemmaTurnFormat()], ids=lambda f: f.name)
def test_images_render_as_media_markers_in_order(chat_format: Any) -> None:
    messages, tools = CONVERSATIONS["camera look"]
    prompt = chat_format.render(messages, tools)
    assert prompt.count(MEDIA_MARKER) == 1
    assert prompt.index("LookAtCamera") < prompt.index(MEDIA_MARKER) < prompt.index("(The current picture of Garage.)")
    assert message_images(messages) == (b"jpeg",)



@pytest.mark.parametrize("name", ["gemma4", "gemma-turns", "official template"])
def test_tool_results_with_times_and_objects_render_as_text(official: JinjaFormat, name: str) -> None:
    """Home Assistant's time intent answers with a datetime.time; any integration may return
    objects JSON cannot hold: the prompt gets their text, the turn does not fail."""
    import datetime  # noqa: PLC0415

    from custom_components.gemma_edge.engine.chat_format import plain_json  # noqa: PLC0415

    chat_format = {"gemma4": Gemma4Format(), "gemma-turns": GemmaTurnFormat(), "official template": official}[name]
    raw = {"speech_slots": {"time": datetime.time(15, 37)}, "when": datetime.date(2026, 11, 29), "other": object()}
    result = plain_json(raw)
    assert result["speech_slots"] == {"time": "15:37:00"} and result["when"] == "2026-11-29"
    assert isinstance(result["other"], str)

    def messages(tool_result: Any) -> list[Message]:
        return [
            {"role": "user", "content": "What time is it?"},
            {"role": "assistant", "content": "", "tool_calls": [ToolCall("HassGetCurrentTime", {})]},
            {"role": "tool", "tool_name": "HassGetCurrentTime", "result": tool_result, "tool_call_id": "1"},
        ]

    assert "15:37:00" in chat_format.render(messages(result), TOOLS)
    if chat_format is not official:  # our own formats cope with the objects themselves too
        assert "15:37:00" in chat_format.render(messages(raw), TOOLS)
