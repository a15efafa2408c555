"""Grammar-constrained generation with a real model: every call parses and matches its schema."""

from __future__ import annotations

from collections.abc import Generator
import re
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.gemma_edge.engine.chat_format import Message
from custom_components.gemma_edge.engine.grammar import (
    ToolSpec,
    GrammarError,
    bounded_number_rule,
    build_json_grammar,
    build_output_grammar,
    max_json_chars,
)
from custom_components.gemma_edge.engine.llama_model import EngineSettings, GenerationRequest, LlamaModel
from custom_components.gemma_edge.engine.tool_calls import ToolCall, ToolCallSyntaxError, parse_tool_calls
from custom_components.gemma_edge.engine.worker import SerialWorker

from .conftest import SMOLLM2


@pytest.fixture(scope="module")
def model() -> Generator[tuple[SerialWorker, LlamaModel]]:
    if not SMOLLM2.exists():
        pytest.fail("test model missing: run scripts/setup")
    worker = SerialWorker(name="grammar_test_model")
    llama = LlamaModel(EngineSettings(str(SMOLLM2), n_ctx=4096), owner=worker.in_worker)
    worker.run_sync(llama.load)
    yield worker, llama
    worker.run_sync(llama.close)
    worker.stop()


def generate(
    model: tuple[SerialWorker, LlamaModel], tools: list[ToolSpec], syntax: str, seed_text: str
) -> tuple[str, bool]:
    worker, llama = model
    messages: list[Message] = [
        {"role": "system", "content": "You control a smart home."},
        {"role": "user", "content": seed_text},
    ]
    grammar = build_output_grammar(tools, syntax, "required")  # type: ignore[arg-type]
    pieces: list[str] = []

    def run() -> str:
        assert llama.chat_format is not None
        request = GenerationRequest(llama.chat_format.render(messages, tools), grammar, max_tokens=1200, temperature=0.8)
        return llama.generate(request, lambda piece: pieces.append(piece) or True).stop_reason

    stop_reason = worker.run_sync(run)
    return "".join(pieces), stop_reason == "length"


def check(value: Any, schema: dict[str, Any]) -> None:
    """Validate the JSON-schema subset tool schemas use."""
    if "enum" in schema:
        assert value in schema["enum"]
        return
    kind = schema.get("type")
    if kind == "string":
        assert isinstance(value, str)
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        assert isinstance(value, bool)
    elif kind == "array":
        assert isinstance(value, list)
        for item in value:
            check(item, schema.get("items", {}))
    elif kind == "object":
        assert isinstance(value, dict)
        properties = schema.get("properties", {})
        assert set(value) <= set(properties)
        assert set(schema.get("required", [])) <= set(value)
        if leaders := [opt["required"][0] for opt in schema.get("anyOf", [])]:
            assert set(leaders) & set(value)
        for key, item in value.items():
            check(item, properties[key])


words = st.sampled_from(["Kitchen Light", "Bedroom Lamp", "heat", "cool", "on", "Porch"])
leaf_schemas = st.one_of(
    st.just({"type": "string"}),
    st.lists(words, min_size=1, max_size=4, unique=True).map(lambda e: {"type": "string", "enum": e}),
    st.just({"type": "integer"}),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.just({"type": "array", "items": {"type": "string", "enum": ["light", "switch"]}}),
)
keys = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


@st.composite
def tool_sets(draw: st.DrawFn) -> list[ToolSpec]:
    tools = []
    for index in range(draw(st.integers(1, 3))):
        properties = draw(st.dictionaries(keys, leaf_schemas, max_size=4))
        required = [k for k in properties if draw(st.booleans())]
        schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if properties and not required and draw(st.booleans()):
            schema["anyOf"] = [{"required": [k]} for k in list(properties)[:2]]
        tools.append(ToolSpec(f"Tool{index}_{draw(keys)}", "A test tool.", schema))
    return tools


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tools=tool_sets(), syntax=st.sampled_from(["json", "native"]), utterance=words)
def test_generated_calls_parse_and_validate(
    model: tuple[SerialWorker, LlamaModel], tools: list[ToolSpec], syntax: str, utterance: str
) -> None:
    text, truncated = generate(model, tools, syntax, f"Please do something with {utterance}")
    parsed = parse_tool_calls(text, truncated=truncated)
    assert 1 <= len(parsed)
    by_name = {tool.name: tool for tool in tools}
    for call in parsed:
        assert call.name in by_name
        check(call.arguments, by_name[call.name].parameters)


