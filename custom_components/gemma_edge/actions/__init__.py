"""Actions: plain-Python core of idempotent execution (ledger, normalisation, policy, executor)."""
