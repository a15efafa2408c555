"""faster-whisper tiny.en on synthesised speech (espeak-ng), and bad audio."""

from __future__ import annotations

from pathlib import Path
import random
import re
import subprocess
import wave

import pytest

from custom_components.gemma_edge.engine.speech import SpeechError, SpeechSettings, WhisperTranscriber, pcm16_to_float

from .conftest import WHISPER_TINY_EN

COMMANDS = ["Turn on the kitchen light", "Turn off the bedroom lamp", "Open the garage door"]


def speak(text: str, folder: Path) -> bytes:
    """Synthesise text to 16 kHz 16-bit mono PCM with espeak-ng and sox (installed by scripts/setup)."""
    raw, pcm = folder / "raw.wav", folder / "pcm.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(pcm)], check=True)
    with wave.open(str(pcm)) as handle:
        return handle.readframes(handle.getnframes())


def normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.fixture
async def transcriber():  # noqa: ANN201
    if not WHISPER_TINY_EN.exists():
        pytest.fail("whisper test model missing: run scripts/setup")
    speech = WhisperTranscriber(SpeechSettings(str(WHISPER_TINY_EN)))
    yield speech
    await speech.async_close()


async def test_commands_are_transcribed(transcriber: WhisperTranscriber, tmp_path: Path) -> None:
    for command in COMMANDS:
        transcript = await transcriber.async_transcribe(speak(command, tmp_path), hotwords="Kitchen Light, Bedroom Lamp, Garage Door")
        assert normal(transcript.text) == normal(command)
        assert transcript.audio_seconds > 0.5


async def test_bad_audio_gives_empty_text(transcriber: WhisperTranscriber) -> None:
    assert (await transcriber.async_transcribe(b"")).text == ""
    assert (await transcriber.async_transcribe(b"\x01")).text == ""  # a truncated sample
    assert (await transcriber.async_transcribe(bytes(16000 * 2 * 2))).text == ""  # 2 s of silence
    rng = random.Random(3)
    noise = bytes(rng.getrandbits(8) >> 4 for _ in range(16000 * 2))  # quiet noise
    assert len((await transcriber.async_transcribe(noise)).text) < 20


def test_pcm_conversion() -> None:
    audio = pcm16_to_float(b"\x00\x80\xff\x7f\x00")
    assert audio.tolist() == [-1.0, 32767 / 32768]


async def test_audio_after_the_speech_thread_stopped_is_a_speech_error(tmp_path: Path) -> None:
    """It used to escape as a raw WorkerStoppedError (the STT entity only catches SpeechError)."""
    speech = WhisperTranscriber(SpeechSettings(str(WHISPER_TINY_EN)))
    await speech.async_close()
    with pytest.raises(SpeechError, match="not available"):
        await speech.async_transcribe(speak("Turn on the light", tmp_path))
