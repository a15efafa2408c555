"""The Assist conversation agent of each conversation subentry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, MATCH_ALL
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers import (
    area_registry as ar,
    chat_session,
    entity_registry as er,
    llm,
)
from homeassistant.helpers.debounce import Debouncer
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.start import async_at_started
from homeassistant.util.ulid import ulid_now

from . import GemmaConfigEntry
from .actions.outcomes import ActionOutcome
from .actions.turns import is_bare_affirmation
from .const import (
    CONF_INSTANT_COMMANDS,
    CONF_PROMPT,
    DEFAULT_INSTANT_COMMANDS,
    DOMAIN,
    LOGGER,
    SUBENTRY_CONVERSATION,
)
from .engine.images import PreparedImage
from .entity import (
    GemmaLLMEntity,
    Turn,
    TurnResult,
    add_subentry_entities,
    chat_log_messages,
)
from .instant_commands import (
    async_answer_question,
    async_match_sentence,
    confirmed_call,
)

# Priming waits this long after the last change of entities, areas or exposure.
PRIME_COOLDOWN_S = 30.0

# The engine's worker queues and bounds the model's work itself.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one conversation entity per conversation subentry."""
    add_subentry_entities(
        entry, async_add_entities, SUBENTRY_CONVERSATION, GemmaConversationEntity
    )


class GemmaConversationEntity(
    conversation.ConversationEntity,
    conversation.AbstractConversationAgent,
    GemmaLLMEntity,
):
    """A conversation agent answered by the local model."""

    _attr_supports_streaming = True

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        """Set up the agent of ``subentry``."""
        super().__init__(entry, subentry)
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = (
                conversation.ConversationEntityFeature.CONTROL
            )

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """The model answers in the user's language."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register as an agent; prime the prompt cache now and after home changes."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)
        self.entry.runtime_data.agents[self.entity_id] = self
        primer = Debouncer(
            self.hass,
            LOGGER,
            cooldown=PRIME_COOLDOWN_S,
            immediate=False,
            function=self._async_prime,
            background=True,
        )
        self.async_on_remove(primer.async_shutdown)

        @callback
        def schedule_priming(_: Any) -> None:
            primer.async_schedule_call()

        self.async_on_remove(async_at_started(self.hass, schedule_priming))
        bus = self.hass.bus
        self.async_on_remove(
            bus.async_listen(er.EVENT_ENTITY_REGISTRY_UPDATED, schedule_priming)
        )
        self.async_on_remove(
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, schedule_priming)
        )

    async def async_will_remove_from_hass(self) -> None:
        """Unregister the agent."""
        conversation.async_unset_agent(self.hass, self.entry)
        self.entry.runtime_data.agents.pop(self.entity_id, None)
        await super().async_will_remove_from_hass()

    async def _async_prime(self) -> None:
        """Evaluate the prompt prefix of a new conversation, in the background."""
        chat_log = conversation.ChatLog(self.hass, ulid_now())
        user_input = self._input("", Context(), chat_log.conversation_id)
        if await self._async_provide(user_input, chat_log) is not None:
            return
        tools = self._tool_specs(chat_log)
        system = chat_log_messages(chat_log, 0)[:1]
        messages = await self._async_fit_prompt(system, tools)
        cached = await self._engine.async_prime(messages, tools)
        LOGGER.debug("Primed %s: %d prompt tokens cached", self.entity_id, cached)

    async def async_ask(
        self,
        text: str,
        images: Sequence[PreparedImage],
        conversation_id: str | None,
        context: Context,
    ) -> tuple[conversation.ConversationResult, list[ActionOutcome]]:
        """One turn of the ask action: the result and the actions taken."""
        user_input = self._input(text, context, conversation_id)
        with (
            chat_session.async_get_chat_session(self.hass, conversation_id) as session,
            conversation.async_get_chat_log(self.hass, session, user_input) as chat_log,
        ):
            if (error := await self._async_provide(user_input, chat_log)) is not None:
                return error, []
            turn = self._turn(user_input, source="service", images=images)
            result = await self._async_answer(user_input, chat_log, turn)
            answer = conversation.async_get_result_from_chat_log(user_input, chat_log)
            return answer, result.outcomes

    async def _async_handle_message(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
    ) -> conversation.ConversationResult:
        """Answer one Assist turn."""
        if (error := await self._async_provide(user_input, chat_log)) is not None:
            return error
        await self._async_answer(user_input, chat_log, self._turn(user_input))
        return conversation.async_get_result_from_chat_log(user_input, chat_log)

    async def _async_answer(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: Turn,
    ) -> TurnResult:
        """Answer with Home Assistant's sentence matcher when it knows the sentence.

        A command acts through the executor; a question about the current state gets
        Home Assistant's own answer; a bare "yes" confirms the one call the last turn
        asked about. Otherwise (or with images, or with the option
        off) the model answers.
        """
        instant = self.subentry.data.get(
            CONF_INSTANT_COMMANDS, DEFAULT_INSTANT_COMMANDS
        )
        if instant and chat_log.llm_api and not turn.images:
            if result := await self._async_answer_instantly(user_input, chat_log, turn):
                return result
        return await self._async_handle_chat_log(chat_log, turn)

    async def _async_answer_instantly(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: Turn,
    ) -> TurnResult | None:
        """Answer without the model, or return None (the model answers)."""
        assert chat_log.llm_api is not None
        if is_bare_affirmation(turn.text) and (confirmed := confirmed_call(chat_log)):
            return await self._async_handle_command(chat_log, turn, confirmed)
        tools = {tool.name for tool in chat_log.llm_api.tools}
        matched = await async_match_sentence(self.hass, user_input, tools)
        if matched is None:
            return None
        if matched.command is not None:
            return await self._async_handle_command(chat_log, turn, matched.command)
        if matched.question is not None and (
            answer := await async_answer_question(
                self.hass, user_input, matched.question
            )
        ):
            return await self._async_handle_answer(chat_log, turn, answer)
        return None

    def _input(
        self, text: str, context: Context, conversation_id: str | None
    ) -> conversation.ConversationInput:
        return conversation.ConversationInput(
            text=text,
            context=context,
            conversation_id=conversation_id,
            device_id=None,
            satellite_id=None,
            language=self.hass.config.language,
            agent_id=self.entity_id,
        )

    def _turn(
        self,
        user_input: conversation.ConversationInput,
        source: str = "conversation",
        images: Sequence[PreparedImage] = (),
    ) -> Turn:
        return Turn(
            text=user_input.text,
            language=user_input.language or self.hass.config.language,
            source=source,
            context=user_input.context,
            device_id=user_input.device_id,
            images=images,
        )

    async def _async_provide(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult | None:
        """Put instructions, API prompt and tools in the chat log (same every turn)."""
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
