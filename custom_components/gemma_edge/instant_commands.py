"""Instant commands: Home Assistant's own sentence matcher in front of the model.

A command Home Assistant's sentence templates recognise for exposed entities ("turn off
the kitchen lights") becomes the same tool call the model would have made, and runs
through the same ToolRunner and executor (exposure, targeting, sensitive policy,
idempotency, events): milliseconds instead of a generation on the hub's CPU.
"""

from __future__ import annotations

from homeassistant.components import conversation
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm

from .intent_targets import is_resolved_intent


async def async_match_command(
    hass: HomeAssistant,
    user_input: conversation.ConversationInput,
    tool_names: set[str],
) -> llm.ToolInput | None:
    """Return the tool call of a command Home Assistant recognises, or None.

    Only strict matches of exposed entities, areas and floors (no fuzzy matching), of
    an intent that changes entities' states and is one of the agent's tools; anything
    else (no match, unmatched names, questions, timers) goes to the model.
    """
    default_agent = get_agent_manager(hass).default_agent
    if default_agent is None or not user_input.text.strip():
        return None
    result = await default_agent.async_recognize_intent(
        user_input, strict_intents_only=True
    )
    if result is None or result.unmatched_entities:
        return None
    name = result.intent.name
    if name not in tool_names or not is_resolved_intent(hass, name):
        return None
    return llm.ToolInput(
        tool_name=name,
        tool_args={entity.name: entity.value for entity in result.entities_list},
        external=True,
    )
