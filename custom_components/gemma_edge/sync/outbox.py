"""The cloud outbox: events for the cloud, kept in the action ledger's SQLite file.

An event is written in the same transaction as what it reports (an action's outcome
and its event are both committed, or neither), delivered in sequence order, and marked
sent only after the cloud acknowledged it (then kept 7 days for dashboards and
diagnostics). The outbox is bounded: delivered rows go first, then state changes
compact to the latest per entity, then conversation turns are dropped oldest first;
action events are never dropped. Every compaction or drop is itself reported, as a
``gemma_edge.gap`` event with counts. Plain Python: no Home Assistant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import json
import os
import sqlite3
import time
from typing import Any

from ..actions.ledger import ActionLedger, LedgerError

# Created with the ledger's own table, in the same file.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        subject TEXT NOT NULL,
        time REAL NOT NULL,
        data TEXT NOT NULL,
        size INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        settled_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status, seq)",
    # The outbox's own id: a new ledger file starts its sequence again, and the
    # cloud tells the two apart by this (a ULID: a later outbox sorts after).
    "CREATE TABLE IF NOT EXISTS outbox_meta"
    " (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

ACTION_PERFORMED = "gemma_edge.action.performed"
ACTION_INDETERMINATE = "gemma_edge.action.indeterminate"
STATE_CHANGED = "gemma_edge.state.changed"
CONVERSATION_TURN = "gemma_edge.conversation.turn"
COMMAND_RESULT = "gemma_edge.command.result"
REMOTE_ACTION_REQUESTED = "gemma_edge.remote_action.requested"
GAP = "gemma_edge.gap"

PENDING, SENT, DEAD = "pending", "sent", "dead"
SENT_RETENTION_S = 7 * 24 * 3600
MAX_ROWS = 10_000
MAX_BYTES = 20 * 1024 * 1024
BATCH_EVENTS = 100
BATCH_BYTES = 256 * 1024
# One event's data at most (any batch holds at least three); larger fields are cut.
MAX_EVENT_BYTES = 64 * 1024
MAX_FIELD_BYTES = 4 * 1024
# What a stored event costs beyond its data: id, type, subject and the columns.
_ROW_OVERHEAD = 96
# Below this share of its bounds the outbox is not counted on every write.
_EXACT_ABOVE = 0.9

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now: float) -> str:
    """Return a ULID: 48 bits of milliseconds, 80 random bits, Crockford base32."""
    value = (int(now * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


@dataclass(frozen=True)
class OutboxEvent:
    """One event for the cloud (a CloudEvent without the hub's ``source``)."""

    id: str
    type: str
    subject: str
    time: float
    data: dict[str, Any]

    @classmethod
    def new(
        cls, event_type: str, subject: str, data: dict[str, Any], now: float
    ) -> OutboxEvent:
        """Return a new event with a new ULID (stable across every retry)."""
        return cls(new_ulid(now), event_type, subject, now, data)


@dataclass(frozen=True)
class StoredEvent:
    """An event as the outbox holds it: its place in the sequence and delivery."""

    seq: int
    event: OutboxEvent
    status: str
    attempts: int
    next_attempt: float
    size: int


@dataclass(frozen=True)
class OutboxStats:
    """What the outbox holds, for sensors and diagnostics."""

    pending: int
    pending_bytes: int
    oldest_pending: float | None
    sent: int
    dead: int
    last_sent: float | None


class Outbox:
    """The outbox table of an open ActionLedger; its methods block (a worker thread).

    Every write is one transaction of the ledger.
    """

    def __init__(
        self,
        ledger: ActionLedger,
        *,
        max_rows: int = MAX_ROWS,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Use ``ledger``'s database; ``open`` creates the table."""
        self.ledger = ledger
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.clock = clock
        # The highest sequence number given to the sender: rows up to it may be on the
        # wire, so they never change.
        self._handed_out = 0
        # rows and bytes held, at least (None: not counted yet); how often they were
        # counted exactly
        self._estimate: tuple[int, int] | None = None
        self.exact_checks = 0

    def open(self) -> None:
        """Create the outbox table if the file has none."""
        with self.ledger.transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('epoch', ?)",
                (new_ulid(self.clock()),),
            )

    def epoch(self) -> str:
        """Return the outbox's id (sent with every event as ``outboxepoch``)."""
        rows = self._read("SELECT value FROM outbox_meta WHERE key = 'epoch'", ())
        if not rows:
            raise LedgerError("the outbox has no epoch (not opened)")
        return str(rows[0][0])

    def writer(
        self, events: Sequence[OutboxEvent]
    ) -> Callable[[sqlite3.Connection], None]:
        """Return what writes ``events`` inside another write's transaction.

        For ``ActionLedger.finish(..., also=...)``: the outcome and its event commit
        together.
        """

        def write(conn: sqlite3.Connection) -> None:
            self._bound(conn, *self._insert(conn, events))

        return write

    def append(self, events: Sequence[OutboxEvent]) -> None:
        """Add events in one transaction (state changes, turns, command results)."""
        with self.ledger.transaction() as conn:
            self.writer(events)(conn)

    def next_batch(
        self,
        now: float,
        max_events: int = BATCH_EVENTS,
        max_bytes: int = BATCH_BYTES,
    ) -> list[StoredEvent]:
        """Return the oldest pending events due now, in sequence order.

        At most ``max_events`` and ``max_bytes`` (at least one event when any is due).
        """
        rows = self._read(
            "SELECT seq, id, type, subject, time, data, status, attempts,"
            " next_attempt, size FROM outbox WHERE status = ? ORDER BY seq LIMIT ?",
            (PENDING, max_events),
        )
        batch: list[StoredEvent] = []
        total = 0
        for row in rows:
            if row[8] > now:
                break  # a later event never overtakes an earlier one waiting to retry
            if batch and (
                total + row[9] > max_bytes or row[8] != batch[0].next_attempt
            ):
                # a retried batch goes again as it was (the same webhook-id); what was
                # written since waits for the next one
                break
            total += row[9]
            batch.append(_stored(row))
        if batch:
            self._handed_out = max(self._handed_out, batch[-1].seq)
        return batch

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the latest events' envelopes, newest first (no data: diagnostics)."""
        rows = self._read(
            "SELECT seq, id, type, subject, time, status, attempts, settled_at"
            " FROM outbox ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        names = [
            "seq",
            "id",
            "type",
            "subject",
            "time",
            "status",
            "attempts",
            "settled",
        ]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def next_due(self) -> float | None:
        """Return when the oldest pending event is due (None: nothing pending)."""
        row = self._read(
            "SELECT next_attempt FROM outbox WHERE status = ? ORDER BY seq LIMIT 1",
            (PENDING,),
        )
        return float(row[0][0]) if row else None

    def due_now(self) -> None:
        """Make every pending event due at once ("sync now")."""
        with self.ledger.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET next_attempt = 0 WHERE status = ?", (PENDING,)
            )

    def acknowledge(self, seqs: Sequence[int], now: float) -> None:
        """Mark events delivered (the cloud answered 2xx)."""
        self._settle(seqs, SENT, now)

    def dead_letter(self, seqs: Sequence[int], now: float) -> None:
        """Mark events refused by the cloud for good (a 4xx other than 408/429/410)."""
        self._settle(seqs, DEAD, now)

    def retry_later(self, seqs: Sequence[int], at: float) -> None:
        """Count a failed delivery; the events are due again at ``at``."""
        with self.ledger.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?"
                " WHERE seq = ? AND status = ?",
                [(at, seq, PENDING) for seq in seqs],
            )

    def prune(self, now: float, retention_s: float = SENT_RETENTION_S) -> int:
        """Forget delivered and dead-lettered events older than the retention."""
        with self.ledger.transaction() as conn:
            return conn.execute(
                "DELETE FROM outbox WHERE status != ? AND settled_at < ?",
                (PENDING, now - retention_s),
            ).rowcount

    def stats(self) -> OutboxStats:
        """Return the counts by status, the pending bytes and the times."""
        pending = self._read(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(time) FROM outbox"
            " WHERE status = ?",
            (PENDING,),
        )[0]
        settled = dict(
            self._read(
                "SELECT status, COUNT(*) FROM outbox WHERE status != ? GROUP BY status",
                (PENDING,),
            )
        )
        last_sent = self._read(
            "SELECT MAX(settled_at) FROM outbox WHERE status = ?", (SENT,)
        )[0][0]
        return OutboxStats(
            pending=int(pending[0]),
            pending_bytes=int(pending[1]),
            oldest_pending=pending[2],
            sent=int(settled.get(SENT, 0)),
            dead=int(settled.get(DEAD, 0)),
            last_sent=last_sent,
        )

    def _settle(self, seqs: Sequence[int], status: str, now: float) -> None:
        with self.ledger.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET status = ?, settled_at = ? WHERE seq = ?"
                " AND status = ?",
                [(status, now, seq, PENDING) for seq in seqs],
            )

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.ledger.connection().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"reading the outbox failed: {err}") from err

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, events: Sequence[OutboxEvent]
    ) -> tuple[int, int]:
        """Insert the events; return how many rows and bytes they added."""
        added = 0
        for event in events:
            data = _capped_json(event.data)
            added += len(data.encode()) + _ROW_OVERHEAD
            conn.execute(
                "INSERT INTO outbox (id, type, subject, time, data, size)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    event.type,
                    event.subject,
                    event.time,
                    data,
                    len(data.encode()) + _ROW_OVERHEAD,
                ),
            )
        return len(events), added

    def _bound(self, conn: sqlite3.Connection, rows: int, size: int) -> None:
        """Keep the outbox within its bounds; report what was lost as a gap event.

        ``rows`` and ``size`` were just added. A running estimate (never below the
        truth: deliveries and prunes only lower it, a rolled-back write leaves it
        high) spares the full COUNT/SUM while the outbox is well below its bounds.
        """
        if self._estimate is not None:
            rows, size = self._estimate[0] + rows, self._estimate[1] + size
            if rows <= self.max_rows * _EXACT_ABOVE and size <= (
                self.max_bytes * _EXACT_ABOVE
            ):
                self._estimate = (rows, size)
                return
        try:
            self._trim(conn)
        finally:
            self._estimate = self._totals(conn)

    def _trim(self, conn: sqlite3.Connection) -> None:
        self.exact_checks += 1
        if self._within(conn):
            return
        # Delivered rows first (the dashboards lose history, the cloud nothing).
        self._drop_oldest(conn, "status != ?", (PENDING,))
        if self._within(conn):
            return
        compacted = conn.execute(
            "DELETE FROM outbox WHERE status = ? AND type = ? AND seq NOT IN"
            " (SELECT MAX(seq) FROM outbox WHERE status = ? AND type = ?"
            " GROUP BY subject)",
            (PENDING, STATE_CHANGED, PENDING, STATE_CHANGED),
        ).rowcount
        dropped = 0
        if not self._within(conn):
            dropped = self._drop_oldest(
                conn, "status = ? AND type = ?", (PENDING, CONVERSATION_TURN)
            )
        if compacted or dropped:
            self._report_gap(conn, compacted, dropped)

    def _report_gap(
        self, conn: sqlite3.Connection, compacted: int, dropped: int
    ) -> None:
        """Add the counts to the gap event still waiting, or write a new one.

        Under lasting pressure one gap event grows instead of many filling the outbox.
        """
        # only a gap event never handed to the sender may grow: one on the wire
        # must arrive as it was sent (never attempted: also true after a restart)
        waiting = conn.execute(
            "SELECT seq, data FROM outbox WHERE status = ? AND type = ? AND seq > ?"
            " AND attempts = 0 ORDER BY seq DESC LIMIT 1",
            (PENDING, GAP, self._handed_out),
        ).fetchone()
        now = self.clock()
        if waiting is not None:
            data = json.loads(waiting[1])
            data["compacted_state_changes"] += compacted
            data["dropped_conversation_turns"] += dropped
            data["last_time"] = now
            text = json.dumps(data, sort_keys=True)
            conn.execute(
                "UPDATE outbox SET data = ?, size = ? WHERE seq = ?",
                (text, len(text.encode()) + _ROW_OVERHEAD, waiting[0]),
            )
            return
        gap = OutboxEvent.new(
            GAP,
            "outbox",
            {
                "reason": "outbox_full",
                "compacted_state_changes": compacted,
                "dropped_conversation_turns": dropped,
                "first_time": now,
                "last_time": now,
            },
            now,
        )
        self._insert(conn, [gap])

    def _within(self, conn: sqlite3.Connection) -> bool:
        rows, size = self._totals(conn)
        return rows <= self.max_rows and size <= self.max_bytes

    @staticmethod
    def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
        rows, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
        return int(rows), int(size)

    def _drop_oldest(
        self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]
    ) -> int:
        """Delete the oldest rows matching ``where`` until within the bounds."""
        rows, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
        doomed: list[int] = []
        # Built from constant fragments only; every value is a bound parameter.
        candidates = conn.execute(
            f"SELECT seq, size FROM outbox WHERE {where} ORDER BY seq",  # noqa: S608
            args,
        )
        for seq, row_size in candidates:
            if rows <= self.max_rows and size <= self.max_bytes:
                break
            doomed.append(seq)
            rows, size = rows - 1, size - row_size
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in doomed])
        return len(doomed)


