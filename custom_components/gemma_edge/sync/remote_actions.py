"""Remote actions: things only the cloud can do, offered to the model as tools.

The user defines each one (name, description, a JSON schema of its arguments). A call
checks the arguments and queues a ``gemma_edge.remote_action.requested`` event; the
event's id is the cloud's idempotency key. The request and its event are written in
one transaction, and the request is kept here until the cloud answers with a
``remote_action.result`` command, which settles it once. Plain Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import json
import re
import sqlite3
from typing import Any

from ..actions.ledger import ActionLedger
from .outbox import REMOTE_ACTION_REQUESTED, Outbox, OutboxEvent

REMOTE_ACTION_RESULT = "remote_action.result"
REQUESTED, SUCCEEDED, FAILED = "requested", "succeeded", "failed"
FINAL_STATUSES = (SUCCEEDED, FAILED)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
_SCHEMA = """CREATE TABLE IF NOT EXISTS remote_actions (
    request_id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    arguments TEXT NOT NULL,
    conversation_id TEXT,
    requested_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'requested',
    message TEXT NOT NULL DEFAULT '',
    result TEXT,
    finished_at REAL
)"""


class RemoteActionError(ValueError):
    """Remote actions defined wrongly, or a call with wrong arguments."""


@dataclass(frozen=True)
class RemoteActionSpec:
    """One remote action as the user defined it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class RemoteRequest:
    """A request and, once the cloud answered, its result."""

    request_id: str
    action: str
    arguments: dict[str, Any]
    conversation_id: str | None
    requested_at: float
    status: str
    message: str
    result: Any
    finished_at: float | None


