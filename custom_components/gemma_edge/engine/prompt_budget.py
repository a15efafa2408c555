"""Fit the prompt into the context: compact Assist's device overview, or use a tool.

Assist's API prompt ends with a YAML overview of every exposed entity. With hundreds of
entities that overview alone can exceed a small context. Rather than truncating
silently, the agent first writes it compactly (one short line per entity), then, if that
is still too long, replaces it with an instruction to look devices up with
GetLiveContext (leaving it to a tool), and raises a Repairs issue with the numbers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml

OVERVIEW_HEADER = (
    "Static Context: An overview of the areas and the devices in this smart home:"
)
FETCH_ON_DEMAND = (
    "The list of devices is too long for this model's memory: call GetLiveContext to"
    " find devices and their names before acting."
)


@dataclass(frozen=True)
class Overview:
    """Where Assist's device overview sits in a system prompt, and what it lists."""

    start: int
    end: int
    entries: list[dict[str, str]]


def find_overview(text: str) -> Overview | None:
    """Find Assist's device overview in a system prompt (None without one)."""
    start = text.find(OVERVIEW_HEADER)
    if start < 0:
        return None
    lines = text[start:].split("\n")
    entries: list[dict[str, str]] = []
    consumed = len(lines[0]) + 1
    for line in lines[1:]:
        if line.startswith("- "):
            entries.append({})
        elif not line.startswith("  ") or not entries:
            break
        key, _, value = line[2:].strip().partition(":")
        value = value.strip()
        if key in ("names", "domain", "areas") and value:
            entries[-1][key] = value
        consumed += len(line) + 1
    return Overview(start, min(len(text), start + consumed), entries)


def compact_overview(text: str) -> str:
    """Rewrite the overview as one short line per entity.

    For example "Kitchen Light (light, Kitchen)".
    """
    overview = find_overview(text)
    if overview is None:
        return text
    lines = []
    for entry in overview.entries:
        details = ", ".join(v for v in (entry.get("domain"), entry.get("areas")) if v)
        lines.append(
            f"{entry.get('names', '?')} ({details})"
            if details
            else entry.get("names", "?")
        )
    compact = "Devices (name (domain, area)): " + "; ".join(lines) + "\n"
    return text[: overview.start] + compact + text[overview.end :]


def drop_overview(text: str) -> str:
    """Replace the overview; the model looks devices up with GetLiveContext instead."""
    overview = find_overview(text)
    if overview is None:
        return text
    return text[: overview.start] + FETCH_ON_DEMAND + "\n" + text[overview.end :]


def overview_entity_count(text: str) -> int:
    """How many entities Assist's device overview in ``text`` lists (0 without one)."""
    overview = find_overview(text)
    return len(overview.entries) if overview else 0


# How a system prompt was made to fit (the Repairs issue names it).
FIT_COMPACT = "compact device list"
FIT_LOOKUP = "devices looked up with GetLiveContext"


@dataclass(frozen=True)
class FittedPrompt:
    """A system prompt made to fit a token budget, with the figures that decided it."""

    text: str
    mode: str | None  # None: kept as it was; FIT_COMPACT or FIT_LOOKUP
    needed: int  # tokens of the prompt as it was
    compact: int  # tokens with the compact device list (== needed when not tried)
    budget: int
    entities: int  # entities in the device overview


async def fit_system_prompt(
    text: str, budget: int, count: Callable[[str], Awaitable[int]]
) -> FittedPrompt:
    """Return the system prompt made to fit ``budget`` tokens.

    The prompt as is when it fits; else with a compact device list; else with the list
    replaced by "use GetLiveContext". Never silent truncation.
    """
    needed = await count(text)
    entities = overview_entity_count(text)
    if needed <= budget or not entities:
        return FittedPrompt(text, None, needed, needed, budget, entities)
    fitted, mode = compact_overview(text), FIT_COMPACT
    compact = await count(fitted)
    if compact > budget:
        fitted, mode = drop_overview(text), FIT_LOOKUP
    return FittedPrompt(fitted, mode, needed, compact, budget, entities)


LIVE_CONTEXT_HEADER = (
    "Live Context: An overview of the areas and the devices in this smart home:"
)


def compact_live_context(text: str) -> str:
    """Rewrite GetLiveContext's YAML as one short line per entity.

    For example "Kitchen Lights (light, Kitchen): on, brightness 180": the same facts in
    about half the tokens, which the model re-reads in every later step of the turn.
    Anything not in the expected shape is returned unchanged.
    """
    if not text.startswith(LIVE_CONTEXT_HEADER):
        return text
    try:
        entries = yaml.safe_load(text[len(LIVE_CONTEXT_HEADER) :])
    except yaml.YAMLError:
        return text
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) for entry in entries
    ):
        return text
    lines = []
    for entry in entries:
        kind = ", ".join(
            str(entry[key]) for key in ("domain", "areas") if entry.get(key)
        )
        details = [str(entry["state"])] if "state" in entry else []
        attributes = (
            entry.get("attributes") if isinstance(entry.get("attributes"), dict) else {}
        )
        details += [
            f"{key} {value}"
            for key, value in attributes.items()
            if value not in (None, "", [], {})
        ]
        lines.append(f"{entry.get('names', '?')} ({kind}): {', '.join(details)}")
    return "Live states (name (kind, area): state, attributes): " + "; ".join(lines)


# Lines of Assist's prompt that depend on the requesting device. They sit near the top,
# so a satellite in an area would share no cached prefix with a primed prompt; they are
# taken out of the system prompt, and the area line goes in front of the user's words
# instead.
_AREA_LINE = "You are in area "
_DEVICE_LINES = (
    # no area: the agent asks "which device" itself
    "When a user asks to turn on all devices of a specific type, ask user to specify an"
    " area, unless there is only one device of that type.",
    # the timer tools are simply not offered
    "This device is not able to start timers.",
)


def without_device_lines(text: str) -> tuple[str, str]:
    """Split off the system prompt's device-dependent lines.

    Return the prompt without them, and the area line (or "").
    """
    kept, area = [], ""
    for line in text.split("\n"):
        if line.startswith(_AREA_LINE):
            area = line
        elif line not in _DEVICE_LINES:
            kept.append(line)
    return "\n".join(kept), area


def with_area_line(
    messages: list[dict[str, Any]], area_line: str
) -> list[dict[str, Any]]:
    """Put the asking device's area line in front of every user message.

    On every user turn, so that the next turn renders the earlier ones the same.
    """
    if not area_line:
        return messages
    return [
        {**m, "content": f"({area_line})\n{m['content']}"} if m["role"] == "user" else m
        for m in messages
    ]
