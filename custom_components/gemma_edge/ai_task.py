"""AI Task entity: ``ai_task.generate_data`` on the local model.

Image attachments (camera snapshots, images) are shown to the model; a requested
structure is enforced by a grammar built from its JSON schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import voluptuous as vol
from voluptuous_openapi import convert

from homeassistant.components import ai_task, conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import GemmaConfigEntry
from .const import (
    CONF_MAX_TOKENS,
    DEFAULT_AI_TASK_MAX_TOKENS,
    DOMAIN,
    LOGGER,
    SUBENTRY_AI_TASK,
)
from .engine.images import PreparedImage
from .entity import GemmaLLMEntity, Turn, add_subentry_entities

CAMERA_MEDIA_PREFIX = "media-source://camera/"

# The engine's worker queues and bounds the model's work itself.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one AI Task entity per ai_task_data subentry."""
    add_subentry_entities(
        entry, async_add_entities, SUBENTRY_AI_TASK, GemmaAITaskEntity
    )


def _failed(key: str, **placeholders: str) -> HomeAssistantError:
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders=placeholders,
    )


def structure_schema(structure: vol.Schema) -> dict[str, Any]:
    """Return the JSON schema of an AI Task structure (selectors included)."""
    schema: dict[str, Any] = convert(
        structure, custom_serializer=llm.selector_serializer
    )
    return schema


class GemmaAITaskEntity(ai_task.AITaskEntity, GemmaLLMEntity):
    """Generates text or structured data from instructions and images."""

    _attr_supported_features = (
        ai_task.AITaskEntityFeature.GENERATE_DATA
        | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
    )
    _default_max_tokens = DEFAULT_AI_TASK_MAX_TOKENS

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog
    ) -> ai_task.GenDataTaskResult:
        """Generate the task's text, or its structured data."""
        schema = structure_schema(task.structure) if task.structure else None
        # The caller's context (user, parent) reaches the actions of a task with tools.
        api = chat_log.llm_api
        context = api.llm_context.context if api and api.llm_context.context else None
        turn = Turn(
            text=task.instructions,
            language=self.hass.config.language,
            source="ai_task",
            context=context or Context(),
            images=await self._async_images(task.attachments or []),
            structure=schema,
            spoken=False,
        )
        result = await self._async_handle_chat_log(chat_log, turn)
        last = chat_log.content[-1]
        text = (
            last.content or ""
            if isinstance(last, conversation.AssistantContent)
            else ""
        )
        if task.structure is None:
            return ai_task.GenDataTaskResult(
                conversation_id=chat_log.conversation_id, data=text.strip()
            )
        if result.stats is not None and result.stats.stop_reason == "length":
            limit = self.subentry.data.get(CONF_MAX_TOKENS, DEFAULT_AI_TASK_MAX_TOKENS)
            raise _failed(
                "generation_failed",
                error=f"the answer was cut off at {limit} tokens; "
                "raise the AI Task's maximum tokens",
            )
        try:
            data = task.structure(json.loads(text))
        except (
            ValueError,
            vol.Invalid,
        ) as err:  # the grammar prevents it, unless cut off
            # the caller gets the error; the answer itself may be private: debug only
            LOGGER.debug("Structured answer does not validate: %s: %s", err, text)
            raise _failed(
                "generation_failed",
                error=f"the answer does not match the structure ({err})",
            ) from err
        return ai_task.GenDataTaskResult(
            conversation_id=chat_log.conversation_id, data=data
        )

    async def _async_images(
        self, attachments: list[conversation.Attachment]
    ) -> list[PreparedImage]:
        """Attachments as model-ready images; camera snapshots count as analyses."""
        if not attachments:
            return []
        runtime = self.entry.runtime_data
        if not runtime.engine.has_vision:
            raise _failed(
                "vision_unavailable", error="no vision projector (mmproj) is configured"
            )
        images = []
        for attachment in attachments:
            source = attachment.media_content_id
            if not (attachment.mime_type or "").startswith("image/"):
                raise _failed(
                    "attachment_unsupported",
                    source=source,
                    mime_type=attachment.mime_type or "unknown",
                )
            if source.startswith(CAMERA_MEDIA_PREFIX):
                runtime.vision.rate_limit_camera(
                    source.removeprefix(CAMERA_MEDIA_PREFIX)
                )
            images.append(
                await runtime.vision.async_prepare(Path(attachment.path), source)
            )
        return images
