"""The executor and ledger with real SQLite and a simulated home: every status, crash recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path
import sqlite3

import pytest

from custom_components.gemma_edge.actions.executor import ActionExecutor
from custom_components.gemma_edge.actions.outcomes import ActionOutcome, ActionRequest
from custom_components.gemma_edge.actions.ledger import ActionLedger, LedgerError
from custom_components.gemma_edge.actions.records import ActionStatus, EntityState, ServiceAction
from custom_components.gemma_edge.actions.normalize import NormalizeError, normalize
from custom_components.gemma_edge.actions.policy import SensitivePolicy

from .home_sim import SimHome

LIGHT, LOCK, BUTTON, SPEAKER = "light.kitchen", "lock.front_door", "button.doorbell", "media_player.radio"


def make_home() -> SimHome:
    states = {
        LIGHT: EntityState("off", {"brightness": None}),
        LOCK: EntityState("unlocked"),
        BUTTON: EntityState("unknown"),
        SPEAKER: EntityState("playing", {"volume_level": 0.5}),
        "light.hidden": EntityState("off"),
    }
    return SimHome(states=states, exposed={LIGHT, LOCK, BUTTON, SPEAKER})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rig(tmp_path: Path):  # noqa: ANN201
    home, clock, events = make_home(), Clock(), []
    executor = ActionExecutor(
        ActionLedger(tmp_path / "ledger.db"), home, clock=clock, call_timeout_s=0.2, verify_timeout_s=0.1,
        on_outcome=events.append,
    )  # fmt: skip
    await executor.async_start()
    yield executor, home, clock, events
    await executor.async_stop()


def request(action: ServiceAction, scope: str = "conversation:c1:turn1", **kwargs: object) -> ActionRequest:
    return ActionRequest(action=action, scope=scope, source="conversation", conversation_id="c1", **kwargs)  # type: ignore[arg-type]


async def cancel_while_hanging(executor: ActionExecutor, home: SimHome) -> list[asyncio.Task[ActionOutcome]]:
    """A doorbell press and a light's turn_on whose services never answer, cancelled mid-call."""
    home.hang.update({BUTTON, LIGHT})
    executor.call_timeout_s = 3600
    tasks = [
        asyncio.ensure_future(executor.async_execute(request(ServiceAction("button", "press", BUTTON)))),
        asyncio.ensure_future(executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))),
    ]
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    return tasks


async def test_toggle_becomes_absolute_and_repeats_are_deduplicated(rig) -> None:  # noqa: ANN001
    executor, home, _, events = rig
    toggle = ServiceAction("light", "toggle", LIGHT)
    first = await executor.async_execute(request(toggle))
    assert first.status is ActionStatus.EXECUTED
    assert first.action.service == "turn_on"
    # the model repeats the call in the same turn, and a satellite retries the turn: nothing acts again
    second = await executor.async_execute(request(toggle))
    assert second.status is ActionStatus.DEDUPLICATED and "executed" in second.message
    assert home.calls[("light", "turn_on", LIGHT)] == 1 and home.states[LIGHT].state == "on"
    assert [e.status for e in events] == [ActionStatus.EXECUTED, ActionStatus.DEDUPLICATED]


async def test_desired_state_already_holds_is_a_no_op(rig) -> None:  # noqa: ANN001
    executor, home, _, _ = rig
    home.states[LIGHT] = EntityState("on", {"brightness": 255})
    outcome = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))
    assert outcome.status is ActionStatus.NO_OP and outcome.message == "already on"
    assert not home.calls


async def test_relative_brightness_becomes_absolute(rig) -> None:  # noqa: ANN001
    executor, home, _, _ = rig
    home.states[LIGHT] = EntityState("on", {"brightness": 100})
    outcome = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT, {"brightness_step_pct": 20})))
    assert outcome.action.data == {"brightness": 151}
    assert outcome.status is ActionStatus.EXECUTED and home.states[LIGHT].attributes["brightness"] == 151


