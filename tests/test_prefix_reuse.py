"""KV prefix reuse is correct on Gemma's sliding-window attention, and it is counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from custom_components.gemma_edge.engine.local_engine import LocalEngine, StepOptions
from custom_components.gemma_edge.engine.llama_model import EngineSettings

WORDS = "kitchen light bedroom lamp porch light hallway sensor garage door thermostat".split()


def filler(count: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(count))


async def test_deep_rollback_matches_fresh_evaluation(gemma3_path: Path) -> None:
    """Gemma 3 has a 512-token sliding window. Roll back ~900 tokens into a 2,000-token prompt:
    the reused cache must give exactly the tokens a fresh evaluation gives."""
    settings = EngineSettings(str(gemma3_path), n_ctx=4096)
    greedy = StepOptions(max_tokens=24, temperature=0.0, top_k=1)
    system = {"role": "system", "content": "You describe smart homes. " + filler(600, 1)}
    first = [system, {"role": "user", "content": filler(700, 2) + " What is on?"}]
    second = [system, {"role": "user", "content": filler(120, 3) + " Which lights exist?"}]

    warm = LocalEngine(settings)
    await warm.async_load()
    await warm.async_complete(first, (), greedy)
    reused_text, _, reused_stats = await warm.async_complete(second, (), greedy)
    await warm.async_unload()

    fresh = LocalEngine(settings)
    await fresh.async_load()
    fresh_text, _, fresh_stats = await fresh.async_complete(second, (), greedy)
    await fresh.async_unload()

    assert reused_stats.reused_tokens > 500  # the shared system prompt came from the cache
    assert fresh_stats.reused_tokens == 0
    assert reused_stats.prompt_tokens == fresh_stats.prompt_tokens
    assert reused_text == fresh_text


async def test_priming_warms_the_next_turn_and_yields_to_users(smollm2_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=4096, n_batch=64))
    await engine.async_load()
    system = {"role": "system", "content": "You control a home with these devices: " + filler(400, 5)}
    cached = await engine.async_prime([system], ())
    assert cached > 400
    _, _, stats = await engine.async_complete([system, {"role": "user", "content": "Hi"}], (), StepOptions(max_tokens=4))
    # the primed prefix is reused: only the user turn is evaluated
    assert stats.reused_tokens >= cached - 8 and stats.evaluated_tokens < 30

    # a user request queued during priming pre-empts it after the current batch
    other = [{"role": "system", "content": "A different home: " + filler(900, 9)}]
    priming = asyncio.ensure_future(engine.async_prime(other, ()))
    await asyncio.sleep(0.2)
    answer = asyncio.ensure_future(
        engine.async_complete([system, {"role": "user", "content": "Hi"}], (), StepOptions(max_tokens=4))
    )
    primed = await priming
    assert (await answer)[0] is not None
    full = engine.worker.run_sync(lambda: len(engine.model.tokenize(engine.model.chat_format.render(other, ()))))
    assert 0 < primed < full - 64  # stopped early, the user did not wait for the whole prefix
    await engine.async_unload()
