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
# (words, service calls that first put the home in the state the request changes)
REQUESTS: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]] = [
    ("Turn off the kitchen lights", [("light", "turn_on", {"entity_id": "light.kitchen_lights"})]),
    ("Turn on the bed light", [("light", "turn_off", {"entity_id": "light.bed_light"})]),
    ("Turn off the ceiling lights", [("light", "turn_on", {"entity_id": "light.ceiling_lights"})]),
    ("Turn on the lights in the living room", [("light", "turn_off", {"entity_id": "all"})]),
    ("Turn off the lights in the kitchen", [("light", "turn_on", {"entity_id": "light.kitchen_lights"})]),
    ("Set the bed light brightness to 40%", [("light", "turn_on", {"entity_id": "light.bed_light", "brightness_pct": 100})]),
    ("Close the kitchen window", [("cover", "open_cover", {"entity_id": "cover.kitchen_window"})]),
    ("Open the living room window", [("cover", "close_cover", {"entity_id": "cover.living_room_window"})]),
    ("Close the hall window", [("cover", "open_cover", {"entity_id": "cover.hall_window"})]),
    ("Turn on the decorative lights", [("switch", "turn_off", {"entity_id": "switch.decorative_lights"})]),
    ("Turn off the AC", [("switch", "turn_on", {"entity_id": "switch.ac"})]),
    ("Turn off the living room fan", [("fan", "turn_on", {"entity_id": "fan.living_room_fan"})]),
    ("Set the ceiling fan to 50 percent", [("fan", "turn_on", {"entity_id": "fan.ceiling_fan", "percentage": 100})]),
    ("Set the heat pump to 21 degrees", [("climate", "set_temperature", {"entity_id": "climate.heatpump", "temperature": 25})]),
    ("Pause the music in the living room", [("media_player", "media_play", {"entity_id": "media_player.living_room"})]),
    ("Set the humidifier to 55 percent", [("humidifier", "set_humidity", {"entity_id": "humidifier.humidifier", "humidity": 40})]),
    ("Open the garage door", [("cover", "close_cover", {"entity_id": "cover.garage_door"})]),  # sensitive: asks first
    ("Unlock the front door", [("lock", "lock", {"entity_id": "lock.front_door"})]),  # not exposed
    ("Is the kitchen light on?", []),
    ("What is the temperature outside?", []),
    ("Which lights are on?", []),
    ("Make it cosy in the living room", []),
    ("I'm going to bed, good night", []),
    ("Thanks!", []),
]


@dataclass
class Turn:
    words: str
    path: str
    seconds: float
    evaluated: int = 0
    generated: int = 0
    steps: int = 0

    @property
    def pi5_seconds(self) -> float:
        return self.evaluated / PI5_E4B_PREFILL_TOK_S + self.generated / PI5_E4B_DECODE_TOK_S


@dataclass
class Run:
    instant: bool
    turns: list[Turn] = field(default_factory=list)


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
    for words, setup in REQUESTS:
        for run in runs:
            hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, CONF_INSTANT_COMMANDS: run.instant})
            for domain, service, data in setup:
                await hass.services.async_call(domain, service, data, blocking=True)
            await hass.async_block_till_done()
            # Each request starts a new conversation from the primed prompt prefix, as when the
            # home has been quiet for a while (the agent primes 30 s after a change).
            await agent._async_prime()  # noqa: SLF001
            run.turns.append(await say(hass, words, steps, reports))
    await hass.config_entries.async_unload(entry.entry_id)
    report(runs)


def report(runs: list[Run]) -> None:
    instant, model_only = runs
    count = len(instant.turns)
    print(f"\n{count} requests on the demo home, Gemma 3 270M (act first), this machine; each said twice, side by side")
    print(f"{'request':<40} {'path':>8} {'s':>6} | {'model only s':>12} {'eval':>5} {'gen':>4} {'Pi 5 E4B s':>10}")
    for ours, alone in zip(instant.turns, model_only.turns, strict=True):
        print(
            f"{ours.words:<40} {ours.path:>8} {ours.seconds:>6.2f} | {alone.seconds:>12.2f} {alone.evaluated:>5} "
            f"{alone.generated:>4} {alone.pi5_seconds:>10.1f}"
        )
    print(f"\n{'run':<22} {'path':>8} {'share':>7} {'median s':>9} {'p95 s':>7} {'eval/turn':>9} {'gen/turn':>8} {'Pi 5 E4B median s':>18} {'p95':>6}")
    for name, run in (("matcher, then model", instant), ("model only", model_only)):
        for path in ("matcher", "model"):
            turns = [turn for turn in run.turns if turn.path == path]
            if not turns:
                continue
            seconds = [turn.seconds for turn in turns]
            pi5 = [turn.pi5_seconds if path == "model" else turn.seconds for turn in turns]
            print(
                f"{name:<22} {path:>8} {len(turns):>3}/{count:<3} {statistics.median(seconds):>9.3f} "
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
        "Pi 5 E4B projection: evaluated prompt tokens / 20 tok/s + generated tokens / 3 tok/s (GEMMA4.md); tokens "
        "counted by Gemma 3 270M's tokenizer (same vocabulary family as Gemma 4); matcher turns: measured here"
    )