async def test_one_shot_runs_once_and_a_quick_repeat_needs_confirmation(rig) -> None:  # noqa: ANN001
    executor, home, clock, _ = rig
    press = ServiceAction("button", "press", BUTTON)
    assert (await executor.async_execute(request(press))).status is ActionStatus.EXECUTED
    # the same press asked again in a new turn, seconds later: ask first
    clock.now += 5
    again = await executor.async_execute(request(press, scope="conversation:c1:turn2"))
    assert again.status is ActionStatus.NEEDS_CONFIRMATION
    # the user confirms in the following turn
    clock.now += 5
    confirmed = await executor.async_execute(
        request(press, scope="conversation:c1:turn3", confirmed=True, confirms_scope="conversation:c1:turn2")
    )
    assert confirmed.status is ActionStatus.EXECUTED
    assert home.calls[("button", "press", BUTTON)] == 2
    # well after the window, a new press just runs
    clock.now += 600
    assert (await executor.async_execute(request(press, scope="conversation:c2:turn1"))).status is ActionStatus.EXECUTED


async def test_sensitive_actions_follow_the_policy(rig) -> None:  # noqa: ANN001
    executor, home, clock, _ = rig
    lock = ServiceAction("lock", "lock", LOCK)
    asked = await executor.async_execute(request(lock))
    assert asked.status is ActionStatus.NEEDS_CONFIRMATION and not home.calls
    # "confirm" in the same turn does not count: the user has not answered yet
    same_turn = await executor.async_execute(request(lock, confirmed=True))
    assert same_turn.status is ActionStatus.DEDUPLICATED and "needs_confirmation" in same_turn.message
    assert not home.calls
    clock.now += 10
    # a confirmation in a later turn than the next one does not count either
    later = await executor.async_execute(
        request(lock, scope="conversation:c1:turn3", confirmed=True, confirms_scope="conversation:c1:turn2")
    )
    assert later.status is ActionStatus.NEEDS_CONFIRMATION and not home.calls
    done = await executor.async_execute(
        request(lock, scope="conversation:c1:turn4", confirmed=True, confirms_scope="conversation:c1:turn3")
    )
    assert done.status in (ActionStatus.EXECUTED, ActionStatus.NO_OP)
    assert home.states[LOCK].state == "locked" and home.calls[("lock", "lock", LOCK)] == 1
    executor.sensitive_policy = SensitivePolicy.DENY
    denied = await executor.async_execute(request(ServiceAction("lock", "unlock", LOCK), scope="s3", confirmed=True))
    assert denied.status is ActionStatus.REJECTED and "not allowed" in denied.message


async def test_bad_input_gives_clear_outcomes(rig) -> None:  # noqa: ANN001
    executor, home, _, _ = rig
    unknown = await executor.async_execute(request(ServiceAction("light", "turn_on", "light.nope")))
    assert unknown.status is ActionStatus.REJECTED and "unknown or not exposed" in unknown.message
    hidden = await executor.async_execute(request(ServiceAction("light", "turn_on", "light.hidden")))
    assert hidden.status is ActionStatus.REJECTED
    home.broken.add(LIGHT)
    failed = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))
    assert failed.status is ActionStatus.FAILED and "device offline" in failed.message
    home.broken.clear()
    home.hang.add(SPEAKER)
    hung = await executor.async_execute(request(ServiceAction("media_player", "media_next_track", SPEAKER)))
    assert hung.status is ActionStatus.RUNNING  # a one-shot call is never cut off
    lazy = ServiceAction("light", "turn_on", LIGHT)
    home.lazy.add(LIGHT)
    unconfirmed = await executor.async_execute(request(lazy, scope="other"))
    assert unconfirmed.status is ActionStatus.UNCONFIRMED
    home.states[LIGHT] = EntityState("unavailable")
    with pytest.raises(NormalizeError):
        normalize(ServiceAction("light", "toggle", LIGHT), home.states[LIGHT])
    toggled = await executor.async_execute(request(ServiceAction("light", "toggle", LIGHT), scope="x"))
    assert toggled.status is ActionStatus.REJECTED and "no known state" in toggled.message


async def test_same_key_different_request_is_rejected(rig) -> None:  # noqa: ANN001
    executor, _, _, _ = rig
    first = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT), key="cmd-1"))
    assert first.status is ActionStatus.EXECUTED
    other = await executor.async_execute(request(ServiceAction("light", "turn_off", LIGHT), key="cmd-1"))
    assert other.status is ActionStatus.REJECTED and "different request" in other.message


