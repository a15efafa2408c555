"""The Assist conversation agent, running the entry's local model through the ChatLog."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Literal

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, MATCH_ALL
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import (
    area_registry as ar,
    chat_session,
    device_registry as dr,
    entity_registry as er,
    intent,
    issue_registry as ir,
    llm,
)
from homeassistant.helpers.debounce import Debouncer
from homeassistant.helpers.start import async_at_started
from homeassistant.util.ulid import ulid_now
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import GemmaConfigEntry
from .const import (
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_SENSITIVE_ACTIONS,
    CONF_TEMPERATURE,
    CONF_TOOL_CHOICE,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SENSITIVE_ACTIONS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOOL_CHOICE,
    DOMAIN,
    LOGGER,
    MAX_TOOL_ITERATIONS,
)
from .engine.answer_guard import AnswerGuard
from .engine.chat_format import Message
from .engine.images import PreparedImage
from .engine.engine import (
    PRIORITY_AUTOMATION,
    EngineBusyError,
    StepFinished,
    StepOptions,
    TextDelta,
    ToolCallsReady,
)
from .engine.worker import PRIORITY_USER
from .engine.grammar import ToolChoice, ToolSpec
from .engine.llama_model import ContextOverflowError, EngineError
from .engine.tool_calls import ToolCall, ToolCallSyntaxError
from .actions.executor import ActionOutcome
from .actions.policy import SensitivePolicy
from .tool_runner import ToolRunner
from . import prompt_budget
from .repairs import ISSUE_PROMPT_TOO_LARGE, raise_issue
from .intent_targets import says_all
from .tools import tool_specs

PRIME_COOLDOWN_S = 30.0
# Context kept free for the conversation itself (history, the user's words, tool results).
CONVERSATION_ROOM_TOKENS = 512
# A step that must call tools gets at least this many tokens: the answer limit is for speech, and
# a call cut off by it is lost.
TOOL_STEP_MIN_TOKENS = 192
# Said when the model's answer is unusable and no action explains the turn.
UNUSABLE_ANSWER = "Sorry, I could not work out an answer to that. Could you say it differently?"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One conversation entity per conversation subentry."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == "conversation":
            async_add_entities([GemmaConversationEntity(entry, subentry)], config_subentry_id=subentry.subentry_id)


def _tool_choice(act_first: bool, iteration: int, runner: ToolRunner | None) -> ToolChoice:
    """In "always act first" mode the first step must call tools; after acting, the answer is in
    words; after only looking something up, the model may act or answer. Otherwise the model chooses."""
    if not act_first:
        return "auto"
    if iteration == 0:
        return "required"
    acted = runner is None or bool(runner.outcomes or runner.notes)
    return "none" if acted else "auto"


def chat_log_messages(chat_log: conversation.ChatLog, max_history: int) -> list[Message]:
    """The chat log as engine messages, keeping the system prompt and the last turns."""
    messages: list[Message] = []
    for content in chat_log.content:
        if isinstance(content, conversation.SystemContent):
            messages.append({"role": "system", "content": content.content})
        elif isinstance(content, conversation.UserContent):
            messages.append({"role": "user", "content": content.content})
        elif isinstance(content, conversation.AssistantContent):
            calls = [ToolCall(c.tool_name, dict(c.tool_args)) for c in content.tool_calls or ()]
            messages.append({"role": "assistant", "content": content.content or "", "tool_calls": calls})
        elif isinstance(content, conversation.ToolResultContent):
            messages.append(
                {"role": "tool", "tool_name": content.tool_name, "result": content.tool_result, "tool_call_id": content.tool_call_id}
            )
    if max_history > 0:
        user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if len(user_turns) > max_history + 1:
            cut = user_turns[-(max_history + 1)]
            head = messages[:1] if messages and messages[0]["role"] == "system" else []
            messages = head + messages[cut:]
    return messages


def subentry_device(entry: GemmaConfigEntry, subentry: ConfigSubentry) -> dr.DeviceInfo:
    """The device of an agent or AI Task subentry: a service run by the entry's model."""
    return dr.DeviceInfo(
        identifiers={(DOMAIN, subentry.subentry_id)},
        name=subentry.title,
        manufacturer="Google (run locally by llama.cpp)",
        model=entry.title,
        entry_type=dr.DeviceEntryType.SERVICE,
    )


