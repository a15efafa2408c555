"""Benchmark through the real agent in a real Home Assistant (run: bench/agent).

For homes of 25, 100 and 250 exposed entities, a 5-turn conversation through our conversation
agent with Assist, twice: our layout, and a naive agent whose instructions put the clock and every
entity's live state at the top (what a prompt with states is). Prints evaluated prompt tokens per
follow-up turn (ratio), warm vs cold time to first token, the event loop's maximum lag during
generation and peak RSS. Only runs when GEMMA_EDGE_BENCH=1 (it prints figures; it is not a test).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import resource
import time
from typing import Any

import pytest

from homeassistant.core import HomeAssistant

from tests.conftest import async_create_local_entry, record_steps
from tests.test_conversation import converse_streaming

pytestmark = pytest.mark.skipif(os.environ.get("GEMMA_EDGE_BENCH") != "1", reason="benchmark: run bench/agent")

TURNS = ["Turn on the kitchen light", "And the office socket", "Is the garage blind open?", "Turn it off", "Thanks"]
NAIVE_PROMPT = (
    "Current time is {{ now().isoformat() }}.\n"
    "States: {% for s in states %}{{ s.name }}={{ s.state }}; {% endfor %}\n"
    "You are a voice assistant for Home Assistant. Answer briefly."
)
KINDS = [("light", "Light"), ("switch", "Socket"), ("sensor", "Temperature"), ("cover", "Blind"), ("binary_sensor", "Motion")]
AREAS = ["Kitchen", "Office", "Garage", "Bedroom", "Hallway"]


def populate(hass: HomeAssistant, size: int) -> None:
    for index in range(size):
        domain, noun = KINDS[index % len(KINDS)]
        area = AREAS[(index // len(KINDS)) % len(AREAS)]
        name = f"{area} {noun} {index // (len(KINDS) * len(AREAS)) + 1}"
        hass.states.async_set(f"{domain}.bench_{index}", "on" if index % 3 else "off", {"friendly_name": name})


async def run_conversation(hass: HomeAssistant, entry: Any, steps: list[Any]) -> list[list[Any]]:
    turns: list[list[Any]] = []
    conversation_id = None
    for text in TURNS:
        before = len(steps)
        # live states change between turns, as in a real home
        for state in hass.states.async_all("light")[:3]:
            hass.states.async_set(state.entity_id, "off" if state.state == "on" else "on", state.attributes)
        result, _ = await converse_streaming(hass, entry, text, conversation_id)
        conversation_id = result.conversation_id
        turns.append(steps[before:])
    return turns


async def test_agent_benchmark(hass: HomeAssistant, gemma3_path: Path, lights: list[str]) -> None:
    rows = []
    lags: list[float] = []
    stop = asyncio.Event()
    busy: list[Any] = []  # the engine in use

    async def ticker() -> None:
        """Loop lag while the model generates (setup and HA's own prompt rendering excluded)."""
        while not stop.is_set():
            generating = bool(busy) and busy[0].status == "busy"
            start = time.monotonic()
            await asyncio.sleep(0.005)
            if generating and busy[0].status == "busy":
                lags.append(time.monotonic() - start - 0.005)

    tick = asyncio.ensure_future(ticker())
    agent = {"temperature": 0.0, "max_tokens": 16, "tool_choice": "auto", "max_history": 10}
    for size in (25, 100, 250):
        populate(hass, size)
        results = {}
        for layout, prompt in (("naive", NAIVE_PROMPT), ("ours", None)):
            entry = await async_create_local_entry(
                hass, gemma3_path, {**agent, **({"prompt": prompt} if prompt else {})}
            )
            engine = entry.runtime_data.engine
            busy[:] = [engine]
            steps = record_steps(engine)
            results[layout] = await run_conversation(hass, entry, steps)
            await hass.config_entries.async_remove(entry.entry_id)
        naive = sum(s.evaluated_tokens for turn in results["naive"][1:] for s in turn) / 4
        ours = sum(s.evaluated_tokens for turn in results["ours"][1:] for s in turn) / 4
        cold = results["ours"][0][0].time_to_first_token_s
        warm = sum(turn[0].time_to_first_token_s for turn in results["ours"][1:]) / 4
        rows.append((size, results["ours"][0][0].prompt_tokens, naive, ours, cold, warm))
    stop.set()
    await tick
    print("\nthrough the Home Assistant agent (Gemma 3 270M, Assist API, 5 turns):")
    print(f"{'entities':>8} {'prompt':>7} {'naive eval/turn':>15} {'ours eval/turn':>14} {'ratio':>6} {'ttft cold':>9} {'ttft warm':>9} {'warm/cold':>9}")
    for size, prompt_tokens, naive, ours, cold, warm in rows:
        print(f"{size:>8} {prompt_tokens:>7} {naive:>15.0f} {ours:>14.0f} {naive / ours:>6.1f} {cold:>8.2f}s {warm:>8.2f}s {warm / cold:>9.2f}")
    lags.sort()
    print(
        f"Home Assistant event loop lag while generating: max {lags[-1] * 1000:.1f} ms, "
        f"p99 {lags[int(len(lags) * 0.99)] * 1000:.1f} ms over {len(lags)} ticks"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
