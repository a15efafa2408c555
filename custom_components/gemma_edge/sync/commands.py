"""Reconciliation commands from the cloud: parsed, checked, and turned into actions.

A command is ``{"id", "type": "desired_state" | "call_service", "target", "data",
"version", "expires_at", "confirmed_by_user"}``, or ``{"id", "type":
"remote_action.result", "data": {"request_id", "status", "message", "result"}}``.
A desired state becomes the absolute service call that reaches it; its
``version`` must not be lower than the last one applied to that entity (kept in
the ledger's file, so a restart does not forget it), and an expired command is
refused. Each command then runs through the idempotent
executor with its ``id`` as the key (not here). Plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
import re
from typing import Any

from ..actions.ledger import ActionLedger
from ..actions.records import TARGET_KEYS, ServiceAction
from .remote_actions import FINAL_STATUSES, REMOTE_ACTION_RESULT

DESIRED_STATE = "desired_state"
CALL_SERVICE = "call_service"
_ENTITY_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
_SERVICE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")

# The service that reaches a state, per domain (any other domain: turn_on / turn_off).
_STATE_SERVICES: dict[str, dict[str, str]] = {
    "cover": {"open": "open_cover", "closed": "close_cover"},
    "valve": {"open": "open_valve", "closed": "close_valve"},
    "lock": {"locked": "lock", "unlocked": "unlock"},
    "alarm_control_panel": {
        "disarmed": "alarm_disarm",
        "armed_home": "alarm_arm_home",
        "armed_away": "alarm_arm_away",
        "armed_night": "alarm_arm_night",
    },
    "media_player": {
        "playing": "media_play",
        "paused": "media_pause",
        "on": "turn_on",
        "off": "turn_off",
    },
    "lawn_mower": {"mowing": "start_mowing", "docked": "dock"},
}
_ON_OFF = {"on": "turn_on", "off": "turn_off"}
# Attributes set through their own service rather than with the state.
_ATTRIBUTE_SERVICES: dict[tuple[str, str], tuple[str, str]] = {
    ("climate", "temperature"): ("set_temperature", "temperature"),
    ("cover", "position"): ("set_cover_position", "position"),
    ("valve", "position"): ("set_valve_position", "position"),
    ("humidifier", "humidity"): ("set_humidity", "humidity"),
    ("media_player", "volume_level"): ("volume_set", "volume_level"),
}


class CommandError(ValueError):
    """A command that is refused; ``reason`` is a stable code for the result event."""

    def __init__(self, reason: str, message: str) -> None:
        """Refuse for ``reason`` (invalid, unsupported, expired, stale)."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CloudCommand:
    """One reconciliation command, validated."""

    id: str
    type: str
    target: str
    data: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    expires_at: float | None = None
    confirmed_by_user: bool = False


def parse_command(raw: Any) -> CloudCommand:
    """Return the command, or raise CommandError("invalid", why)."""
    if not isinstance(raw, dict):
        raise CommandError("invalid", "a command is a JSON object")
    command_id, kind, target = raw.get("id"), raw.get("type"), raw.get("target")
    if not isinstance(command_id, str) or not 0 < len(command_id) <= 200:
        raise CommandError("invalid", "the command has no id")
    if kind == REMOTE_ACTION_RESULT:
        return _remote_result(command_id, raw.get("data"))
    if kind not in (DESIRED_STATE, CALL_SERVICE):
        raise CommandError("invalid", f"unknown command type {kind!r}")
    if not isinstance(target, str) or not _ENTITY_ID.match(target):
        raise CommandError("invalid", f"the target {target!r} is not an entity id")
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise CommandError("invalid", "the command's data is not an object")
    inner = data.get("data", {}) if kind == CALL_SERVICE else {}
    if TARGET_KEYS & set(data) or (
        isinstance(inner, dict) and TARGET_KEYS & set(inner)
    ):
        raise CommandError(
            "invalid", "a command acts on its target only: no entity_id or area in data"
        )
    version = raw.get("version")
    if version is not None and (
        isinstance(version, bool)
        or not isinstance(version, int)
        or not 0 <= version < 2**63
    ):
        raise CommandError("invalid", "the version is not an integer from 0 to 2^63")
    return CloudCommand(
        command_id,
        kind,
        target,
        data,
        version,
        _timestamp(raw.get("expires_at")),
        raw.get("confirmed_by_user") is True,
    )


