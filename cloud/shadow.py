"""The per-hub shadow: what each entity reports, what it should be, and the result.

One record per entity in the ``gemma_edge_shadow`` bucket, key ``<hub>.<entity_id>``::

    {"entity_id", "reported": {"state", "attributes", "last_changed", "time",
     "sequence", "event_id"}, "desired": {"state", "attributes", "version", "set_at",
     "command_id", "confirmed_by_user", "expires_at", "result"}, "last_result"}

A state event older by sequence than the stored one is ignored. A desired state is
answered as a ``desired_state`` command (id ``desire-<entity>-<version>``) while it
differs from the reported state and no result for that command has arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
import time
from typing import Any

from .events import COMMAND_RESULT, ENTITY_ID, STATE_CHANGED, HubEvent
from .store import SHADOW_BUCKET, CloudStore, Record, get_json, update_json

DESIRED_STATE = "desired_state"


def desire_id(entity_id: str, version: int) -> str:
    """Return the stable id of the command for one desired version."""
    return f"desire-{entity_id}-{version}"


def iso(moment: float) -> str:
    """Return epoch seconds as ISO 8601 in UTC."""
    return datetime.fromtimestamp(moment, tz=UTC).isoformat()


class Shadow:
    """The shadows of all hubs, in one key-value bucket."""

    def __init__(
        self, store: CloudStore, clock: Callable[[], float] = time.time
    ) -> None:
        """Keep the shadows in ``store``'s bucket."""
        self.store = store
        self.clock = clock

    async def apply(self, event: HubEvent) -> None:
        """Take what a state change or a command result says about an entity."""
        entity_id = event.data.get("entity_id") or event.data.get("target")
        if not isinstance(entity_id, str) or not ENTITY_ID.match(entity_id):
            return
        if event.type == STATE_CHANGED:
            change = _reported(event, entity_id)
        elif event.type == COMMAND_RESULT:
            change = _result(event, entity_id)
        else:
            return
        await update_json(self.store.shadow, f"{event.hub}.{entity_id}", change)

    async def set_desired(
        self,
        hub: str,
        entity_id: str,
        state: str | None,
        attributes: dict[str, Any],
        *,
        confirmed_by_user: bool = False,
        expires_at: float | None = None,
    ) -> int:
        """Set an entity's desired state; return its new version (the last + 1)."""
        if not ENTITY_ID.match(entity_id):
            raise ValueError(f"{entity_id!r} is not an entity id")
        if state is None and not attributes:
            raise ValueError("a desired state needs a state or an attribute")
        now = self.clock()

        def change(record: Record | None) -> Record:
            record = record or _empty(entity_id)
            version = int((record.get("desired") or {}).get("version", 0)) + 1
            record["desired"] = {
                "state": state,
                "attributes": attributes,
                "version": version,
                "set_at": iso(now),
                "command_id": desire_id(entity_id, version),
                "confirmed_by_user": confirmed_by_user,
                "expires_at": expires_at,
                "result": None,
            }
            return record

        stored = await update_json(self.store.shadow, f"{hub}.{entity_id}", change)
        assert stored is not None
        return int(stored["desired"]["version"])

    async def entities(self, hub: str) -> dict[str, Record]:
        """Return the records of a hub's entities, by entity id."""
        records: dict[str, Record] = {}
        for key in await self.store.keys(SHADOW_BUCKET, hub):
            record, _ = await get_json(self.store.shadow, key)
            if record is not None:
                records[key.removeprefix(f"{hub}.")] = record
        return records

    async def commands(self, hub: str) -> list[Record]:
        """Return the desired-state commands the hub still has to carry out."""
        entities = await self.entities(hub)
        return [
            command
            for record in entities.values()
            if (command := pending_command(record)) is not None
        ]

    async def hubs(self) -> list[str]:
        """Return the ids of the hubs that have a shadow."""
        keys = await self.store.keys(SHADOW_BUCKET)
        return sorted({key.split(".", 1)[0] for key in keys})


def in_sync(record: Record) -> bool:
    """Return whether the reported state matches the desired one."""
    desired, reported = record.get("desired"), record.get("reported")
    if not desired or not reported:
        return False
    if desired["state"] is not None and str(desired["state"]) != reported["state"]:
        return False
    attributes = reported.get("attributes") or {}
    return all(attributes.get(k) == v for k, v in desired["attributes"].items())


def pending_command(record: Record) -> Record | None:
    """Return the command that reaches the desired state, if one is still due."""
    desired = record.get("desired")
    if not desired or desired.get("result") is not None or in_sync(record):
        return None
    data = dict(desired["attributes"])
    if desired["state"] is not None:
        data["state"] = desired["state"]
    command: Record = {
        "id": desired["command_id"],
        "type": DESIRED_STATE,
        "target": record["entity_id"],
        "data": data,
        "version": desired["version"],
        "confirmed_by_user": bool(desired.get("confirmed_by_user")),
    }
    if desired.get("expires_at") is not None:
        command["expires_at"] = desired["expires_at"]
    return command


def _empty(entity_id: str) -> Record:
    return {
        "entity_id": entity_id,
        "reported": None,
        "desired": None,
        "last_result": None,
    }


def _reported(event: HubEvent, entity_id: str) -> Callable[[Record | None], Record]:
    def change(record: Record | None) -> Record:
        record = record or _empty(entity_id)
        stored = _position(record.get("reported"))
        if stored is not None and (event.position is None or event.position < stored):
            return record  # older than what is stored: ignored
        attributes = event.data.get("attributes")
        record["reported"] = {
            "state": str(event.data.get("state")),
            "attributes": attributes if isinstance(attributes, dict) else {},
            "last_changed": event.data.get("last_changed"),
            "time": event.time,
            "sequence": event.sequence,
            "epoch": event.epoch,
            "event_id": event.id,
        }
        return record

    return change


def _position(stored: Record | None) -> tuple[str, int] | None:
    """Return a stored report's place in the hub's history (epoch, sequence)."""
    if not stored or stored.get("sequence") is None:
        return None
    return (str(stored.get("epoch") or ""), int(stored["sequence"]))


def _result(event: HubEvent, entity_id: str) -> Callable[[Record | None], Record]:
    data = event.data
    summary = {
        "command_id": data.get("command_id"),
        "status": data.get("status"),
        "reason": data.get("reason"),
        "message": data.get("message"),
        "version": data.get("version"),
        "time": event.time,
        "sequence": event.sequence,
        "epoch": event.epoch,
        "event_id": event.id,
    }

    def change(record: Record | None) -> Record:
        record = record or _empty(entity_id)
        last = _position(record.get("last_result"))
        if last is None or (event.position is not None and event.position >= last):
            record["last_result"] = summary
        desired = record.get("desired")
        if (
            desired
            and desired["command_id"] == summary["command_id"]
            and desired["result"] is None
        ):
            # any answer settles the id: sent again, the hub would only repeat
            # it (it deduplicates on the id); a new desired version tries again
            desired["result"] = summary
        return record

    return change
