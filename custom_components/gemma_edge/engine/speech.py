"""Speech to text with faster-whisper on its own worker thread.

Plain Python, no Home Assistant. Home Assistant hands STT 16 kHz 16-bit mono PCM; it is
converted with numpy, never through a file (faster-whisper's own decoding breaks with
PyAV 19). Transcription is bounded in duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
import logging
import time
from typing import Any

from .worker import SerialWorker, WorkerBusyError, WorkerStoppedError

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2
MAX_AUDIO_SECONDS = 30.0


class SpeechError(Exception):
    """Transcription failed; the message says why."""


@dataclass(frozen=True)
class SpeechSettings:
    """A faster-whisper model and how to decode.

    The model is a local CTranslate2 folder or a size name.
    """

    model: str
    language: str | None = "en"
    beam_size: int = 1
    vad_filter: bool = True
    compute_type: str = "int8"
    threads: int = 0


@dataclass(frozen=True)
class Transcript:
    """The text of an audio clip, its duration and how long transcribing it took."""

    text: str
    audio_seconds: float
    transcribe_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Seconds of transcribing per second of audio (0.0 without audio)."""
        return (
            self.transcribe_seconds / self.audio_seconds if self.audio_seconds else 0.0
        )


def pcm16_to_float(pcm: bytes) -> Any:
    """Convert 16-bit little-endian mono PCM to float32 in [-1, 1].

    An odd trailing byte is dropped.
    """
    import numpy as np  # noqa: PLC0415

    usable = len(pcm) - len(pcm) % 2
    return np.frombuffer(pcm[:usable], dtype="<i2").astype(np.float32) / 32768.0


class WhisperTranscriber:
    """Loads the model lazily and transcribes.

    The model loads ahead when the first audio chunk arrives, or with the first
    transcription.
    """

    def __init__(self, settings: SpeechSettings) -> None:
        """Set up the speech worker thread; the model is not loaded yet."""
        self.settings = settings
        self._worker = SerialWorker(name="gemma_edge_whisper", max_pending=4)
        self._model: Any = None
        self._loading: asyncio.Future[None] | None = None

    @property
    def loaded(self) -> bool:
        """The model is loaded."""
        return self._model is not None

    def _load(self) -> None:
        if self._model is not None:
            return
        # Heavy imports, only on the speech thread when the model is needed.
        from faster_whisper import WhisperModel  # noqa: PLC0415
        import tqdm  # noqa: PLC0415

        # faster-whisper's progress bars would start tqdm's monitor thread, which never
        # ends
        tqdm.tqdm.monitor_interval = 0

        started = time.monotonic()
        try:
            self._model = WhisperModel(
                self.settings.model,
                device="cpu",
                compute_type=self.settings.compute_type,
                cpu_threads=self.settings.threads,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise SpeechError(
                f"cannot load the speech model {self.settings.model}: {err}"
            ) from err
        _LOGGER.info(
            "Loaded speech model %s in %.1f s",
            self.settings.model,
            time.monotonic() - started,
        )

    async def async_load(self) -> None:
        """Load (once); concurrent callers wait for the same load."""
        if self._loading is None or (
            self._loading.done() and self._loading.exception()
        ):
            self._loading = asyncio.wrap_future(self._submit(self._load))
        await asyncio.shield(self._loading)

    def _submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Submit a job to the speech thread.

        A full or stopped thread is a SpeechError.
        """
        try:
            return self._worker.submit(job)
        except (WorkerBusyError, WorkerStoppedError) as err:
            raise SpeechError(
                f"speech recognition is not available right now: {err}"
            ) from err

    def _transcribe(self, pcm: bytes, hotwords: str | None) -> Transcript:
        self._load()
        audio = pcm16_to_float(pcm)
        seconds = len(audio) / SAMPLE_RATE
        if seconds < 0.1:
            return Transcript("", seconds, 0.0)
        started = time.monotonic()
        try:
            segments, _info = self._model.transcribe(
                audio,
                language=self.settings.language,
                beam_size=self.settings.beam_size,
                vad_filter=self.settings.vad_filter,
                without_timestamps=True,
                condition_on_previous_text=False,
                hotwords=hotwords or None,
            )
            # the generator is lazy
            text = "".join(segment.text for segment in segments).strip()
        except (RuntimeError, ValueError) as err:
            # e.g. a language code Whisper does not know
            raise SpeechError(f"transcription failed: {err}") from err
        return Transcript(text, seconds, time.monotonic() - started)

    async def async_transcribe(
        self, pcm: bytes, hotwords: str | None = None
    ) -> Transcript:
        """Transcribe 16 kHz 16-bit mono PCM on the speech thread."""
        return await asyncio.wrap_future(
            self._submit(lambda: self._transcribe(pcm, hotwords))
        )

    async def async_unload(self) -> None:
        """Free the model's memory (it loads again with the next audio)."""

        def unload() -> None:
            self._model = None

        await asyncio.wrap_future(self._worker.submit(unload))
        self._loading = None

    async def async_close(self) -> None:
        """Drop the model and stop the speech thread."""
        self._model = None
        await asyncio.get_running_loop().run_in_executor(None, self._worker.stop)
