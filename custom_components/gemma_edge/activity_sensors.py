"""Sensors of what the agent did, fed by its actions, turns and transcriptions.

Actions today, the last action, actions waiting for the user's confirmation, and turns
today with their speech and images. Their state is pushed (dispatcher signals from
the executor, the agents and the speech-to-text entities); the sensor platform adds
them.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import SensorEntity, SensorStateClass
from homeassistant.core import CALLBACK_TYPE, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.event import async_call_later, async_track_time_change
from homeassistant.helpers.restore_state import RestoreEntity
from homeassistant.util import dt as dt_util

from . import GemmaConfigEntry
from .action_events import (
    SpeechReport,
    TurnReport,
    event_data,
    keeps_words,
    outcome_sentence,
    signal_action,
    signal_speech,
    signal_turn,
)
from .actions.executor import CONFIRMATION_WINDOW_S
from .actions.outcomes import ActionOutcome
from .actions.records import ActionStatus
from .entity import GemmaEngineEntity

# How many of the latest actions Last action lists (the dashboard shows them).
RECENT_ACTIONS = 8


class _ActionSensor(GemmaEngineEntity, SensorEntity):
    """Base of the sensors fed by action outcomes."""

    _attr_should_poll = False
    _read_at_start = 10_000  # how many of the ledger's latest outcomes to read back

    def _since(self) -> float:
        """Return the time from which the ledger's outcomes are read at start."""
        return dt_util.start_of_local_day().timestamp()

    async def async_added_to_hass(self) -> None:
        """Read the ledger's outcomes since ``_since()``, then follow new ones.

        Outcomes that arrive while the ledger is read are kept and added after it,
        once each.
        """
        arrived: list[ActionOutcome] = []
        reading = True

        @callback
        def on_action(outcome: ActionOutcome) -> None:
            if reading:
                arrived.append(outcome)
                return
            self._add(outcome)
            self.async_write_ha_state()

        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_action(self._entry.entry_id), on_action
            )
        )
        executor = self._entry.runtime_data.executor
        read: list[ActionOutcome] = []
        if executor.error is None:
            read = await executor.async_recent(self._read_at_start, self._since())
        seen = {outcome.action_id for outcome in read}
        for outcome in [
            *reversed(read),
            *(o for o in arrived if o.action_id not in seen),
        ]:
            self._add(outcome)
        reading = False

    def _add(self, outcome: ActionOutcome) -> None:
        raise NotImplementedError


class ActionsTodaySensor(_ActionSensor):
    """How many actions the agent handled today, by outcome."""

    _attr_native_unit_of_measurement = "actions"
    _attr_state_class = SensorStateClass.TOTAL_INCREASING

    async def async_added_to_hass(self) -> None:
        """Follow the outcomes; start again at midnight."""
        await super().async_added_to_hass()
        self.async_on_remove(at_midnight(self))

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Start counting from the beginning of today."""
        super().__init__(entry, "actions_today")
        self._day = dt_util.start_of_local_day()
        self._counts: Counter[str] = Counter()

    def _add(self, outcome: ActionOutcome) -> None:
        today = dt_util.start_of_local_day()
        if today != self._day:
            self._day, self._counts = today, Counter()
        if outcome.created_at >= today.timestamp():
            self._counts[outcome.status.value] += 1

    @property
    def native_value(self) -> int:
        """Return how many actions were handled today."""
        if dt_util.start_of_local_day() != self._day:
            return 0
        return sum(self._counts.values())

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return today's count of each outcome (0 for those that did not happen)."""
        counts = self._counts if dt_util.start_of_local_day() == self._day else {}
        return {status.value: counts.get(status.value, 0) for status in ActionStatus}


