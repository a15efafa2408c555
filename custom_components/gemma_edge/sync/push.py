"""Commands the cloud pushes to the hub's webhook: checks before anything runs.

A push is signed like the hub's own deliveries (Standard Webhooks, the same secret);
its ``webhook-id`` is remembered for a day, so a replayed push is refused (409) even
within the five minutes its timestamp stays valid. Plain Python.
"""

from __future__ import annotations

import json
from typing import Any

from ..actions.ledger import ActionLedger
from .commands import CommandError, parse_command
from .signing import SignatureError, verify

MAX_PUSH_BYTES = 256 * 1024
SEEN_FOR_S = 24 * 3600


class PushRefused(Exception):
    """A push that is answered without running anything: HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message``."""
        super().__init__(message)
        self.status = status
        self.message = message


def accepted_commands(
    secret: str, headers: dict[str, str], body: bytes, now: float
) -> tuple[str, list[dict[str, Any]]]:
    """Return the push's ``webhook-id`` and its commands, or raise PushRefused.

    401: not signed with the secret, or its timestamp is off by more than 5 minutes;
    413: too large; 400: not ``{"commands": [...]}``; 422: a command is invalid
    (then none runs).
    """
    if len(body) > MAX_PUSH_BYTES:
        raise PushRefused(413, f"a push is at most {MAX_PUSH_BYTES} bytes")
    try:
        message_id = verify(secret, headers, body, now)
    except SignatureError as err:
        raise PushRefused(401, str(err)) from err
    try:
        payload = json.loads(body)
    except ValueError as err:
        raise PushRefused(400, f"the body is not JSON: {err}") from err
    commands = payload.get("commands") if isinstance(payload, dict) else None
    if not isinstance(commands, list) or not commands:
        raise PushRefused(400, 'the body is not {"commands": [...]}')
    problems = []
    for index, command in enumerate(commands):
        try:
            parse_command(command)
        except CommandError as err:
            problems.append(f"command {index}: {err}")
    if problems:
        raise PushRefused(422, "; ".join(problems))
    return message_id, commands


class PushLog:
    """The ``webhook-id`` of every push of the last day, in the ledger's file."""

    def __init__(self, ledger: ActionLedger) -> None:
        """Use ``ledger``'s database; ``open`` creates the table."""
        self.ledger = ledger

    def open(self) -> None:
        """Create the table if the file has none."""
        with self.ledger.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pushed_messages ("
                " message_id TEXT PRIMARY KEY, received_at REAL NOT NULL)"
            )

    def first_time(self, message_id: str, now: float) -> bool:
        """Remember the push; return False if it was received before (a replay)."""
        with self.ledger.transaction() as conn:
            conn.execute(
                "DELETE FROM pushed_messages WHERE received_at < ?", (now - SEEN_FOR_S,)
            )
            inserted = conn.execute(
                "INSERT OR IGNORE INTO pushed_messages (message_id, received_at)"
                " VALUES (?, ?)",
                (message_id, now),
            ).rowcount
        return bool(inserted)
