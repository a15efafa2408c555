"""The "Agent activity" calendar: every recorded action as a one-minute event.

Assist's calendar tool can then answer "what did you do today?".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from homeassistant.components.calendar import CalendarEntity, CalendarEvent
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from . import GemmaConfigEntry
from .action_events import asked_note, keeps_words, outcome_sentence, signal_action
from .actions.outcomes import ActionOutcome
from .entity import GemmaEngineEntity

EVENT_LENGTH = timedelta(minutes=1)

# State is pushed (dispatcher signals): no polling, no service calls.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the engine's activity calendar."""
    async_add_entities([AgentActivityCalendar(entry)])


class AgentActivityCalendar(GemmaEngineEntity, CalendarEntity):
    """Actions of the agent, newest last."""

    # The last action comes by dispatcher signal; CalendarEntity schedules its own
    # updates at the start and end of the current event.
    _attr_should_poll = False

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Set up the calendar of the entry's actions."""
        super().__init__(entry, "agent_activity")
        self._last: ActionOutcome | None = None

    async def async_added_to_hass(self) -> None:
        """Read the last action from the ledger, then follow new ones."""
        recent = (
            await self._entry.runtime_data.executor.async_recent(1)
            if self._executor_open
            else []
        )
        self._last = recent[0] if recent else None

        @callback
        def on_action(outcome: ActionOutcome) -> None:
            self._last = outcome
            self.async_write_ha_state()

        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_action(self._entry.entry_id), on_action
            )
        )

    @property
    def _executor_open(self) -> bool:
        return self._entry.runtime_data.executor.error is None

    def _event(self, outcome: ActionOutcome) -> CalendarEvent:
        start = dt_util.utc_from_timestamp(outcome.created_at)
        return CalendarEvent(
            start=start,
            end=start + EVENT_LENGTH,
            summary=outcome_sentence(self.hass, outcome),
            description=asked_note(self.hass, outcome.reason)
            if outcome.reason and keeps_words(self._entry)
            else None,
            uid=outcome.key,
        )

    @property
    def event(self) -> CalendarEvent | None:
        """The latest action while it is "on" (its first minute)."""
        if self._last is None:
            return None
        event = self._event(self._last)
        return event if event.end > dt_util.utcnow() else None

    async def async_get_events(
        self, hass: HomeAssistant, start_date: datetime, end_date: datetime
    ) -> list[CalendarEvent]:
        """Return the actions recorded between the two times."""
        if not self._executor_open:
            return []
        since = (start_date - EVENT_LENGTH).timestamp()
        outcomes = await self._entry.runtime_data.executor.async_recent(500, since)
        events = [self._event(o) for o in reversed(outcomes)]
        return [e for e in events if e.start < end_date and e.end > start_date]
