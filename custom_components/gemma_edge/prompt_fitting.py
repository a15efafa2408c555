"""The system prompt of an agent fitted to the model's context, with a Repairs issue.

The decision is plain Python (``engine.prompt_budget``); this module remembers it per
prompt and tells the user, through a Repairs issue with the figures, when the device
overview had to be shortened.
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from . import GemmaConfigEntry
from .const import DOMAIN, LOGGER
from .engine.chat_format import Message
from .engine.grammar import ToolSpec
from .engine.prompt_budget import (
    fit_system_prompt,
    with_area_line,
    without_device_lines,
)
from .repairs import ISSUE_PROMPT_TOO_LARGE, raise_issue

# Context kept free for the conversation itself (history, the user's words, tool
# results).
CONVERSATION_ROOM_TOKENS = 512


class PromptFitter:
    """Fits one subentry's system prompt to the context, once per distinct prompt."""

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        """Fit the prompts of ``subentry`` on ``entry``'s model."""
        self._entry = entry
        self._subentry = subentry
        self._fitted: dict[str, str] = {}

    async def async_fit(
        self,
        hass: HomeAssistant,
        messages: list[Message],
        tools: list[ToolSpec],
        max_tokens: int,
    ) -> list[Message]:
        """Return the messages with the system prompt fitted to the context.

        The lines that depend on the asking device leave the system prompt (one cached
        prefix for every satellite); the area line goes in front of every user message.
        """
        if not messages or messages[0]["role"] != "system":
            return messages
        text, area_line = without_device_lines(str(messages[0]["content"]))
        if (fitted := self._fitted.get(text)) is None:
            fitted = await self._async_fit_system(hass, text, tools, max_tokens)
            self._fitted = {text: fitted}  # only the current prompt is worth keeping
        return with_area_line(
            [{**messages[0], "content": fitted}, *messages[1:]], area_line
        )

    async def _async_fit_system(
        self, hass: HomeAssistant, text: str, tools: list[ToolSpec], max_tokens: int
    ) -> str:
        """Fit the system prompt; a Repairs issue gives the figures when it changed."""
        engine = self._entry.runtime_data.engine
        budget = engine.n_ctx - max_tokens - CONVERSATION_ROOM_TOKENS
        if budget <= 0:  # the answer alone does not fit: a context overflow per turn
            return text

        async def count(prompt: str) -> int:
            return await engine.async_count_tokens(
                [{"role": "system", "content": prompt}], tools
            )

        fitted = await fit_system_prompt(text, budget, count)
        issue_key = f"{self._entry.entry_id}_{self._subentry.subentry_id}"
        if fitted.mode is None:
            ir.async_delete_issue(hass, DOMAIN, f"{ISSUE_PROMPT_TOO_LARGE}_{issue_key}")
            return fitted.text
        LOGGER.warning(
            "%s: the prompt needs %d tokens (%d with a compact device list), %d fit; "
            "using: %s",
            self._subentry.title,
            fitted.needed,
            fitted.compact,
            budget,
            fitted.mode,
        )
        raise_issue(
            hass,
            ISSUE_PROMPT_TOO_LARGE,
            issue_key,
            ir.IssueSeverity.WARNING,
            agent=self._subentry.title,
            needed=str(fitted.needed),
            compact=str(fitted.compact),
            budget=str(budget),
            context=str(engine.n_ctx),
            entities=str(fitted.entities),
            mode=fitted.mode,
        )
        return fitted.text
