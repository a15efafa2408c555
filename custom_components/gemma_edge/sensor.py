"""Model status sensor: unloaded/loading/ready/busy/error, with the last generation's figures."""

from __future__ import annotations

from typing import Any

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity import EntityCategory
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import GemmaConfigEntry
from .const import DOMAIN
from .engine.engine import EngineStatus


async def async_setup_entry(
    hass: HomeAssistant, entry: GemmaConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    async_add_entities([ModelStatusSensor(entry)])


def engine_device(entry: GemmaConfigEntry) -> dr.DeviceInfo:
    """The device of an engine entry (the loaded model)."""
    return dr.DeviceInfo(
        identifiers={(DOMAIN, entry.entry_id)},
        name=entry.title,
        manufacturer="llama.cpp",
        model=entry.runtime_data.engine.model.architecture if entry.runtime_data.engine.model else None,
        entry_type=dr.DeviceEntryType.SERVICE,
    )


class ModelStatusSensor(SensorEntity):
    """What the model is doing, and how the last generation step went."""

    _attr_has_entity_name = True
    _attr_translation_key = "model_status"
    _attr_device_class = SensorDeviceClass.ENUM
    _attr_options = [status.value for status in EngineStatus]
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_should_poll = False

    def __init__(self, entry: GemmaConfigEntry) -> None:
        self._engine = entry.runtime_data.engine
        self._attr_unique_id = f"{entry.entry_id}_model_status"
        self._attr_device_info = engine_device(entry)

    async def async_added_to_hass(self) -> None:
        self.async_on_remove(self._engine.add_listener(self.async_write_ha_state))

    @property
    def native_value(self) -> str:
        return self._engine.status.value

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        stats = self._engine.last_stats
        attributes: dict[str, Any] = {"context_size": self._engine.settings.n_ctx}
        if stats is not None:
            attributes.update(
                prompt_tokens=stats.prompt_tokens,
                reused_tokens=stats.reused_tokens,
                evaluated_tokens=stats.evaluated_tokens,
                completion_tokens=stats.completion_tokens,
                time_to_first_token_s=round(stats.time_to_first_token_s, 3),
                decode_tokens_per_s=round(stats.decode_tokens_per_s, 1),
            )
        if self._engine.last_error:
            attributes["last_error"] = self._engine.last_error
        return attributes
