"""Subentry flows: agents and AI Tasks on the entry's model, speech-to-text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import os
from pathlib import Path
import threading
from typing import Any

import voluptuous as vol

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigSubentryFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_LLM_HASS_API, CONF_NAME
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import llm
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    TemplateSelector,
    TextSelector,
)

from .const import (
    CONF_INSTANT_COMMANDS,
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_MODEL_PATH,
    CONF_PROMPT,
    CONF_SENSITIVE_ACTIONS,
    CONF_STT_BEAM_SIZE,
    CONF_STT_LANGUAGE,
    CONF_STT_MODEL,
    CONF_STT_VAD,
    CONF_TEMPERATURE,
    CONF_TOOL_CHOICE,
    DEFAULT_AI_TASK_MAX_TOKENS,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_INSTANT_COMMANDS,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SENSITIVE_ACTIONS,
    DEFAULT_STT_NAME,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOOL_CHOICE,
    LOGGER,
    SENSITIVE_CHOICES,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
    TOOL_CHOICES,
)
from .engine.download import download_files, resolve_remote_file
from .flow_download import FlowDownload, default_download_dir
from .speech_runtime import async_faster_whisper_problem

AI_TASK_DEFAULTS: dict[str, Any] = {
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_AI_TASK_MAX_TOKENS,
}
CONVERSATION_DEFAULTS: dict[str, Any] = {
    CONF_INSTANT_COMMANDS: DEFAULT_INSTANT_COMMANDS,
    CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
    CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
    CONF_MAX_HISTORY: DEFAULT_MAX_HISTORY,
    CONF_TOOL_CHOICE: DEFAULT_TOOL_CHOICE,
    CONF_SENSITIVE_ACTIONS: DEFAULT_SENSITIVE_ACTIONS,
}
# Per model subentry type: its defaults and the name a new one gets.
MODEL_SUBENTRIES: dict[str, tuple[dict[str, Any], str]] = {
    SUBENTRY_CONVERSATION: (CONVERSATION_DEFAULTS, DEFAULT_CONVERSATION_NAME),
    SUBENTRY_AI_TASK: (AI_TASK_DEFAULTS, DEFAULT_AI_TASK_NAME),
}


def _box(low: float, high: float, step: float) -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(min=low, max=high, step=step, mode=NumberSelectorMode.BOX)
    )


def model_subentry_schema(
    hass: HomeAssistant, subentry_type: str, options: Mapping[str, Any], is_new: bool
) -> vol.Schema:
    """Return the form of a conversation agent or an AI Task.

    Both have a temperature and an answer length; an agent also has instructions,
    the APIs it may use, its memory, its tool use and its policy for sensitive devices.
    """
    defaults, name = MODEL_SUBENTRIES[subentry_type]
    # A new subentry starts from the defaults; an existing one keeps what it has (an
    # agent saved without APIs has no API key and must not get Assist back).
    chosen_apis = (defaults if is_new else options).get(CONF_LLM_HASS_API, [])
    options = {**defaults, **options}
    fields: dict[vol.Marker, Any] = {}
    if is_new:
        fields[vol.Required(CONF_NAME, default=name)] = str
    if subentry_type == SUBENTRY_CONVERSATION:
        apis = [
            SelectOptionDict(label=api.name, value=api.id)
            for api in llm.async_get_apis(hass)
        ]
        known = {api["value"] for api in apis}
        chosen = [api for api in chosen_apis if api in known]
        fields[
            vol.Optional(
                CONF_PROMPT, description={"suggested_value": options.get(CONF_PROMPT)}
            )
        ] = TemplateSelector()
        fields[
            vol.Optional(CONF_LLM_HASS_API, description={"suggested_value": chosen})
        ] = SelectSelector(SelectSelectorConfig(options=apis, multiple=True))
    fields[vol.Required(CONF_TEMPERATURE, default=options[CONF_TEMPERATURE])] = (
        NumberSelector(NumberSelectorConfig(min=0, max=2, step=0.05))
    )
    fields[vol.Required(CONF_MAX_TOKENS, default=options[CONF_MAX_TOKENS])] = _box(
        16, 4096, 16
    )
    if subentry_type == SUBENTRY_CONVERSATION:
        fields[vol.Required(CONF_MAX_HISTORY, default=options[CONF_MAX_HISTORY])] = (
            _box(0, 100, 1)
        )
        fields[vol.Required(CONF_TOOL_CHOICE, default=options[CONF_TOOL_CHOICE])] = (
            SelectSelector(
                SelectSelectorConfig(
                    options=list(TOOL_CHOICES), translation_key=CONF_TOOL_CHOICE
                )
            )
        )
        fields[
            vol.Required(
                CONF_INSTANT_COMMANDS,
                default=options.get(CONF_INSTANT_COMMANDS, DEFAULT_INSTANT_COMMANDS),
            )
        ] = BooleanSelector()
        fields[
            vol.Required(
                CONF_SENSITIVE_ACTIONS, default=options[CONF_SENSITIVE_ACTIONS]
            )
        ] = SelectSelector(
            SelectSelectorConfig(
                options=list(SENSITIVE_CHOICES), translation_key=CONF_SENSITIVE_ACTIONS
            )
        )
    return vol.Schema(fields)


def _model_subentry_data(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """Return the form's answers as subentry data (counts as integers)."""
    data = dict(user_input)
    if CONF_LLM_HASS_API in data and not data[CONF_LLM_HASS_API]:
        del data[CONF_LLM_HASS_API]
    for key in (CONF_MAX_TOKENS, CONF_MAX_HISTORY):
        if key in data:
            data[key] = int(data[key])
    return data