def _capped_json(data: dict[str, Any]) -> str:
    """Return the event's data as JSON, at most MAX_EVENT_BYTES.

    A larger one (a sensor with a huge attribute, a long script result) keeps its
    small fields; the large ones are dropped and named under ``truncated``.
    """
    text = json.dumps(data, sort_keys=True, default=str)
    if len(text.encode()) <= MAX_EVENT_BYTES:
        return text
    kept: dict[str, Any] = {}
    dropped = []
    for key, value in data.items():
        if len(json.dumps(value, default=str).encode()) <= MAX_FIELD_BYTES:
            kept[key] = value
        else:
            dropped.append(key)
    kept["truncated"] = sorted(dropped)
    text = json.dumps(kept, sort_keys=True, default=str)
    if len(text.encode()) <= MAX_EVENT_BYTES:
        return text
    return json.dumps({"truncated": sorted(data)}, sort_keys=True)


def discard_outbox(ledger: ActionLedger) -> int:
    """Delete every event of a ledger file whose cloud sync was removed.

    Nothing is to leave the hub any more; return how many were waiting or kept.
    """
    with ledger.transaction() as conn:
        if (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
            ).fetchone()
            is None
        ):
            return 0
        return conn.execute("DELETE FROM outbox").rowcount


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    try:
        event = OutboxEvent(row[1], row[2], row[3], row[4], json.loads(row[5]))
    except ValueError as err:
        raise LedgerError(
            f"the outbox holds a damaged event ({row[1]!r}): {err}"
        ) from err
    return StoredEvent(row[0], event, row[6], row[7], row[8], row[9])
