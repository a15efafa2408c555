"""Actions: the plain-Python core of idempotent execution.

The ledger, normalisation, policy and the executor.
"""
