"""What the hub reports to the cloud: each recorded action outcome as a CloudEvent.

An outcome's event is written in the outcome's own ledger transaction (the executor's
``reporter``), so the cloud learns of every recorded action exactly as the ledger holds
it, even after a power cut between the two.
"""

from __future__ import annotations

from collections.abc import Callable
import sqlite3
import time

from ..actions.outcomes import ActionOutcome
from ..actions.records import ActionStatus
from .outbox import ACTION_INDETERMINATE, ACTION_PERFORMED, Outbox, OutboxEvent


class CloudReporter:
    """Turns recorded outcomes into ``gemma_edge.action.*`` events in the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        keep_words: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Report into ``outbox``; the user's words only while ``keep_words()``."""
        self.outbox = outbox
        self.keep_words = keep_words
        self.clock = clock

    def open(self) -> None:
        """Create the outbox table (on the ledger's thread)."""
        self.outbox.open()

    def writer_for(
        self, outcome: ActionOutcome
    ) -> Callable[[sqlite3.Connection], None] | None:
        """Return what writes the outcome's event (none for a call still running)."""
        if outcome.status is ActionStatus.RUNNING:
            return None
        event_type = (
            ACTION_INDETERMINATE
            if outcome.status is ActionStatus.INDETERMINATE
            else ACTION_PERFORMED
        )
        subject = outcome.action.entity_id
        data = outcome.as_event(with_words=self.keep_words())
        return self.outbox.writer(
            [OutboxEvent.new(event_type, subject, data, self.clock())]
        )
