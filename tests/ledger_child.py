"""Child process for the kill -9 test: claims and finishes keys in a real ledger until killed.

Each outcome is written with its cloud event in the outbox (one transaction). Prints "claimed
KEY" after a claim commits and "done KEY" after its outcome and event commit. Imports the plain
modules without the integration's package (no Home Assistant: a fast start per kill).
"""

from pathlib import Path
import sys
import time
import types

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
package = types.ModuleType("custom_components.gemma_edge")
package.__path__ = [str(ROOT / "custom_components" / "gemma_edge")]
sys.modules["custom_components.gemma_edge"] = package

from custom_components.gemma_edge.actions.ledger import ActionLedger  # noqa: E402
from custom_components.gemma_edge.sync.outbox import ACTION_PERFORMED, Outbox, OutboxEvent  # noqa: E402

ledger = ActionLedger(sys.argv[1])
ledger.open()
outbox = Outbox(ledger)
outbox.open()
prefix = sys.argv[2]
for index in range(1_000_000):
    key = f"{prefix}-{index}"
    ledger.claim(key, f"id-{key}", "hash", {"action": {"domain": "light", "service": "turn_on", "entity_id": "light.a", "data": {}}}, "desired_state", time.time())
    print(f"claimed {key}", flush=True)
    event = OutboxEvent.new(ACTION_PERFORMED, key, {"status": "executed"}, time.time())
    ledger.finish(key, "executed", {"message": "done"}, time.time(), also=outbox.writer([event]))
    print(f"done {key}", flush=True)
