"""Cloud sync: the outbox in the ledger's database, the signed sender, reconciliation.

Plain Python, unit-tested without Home Assistant.
"""
