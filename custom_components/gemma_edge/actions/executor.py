"""The one path every action takes.

Resolve, normalise, claim, check policy and state, call, verify. Plain Python. Home
Assistant is reached through the ``HomePort`` protocol, the ledger through one serial
worker thread, so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import contextlib
from dataclasses import replace
import json
import logging
import sqlite3
import time
from typing import Any, Protocol

from ..engine.worker import SerialWorker
from .ledger import IN_PROGRESS, ActionLedger, LedgerError, LedgerRecord
from .normalize import NormalizeError, normalize
from .outcomes import ActionOutcome, ActionRequest
from .policy import (
    SensitivePolicy,
    action_kind,
    expected_state_holds,
    is_sensitive,
    verifiable_part,
)
from .records import ActionKind, ActionStatus, EntityState, ServiceAction, derive_key
from .turns import TurnScopes

_LOGGER = logging.getLogger(__name__)

CONFIRMATION_WINDOW_S = 300.0


class HomePort(Protocol):
    """What the executor needs from the home (Home Assistant in production)."""

    def state(self, entity_id: str) -> EntityState | None:
        """Return the current state, or None if the entity does not exist."""

    def is_exposed(self, entity_id: str) -> bool:
        """Return whether the agent may act on the entity."""

    def new_action_id(self) -> str:
        """Return a fresh ULID (used as the service call's context id)."""

    async def async_call(
        self,
        action: ServiceAction,
        action_id: str,
        parent_context_id: str | None,
        user_id: str | None,
    ) -> None:
        """Call the service as the requesting user and wait for it.

        Raises on failure, also when that user may not control the entity.
        """

    async def wait_for_state(self, action: ServiceAction, timeout_s: float) -> bool:
        """Wait until the entity reaches the action's target state.

        Return False if it has not within ``timeout_s`` seconds (0: check once).
        """


class OutcomeReporter(Protocol):
    """Reports recorded outcomes elsewhere in the ledger's file (the cloud outbox)."""

    def open(self) -> None:
        """Prepare its tables in the ledger's file (before crashed actions settle)."""

    def writer_for(
        self, outcome: ActionOutcome
    ) -> Callable[[sqlite3.Connection], None] | None:
        """Return what writes the outcome's report in its transaction, or None."""


class ActionExecutor:
    """Runs actions idempotently against the ledger and the home."""

    def __init__(
        self,
        ledger: ActionLedger,
        home: HomePort,
        *,
        sensitive_policy: SensitivePolicy = SensitivePolicy.CONFIRM,
        call_timeout_s: float = 10.0,
        verify_timeout_s: float = 5.0,
        repeat_window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        on_outcome: Callable[[ActionOutcome], None] | None = None,
        reporter: OutcomeReporter | None = None,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Future[Any]]
        | None = None,
    ) -> None:
        """Set up the executor; ``async_start`` opens the ledger."""
        self.ledger = ledger
        self.home = home
        self.sensitive_policy = sensitive_policy
        self.call_timeout_s = call_timeout_s
        self.verify_timeout_s = verify_timeout_s
        self.repeat_window_s = repeat_window_s
        self.clock = clock
        self.on_outcome = on_outcome
        # Cloud sync: each recorded outcome's event, committed with the outcome.
        self.reporter = reporter
        # Starts the tasks of one-shot calls and of recording their late outcomes (Home
        # Assistant's background tasks in production, so that it knows about them).
        self.spawn = spawn or (
            lambda coro, name: asyncio.get_running_loop().create_task(coro, name=name)
        )
        self._worker: SerialWorker | None = None
        self.error: str | None = None
        # Conversation turns: the scope of their requests' keys.
        self.turns = TurnScopes()
        # One-shot calls still running after call_timeout_s (by action id), and the
        # tasks that record their outcomes when they end.
        self._still_running: dict[str, asyncio.Future[Any]] = {}
        self._settling: set[asyncio.Future[Any]] = set()

    # --- lifecycle ------------------------------------------------------------

    async def _db(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._worker is None:
            raise LedgerError("the action ledger is closed")
        return await asyncio.wrap_future(self._worker.submit(lambda: func(*args)))

    async def async_on_ledger(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the ledger's thread (the outbox shares its file)."""
        return await self._db(func, *args)

    async def async_start(self) -> list[ActionOutcome]:
        """Open the ledger and settle what a crash left in progress.

        Return the outcomes of those settled actions.
        """
        self._worker = SerialWorker(name="gemma_edge_ledger", max_pending=64)
        try:
            await self._db(self.ledger.open)
        except LedgerError as err:
            self.error = str(err)
            raise
        await self._db(self.ledger.prune, self.clock())
        if self.reporter is not None:
            await self._db(self.reporter.open)
        return [
            await self._recover(record)
            for record in await self._db(self.ledger.unfinished)
        ]

    async def async_stop(self) -> None:
        """Stop settling late outcomes, close the ledger and stop its worker."""
        # Calls still running are not cancelled; their keys stay in progress and are
        # settled (not repeated) at the next start.
        for task in list(self._settling):
            task.cancel()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.submit(self.ledger.close)
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    async def _recover(self, record: LedgerRecord) -> ActionOutcome:
        action = ServiceAction(**record.request["action"])
        state = self.home.state(action.entity_id)
        if record.kind == ActionKind.ONE_SHOT:
            status, message = (
                ActionStatus.INDETERMINATE,
                "interrupted by a restart; not repeated",
            )
        elif state is not None and expected_state_holds(action, state):
            status, message = ActionStatus.EXECUTED, "verified after a restart"
        else:
            status, message = (
                ActionStatus.INDETERMINATE,
                "interrupted by a restart; the state does not show it",
            )
        outcome = replace(
            ActionOutcome.from_record(record), status=status, message=message
        )
        await self._finish(outcome)
        self._emit(outcome)
        return outcome

    async def async_prune(self) -> int:
        """Forget finished keys past the retention (72 h).

        A ledger error is logged, not raised (this runs in the background).
        """
        try:
            return int(await self._db(self.ledger.prune, self.clock()))
        except LedgerError as err:
            _LOGGER.warning("Could not prune the action ledger: %s", err)
            return 0

    async def async_recent(
        self, limit: int = 50, since: float | None = None
    ) -> list[ActionOutcome]:
        """Return the recorded outcomes, newest first (for dashboards and diagnostics).

        None, with a warning, when the ledger cannot be read (acting is refused
        separately, by the claim).
        """
        try:
            return [
                ActionOutcome.from_record(r)
                for r in await self._db(self.ledger.recent, limit, since)
            ]
        except LedgerError as err:
            _LOGGER.warning("Could not read the agent's recent actions: %s", err)
            return []

    # --- execution ------------------------------------------------------------

    async def _finish(self, outcome: ActionOutcome) -> None:
        """Record an outcome, and its report for the cloud (if on) with it."""
        report = self.reporter.writer_for(outcome) if self.reporter else None
        await self._db(
            self.ledger.finish,
            outcome.key,
            outcome.status.value,
            {"message": outcome.message},
            self.clock(),
            report,
        )

    def _emit(self, outcome: ActionOutcome) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def async_execute(self, request: ActionRequest) -> ActionOutcome:
        """Run one action.

        Never raises for bad input (the outcome says what went wrong).
        """
        outcome = await self._execute(request)
        self._emit(outcome)
        return outcome

    def _unrecorded(
        self, request: ActionRequest, status: ActionStatus, message: str
    ) -> ActionOutcome:
        key = request.key or derive_key(request.scope, request.action)
        return ActionOutcome.of_request(
            request,
            key,
            "",
            status,
            message,
            action=request.action,
            kind=action_kind(request.action),
            created_at=self.clock(),
        )

    async def _execute(self, request: ActionRequest) -> ActionOutcome:
        original = request.action
        entity_id = original.entity_id
        if self._worker is None:
            return self._unrecorded(
                request,
                ActionStatus.REJECTED,
                "the action ledger is unavailable; not acting",
            )
        if request.effect is not None:
            state, action, kind = EntityState("unknown"), original, ActionKind.ONE_SHOT
        else:
            current = self.home.state(entity_id)
            if current is None or not self.home.is_exposed(entity_id):
                return self._unrecorded(
                    request,
                    ActionStatus.REJECTED,
                    f"{entity_id} is unknown or not exposed to the agent",
                )
            state = current
            try:
                action = normalize(original, state)
            except (NormalizeError, ValueError, TypeError) as err:
                # bad values in the request's data ("brightness_step_pct": "x")
                return self._unrecorded(request, ActionStatus.REJECTED, str(err))
            kind = action_kind(action)
        # The key comes from the request as asked (a toggle stays the
        # same toggle after it ran).
        key = (
            f"{request.key}:{entity_id}"
            if request.key
            else derive_key(request.scope, original)
        )
        record = {
            "action": {
                "domain": action.domain,
                "service": action.service,
                "entity_id": entity_id,
                "data": action.data,
            },
            "requested": original.describe(),
            "source": request.source,
            "conversation_id": request.conversation_id,
            "tool": request.tool,
            "reason": request.reason,
            "path": request.path,
            "scope": request.scope,
        }
        now = self.clock()
        try:
            # What the ledger says about earlier turns is read before the key is
            # claimed: a ledger failing here leaves nothing claimed.
            confirmed = request.confirmed_elsewhere or (
                request.confirmed and await self._confirmation_pending(request, action)
            )
            repeated = (
                kind is ActionKind.ONE_SHOT
                and not (confirmed or request.repeatable)
                and await self._recently_executed(request)
            )
            claim = await self._db(
                self.ledger.claim,
                key,
                self.home.new_action_id(),
                original.signature,
                record,
                kind.value,
                now,
            )
        except LedgerError as err:
            self.error = str(err)
            _LOGGER.error("Refusing to act, the action ledger failed: %s", err)
            return self._unrecorded(
                request,
                ActionStatus.REJECTED,
                "the action ledger is unavailable; not acting",
            )
        if not claim.claimed:
            return self._not_claimed(claim.reason, claim.record, request, action)

        def outcome_of(status: ActionStatus, message: str) -> ActionOutcome:
            return ActionOutcome.of_request(
                request,
                key,
                claim.record.action_id,
                status,
                message,
                action=action,
                kind=kind,
                created_at=now,
            )

        try:
            status, message = await self._run(
                request,
                action,
                kind,
                state,
                claim.record.action_id,
                confirmed,
                repeated,
            )
        except asyncio.CancelledError:
            # The turn was cancelled: the key must not stay in progress.
            if claim.record.action_id in self._still_running:
                # Its call goes on; recorded when it ends.
                self._settle_later(key, outcome_of(ActionStatus.RUNNING, ""))
            else:
                with contextlib.suppress(LedgerError):
                    await self._finish(
                        outcome_of(
                            ActionStatus.INDETERMINATE, "the request was cancelled"
                        )
                    )
            raise
        except Exception as err:
            # A bug must not leave the key in progress until a restart.
            _LOGGER.exception("Action %s failed unexpectedly", key)
            status, message = (
                ActionStatus.INDETERMINATE,
                f"interrupted by an internal error: {err}",
            )
        outcome = outcome_of(status, message)
        if status is ActionStatus.RUNNING:  # the key stays claimed until the call ends
            self._settle_later(key, outcome)
            return outcome
        try:
            await self._finish(outcome)
        except LedgerError as err:
            self.error = str(err)
            _LOGGER.error(
                "Action %s done but its outcome could not be recorded: %s", key, err
            )
        return outcome

    def _not_claimed(
        self,
        reason: str,
        record: LedgerRecord,
        request: ActionRequest,
        action: ServiceAction,
    ) -> ActionOutcome:
        recorded = ActionOutcome.from_record(record)
        if reason == "conflict":
            message = "this idempotency key was already used for a different request"
            status = ActionStatus.REJECTED
        elif reason == "busy":
            message = "the same action is still in progress"
            status = ActionStatus.REJECTED
        else:
            message = f"already handled: {recorded.status.value}" + (
                f" ({recorded.message})" if recorded.message else ""
            )
            status = ActionStatus.DEDUPLICATED
        return ActionOutcome.of_request(
            request,
            record.key,
            record.action_id,
            status,
            message,
            action=action,
            kind=recorded.kind,
            created_at=record.created_at,
        )

    async def _confirmation_pending(
        self, request: ActionRequest, action: ServiceAction
    ) -> bool:
        """Return whether the turn this request answers asked about this very action."""
        if request.confirms_scope is None:
            return False
        since = self.clock() - CONFIRMATION_WINDOW_S
        return any(
            record.status == ActionStatus.NEEDS_CONFIRMATION
            and record.request_hash == request.action.signature
            and record.request.get("scope") == request.confirms_scope
            for record in await self._db(self.ledger.recent, 200, since)
        )

    async def _recently_executed(self, request: ActionRequest) -> bool:
        """Return whether the same one-shot action ran in another scope just now.

        Just now: within the repeat window; a call that still runs counts too.
        """
        since = self.clock() - self.repeat_window_s
        return any(
            record.status in (ActionStatus.EXECUTED, IN_PROGRESS)
            and record.request_hash == request.action.signature
            for record in await self._db(self.ledger.recent, 200, since)
            if record.request.get("scope") != request.scope
        )

    async def _run(
        self,
        request: ActionRequest,
        action: ServiceAction,
        kind: ActionKind,
        state: EntityState,
        action_id: str,
        confirmed: bool,
        repeated: bool,
    ) -> tuple[ActionStatus, str]:
        policy = request.sensitive_policy or self.sensitive_policy
        if is_sensitive(action, state):
            if policy is SensitivePolicy.DENY:
                return (
                    ActionStatus.REJECTED,
                    "not allowed: sensitive actions are disabled for this agent",
                )
            if policy is SensitivePolicy.CONFIRM and not confirmed:
                return (
                    ActionStatus.NEEDS_CONFIRMATION,
                    "needs your confirmation: ask the user, "
                    "then call again with confirm",
                )
        if kind is ActionKind.DESIRED_STATE and expected_state_holds(action, state):
            return ActionStatus.NO_OP, f"already {state.state}"
        if repeated:
            return (
                ActionStatus.NEEDS_CONFIRMATION,
                "this was just done (or still runs); "
                "needs your confirmation to do it again",
            )
        if kind is ActionKind.ONE_SHOT:
            return await self._run_one_shot(request, action, action_id)
        try:
            async with asyncio.timeout(self.call_timeout_s):
                await self.home.async_call(
                    action, action_id, request.parent_context_id, request.user_id
                )
        except TimeoutError:
            if await self.home.wait_for_state(verifiable_part(action)[0], 0):
                return ActionStatus.EXECUTED, "done (the service answered late)"
            return ActionStatus.INDETERMINATE, "the service did not answer in time"
        # Any service error is an outcome for the model (integrations raise anything).
        except Exception as err:  # noqa: BLE001
            return ActionStatus.FAILED, f"failed: {err}"
        target, skipped = verifiable_part(action)
        unchecked = f" ({', '.join(skipped)} not checkable)" if skipped else ""
        if expected_state_holds(target, EntityState("unknown")) is None:
            return ActionStatus.EXECUTED, f"done{unchecked}"
        if await self.home.wait_for_state(target, self.verify_timeout_s):
            return ActionStatus.EXECUTED, f"done{unchecked}"
        return ActionStatus.UNCONFIRMED, "called, but the new state was not seen yet"

    async def _run_one_shot(
        self, request: ActionRequest, action: ServiceAction, action_id: str
    ) -> tuple[ActionStatus, str]:
        """Start the call and wait a while.

        A long one (a script with a delay) is never cancelled: it is reported running,
        its key stays claimed, and its outcome is recorded when it ends.
        """
        call = self.spawn(
            request.effect()
            if request.effect is not None
            else self.home.async_call(
                action, action_id, request.parent_context_id, request.user_id
            ),
            f"gemma_edge action {action_id}",
        )
        try:
            done, _ = await asyncio.wait({call}, timeout=self.call_timeout_s)
        except asyncio.CancelledError:
            # The call is not cancelled with the turn.
            self._still_running[action_id] = call
            raise
        if not done:
            self._still_running[action_id] = call
            return (
                ActionStatus.RUNNING,
                "started and still running; it will not be started again",
            )
        return _one_shot_result(call)

    def _settle_later(self, key: str, outcome: ActionOutcome) -> None:
        """Record and announce a still-running one-shot call's outcome when it ends."""
        call = self._still_running.pop(outcome.action_id)

        async def settle() -> None:
            await asyncio.wait({call})  # never cancels the call itself
            status, message = _one_shot_result(call)
            settled = replace(outcome, status=status, message=message)
            try:
                await self._finish(settled)
            except LedgerError as err:
                _LOGGER.error(
                    "Action %s ended (%s) but its outcome could not be recorded: %s",
                    key,
                    status,
                    err,
                )
                return
            self._emit(settled)

        task = self.spawn(settle(), f"gemma_edge settle {key}")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


def _one_shot_result(call: asyncio.Future[Any]) -> tuple[ActionStatus, str]:
    if call.cancelled():
        return ActionStatus.INDETERMINATE, "the call was cancelled"
    if (err := call.exception()) is not None:
        return ActionStatus.FAILED, f"failed: {err}"
    return ActionStatus.EXECUTED, _effect_message(call.result())


# A tool's result data (a script's response) follows this in an outcome's message.
RESULT_PREFIX = "done; result: "
MAX_RESULT_CHARS = 600


def _effect_message(result: Any) -> str:
    """Return a tool's own result, compacted for the ledger and the model.

    Home Assistant's sentence for an intent, the response data (compact JSON, cut at
    MAX_RESULT_CHARS) for a script.
    """
    if not isinstance(result, dict):
        return "done"
    if isinstance(result.get("speech"), dict) and (
        speech := result["speech"].get("plain", {}).get("speech")
    ):
        return f"done: {speech}"
    if "response_type" in result:  # an intent's response without a sentence
        return "done"
    data = (
        result.get("result")
        if "result" in result
        else {k: v for k, v in result.items() if k != "success"}
    )
    if data not in (None, {}, [], ""):
        text = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
        return RESULT_PREFIX + (
            text if len(text) <= MAX_RESULT_CHARS else f"{text[:MAX_RESULT_CHARS]}..."
        )
    return "done"
