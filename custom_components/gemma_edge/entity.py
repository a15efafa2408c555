"""Every entity's device, and the base of the entities the entry's model answers for.

``GemmaLLMEntity`` holds the turn loop shared by the conversation agent and the AI Task
entity: the prompt fitted to the context, generation steps streamed into the chat log,
tool calls run through the idempotent executor (``ToolRunner``), the turn's images.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
import time
from typing import Any

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import Context, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, llm
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import GemmaConfigEntry
from .action_events import TurnReport, signal_turn
from .actions.describe import spoken_unusable
from .actions.intents import says_all
from .actions.outcomes import ActionOutcome
from .actions.policy import SensitivePolicy
from .cloud_remote import RemoteActions
from .const import (
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_SENSITIVE_ACTIONS,
    CONF_STT_MODEL,
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
    engine_unique_id,
)
from .engine.answer_guard import AnswerGuard
from .engine.chat_format import Message, plain_json
from .engine.grammar import ToolSpec
from .engine.images import PreparedImage
from .engine.llama_model import ContextOverflowError, EngineError, GenerationStats
from .engine.local_engine import (
    PRIORITY_AUTOMATION,
    EngineBusyError,
    LocalEngine,
    StepFinished,
    StepOptions,
    TextDelta,
    ToolCallsReady,
)
from .engine.step_plan import step_tool_choice, with_images, with_structure_hint
from .engine.tool_calls import ToolCall, ToolCallSyntaxError
from .engine.worker import PRIORITY_USER
from .instant_commands import QuestionAnswer
from .prompt_fitting import PromptFitter
from .tool_runner import ToolRunner
from .tools import tool_specs

# A step that must call tools gets at least this many tokens: the answer limit is for
# speech, and a call cut off by it is lost.
TOOL_STEP_MIN_TOKENS = 192


def engine_device_info(entry: GemmaConfigEntry) -> dr.DeviceInfo:
    """Return the device of an engine entry (the loaded model): sensors, calendar."""
    model = entry.runtime_data.engine.model
    return dr.DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        name=entry.title,
        manufacturer="llama.cpp",
        model=model.architecture if model else None,
        entry_type=dr.DeviceEntryType.SERVICE,
    )


def model_service_device_info(
    entry: GemmaConfigEntry, subentry: ConfigSubentry
) -> dr.DeviceInfo:
    """Return the device of an agent or AI Task subentry: a service of the model."""
    return dr.DeviceInfo(
        identifiers={(DOMAIN, subentry.subentry_id)},
        name=subentry.title,
        manufacturer="Google (run locally by llama.cpp)",
        model=entry.title,
        entry_type=dr.DeviceEntryType.SERVICE,
    )


def speech_device_info(subentry: ConfigSubentry) -> dr.DeviceInfo:
    """Return the device of a speech-to-text subentry: the Whisper model it runs."""
    return dr.DeviceInfo(
        identifiers={(DOMAIN, subentry.subentry_id)},
        name=subentry.title,
        manufacturer="faster-whisper",
        model=str(subentry.data[CONF_STT_MODEL]).rstrip("/").rsplit("/", 1)[-1],
        entry_type=dr.DeviceEntryType.SERVICE,
    )


class GemmaEngineEntity(Entity):
    """An entity of the engine entry itself: its sensors and its calendar."""

    _attr_has_entity_name = True

    def __init__(self, entry: GemmaConfigEntry, key: str) -> None:
        """Set up the entity ``key`` (its translation key) on the engine's device."""
        self._entry = entry
        self._attr_translation_key = key
        self._attr_unique_id = engine_unique_id(entry.entry_id, key)
        self._attr_device_info = engine_device_info(entry)