async def test_crash_between_claim_and_outcome_is_settled_on_restart(tmp_path: Path) -> None:
    """Kill the executor mid-action (claimed, never finished), then start again."""
    home, clock = make_home(), Clock()
    path = tmp_path / "ledger.db"
    executor = ActionExecutor(ActionLedger(path), home, clock=clock, call_timeout_s=0.2, verify_timeout_s=0.1)
    await executor.async_start()
    await cancel_while_hanging(executor, home)  # the process "dies" while the calls hang
    await executor.async_stop()
    assert home.calls[("button", "press", BUTTON)] == 1
    home.apply(ServiceAction("light", "turn_on", LIGHT))  # the light did switch on before the crash
    events: list[ActionOutcome] = []
    restarted = ActionExecutor(ActionLedger(path), home, clock=clock, on_outcome=events.append)
    recovered = await restarted.async_start()
    assert {(o.action.entity_id, o.status) for o in recovered} == {
        (BUTTON, ActionStatus.INDETERMINATE),
        (LIGHT, ActionStatus.EXECUTED),
    }
    assert len(events) == 2
    # the same requests again: recorded outcomes, no second press
    replay = await restarted.async_execute(request(ServiceAction("button", "press", BUTTON)))
    assert replay.status is ActionStatus.DEDUPLICATED and "indeterminate" in replay.message
    assert home.calls[("button", "press", BUTTON)] == 1
    await restarted.async_stop()


async def test_retention_prunes_old_keys(rig, tmp_path: Path) -> None:  # noqa: ANN001
    executor, _, clock, _ = rig
    await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))
    await executor.async_stop()
    clock.now += 73 * 3600
    await executor.async_start()
    assert await executor._db(executor.ledger.count) == 0  # noqa: SLF001


async def test_corrupt_ledger_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database" * 100)
    executor = ActionExecutor(ActionLedger(path), make_home())
    with pytest.raises(LedgerError, match="cannot be used|corrupt"):
        await executor.async_start()
    outcome = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))
    assert outcome.status is ActionStatus.REJECTED and "ledger is unavailable" in outcome.message
    await executor.async_stop()


def test_ledger_is_wal_with_full_sync(tmp_path: Path) -> None:
    ledger = ActionLedger(tmp_path / "l.db")
    ledger.open()
    db = sqlite3.connect(tmp_path / "l.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()


async def test_a_ledger_failing_mid_turn_leaves_nothing_claimed(rig) -> None:  # noqa: ANN001
    """The ledger holds a damaged record (written by hand into the real SQLite file), read while a
    turn checks an earlier confirmation: the action is refused with a clear outcome and no key is
    left in progress. It used to be claimed first, then a raw JSON error escaped the executor and
    the key stayed in progress until a restart settled it as indeterminate."""
    executor, home, clock, _ = rig
    connection = executor.ledger._conn  # noqa: SLF001
    await executor._db(lambda: connection().execute(  # noqa: SLF001
        "INSERT INTO actions (key, action_id, request_hash, request, kind, status, created_at, updated_at)"
        " VALUES ('damaged', 'x', 'x', 'not json', 'one_shot', 'executed', ?, ?)", (clock.now, clock.now),
    ))  # fmt: skip
    outcome = await executor.async_execute(request(ServiceAction("button", "press", BUTTON), confirmed=True, confirms_scope="earlier"))
    assert outcome.status is ActionStatus.REJECTED and "ledger is unavailable" in outcome.message
    assert await executor.async_recent() == []  # dashboards show nothing rather than fail
    await executor._db(lambda: connection().execute("DELETE FROM actions WHERE key = 'damaged'"))  # noqa: SLF001
    assert await executor._db(executor.ledger.unfinished) == []  # noqa: SLF001
    assert home.calls[("button", "press", BUTTON)] == 0


async def test_a_cancelled_turn_leaves_no_key_in_progress(rig) -> None:  # noqa: ANN001
    """A turn cancelled while its call hangs (the user left, the pipeline timed out): the key is
    settled at once, or, for a one-shot call that goes on, when that call ends."""
    executor, home, _, _ = rig
    await asyncio.gather(*await cancel_while_hanging(executor, home), return_exceptions=True)
    unfinished = await executor._db(executor.ledger.unfinished)  # noqa: SLF001
    assert [r.request["action"]["entity_id"] for r in unfinished] == [BUTTON]  # its press is still running
    assert executor._still_running == {} and len(executor._settling) == 1  # noqa: SLF001 - recorded when it ends