def _remote_result(command_id: str, data: Any) -> CloudCommand:
    """Return a remote action's result: ``{"request_id", "status", "message"}``."""
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        raise CommandError("invalid", "a remote action's result names its request_id")
    if data.get("status") not in FINAL_STATUSES:
        raise CommandError(
            "invalid", f"a remote action's status is {' or '.join(FINAL_STATUSES)}"
        )
    if not isinstance(data.get("message", ""), str):
        raise CommandError("invalid", "a remote action's message is text")
    return CloudCommand(command_id, REMOTE_ACTION_RESULT, "", data)


def _timestamp(value: Any) -> float | None:
    """Return ``expires_at`` (epoch seconds or ISO 8601 with a zone) as seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not -1e12 < value < 1e12:
            raise CommandError("invalid", "expires_at is out of range")
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.timestamp()
    raise CommandError("invalid", f"expires_at {value!r} is not a time with a zone")


def command_actions(command: CloudCommand) -> list[ServiceAction]:
    """Return the absolute service calls that carry out the command, in order."""
    domain = command.target.split(".", 1)[0]
    if command.type == CALL_SERVICE:
        service, data = command.data.get("service"), command.data.get("data", {})
        if not isinstance(service, str) or not _SERVICE.match(service):
            raise CommandError("invalid", "call_service needs data.service")
        if service.split(".", 1)[0] != domain or not isinstance(data, dict):
            raise CommandError(
                "invalid", f"{service} cannot be called on {command.target}"
            )
        return [ServiceAction(domain, service.split(".", 1)[1], command.target, data)]
    attributes = dict(command.data)
    state = attributes.pop("state", None)
    actions = []
    for name in list(attributes):
        if (own := _ATTRIBUTE_SERVICES.get((domain, name))) is not None:
            service, key = own
            value = attributes.pop(name)
            actions.append(ServiceAction(domain, service, command.target, {key: value}))
    if state is not None:
        service = _STATE_SERVICES.get(domain, _ON_OFF).get(str(state))
        if service is None:
            raise CommandError(
                "unsupported", f"{command.target} cannot be set to {state!r}"
            )
        # what remains goes with turning on (brightness, colour, percentage)
        data = attributes if service == "turn_on" else {}
        if attributes and service != "turn_on":
            raise CommandError(
                "unsupported",
                f"{', '.join(sorted(attributes))} cannot be set with {state!r}",
            )
        actions.insert(0, ServiceAction(domain, service, command.target, data))
    elif attributes:
        raise CommandError(
            "unsupported",
            f"{', '.join(sorted(attributes))} of {command.target} needs a state",
        )
    if not actions:
        raise CommandError("invalid", "the desired state is empty")
    return actions


def check_fresh(command: CloudCommand, now: float, last_version: int | None) -> None:
    """Refuse an expired command, or one older than what was applied already."""
    if command.expires_at is not None and command.expires_at < now:
        raise CommandError("expired", "the command expired before it arrived")
    if (
        command.version is not None
        and last_version is not None
        and command.version < last_version
    ):
        raise CommandError(
            "stale",
            f"version {command.version} is older than the applied {last_version}",
        )


class VersionBook:
    """The last command version applied per entity, in the ledger's file."""

    def __init__(self, ledger: ActionLedger) -> None:
        """Use ``ledger``'s database; ``open`` creates the table."""
        self.ledger = ledger

    def open(self) -> None:
        """Create the table if the file has none."""
        with self.ledger.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS command_versions ("
                " entity_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                " command_id TEXT NOT NULL, applied_at REAL NOT NULL)"
            )

    def last(self, entity_id: str) -> int | None:
        """Return the last version applied to the entity (None: none yet)."""
        row = (
            self.ledger.connection()
            .execute(
                "SELECT version FROM command_versions WHERE entity_id = ?",
                (entity_id,),
            )
            .fetchone()
        )
        return int(row[0]) if row else None

    def record(self, command: CloudCommand, now: float) -> None:
        """Remember the command's version as applied (a lower one never replaces it)."""
        if command.version is None:
            return
        with self.ledger.transaction() as conn:
            conn.execute(
                "INSERT INTO command_versions (entity_id, version, command_id,"
                " applied_at) VALUES (?, ?, ?, ?) ON CONFLICT(entity_id) DO UPDATE"
                " SET version = excluded.version, command_id = excluded.command_id,"
                " applied_at = excluded.applied_at"
                " WHERE excluded.version >= command_versions.version",
                (command.target, command.version, command.id, now),
            )
