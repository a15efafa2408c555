"""Remote actions: requested by a hub, run here at most once, answered until seen.

The id of a ``gemma_edge.remote_action.requested`` event is the idempotency key. Its
record in the ``gemma_edge_remote`` bucket (key ``<hub>.<request id>``) is created
before the action runs, so a request delivered again never runs again. The result is
answered as a ``remote_action.result`` command (id ``result-<request id>``) until the
hub's ``gemma_edge.command.result`` for that id arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
import json
import logging
import time
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError

from .events import HubEvent, token_of
from .store import REMOTE_BUCKET, CloudStore, Record, get_json, update_json

REMOTE_ACTION_RESULT = "remote_action.result"
RESULT_PREFIX = "result-"
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
ACTION_TIMEOUT_S = 10.0
# Still running this long past its timeout: the cloud stopped in the middle of it.
ABANDONED_AFTER_S = 60.0
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteRequest:
    """One request, as the executor gets it."""

    hub: str
    request_id: str
    action: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class RemoteOutcome:
    """What an action did: ``succeeded`` or ``failed``, words, and any data."""

    status: str
    message: str
    result: dict[str, Any] = field(default_factory=dict)


RemoteExecutor = Callable[[RemoteRequest], Awaitable[RemoteOutcome]]
ActionHandler = Callable[[dict[str, Any]], Awaitable[RemoteOutcome]]


class ActionRegistry:
    """Remote actions by name (the default executor)."""

    def __init__(self, handlers: dict[str, ActionHandler] | None = None) -> None:
        """Start with ``handlers`` (name -> async function of the arguments)."""
        self.handlers = dict(handlers or {})

    def register(self, name: str, handler: ActionHandler) -> None:
        """Add or replace an action."""
        self.handlers[name] = handler

    async def __call__(self, request: RemoteRequest) -> RemoteOutcome:
        """Run the named action."""
        handler = self.handlers.get(request.action)
        if handler is None:
            return RemoteOutcome(FAILED, f"this cloud has no action {request.action}")
        return await handler(request.arguments)


async def order_groceries(arguments: dict[str, Any]) -> RemoteOutcome:
    """Pretend to order groceries: succeeds, echoing the arguments."""
    items = arguments.get("items")
    what = ", ".join(map(str, items)) if isinstance(items, list) and items else "it"
    return RemoteOutcome(SUCCEEDED, f"Ordered {what}.", {"order": arguments})


def default_executor() -> ActionRegistry:
    """Return the registry with the example action ``order_groceries``."""
    return ActionRegistry({"order_groceries": order_groceries})


def result_id(request_id: str) -> str:
    """Return the id of the command that answers a request."""
    return RESULT_PREFIX + request_id


class RemoteActions:
    """Runs requests once and answers their results until the hub has them."""

    def __init__(
        self,
        store: CloudStore,
        executor: RemoteExecutor | None = None,
        *,
        timeout_s: float = ACTION_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep records in ``store``'s bucket; run actions with ``executor``."""
        self.store = store
        self.executor = executor or default_executor()
        self.timeout_s = timeout_s
        self.clock = clock

    async def request(self, event: HubEvent) -> bool:
        """Run a requested action unless its id was seen; return whether it ran."""
        action = event.data.get("action") or event.subject or ""
        arguments = event.data.get("arguments")
        request = RemoteRequest(
            event.hub,
            event.id,
            str(action),
            arguments if isinstance(arguments, dict) else {},
        )
        key = f"{event.hub}.{token_of(event.id)}"
        record: Record = {
            "request_id": request.request_id,
            "action": request.action,
            "arguments": request.arguments,
            "command_id": result_id(request.request_id),
            "status": RUNNING,
            "message": "",
            "result": {},
            "started_at": self.clock(),
            # the runner's own deadline: a reader with another timeout (the CLI)
            # never calls a running action abandoned early
            "abandon_at": self.clock() + self.timeout_s + ABANDONED_AFTER_S,
            "finished_at": None,
            "acknowledged": None,
        }
        try:
            await self.store.remote.create(key, json.dumps(record).encode())
        except KeyWrongLastSequenceError:
            return False  # delivered before: running or done already
        outcome = await self._run(request)

        def finish(stored: Record | None) -> Record | None:
            if stored is None or stored["status"] != RUNNING:
                return None
            stored.update(
                status=outcome.status,
                message=outcome.message,
                result=outcome.result,
                finished_at=self.clock(),
            )
            return stored

        await update_json(self.store.remote, key, finish)
        return True

    async def acknowledge(self, event: HubEvent) -> None:
        """Take the hub's command result for a remote action's result."""
        command_id = event.data.get("command_id")
        if not isinstance(command_id, str) or not command_id.startswith(RESULT_PREFIX):
            return
        request_id = command_id.removeprefix(RESULT_PREFIX)
        summary = {
            "status": event.data.get("status"),
            "reason": event.data.get("reason"),
            "message": event.data.get("message"),
            "time": event.time,
            "event_id": event.id,
        }

        def seen(stored: Record | None) -> Record | None:
            if stored is None or stored["acknowledged"] is not None:
                return None
            if stored["command_id"] != command_id or stored["status"] == RUNNING:
                return None
            stored["acknowledged"] = summary
            return stored

        key = f"{event.hub}.{token_of(request_id)}"
        await update_json(self.store.remote, key, seen)

    async def records(self, hub: str) -> list[Record]:
        """Return a hub's request records, oldest first."""
        records = []
        for key in await self.store.keys(REMOTE_BUCKET, hub):
            record, _ = await get_json(self.store.remote, key)
            if record is not None:
                records.append(await self._settle_abandoned(key, record))
        return sorted(records, key=lambda record: record["started_at"])

    async def commands(self, hub: str) -> list[Record]:
        """Return the results the hub has not confirmed yet, as commands."""
        return [
            {
                "id": record["command_id"],
                "type": REMOTE_ACTION_RESULT,
                "data": {
                    "request_id": record["request_id"],
                    "action": record["action"],
                    "status": record["status"],
                    "message": record["message"],
                    "result": record["result"],
                },
            }
            for record in await self.records(hub)
            if record["status"] != RUNNING and record["acknowledged"] is None
        ]

    async def _run(self, request: RemoteRequest) -> RemoteOutcome:
        try:
            async with asyncio.timeout(self.timeout_s):
                outcome = await self.executor(request)
        except TimeoutError:
            return RemoteOutcome(
                FAILED,
                f"{request.action} did not finish within {self.timeout_s:g} s;"
                " it may or may not have happened",
            )
        except Exception as err:
            _LOGGER.exception("Remote action %s failed", request.request_id)
            return RemoteOutcome(FAILED, f"{request.action} failed: {err}")
        if outcome.status not in (SUCCEEDED, FAILED):
            return RemoteOutcome(
                FAILED, f"{request.action} ended in an unknown status {outcome.status}"
            )
        return outcome

    async def _settle_abandoned(self, key: str, record: Record) -> Record:
        """Report a request the cloud stopped in the middle of as failed."""
        deadline = record.get(
            "abandon_at", record["started_at"] + self.timeout_s + ABANDONED_AFTER_S
        )
        if record["status"] != RUNNING or self.clock() < deadline:
            return record

        def abandon(stored: Record | None) -> Record | None:
            if stored is None or stored["status"] != RUNNING:
                return None
            stored.update(
                status=FAILED,
                message=f"the cloud stopped while running {stored['action']};"
                " it may or may not have happened",
                finished_at=self.clock(),
            )
            return stored

        return await update_json(self.store.remote, key, abandon) or record
