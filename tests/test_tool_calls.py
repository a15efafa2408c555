"""Tool-call parsing: every rendered call parses back (Hypothesis); malformed text is a clear error."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.gemma_edge.engine.local_engine import OutputSplitter
from custom_components.gemma_edge.engine.tool_calls import (
    ToolCall,
    ToolCallSyntaxError,
    format_json_call,
    format_native_call,
    looks_like_call,
    parse_tool_calls,
)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
# Gemma's string quote is <|"|>; its strings cannot contain that marker.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(lambda s: '<|"|>' not in s)
scalars = st.one_of(
    texts, st.integers(-(10**9), 10**9), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: round(f, 3)),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=10,
)
calls = st.builds(ToolCall, names, st.dictionaries(names, values, max_size=5))


def _normal(value: Any) -> Any:
    """JSON and Gemma both read 1.0 as a float and 1 as an int; compare numbers by value."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


@settings(max_examples=400)
@given(st.lists(calls, min_size=1, max_size=3))
def test_native_calls_round_trip(generated: list[ToolCall]) -> None:
    text = "".join(format_native_call(call) for call in generated)
    assert parse_tool_calls(text) == generated


@settings(max_examples=200)
@given(st.lists(calls, min_size=1, max_size=3))
def test_native_calls_without_markers_parse(generated: list[ToolCall]) -> None:
    """Detokenizers may drop Gemma's control tokens; the bare form still parses."""
    text = "\n".join(format_native_call(c).replace("<|tool_call>", "").replace("<tool_call|>", "") for c in generated)
    assert parse_tool_calls(text) == generated


@settings(max_examples=400)
@given(st.lists(calls, min_size=1, max_size=3))
def test_json_calls_round_trip(generated: list[ToolCall]) -> None:
    text = "\n".join(format_json_call(call) for call in generated)
    assert [(c.name, _normal(c.arguments)) for c in parse_tool_calls(text)] == [
        (c.name, _normal(c.arguments)) for c in generated
    ]


@settings(max_examples=300)
@given(calls, st.data())
def test_split_streams_are_read_whole(call: ToolCall, data: st.DataObject) -> None:
    """However the model's text is cut into pieces, the splitter shows no call text and parses the call."""
    text = format_native_call(call)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    splitter = OutputSplitter(tools_offered=True)
    shown = "".join(splitter.feed(piece) for piece in pieces)
    rest, parsed = splitter.finish()
    assert shown == rest == ""
    assert parsed == [call]


def test_json_arguments_as_string_are_decoded() -> None:
    assert parse_tool_calls('{"name": "HassTurnOn", "arguments": "{\\"name\\": \\"Kitchen\\"}"}') == [
        ToolCall("HassTurnOn", {"name": "Kitchen"})
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty tool call"),
        ("Sure, turning it on!", "not a tool call"),
        ('{"name": "HassTurnOn", "arguments": {"name": "Kitch', "invalid JSON tool call"),
        ('{"arguments": {}}', 'must be an object with a "name"'),
        ('{"name": "X", "arguments": [1]}', "arguments must be an object"),
        ("<|tool_call>call:HassTurnOn{name:<|\"|>Kitchen", "the end of a string"),
        ("<|tool_call>call:HassTurnOn{name <|\"|>x<|\"|>}", "expected ':'"),
        ("<|tool_call>call:{}", "expected a name"),
        ("call:HassTurnOn{n:@}", "expected a value"),
    ],
)
def test_malformed_calls_are_clear_errors(text: str, reason: str) -> None:
    with pytest.raises(ToolCallSyntaxError, match=reason):
        parse_tool_calls(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), ("  ", None), ("<|tool", None), ("ca", None), ("call:X", True), ("{", True), ("Hello", False), ("<b>", False)],
)
def test_call_detection(text: str, expected: bool | None) -> None:
    assert looks_like_call(text) is expected


def test_plain_text_streams_through() -> None:
    splitter = OutputSplitter(tools_offered=True)
    assert splitter.feed("Hel") == "Hel"
    assert splitter.feed("lo") == "lo"
    assert splitter.finish() == ("", [])
