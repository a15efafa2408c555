"""Sensors of an engine: the model's status and figures, what the agent did, sync."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
import sqlite3
from typing import Any

from homeassistant.components.sensor import SensorDeviceClass, SensorEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import EntityCategory
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from . import GemmaConfigEntry
from .action_events import TurnReport, signal_turn
from .actions.ledger import LedgerError
from .activity_sensors import (
    ActionsTodaySensor,
    LastActionSensor,
    TurnsTodaySensor,
    WaitingForConfirmationSensor,
)
from .cloud_remote import signal_remote
from .cloud_sync import CloudSync, signal_sync
from .const import DOMAIN, engine_unique_id
from .engine.local_engine import EngineStatus
from .entity import GemmaEngineEntity
from .sync.remote_actions import RemoteRequest

# State is pushed (dispatcher signals): no polling, no service calls.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the engine's sensors, and cloud sync's when it is set up."""
    async_add_entities(
        [
            ModelStatusSensor(entry),
            ActionsTodaySensor(entry),
            LastActionSensor(entry),
            WaitingForConfirmationSensor(entry),
            TurnsTodaySensor(entry),
        ]
    )
    sync = entry.runtime_data.cloud_sync
    if sync is not None:
        async_add_entities(
            [
                SyncStatusSensor(entry, sync),
                SyncPendingSensor(entry, sync),
                SyncLastDeliverySensor(entry, sync),
            ]
        )
    if sync is not None and sync.remote.specs:
        async_add_entities([RemoteActionsSensor(entry, sync)])
    else:
        _forget_sensors(hass, entry, ["remote_actions"])
    if sync is None:
        _forget_sensors(
            hass, entry, ["sync_status", "sync_pending", "sync_last_delivery"]
        )


def _forget_sensors(
    hass: HomeAssistant, entry: GemmaConfigEntry, keys: list[str]
) -> None:
    """Remove the sensors of what is no longer set up (cloud sync, remote actions)."""
    registry = er.async_get(hass)
    for key in keys:
        unique_id = engine_unique_id(entry.entry_id, key)
        if entity_id := registry.async_get_entity_id("sensor", DOMAIN, unique_id):
            registry.async_remove(entity_id)


class ModelStatusSensor(GemmaEngineEntity, SensorEntity):
    """What the model is doing, and how the last generation step went."""

    _attr_device_class = SensorDeviceClass.ENUM
    _attr_options = [status.value for status in EngineStatus]
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_should_poll = False

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Set up the status sensor of the entry's engine."""
        super().__init__(entry, "model_status")
        self._engine = entry.runtime_data.engine
        self._last_turn: TurnReport | None = None
        # Turns since Home Assistant started, by the path that understood them.
        self._turns: Counter[str] = Counter()

    async def async_added_to_hass(self) -> None:
        """Follow the engine's status and the agents' turns."""
        self.async_on_remove(self._engine.add_listener(self.async_write_ha_state))

        @callback
        def on_turn(report: TurnReport) -> None:
            self._last_turn = report
            self._turns[report.path] += 1
            self.async_write_ha_state()

        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_turn(self._entry.entry_id), on_turn
            )
        )

    @property
    def native_value(self) -> str:
        """Return the engine's status."""
        return self._engine.status.value

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the context size, the last step's figures and the last turn's path.

        ``last_turn_path`` is "matcher" when Home Assistant's sentences understood the
        last turn (no generation) and "model" when the model answered it.
        """
        stats = self._engine.last_stats
        attributes: dict[str, Any] = {"context_size": self._engine.n_ctx}
        if (turn := self._last_turn) is not None:
            attributes.update(
                last_turn_path=turn.path,
                last_turn_agent=turn.agent,
                last_turn_s=turn.seconds,
                last_turn_actions=turn.actions,
                turns_by_path=dict(self._turns),
            )
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


class _SyncSensor(GemmaEngineEntity, SensorEntity):
    """Base of the cloud sync sensors: they follow the sync status."""

    _attr_should_poll = False
    _attr_entity_category = EntityCategory.DIAGNOSTIC

    def __init__(self, entry: GemmaConfigEntry, sync: CloudSync, key: str) -> None:
        """Show ``key`` of ``sync``'s status."""
        super().__init__(entry, key)
        self._sync = sync

    async def async_added_to_hass(self) -> None:
        """Follow the sync status."""
        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_sync(self._entry.entry_id), self.async_write_ha_state
            )
        )


