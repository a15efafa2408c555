"""Tool calls: the data type, Gemma 4's native call syntax, and plain JSON calls.

Gemma 4 writes a call as ``<|tool_call>call:NAME{key:<|"|>text<|"|>,n:5}<tool_call|>``:
keys are bare, strings are wrapped in ``<|"|>``. Its markers are control tokens that a
detokenizer may drop, so the parser accepts the marked form and the bare
``call:NAME{...}`` form alike. Other models write
``{"name": NAME, "arguments": {...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import re
from typing import Any

CALL_START = "<|tool_call>"
CALL_END = "<tool_call|>"
STRING_QUOTE = '<|"|>'
RESPONSE_START = "<|tool_response>"
RESPONSE_END = "<tool_response|>"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class ToolCallSyntaxError(ValueError):
    """Model output that should be a tool call but cannot be read as one."""


@dataclass(frozen=True)
class ToolCall:
    """One call of a declared tool."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


# --- Gemma 4 native syntax -----------------------------------------------------------


def format_native_value(value: Any) -> str:
    """Render a value in Gemma 4's argument syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return f"{STRING_QUOTE}{value}{STRING_QUOTE}"
    if isinstance(value, dict):  # keys sorted, as Gemma's template writes them
        return (
            "{"
            + ",".join(
                f"{key}:{format_native_value(value[key])}" for key in sorted(value)
            )
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_native_value(item) for item in value) + "]"
    return format_native_value(str(value))


def format_native_call(call: ToolCall) -> str:
    """Render a call the way Gemma 4 writes it."""
    return (
        f"{CALL_START}call:{call.name}{format_native_value(call.arguments)}{CALL_END}"
    )


class _NativeReader:
    """Recursive-descent reader for Gemma 4's argument syntax."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ToolCallSyntaxError:
        snippet = self.text[self.pos : self.pos + 20]
        return ToolCallSyntaxError(
            f"expected {what} at position {self.pos} (near {snippet!r})"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def take(self, literal: str) -> bool:
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise self.fail(repr(literal))

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("a name")
        self.pos = match.end()
        return match.group()

    def value(self) -> Any:
        self.skip_space()
        if self.take(STRING_QUOTE):
            end = self.text.find(STRING_QUOTE, self.pos)
            if end < 0:
                raise self.fail("the end of a string")
            value = self.text[self.pos : end]
            self.pos = end + len(STRING_QUOTE)
            return value
        if self.text.startswith('"', self.pos):  # tolerate JSON strings
            try:
                value, end = json.JSONDecoder().raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                raise self.fail("a string") from err
            self.pos = end
            return value
        if self.take("{"):
            return self.object_body()
        if self.take("["):
            return self.array_body()
        for literal, constant in (("true", True), ("false", False), ("null", None)):
            if self.take(literal):
                return constant
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = match.group()
            return float(number) if any(c in number for c in ".eE") else int(number)
        raise self.fail("a value")

    def object_body(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.skip_space()
        if self.take("}"):
            return result
        while True:
            self.skip_space()
            if self.take(STRING_QUOTE):  # quoted key
                end = self.text.find(STRING_QUOTE, self.pos)
                if end < 0:
                    raise self.fail("the end of a key")
                key = self.text[self.pos : end]
                self.pos = end + len(STRING_QUOTE)
            else:
                key = self.name()
            self.skip_space()
            self.expect(":")
            result[key] = self.value()
            self.skip_space()
            if self.take("}"):
                return result
            self.expect(",")

    def array_body(self) -> list[Any]:
        result: list[Any] = []
        self.skip_space()
        if self.take("]"):
            return result
        while True:
            result.append(self.value())
            self.skip_space()
            if self.take("]"):
                return result
            self.expect(",")


def _parse_native_calls(text: str, calls: list[ToolCall]) -> None:
    reader = _NativeReader(text)
    while True:
        reader.skip_space()
        if reader.pos >= len(text):
            return
        reader.take(CALL_START)
        reader.skip_space()
        reader.expect("call:")
        name = reader.name()
        reader.skip_space()
        reader.expect("{")
        calls.append(ToolCall(name, reader.object_body()))
        reader.skip_space()
        reader.take(CALL_END)


# --- JSON calls ----------------------------------------------------------------------


def format_json_call(call: ToolCall) -> str:
    """Render a call in the plain JSON form of models without native tool tokens."""
    return json.dumps(
        {"name": call.name, "arguments": call.arguments}, ensure_ascii=False
    )


def _parse_json_calls(text: str, calls: list[ToolCall]) -> None:
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ToolCallSyntaxError(
                f"invalid JSON tool call: {err.msg} at position {err.pos}"
            ) from err
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise ToolCallSyntaxError(
                'a JSON tool call must be an object with a "name" string'
            )
        arguments = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as err:
                raise ToolCallSyntaxError(
                    f"tool call arguments are not JSON: {err.msg}"
                ) from err
        if not isinstance(arguments, dict):
            raise ToolCallSyntaxError("tool call arguments must be an object")
        calls.append(ToolCall(obj["name"], arguments))


# --- Detection -----------------------------------------------------------------------


def looks_like_call(text: str) -> bool | None:
    """Return whether generated text is (the start of) tool calls.

    True, False, or None (undecided yet).
    """
    stripped = text.lstrip()
    if not stripped:
        return None
    for opener in (CALL_START, "call:", "{"):
        if stripped.startswith(opener):
            return True
        if opener.startswith(stripped):
            return None
    return False


def parse_tool_calls(text: str, *, truncated: bool = False) -> list[ToolCall]:
    """Parse model output made of one or more tool calls, native or JSON.

    Raises ToolCallSyntaxError with a readable reason when the text is not a valid
    call. When the generation was cut off (``truncated``), the complete calls before the
    cut are returned and the unfinished last one is dropped; with no complete call it is
    still an error.
    """
    stripped = text.strip()
    if not stripped:
        raise ToolCallSyntaxError("empty tool call")
    if stripped.startswith("{"):
        parse = _parse_json_calls
    elif stripped.startswith((CALL_START, "call:")):
        parse = _parse_native_calls
    else:
        raise ToolCallSyntaxError(f"not a tool call: {stripped[:40]!r}")
    calls: list[ToolCall] = []
    try:
        parse(stripped, calls)
    except ToolCallSyntaxError as err:
        if not (truncated and calls):
            if truncated:
                raise ToolCallSyntaxError(
                    f"the answer was cut off inside a tool call ({err})"
                ) from err
            raise
    return calls
