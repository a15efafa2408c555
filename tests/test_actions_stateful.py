"""Stateful Hypothesis test of executor + ledger: repeats, key reuse, concurrency, crashes, clock.

Invariants: no action id is ever called twice (one-shot actions at most once per key, nothing
retried automatically); desired-state outcomes leave the entity in the requested state; asking
again in a new turn after someone else changed the device reaches the asked state; a sensitive
action runs only in the turn right after its question, each question used at most once; every
claimed key survives restarts until its retention ends. GEMMA_EDGE_STATEFUL_EXAMPLES sets the
number of generated schedules (CI default 60; the benchmark runs 10,000).
"""

from __future__ import annotations

import asyncio
from collections import Counter
import os
from pathlib import Path
import tempfile

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from custom_components.gemma_edge.actions.executor import ActionExecutor
from custom_components.gemma_edge.actions.outcomes import ActionOutcome, ActionRequest
from custom_components.gemma_edge.actions.ledger import RETENTION_S, ActionLedger
from custom_components.gemma_edge.actions.records import ActionKind, ActionStatus, EntityState, ServiceAction
from custom_components.gemma_edge.actions.policy import expected_state_holds

from .home_sim import SimHome

EXAMPLES = int(os.environ.get("GEMMA_EDGE_STATEFUL_EXAMPLES", "60"))
ACTIONS = [
    ServiceAction("light", "toggle", "light.a"),
    ServiceAction("light", "turn_on", "light.a"),
    ServiceAction("light", "turn_off", "light.a"),
    ServiceAction("light", "turn_on", "light.b", {"brightness_step": 60}),
    ServiceAction("button", "press", "button.bell"),
    ServiceAction("media_player", "media_next_track", "media_player.radio"),
    ServiceAction("media_player", "volume_up", "media_player.radio"),
    ServiceAction("lock", "lock", "lock.door"),
]
SCOPES = ["conversation:c1:t1", "conversation:c1:t2", "conversation:c2:t1", "cloud"]


class Clock:
    now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


class ExecutorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "ledger.db"
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.home = SimHome(
            states={
                "light.a": EntityState("off"), "light.b": EntityState("on", {"brightness": 100}),
                "button.bell": EntityState("unknown"), "media_player.radio": EntityState("playing", {"volume_level": 0.3}),
                "lock.door": EntityState("unlocked"),
            },
            exposed={"light.a", "light.b", "button.bell", "media_player.radio", "lock.door"},
        )  # fmt: skip
        self.called_ids: Counter[str] = Counter()
        original_call = self.home.async_call

        async def counting_call(action: ServiceAction, action_id: str, parent: str | None, user_id: str | None) -> None:
            self.called_ids[action_id] += 1
            await original_call(action, action_id, parent, user_id)

        self.home.async_call = counting_call  # type: ignore[method-assign]
        self.claimed: dict[str, float] = {}  # key -> created_at
        self.turn_count = 0
        # the lock conversation: its last turn's scope, and the question that turn asked
        self.lock_turn: str | None = None
        self.lock_question: tuple[str, str] | None = None
        self.executor = self._start()

    def _start(self) -> ActionExecutor:
        executor = ActionExecutor(
            ActionLedger(self.path), self.home, clock=self.clock, call_timeout_s=0.05, verify_timeout_s=0.0
        )
        self.loop.run_until_complete(executor.async_start())
        return executor

    def _record(self, outcome: ActionOutcome) -> None:
        if outcome.action_id:
            self.claimed.setdefault(outcome.key, outcome.created_at)
        if outcome.kind is ActionKind.DESIRED_STATE and outcome.status in (ActionStatus.EXECUTED, ActionStatus.NO_OP):
            state = self.home.states[outcome.action.entity_id]
            assert expected_state_holds(outcome.action, state), (outcome, state)

    @rule(action=st.sampled_from(ACTIONS), scope=st.sampled_from(SCOPES), confirmed=st.booleans())
    def execute(self, action: ServiceAction, scope: str, confirmed: bool) -> None:
        conversation = scope.split(":")[1] if scope.startswith("conversation:") else None
        request = ActionRequest(action, scope, "conversation", confirmed=confirmed, conversation_id=conversation)
        self._record(self.loop.run_until_complete(self.executor.async_execute(request)))

    @rule(action=st.sampled_from(ACTIONS), key=st.sampled_from(["cmd-1", "cmd-2"]))
    def execute_with_key(self, action: ServiceAction, key: str) -> None:
        outcome = self.loop.run_until_complete(self.executor.async_execute(ActionRequest(action, "cloud", "cloud", key=key)))
        self._record(outcome)

    @rule(action=st.sampled_from(ACTIONS), scope=st.sampled_from(SCOPES))
    def concurrent_same_request(self, action: ServiceAction, scope: str) -> None:
        request = ActionRequest(action, scope, "conversation")

        async def both() -> list[ActionOutcome]:
            return list(await asyncio.gather(self.executor.async_execute(request), self.executor.async_execute(request)))

        outcomes = self.loop.run_until_complete(both())
        for outcome in outcomes:
            self._record(outcome)
        assert sum(o.status not in (ActionStatus.DEDUPLICATED, ActionStatus.REJECTED) for o in outcomes) <= 1

    @rule(action=st.sampled_from(ACTIONS), scope=st.sampled_from(SCOPES))
    def crash_mid_action(self, action: ServiceAction, scope: str) -> None:
        """The service hangs, the process dies (task cancelled, ledger left in progress), restart."""
        self.home.hang.add(action.entity_id)
        self.executor.call_timeout_s = 3600
        task = self.loop.create_task(self.executor.async_execute(ActionRequest(action, scope, "conversation")))
        self.loop.run_until_complete(asyncio.sleep(0.01))
        task.cancel()

        async def die() -> None:  # everything the process was running ends with it
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for other in others:
                other.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.loop.run_until_complete(die())
        self.loop.run_until_complete(self.executor.async_stop())
        self.home.hang.clear()
        self.restart()

    @rule(service=st.sampled_from(["turn_on", "turn_off"]))
    def ask_again_after_an_outside_change(self, service: str) -> None:
        """Asked, changed back by someone else, asked again in a new turn: the asked state."""
        action = ServiceAction("light", service, "light.a")
        self._record(self.loop.run_until_complete(self.executor.async_execute(ActionRequest(action, self._new_turn("c3"), "conversation"))))
        self.home.states["light.a"] = EntityState("off" if service == "turn_on" else "on")
        again = self.loop.run_until_complete(self.executor.async_execute(ActionRequest(action, self._new_turn("c3"), "conversation")))
        self._record(again)
        assert again.status is ActionStatus.EXECUTED and expected_state_holds(action, self.home.states["light.a"]), again

    @rule(service=st.sampled_from(["lock", "unlock"]), confirmed=st.booleans(), outside_change=st.booleans())
    def lock_conversation_turn(self, service: str, confirmed: bool, outside_change: bool) -> None:
        """One turn of a conversation about the (sensitive) lock: it acts only when the turn right
        before asked about this very action, and each question is used at most once."""
        if outside_change:
            self.home.states["lock.door"] = EntityState("unlocked" if self.home.states["lock.door"].state == "locked" else "locked")
        action, previous, scope = ServiceAction("lock", service, "lock.door"), self.lock_turn, self._new_turn("lockconv")
        outcome = self.loop.run_until_complete(self.executor.async_execute(ActionRequest(
            action, scope, "conversation", confirmed=confirmed, confirms_scope=previous, conversation_id="lockconv"
        )))  # fmt: skip
        self._record(outcome)
        if outcome.status in (ActionStatus.EXECUTED, ActionStatus.UNCONFIRMED):
            assert confirmed and self.lock_question == (previous, service), (outcome, self.lock_question)
        self.lock_turn = scope
        self.lock_question = (scope, service) if outcome.status is ActionStatus.NEEDS_CONFIRMATION else None

    def _new_turn(self, conversation: str) -> str:
        self.turn_count += 1
        return f"conversation:{conversation}:turn{self.turn_count}"

    @rule()
    def restart(self) -> None:
        self.loop.run_until_complete(self.executor.async_stop())
        self.executor = self._start()
        ledger = self.executor.ledger
        for key, created in self.claimed.items():
            if created >= self.clock.now - RETENTION_S:
                record = self.loop.run_until_complete(self.executor._db(ledger.get, key))  # noqa: SLF001
                assert record is not None, f"key {key} lost"
                assert record.status != "in_progress"

    @rule(seconds=st.sampled_from([1, 30, 120, 3600, RETENTION_S + 60]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def nothing_called_twice(self) -> None:
        assert all(count == 1 for count in self.called_ids.values()), self.called_ids

    def teardown(self) -> None:
        self.loop.run_until_complete(self.executor.async_stop())
        self.loop.close()
        self.dir.cleanup()


ExecutorMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=25, deadline=None)
test_executor_state_machine = ExecutorMachine.TestCase
