"""The dashboard's sensors of what the agent did, on the demo home: actions waiting for the
user's confirmation, and turns today by path (speech: tests/test_stt.py; images:
tests/test_vision.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er, restore_state
from homeassistant.util import dt as dt_util

from .demo_agent import ask, state
from .scripted_model import call


def sensor(hass: HomeAssistant, entry: Any, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_{key}")
    assert entity_id is not None, key
    return entity_id


@pytest.fixture
async def instant_agent(hass: HomeAssistant, agent: Any) -> Any:
    """The demo home's agent with Home Assistant's sentences first, on the test's clock."""
    entry, model, calls = agent
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, CONF_INSTANT_COMMANDS: True})
    await hass.async_block_till_done()
    entry = hass.config_entries.async_get_entry(entry.entry_id)
    entry.runtime_data.executor.clock = lambda: dt_util.utcnow().timestamp()
    return entry, model, calls


async def test_a_question_waits_until_answered_or_expired(
    hass: HomeAssistant, instant_agent: Any, freezer: FrozenDateTimeFactory
) -> None:
    """"Open the garage door" asks first: one action waits, with its sentence and entity; "yes"
    answers it. Asked again and left unanswered, it stops waiting after the confirmation
    window (5 minutes) without any other event, when a later "yes" could no longer confirm it."""
    entry, _model, calls = instant_agent
    waiting = sensor(hass, entry, "waiting_confirmation")
    assert state(hass, waiting) == "0" and state(hass, waiting, "actions") == []

    assert "confirmation" in await ask(hass, "Open the garage door", conversation_id="one")
    assert state(hass, waiting) == "1"
    [question] = state(hass, waiting, "actions")
    assert question["entity_id"] == "cover.garage_door" and question["conversation_id"] == "one"
    assert question["sentence"] == "asked for confirmation to open Garage Door (asked in Assist)"
    assert await ask(hass, "Yes please.", conversation_id="one") == "Opened Garage Door."
    assert state(hass, waiting) == "0" and calls == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]

    await hass.services.async_call("cover", "close_cover", {"entity_id": "cover.garage_door"}, blocking=True)
    assert "confirmation" in await ask(hass, "Open the garage door", conversation_id="two")
    freezer.tick(timedelta(seconds=200))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert state(hass, waiting) == "1"
    freezer.tick(timedelta(seconds=101))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert state(hass, waiting) == "0"
    # and indeed a "yes" now confirms nothing
    await ask(hass, "yes", conversation_id="two")
    assert len(calls) == 2  # the close above; the garage door did not open again


async def test_a_question_answered_otherwise_stops_waiting(hass: HomeAssistant, instant_agent: Any) -> None:
    """Only the turn right after a question can confirm it: "no" (or anything else) closes it."""
    entry, model, calls = instant_agent
    waiting = sensor(hass, entry, "waiting_confirmation")
    assert "confirmation" in await ask(hass, "Open the garage door", conversation_id="one")
    assert "confirmation" in await ask(hass, "Open the garage door", conversation_id="two")
    assert state(hass, waiting) == "2"
    await ask(hass, "No.", conversation_id="one")
    assert state(hass, waiting) == "1" and [a["conversation_id"] for a in state(hass, waiting, "actions")] == ["two"]
    assert calls == []


async def test_today_starts_again_at_midnight(
    hass: HomeAssistant, instant_agent: Any, freezer: FrozenDateTimeFactory
) -> None:
    """At midnight the day's counts go back to 0 without waiting for the next turn or action."""
    entry, _model, _calls = instant_agent
    await ask(hass, "Turn on the bed light")
    actions, turns = sensor(hass, entry, "actions_today"), sensor(hass, entry, "turns_today")
    assert (state(hass, actions), state(hass, turns)) == ("1", "1")
    midnight = dt_util.start_of_local_day() + timedelta(days=1)
    freezer.move_to(midnight + timedelta(seconds=1))
    async_fire_time_changed(hass, midnight + timedelta(seconds=1))
    await hass.async_block_till_done()
    assert (state(hass, actions), state(hass, turns)) == ("0", "0")
    assert state(hass, actions, "executed") == 0 and state(hass, turns, "matcher") == 0


async def test_an_open_question_survives_a_restart(hass: HomeAssistant, instant_agent: Any) -> None:
    """Questions are read back from the ledger when the entry loads again."""
    entry, _model, _calls = instant_agent
    assert "confirmation" in await ask(hass, "Open the garage door", conversation_id="one")
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    entry = hass.config_entries.async_get_entry(entry.entry_id)
    assert state(hass, sensor(hass, entry, "waiting_confirmation")) == "1"


async def test_turns_today_count_each_path(hass: HomeAssistant, instant_agent: Any) -> None:
    """A sentence Home Assistant understands counts as a matcher turn, one the model answers as a
    model turn."""
    entry, model, _calls = instant_agent
    turns = sensor(hass, entry, "turns_today")
    assert state(hass, turns) == "0"
    await ask(hass, "Turn on the bed light")
    model.script(call("HassTurnOn", name="Kitchen Lights"))
    await ask(hass, "Could you make the kitchen bright please")
    assert state(hass, turns) == "2"
    attributes = hass.states.get(turns).attributes
    assert (attributes["matcher"], attributes["model"], attributes["images"], attributes["transcriptions"]) == (1, 1, 0, 0)
    assert attributes["day"] == dt_util.start_of_local_day().date().isoformat()


@pytest.mark.parametrize(("days_ago", "restored"), [(0, 5), (1, 0)])
async def test_turns_today_are_restored_on_the_same_day_only(
    hass: HomeAssistant, agent: Any, days_ago: int, restored: int
) -> None:
    """Turns are not in the ledger: today's figures come back from the restored state; yesterday's
    are not today's."""
    entry, _model, _calls = agent
    entity_id = sensor(hass, entry, "turns_today")
    day = (dt_util.start_of_local_day() - timedelta(days=days_ago)).date().isoformat()
    saved = {"matcher": 3, "model": 2, "images": 1, "transcriptions": 4, "speech_seconds": 9.5, "day": day}
    assert await hass.config_entries.async_unload(entry.entry_id)
    # as saved at the last stop (beside the demo home's own restored states)
    restore_state.async_get(hass).last_states[entity_id] = restore_state.StoredState(
        State(entity_id, "5", saved), None, dt_util.utcnow()
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert state(hass, entity_id) == str(restored)
    assert state(hass, entity_id, "transcriptions") == (4 if restored else 0)
