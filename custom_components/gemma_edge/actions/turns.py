"""The idempotency scope of a conversation request: one turn and its retries.

A satellite or a client that did not get an answer sends the same words again within seconds;
that retry belongs to the same turn, so its tool calls get the same keys and never act twice.
The same words later, or after anything else was said in the conversation, are a new request: a
desired-state action then converges (acts if the state no longer holds), a one-shot action asked
again soon needs confirmation (the executor's repeat window), and no outcome of an earlier turn
(failed, unconfirmed, needing confirmation, indeterminate) is replayed into it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
import hashlib
import time
import uuid

# Same words in the same conversation within this many seconds of the turn's end (or while it
# runs), nothing in between: a retry.
RETRY_WINDOW_S = 10.0
# Conversations remembered (the oldest is forgotten first).
MAX_CONVERSATIONS = 512


def _digest(words: str) -> str:
    return hashlib.sha256(" ".join(words.lower().split()).encode()).hexdigest()[:16]


class TurnScopes:
    """Hands out one scope per turn, the same one to a retry of the last turn."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, retry_window_s: float = RETRY_WINDOW_S) -> None:
        self.clock = clock
        self.retry_window_s = retry_window_s
        self._last: OrderedDict[str, tuple[str, float, str]] = OrderedDict()

    def scope(self, source: str, conversation_id: str, words: str) -> str:
        """The scope of a new turn with these words (the last turn's, if this is its retry)."""
        key = f"{source}:{conversation_id}"
        digest, now = _digest(words), self.clock()
        last = self._last.pop(key, None)
        if last is not None and last[0] == digest and now - last[1] <= self.retry_window_s:
            turn = last[2]
        else:
            turn = uuid.uuid4().hex[:16]
        self._last[key] = (digest, now, turn)
        while len(self._last) > MAX_CONVERSATIONS:
            self._last.popitem(last=False)
        return f"{key}:{turn}"

    def finish(self, source: str, conversation_id: str) -> None:
        """The turn was answered: its retry window starts now (a slow turn is not retried early)."""
        key = f"{source}:{conversation_id}"
        if (last := self._last.get(key)) is not None:
            self._last[key] = (last[0], self.clock(), last[2])