class SyncStatusSensor(_SyncSensor):
    """Whether the cloud receives the hub's events."""

    _attr_device_class = SensorDeviceClass.ENUM
    _attr_options = ["starting", "ok", "retrying", "refused", "disabled"]

    def __init__(self, entry: GemmaConfigEntry, sync: CloudSync) -> None:
        """Set up the sync status sensor."""
        super().__init__(entry, sync, "sync_status")

    @property
    def native_value(self) -> str:
        """Return the sync state."""
        return self._sync.status.state

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the last delivery problem, if any."""
        return {"last_error": self._sync.status.last_error}


class SyncPendingSensor(_SyncSensor):
    """Events waiting for the cloud."""

    _attr_native_unit_of_measurement = "events"

    def __init__(self, entry: GemmaConfigEntry, sync: CloudSync) -> None:
        """Set up the pending events sensor."""
        super().__init__(entry, sync, "sync_pending")

    @property
    def native_value(self) -> int | None:
        """Return how many events wait to be delivered."""
        stats = self._sync.status.stats
        return stats.pending if stats else None

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the bytes waiting, the oldest event's time and the dead letters."""
        stats = self._sync.status.stats
        if stats is None:
            return {}
        oldest = stats.oldest_pending
        return {
            "pending_bytes": stats.pending_bytes,
            "oldest_pending": (
                dt_util.utc_from_timestamp(oldest).isoformat() if oldest else None
            ),
            "delivered_7_days": stats.sent,
            "refused": stats.dead,
        }


class SyncLastDeliverySensor(_SyncSensor):
    """When the cloud last acknowledged a batch."""

    _attr_device_class = SensorDeviceClass.TIMESTAMP

    def __init__(self, entry: GemmaConfigEntry, sync: CloudSync) -> None:
        """Set up the last delivery sensor."""
        super().__init__(entry, sync, "sync_last_delivery")

    @property
    def native_value(self) -> datetime | None:
        """Return the time of the last acknowledged batch."""
        status = self._sync.status
        last = status.last_success
        if last is None and status.stats is not None:
            last = status.stats.last_sent
        return dt_util.utc_from_timestamp(last) if last else None


class RemoteActionsSensor(GemmaEngineEntity, SensorEntity):
    """Remote actions waiting for the cloud, and the latest requests' outcomes."""

    _attr_should_poll = False
    _attr_native_unit_of_measurement = "requests"

    def __init__(self, entry: GemmaConfigEntry, sync: CloudSync) -> None:
        """Set up the remote actions sensor."""
        super().__init__(entry, "remote_actions")
        self._sync = sync
        self._waiting: int | None = None
        self._recent: list[RemoteRequest] = []

    async def async_added_to_hass(self) -> None:
        """Read the requests now and whenever one is made or answered."""
        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_remote(self._entry.entry_id), self._schedule_refresh
            )
        )
        await self._async_refresh()

    @callback
    def _schedule_refresh(self) -> None:
        self._entry.async_create_background_task(
            self.hass, self._async_refresh(), f"{self.entity_id} refresh"
        )

    async def _async_refresh(self) -> None:
        book, executor = self._sync.remote.book, self._sync.executor
        try:
            self._waiting = await executor.async_on_ledger(book.waiting)
            self._recent = await executor.async_on_ledger(book.recent, 10)
        except (LedgerError, sqlite3.Error):
            self._waiting = None
        self.async_write_ha_state()

    @property
    def native_value(self) -> int | None:
        """Return how many requests wait for the cloud's result."""
        return self._waiting

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the latest requests: what, when, and how they ended."""
        return {
            "recent": [
                {
                    "action": request.action,
                    "status": request.status,
                    "message": request.message,
                    "requested_at": dt_util.utc_from_timestamp(
                        request.requested_at
                    ).isoformat(),
                    "finished_at": (
                        dt_util.utc_from_timestamp(request.finished_at).isoformat()
                        if request.finished_at
                        else None
                    ),
                }
                for request in self._recent
            ]
        }
