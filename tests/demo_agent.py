"""Talking to the scripted-output agent in the demo home (the ``agent`` fixture in conftest)."""

from __future__ import annotations

from typing import Any

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant

AGENT = "conversation.gemma_conversation"
# Never in a spoken answer: tool syntax, template markers, intent names.
FORBIDDEN_IN_SPEECH = ("{", "}", "<|", '"name":', "Hass")


async def ask(hass: HomeAssistant, text: str, device_id: str | None = None, conversation_id: str | None = None) -> str:
    """One turn; the spoken answer (checked to be a sentence, not syntax)."""
    result = await conversation.async_converse(
        hass, text, conversation_id, Context(), language="en", agent_id=AGENT, device_id=device_id
    )
    await hass.async_block_till_done()
    speech = result.response.speech["plain"]["speech"].strip()
    assert speech and not [bad for bad in FORBIDDEN_IN_SPEECH if bad in speech], speech
    return speech


def state(hass: HomeAssistant, entity_id: str, attribute: str | None = None) -> Any:
    current = hass.states.get(entity_id)
    assert current is not None
    return current.attributes.get(attribute) if attribute else current.state
