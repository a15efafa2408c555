"""kill -9 a real process writing the ledger and its outbox, again and again: nothing committed is
ever lost, and an action's outcome and its cloud event are both there or both absent.

GEMMA_EDGE_KILL_ITERATIONS sets the number of kills (CI default 200; the benchmark runs more).
"""

from __future__ import annotations

import os
from pathlib import Path
import random
import signal
import sqlite3
import subprocess
import sys
import time

ITERATIONS = int(os.environ.get("GEMMA_EDGE_KILL_ITERATIONS", "200"))
CHILD = Path(__file__).with_name("ledger_child.py")


def test_kill_9_loses_no_committed_row(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    rng = random.Random(1234)
    claimed: set[str] = set()
    done: set[str] = set()
    for iteration in range(ITERATIONS):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), f"run{iteration}"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the ledger is open and writing
        assert first.startswith("claimed "), "the writer did not start"
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        output, _ = child.communicate()
        for line in [first, *output.splitlines()]:
            word, _, key = line.strip().partition(" ")
            (claimed if word == "claimed" else done).add(key)
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT key, status FROM actions").fetchall())
        events = [subject for (subject,) in conn.execute("SELECT subject FROM outbox ORDER BY seq")]
        conn.close()
        executed = {key for key, status in rows.items() if status == "executed"}
        assert sorted(events) == sorted(executed), f"iteration {iteration}: an outcome without its event, or the reverse"
        assert len(events) == len(set(events))
        missing = claimed - rows.keys()
        assert not missing, f"iteration {iteration}: committed claims lost: {sorted(missing)[:5]}"
        assert all(rows[key] == "executed" for key in done), f"iteration {iteration}: a committed outcome was lost"
    assert len(done) > ITERATIONS  # the children really wrote between the kills
