"""Config flow: one entry per local model engine, conversation agents as subentries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
import os
from pathlib import Path
import threading
from typing import Any

import voluptuous as vol

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlow,
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
    TextSelectorConfig,
    TextSelectorType,
)

from .const import (
    CONF_CAMERA_MIN_INTERVAL,
    CONF_DOWNLOAD_DIR,
    CONF_FLASH_ATTN,
    CONF_IMAGE_MAX_SIDE,
    CONF_KEEP_WORDS,
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_MODEL_SOURCE,
    CONF_N_CTX,
    CONF_PROMPT,
    CONF_SENSITIVE_ACTIONS,
    CONF_SERVER_API_KEY,
    CONF_SERVER_URL,
    CONF_STT_BEAM_SIZE,
    CONF_STT_LANGUAGE,
    CONF_STT_MODEL,
    CONF_STT_VAD,
    CONF_TEMPERATURE,
    CONF_THREADS,
    CONF_TOOL_CHOICE,
    CONF_VISION,
    DEFAULT_AI_TASK_MAX_TOKENS,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CAMERA_MIN_INTERVAL,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_FLASH_ATTN,
    DEFAULT_IMAGE_MAX_SIDE,
    DEFAULT_KEEP_WORDS,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_N_CTX,
    DEFAULT_SENSITIVE_ACTIONS,
    DEFAULT_STT_NAME,
    DEFAULT_TEMPERATURE,
    DEFAULT_THREADS,
    DEFAULT_TOOL_CHOICE,
    DOMAIN,
    LOGGER,
    PRESETS,
    SENSITIVE_CHOICES,
    SOURCE_LOCAL,
    SOURCE_SERVER,
    TOOL_CHOICES,
    ModelPreset,
)
from .engine.download import (
    ChecksumMismatchError,
    DownloadError,
    NotEnoughDiskError,
    RemoteFile,
    check_free_disk,
    download_files,
    resolve_remote_file,
)
from .engine.gguf_info import GGUFError, GGUFInfo, read_gguf_info
from .engine.images import MAX_SIDE, MIN_SIDE
from .engine.llama_model import EngineError, EngineSettings, ModelLoadError
from .engine.preflight import PreflightError, check_memory_for
from .engine.server_model import ServerAuthError, probe_server
from .llama_runtime import async_llama_cpp_problem
from .speech_runtime import async_faster_whisper_problem

ENGINE_DEFAULTS: dict[str, Any] = {
    CONF_N_CTX: DEFAULT_N_CTX,
    CONF_THREADS: DEFAULT_THREADS,
    CONF_FLASH_ATTN: DEFAULT_FLASH_ATTN,
}
VISION_DEFAULTS: dict[str, Any] = {
    CONF_IMAGE_MAX_SIDE: DEFAULT_IMAGE_MAX_SIDE,
    CONF_CAMERA_MIN_INTERVAL: DEFAULT_CAMERA_MIN_INTERVAL,
}
ACTIVITY_DEFAULTS: dict[str, Any] = {CONF_KEEP_WORDS: DEFAULT_KEEP_WORDS}
AI_TASK_DEFAULTS: dict[str, Any] = {
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_AI_TASK_MAX_TOKENS,
}
CONVERSATION_DEFAULTS: dict[str, Any] = {
    CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
    CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
    CONF_MAX_HISTORY: DEFAULT_MAX_HISTORY,
    CONF_TOOL_CHOICE: DEFAULT_TOOL_CHOICE,
    CONF_SENSITIVE_ACTIONS: DEFAULT_SENSITIVE_ACTIONS,
}


def default_download_dir(hass: HomeAssistant) -> str:
    """Models are large: keep them out of the config folder (and its backups) where possible."""
    media_dirs = list(hass.config.media_dirs.values())
    base = media_dirs[0] if media_dirs else hass.config.path("media")
    return os.path.join(base, "gemma_edge_models")


def validate_model_file(path: str) -> GGUFInfo:
    """Check a local model file (blocking). Raises GGUFError with a form error key in args[0]."""
    if not path or not os.path.isfile(path):
        raise GGUFError("model_not_found")
    try:
        info = read_gguf_info(path)
    except GGUFError as err:
        LOGGER.info("Rejected model file %s: %s", path, err)
        raise GGUFError("not_gguf") from err
    if not info.is_text_model:
        raise GGUFError("unsupported_architecture")
    return info


class GemmaEdgeConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create a model engine: a Gemma 4 preset downloaded from Hugging Face, or a local GGUF."""

    VERSION = 1
    MINOR_VERSION = 1

    def __init__(self) -> None:
        self._preset: ModelPreset | None = None
        self._download_dir = ""
        self._remotes: list[RemoteFile] = []
        self._download_task: asyncio.Task[list[Path]] | None = None
        self._download_error = "download_failed"
        self._paths: list[Path] = []
        self._cancel_download = threading.Event()

    @callback
    def async_remove(self) -> None:
        """The flow was closed: its download thread stops at the next block (the part file stays)."""
        self._cancel_download.set()

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose where the model comes from (only a server where no model can run in here)."""
        if problem := await async_llama_cpp_problem(self.hass):
            LOGGER.warning("Models cannot run inside this Home Assistant: %s", problem)
            return self.async_show_menu(
                step_id="server_only",
                menu_options=[SOURCE_SERVER],
                description_placeholders={"error": problem},
            )
        return self.async_show_menu(
            step_id="user", menu_options=[*PRESETS, SOURCE_LOCAL, SOURCE_SERVER]
        )

    async_step_server_only = async_step_user

    async def async_step_reauth(
        self, entry_data: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """A server entry's API key was refused."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the server's new API key, check it, reload the entry."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            key = (user_input.get(CONF_SERVER_API_KEY) or "").strip()
            settings = EngineSettings(
                "", server_url=entry.data[CONF_SERVER_URL], server_api_key=key or None
            )
            try:
                await self.hass.async_add_executor_job(probe_server, settings)
            except ServerAuthError:
                errors["base"] = "invalid_auth"
            except ModelLoadError:
                errors["base"] = "server_model_unsupported"
            except EngineError as err:
                LOGGER.warning(
                    "Cannot reach the llama.cpp server at %s: %s",
                    settings.server_url,
                    err,
                )
                errors["base"] = "cannot_connect"
            else:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_SERVER_API_KEY: key}
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema(
                {
                    vol.Optional(CONF_SERVER_API_KEY): TextSelector(
                        TextSelectorConfig(type=TextSelectorType.PASSWORD)
                    )
                }
            ),
            errors=errors,
            description_placeholders={"url": entry.data[CONF_SERVER_URL]},
        )

    async def async_step_server(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A llama.cpp server on this hub or the LAN runs the model (no llama-cpp-python here)."""
        errors: dict[str, str] = {}
        if user_input is not None:
            url = user_input[CONF_SERVER_URL].strip().rstrip("/")
            key = (user_input.get(CONF_SERVER_API_KEY) or "").strip()
            n_ctx = int(user_input[CONF_N_CTX])
            self._async_abort_entries_match({CONF_SERVER_URL: url})
            settings = EngineSettings(
                "", n_ctx=n_ctx, server_url=url, server_api_key=key or None
            )
            try:
                kind, model = await self.hass.async_add_executor_job(
                    probe_server, settings
                )
            except ServerAuthError:
                errors["base"] = "invalid_auth"
            except ModelLoadError as err:
                LOGGER.warning(
                    "The llama.cpp server at %s cannot be used: %s", url, err
                )
                errors["base"] = "server_model_unsupported"
            except EngineError as err:
                LOGGER.warning("Cannot reach the llama.cpp server at %s: %s", url, err)
                errors["base"] = "cannot_connect"
            else:
                data = {
                    CONF_MODEL_SOURCE: SOURCE_SERVER,
                    CONF_SERVER_URL: url,
                    **ENGINE_DEFAULTS,
                    CONF_N_CTX: n_ctx,
                }
                if key:
                    data[CONF_SERVER_API_KEY] = key
                return self._create_engine_entry(f"{model} ({kind})", data)
        schema = vol.Schema(
            {
                vol.Required(CONF_SERVER_URL): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.URL)
                ),
                vol.Optional(CONF_SERVER_API_KEY): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.PASSWORD)
                ),
                vol.Required(CONF_N_CTX, default=DEFAULT_N_CTX): NumberSelector(
                    NumberSelectorConfig(
                        min=1024, max=131072, step=256, mode=NumberSelectorMode.BOX
                    )
                ),
            }
        )
        return self.async_show_form(
            step_id="server",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
        )

    async def async_step_local(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A GGUF file already on this machine."""
        errors: dict[str, str] = {}
        if user_input is not None:
            path = user_input[CONF_MODEL_PATH].strip()
            mmproj = (user_input.get(CONF_MMPROJ_PATH) or "").strip()
            try:
                info = await self.hass.async_add_executor_job(validate_model_file, path)
            except GGUFError as err:
                errors[CONF_MODEL_PATH] = str(err)
            else:
                if mmproj and not await self.hass.async_add_executor_job(
                    os.path.isfile, mmproj
                ):
                    errors[CONF_MMPROJ_PATH] = "mmproj_not_found"
            if not errors:
                self._async_abort_entries_match({CONF_MODEL_PATH: path})
                data = {
                    CONF_MODEL_SOURCE: SOURCE_LOCAL,
                    CONF_MODEL_PATH: path,
                    **ENGINE_DEFAULTS,
                }
                if mmproj:
                    data[CONF_MMPROJ_PATH] = mmproj
                return self._create_engine_entry(info.name or Path(path).stem, data)
        schema = vol.Schema(
            {
                vol.Required(CONF_MODEL_PATH): TextSelector(),
                vol.Optional(CONF_MMPROJ_PATH): TextSelector(),
            }
        )
        return self.async_show_form(
            step_id="local",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
        )

    async def async_step_gemma4_e4b(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Download Gemma 4 E4B."""
        return await self._async_step_preset(PRESETS["gemma4_e4b"], user_input)

    async def async_step_gemma4_e2b(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Download Gemma 4 E2B."""
        return await self._async_step_preset(PRESETS["gemma4_e2b"], user_input)

    async def _async_step_preset(
        self, preset: ModelPreset, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        """Ask for the download folder, then check the hub, the disk and the memory."""
        self._preset = preset
        errors: dict[str, str] = {}
        placeholders = {"model": preset.title, "needed": "", "free": ""}
        if user_input is not None:
            self._download_dir = user_input[CONF_DOWNLOAD_DIR].strip()
            folder = Path(self._download_dir)
            try:
                model = await self.hass.async_add_executor_job(
                    resolve_remote_file, preset.repo_id, preset.filename
                )
                self._remotes = [model]
                if user_input.get(CONF_VISION, True):
                    self._remotes.append(
                        await self.hass.async_add_executor_job(
                            resolve_remote_file, preset.repo_id, preset.mmproj_filename
                        )
                    )
                needed = 0
                for remote in self._remotes:
                    have = await self.hass.async_add_executor_job(
                        _existing_bytes, folder / remote.filename, remote.size
                    )
                    needed += remote.size - have
                await self.hass.async_add_executor_job(check_free_disk, folder, needed)
                await self.hass.async_add_executor_job(
                    check_memory_for, preset.ram_bytes
                )
            except NotEnoughDiskError as err:
                errors["base"] = "not_enough_disk"
                placeholders.update(
                    needed=f"{err.needed / 1e9:.1f}", free=f"{err.free / 1e9:.1f}"
                )
            except PreflightError as err:
                LOGGER.warning("Not enough memory for %s: %s", preset.title, err)
                errors["base"] = "not_enough_memory"
            except DownloadError as err:
                LOGGER.warning(
                    "Cannot reach Hugging Face for %s: %s", preset.title, err
                )
                errors["base"] = "cannot_reach_hub"
            except OSError as err:
                LOGGER.warning("Cannot use folder %s: %s", folder, err)
                errors[CONF_DOWNLOAD_DIR] = "folder_not_writable"
            if not errors:
                return await self.async_step_download()
        schema = vol.Schema(
            {
                vol.Required(CONF_DOWNLOAD_DIR): TextSelector(),
                vol.Required(CONF_VISION, default=True): BooleanSelector(),
            }
        )
        return self.async_show_form(
            step_id=preset.key,
            data_schema=self.add_suggested_values_to_schema(
                schema,
                user_input
                or {
                    CONF_DOWNLOAD_DIR: default_download_dir(self.hass),
                    CONF_VISION: True,
                },
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_download(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Download with a progress bar; resumes a partial file left by an earlier attempt."""
        assert self._preset is not None and self._remotes
        if self._download_task is None:
            remotes, folder = self._remotes, Path(self._download_dir)

            def report(fraction: float) -> None:
                self.hass.loop.call_soon_threadsafe(
                    self.async_update_progress, fraction
                )

            async def _download() -> list[Path]:
                return await self.hass.async_add_executor_job(
                    download_files, remotes, folder, report, self._cancel_download
                )

            self._download_task = self.hass.async_create_background_task(
                _download(), f"{DOMAIN} download {remotes[0].filename}"
            )
        if not self._download_task.done():
            return self.async_show_progress(
                step_id="download",
                progress_action="download",
                progress_task=self._download_task,
                description_placeholders={"model": self._preset.title},
            )
        try:
            self._paths = self._download_task.result()
        except ChecksumMismatchError as err:
            LOGGER.error("Downloaded model rejected: %s", err)
            self._download_error = "checksum_mismatch"
            return self.async_show_progress_done(next_step_id="download_failed")
        except NotEnoughDiskError as err:
            LOGGER.error("Download stopped: %s", err)
            self._download_error = "not_enough_disk"
            return self.async_show_progress_done(next_step_id="download_failed")
        except (DownloadError, OSError) as err:
            LOGGER.error("Download failed: %s", err)
            self._download_error = "download_failed"
            return self.async_show_progress_done(next_step_id="download_failed")
        return self.async_show_progress_done(next_step_id="download_done")

    async def async_step_download_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The download did not produce a verified file."""
        return self.async_abort(reason=self._download_error)

    async def async_step_download_done(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Create the entry for the downloaded model."""
        assert self._preset is not None
        model_path = str(self._paths[0])
        self._async_abort_entries_match({CONF_MODEL_PATH: model_path})
        data = {
            CONF_MODEL_SOURCE: self._preset.key,
            CONF_MODEL_PATH: model_path,
            **ENGINE_DEFAULTS,
        }
        if len(self._paths) > 1:
            data[CONF_MMPROJ_PATH] = str(self._paths[1])
        return self._create_engine_entry(self._preset.title, data)

    def _create_engine_entry(
        self, title: str, data: dict[str, Any]
    ) -> ConfigFlowResult:
        return self.async_create_entry(
            title=title,
            data=data,
            subentries=[
                {
                    "subentry_type": "conversation",
                    "data": dict(CONVERSATION_DEFAULTS),
                    "title": DEFAULT_CONVERSATION_NAME,
                    "unique_id": None,
                },
                {
                    "subentry_type": "ai_task_data",
                    "data": dict(AI_TASK_DEFAULTS),
                    "title": DEFAULT_AI_TASK_NAME,
                    "unique_id": None,
                },
            ],
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Engine options."""
        return GemmaEdgeOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Conversation agents run on the entry's model."""
        return {
            "conversation": ConversationSubentryFlow,
            "ai_task_data": AITaskSubentryFlow,
            "stt": SpeechSubentryFlow,
        }


def _existing_bytes(path: Path, expected: int) -> int:
    """Bytes already on disk for this file (complete or partial), so the disk check counts only the rest."""
    for candidate in (path, path.with_name(path.name + ".part")):
        if candidate.exists():
            return min(candidate.stat().st_size, expected)
    return 0


class GemmaEdgeOptionsFlow(OptionsFlow):
    """Engine options (context size, threads, flash attention) and image options."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        current = {
            **ENGINE_DEFAULTS,
            **VISION_DEFAULTS,
            **ACTIVITY_DEFAULTS,
            **self.config_entry.data,
            **self.config_entry.options,
        }
        schema = vol.Schema(
            {
                vol.Required(CONF_N_CTX): NumberSelector(
                    NumberSelectorConfig(
                        min=1024, max=131072, step=256, mode=NumberSelectorMode.BOX
                    )
                ),
                vol.Required(CONF_THREADS): NumberSelector(
                    NumberSelectorConfig(
                        min=0, max=64, step=1, mode=NumberSelectorMode.BOX
                    )
                ),
                vol.Required(CONF_FLASH_ATTN): BooleanSelector(),
                vol.Required(
                    CONF_IMAGE_MAX_SIDE, default=DEFAULT_IMAGE_MAX_SIDE
                ): NumberSelector(
                    NumberSelectorConfig(
                        min=MIN_SIDE,
                        max=MAX_SIDE,
                        step=16,
                        mode=NumberSelectorMode.BOX,
                        unit_of_measurement="px",
                    )
                ),
                vol.Required(
                    CONF_CAMERA_MIN_INTERVAL, default=DEFAULT_CAMERA_MIN_INTERVAL
                ): NumberSelector(
                    NumberSelectorConfig(
                        min=0,
                        max=3600,
                        step=1,
                        mode=NumberSelectorMode.BOX,
                        unit_of_measurement="s",
                    )
                ),
                vol.Required(
                    CONF_KEEP_WORDS, default=DEFAULT_KEEP_WORDS
                ): BooleanSelector(),
            }
        )
        if self.config_entry.data.get(CONF_MODEL_SOURCE) == SOURCE_SERVER:
            # threads and flash attention are the server's own settings
            schema = vol.Schema(
                {
                    key: value
                    for key, value in schema.schema.items()
                    if key not in (CONF_THREADS, CONF_FLASH_ATTN)
                }
            )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                schema,
                {
                    key: current[key]
                    for key in (*ENGINE_DEFAULTS, *VISION_DEFAULTS, *ACTIVITY_DEFAULTS)
                },
            ),
        )


def conversation_schema(
    hass: HomeAssistant, options: Mapping[str, Any], is_new: bool
) -> vol.Schema:
    """The form of a conversation agent."""
    apis = [
        SelectOptionDict(label=api.name, value=api.id)
        for api in llm.async_get_apis(hass)
    ]
    fields: dict[Any, Any] = {}
    if is_new:
        fields[vol.Required(CONF_NAME, default=DEFAULT_CONVERSATION_NAME)] = str
    fields.update(
        {
            vol.Optional(
                CONF_PROMPT, description={"suggested_value": options.get(CONF_PROMPT)}
            ): TemplateSelector(),
            vol.Optional(
                CONF_LLM_HASS_API,
                description={
                    "suggested_value": [
                        a
                        for a in options.get(CONF_LLM_HASS_API, [])
                        if a in {x["value"] for x in apis}
                    ]
                },
            ): SelectSelector(SelectSelectorConfig(options=apis, multiple=True)),
            vol.Required(
                CONF_TEMPERATURE,
                default=options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE),
            ): NumberSelector(NumberSelectorConfig(min=0, max=2, step=0.05)),
            vol.Required(
                CONF_MAX_TOKENS,
                default=options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS),
            ): NumberSelector(
                NumberSelectorConfig(
                    min=16, max=4096, step=16, mode=NumberSelectorMode.BOX
                )
            ),
            vol.Required(
                CONF_MAX_HISTORY,
                default=options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY),
            ): NumberSelector(
                NumberSelectorConfig(
                    min=0, max=100, step=1, mode=NumberSelectorMode.BOX
                )
            ),
            vol.Required(
                CONF_TOOL_CHOICE,
                default=options.get(CONF_TOOL_CHOICE, DEFAULT_TOOL_CHOICE),
            ): SelectSelector(
                SelectSelectorConfig(
                    options=list(TOOL_CHOICES), translation_key=CONF_TOOL_CHOICE
                )
            ),
            vol.Required(
                CONF_SENSITIVE_ACTIONS,
                default=options.get(CONF_SENSITIVE_ACTIONS, DEFAULT_SENSITIVE_ACTIONS),
            ): SelectSelector(
                SelectSelectorConfig(
                    options=list(SENSITIVE_CHOICES),
                    translation_key=CONF_SENSITIVE_ACTIONS,
                )
            ),
        }
    )
    return vol.Schema(fields)


class ConversationSubentryFlow(ConfigSubentryFlow):
    """Create or reconfigure a conversation agent."""

    @property
    def _is_new(self) -> bool:
        return self.source == "user"

    async def async_step_set_options(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        if user_input is not None:
            data = dict(user_input)
            if not data.get(CONF_LLM_HASS_API):
                data.pop(CONF_LLM_HASS_API, None)
            data[CONF_MAX_TOKENS] = int(data[CONF_MAX_TOKENS])
            data[CONF_MAX_HISTORY] = int(data[CONF_MAX_HISTORY])
            if self._is_new:
                title = data.pop(CONF_NAME)
                return self.async_create_entry(title=title, data=data)
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), data=data
            )
        options = (
            CONVERSATION_DEFAULTS
            if self._is_new
            else self._get_reconfigure_subentry().data
        )
        return self.async_show_form(
            step_id="set_options",
            data_schema=conversation_schema(self.hass, options, self._is_new),
        )

    async_step_user = async_step_set_options
    async_step_reconfigure = async_step_set_options


class AITaskSubentryFlow(ConfigSubentryFlow):
    """Create or reconfigure an AI Task entity (ai_task.generate_data, with images)."""

    async def async_step_set_options(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        is_new = self.source == "user"
        if user_input is not None:
            data = {**user_input, CONF_MAX_TOKENS: int(user_input[CONF_MAX_TOKENS])}
            if is_new:
                return self.async_create_entry(title=data.pop(CONF_NAME), data=data)
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), data=data
            )
        options = AI_TASK_DEFAULTS if is_new else self._get_reconfigure_subentry().data
        fields: dict[Any, Any] = (
            {vol.Required(CONF_NAME, default=DEFAULT_AI_TASK_NAME): str}
            if is_new
            else {}
        )
        fields[
            vol.Required(
                CONF_TEMPERATURE,
                default=options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE),
            )
        ] = NumberSelector(NumberSelectorConfig(min=0, max=2, step=0.05))
        fields[
            vol.Required(
                CONF_MAX_TOKENS,
                default=options.get(CONF_MAX_TOKENS, DEFAULT_AI_TASK_MAX_TOKENS),
            )
        ] = NumberSelector(
            NumberSelectorConfig(min=16, max=4096, step=16, mode=NumberSelectorMode.BOX)
        )
        return self.async_show_form(
            step_id="set_options", data_schema=vol.Schema(fields)
        )

    async_step_user = async_step_set_options
    async_step_reconfigure = async_step_set_options


STT_MODELS = ["tiny.en", "base.en", "small.en", "tiny", "base", "small"]
WHISPER_REPO = "Systran/faster-whisper-{size}"
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def whisper_knows_language(code: str) -> bool:
    """Whether Whisper has this language code ("en", "de", ...); True when faster-whisper is not
    installed yet to say (blocking: the import is heavy).
    """
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES  # noqa: PLC0415
    except ImportError:
        return True
    return code in _LANGUAGE_CODES


def speech_download_dir(hass: HomeAssistant, entry: ConfigEntry) -> Path:
    """Next to the LLM: the folder its file was downloaded to (or lies in), when writable; else
    the default download folder (blocking: checks the disk).
    """
    folder = Path(entry.data[CONF_MODEL_PATH]).parent
    return folder if os.access(folder, os.W_OK) else Path(default_download_dir(hass))


def download_whisper(
    size: str,
    folder: Path,
    progress: Callable[[float], None],
    cancelled: threading.Event,
) -> Path:
    """Download a faster-whisper size from Hugging Face, each file resumed and sha256-verified."""
    repo = WHISPER_REPO.format(size=size)
    target = folder / f"faster-whisper-{size}"
    download_files(
        [resolve_remote_file(repo, name) for name in WHISPER_FILES],
        target,
        progress,
        cancelled,
    )
    return target


class SpeechSubentryFlow(ConfigSubentryFlow):
    """A faster-whisper speech-to-text entity: a model size (downloaded from Hugging Face with
    progress, resume and verification) or a local CTranslate2 folder, language, beam size, VAD.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._task: asyncio.Task[Path] | None = None
        self._cancel_download = threading.Event()

    @callback
    def async_remove(self) -> None:
        """The flow was closed: its download thread stops at the next block (the part file stays)."""
        self._cancel_download.set()

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
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
            model = user_input[CONF_STT_MODEL].strip()
            self._data = {
                **user_input,
                CONF_STT_MODEL: model,
                CONF_STT_BEAM_SIZE: int(user_input[CONF_STT_BEAM_SIZE]),
            }
            language = (user_input.get(CONF_STT_LANGUAGE) or "").strip()
            if language and not await self.hass.async_add_executor_job(
                whisper_knows_language, language
            ):
                errors[CONF_STT_LANGUAGE] = "unknown_language"
            elif model in STT_MODELS:
                return await self.async_step_download()
            elif await self.hass.async_add_executor_job(_is_whisper_folder, model):
                return self._create()
            else:
                errors[CONF_STT_MODEL] = "stt_model_not_found"
        schema = vol.Schema(
            {
                vol.Required(CONF_NAME, default=DEFAULT_STT_NAME): str,
                vol.Required(CONF_STT_MODEL, default="base.en"): SelectSelector(
                    SelectSelectorConfig(options=STT_MODELS, custom_value=True)
                ),
                vol.Optional(CONF_STT_LANGUAGE, default="en"): TextSelector(),
                vol.Required(CONF_STT_BEAM_SIZE, default=1): NumberSelector(
                    NumberSelectorConfig(
                        min=1, max=5, step=1, mode=NumberSelectorMode.BOX
                    )
                ),
                vol.Required(CONF_STT_VAD, default=True): BooleanSelector(),
            }
        )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
        )

    def _create(self) -> SubentryFlowResult:
        data = dict(self._data)
        return self.async_create_entry(title=data.pop(CONF_NAME), data=data)

    async def async_step_download(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Download the chosen size next to the LLM downloads, with a progress bar."""
        if self._task is None:
            size = self._data[CONF_STT_MODEL]
            folder = await self.hass.async_add_executor_job(
                speech_download_dir, self.hass, self._get_entry()
            )
            cancelled = self._cancel_download

            def report(fraction: float) -> None:
                self.hass.loop.call_soon_threadsafe(
                    self.async_update_progress, fraction
                )

            async def _download() -> Path:
                return await self.hass.async_add_executor_job(
                    download_whisper, size, folder, report, cancelled
                )

            self._task = self.hass.async_create_background_task(
                _download(), f"{DOMAIN} download whisper {size}"
            )
        if not self._task.done():
            return self.async_show_progress(
                step_id="download",
                progress_action="download",
                description_placeholders={
                    "model": f"faster-whisper {self._data[CONF_STT_MODEL]}"
                },
                progress_task=self._task,
            )
        try:
            self._data[CONF_STT_MODEL] = str(self._task.result())
        except (DownloadError, OSError) as err:
            LOGGER.error("Speech model download failed: %s", err)
            return self.async_show_progress_done(next_step_id="download_failed")
        return self.async_show_progress_done(next_step_id="download_done")

    async def async_step_download_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        return self.async_abort(reason="download_failed")

    async def async_step_download_done(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        return self._create()


def _is_whisper_folder(path: str) -> bool:
    """A local CTranslate2 faster-whisper model: model.bin, config.json and tokenizer.json."""
    folder = Path(path)
    return all(
        (folder / name).is_file()
        for name in ("model.bin", "config.json", "tokenizer.json")
    )
