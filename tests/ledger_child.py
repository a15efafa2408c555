"""Child process for the kill -9 test: claims and finishes keys in a real ledger until killed.

Prints "claimed KEY" after a claim commits and "done KEY" after its outcome commits.
"""

import importlib.util
from pathlib import Path
import sys
import time

spec = importlib.util.spec_from_file_location(
    "ledger", Path(__file__).parent.parent / "custom_components" / "gemma_edge" / "actions" / "ledger.py"
)
ledger_module = importlib.util.module_from_spec(spec)
sys.modules["ledger"] = ledger_module
spec.loader.exec_module(ledger_module)

ledger = ledger_module.ActionLedger(sys.argv[1])
ledger.open()
prefix = sys.argv[2]
for index in range(1_000_000):
    key = f"{prefix}-{index}"
    ledger.claim(key, f"id-{key}", "hash", {"action": {"domain": "light", "service": "turn_on", "entity_id": "light.a", "data": {}}}, "desired_state", time.time())
    print(f"claimed {key}", flush=True)
    ledger.finish(key, "executed", {"message": "done"}, time.time())
    print(f"done {key}", flush=True)