class ModelSubentryFlow(ConfigSubentryFlow):
    """Create or reconfigure a conversation agent or an AI Task on the entry's model."""

    @property
    def _is_new(self) -> bool:
        return self.source == "user"

    async def async_step_set_options(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Show the subentry's form; create or update the subentry."""
        if user_input is not None:
            data = _model_subentry_data(user_input)
            if self._is_new:
                return self.async_create_entry(title=data.pop(CONF_NAME), data=data)
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), data=data
            )
        options = {} if self._is_new else self._get_reconfigure_subentry().data
        schema = model_subentry_schema(
            self.hass, self._subentry_type, options, self._is_new
        )
        return self.async_show_form(step_id="set_options", data_schema=schema)

    async_step_user = async_step_set_options
    async_step_reconfigure = async_step_set_options


STT_MODELS = ["tiny.en", "base.en", "small.en", "tiny", "base", "small"]
WHISPER_REPO = "Systran/faster-whisper-{size}"
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def whisper_knows_language(code: str) -> bool:
    """Return whether Whisper has this language code ("en", "de", ...).

    True when faster-whisper is not installed yet to say. Blocking: the import is heavy.
    """
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES  # noqa: PLC0415
    except ImportError:
        return True
    return code in _LANGUAGE_CODES


def speech_download_dir(hass: HomeAssistant, entry: ConfigEntry) -> Path:
    """Return the folder for a speech model download.

    Next to the LLM (the folder its file was downloaded to, or lies in) when writable;
    else the default download folder. Blocking: checks the disk.
    """
    if model_path := entry.data.get(CONF_MODEL_PATH):  # a server entry has none
        folder = Path(model_path).parent
        if os.access(folder, os.W_OK):
            return folder
    return Path(default_download_dir(hass))


def download_whisper(
    size: str,
    folder: Path,
    progress: Callable[[float], None],
    cancelled: threading.Event,
) -> Path:
    """Download a faster-whisper size from Hugging Face, resumed and verified."""
    repo = WHISPER_REPO.format(size=size)
    target = folder / f"faster-whisper-{size}"
    files = [resolve_remote_file(repo, name) for name in WHISPER_FILES]
    download_files(files, target, progress, cancelled)
    return target


def is_whisper_folder(path: str) -> bool:
    """Return whether ``path`` holds a CTranslate2 faster-whisper model."""
    folder = Path(path)
    return all(
        (folder / name).is_file()
        for name in ("model.bin", "config.json", "tokenizer.json")
    )


