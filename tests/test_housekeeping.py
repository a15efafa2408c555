"""Time passes with the integration loaded: every interval it schedules runs on the event loop,
with Home Assistant's thread-safety checks active, and does its work."""

from __future__ import annotations

from datetime import timedelta
import io
import logging
from pathlib import Path
import time

from PIL import Image
import pytest

from custom_components.gemma_edge import PRUNE_INTERVAL, VISION_CHECK_INTERVAL, VISION_IDLE
from custom_components.gemma_edge.actions.outcomes import ActionRequest
from custom_components.gemma_edge.actions.records import ActionStatus, ServiceAction
from custom_components.gemma_edge.engine.local_engine import StepOptions
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from .conftest import async_create_local_entry

THREAD_REPORTS = ("from a thread other than the event loop", "thread-safe", "Detected that custom integration")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


async def test_every_interval_runs_on_the_loop_and_does_its_work(
    hass: HomeAssistant, smollm2_path: Path, projectors: dict[str, Path], lights: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The idle projector is freed after VISION_IDLE and the ledger pruned every PRUNE_INTERVAL,
    from timers that run on the event loop (no thread-safety report, no error logged)."""
    caplog.set_level(logging.WARNING)
    entry = await async_create_local_entry(hass, smollm2_path, mmproj_path=projectors["smollm2"])
    engine, executor = entry.runtime_data.engine, entry.runtime_data.executor
    # one action on record and the projector loaded by one image step
    outcome = await executor.async_execute(
        ActionRequest(ServiceAction("light", "turn_on", lights[0]), scope="t", source="service")
    )
    assert outcome.status is ActionStatus.EXECUTED
    assert [o.key for o in await executor.async_recent()] == [outcome.key]
    await engine.async_complete(
        [{"role": "user", "content": "Look.", "images": [_jpeg()]}], options=StepOptions(max_tokens=2)
    )
    assert engine.model is not None and engine.model.vision_loaded

    # the projector is idle by the monotonic clock once VISION_IDLE has passed
    engine._last_vision = time.monotonic() - VISION_IDLE.total_seconds() - 1  # noqa: SLF001
    async_fire_time_changed(hass, dt_util.utcnow() + VISION_CHECK_INTERVAL + timedelta(seconds=1))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert not engine.model.vision_loaded

    # the ledger forgets finished keys past their retention at the next prune
    executor.clock = lambda: time.time() + 73 * 3600
    async_fire_time_changed(hass, dt_util.utcnow() + PRUNE_INTERVAL + timedelta(minutes=2))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert await executor.async_recent() == []

    reports = [r.getMessage() for r in caplog.records if any(text in r.getMessage() for text in THREAD_REPORTS)]
    assert not reports, reports
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    await hass.config_entries.async_unload(entry.entry_id)
