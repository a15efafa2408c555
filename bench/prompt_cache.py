#!/usr/bin/env python3
"""Prompt-cache benchmark on a real small model: our layout vs a naive one, side by side.

A generated home of 25, 100 and 250 exposed entities and a 5-turn conversation:
- ours: static prefix (instructions, tool declarations, entity catalogue without state), then the
  turns; follow-up turns reuse the KV cache and evaluate only what is new;
- naive: the same with live states and the clock at the top of the system prompt (what a prompt
  with states would be), so every turn re-evaluates everything.
Prints evaluated prompt tokens per follow-up turn (ratio naive/ours), time to first token warm vs
cold, decode speed through the engine vs raw llama_cpp.Llama, the event loop's maximum lag while
generating, and peak RSS. Usage: .venv/bin/python bench/prompt_cache.py [MODEL.gguf]
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import random
import resource
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "custom_components" / "gemma_edge"))

from engine.local_engine import LocalEngine, StepOptions  # noqa: E402
from engine.grammar import ToolSpec  # noqa: E402
from engine.llama_model import EngineSettings  # noqa: E402

MODELS = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))
MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else MODELS / "gemma-3-270m-q4_k_m.gguf"
AREAS = ["Kitchen", "Living Room", "Bedroom", "Office", "Hallway", "Garage", "Garden", "Bathroom", "Attic", "Porch"]
KINDS = [("light", "Light", ["on", "off"]), ("switch", "Socket", ["on", "off"]), ("sensor", "Temperature", ["21.5", "19.0"]),
         ("cover", "Blind", ["open", "closed"]), ("binary_sensor", "Motion", ["on", "off"])]  # fmt: skip
TURNS = ["Turn on the kitchen light", "And the office socket", "Is the garage blind open?", "Turn it off", "Thanks"]
TOOLS = [
    ToolSpec("HassTurnOn", "Turns on a device.", {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}}}),
    ToolSpec("HassTurnOff", "Turns off a device.", {"type": "object", "properties": {"name": {"type": "string"}, "area": {"type": "string"}}}),
    ToolSpec("GetLiveContext", "Current states of devices.", {"type": "object", "properties": {}}),
]
OPTIONS = StepOptions(max_tokens=16, temperature=0.0, tool_choice="none")


def home(size: int, rng: random.Random) -> list[tuple[str, str, str]]:
    entities = []
    for index in range(size):
        domain, noun, states = KINDS[index % len(KINDS)]
        area = AREAS[(index // len(KINDS)) % len(AREAS)]
        entities.append((f"{area} {noun} {index // (len(KINDS) * len(AREAS)) + 1}", domain, rng.choice(states)))
    return entities


def system_prompt(entities: list[tuple[str, str, str]], live: bool, turn: int) -> str:
    head = "You are a voice assistant for Home Assistant. Answer briefly.\n"
    if live:  # the naive layout: a clock and live states, changing every turn
        head = f"Current time is 12:{turn:02d}:{turn * 7 % 60:02d}.\n" + head
        lines = [f"- {name} ({domain}): {state if turn % 2 else 'on'}" for name, domain, state in entities]
    else:
        lines = [f"- {name} ({domain})" for name, domain, _ in sorted(entities)]
    return head + "Devices:\n" + "\n".join(lines)


async def conversation(engine: LocalEngine, entities: list[tuple[str, str, str]], live: bool) -> list[dict[str, float]]:
    messages: list[dict[str, object]] = []
    results = []
    for turn, text in enumerate(TURNS):
        messages = [{"role": "system", "content": system_prompt(entities, live, turn)}, *messages[1:]]
        messages.append({"role": "user", "content": text})
        answer, _, stats = await engine.async_complete(messages, TOOLS, OPTIONS)
        messages.append({"role": "assistant", "content": answer})
        results.append({"evaluated": stats.evaluated_tokens, "prompt": stats.prompt_tokens, "ttft": stats.time_to_first_token_s})
    return results


async def loop_lag_during(engine: LocalEngine, entities: list[tuple[str, str, str]]) -> float:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            start = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - start - 0.005)

    task = asyncio.ensure_future(ticker())
    await engine.async_complete(
        [{"role": "system", "content": system_prompt(entities, False, 0)}, {"role": "user", "content": "Describe the home."}],
        TOOLS, StepOptions(max_tokens=64, temperature=0.0, tool_choice="none"),
    )  # fmt: skip
    stop.set()
    await task
    return max(lags)


def raw_decode_speed(prompt_tokens: list[int], n: int) -> float:
    import llama_cpp  # noqa: PLC0415

    llm = llama_cpp.Llama(str(MODEL), n_ctx=8192, n_threads=os.cpu_count() or 2, flash_attn=True, verbose=False)
    start = time.monotonic()
    for i, token in enumerate(llm.generate(prompt_tokens, temp=0.0, top_k=1, reset=False)):
        if i == 0:
            start = time.monotonic()
        if i >= n:
            break
    speed = n / (time.monotonic() - start)
    llm.close()
    return speed


async def main() -> None:
    rng = random.Random(7)
    print(f"model: {MODEL.name}; 5-turn conversation; greedy, 16 answer tokens a turn")
    print(f"{'entities':>8} {'prompt':>7} {'naive eval/turn':>15} {'ours eval/turn':>14} {'ratio':>6} "
          f"{'ttft cold':>9} {'ttft warm':>9} {'warm/cold':>9}")  # fmt: skip
    engine = LocalEngine(EngineSettings(str(MODEL), n_ctx=8192))
    await engine.async_load()
    for size in (25, 100, 250):
        entities = home(size, rng)
        naive = await conversation(engine, entities, live=True)
        ours = await conversation(engine, entities, live=False)
        naive_follow = sum(r["evaluated"] for r in naive[1:]) / 4
        ours_follow = sum(r["evaluated"] for r in ours[1:]) / 4
        cold, warm = ours[0]["ttft"], sum(r["ttft"] for r in ours[1:]) / 4
        print(f"{size:>8} {ours[-1]['prompt']:>7} {naive_follow:>15.0f} {ours_follow:>14.0f} {naive_follow / ours_follow:>6.1f} "
              f"{cold:>8.2f}s {warm:>8.2f}s {warm / cold:>9.2f}")  # fmt: skip
    lag = await loop_lag_during(engine, home(100, rng))
    # decode speed: our engine vs raw llama-cpp-python on the same prompt
    prompt = [{"role": "system", "content": system_prompt(home(100, rng), False, 0)}, {"role": "user", "content": "Describe the home."}]
    n = 128
    _, _, stats = await engine.async_complete(prompt, (), StepOptions(max_tokens=n, temperature=0.0, top_k=1, tool_choice="none"))
    ours_speed = stats.decode_tokens_per_s
    tokens = engine.worker.run_sync(lambda: engine.model.tokenize(engine.model.chat_format.render(prompt, ())))
    await engine.async_unload()
    raw_speed = raw_decode_speed(tokens, n)
    print(f"decode: engine {ours_speed:.1f} tok/s vs raw llama_cpp {raw_speed:.1f} tok/s -> {ours_speed / raw_speed:.2f}")
    print(f"event loop max lag while generating: {lag * 1000:.1f} ms")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
