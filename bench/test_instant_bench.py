"""Instant commands vs the model, on the demo home (run: bench/instant_commands).

A set of everyday requests (commands, questions, chat) is said to our conversation agent in a
real Home Assistant with the demo integration and its default exposure, twice per request, side
by side: with Home Assistant's sentence matcher in front of the model (the default), and with the
model only. Before each turn the devices the request names are put in the opposite state, so both
runs start from the same home. Prints, per path: the share of requests it handled, median and p95
turn latency measured here (the whole Assist turn, acting included), and for model turns the
prompt tokens evaluated and tokens generated, with the seconds those cost on a Raspberry Pi 5
running Gemma 4 E4B (prefill 20 tok/s, decode 3 tok/s, ../shared/docs/GEMMA4.md). Only runs when
GEMMA_EDGE_BENCH=1 (it prints figures; it is not a test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import statistics
import time
from typing import Any

import pytest

from custom_components.gemma_edge.action_events import TurnReport, signal_turn
from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect

from tests.conftest import SMALL_MODEL_AGENT, async_create_local_entry, record_steps

pytestmark = pytest.mark.skipif(os.environ.get("GEMMA_EDGE_BENCH") != "1", reason="benchmark: run bench/instant_commands")

AGENT = "conversation.gemma_conversation"
PI5_E4B_PREFILL_TOK_S = 20.0
PI5_E4B_DECODE_TOK_S = 3.0
Change = dict[str, tuple[str, Any]]  # entity_id: (attribute or "state", value)
# (words, service calls that first put the home in the state the request changes, what must
# change: {} for nothing (sensitive, unexposed), None for questions and chat (not scored))
REQUESTS: list[tuple[str, list[tuple[str, str, dict[str, Any]]], Change | None]] = [
    ("Turn off the kitchen lights", [("light", "turn_on", {"entity_id": "light.kitchen_lights"})],
     {"light.kitchen_lights": ("state", "off")}),
    ("Turn on the bed light", [("light", "turn_off", {"entity_id": "light.bed_light"})], {"light.bed_light": ("state", "on")}),
    ("Turn off the ceiling lights", [("light", "turn_on", {"entity_id": "light.ceiling_lights"})],
     {"light.ceiling_lights": ("state", "off")}),
    ("Turn on the lights in the living room", [("light", "turn_off", {"entity_id": "all"})],
     {"light.ceiling_lights": ("state", "on"), "light.living_room_rgbww_lights": ("state", "on")}),
    ("Turn off the lights in the kitchen", [("light", "turn_on", {"entity_id": "light.kitchen_lights"})],
     {"light.kitchen_lights": ("state", "off")}),
    ("Set the bed light brightness to 40%", [("light", "turn_on", {"entity_id": "light.bed_light", "brightness_pct": 100})],
     {"light.bed_light": ("brightness", 102)}),
    ("Close the kitchen window", [("cover", "open_cover", {"entity_id": "cover.kitchen_window"})],
     {"cover.kitchen_window": ("state", "closed")}),
    ("Open the living room window", [("cover", "close_cover", {"entity_id": "cover.living_room_window"})],
     {"cover.living_room_window": ("state", "opening")}),
    ("Close the hall window", [("cover", "open_cover", {"entity_id": "cover.hall_window"})],
     {"cover.hall_window": ("state", "closing")}),
    ("Turn on the decorative lights", [("switch", "turn_off", {"entity_id": "switch.decorative_lights"})],
     {"switch.decorative_lights": ("state", "on")}),
    ("Turn off the AC", [("switch", "turn_on", {"entity_id": "switch.ac"})], {"switch.ac": ("state", "off")}),
    ("Turn off the living room fan", [("fan", "turn_on", {"entity_id": "fan.living_room_fan"})],
     {"fan.living_room_fan": ("state", "off")}),
    ("Set the ceiling fan to 50 percent", [("fan", "turn_on", {"entity_id": "fan.ceiling_fan", "percentage": 100})],
     {"fan.ceiling_fan": ("percentage", 50)}),
    ("Set the heat pump to 21 degrees", [("climate", "set_temperature", {"entity_id": "climate.heatpump", "temperature": 25})],
     {"climate.heatpump": ("temperature", 21)}),
    ("Pause the music in the living room", [("media_player", "media_play", {"entity_id": "media_player.living_room"})],
     {"media_player.living_room": ("state", "paused")}),
    ("Set the humidifier to 55 percent", [("humidifier", "set_humidity", {"entity_id": "humidifier.humidifier", "humidity": 40})],
     {"humidifier.humidifier": ("humidity", 55)}),
    ("Open the garage door", [("cover", "close_cover", {"entity_id": "cover.garage_door"})], {}),  # sensitive: asks first
    ("Unlock the front door", [("lock", "lock", {"entity_id": "lock.front_door"})], {}),  # not exposed
    ("Is the kitchen light on?", [], None),
    ("Is the garage door open?", [], None),
    ("What is the temperature outside?", [], None),
    ("Which lights are on?", [], None),
    ("Make it cosy in the living room", [], None),
    ("I'm going to bed, good night", [], None),
    ("Thanks!", [], None),
]  # fmt: skip
CONTROLLED = ("light", "switch", "fan", "cover", "lock", "media_player", "climate", "humidifier")
WATCHED = ("percentage", "brightness", "humidity", "temperature", "is_volume_muted")


def snapshot(hass: HomeAssistant) -> dict[str, tuple[Any, ...]]:
    return {
        state.entity_id: (state.state, *(state.attributes.get(key) for key in WATCHED))
        for state in hass.states.async_all(CONTROLLED)
    }


def is_right(hass: HomeAssistant, before: dict[str, tuple[Any, ...]], expected: Change) -> bool:
    """Exactly the expected devices changed, as expected."""
    after = snapshot(hass)
    changed = {entity_id for entity_id, values in after.items() if before.get(entity_id) != values}
    for entity_id, (attribute, value) in expected.items():
        current = hass.states.get(entity_id)
        if current is None or (current.state if attribute == "state" else current.attributes.get(attribute)) != value:
            return False
    return changed <= set(expected)


@dataclass
class Turn:
    words: str
    path: str
    seconds: float
    evaluated: int = 0
    generated: int = 0
    steps: int = 0
    right: bool | None = None  # None: a question or chat, not scored

    @property
    def pi5_seconds(self) -> float:
        return self.evaluated / PI5_E4B_PREFILL_TOK_S + self.generated / PI5_E4B_DECODE_TOK_S


@dataclass
class Run:
    instant: bool
    turns: list[Turn] = field(default_factory=list)


def verdict(turn: Turn) -> str:
    return "-" if turn.right is None else ("yes" if turn.right else "no")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


async def say(hass: HomeAssistant, words: str, steps: list[Any], reports: list[TurnReport]) -> Turn:
    before_steps, before_reports = len(steps), len(reports)

    start = time.monotonic()
    await conversation.async_converse(hass, words, None, Context(), language="en", agent_id=AGENT)
    seconds = time.monotonic() - start
    assert len(reports) == before_reports + 1, words
    taken = steps[before_steps:]
    return Turn(
        words,
        reports[-1].path,
        seconds,
        evaluated=sum(step.evaluated_tokens for step in taken),
        generated=sum(step.completion_tokens for step in taken),
        steps=len(taken),
    )


async def test_instant_commands_benchmark(hass: HomeAssistant, gemma3_path: Path, demo_home: Any) -> None:
    entry = await async_create_local_entry(hass, gemma3_path, SMALL_MODEL_AGENT)
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    # The demo's covers take seconds to travel; the wait for their new state is the same on both
    # paths and is not what is compared here.
    entry.runtime_data.executor.verify_timeout_s = 0.5
    steps = record_steps(entry.runtime_data.engine)
    reports: list[TurnReport] = []

    @callback
    def on_turn(report: TurnReport) -> None:
        reports.append(report)

    async_dispatcher_connect(hass, signal_turn(entry.entry_id), on_turn)
    agent = entry.runtime_data.agents[AGENT]
    runs = [Run(instant=True), Run(instant=False)]
    for words, setup, expected in REQUESTS:
        for run in runs:
            hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, CONF_INSTANT_COMMANDS: run.instant})
            for domain, service, data in setup:
                await hass.services.async_call(domain, service, data, blocking=True)
            await hass.async_block_till_done()
            # Each request starts a new conversation from the primed prompt prefix, as when the
            # home has been quiet for a while (the agent primes 30 s after a change).
            await agent._async_prime()  # noqa: SLF001
            before = snapshot(hass)
            turn = await say(hass, words, steps, reports)
            await hass.async_block_till_done()
            turn.right = None if expected is None else is_right(hass, before, expected)
            run.turns.append(turn)
    await hass.config_entries.async_unload(entry.entry_id)
    report(runs)


def report(runs: list[Run]) -> None:
    instant, model_only = runs
    count = len(instant.turns)
    print(f"\n{count} requests on the demo home, Gemma 3 270M (act first), this machine; each said twice, side by side")
    print(f"{'request':<40} {'path':>8} {'s':>6} {'right':>5} | {'model only s':>12} {'right':>5} {'eval':>5} {'gen':>4} {'Pi 5 E4B s':>10}")
    for ours, alone in zip(instant.turns, model_only.turns, strict=True):
        print(
            f"{ours.words:<40} {ours.path:>8} {ours.seconds:>6.2f} {verdict(ours):>5} | {alone.seconds:>12.2f} "
            f"{verdict(alone):>5} {alone.evaluated:>5} {alone.generated:>4} {alone.pi5_seconds:>10.1f}"
        )
    print(f"\n{'run':<22} {'path':>8} {'share':>7} {'right':>7} {'median s':>9} {'p95 s':>7} {'eval/turn':>9} {'gen/turn':>8} {'Pi 5 E4B median s':>18} {'p95':>6}")
    for name, run in (("matcher, then model", instant), ("model only", model_only)):
        for path in ("matcher", "model"):
            turns = [turn for turn in run.turns if turn.path == path]
            if not turns:
                continue
            seconds = [turn.seconds for turn in turns]
            pi5 = [turn.pi5_seconds if path == "model" else turn.seconds for turn in turns]
            scored = [turn.right for turn in turns if turn.right is not None]
            print(
                f"{name:<22} {path:>8} {len(turns):>3}/{count:<3} {sum(scored):>3}/{len(scored):<3} {statistics.median(seconds):>9.3f} "
                f"{percentile(seconds, 0.95):>7.3f} {statistics.median(t.evaluated for t in turns):>9.0f} "
                f"{statistics.median(t.generated for t in turns):>8.0f} {statistics.median(pi5):>18.1f} {percentile(pi5, 0.95):>6.1f}"
            )
    matched = [i for i, turn in enumerate(instant.turns) if turn.path == "matcher"]
    if matched:
        here = statistics.median(instant.turns[i].seconds for i in matched)
        alone_here = statistics.median(model_only.turns[i].seconds for i in matched)
        alone_pi5 = statistics.median(model_only.turns[i].pi5_seconds for i in matched)
        print(
            f"\nthe {len(matched)} requests the matcher took: median {here:.3f} s by the matcher vs {alone_here:.2f} s by the "
            f"model here ({alone_here / here:.0f}x), and ~{alone_pi5:.0f} s by Gemma 4 E4B on a Pi 5 (projected from the tokens)"
        )
    print(
        "right: exactly the named devices changed as asked (nothing for the garage door and the unexposed lock); "
        "questions and chat are not scored. Each request starts a new conversation from the primed prompt prefix "
        "(the best case for the model: a follow-up in a long conversation also evaluates its new history)"
    )
    print(
        "Pi 5 E4B projection: evaluated prompt tokens / 20 tok/s + generated tokens / 3 tok/s (GEMMA4.md); tokens "
        "counted by Gemma 3 270M's tokenizer (same vocabulary family as Gemma 4); matcher turns: measured here"
    )