def parse_specs(raw: Any) -> list[RemoteActionSpec]:
    """Return the remote actions of the options (a list of objects), or raise."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, list):
        raise RemoteActionError("remote actions are a list")
    specs: dict[str, RemoteActionSpec] = {}
    for item in raw:
        if not isinstance(item, dict):
            raise RemoteActionError("each remote action is an object")
        name, description = item.get("name"), item.get("description", "")
        if not name:
            raise RemoteActionError("a remote action has no name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RemoteActionError(
                f"the name {name!r} is not lower case letters, digits and _"
            )
        if name in specs:
            raise RemoteActionError(f"{name} is defined twice")
        if not isinstance(description, str) or not description.strip():
            raise RemoteActionError(f"{name} needs a description")
        parameters = item.get("parameters") or {"type": "object", "properties": {}}
        _check_schema(name, parameters)
        specs[name] = RemoteActionSpec(name, description.strip(), parameters)
    return list(specs.values())


def _check_schema(name: str, schema: Any) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise RemoteActionError(f"the parameters of {name} are not an object schema")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise RemoteActionError(f"the properties of {name} are not an object")
    for prop, spec in properties.items():
        if not isinstance(spec, dict) or spec.get("type") not in _JSON_TYPES:
            raise RemoteActionError(
                f"{name}.{prop} needs a type ({', '.join(_JSON_TYPES)})"
            )
    required = schema.get("required", [])
    if not isinstance(required, list) or not set(required) <= set(properties):
        raise RemoteActionError(f"{name} requires arguments it does not define")


def check_arguments(spec: RemoteActionSpec, arguments: dict[str, Any]) -> None:
    """Raise RemoteActionError if ``arguments`` do not fit the action's schema.

    The checks a model's call needs: required arguments, no unknown ones, each of its
    declared type (an array's items too, when their type is given), and within
    ``enum`` where one is given.
    """
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", [])
    if missing := [prop for prop in required if prop not in arguments]:
        raise RemoteActionError(f"missing {', '.join(missing)}")
    if unknown := sorted(set(arguments) - set(properties)):
        raise RemoteActionError(f"unknown argument {', '.join(unknown)}")
    for prop, value in arguments.items():
        declared = properties[prop]
        kind = declared["type"]
        if not _of_type(value, kind):
            raise RemoteActionError(f"{prop} must be a {kind}")
        if "enum" in declared and value not in declared["enum"]:
            raise RemoteActionError(
                f"{prop} must be one of {', '.join(map(str, declared['enum']))}"
            )
        item_type = (declared.get("items") or {}).get("type")
        if isinstance(value, list) and item_type in _JSON_TYPES:
            if not all(_of_type(item, item_type) for item in value):
                raise RemoteActionError(f"each of {prop} must be a {item_type}")


def _of_type(value: Any, kind: str) -> bool:
    """Return whether ``value`` is of the JSON schema type ``kind``."""
    return isinstance(value, _JSON_TYPES[kind]) and (
        kind == "boolean" or not isinstance(value, bool)
    )


class RemoteActionBook:
    """Requests and their results, in the ledger's file.

    Its methods block: they run on the ledger's thread.
    """

    def __init__(self, ledger: ActionLedger, outbox: Outbox) -> None:
        """Keep requests in ``ledger``'s file; their events go to ``outbox``."""
        self.ledger = ledger
        self.outbox = outbox

    def open(self) -> None:
        """Create the table if the file has none."""
        with self.ledger.transaction() as conn:
            conn.execute(_SCHEMA)

    def request(
        self,
        action: str,
        arguments: dict[str, Any],
        conversation_id: str | None,
        now: float,
    ) -> str:
        """Queue a request and its event in one transaction; return the request id."""
        event = OutboxEvent.new(
            REMOTE_ACTION_REQUESTED,
            action,
            {"action": action, "arguments": arguments},
            now,
        )
        with self.ledger.transaction() as conn:
            conn.execute(
                "INSERT INTO remote_actions (request_id, action, arguments,"
                " conversation_id, requested_at) VALUES (?, ?, ?, ?, ?)",
                (event.id, action, json.dumps(arguments), conversation_id, now),
            )
            self.outbox.writer([event])(conn)
        return event.id

    def settle(
        self, request_id: str, status: str, message: str, result: Any, now: float
    ) -> tuple[RemoteRequest | None, bool]:
        """Record the cloud's result once; return the request and whether it was new.

        (None, False) for a request this hub never made; a second result for a
        settled request changes nothing.
        """
        with self.ledger.transaction() as conn:
            changed = conn.execute(
                "UPDATE remote_actions SET status = ?, message = ?, result = ?,"
                " finished_at = ? WHERE request_id = ? AND status = ?",
                (status, message, json.dumps(result), now, request_id, REQUESTED),
            ).rowcount
            row = _select(conn, "WHERE request_id = ?", (request_id,))
        return (_request(row[0]) if row else None), bool(changed)

    def recent(self, limit: int = 20) -> list[RemoteRequest]:
        """Return the latest requests, newest first."""
        rows = _select(
            self.ledger.connection(), "ORDER BY requested_at DESC LIMIT ?", (limit,)
        )
        return [_request(row) for row in rows]

    def waiting(self) -> int:
        """Return how many requests wait for the cloud's result."""
        row = (
            self.ledger.connection()
            .execute(
                "SELECT COUNT(*) FROM remote_actions WHERE status = ?", (REQUESTED,)
            )
            .fetchone()
        )
        return int(row[0])


def _select(
    conn: sqlite3.Connection, where: str, args: Sequence[Any]
) -> list[tuple[Any, ...]]:
    columns = (
        "request_id, action, arguments, conversation_id, requested_at, status,"
        " message, result, finished_at"
    )
    sql = f"SELECT {columns} FROM remote_actions {where}"  # noqa: S608
    return conn.execute(sql, tuple(args)).fetchall()


def _request(row: tuple[Any, ...]) -> RemoteRequest:
    return RemoteRequest(
        row[0],
        row[1],
        json.loads(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        json.loads(row[7]) if row[7] is not None else None,
        row[8],
    )