class LastActionSensor(_ActionSensor):
    """The last action as a sentence, with its details and the few before it."""

    _read_at_start = RECENT_ACTIONS
    # The recent list repeats earlier states: kept out of the recorder.
    _unrecorded_attributes = frozenset({"recent"})

    def _since(self) -> float:
        return 0.0  # the last ones, whenever they were

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Start without a last action."""
        super().__init__(entry, "last_action")
        self._recent: deque[ActionOutcome] = deque(maxlen=RECENT_ACTIONS)

    def _add(self, outcome: ActionOutcome) -> None:
        self._recent.append(outcome)

    @property
    def native_value(self) -> str | None:
        """Return the last action as a sentence."""
        if not self._recent:
            return None
        return outcome_sentence(self.hass, self._recent[-1])[:255]

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the last action's event fields and time, and the latest few."""
        if not self._recent:
            return {}
        last = self._recent[-1]
        return {
            **event_data(last, with_words=keeps_words(self._entry)),
            "time": _iso(last.created_at),
            "recent": [
                {
                    "sentence": outcome_sentence(self.hass, outcome),
                    "status": outcome.status.value,
                    "time": _iso(outcome.created_at),
                }
                for outcome in reversed(self._recent)
            ],
        }


class WaitingForConfirmationSensor(_ActionSensor):
    """Actions the agent asked the user to confirm and that are still unanswered.

    A question stays open until the conversation's next turn (only that turn can
    confirm it: done, already so, refused, failed, or "no" and anything else close
    it), for the executor's confirmation window at most.
    """

    _attr_native_unit_of_measurement = "actions"
    _attr_state_class = SensorStateClass.MEASUREMENT

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Start with no question open."""
        super().__init__(entry, "waiting_confirmation")
        self._waiting: dict[tuple[str | None, str], ActionOutcome] = {}
        self._cancel_expiry: CALLBACK_TYPE | None = None

    def _since(self) -> float:
        return dt_util.utcnow().timestamp() - CONFIRMATION_WINDOW_S

    async def async_added_to_hass(self) -> None:
        """Follow the outcomes and turns; stop the expiry timer on removal."""
        await super().async_added_to_hass()
        self.async_on_remove(self._stop_expiry)

        @callback
        def on_turn(report: TurnReport) -> None:
            # Only the turn right after a question can confirm it: any later turn of
            # that conversation ("no", something else) leaves it unanswered for good.
            closed = [
                key
                for key, outcome in self._waiting.items()
                if outcome.conversation_id == report.conversation_id
                and outcome.action_id not in report.action_ids
            ]
            if closed:
                for key in closed:
                    del self._waiting[key]
                self._schedule_expiry()
                self.async_write_ha_state()

        self.async_on_remove(
            async_dispatcher_connect(
                self.hass, signal_turn(self._entry.entry_id), on_turn
            )
        )

    def _add(self, outcome: ActionOutcome) -> None:
        key = (outcome.conversation_id, outcome.action.signature)
        if outcome.status is ActionStatus.NEEDS_CONFIRMATION:
            self._waiting[key] = outcome
        else:
            self._waiting.pop(key, None)
        self._schedule_expiry()

    def _open(self) -> list[ActionOutcome]:
        since = self._since()
        return sorted(
            (o for o in self._waiting.values() if o.created_at >= since),
            key=lambda o: o.created_at,
        )

    @callback
    def _stop_expiry(self) -> None:
        if self._cancel_expiry is not None:
            self._cancel_expiry()
            self._cancel_expiry = None

    def _schedule_expiry(self) -> None:
        """Forget expired questions; update the state when the next one expires."""
        self._stop_expiry()
        open_questions = self._open()
        self._waiting = {
            (o.conversation_id, o.action.signature): o for o in open_questions
        }
        if not open_questions:
            return
        due = open_questions[0].created_at + CONFIRMATION_WINDOW_S
        delay = max(0.0, due - dt_util.utcnow().timestamp()) + 0.5

        @callback
        def expired(_now: datetime) -> None:
            self._cancel_expiry = None
            self._schedule_expiry()
            self.async_write_ha_state()

        self._cancel_expiry = async_call_later(self.hass, delay, expired)

    @property
    def native_value(self) -> int:
        """Return how many actions wait for the user's confirmation."""
        return len(self._open())

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the open questions: what, on which entities, since and until when."""
        return {
            "actions": [
                {
                    "sentence": outcome_sentence(self.hass, outcome),
                    "entity_id": outcome.action.entity_id,
                    "conversation_id": outcome.conversation_id,
                    "source": outcome.source,
                    "asked_at": _iso(outcome.created_at),
                    "expires_at": _iso(outcome.created_at + CONFIRMATION_WINDOW_S),
                }
                for outcome in self._open()
            ]
        }


@callback
def at_midnight(entity: Entity) -> CALLBACK_TYPE:
    """Write the entity's state at each local midnight: its "today" starts again."""

    @callback
    def midnight(_now: datetime) -> None:
        entity.async_write_ha_state()

    return async_track_time_change(entity.hass, midnight, hour=0, minute=0, second=0)


