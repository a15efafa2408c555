"""AI Task entity: ``ai_task.generate_data`` on the local model, with image attachments (camera
snapshots, images) and structured output enforced by a grammar built from the requested structure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import voluptuous as vol
from voluptuous_openapi import convert

from homeassistant.components import ai_task, conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import GemmaConfigEntry
from .const import CONF_MAX_TOKENS, CONF_TEMPERATURE, DEFAULT_AI_TASK_MAX_TOKENS, DEFAULT_TEMPERATURE, DOMAIN, LOGGER
from .conversation import chat_log_messages, subentry_device
from .engine.engine import PRIORITY_AUTOMATION, StepOptions
from .engine.images import PreparedImage
from .engine.llama_model import EngineError

CAMERA_MEDIA_PREFIX = "media-source://camera/"


async def async_setup_entry(
    hass: HomeAssistant, entry: GemmaConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """One AI Task entity per ai_task_data subentry."""
    for subentry in entry.subentries.values():
        if subentry.subentry_type == "ai_task_data":
            async_add_entities([GemmaAITaskEntity(entry, subentry)], config_subentry_id=subentry.subentry_id)


def _failed(key: str, **placeholders: str) -> HomeAssistantError:
    return HomeAssistantError(translation_domain=DOMAIN, translation_key=key, translation_placeholders=placeholders)


def structure_schema(structure: vol.Schema) -> dict[str, Any]:
    """The JSON schema of an AI Task structure (selectors included)."""
    return convert(structure, custom_serializer=llm.selector_serializer)


def structure_hint(schema: dict[str, Any]) -> str:
    """A short description of the wanted fields for the prompt (the grammar enforces them)."""
    fields = []
    for key, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type", "value")
        described = f"{key} ({kind}{': ' + spec['description'] if spec.get('description') else ''})"
        fields.append(described)
    return "Answer with a JSON object with these fields: " + "; ".join(fields) + "." if fields else "Answer in JSON."


class GemmaAITaskEntity(ai_task.AITaskEntity):
    """Generates text or structured data from instructions and images."""

    _attr_has_entity_name = True
    _attr_name = None
    _attr_supported_features = ai_task.AITaskEntityFeature.GENERATE_DATA | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = subentry_device(entry, subentry)

    async def _async_generate_data(self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog) -> ai_task.GenDataTaskResult:
        runtime = self.entry.runtime_data
        images = await self._async_images(task.attachments or [])
        schema = structure_schema(task.structure) if task.structure else None
        messages = chat_log_messages(chat_log, 0)
        user = messages[-1]
        if schema is not None:
            user["content"] = f"{user['content']}\n\n{structure_hint(schema)}"
        if images:
            user["images"] = [image.jpeg for image in images]
        options = StepOptions(
            max_tokens=int(self.subentry.data.get(CONF_MAX_TOKENS, DEFAULT_AI_TASK_MAX_TOKENS)),
            temperature=float(self.subentry.data.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
            json_schema=schema,
            priority=PRIORITY_AUTOMATION,
        )
        try:
            text, _calls, stats = await runtime.engine.async_complete(messages, (), options)
        except EngineError as err:
            LOGGER.warning("AI Task %s failed: %s", task.name, err)
            raise _failed("generation_failed", error=str(err)) from err
        chat_log.async_add_assistant_content_without_tools(
            conversation.AssistantContent(agent_id=self.entity_id, content=text)
        )
        if task.structure is None:
            return ai_task.GenDataTaskResult(conversation_id=chat_log.conversation_id, data=text.strip())
        if stats.stop_reason == "length":
            raise _failed(
                "generation_failed",
                error=f"the answer was cut off at {options.max_tokens} tokens; raise the AI Task's maximum tokens",
            )
        try:
            data = task.structure(json.loads(text))
        except (ValueError, vol.Invalid) as err:  # the grammar makes this unreachable unless cut off
            # the caller gets the error; the answer itself may be private: debug log only
            LOGGER.debug("Structured answer does not validate: %s: %s", err, text)
            raise _failed("generation_failed", error=f"the answer does not match the structure ({err})") from err
        return ai_task.GenDataTaskResult(conversation_id=chat_log.conversation_id, data=data)

    async def _async_images(self, attachments: list[conversation.Attachment]) -> list[PreparedImage]:
        """Attachments as model-ready images; camera snapshots count against the camera's interval."""
        if not attachments:
            return []
        runtime = self.entry.runtime_data
        if not runtime.engine.has_vision:
            raise _failed("vision_unavailable", error="no vision projector (mmproj) is configured")
        images = []
        for attachment in attachments:
            source = attachment.media_content_id
            if not (attachment.mime_type or "").startswith("image/"):
                raise _failed("attachment_unsupported", source=source, mime_type=attachment.mime_type or "unknown")
            if source.startswith(CAMERA_MEDIA_PREFIX):
                runtime.vision.claim_camera(source.removeprefix(CAMERA_MEDIA_PREFIX))
            images.append(await runtime.vision.async_prepare(Path(attachment.path), source))
        return images
