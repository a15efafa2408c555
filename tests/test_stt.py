"""The STT entity in a real Home Assistant, and a voice command through a real Assist pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from homeassistant.components import stt
from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType, PipelineStage
from homeassistant.components.assist_pipeline import async_pipeline_from_audio_stream
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component

from custom_components.gemma_edge.const import DOMAIN

from .conftest import SMALL_MODEL_AGENT, WHISPER_TINY_EN, async_create_local_entry
from .test_speech import normal, speak

METADATA = stt.SpeechMetadata(
    language="en", format=stt.AudioFormats.WAV, codec=stt.AudioCodecs.PCM, bit_rate=stt.AudioBitRates.BITRATE_16,
    sample_rate=stt.AudioSampleRates.SAMPLERATE_16000, channel=stt.AudioChannels.CHANNEL_MONO,
)  # fmt: skip


async def chunks(pcm: bytes, size: int = 3200) -> AsyncIterator[bytes]:
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


async def add_stt(hass: HomeAssistant, entry: ConfigEntry) -> str:
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "stt"), context={"source": "user"})
    bad = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Speech", "model": "/nowhere", "language": "en", "beam_size": 1, "vad_filter": True}
    )
    assert bad["errors"] == {"model": "stt_model_not_found"}
    # a language code Whisper does not know is refused here, not at the first transcription
    bad = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Speech", "model": str(WHISPER_TINY_EN), "language": "xx", "beam_size": 1, "vad_filter": True}
    )
    assert bad["errors"] == {"language": "unknown_language"}
    done = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"name": "Speech", "model": str(WHISPER_TINY_EN), "language": "en", "beam_size": 1, "vad_filter": True},
    )
    assert done["type"] == "create_entry"
    await hass.async_block_till_done()
    assert hass.states.get("stt.speech") is not None
    return "stt.speech"


async def test_stt_entity_transcribes_and_rejects_bad_audio(
    hass: HomeAssistant, smollm2_path: Path, lights: list[str], tmp_path: Path
) -> None:
    assert await async_setup_component(hass, "stt", {})
    entry = await async_create_local_entry(hass, smollm2_path)
    entity = stt.async_get_speech_to_text_entity(hass, await add_stt(hass, entry))
    assert entity is not None
    result = await entity.async_process_audio_stream(METADATA, chunks(speak("Turn off the porch light", tmp_path)))
    assert result.result is stt.SpeechResultState.SUCCESS
    assert normal(result.text or "") == "turn off the porch light"
    for bad in (b"", bytes(32000), b"\x01"):
        empty = await entity.async_process_audio_stream(METADATA, chunks(bad))
        assert empty.result is stt.SpeechResultState.ERROR and empty.text is None
    await hass.config_entries.async_unload(entry.entry_id)


async def test_voice_command_through_an_assist_pipeline(
    hass: HomeAssistant, gemma3_path: Path, lights: list[str], tmp_path: Path
) -> None:
    """Synthesised speech -> our STT -> our agent (Gemma 3 270M) -> the kitchen light turns on."""
    assert await async_setup_component(hass, "assist_pipeline", {})
    entry = await async_create_local_entry(hass, gemma3_path, SMALL_MODEL_AGENT)
    stt_entity = await add_stt(hass, entry)
    pipeline = async_get_pipeline(hass)
    await async_update_pipeline(
        hass, pipeline, conversation_engine="conversation.gemma_conversation", stt_engine=stt_entity,
        stt_language="en", tts_engine=None, prefer_local_intents=False,
    )  # fmt: skip
    events: list[PipelineEvent] = []
    await async_pipeline_from_audio_stream(
        hass, context=Context(), event_callback=events.append, stt_metadata=METADATA,
        stt_stream=chunks(speak("Turn on the kitchen light", tmp_path)), pipeline_id=pipeline.id,
        start_stage=PipelineStage.STT, end_stage=PipelineStage.INTENT,
    )  # fmt: skip
    await hass.async_block_till_done()
    by_type: dict[Any, Any] = {event.type: event.data for event in events}
    assert PipelineEventType.ERROR not in by_type, by_type.get(PipelineEventType.ERROR)
    assert normal(by_type[PipelineEventType.STT_END]["stt_output"]["text"]) == "turn on the kitchen light"
    assert hass.states.get("light.kitchen_light").state == "on"
    # the dashboard's usage figures: one transcription of the spoken sentence, one model turn
    turns_today = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_turns_today")
    usage = hass.states.get(turns_today).attributes
    assert (usage["transcriptions"], usage["model"]) == (1, 1) and 0.5 < usage["speech_seconds"] < 10
    await hass.config_entries.async_unload(entry.entry_id)


async def test_endless_stream_is_bounded_and_idle_model_unloads(
    hass: HomeAssistant, smollm2_path: Path, lights: list[str], tmp_path: Path
) -> None:
    """A stream that never ends is cut at 30 s of audio; the model is freed after 10 idle minutes."""
    from datetime import timedelta  # noqa: PLC0415

    from homeassistant.util import dt as dt_util  # noqa: PLC0415
    from pytest_homeassistant_custom_component.common import async_fire_time_changed  # noqa: PLC0415

    assert await async_setup_component(hass, "stt", {})
    entry = await async_create_local_entry(hass, smollm2_path)
    entity = stt.async_get_speech_to_text_entity(hass, await add_stt(hass, entry))
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 3200
            yield bytes(3200)

    result = await entity.async_process_audio_stream(METADATA, endless())
    assert result.result is stt.SpeechResultState.ERROR  # silence: nothing recognised
    assert sent <= 30 * 32000 + 3200  # stopped reading at the bound
    assert entity._transcriber.loaded  # noqa: SLF001 - kept warm for the next command
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=601))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert not entity._transcriber.loaded  # noqa: SLF001
    await hass.config_entries.async_unload(entry.entry_id)


WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


async def _entry_in(hass: HomeAssistant, smollm2_path: Path, folder: Path) -> Any:
    """An engine entry whose model lies in ``folder`` (a link to the test model)."""
    folder.mkdir(parents=True)
    (folder / smollm2_path.name).symlink_to(smollm2_path)
    return await async_create_local_entry(hass, folder / smollm2_path.name)


async def _start_download(hass: HomeAssistant, entry: Any) -> Any:
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "stt"), context={"source": "user"})
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Speech", "model": "tiny.en", "language": "en", "beam_size": 1, "vad_filter": True}
    )
    assert result["type"] == "progress"
    return result


async def test_whisper_size_downloads_with_progress(
    hass: HomeAssistant, smollm2_path: Path, socket_enabled: None, monkeypatch: Any, tmp_path: Path
) -> None:
    """Choosing a size downloads its files through huggingface_hub's metadata, verified, with
    progress, into the folder the LLM lies in (not the media folder)."""
    from homeassistant.core import callback  # noqa: PLC0415
    from homeassistant.data_entry_flow import EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE  # noqa: PLC0415

    from .fake_hub import FakeHub, HubFile, serve_fake_hub  # noqa: PLC0415

    hub = FakeHub({f"Systran/faster-whisper-tiny.en/{name}": HubFile(WHISPER_TINY_EN / name) for name in WHISPER_FILES})
    hass.config.media_dirs = {"local": str(tmp_path / "media")}
    entry = await _entry_in(hass, smollm2_path, tmp_path / "models")
    progress: list[float] = []
    hass.bus.async_listen(EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, callback(lambda e: progress.append(e.data["progress"])))
    with serve_fake_hub(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = await _start_download(hass, entry)
        await hass.async_block_till_done(wait_background_tasks=True)
        result = await hass.config_entries.subentries.async_configure(result["flow_id"])
    assert result["type"] == "create_entry", result
    folder = tmp_path / "models" / "faster-whisper-tiny.en"
    assert (folder / "model.bin").read_bytes() == (WHISPER_TINY_EN / "model.bin").read_bytes()
    assert not (tmp_path / "media").exists()
    assert progress and progress == sorted(progress) and progress[-1] == 1.0
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "stt")
    assert subentry.data["model"] == str(folder)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_closing_the_download_flow_stops_its_download(
    hass: HomeAssistant, smollm2_path: Path, socket_enabled: None, monkeypatch: Any, tmp_path: Path
) -> None:
    """A closed flow's thread used to keep downloading, and a new flow then wrote the same part
    file from a second thread. Closing it stops the transfer; the next flow resumes the part."""
    from .fake_hub import FakeHub, HubFile, serve_fake_hub  # noqa: PLC0415

    hub = FakeHub({f"Systran/faster-whisper-tiny.en/{name}": HubFile(WHISPER_TINY_EN / name) for name in WHISPER_FILES})
    hub.files["Systran/faster-whisper-tiny.en/model.bin"].seconds_per_mb = 5.0  # about 3 minutes for tiny.en
    entry = await _entry_in(hass, smollm2_path, tmp_path / "models")
    part = tmp_path / "models" / "faster-whisper-tiny.en" / "model.bin.part"
    with serve_fake_hub(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = await _start_download(hass, entry)
        for _ in range(100):  # until the transfer has begun
            await asyncio.sleep(0.05)
            if part.exists() and part.stat().st_size:
                break
        hass.config_entries.subentries.async_abort(result["flow_id"])
        async with asyncio.timeout(30):  # far less than the whole transfer
            await hass.async_block_till_done(wait_background_tasks=True)
        stopped_at = part.stat().st_size
        assert 0 < stopped_at < (WHISPER_TINY_EN / "model.bin").stat().st_size
        hub.files["Systran/faster-whisper-tiny.en/model.bin"].seconds_per_mb = 0.0
        result = await _start_download(hass, entry)
        await hass.async_block_till_done(wait_background_tasks=True)
        result = await hass.config_entries.subentries.async_configure(result["flow_id"])
    assert result["type"] == "create_entry", result
    model = tmp_path / "models" / "faster-whisper-tiny.en" / "model.bin"
    assert model.read_bytes() == (WHISPER_TINY_EN / "model.bin").read_bytes()
    ranges = [r for method, path, r in hub.requests if method == "GET" and path.endswith("model.bin")]
    assert ranges[-1] == f"bytes={stopped_at}-"  # resumed where the closed flow stopped
    await hass.config_entries.async_unload(entry.entry_id)


async def test_hotwords_are_the_exposed_names(hass: HomeAssistant, lights: list[str]) -> None:
    from custom_components.gemma_edge.stt import speech_hotwords  # noqa: PLC0415
    from homeassistant.helpers import area_registry as ar  # noqa: PLC0415

    ar.async_get(hass).async_create("Garden")
    hotwords = speech_hotwords(hass)
    assert hotwords is not None
    assert {"Kitchen Light", "Bedroom Lamp", "Porch Light", "Garden"} <= set(hotwords.split(", "))
    assert "Doorbell" not in hotwords  # buttons are not exposed by default


async def test_where_faster_whisper_cannot_be_installed_the_flow_points_to_wyoming(
    hass: HomeAssistant, smollm2_path: Path, monkeypatch: Any
) -> None:
    """Home Assistant OS and Container (musl): CTranslate2 has no wheels. Simulated (this machine is
    glibc and has faster-whisper): the flow says what to use instead, before any form."""
    from dataclasses import replace  # noqa: PLC0415

    from custom_components.gemma_edge import speech_runtime  # noqa: PLC0415

    entry = await async_create_local_entry(hass, smollm2_path)
    monkeypatch.setattr(speech_runtime, "faster_whisper_installed", lambda: False)
    glibc_host = speech_runtime.detect_host()
    monkeypatch.setattr(speech_runtime, "detect_host", lambda: replace(glibc_host, libc="musl"))
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "stt"), context={"source": "user"})
    assert result["type"] == "abort" and result["reason"] == "speech_needs_wyoming"
    assert "no builds for musl" in result["description_placeholders"]["error"]
    assert not [s for s in entry.subentries.values() if s.subentry_type == "stt"]


async def test_speech_subentry_reconfigure(hass: HomeAssistant, smollm2_path: Path) -> None:
    """The speech entity's settings can be changed later; the entity comes back with them."""
    entry = await async_create_local_entry(hass, smollm2_path)
    await add_stt(hass, entry)
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "stt")
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "stt"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    assert result["step_id"] == "user" and "name" not in result["data_schema"].schema
    bad = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"model": str(WHISPER_TINY_EN), "language": "xx", "beam_size": 2, "vad_filter": False}
    )
    assert bad["errors"] == {"language": "unknown_language"}
    done = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"model": str(WHISPER_TINY_EN), "language": "de", "beam_size": 2, "vad_filter": False}
    )
    assert done["type"] == "abort" and done["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    data = entry.subentries[subentry.subentry_id].data
    assert data == {"model": str(WHISPER_TINY_EN), "language": "de", "beam_size": 2, "vad_filter": False}
    entity = stt.async_get_speech_to_text_entity(hass, "stt.speech")
    assert entity is not None and entity.supported_languages == ["de"]
    await hass.config_entries.async_unload(entry.entry_id)