def add_subentry_entities(
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    subentry_type: str,
    entity_class: Callable[[GemmaConfigEntry, ConfigSubentry], Entity],
) -> None:
    """Add one entity of ``entity_class`` per subentry of ``subentry_type``."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == subentry_type:
            async_add_entities(
                [entity_class(entry, subentry)],
                config_subentry_id=subentry.subentry_id,
            )


def chat_log_messages(
    chat_log: conversation.ChatLog, max_history: int
) -> list[Message]:
    """Return the chat log as engine messages: the system prompt and the last turns."""
    messages: list[Message] = []
    for content in chat_log.content:
        if isinstance(content, conversation.SystemContent):
            messages.append({"role": "system", "content": content.content})
        elif isinstance(content, conversation.UserContent):
            messages.append({"role": "user", "content": content.content})
        elif isinstance(content, conversation.AssistantContent):
            calls = [
                ToolCall(call.tool_name, dict(call.tool_args))
                for call in content.tool_calls or ()
            ]
            messages.append(
                {
                    "role": "assistant",
                    "content": content.content or "",
                    "tool_calls": calls,
                }
            )
        elif isinstance(content, conversation.ToolResultContent):
            messages.append(
                {
                    "role": "tool",
                    "tool_name": content.tool_name,
                    "result": plain_json(content.tool_result),
                    "tool_call_id": content.tool_call_id,
                }
            )
    user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if max_history > 0 and len(user_turns) > max_history + 1:
        cut = user_turns[-(max_history + 1)]
        head = messages[:1] if messages and messages[0]["role"] == "system" else []
        messages = head + messages[cut:]
    return messages


def turn_error(err: EngineError | ToolCallSyntaxError) -> HomeAssistantError:
    """Return a failed turn as Home Assistant's error, which Assist speaks."""
    if isinstance(err, ContextOverflowError):
        key, placeholders = "context_overflow", {"error": str(err)}
    elif isinstance(err, EngineBusyError):
        key, placeholders = "engine_busy", {}
    elif isinstance(err, ToolCallSyntaxError):
        key, placeholders = "unusable_answer", {}
    else:
        key, placeholders = "generation_failed", {"error": str(err)}
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders=placeholders,
    )


@dataclass(frozen=True, kw_only=True)
class Turn:
    """What one turn is asked with, beyond the chat log."""

    text: str
    language: str
    source: str = "conversation"  # conversation, service (gemma_edge.ask) or ai_task
    context: Context = field(default_factory=Context)
    device_id: str | None = None
    images: Sequence[PreparedImage] = ()
    # The answer must be one JSON value of this schema (structured output: no tools).
    structure: dict[str, Any] | None = None
    # A spoken answer passes the answer guard; data (AI Task) passes as generated.
    spoken: bool = True
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class TurnResult:
    """What a turn did: the outcomes of its actions and its last step's figures."""

    outcomes: list[ActionOutcome]
    stats: GenerationStats | None