def _iso(timestamp: float) -> str:
    return dt_util.utc_from_timestamp(timestamp).isoformat()


@dataclass
class _Usage:
    """Today's turns by path, the images they looked at and the speech transcribed."""

    day: str
    matcher: int = 0
    model: int = 0
    images: int = 0
    transcriptions: int = 0
    speech_seconds: float = 0.0

    def count_turn(self, report: TurnReport) -> None:
        """Count a turn and the images it looked at."""
        if report.path == "matcher":
            self.matcher += 1
        else:
            self.model += 1
        self.images += report.images

    def count_speech(self, report: SpeechReport) -> None:
        """Count a transcription and its audio."""
        self.transcriptions += 1
        self.speech_seconds += report.audio_seconds


class TurnsTodaySensor(GemmaEngineEntity, SensorEntity, RestoreEntity):
    """How many turns the agents answered today, with speech and vision usage.

    Turns are not in the ledger (only actions are): today's figures survive a restart
    through the state Home Assistant restores.
    """

    _attr_native_unit_of_measurement = "turns"
    _attr_state_class = SensorStateClass.TOTAL_INCREASING
    _attr_should_poll = False

    def __init__(self, entry: GemmaConfigEntry) -> None:
        """Start counting today."""
        super().__init__(entry, "turns_today")
        self._usage = _Usage(_today())

    async def async_added_to_hass(self) -> None:
        """Restore today's figures, then follow turns and transcriptions."""
        last = await self.async_get_last_state()
        if last is not None and last.attributes.get("day") == self._usage.day:
            saved = last.attributes
            self._usage = _Usage(
                self._usage.day,
                matcher=int(saved.get("matcher", 0)),
                model=int(saved.get("model", 0)),
                images=int(saved.get("images", 0)),
                transcriptions=int(saved.get("transcriptions", 0)),
                speech_seconds=float(saved.get("speech_seconds", 0.0)),
            )

        @callback
        def count_turn(report: TurnReport) -> None:
            self._today_usage().count_turn(report)
            self.async_write_ha_state()

        @callback
        def count_speech(report: SpeechReport) -> None:
            self._today_usage().count_speech(report)
            self.async_write_ha_state()

        entry_id = self._entry.entry_id
        self.async_on_remove(
            async_dispatcher_connect(self.hass, signal_turn(entry_id), count_turn)
        )
        self.async_on_remove(at_midnight(self))
        self.async_on_remove(
            async_dispatcher_connect(self.hass, signal_speech(entry_id), count_speech)
        )

    def _today_usage(self) -> _Usage:
        """Return today's figures (new ones after midnight)."""
        if self._usage.day != (today := _today()):
            self._usage = _Usage(today)
        return self._usage

    @property
    def native_value(self) -> int:
        """Return today's turns."""
        usage = self._today_usage()
        return usage.matcher + usage.model

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return today's turns by path, images looked at and speech transcribed."""
        usage = self._today_usage()
        return {
            "matcher": usage.matcher,
            "model": usage.model,
            "images": usage.images,
            "transcriptions": usage.transcriptions,
            "speech_seconds": round(usage.speech_seconds, 1),
            "day": usage.day,
        }


def _today() -> str:
    return dt_util.start_of_local_day().date().isoformat()
