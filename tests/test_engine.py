"""The engine without Home Assistant: one worker thread, bounded queue, streaming, clean unload."""

from __future__ import annotations

import asyncio
from pathlib import Path
import threading
import time

import pytest

from custom_components.gemma_edge.engine.local_engine import (
    EngineBusyError,
    EngineStatus,
    LocalEngine,
    StepOptions,
    TextDelta,
)
from custom_components.gemma_edge.engine.llama_model import ContextOverflowError, EngineError, EngineSettings
from custom_components.gemma_edge.engine.worker import (
    PRIORITY_AUTOMATION,
    PRIORITY_BACKGROUND,
    PRIORITY_USER,
    SerialWorker,
    WorkerBusyError,
    WorkerStoppedError,
)

HELLO = [{"role": "user", "content": "Say hello to me in one short sentence."}]


async def test_stream_load_unload(smollm2_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=1024))
    assert engine.status is EngineStatus.UNLOADED
    await engine.async_load()
    assert engine.status is EngineStatus.READY
    thread = engine.worker.thread
    deltas = []
    async for event in engine.async_stream_step(HELLO, [], StepOptions(max_tokens=24, temperature=0)):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
    assert len(deltas) >= 2 and "".join(deltas).strip()
    assert engine.last_stats.completion_tokens >= 2
    # every llama.cpp call ran on the worker thread, none on the event loop's
    assert engine.model.threads_used == {thread.name}
    await engine.async_unload()
    assert not thread.is_alive()
    assert engine.status is EngineStatus.UNLOADED
    with pytest.raises(EngineError, match="not loaded"):
        await engine.async_complete(HELLO)


async def test_llama_calls_off_the_worker_are_refused(smollm2_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=512))
    await engine.async_load()
    with pytest.raises(RuntimeError, match="outside the model worker"):
        engine.model.tokenize("hello")
    await engine.async_unload()


async def test_requests_queue_and_overflow_is_busy(smollm2_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=1024), max_pending=2)
    await engine.async_load()
    options = StepOptions(max_tokens=16, temperature=0)
    first = asyncio.ensure_future(engine.async_complete(HELLO, (), options))
    second = asyncio.ensure_future(engine.async_complete(HELLO, (), options))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    with pytest.raises(EngineBusyError):
        await engine.async_complete(HELLO, (), options)
    texts = await asyncio.gather(first, second)
    assert all(text.strip() for text, _, _ in texts)
    # the same prompt twice: the second evaluates only the last token again
    assert engine.last_stats.evaluated_tokens == 1
    await engine.async_unload()


async def test_context_overflow(smollm2_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=256))
    await engine.async_load()
    with pytest.raises(ContextOverflowError, match="context holds 256"):
        await engine.async_complete([{"role": "user", "content": "word " * 400}])
    # the engine stays usable
    text, _, _ = await engine.async_complete(HELLO, (), StepOptions(max_tokens=8))
    assert text
    await engine.async_unload()


async def test_corrupt_model_fails_to_load(tmp_path: Path, smollm2_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smollm2_path.read_bytes()[: 4 << 20])  # header intact, tensors missing
    engine = LocalEngine(EngineSettings(str(broken), n_ctx=512))
    with pytest.raises(EngineError, match="could not load"):
        await engine.async_load()
    assert engine.status is EngineStatus.ERROR
    await engine.async_unload()


async def test_event_loop_stays_responsive_during_generation(smollm2_path: Path) -> None:
    """Measure the loop's lag while the model works: ticks every 5 ms never wait long."""
    engine = LocalEngine(EngineSettings(str(smollm2_path), n_ctx=1024))
    await engine.async_load()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - start - 0.005)

    tick = asyncio.ensure_future(ticker())
    await engine.async_complete(HELLO * 3, (), StepOptions(max_tokens=64))
    done.set()
    await tick
    await engine.async_unload()
    assert len(lags) > 20
    # generous: the loop never stalls for a model call (they take 10-100x longer)
    assert max(lags) < 0.25, max(lags)


def test_worker_runs_jobs_in_priority_order_and_stops() -> None:
    worker = SerialWorker(name="test_worker", max_pending=10)
    gate = threading.Event()
    order: list[str] = []
    blocker = worker.submit(gate.wait)
    background = worker.submit(lambda: order.append("background"), priority=PRIORITY_BACKGROUND)
    automation = worker.submit(lambda: order.append("automation"), priority=PRIORITY_AUTOMATION)
    user = worker.submit(lambda: order.append("user"), priority=PRIORITY_USER)
    gate.set()
    for future in (blocker, background, automation, user):
        future.result(timeout=5)
    assert order == ["user", "automation", "background"]
    worker.stop()
    assert not worker.thread.is_alive()
    with pytest.raises(WorkerStoppedError):
        worker.submit(lambda: None)


def test_worker_bounds_its_queue() -> None:
    worker = SerialWorker(name="test_worker_bound", max_pending=1)
    gate = threading.Event()
    running = worker.submit(gate.wait)
    with pytest.raises(WorkerBusyError):
        worker.submit(lambda: None)
    gate.set()
    running.result(timeout=5)
    worker.stop()
