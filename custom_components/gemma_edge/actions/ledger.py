"""The durable action ledger.

One SQLite file, idempotency keys claimed with one atomic insert. All methods block; the
executor runs them on one dedicated thread (never the event loop). WAL with
``synchronous=FULL``: a row reported written survives a crash or a power cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import json
from pathlib import Path
import sqlite3
from typing import Any

RETENTION_S = 72 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    action_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_created ON actions(created_at);
CREATE INDEX IF NOT EXISTS actions_status ON actions(status);
"""

IN_PROGRESS = "in_progress"


class LedgerError(Exception):
    """The ledger cannot be read or written: acting is refused (fail closed)."""


@dataclass(frozen=True)
class LedgerRecord:
    """One action as recorded."""

    key: str
    action_id: str
    request_hash: str
    request: dict[str, Any]
    kind: str
    status: str
    outcome: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Claim:
    """Result of claiming a key.

    ``claimed`` (ours to run), or the existing record and why not.
    """

    claimed: bool
    record: LedgerRecord
    reason: str = ""  # "", "replay", "conflict" or "busy"


_COLUMNS = (
    "key, action_id, request_hash, request, kind, status, outcome, "
    "created_at, updated_at"
)
# Built from constant column names only; every value is a bound parameter.
_SELECT = f"SELECT {_COLUMNS} FROM actions"  # noqa: S608


def _record(row: tuple[Any, ...]) -> LedgerRecord:
    try:
        return LedgerRecord(
            row[0],
            row[1],
            row[2],
            json.loads(row[3]),
            row[4],
            row[5],
            json.loads(row[6]),
            row[7],
            row[8],
        )
    except (TypeError, ValueError) as err:
        # A damaged row: the ledger cannot be trusted.
        raise LedgerError(
            f"the action ledger holds a damaged record ({row[0]!r}): {err}"
        ) from err


class ActionLedger:
    """SQLite-backed record of every action, keyed by idempotency key."""

    def __init__(self, path: str | Path) -> None:
        """Use the database at ``path``; ``open`` opens it."""
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating if needed) and check the database.

        Raises LedgerError if it is unusable.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise LedgerError(
                    f"the action ledger {self.path.name} is corrupt: {check}"
                )
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise LedgerError(
                f"the action ledger {self.path.name} cannot be used: {err}"
            ) from err
        self._db = db

    def close(self) -> None:
        """Close the database (if open)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise LedgerError("the action ledger is not open")
        return self._db

    def connection(self) -> sqlite3.Connection:
        """Return the open database, for reads of the file's other tables."""
        return self._conn()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        try:
            return self._conn().execute(sql, args).rowcount
        except sqlite3.DatabaseError as err:
            # Disk full, I/O error, corruption: fail closed.
            raise LedgerError(f"writing the action ledger failed: {err}") from err

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"reading the action ledger failed: {err}") from err

    def get(self, key: str) -> LedgerRecord | None:
        """Return the record of a key, or None if there is none."""
        rows = self._read(f"{_SELECT} WHERE key = ?", (key,))
        return _record(rows[0]) if rows else None

    def claim(
        self,
        key: str,
        action_id: str,
        request_hash: str,
        request: dict[str, Any],
        kind: str,
        now: float,
    ) -> Claim:
        """Atomically take a key (INSERT OR IGNORE), or report who holds it.

        A finished key past the retention is forgotten first, as if already pruned.
        """
        self._write(
            "DELETE FROM actions WHERE key = ? AND created_at < ? AND status != ?",
            (key, now - RETENTION_S, IN_PROGRESS),
        )
        inserted = self._write(
            "INSERT OR IGNORE INTO actions (key, action_id, request_hash, request,"
            " kind, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                action_id,
                request_hash,
                json.dumps(request, sort_keys=True),
                kind,
                IN_PROGRESS,
                now,
                now,
            ),
        )
        record = self.get(key)
        if record is None:  # pragma: no cover
            # The insert or an existing row must be there.
            raise LedgerError("claimed key vanished")
        if inserted:
            return Claim(True, record)
        if record.request_hash != request_hash:
            return Claim(False, record, "conflict")
        if record.status == IN_PROGRESS:
            return Claim(False, record, "busy")
        return Claim(False, record, "replay")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Write atomically: everything done with the connection commits, or nothing.

        Other tables of the same file (the cloud outbox) are written in the same
        transaction as an action's outcome.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"writing the action ledger failed: {err}") from err
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.DatabaseError):
                raise LedgerError(f"writing the action ledger failed: {err}") from err
            raise

    def finish(
        self,
        key: str,
        status: str,
        outcome: dict[str, Any],
        now: float,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Record the outcome of a claimed key.

        ``also`` writes in the same transaction (the outcome's event for the cloud):
        both are committed, or neither.
        """
        with self.transaction() as conn:
            conn.execute(
                "UPDATE actions SET status = ?, outcome = ?, updated_at = ?"
                " WHERE key = ?",
                (status, json.dumps(outcome, sort_keys=True), now, key),
            )
            if also is not None:
                also(conn)

    def unfinished(self) -> list[LedgerRecord]:
        """Return the records a crash left in progress."""
        return [
            _record(row)
            for row in self._read(f"{_SELECT} WHERE status = ?", (IN_PROGRESS,))
        ]

    def recent(self, limit: int = 50, since: float | None = None) -> list[LedgerRecord]:
        """Return at most ``limit`` records created since ``since``, newest first."""
        rows = self._read(
            f"{_SELECT} WHERE created_at >= ? ORDER BY created_at DESC, key LIMIT ?",
            (since or 0.0, limit),
        )
        return [_record(row) for row in rows]

    def prune(self, now: float, retention_s: float = RETENTION_S) -> int:
        """Forget finished keys older than the retention (never unfinished ones)."""
        return self._write(
            "DELETE FROM actions WHERE created_at < ? AND status != ?",
            (now - retention_s, IN_PROGRESS),
        )

    def count(self) -> int:
        """Return how many records the ledger holds."""
        return int(self._read("SELECT COUNT(*) FROM actions")[0][0])
