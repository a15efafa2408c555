"""Speech benchmark (run: bench/speech): faster-whisper tiny.en real-time factor on synthesised
commands, and a voice command's latency through a real Assist pipeline, split into STT / LLM
prefill / decode / action. Only runs when GEMMA_EDGE_BENCH=1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge.engine.speech import SpeechSettings, WhisperTranscriber
from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType, PipelineStage
from homeassistant.components.assist_pipeline import async_pipeline_from_audio_stream
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component

from tests.conftest import SMALL_MODEL_AGENT, WHISPER_TINY_EN, async_create_local_entry, record_steps
from tests.test_speech import COMMANDS, speak
from tests.test_stt import METADATA, add_stt, chunks

pytestmark = pytest.mark.skipif(os.environ.get("GEMMA_EDGE_BENCH") != "1", reason="benchmark: run bench/speech")


async def test_speech_benchmark(hass: HomeAssistant, gemma3_path: Path, lights: list[str], tmp_path: Path) -> None:
    transcriber = WhisperTranscriber(SpeechSettings(str(WHISPER_TINY_EN)))
    await transcriber.async_load()
    print("\nfaster-whisper tiny.en, int8, 2 CPU cores:")
    for command in COMMANDS * 2:
        t = await transcriber.async_transcribe(speak(command, tmp_path))
        print(f"  {t.audio_seconds:4.2f} s audio -> {t.transcribe_seconds:4.2f} s, RTF {t.real_time_factor:.2f}: {t.text!r}")
    await transcriber.async_close()

    assert await async_setup_component(hass, "assist_pipeline", {})
    entry = await async_create_local_entry(hass, gemma3_path, SMALL_MODEL_AGENT)
    engine = entry.runtime_data.engine
    steps = record_steps(engine)
    pipeline = async_get_pipeline(hass)
    await async_update_pipeline(
        hass, pipeline, conversation_engine="conversation.gemma_conversation", stt_engine=await add_stt(hass, entry),
        stt_language="en", tts_engine=None, prefer_local_intents=False,
    )  # fmt: skip
    for label in ("cold (models load on first use)", "warm"):
        events: list[PipelineEvent] = []
        steps.clear()
        await async_pipeline_from_audio_stream(
            hass, context=Context(), event_callback=events.append, stt_metadata=METADATA,
            stt_stream=chunks(speak("Turn on the kitchen light", tmp_path)), pipeline_id=pipeline.id,
            start_stage=PipelineStage.STT, end_stage=PipelineStage.INTENT,
        )  # fmt: skip
        at = {event.type: event.timestamp for event in events}

        def seconds(a: Any, b: Any) -> float:
            from homeassistant.util import dt as dt_util  # noqa: PLC0415

            return (dt_util.parse_datetime(at[b]) - dt_util.parse_datetime(at[a])).total_seconds()

        stt_s = seconds(PipelineEventType.STT_START, PipelineEventType.STT_END)
        intent_s = seconds(PipelineEventType.INTENT_START, PipelineEventType.INTENT_END)
        prefill = sum(s.time_to_first_token_s for s in steps)
        decode = sum(s.total_s - s.time_to_first_token_s for s in steps)
        print(
            f"voice command, {label}: STT {stt_s:.2f} s | LLM prefill {prefill:.2f} s | decode {decode:.2f} s | "
            f"action and the rest {max(0.0, intent_s - prefill - decode):.2f} s | total {stt_s + intent_s:.2f} s"
        )
        light = hass.states.get("light.kitchen_light")
        hass.states.async_set(light.entity_id, "off", light.attributes)
    await hass.config_entries.async_unload(entry.entry_id)
