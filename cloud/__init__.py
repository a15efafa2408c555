"""The reference cloud side of Gemma Edge's cloud sync (not part of the integration).

A signed-batch receiver that logs every event into NATS JetStream (deduplicated on the
CloudEvent id), a per-hub shadow in a JetStream key-value bucket, reconciliation
commands in the answers, remote actions run once, and a CLI (``python -m cloud``).
"""
