"""Prompt rendering: Gemma 4's native format, Gemma's turn format, GGUF Jinja templates.

Messages are plain dicts:
``{"role": "system"|"user"|"assistant"|"tool", "content": str}``; assistant messages may
carry ``"tool_calls": [ToolCall, ...]``; tool messages carry ``"tool_name"`` and a
JSON-able ``"result"``; user messages may carry ``"images"`` (JPEG bytes), rendered as
media markers before the text (the engine hands the images to the vision projector in
the same order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import functools
import json
import re
from typing import Any, Protocol

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .grammar import CallSyntax, ToolSpec
from .tool_calls import (
    CALL_END,
    CALL_START,
    RESPONSE_END,
    RESPONSE_START,
    STRING_QUOTE,
    ToolCall,
    format_json_call,
    format_native_call,
    format_native_value,
)
from .vision import MEDIA_MARKER

Message = dict[str, Any]

GEMMA4_GENERATION_PROMPT = "<|turn>model\n<|channel>thought\n<channel|>"
GEMMA_FAMILY = ("gemma", "gemma2", "gemma3", "gemma3n", "gemma4", "gemma-embedding")


class UnsupportedModelError(ValueError):
    """The model has no chat template we can use."""


class ChatFormat(Protocol):
    """A chat format.

    Renders messages and tools to prompt text ending where the model must continue.
    """

    name: str
    syntax: CallSyntax

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """Return the prompt text."""


def _json(value: Any) -> str:
    # Tool results come from any integration: a time, a date or another object must
    # reach the model as text, never fail the turn.
    return json.dumps(
        value,
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        default=_as_text,
    )


def _as_text(value: Any) -> str:
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


def plain_json(value: Any) -> Any:
    """Return a tool result as plain JSON values (times and other objects as text).

    Every chat format (and a model's own template) can render what this returns.
    """
    return json.loads(json.dumps(value, ensure_ascii=False, default=_as_text))


def json_tool_instructions(tools: Sequence[ToolSpec]) -> str:
    """Return system-prompt text that declares tools to a model without tool tokens.

    The model has no native tool tokens; it is told to reply with only a JSON object.
    """
    lines = [
        (
            "You can control the home with these tools. To use one, reply with only a"
            " JSON object"
        ),
        '{"name": <tool name>, "arguments": {<arguments>}} and nothing else.',
        "Tools:",
    ]
    lines.extend(
        f"- {tool.name}: {tool.description} Arguments: {_json(tool.parameters or {})}"
        for tool in sorted(tools, key=lambda t: t.name)
    )
    return "\n".join(lines)


def message_text(message: Message) -> str:
    """Return a message's text, with a media marker for each of its images in front."""
    return (
        MEDIA_MARKER * len(message.get("images") or ())
        + str(message.get("content") or "").strip()
    )


def message_images(messages: Sequence[Message]) -> tuple[bytes, ...]:
    """Return the images of all messages, in the order their markers are rendered."""
    return tuple(image for message in messages for image in message.get("images") or ())


def tool_result_text(message: Message) -> str:
    """Return a tool message's result as plain text, for formats without tool tokens."""
    return (
        f"Result of {message.get('tool_name', 'tool')}: {_json(message.get('result'))}"
    )


def _system_text(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    if messages and messages[0]["role"] == "system":
        return str(messages[0].get("content") or "").strip(), list(messages[1:])
    return "", list(messages)


# --- Gemma 4, built in ---------------------------------------------------------------


def _gemma4_schema(properties: dict[str, Any], required: Sequence[str]) -> str:
    parts = []
    for key in sorted(properties):
        spec = properties[key] or {}
        fields = []
        if spec.get("description"):
            fields.append(
                f"description:{STRING_QUOTE}{spec['description']}{STRING_QUOTE}"
            )
        kind = str(spec.get("type", "string")).upper()
        if kind == "STRING" and spec.get("enum"):
            fields.append(f"enum:{format_native_value(list(spec['enum']))}")
        if kind == "ARRAY" and isinstance(spec.get("items"), dict):
            item_type = str(spec["items"].get("type", "string")).upper()
            fields.append(f"items:{{type:{STRING_QUOTE}{item_type}{STRING_QUOTE}}}")
        if kind == "OBJECT" and spec.get("properties"):
            fields.append(
                "properties:{"
                + _gemma4_schema(spec["properties"], spec.get("required", []))
                + "}"
            )
        fields.append(f"type:{STRING_QUOTE}{kind}{STRING_QUOTE}")
        parts.append(f"{key}:{{{','.join(fields)}}}")
    return ",".join(parts)


def gemma4_declaration(tool: ToolSpec) -> str:
    """Return a tool declaration in Gemma 4's syntax (mirrors the official template)."""
    text = (
        f"<|tool>declaration:{tool.name}"
        f"{{description:{STRING_QUOTE}{tool.description}{STRING_QUOTE}"
    )
    params = tool.parameters or {}
    if params:
        text += ",parameters:{"
        if params.get("properties"):
            text += (
                "properties:{"
                + _gemma4_schema(params["properties"], params.get("required", []))
                + "},"
            )
        if params.get("required"):
            text += (
                "required:["
                + ",".join(
                    f"{STRING_QUOTE}{r}{STRING_QUOTE}" for r in params["required"]
                )
                + "],"
            )
        text += (
            f"type:{STRING_QUOTE}{str(params.get('type', 'object')).upper()}"
            f"{STRING_QUOTE}}}"
        )
    return text + "}<tool|>"


def gemma4_response(message: Message) -> str:
    """Return a tool message as a tool response in Gemma 4's syntax."""
    result = message.get("result")
    name = message.get("tool_name", "unknown")
    body = format_native_value(
        result if isinstance(result, dict) else {"value": result}
    )
    return f"{RESPONSE_START}response:{name}{body}{RESPONSE_END}"


@dataclass
class Gemma4Format:
    """Gemma 4's chat format with native tool declarations, calls and responses."""

    name: str = "gemma4"
    syntax: CallSyntax = "native"
    bos: str = "<bos>"

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """Return the prompt text in Gemma 4's format."""
        system, rest = _system_text(messages)
        out = [self.bos]
        if system or tools:
            out.append("<|turn>system\n" + system)
            out.extend(
                gemma4_declaration(tool) for tool in sorted(tools, key=lambda t: t.name)
            )
            out.append("<turn|>\n")
        in_model_turn = False
        for message in rest:
            role = message["role"]
            if role == "tool":
                out.append(gemma4_response(message))
                continue
            if role == "assistant":
                if not in_model_turn:
                    out.append("<|turn>model\n")
                in_model_turn = True
                out.extend(
                    format_native_call(call) for call in message.get("tool_calls") or []
                )
                content = str(message.get("content") or "").strip()
                if content or not message.get("tool_calls"):
                    out.append(content + "<turn|>\n")
                    in_model_turn = False
                continue
            if in_model_turn:
                # The official template leaves a model turn that ends in tool responses
                # open.
                if not out[-1].endswith(RESPONSE_END):
                    out.append("<turn|>\n")
                in_model_turn = False
            out.append(f"<|turn>{role}\n{message_text(message)}<turn|>\n")
        if not in_model_turn:
            out.append(GEMMA4_GENERATION_PROMPT)
        return "".join(out)


# --- Gemma 2/3 turn format (no tool tokens) ------------------------------------------


@dataclass
class GemmaTurnFormat:
    """Gemma 2/3's turn format.

    System text is folded into the first user turn; tool calls are JSON.
    """

    name: str = "gemma-turns"
    syntax: CallSyntax = "json"
    bos: str = "<bos>"

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """Return the prompt text in Gemma's turn format."""
        system, rest = _system_text(messages)
        preamble = "\n\n".join(
            part
            for part in (system, json_tool_instructions(tools) if tools else "")
            if part
        )
        turns: list[tuple[str, str]] = []
        for message in rest:
            role = "model" if message["role"] == "assistant" else "user"
            if message["role"] == "tool":
                text = tool_result_text(message)
            elif message.get("tool_calls"):
                text = "\n".join(
                    format_json_call(call) for call in message["tool_calls"]
                )
            else:
                text = message_text(message)
            if turns and turns[-1][0] == role:
                turns[-1] = (role, turns[-1][1] + "\n" + text)
            else:
                turns.append((role, text))
        if preamble:
            if turns and turns[0][0] == "user":
                turns[0] = ("user", preamble + "\n\n" + turns[0][1])
            else:
                turns.insert(0, ("user", preamble))
        out = [self.bos]
        out.extend(
            f"<start_of_turn>{role}\n{text}<end_of_turn>\n" for role, text in turns
        )
        out.append("<start_of_turn>model\n")
        return "".join(out)


# --- GGUF Jinja templates ------------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


@dataclass
class JinjaFormat:
    """The model's own chat template from GGUF metadata."""

    template: str
    bos: str = ""
    eos: str = ""
    name: str = "gguf-template"

    def __post_init__(self) -> None:
        """Compile the template and pick the tool-call syntax it expects."""
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader()
        )
        env.globals["raise_exception"] = _raise_exception
        self._compiled = env.from_string(self.template)
        self.syntax: CallSyntax = "native" if CALL_START in self.template else "json"

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """Return the prompt text rendered by the model's own template."""
        if self.syntax == "native":
            return self._compiled.render(
                messages=self._native_messages(messages),
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        },
                    }
                    for t in sorted(tools, key=lambda t: t.name)
                ],
                add_generation_prompt=True,
                enable_thinking=False,
                bos_token=self.bos,
                eos_token=self.eos,
            )
        return self._compiled.render(
            messages=self._json_messages(messages, tools),
            add_generation_prompt=True,
            bos_token=self.bos,
            eos_token=self.eos,
        )

    @staticmethod
    def _native_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
        """Return OpenAI-style messages for a template with native tool calls.

        Tool results ride on their call's message as Gemma's ``tool_responses`` so that
        structured results render natively, not as a JSON string.
        """
        out: list[dict[str, Any]] = []
        for message in messages:
            if message["role"] == "tool":
                result = message.get("result")
                response = {"name": message.get("tool_name"), "response": result}
                if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                    out[-1].setdefault("tool_responses", []).append(response)
                    continue
                out.append(
                    {
                        "role": "tool",
                        "name": message.get("tool_name"),
                        "content": _json(result),
                    }
                )
                continue
            converted: dict[str, Any] = {
                "role": message["role"],
                "content": message_text(message),
            }
            if message.get("tool_calls"):
                converted["tool_calls"] = [
                    {
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in message["tool_calls"]
                ]
            out.append(converted)
        return out

    @staticmethod
    def _json_messages(
        messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> list[dict[str, str]]:
        system, rest = _system_text(messages)
        if tools:
            system = "\n\n".join(
                part for part in (system, json_tool_instructions(tools)) if part
            )
        out: list[dict[str, str]] = (
            [{"role": "system", "content": system}] if system else []
        )
        for message in rest:
            if message["role"] == "tool":
                role, text = "user", tool_result_text(message)
            elif message.get("tool_calls"):
                role, text = (
                    "assistant",
                    "\n".join(format_json_call(c) for c in message["tool_calls"]),
                )
            else:
                role, text = message["role"], message_text(message)
            if out and out[-1]["role"] == role and role != "system":
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": role, "content": text})
        return out


def select_chat_format(
    architecture: str, template: str | None, bos: str = "", eos: str = ""
) -> ChatFormat:
    """Pick the format for a model.

    The model's own template when it has one, else Gemma's built-in one.
    """
    if template:
        return JinjaFormat(template, bos=bos, eos=eos)
    if architecture == "gemma4":
        return Gemma4Format()
    if architecture in GEMMA_FAMILY:
        return GemmaTurnFormat()
    raise UnsupportedModelError(
        f"the model (architecture {architecture!r}) has no chat template and is not"
        " a Gemma model"
    )


# Put inside a marker found in content, it keeps the text readable but no longer the
# marker.
WORD_JOINER = "\u2060"
# What our renderers write around content (the model's own special tokens are added at
# load).
TEMPLATE_MARKERS = (
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|turn>",
    "<turn|>",
    "<|channel>",
    "<channel|>",
    "<|tool>",
    "<tool|>",
    CALL_START,
    CALL_END,
    RESPONSE_START,
    RESPONSE_END,
    STRING_QUOTE,
    MEDIA_MARKER,
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|end|>",
)


# Marker-shaped spans: <...> and [...] without spaces. Each is looked up in the marker
# set, so a vocabulary with thousands of control tokens costs one scan per string.
_MARKER_SHAPE = re.compile(r"<[^<>\s]{1,64}>|\[[^\[\]\s]{1,64}\]")


@functools.lru_cache(maxsize=8)
def _marker_sets(markers: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Split the markers into those of the usual shape and the odd ones.

    Markers of the usual shape are looked up per span; the odd ones are replaced
    literally.
    """
    shaped = frozenset(m for m in markers if _MARKER_SHAPE.fullmatch(m))
    odd = tuple(
        sorted(
            {m for m in markers if len(m) >= 2 and m not in shaped},
            key=len,
            reverse=True,
        )
    )
    return shaped, odd


def _break(marker: str) -> str:
    return marker[0] + WORD_JOINER + marker[1:]


def neutralize_markers(
    messages: Sequence[Message], markers: Sequence[str]
) -> list[Message]:
    """Return the messages with every marker inside their content broken.

    Every template marker or special token text inside their content (the user's words,
    tool results, call arguments, entity names in the system prompt) is broken by an
    invisible character, so content can never become a turn boundary, a tool call or an
    image position. Only what the renderer itself writes is a marker.
    """
    shaped, odd = _marker_sets(tuple(markers))

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            value = _MARKER_SHAPE.sub(
                lambda m: _break(m[0]) if m[0] in shaped else m[0], value
            )
            for marker in odd:
                if marker in value:
                    value = value.replace(marker, _break(marker))
            return value
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        if isinstance(value, ToolCall):
            return ToolCall(value.name, clean(value.arguments))
        return value

    return [
        {
            key: (value if key in ("role", "images", "tool_call_id") else clean(value))
            for key, value in message.items()
        }
        for message in messages
    ]