class SpeechSubentryFlow(ConfigSubentryFlow):
    """Create or reconfigure a faster-whisper speech-to-text entity.

    A model size (downloaded from Hugging Face with progress, resume and verification)
    or a local CTranslate2 folder; the language, beam size and voice activity filter.
    """

    def __init__(self) -> None:
        """Start with no answers and no download."""
        self._data: dict[str, Any] = {}
        self._download: FlowDownload[Path] = FlowDownload()

    @property
    def _is_new(self) -> bool:
        return self.source == "user"

    @callback
    def async_remove(self) -> None:
        """Stop the download thread when the flow is closed (the part file stays)."""
        self._download.cancel()

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Show the speech form; download a model size or check a local folder."""
        errors: dict[str, str] = {}
        if user_input is None and (
            problem := await async_faster_whisper_problem(self.hass)
        ):
            LOGGER.warning("faster-whisper cannot run here: %s", problem)
            return self.async_abort(
                reason="speech_needs_wyoming",
                description_placeholders={"error": problem},
            )
        if user_input is not None:
            self._data = {
                **user_input,
                CONF_STT_MODEL: user_input[CONF_STT_MODEL].strip(),
                CONF_STT_BEAM_SIZE: int(user_input[CONF_STT_BEAM_SIZE]),
            }
            try:
                if (field := await self._async_check(self._data)) is None:
                    return await self._async_next(self._data[CONF_STT_MODEL])
                errors[field[0]] = field[1]
            except Exception:
                LOGGER.exception("Unexpected error while checking the speech model")
                errors["base"] = "unknown"
        suggested = user_input or (
            {} if self._is_new else dict(self._get_reconfigure_subentry().data)
        )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(self._schema(), suggested),
            errors=errors,
        )

    async_step_reconfigure = async_step_user

    def _schema(self) -> vol.Schema:
        fields: dict[vol.Marker, Any] = {}
        if self._is_new:
            fields[vol.Required(CONF_NAME, default=DEFAULT_STT_NAME)] = str
        fields[vol.Required(CONF_STT_MODEL, default="base.en")] = SelectSelector(
            SelectSelectorConfig(options=STT_MODELS, custom_value=True)
        )
        fields[vol.Optional(CONF_STT_LANGUAGE, default="en")] = TextSelector()
        fields[vol.Required(CONF_STT_BEAM_SIZE, default=1)] = _box(1, 5, 1)
        fields[vol.Required(CONF_STT_VAD, default=True)] = BooleanSelector()
        return vol.Schema(fields)

    async def _async_check(self, data: Mapping[str, Any]) -> tuple[str, str] | None:
        """Return the field and error key of a wrong answer, or None."""
        language = (data.get(CONF_STT_LANGUAGE) or "").strip()
        if language and not await self.hass.async_add_executor_job(
            whisper_knows_language, language
        ):
            return CONF_STT_LANGUAGE, "unknown_language"
        model = data[CONF_STT_MODEL]
        if model in STT_MODELS or await self.hass.async_add_executor_job(
            is_whisper_folder, model
        ):
            return None
        return CONF_STT_MODEL, "stt_model_not_found"

    async def _async_next(self, model: str) -> SubentryFlowResult:
        if model in STT_MODELS:
            return await self.async_step_download()
        return self._finish()

    def _finish(self) -> SubentryFlowResult:
        data = dict(self._data)
        if self._is_new:
            return self.async_create_entry(title=data.pop(CONF_NAME), data=data)
        return self.async_update_and_abort(
            self._get_entry(), self._get_reconfigure_subentry(), data=data
        )

    async def async_step_download(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Download the chosen size next to the LLM, with a progress bar."""
        size = self._data[CONF_STT_MODEL]
        if not self._download.started:
            folder = await self.hass.async_add_executor_job(
                speech_download_dir, self.hass, self._get_entry()
            )

            def job(
                progress: Callable[[float], None], cancelled: threading.Event
            ) -> Path:
                return download_whisper(size, folder, progress, cancelled)

            self._download.async_start(self, job, f"whisper {size}")
        return self._download.async_progress(self, f"faster-whisper {size}")

    async def async_step_download_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """End the flow: the download did not produce a verified model."""
        return self.async_abort(reason=self._download.error)

    async def async_step_download_done(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Create or update the subentry with the downloaded model's folder."""
        self._data[CONF_STT_MODEL] = str(self._download.result)
        return self._finish()
