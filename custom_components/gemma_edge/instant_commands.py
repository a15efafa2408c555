"""Instant commands: Home Assistant's own sentence matcher in front of the model.

A command Home Assistant's sentence templates recognise for exposed entities ("turn off
the kitchen lights") becomes the same tool call the model would have made, and runs
through the same ToolRunner and executor (exposure, targeting, sensitive policy,
idempotency, events): milliseconds instead of a generation on the hub's CPU. A question
it recognises ("is the kitchen light on?") is answered by Home Assistant from the
current state, in its own words; nothing acts. A bare "yes" after the agent asked to
confirm one call confirms that call, through the executor's confirmation rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.components import conversation
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent, llm
from homeassistant.util.ulid import ulid_now

from .actions.records import ActionStatus
from .intent_targets import is_resolved_intent
from .tool_runner import CONFIRM_ARGUMENT

# Questions Home Assistant answers from the current state of exposed entities.
QUESTION_INTENTS = frozenset(
    {
        intent.INTENT_GET_STATE,
        intent.INTENT_GET_TEMPERATURE,
        intent.INTENT_GET_CURRENT_DATE,
        intent.INTENT_GET_CURRENT_TIME,
        "HassGetWeather",
    }
)


@dataclass(frozen=True)
class MatchedSentence:
    """What Home Assistant's sentences understood: a command or a question."""

    # The tool call of a command that changes entities (run through the executor).
    command: llm.ToolInput | None = None
    # The intent of a question Home Assistant answers itself.
    question: str | None = None


@dataclass(frozen=True)
class QuestionAnswer:
    """Home Assistant's answer to a question: its words, its intent call and result."""

    intent: str
    speech: str
    contents: list[conversation.AssistantContent | conversation.ToolResultContent]


async def async_match_sentence(
    hass: HomeAssistant,
    user_input: conversation.ConversationInput,
    tool_names: set[str],
) -> MatchedSentence | None:
    """Return the command or question Home Assistant recognises, or None.

    Only strict matches of exposed entities, areas and floors (no fuzzy matching): an
    intent that changes entities' states and is one of the agent's tools, or a question
    about the current state; anything else (no match, unmatched names, timers, chat)
    goes to the model.
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
    if name in QUESTION_INTENTS:
        return MatchedSentence(question=name)
    # With more than one LLM API the agent's tools carry the API's name.
    tool = name if name in tool_names else f"{llm.LLM_API_ASSIST}__{name}"
    if tool not in tool_names or not is_resolved_intent(hass, name):
        return None
    return MatchedSentence(
        command=llm.ToolInput(
            tool_name=tool,
            tool_args={entity.name: entity.value for entity in result.entities_list},
            external=True,
        )
    )


async def async_answer_question(
    hass: HomeAssistant, user_input: conversation.ConversationInput, intent_name: str
) -> QuestionAnswer | None:
    """Return Home Assistant's answer to a question it recognises, or None.

    None when it cannot answer after all (no such device, two weather services):
    then the model answers, and nothing of the attempt is in the conversation.
    """
    default_agent = get_agent_manager(hass).default_agent
    if default_agent is None:
        return None
    # Home Assistant writes its intent call and result into the chat log it is given
    # (and only the call when it fails): a scratch one, copied when it answered.
    scratch = conversation.ChatLog(hass, user_input.conversation_id or ulid_now())
    response = await default_agent.async_handle_intents(
        user_input,
        scratch,
        intent_filter=lambda result: result.intent.name not in QUESTION_INTENTS,
    )
    if response is None or response.response_type is intent.IntentResponseType.ERROR:
        return None
    speech: str = response.speech.get("plain", {}).get("speech", "")
    if not speech:
        return None
    contents = [
        content
        for content in scratch.content
        if isinstance(
            content, (conversation.AssistantContent, conversation.ToolResultContent)
        )
    ]
    return QuestionAnswer(intent_name, speech, contents)


def confirmed_call(chat_log: conversation.ChatLog) -> llm.ToolInput | None:
    """Return the call the previous turn asked to confirm, confirmed; or None.

    Only when exactly one call of the turn right before the user's last words asked
    for confirmation. The executor still checks that this very action was asked
    about in that turn and that the user said yes.
    """
    users = [
        index
        for index, content in enumerate(chat_log.content)
        if isinstance(content, conversation.UserContent)
    ]
    if len(users) < 2:
        return None
    previous_turn = chat_log.content[users[-2] + 1 : users[-1]]
    calls = {
        call.id: call
        for content in previous_turn
        if isinstance(content, conversation.AssistantContent)
        for call in content.tool_calls or ()
    }
    asking = [
        calls[content.tool_call_id]
        for content in previous_turn
        if isinstance(content, conversation.ToolResultContent)
        and content.tool_call_id in calls
        and _asked_to_confirm(content.tool_result)
    ]
    if len(asking) != 1:
        return None
    call = asking[0]
    return llm.ToolInput(
        tool_name=call.tool_name,
        tool_args={**call.tool_args, CONFIRM_ARGUMENT: True},
        external=True,
    )


def _asked_to_confirm(result: object) -> bool:
    results = result.get("results") if isinstance(result, dict) else None
    return isinstance(results, list) and any(
        isinstance(outcome, dict)
        and outcome.get("status") == ActionStatus.NEEDS_CONFIRMATION.value
        for outcome in results
    )
