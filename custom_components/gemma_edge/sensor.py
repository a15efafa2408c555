"""Model status sensor: unloaded/loading/ready/busy/error, with the last generation's figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import EntityCategory
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from . import GemmaConfigEntry
from .actions.executor import ActionOutcome
from .activity import event_data, keeps_words, outcome_sentence, signal_action
from .engine.engine import EngineStatus
from .entity import engine_device_info


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    async_add_entities(
        [ModelStatusSensor(entry), ActionsTodaySensor(entry), LastActionSensor(entry)]
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
        self._attr_device_info = engine_device_info(entry)

    async def async_added_to_hass(self) -> None:
        self.async_on_remove(self._engine.add_listener(self.async_write_ha_state))

    @property
    def native_value(self) -> str:
        return self._engine.status.value

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        stats = self._engine.last_stats
        attributes: dict[str, Any] = {"context_size": self._engine.n_ctx}
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


class _ActionSensor(SensorEntity):
    """Base of the sensors fed by action outcomes."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, entry: GemmaConfigEntry, key: str) -> None:
        self._entry = entry
        self._attr_translation_key = key
        self._attr_unique_id = f"{entry.entry_id}_{key}"
        self._attr_device_info = engine_device_info(entry)

    async def async_added_to_hass(self) -> None:
        executor = self._entry.runtime_data.executor
        if executor.error is None:
            midnight = dt_util.start_of_local_day().timestamp()
            for outcome in reversed(await executor.async_recent(10_000, midnight)):
                self._add(outcome)

        @callback
        def on_action(outcome: ActionOutcome) -> None:
            self._add(outcome)
            self.async_write_ha_state()

        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_action(self._entry.entry_id), on_action
            )
        )

    def _add(self, outcome: ActionOutcome) -> None:
        raise NotImplementedError


class ActionsTodaySensor(_ActionSensor):
    """How many actions the agent handled today, by outcome."""

    _attr_native_unit_of_measurement = "actions"

    def __init__(self, entry: GemmaConfigEntry) -> None:
        super().__init__(entry, "actions_today")
        self._day = dt_util.start_of_local_day()
        self._counts: Counter[str] = Counter()

    def _add(self, outcome: ActionOutcome) -> None:
        today = dt_util.start_of_local_day()
        if today != self._day:
            self._day, self._counts = today, Counter()
        if outcome.created_at >= today.timestamp():
            self._counts[outcome.status.value] += 1

    @property
    def native_value(self) -> int:
        if dt_util.start_of_local_day() != self._day:
            return 0
        return sum(self._counts.values())

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        return dict(self._counts)


class LastActionSensor(_ActionSensor):
    """The last action as a sentence, with its details."""

    def __init__(self, entry: GemmaConfigEntry) -> None:
        super().__init__(entry, "last_action")
        self._last: ActionOutcome | None = None

    def _add(self, outcome: ActionOutcome) -> None:
        self._last = outcome

    @property
    def native_value(self) -> str | None:
        return outcome_sentence(self.hass, self._last)[:255] if self._last else None

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        if self._last is None:
            return {}
        return {
            **event_data(self._last, with_words=keeps_words(self._entry)),
            "time": dt_util.utc_from_timestamp(self._last.created_at).isoformat(),
        }
