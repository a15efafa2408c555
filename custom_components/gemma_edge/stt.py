"""Speech-to-text entities (faster-whisper) for Assist pipelines.

One entity per `stt` subentry.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

from homeassistant.components import stt
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_call_later

from . import GemmaConfigEntry
from .action_events import SpeechReport, signal_speech
from .const import (
    CONF_STT_BEAM_SIZE,
    CONF_STT_LANGUAGE,
    CONF_STT_MODEL,
    CONF_STT_VAD,
    LOGGER,
    SUBENTRY_STT,
)
from .engine.speech import (
    BYTES_PER_SECOND,
    MAX_AUDIO_SECONDS,
    SpeechError,
    SpeechSettings,
    WhisperTranscriber,
)
from .entity import speech_device_info
from .repairs import ISSUE_SPEECH_UNAVAILABLE, raise_issue
from .speech_runtime import async_install_faster_whisper
from .tools import exposed_names

IDLE_UNLOAD_S = 600
# whisper's prompt window is short; names beyond this are left out
MAX_HOTWORD_CHARS = 400

# The engine's worker queues and bounds the model's work itself.
PARALLEL_UPDATES = 0


def speech_hotwords(hass: HomeAssistant) -> str | None:
    """Return the exposed entity and area names as hotwords.

    Whisper is prompted with them, so "Kitchen Light" is heard as a name.
    """
    names = exposed_names(hass)
    return ", ".join([*names["entities"], *names["areas"]])[:MAX_HOTWORD_CHARS] or None


async def async_setup_entry(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the speech-to-text entities of the entry's stt subentries."""
    subentries = [
        s for s in entry.subentries.values() if s.subentry_type == SUBENTRY_STT
    ]
    if not subentries:
        return
    # Installed only when speech is wanted: CTranslate2 has no wheels for every platform
    # (musl), and the agent must keep working where it cannot be installed.
    try:
        await async_install_faster_whisper(hass)
    except HomeAssistantError as err:
        LOGGER.error("Speech-to-text is unavailable: %s", err)
        raise_issue(
            hass,
            ISSUE_SPEECH_UNAVAILABLE,
            entry.entry_id,
            error=str(err),
            title=entry.title,
        )
        return
    for subentry in subentries:
        async_add_entities(
            [WhisperSTTEntity(entry, subentry)], config_subentry_id=subentry.subentry_id
        )


class WhisperSTTEntity(stt.SpeechToTextEntity):
    """Speech-to-text entity that transcribes Assist audio on the hub.

    Exposed device and area names are hotwords.
    """

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: GemmaConfigEntry, subentry: ConfigSubentry) -> None:
        """Set up the entity from the subentry's model, language and decoding."""
        self._entry_id = entry.entry_id
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = speech_device_info(subentry)
        language = subentry.data.get(CONF_STT_LANGUAGE) or None
        self._language = language
        self._unload_timer: Callable[[], None] | None = None
        self._transcriber = WhisperTranscriber(
            SpeechSettings(
                model=subentry.data[CONF_STT_MODEL],
                language=language,
                beam_size=int(subentry.data.get(CONF_STT_BEAM_SIZE, 1)),
                vad_filter=bool(subentry.data.get(CONF_STT_VAD, True)),
            )
        )

    async def async_will_remove_from_hass(self) -> None:
        """Cancel the idle unload and close the transcriber."""
        self._cancel_unload()
        await self._transcriber.async_close()

    def _cancel_unload(self) -> None:
        if self._unload_timer is not None:
            self._unload_timer()
            self._unload_timer = None

    def _schedule_unload(self) -> None:
        """Free the model after IDLE_UNLOAD_S without audio.

        The LLM shares the hub's memory.
        """
        self._cancel_unload()

        async def unload(_now: object) -> None:
            self._unload_timer = None
            await self._transcriber.async_unload()
            LOGGER.debug("Speech model unloaded after %d s idle", IDLE_UNLOAD_S)

        self._unload_timer = async_call_later(self.hass, IDLE_UNLOAD_S, unload)

    @property
    def supported_languages(self) -> list[str]:
        """Return the configured language, or the languages offered without one."""
        return (
            [self._language]
            if self._language
            else ["en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "da"]
        )

    @property
    def supported_formats(self) -> list[stt.AudioFormats]:
        """Return the audio formats the model accepts."""
        return [stt.AudioFormats.WAV]

    @property
    def supported_codecs(self) -> list[stt.AudioCodecs]:
        """Return the audio codecs the model accepts."""
        return [stt.AudioCodecs.PCM]

    @property
    def supported_bit_rates(self) -> list[stt.AudioBitRates]:
        """Return the audio bit rates the model accepts."""
        return [stt.AudioBitRates.BITRATE_16]

    @property
    def supported_sample_rates(self) -> list[stt.AudioSampleRates]:
        """Return the audio sample rates the model accepts."""
        return [stt.AudioSampleRates.SAMPLERATE_16000]

    @property
    def supported_channels(self) -> list[stt.AudioChannels]:
        """Return the audio channel counts the model accepts."""
        return [stt.AudioChannels.CHANNEL_MONO]

    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        """Transcribe the audio stream.

        Collect at most MAX_AUDIO_SECONDS of audio (loading the model meanwhile), then
        transcribe.
        """
        self._cancel_unload()
        loading = self.hass.async_create_task(
            self._transcriber.async_load(), eager_start=True
        )
        audio = bytearray()
        limit = int(MAX_AUDIO_SECONDS * BYTES_PER_SECOND)
        async for chunk in stream:
            audio.extend(chunk[: limit - len(audio)])
            if len(audio) >= limit:
                LOGGER.warning(
                    "Speech longer than %.0f s: the rest is ignored", MAX_AUDIO_SECONDS
                )
                break
        try:
            await loading
            transcript = await self._transcriber.async_transcribe(
                bytes(audio), speech_hotwords(self.hass)
            )
        except SpeechError as err:
            LOGGER.error("Speech to text failed: %s", err)
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        finally:
            self._schedule_unload()
        if not transcript.text:
            LOGGER.info(
                "No speech recognised in %.1f s of audio", transcript.audio_seconds
            )
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        LOGGER.debug(
            "Transcribed %.1f s of audio in %.2f s",
            transcript.audio_seconds,
            transcript.transcribe_seconds,
        )
        async_dispatcher_send(
            self.hass,
            signal_speech(self._entry_id),
            SpeechReport(transcript.audio_seconds, transcript.transcribe_seconds),
        )
        return stt.SpeechResult(transcript.text, stt.SpeechResultState.SUCCESS)