def with_images(
    messages: list[Message], user_images: Sequence[PreparedImage], snapshots: dict[str, tuple[str, PreparedImage]]
) -> list[Message]:
    """Images of this turn into the messages: the user's on their last message, each camera
    snapshot as a user message right after the tool result that took it. They are not kept in
    the chat log, so later turns do not evaluate them again."""
    out: list[Message] = []
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for index, message in enumerate(messages):
        if index == last_user and user_images:
            message = {**message, "images": [image.jpeg for image in user_images]}
        out.append(message)
        if message["role"] == "tool" and (shot := snapshots.get(message.get("tool_call_id", ""))):
            name, image = shot
            out.append({"role": "user", "content": f"(The current picture of {name}.)", "images": [image.jpeg]})
    return out


class GemmaConversationEntity(conversation.ConversationEntity, conversation.AbstractConversationAgent):
    """A conversation agent answered by the local model."""

    _attr_has_entity_name = True
    _attr_name = None
    _attr_supports_streaming = True

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = subentry_device(entry, subentry)
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL
        self._fitted: dict[str, str] = {}

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """The model answers in the user's language."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)
        self.entry.runtime_data.agents[self.entity_id] = self
        # Prime the cache with this agent's static prefix once Home Assistant runs, and again
        # (debounced) when entities, areas or their exposure change.
        self._primer = Debouncer(
            self.hass, LOGGER, cooldown=PRIME_COOLDOWN_S, immediate=False,
            function=self._async_prime, background=True,
        )  # fmt: skip
        self.async_on_remove(self._primer.async_shutdown)

        @callback
        def schedule_priming(_: Any) -> None:
            self._primer.async_schedule_call()

        self.async_on_remove(async_at_started(self.hass, schedule_priming))
        for event_type in (er.EVENT_ENTITY_REGISTRY_UPDATED, ar.EVENT_AREA_REGISTRY_UPDATED):
            self.async_on_remove(self.hass.bus.async_listen(event_type, schedule_priming))

    async def _async_prime(self) -> None:
        """Evaluate the prompt prefix a new conversation will start with, in the background."""
        chat_log = conversation.ChatLog(self.hass, ulid_now())
        user_input = conversation.ConversationInput(
            text="", context=Context(), conversation_id=chat_log.conversation_id, device_id=None,
            satellite_id=None, language=self.hass.config.language, agent_id=self.entity_id,
        )  # fmt: skip
        if await self._async_provide(user_input, chat_log) is not None:
            return
        tools = self._tool_specs(chat_log)
        messages = await self._async_fit_prompt(chat_log_messages(chat_log, 0)[:1], tools)
        cached = await self.entry.runtime_data.engine.async_prime(messages, tools)
        LOGGER.debug("Primed %s: %d prompt tokens cached", self.entity_id, cached)

    def _tool_specs(self, chat_log: conversation.ChatLog, targeted: bool = True) -> list[ToolSpec]:
        if not chat_log.llm_api:
            return []
        return tool_specs(self.hass, chat_log.llm_api, vision=self.entry.runtime_data.engine.has_vision, targeted=targeted)

    async def async_will_remove_from_hass(self) -> None:
        conversation.async_unset_agent(self.hass, self.entry)
        self.entry.runtime_data.agents.pop(self.entity_id, None)
        await super().async_will_remove_from_hass()

    async def async_ask(
        self, text: str, images: Sequence[PreparedImage], conversation_id: str | None, context: Context
    ) -> tuple[conversation.ConversationResult, list[ActionOutcome]]:
        """One turn for the ask service: the text with images; the result and the actions taken."""
        user_input = conversation.ConversationInput(
            text=text, context=context, conversation_id=conversation_id, device_id=None, satellite_id=None,
            language=self.hass.config.language, agent_id=self.entity_id,
        )  # fmt: skip
        with (
            chat_session.async_get_chat_session(self.hass, conversation_id) as session,
            conversation.async_get_chat_log(self.hass, session, user_input) as chat_log,
        ):
            if (error := await self._async_provide(user_input, chat_log)) is not None:
                return error, []
            try:
                outcomes = await self._async_run_turn(chat_log, user_input, images, source="service")
            except (EngineError, ToolCallSyntaxError) as err:
                raise HomeAssistantError(
                    translation_domain=DOMAIN, translation_key="generation_failed", translation_placeholders={"error": str(err)}
                ) from err
            return conversation.async_get_result_from_chat_log(user_input, chat_log), outcomes

    async def _async_handle_message(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
    ) -> conversation.ConversationResult:
        if (error := await self._async_provide(user_input, chat_log)) is not None:
            return error
        try:
            await self._async_run_turn(chat_log, user_input)
        except (EngineError, ToolCallSyntaxError) as err:
            return self._error_result(user_input, chat_log, err)
        return conversation.async_get_result_from_chat_log(user_input, chat_log)

    async def _async_fit_prompt(self, messages: list[Message], tools: list[ToolSpec]) -> list[Message]:
        """Make the system prompt fit the context: Assist's device overview as is, compacted, or
        replaced by "use GetLiveContext" (with a Repairs issue giving the numbers). Never silent
        truncation; decided once per distinct system prompt. The lines that depend on the asking
        device leave the system prompt (the same cached prefix for every satellite); the area
        line goes in front of the user's latest words."""
        if not messages or messages[0]["role"] != "system":
            return messages
        text, area_line = prompt_budget.without_device_lines(str(messages[0]["content"]))
        if (fitted := self._fitted.get(text)) is None:
            fitted = await self._async_fit_system(text, tools)
            self._fitted = {text: fitted}  # only the current prompt is worth remembering
        out = [{**messages[0], "content": fitted}, *messages[1:]]
        if area_line:  # on every user turn, so that the next turn renders the earlier ones the same
            out = [{**m, "content": f"({area_line})\n{m['content']}"} if m["role"] == "user" else m for m in out]
        return out

    async def _async_fit_system(self, text: str, tools: list[ToolSpec]) -> str:
        engine = self.entry.runtime_data.engine
        max_tokens = int(self.subentry.data.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS))
        budget = engine.n_ctx - max_tokens - CONVERSATION_ROOM_TOKENS
        if budget <= 0:  # the answer alone does not fit: reported per turn as a context overflow
            return text
        full = await engine.async_count_tokens([{"role": "system", "content": text}], tools)
        issue_key = f"{self.entry.entry_id}_{self.subentry.subentry_id}"
        if full <= budget or not prompt_budget.overview_size(text):
            ir.async_delete_issue(self.hass, DOMAIN, f"{ISSUE_PROMPT_TOO_LARGE}_{issue_key}")
            return text
        fitted, mode = prompt_budget.compact_overview(text), "compact device list"
        compact = await engine.async_count_tokens([{"role": "system", "content": fitted}], tools)
        if compact > budget:
            fitted, mode = prompt_budget.drop_overview(text), "devices looked up with GetLiveContext"
        LOGGER.warning(
            "%s: the prompt needs %d tokens (%d with a compact device list), %d fit; using: %s",
            self.entity_id, full, compact, budget, mode,
        )  # fmt: skip
        raise_issue(
            self.hass, ISSUE_PROMPT_TOO_LARGE, issue_key, ir.IssueSeverity.WARNING,
            agent=self.subentry.title, needed=str(full), compact=str(compact), budget=str(budget),
            context=str(engine.n_ctx),
            entities=str(prompt_budget.overview_size(text)), mode=mode,
        )  # fmt: skip
        return fitted

    async def _async_provide(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult | None:
        """Instructions, API prompt and tools into the chat log (the same bytes for every turn)."""
        options = self.subentry.data
        instructions = options.get(CONF_PROMPT) or llm.DEFAULT_INSTRUCTIONS_PROMPT
        if user_input.language and user_input.language != MATCH_ALL:
            instructions += f"\nAnswer in the user's language ({user_input.language})."
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                options.get(CONF_LLM_HASS_API),
                instructions,
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        return None

    async def _async_run_turn(
        self,
        chat_log: conversation.ChatLog,
        user_input: conversation.ConversationInput,
        images: Sequence[PreparedImage] = (),
        source: str = "conversation",
    ) -> list[ActionOutcome]:
        """One turn with this agent's tools; returns the outcomes of the actions taken."""
        options = self.subentry.data
        runner = None
        if chat_log.llm_api:
            runner = ToolRunner(
                self.hass,
                self.entry.runtime_data.executor,
                chat_log.llm_api,
                conversation_id=chat_log.conversation_id,
                turn_text=user_input.text,
                parent_context_id=user_input.context.id,
                user_id=user_input.context.user_id,
                sensitive_policy=SensitivePolicy(options.get(CONF_SENSITIVE_ACTIONS, DEFAULT_SENSITIVE_ACTIONS)),
                source=source,
                vision=self.entry.runtime_data.vision if self.entry.runtime_data.engine.has_vision else None,
                device_id=user_input.device_id,
                # a very small model dedicated to home control names devices only the user named
                strict_names=options.get(CONF_TOOL_CHOICE, DEFAULT_TOOL_CHOICE) == "required",
            )
        # Calls may name only a kind of device when the user said "all" or speaks in an area.
        targeted = not (says_all(user_input.text) or (runner is not None and runner.targets.area_id))
        tools = self._tool_specs(chat_log, targeted)
        language = user_input.language or self.hass.config.language
        try:
            await self._async_steps(chat_log, images, source, runner, tools, language)
        finally:
            if runner is not None:
                runner.finish()
        return runner.outcomes if runner else []

    async def _async_steps(
        self, chat_log: conversation.ChatLog, images: Sequence[PreparedImage], source: str,
        runner: ToolRunner | None, tools: list[ToolSpec], language: str,
    ) -> None:  # fmt: skip
        """Generate, run tool calls, feed results back, answer: at most MAX_TOOL_ITERATIONS steps."""
        options = self.subentry.data
        max_history = int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY))
        max_tokens = int(options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS))
        act_first = options.get(CONF_TOOL_CHOICE, DEFAULT_TOOL_CHOICE) == "required"
        for iteration in range(MAX_TOOL_ITERATIONS):
            if act_first and iteration > 0 and runner is not None and runner.answers_from_outcomes:
                # "Always act first": the outcomes are the answer; no second generation.
                await self._async_say(chat_log, runner.spoken(language))
                break
            tool_choice = _tool_choice(act_first, iteration, runner)
            step = StepOptions(
                max_tokens=max(max_tokens, TOOL_STEP_MIN_TOKENS) if tool_choice == "required" else max_tokens,
                temperature=float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
                tool_choice=tool_choice,
                priority=PRIORITY_USER if source == "conversation" else PRIORITY_AUTOMATION,
            )
            messages = await self._async_fit_prompt(chat_log_messages(chat_log, max_history), tools)
            messages = with_images(messages, images, runner.snapshots if runner else {})
            try:
                async for _content in chat_log.async_add_delta_content_stream(
                    self.entity_id, self._async_deltas(messages, tools, step, runner, language)
                ):
                    pass
            except ToolCallSyntaxError as err:
                if runner is None or not (runner.outcomes or runner.notes):
                    raise
                LOGGER.warning("Unreadable model output after acting (%s); answering from the outcomes", err)
                await self._async_say(chat_log, runner.spoken(language))
                break
            if not chat_log.unresponded_tool_results:
                break
            if runner is not None and runner.repeated_call:  # going round in circles: stop here
                LOGGER.debug("%s: the model repeated a tool call; answering from the outcomes", self.entity_id)
                await self._async_say(chat_log, self._final_words(runner, language))
                break
        else:
            LOGGER.warning("Stopped after %d tool steps without a final answer", MAX_TOOL_ITERATIONS)
            await self._async_say(chat_log, self._final_words(runner, language))

    @staticmethod
    def _final_words(runner: ToolRunner | None, language: str) -> str:
        """The answer when the model gave none: what the turn did, or that it found no answer."""
        return runner.spoken(language) if runner is not None and (runner.outcomes or runner.notes) else UNUSABLE_ANSWER

    async def _async_say(self, chat_log: conversation.ChatLog, text: str) -> None:
        """An answer of our own, streamed like the model's."""

        async def deltas() -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
            yield {"role": "assistant"}
            yield {"content": text}

        async for _content in chat_log.async_add_delta_content_stream(self.entity_id, deltas()):
            pass

    async def _async_deltas(
        self, messages: list[Message], tools: list[ToolSpec], step: StepOptions, runner: ToolRunner | None,
        language: str,
    ) -> AsyncGenerator[conversation.AssistantContentDeltaDict | conversation.ToolResultContentDeltaDict]:  # fmt: skip
        """Stream one step into the chat log; tool calls run through our idempotent executor. What
        the model says passes the answer guard; an unusable answer is replaced by the outcomes."""
        engine = self.entry.runtime_data.engine
        system = str(messages[0]["content"]) if messages and messages[0]["role"] == "system" else ""
        guard = AnswerGuard(system)
        calls: list[llm.ToolInput] = []
        yield {"role": "assistant"}
        async for event in engine.async_stream_step(messages, tools, step):
            if isinstance(event, TextDelta):
                if text := guard.feed(event.text):
                    yield {"content": text}
            elif isinstance(event, ToolCallsReady):
                calls = [llm.ToolInput(tool_name=c.name, tool_args=c.arguments, external=True) for c in event.calls]
                yield {"tool_calls": calls}
            elif isinstance(event, StepFinished):
                conversation.async_conversation_trace_append(
                    conversation.ConversationTraceEventType.AGENT_DETAIL, {"generation": event.stats.as_dict()}
                )
        if text := guard.finish():
            yield {"content": text}
        if not calls and guard.said_nothing:
            LOGGER.debug("Unusable answer replaced (kept back: %r)", guard.rejected_text[:200])
            yield {"content": self._final_words(runner, language)}
        for call in calls:
            result = await runner.async_run(call) if runner else {"error": "no tools are available"}
            LOGGER.debug("%s: tool call %s %s -> %s", self.entity_id, call.tool_name, call.tool_args, str(result)[:300])
            yield {"role": "tool_result", "tool_call_id": call.id, "tool_name": call.tool_name, "tool_result": result}

    def _error_result(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog, err: Exception
    ) -> conversation.ConversationResult:
        """A spoken/written error answer instead of a traceback."""
        if isinstance(err, ContextOverflowError):
            message = f"Sorry, this conversation is too long for the model's memory ({err}). Please start a new one."
        elif isinstance(err, EngineBusyError):
            message = "Sorry, I am busy with other requests. Please try again in a moment."
        elif isinstance(err, ToolCallSyntaxError):
            message = UNUSABLE_ANSWER
        else:
            message = f"Sorry, the local model is not available: {err}"
        LOGGER.warning("Conversation turn failed: %s", err)
        response = intent.IntentResponse(language=user_input.language)
        response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, message)
        return conversation.ConversationResult(response=response, conversation_id=chat_log.conversation_id)


