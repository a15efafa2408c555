#!/usr/bin/env python3
"""Cloud outbox benchmark: the cost of keeping the outbox bounded, side by side.

A real ledger file holding N pending state changes (10,000, 50,000, 100,000), then 2,000
single-event writes (what the hub does once a second for state changes, and with every action
outcome), with the running estimate (a full COUNT/SUM only within 10% of the bound) and with a
full COUNT/SUM on every write (the earlier behaviour). Prints milliseconds per write, the ratio,
and how many exact counts each made. Usage: .venv/bin/python bench/outbox_bound.py
"""

from __future__ import annotations

from pathlib import Path
import sys
import tempfile
import time
import types

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# the plain modules without Home Assistant
package = types.ModuleType("custom_components.gemma_edge")
package.__path__ = [str(ROOT / "custom_components" / "gemma_edge")]
sys.modules["custom_components.gemma_edge"] = package

from custom_components.gemma_edge.actions.ledger import ActionLedger  # noqa: E402
from custom_components.gemma_edge.sync import outbox as outbox_module  # noqa: E402
from custom_components.gemma_edge.sync.outbox import STATE_CHANGED, Outbox, OutboxEvent  # noqa: E402

WRITES = 2000


def run(held: int, exact_above: float) -> tuple[float, int]:
    outbox_module._EXACT_ABOVE = exact_above  # noqa: SLF001 - 0.0: count on every write
    with tempfile.TemporaryDirectory() as folder:
        ledger = ActionLedger(Path(folder) / "ledger.db")
        ledger.open()
        outbox = Outbox(ledger, max_rows=2 * held, max_bytes=1 << 40)
        outbox.open()
        now = time.time()
        outbox.append([OutboxEvent.new(STATE_CHANGED, f"sensor.s{n}", {"state": str(n)}, now) for n in range(held)])
        start = time.perf_counter()
        for n in range(WRITES):
            outbox.append([OutboxEvent.new(STATE_CHANGED, f"sensor.s{n}", {"state": "x"}, now)])
        seconds = time.perf_counter() - start
        ledger.close()
    return seconds / WRITES * 1000, outbox.exact_checks


def main() -> None:
    print(f"{'rows held':>10} {'estimate ms/write':>18} {'exact ms/write':>15} {'ratio':>6} {'exact counts':>14}")
    for held in (10_000, 50_000, 100_000):
        estimate, counted = run(held, 0.9)
        exact, always = run(held, 0.0)
        print(f"{held:>10,} {estimate:>18.3f} {exact:>15.3f} {exact / estimate:>5.0f}x {counted:>6} vs {always:>5}")


if __name__ == "__main__":
    main()
