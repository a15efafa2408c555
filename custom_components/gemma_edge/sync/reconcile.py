"""Running the cloud's reconciliation commands through the idempotent executor.

Each command is checked (format, expiry, version), turned into absolute calls and run
with the command's ``id`` as the idempotency key and ``source: cloud``: a command
delivered twice acts once. Exposure, the sensitive-device policy (a sensitive action
needs ``"confirmed_by_user": true``) and the ledger apply as to any action. Every
command's result goes back to the cloud as a ``gemma_edge.command.result`` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import time
from typing import Any

from ..actions.executor import ActionExecutor
from ..actions.outcomes import ActionOutcome, ActionRequest
from ..actions.policy import SensitivePolicy
from ..actions.records import ActionStatus
from .commands import (
    CloudCommand,
    CommandError,
    VersionBook,
    check_fresh,
    command_actions,
    parse_command,
)
from .outbox import COMMAND_RESULT, Outbox, OutboxEvent
from .remote_actions import REMOTE_ACTION_RESULT, RemoteActionBook, RemoteRequest

# Outcomes that leave the desired state reached (or on its way).
_DONE = frozenset(
    {
        ActionStatus.EXECUTED,
        ActionStatus.NO_OP,
        ActionStatus.DEDUPLICATED,
        ActionStatus.UNCONFIRMED,
        ActionStatus.RUNNING,
    }
)


class CommandRunner:
    """Runs commands for one hub and reports each one's result."""

    def __init__(
        self,
        executor: ActionExecutor,
        outbox: Outbox,
        versions: VersionBook,
        *,
        remote: RemoteActionBook | None = None,
        on_remote_result: Callable[[RemoteRequest], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Act through ``executor``, report into ``outbox``, track ``versions``.

        Remote actions' results settle requests in ``remote`` and are announced once
        through ``on_remote_result``.
        """
        self.executor = executor
        self.outbox = outbox
        self.versions = versions
        self.remote = remote
        self.on_remote_result = on_remote_result
        self.clock = clock
        self._lock = asyncio.Lock()

    async def async_run(self, raw: Any) -> dict[str, Any]:
        """Run one command; return (and report) its result.

        One at a time (an answer's and a push's commands may arrive together): a
        version is checked, applied and recorded before the next one is checked.
        """
        async with self._lock:
            result = await self._async_result(raw)
        event = OutboxEvent.new(
            COMMAND_RESULT, str(result.get("target") or "hub"), result, self.clock()
        )
        await self.executor.async_on_ledger(self.outbox.append, [event])
        return result

    async def _async_result(self, raw: Any) -> dict[str, Any]:
        command_id = raw.get("id") if isinstance(raw, dict) else None
        try:
            command = parse_command(raw)
            if command.type == REMOTE_ACTION_RESULT:
                check_fresh(command, self.clock(), None)
                return await self._async_remote_result(command)
            actions = command_actions(command)
            # A command run before answers with its recorded result (the executor
            # deduplicates it), even once it has expired or a newer one was applied.
            ran_before = await self.executor.async_on_ledger(
                self.executor.ledger.get, f"{command.id}#0:{command.target}"
            )
            if ran_before is None:
                last = await self.executor.async_on_ledger(
                    self.versions.last, command.target
                )
                check_fresh(command, self.clock(), last)
        except CommandError as err:
            return {
                "command_id": command_id,
                "target": raw.get("target") if isinstance(raw, dict) else None,
                "status": "rejected",
                "reason": err.reason,
                "message": str(err),
                "outcomes": [],
            }
        outcomes: list[ActionOutcome] = []
        effective: list[ActionStatus] = []
        for index, action in enumerate(actions):
            outcome = await self.executor.async_execute(
                ActionRequest(
                    action=action,
                    scope=f"cloud:{command.id}",
                    source="cloud",
                    key=f"{command.id}#{index}",
                    confirmed_elsewhere=command.confirmed_by_user,
                    tool=command.type,
                    sensitive_policy=SensitivePolicy.CONFIRM,
                )
            )
            outcomes.append(outcome)
            effective.append(await self._async_effective(outcome))
            if effective[-1] not in _DONE:
                break
        failed = outcomes[-1] if effective[-1] not in _DONE else None
        failed_status = effective[-1] if failed is not None else None
        if failed is None:
            await self.executor.async_on_ledger(
                self.versions.record, command, self.clock()
            )
        status = (
            "applied"
            if failed_status is None
            else "rejected"
            if failed_status in (ActionStatus.REJECTED, ActionStatus.NEEDS_CONFIRMATION)
            else failed_status.value
        )
        return {
            "command_id": command.id,
            "target": command.target,
            "status": status,
            "reason": failed_status.value if failed_status else None,
            "message": failed.message if failed else "",
            "version": command.version,
            "outcomes": [outcome.as_event(with_words=False) for outcome in outcomes],
        }

    async def _async_remote_result(self, command: CloudCommand) -> dict[str, Any]:
        """Settle the remote action the result answers (once; a repeat is harmless)."""
        data = command.data
        request_id = data["request_id"]
        result: dict[str, Any] = {
            "command_id": command.id,
            "target": None,
            "request_id": request_id,
            "outcomes": [],
        }
        if self.remote is None:
            raise CommandError("unsupported", "this hub has no remote actions")
        request, new = await self.executor.async_on_ledger(
            self.remote.settle,
            request_id,
            data["status"],
            data.get("message", ""),
            data.get("result"),
            self.clock(),
        )
        if request is None:
            raise CommandError("unknown_request", f"no request {request_id} was made")
        if new and self.on_remote_result is not None:
            self.on_remote_result(request)
        return {**result, "status": "applied", "repeat": not new}

    async def _async_effective(self, outcome: ActionOutcome) -> ActionStatus:
        """Return what an outcome means: a redelivery's is the recorded one's."""
        if outcome.status is not ActionStatus.DEDUPLICATED:
            return outcome.status
        record = await self.executor.async_on_ledger(
            self.executor.ledger.get, outcome.key
        )
        if record is None:
            return ActionStatus.INDETERMINATE
        return ActionOutcome.from_record(record).status