class GemmaLLMEntity(Entity):
    """An entity of a subentry answered by the entry's model."""

    _attr_has_entity_name = True
    _attr_name = None
    _default_max_tokens = DEFAULT_MAX_TOKENS

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        """Set up the entity of ``subentry`` on ``entry``'s model."""
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = model_service_device_info(entry, subentry)
        self._prompt_fitter = PromptFitter(entry, subentry)

    @property
    def _engine(self) -> LocalEngine:
        return self.entry.runtime_data.engine

    @property
    def available(self) -> bool:
        """Unavailable while the entry's llama.cpp server does not answer."""
        return self._engine.available

    async def async_added_to_hass(self) -> None:
        """Follow the engine's availability."""
        await super().async_added_to_hass()
        was_available = self.available

        @callback
        def on_engine_change() -> None:
            nonlocal was_available
            if self.available != was_available:
                was_available = self.available
                self.async_write_ha_state()

        self.async_on_remove(self._engine.add_listener(on_engine_change))

    def _tool_specs(
        self, chat_log: conversation.ChatLog, targeted: bool = True
    ) -> list[ToolSpec]:
        if not chat_log.llm_api:
            return []
        specs = tool_specs(
            self.hass,
            chat_log.llm_api,
            vision=self._engine.has_vision,
            targeted=targeted,
        )
        if (remote := self._remote_actions) is not None:
            specs.extend(remote.tool_specs(taken={spec.name for spec in specs}))
        return specs

    @property
    def _remote_actions(self) -> RemoteActions | None:
        sync = self.entry.runtime_data.cloud_sync
        if sync is None or not sync.remote.specs or sync.status.state == "disabled":
            return None  # not while the receiver is gone (410) or the ledger failed
        return sync.remote

    async def _async_handle_chat_log(
        self, chat_log: conversation.ChatLog, turn: Turn
    ) -> TurnResult:
        """Answer the chat log's last user message: generate, act, feed results back."""
        _trace_path("model")
        runner = self._tool_runner(chat_log, turn, "model")
        tools: list[ToolSpec] = []
        if runner is not None:
            # Calls may name only a kind of device when the user said "all" or speaks
            # in an area.
            targeted = not (says_all(turn.text) or runner.targets.area_id)
            tools = self._tool_specs(chat_log, targeted)
        try:
            stats = await self._async_steps(chat_log, turn, runner, tools)
        except (EngineError, ToolCallSyntaxError) as err:
            LOGGER.debug("%s: the turn failed: %s", self.entity_id, err)
            raise turn_error(err) from err
        finally:
            if runner is not None:
                runner.finish()
            self._report_turn("model", turn, runner, chat_log)
        return TurnResult(runner.outcomes if runner else [], stats)

    async def _async_handle_command(
        self, chat_log: conversation.ChatLog, turn: Turn, tool_input: llm.ToolInput
    ) -> TurnResult | None:
        """Run a command Home Assistant's sentences recognised, without the model.

        The call and its result enter the chat log as if the model had made it, so a
        later turn sees what was done; the answer is what the turn did. None when the
        command reached no device ("pause the music in the living room" read as an
        area without players): then the model reads the words.
        """
        runner = self._tool_runner(chat_log, turn, "matcher")
        if runner is None:
            return None
        result = await runner.async_run(tool_input)
        if not runner.outcomes:
            LOGGER.debug(
                "%s: matched %s %s reached no device (%s); the model answers",
                self.entity_id,
                tool_input.tool_name,
                tool_input.tool_args,
                result,
            )
            return None
        _trace_path("matcher", intent=tool_input.tool_name, slots=tool_input.tool_args)

        async def deltas() -> AsyncGenerator[
            conversation.AssistantContentDeltaDict
            | conversation.ToolResultContentDeltaDict
        ]:
            yield {"role": "assistant", "tool_calls": [tool_input]}
            yield {
                "role": "tool_result",
                "tool_call_id": tool_input.id,
                "tool_name": tool_input.tool_name,
                "tool_result": result,
            }

        try:
            async for _content in chat_log.async_add_delta_content_stream(
                self.entity_id, deltas()
            ):
                pass
            await self._async_say(chat_log, _final_words(runner, turn.language))
        finally:
            runner.finish()
            self._report_turn("matcher", turn, runner, chat_log)
        return TurnResult(runner.outcomes, None)

    async def _async_handle_answer(
        self, chat_log: conversation.ChatLog, turn: Turn, answer: QuestionAnswer
    ) -> TurnResult:
        """Say Home Assistant's answer to a question its sentences recognised.

        The question is a turn like any other: a "yes" after it confirms nothing asked
        before it, and the same command after it is a new request, not a retry.
        """
        turns = self.entry.runtime_data.executor.turns
        turns.scope(turn.source, chat_log.conversation_id, turn.text)
        _trace_path("matcher", intent=answer.intent)
        for content in answer.contents:
            chat_log.async_add_assistant_content_without_tools(content)
        await self._async_say(chat_log, answer.speech)
        turns.finish(turn.source, chat_log.conversation_id)
        self._report_turn("matcher", turn, None, chat_log)
        return TurnResult([], None)

    def _report_turn(
        self,
        path: str,
        turn: Turn,
        runner: ToolRunner | None,
        chat_log: conversation.ChatLog,
    ) -> None:
        """Tell the sensors and the cloud how the turn was understood and went."""
        last = chat_log.content[-1] if chat_log.content else None
        outcomes = runner.outcomes if runner else []
        report = TurnReport(
            agent=self.entity_id,
            path=path,
            seconds=round(time.monotonic() - turn.started, 3),
            actions=len(outcomes),
            conversation_id=chat_log.conversation_id,
            source=turn.source,
            language=turn.language,
            action_ids=tuple(o.action_id for o in outcomes if o.action_id),
            words=turn.text,
            answer=(
                last.content or ""
                if isinstance(last, conversation.AssistantContent)
                else ""
            ),
            images=len(turn.images) + (len(runner.snapshots) if runner else 0),
        )
        async_dispatcher_send(self.hass, signal_turn(self.entry.entry_id), report)

    def _tool_runner(
        self, chat_log: conversation.ChatLog, turn: Turn, path: str
    ) -> ToolRunner | None:
        if not chat_log.llm_api or turn.structure is not None:
            return None
        options = self.subentry.data
        runtime = self.entry.runtime_data
        policy = options.get(CONF_SENSITIVE_ACTIONS, DEFAULT_SENSITIVE_ACTIONS)
        return ToolRunner(
            self.hass,
            runtime.executor,
            chat_log.llm_api,
            conversation_id=chat_log.conversation_id,
            turn_text=turn.text,
            parent_context_id=turn.context.id,
            user_id=turn.context.user_id,
            sensitive_policy=SensitivePolicy(policy),
            source=turn.source,
            vision=runtime.vision if self._engine.has_vision else None,
            device_id=turn.device_id,
            # a very small model dedicated to home control names only what the user
            # named
            # HA's sentences matched names the user said; a small model's may be made up
            strict_names=self._act_first and path == "model",
            path=path,
            remote=self._remote_actions,
        )

    @property
    def _act_first(self) -> bool:
        choice = self.subentry.data.get(CONF_TOOL_CHOICE, DEFAULT_TOOL_CHOICE)
        return bool(choice == "required")

    def _step_options(self, turn: Turn, iteration: int, acted: bool) -> StepOptions:
        options = self.subentry.data
        max_tokens = int(options.get(CONF_MAX_TOKENS, self._default_max_tokens))
        tool_choice = step_tool_choice(self._act_first, iteration, acted=acted)
        if tool_choice == "required":
            max_tokens = max(max_tokens, TOOL_STEP_MIN_TOKENS)
        return StepOptions(
            max_tokens=max_tokens,
            temperature=float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
            tool_choice=tool_choice,
            json_schema=turn.structure,
            priority=(
                PRIORITY_USER if turn.source == "conversation" else PRIORITY_AUTOMATION
            ),
        )

    async def _async_fit_prompt(
        self, messages: list[Message], tools: list[ToolSpec]
    ) -> list[Message]:
        """Return the messages with the system prompt fitted to the context."""
        max_tokens = int(
            self.subentry.data.get(CONF_MAX_TOKENS, self._default_max_tokens)
        )
        return await self._prompt_fitter.async_fit(
            self.hass, messages, tools, max_tokens
        )

    async def _async_steps(
        self,
        chat_log: conversation.ChatLog,
        turn: Turn,
        runner: ToolRunner | None,
        tools: list[ToolSpec],
    ) -> GenerationStats | None:
        """At most MAX_TOOL_ITERATIONS steps; the last step's figures."""
        max_history = int(self.subentry.data.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY))
        stats: GenerationStats | None = None
        for iteration in range(MAX_TOOL_ITERATIONS):
            acted = runner is None or bool(runner.outcomes or runner.notes)
            if (
                self._act_first
                and iteration > 0
                and runner
                and runner.answers_from_outcomes
            ):
                # "Always act first": the outcomes are the answer; no second generation.
                await self._async_say(chat_log, runner.spoken(turn.language))
                break
            messages = await self._async_fit_prompt(
                chat_log_messages(chat_log, max_history), tools
            )
            snapshots = runner.snapshots if runner else {}
            messages = with_images(messages, turn.images, snapshots)
            messages = with_structure_hint(messages, turn.structure)
            step = self._step_options(turn, iteration, acted)
            try:
                stats = await self._async_stream(
                    chat_log, turn, messages, tools, step, runner
                )
            except ToolCallSyntaxError as err:
                if runner is None or not (runner.outcomes or runner.notes):
                    raise
                LOGGER.warning(
                    "Unreadable model output after acting (%s); "
                    "answering from the outcomes",
                    err,
                )
                await self._async_say(chat_log, runner.spoken(turn.language))
                break
            if not chat_log.unresponded_tool_results:
                break
            if runner is not None and runner.repeated_call:  # going round in circles
                LOGGER.debug("%s: the model repeated a tool call", self.entity_id)
                await self._async_say(chat_log, _final_words(runner, turn.language))
                break
        else:
            LOGGER.warning(
                "Stopped after %d tool steps without a final answer",
                MAX_TOOL_ITERATIONS,
            )
            await self._async_say(chat_log, _final_words(runner, turn.language))
        return stats

    async def _async_stream(
        self,
        chat_log: conversation.ChatLog,
        turn: Turn,
        messages: list[Message],
        tools: list[ToolSpec],
        step: StepOptions,
        runner: ToolRunner | None,
    ) -> GenerationStats | None:
        """One step streamed into the chat log; its figures."""
        finished: list[GenerationStats] = []
        deltas = self._async_deltas(turn, messages, tools, step, runner, finished)
        async for _content in chat_log.async_add_delta_content_stream(
            self.entity_id, deltas
        ):
            pass
        return finished[-1] if finished else None

    async def _async_say(self, chat_log: conversation.ChatLog, text: str) -> None:
        """Say an answer of our own, streamed like the model's."""

        async def deltas() -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
            yield {"role": "assistant"}
            yield {"content": text}

        async for _content in chat_log.async_add_delta_content_stream(
            self.entity_id, deltas()
        ):
            pass

    async def _async_deltas(
        self,
        turn: Turn,
        messages: list[Message],
        tools: list[ToolSpec],
        step: StepOptions,
        runner: ToolRunner | None,
        finished: list[GenerationStats],
    ) -> AsyncGenerator[
        conversation.AssistantContentDeltaDict | conversation.ToolResultContentDeltaDict
    ]:
        """One step's deltas; tool calls run through the idempotent executor.

        A spoken answer passes the answer guard; an unusable one is replaced by what the
        turn did.
        """
        guard = AnswerGuard(_system_text(messages)) if turn.spoken else None
        calls: list[llm.ToolInput] = []
        yield {"role": "assistant"}
        async for event in self._engine.async_stream_step(messages, tools, step):
            if isinstance(event, TextDelta):
                if text := (guard.feed(event.text) if guard else event.text):
                    yield {"content": text}
            elif isinstance(event, ToolCallsReady):
                calls = [
                    llm.ToolInput(
                        tool_name=c.name, tool_args=c.arguments, external=True
                    )
                    for c in event.calls
                ]
                yield {"tool_calls": calls}
            elif isinstance(event, StepFinished):
                finished.append(event.stats)
                conversation.async_conversation_trace_append(
                    conversation.ConversationTraceEventType.AGENT_DETAIL,
                    {"generation": event.stats.as_dict()},
                )
        if guard is not None:
            if text := guard.finish():
                yield {"content": text}
            if not calls and guard.said_nothing:
                LOGGER.debug("Unusable answer replaced: %r", guard.rejected_text[:200])
                yield {"content": _final_words(runner, turn.language)}
        for call in calls:
            result = await runner.async_run(call) if runner else {"error": "no tools"}
            LOGGER.debug(
                "%s: tool call %s %s -> %.300s",
                self.entity_id,
                call.tool_name,
                call.tool_args,
                result,
            )
            yield {
                "role": "tool_result",
                "tool_call_id": call.id,
                "tool_name": call.tool_name,
                "tool_result": result,
            }


def _trace_path(path: str, **details: Any) -> None:
    """Say in the conversation trace how the turn was understood."""
    conversation.async_conversation_trace_append(
        conversation.ConversationTraceEventType.AGENT_DETAIL, {"path": path, **details}
    )


def _system_text(messages: list[Message]) -> str:
    if messages and messages[0]["role"] == "system":
        return str(messages[0]["content"])
    return ""


def _final_words(runner: ToolRunner | None, language: str) -> str:
    """Return the answer when the model gave none: what the turn did, or "sorry"."""
    if runner is not None and (runner.outcomes or runner.notes):
        return runner.spoken(language)
    return spoken_unusable(language)