def test_no_tools_no_grammar() -> None:
    assert build_output_grammar([], "json") is None
    assert build_output_grammar([ToolSpec("X")], "json", "none") is None


def test_auto_grammar_allows_text_or_call() -> None:
    grammar = build_output_grammar([ToolSpec("X")], "native", "auto")
    assert grammar is not None and grammar.startswith("root ::= calls | text")


def test_gemma4_markers_are_matched_as_tokens() -> None:
    grammar = build_output_grammar([ToolSpec("X")], "native", "required", markers_as_tokens=True)
    assert grammar is not None
    assert "<|tool_call> " in grammar and '"<|tool_call>"' not in grammar




def test_cut_off_calls_keep_the_complete_ones() -> None:
    text = '<|tool_call>call:A{x:1}<tool_call|><|tool_call>call:B{y:<|"|>abc'
    assert parse_tool_calls(text, truncated=True) == [ToolCall("A", {"x": 1})]
    with pytest.raises(ToolCallSyntaxError, match="cut off inside a tool call"):
        parse_tool_calls('<|tool_call>call:B{y:<|"|>abc', truncated=True)


def _as_regex(rule: str) -> re.Pattern[str]:
    """The bounded-number rules use only literals, digit classes, groups, ? and {m,n}: as a regex."""
    return re.compile("^(?:" + rule.replace(" ", "").replace('"', "").replace(".", r"\.") + ")$")


@settings(max_examples=200, deadline=None)
@given(low=st.integers(-10**6, 10**6), span=st.integers(0, 10**6), probes=st.lists(st.integers(-3 * 10**6, 3 * 10**6), max_size=40))
def test_bounded_integers_match_exactly_the_range(low: int, span: int, probes: list[int]) -> None:
    high = low + span
    pattern = _as_regex(bounded_number_rule({"minimum": low, "maximum": high}, integer=True))
    for value in [low - 1, low, low + 1, high - 1, high, high + 1, *probes]:
        assert bool(pattern.match(str(value))) == (low <= value <= high), value
    assert not pattern.match("00") and not pattern.match("-0") and not pattern.match("01")


@settings(max_examples=100, deadline=None)
@given(low=st.integers(-50, 50), span=st.integers(0, 200), text=st.from_regex(r"-?[0-9]{1,3}(\.[0-9]{1,4})?", fullmatch=True))
def test_bounded_numbers_never_leave_the_range(low: int, span: int, text: str) -> None:
    high = low + span
    pattern = _as_regex(bounded_number_rule({"minimum": low, "maximum": high}, integer=False))
    if pattern.match(text):
        assert low <= float(text) <= high
    assert pattern.match(str(low)) and pattern.match(str(high))


def test_fractional_bounds_and_empty_ranges() -> None:
    """0.1 to 0.9 has no whole number in it: "0." and a fraction (the structure's own validation
    refuses the few values just outside); an empty range is a clear GrammarError, not a raw
    ValueError escaping into the AI Task."""
    pattern = _as_regex(bounded_number_rule({"minimum": 0.1, "maximum": 0.9}, integer=False))
    assert pattern.match("0.5") and pattern.match("0.25") and not pattern.match("1") and not pattern.match("1.5")
    with pytest.raises(GrammarError, match="no whole number lies in"):
        bounded_number_rule({"minimum": 0.1, "maximum": 0.9}, integer=True)
    with pytest.raises(GrammarError, match="no number lies in"):
        bounded_number_rule({"minimum": 5, "maximum": 1}, integer=False)


def test_structured_output_grammar_covers_the_schema() -> None:
    grammar = build_json_grammar(
        {
            "type": "object",
            "properties": {"people": {"type": "number", "minimum": 0, "maximum": 20}, "ok": {"type": "boolean"}},
            "required": ["people"],
        }
    )
    assert grammar.startswith("root ::= data-object") and "data-people-range ::=" in grammar


def test_structured_strings_fit_the_token_budget() -> None:
    """String lengths shrink so that the longest answer the grammar allows fits the answer's budget."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "ok": {"type": "boolean"}}}
    roomy = build_json_grammar(schema)
    tight = build_json_grammar(schema, max_chars=300)
    assert "json-char{0,1024}" in roomy
    cap = int(tight.split("json-char{0,")[1].split("}")[0])
    assert 16 <= cap < 1024 and max_json_chars(schema, cap) <= 300 < max_json_chars(schema, cap + 1)
