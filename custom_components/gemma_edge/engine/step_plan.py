"""What each generation step of a turn is given, beyond the conversation so far.

Plain Python: the tool choice of a step, the images of the turn placed in the messages,
and the hint that asks for structured output (the grammar enforces it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .chat_format import Message
from .grammar import ToolChoice
from .images import PreparedImage


def step_tool_choice(act_first: bool, iteration: int, *, acted: bool) -> ToolChoice:
    """Return the tool choice of one step.

    In "always act first" mode the first step must call tools; after acting, the answer
    is in words; after only looking something up (``acted`` False), the model may act or
    answer. Otherwise the model chooses.
    """
    if not act_first:
        return "auto"
    if iteration == 0:
        return "required"
    return "none" if acted else "auto"


def with_images(
    messages: list[Message],
    user_images: Sequence[PreparedImage],
    snapshots: Mapping[str, tuple[str, PreparedImage]],
) -> list[Message]:
    """Return the messages with the turn's images placed in them.

    The user's images go on their last message, each camera snapshot in a user message
    right after the tool result that took it. They are not kept in the chat log, so
    later turns do not evaluate them again.
    """
    out: list[Message] = []
    last_user = max(
        (i for i, m in enumerate(messages) if m["role"] == "user"), default=-1
    )
    for index, message in enumerate(messages):
        if index == last_user and user_images:
            message = {**message, "images": [image.jpeg for image in user_images]}
        out.append(message)
        call_id = message.get("tool_call_id", "")
        if message["role"] == "tool" and (shot := snapshots.get(call_id)):
            name, image = shot
            out.append(
                {
                    "role": "user",
                    "content": f"(The current picture of {name}.)",
                    "images": [image.jpeg],
                }
            )
    return out


def structure_hint(schema: Mapping[str, Any]) -> str:
    """Return a short description of the wanted fields for the prompt.

    The grammar enforces them.
    """
    fields = []
    for key, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type", "value")
        description = f": {spec['description']}" if spec.get("description") else ""
        fields.append(f"{key} ({kind}{description})")
    if not fields:
        return "Answer in JSON."
    return "Answer with a JSON object with these fields: " + "; ".join(fields) + "."


def with_structure_hint(
    messages: list[Message], schema: Mapping[str, Any] | None
) -> list[Message]:
    """Make the last user message ask for the structure's fields.

    The messages are returned unchanged without a structure.
    """
    if schema is None:
        return messages
    last_user = max(
        (i for i, m in enumerate(messages) if m["role"] == "user"), default=-1
    )
    if last_user < 0:
        return messages
    message = messages[last_user]
    hinted = {**message, "content": f"{message['content']}\n\n{structure_hint(schema)}"}
    return [*messages[:last_user], hinted, *messages[last_user + 1 :]]
