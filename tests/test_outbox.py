"""The cloud outbox in the ledger's SQLite file (plain Python, real SQLite, no Home Assistant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custom_components.gemma_edge.actions.ledger import ActionLedger, LedgerError
from custom_components.gemma_edge.sync.outbox import (
    ACTION_PERFORMED,
    CONVERSATION_TURN,
    DEAD,
    GAP,
    PENDING,
    SENT,
    STATE_CHANGED,
    Outbox,
    OutboxEvent,
    new_ulid,
)

REQUEST = {"action": {"domain": "light", "service": "turn_on", "entity_id": "light.a", "data": {}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path) -> ActionLedger:
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    yield ledger
    ledger.close()


def make_outbox(ledger: ActionLedger, clock: Clock, **bounds: int) -> Outbox:
    outbox = Outbox(ledger, clock=clock, **bounds)
    outbox.open()
    return outbox


def event(event_type: str, subject: str, clock: Clock, **data: object) -> OutboxEvent:
    clock.now += 0.001
    return OutboxEvent.new(event_type, subject, dict(data), clock.now)


def rows(ledger: ActionLedger) -> list[tuple[int, str, str, str]]:
    return ledger.connection().execute("SELECT seq, type, subject, status FROM outbox ORDER BY seq").fetchall()


def test_an_outcome_and_its_event_are_committed_together_or_not_at_all(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    ledger.claim("k1", "a1", "h", REQUEST, "desired_state", clock.now)
    ledger.finish("k1", "executed", {"message": "done"}, clock.now, also=outbox.writer([event(ACTION_PERFORMED, "light.a", clock)]))
    assert ledger.get("k1").status == "executed" and [r[1] for r in rows(ledger)] == [ACTION_PERFORMED]
    # the event's write fails (a full disk, here a trigger): the outcome is not recorded either
    ledger.connection().execute("CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    ledger.claim("k2", "a2", "h", REQUEST, "desired_state", clock.now)
    with pytest.raises(LedgerError, match="disk full"):
        ledger.finish("k2", "executed", {"message": "done"}, clock.now, also=outbox.writer([event(ACTION_PERFORMED, "light.a", clock)]))
    assert ledger.get("k2").status == "in_progress" and len(rows(ledger)) == 1
    assert not ledger.connection().in_transaction


def test_events_keep_their_order_and_sequence_numbers_are_never_reused(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    outbox.append([event(STATE_CHANGED, f"light.{i}", clock, state="on") for i in range(3)])
    first = outbox.next_batch(clock.now)
    assert [e.seq for e in first] == sorted(e.seq for e in first) and len({e.event.id for e in first}) == 3
    outbox.acknowledge([e.seq for e in first], clock.now)
    clock.now += 8 * 24 * 3600
    assert outbox.prune(clock.now) == 3 and rows(ledger) == []
    outbox.append([event(STATE_CHANGED, "light.9", clock, state="off")])
    assert outbox.next_batch(clock.now)[0].seq > first[-1].seq  # AUTOINCREMENT: a new number


def test_batches_are_bounded_and_an_event_waiting_to_retry_is_not_overtaken(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    outbox.append([event(STATE_CHANGED, f"sensor.{i}", clock, state=str(i)) for i in range(250)])
    batch = outbox.next_batch(clock.now)
    assert len(batch) == 100
    small = outbox.next_batch(clock.now, max_bytes=1000)
    assert 1 <= len(small) < 10 and sum(e.size for e in small) <= 1000
    outbox.retry_later([batch[0].seq], clock.now + 5)
    assert outbox.next_batch(clock.now) == []  # the first is not due: nothing after it goes first
    clock.now += 5
    again = outbox.next_batch(clock.now)
    assert again[0].seq == batch[0].seq and again[0].attempts == 1


def test_delivered_and_dead_events_are_kept_a_week(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    outbox.append([event(ACTION_PERFORMED, "light.a", clock), event(ACTION_PERFORMED, "light.b", clock), event(ACTION_PERFORMED, "light.c", clock)])
    a, b, _c = outbox.next_batch(clock.now)
    outbox.acknowledge([a.seq], clock.now)
    outbox.dead_letter([b.seq], clock.now)
    stats = outbox.stats()
    assert (stats.pending, stats.sent, stats.dead, stats.last_sent) == (1, 1, 1, clock.now)
    assert [r[3] for r in rows(ledger)] == [SENT, DEAD, PENDING]
    clock.now += 6 * 24 * 3600
    assert outbox.prune(clock.now) == 0
    clock.now += 2 * 24 * 3600
    assert outbox.prune(clock.now) == 2 and [r[3] for r in rows(ledger)] == [PENDING]


def test_a_full_outbox_compacts_state_drops_turns_and_says_so(ledger: ActionLedger, clock: Clock) -> None:
    """Bounded at 30 rows: 20 action events, state changes of 4 entities and turns. Action events
    all stay; state changes compact to the latest per entity; turns go oldest first; one gap event
    waiting to be sent counts what went."""
    outbox = make_outbox(ledger, clock, max_rows=30)
    for index in range(150):
        if index % 15 == 0 or index % 15 == 7:
            outbox.append([event(ACTION_PERFORMED, f"light.{index}", clock, index=index)])
        elif index % 5 == 0:
            outbox.append([event(CONVERSATION_TURN, "conversation", clock, index=index)])
        else:
            outbox.append([event(STATE_CHANGED, f"sensor.{index % 5}", clock, index=index)])
    stored = rows(ledger)
    assert len(stored) <= 30 + 1  # the bound, and the gap event that reports it
    kinds = [r[1] for r in stored]
    assert kinds.count(ACTION_PERFORMED) == 20  # never dropped
    latest = {f"sensor.{index % 5}": index for index in range(150) if index % 15 not in (0, 7) and index % 5}
    kept = {
        (subject, json.loads(data)["index"])
        for subject, data in ledger.connection().execute("SELECT subject, data FROM outbox WHERE type = ?", (STATE_CHANGED,))
    }
    assert set(latest.items()) <= kept  # each entity's latest state is never lost
    gaps = [e.event.data for e in outbox.next_batch(clock.now, max_events=100, max_bytes=1 << 30) if e.event.type == GAP]
    assert len(gaps) == 1 and sum(g["compacted_state_changes"] for g in gaps) > 0
    assert sum(g["dropped_conversation_turns"] for g in gaps) > 0
    delivered = len(stored) - len(gaps)
    lost = sum(g["compacted_state_changes"] + g["dropped_conversation_turns"] for g in gaps)
    assert delivered + lost == 150  # every event is either there or counted in a gap


def test_action_events_are_never_dropped_even_past_the_bound(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock, max_rows=10)
    outbox.append([event(ACTION_PERFORMED, f"light.{i}", clock) for i in range(25)])
    assert len(rows(ledger)) == 25 and all(r[1] == ACTION_PERFORMED for r in rows(ledger))


def test_delivered_rows_make_room_before_anything_pending_goes(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock, max_rows=10)
    outbox.append([event(STATE_CHANGED, f"sensor.{i}", clock) for i in range(10)])
    outbox.acknowledge([e.seq for e in outbox.next_batch(clock.now)], clock.now)
    outbox.append([event(STATE_CHANGED, "sensor.new", clock)])
    assert [r[3] for r in rows(ledger)].count(SENT) == 9 and [r[1] for r in rows(ledger)].count(GAP) == 0


def test_the_outbox_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    make_outbox(ledger, clock).append([event(ACTION_PERFORMED, "light.a", clock, status="executed")])
    ledger.close()
    reopened = ActionLedger(tmp_path / "ledger.db")
    reopened.open()
    batch = make_outbox(reopened, clock).next_batch(clock.now)
    assert [(e.event.type, e.event.data, e.status) for e in batch] == [(ACTION_PERFORMED, {"status": "executed"}, PENDING)]
    reopened.close()


def test_a_damaged_event_is_a_clear_error(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    outbox.append([event(ACTION_PERFORMED, "light.a", clock)])
    ledger.connection().execute("UPDATE outbox SET data = '{not json'")
    with pytest.raises(LedgerError, match="damaged"):
        outbox.next_batch(clock.now)


def test_ulids_sort_by_time_and_are_unique() -> None:
    ids = [new_ulid(1_800_000_000.0 + i / 1000) for i in range(1000)]
    assert all(len(i) == 26 for i in ids) and len(set(ids)) == 1000
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)
    assert new_ulid(0.0).startswith("0000000000")


def test_an_event_id_is_stored_once(ledger: ActionLedger, clock: Clock) -> None:
    outbox = make_outbox(ledger, clock)
    once = event(ACTION_PERFORMED, "light.a", clock)
    outbox.append([once])
    with pytest.raises(LedgerError, match="UNIQUE"):
        outbox.append([once])
    assert len(rows(ledger)) == 1


async def test_the_executor_reports_each_recorded_outcome_with_it(tmp_path: Path, clock: Clock) -> None:
    """Executed and indeterminate outcomes each get one event in the outcome's transaction; a retry
    (deduplicated) and a refusal before anything was claimed (unexposed) get none; the user's words
    stay out unless kept."""
    from custom_components.gemma_edge.actions.executor import ActionExecutor  # noqa: PLC0415
    from custom_components.gemma_edge.actions.records import ActionStatus, ServiceAction  # noqa: PLC0415
    from custom_components.gemma_edge.sync.outbox import ACTION_INDETERMINATE  # noqa: PLC0415
    from custom_components.gemma_edge.sync.reporter import CloudReporter  # noqa: PLC0415

    from .test_actions import BUTTON, LIGHT, cancel_while_hanging, make_home, request  # noqa: PLC0415

    path, home = tmp_path / "ledger.db", make_home()

    def executor_with_outbox() -> tuple[ActionExecutor, Outbox]:
        ledger = ActionLedger(path)
        outbox = Outbox(ledger, clock=clock)
        reporter = CloudReporter(outbox, clock=clock)
        return ActionExecutor(ledger, home, clock=clock, reporter=reporter, call_timeout_s=0.2, verify_timeout_s=0.1), outbox

    executor, outbox = executor_with_outbox()
    await executor.async_start()
    done = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT), reason="light please"))
    retried = await executor.async_execute(request(ServiceAction("light", "turn_on", LIGHT)))
    refused = await executor.async_execute(request(ServiceAction("light", "turn_on", "light.hidden")))
    assert (done.status, retried.status, refused.status) == (ActionStatus.EXECUTED, ActionStatus.DEDUPLICATED, ActionStatus.REJECTED)
    batch = await executor.async_on_ledger(outbox.next_batch, clock.now)
    assert [(e.event.type, e.event.subject, e.event.data["key"], e.event.data["status"]) for e in batch] == [
        (ACTION_PERFORMED, LIGHT, done.key, "executed")
    ]
    assert batch[0].event.data["reason"] is None  # the words only when the user keeps them
    # a crash while a doorbell press hangs: settled as indeterminate at the next start, reported
    await cancel_while_hanging(executor, home)
    await executor.async_stop()
    restarted, outbox = executor_with_outbox()
    await restarted.async_start()
    batch = await restarted.async_on_ledger(outbox.next_batch, clock.now)
    reported = {(e.event.type, e.event.subject) for e in batch}
    assert (ACTION_INDETERMINATE, BUTTON) in reported and len(batch) == len({e.event.data["key"] for e in batch})
    await restarted.async_stop()


def test_an_event_s_data_is_capped_at_64_kib(ledger: ActionLedger, clock: Clock) -> None:
    """A state with a huge attribute keeps its small fields and names what was cut; a batch
    still fits (256 KiB holds several such events)."""
    from custom_components.gemma_edge.sync.outbox import MAX_EVENT_BYTES  # noqa: PLC0415

    outbox = make_outbox(ledger, clock)
    huge = {"entity_id": "sensor.feed", "state": "ok", "attributes": {"items": ["x" * 100] * 2000}, "last_changed": "now"}
    outbox.append([OutboxEvent.new(STATE_CHANGED, "sensor.feed", huge, clock()) for _ in range(5)])
    batch = outbox.next_batch(clock())
    assert len(batch) == 5
    for stored in batch:
        assert stored.event.data == {"entity_id": "sensor.feed", "state": "ok", "last_changed": "now", "truncated": ["attributes"]}
        assert stored.size < MAX_EVENT_BYTES
    small = {"entity_id": "light.kitchen", "state": "on", "attributes": {"brightness": 10}}
    outbox.append([OutboxEvent.new(STATE_CHANGED, "light.kitchen", small, clock())])
    assert outbox.next_batch(clock())[-1].event.data == small  # untouched below the cap


def test_the_outbox_keeps_its_epoch_until_its_file_is_new(tmp_path: Path, clock: Clock) -> None:
    """The epoch names the outbox the sequence counts in: the same after a reopen, a later
    one (ULIDs sort by time) for a new ledger file."""
    first = ActionLedger(tmp_path / "ledger.db")
    first.open()
    outbox = make_outbox(first, clock)
    epoch = outbox.epoch()
    first.close()
    again = ActionLedger(tmp_path / "ledger.db")
    again.open()
    assert make_outbox(again, clock).epoch() == epoch
    again.close()
    clock.now += 1
    fresh = ActionLedger(tmp_path / "new.db")
    fresh.open()
    assert make_outbox(fresh, clock).epoch() > epoch
    fresh.close()


def test_the_bound_is_counted_only_near_it(ledger: ActionLedger, clock: Clock) -> None:
    """Well below its bounds the outbox does not scan itself on every write (a running
    estimate); near them it counts exactly, and the bound holds."""
    outbox = make_outbox(ledger, clock, max_rows=1000)
    for n in range(850):
        outbox.append([OutboxEvent.new(STATE_CHANGED, f"light.l{n % 50}", {"state": "on"}, clock())])
    assert outbox.exact_checks == 1  # the first write
    for n in range(300):
        outbox.append([OutboxEvent.new(STATE_CHANGED, f"light.l{n % 50}", {"state": "off"}, clock())])
    assert outbox.exact_checks > 1 and outbox.stats().pending <= 1000
    fresh = make_outbox(ledger, clock, max_rows=1000)  # a restart counts again
    fresh.append([OutboxEvent.new(STATE_CHANGED, "light.x", {"state": "on"}, clock())])
    assert fresh.exact_checks == 1
