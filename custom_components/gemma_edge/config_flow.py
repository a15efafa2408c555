"""Config flow: one entry per local model engine, conversation agents as subentries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
)
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .const import (
    CONF_DOWNLOAD_DIR,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_MODEL_SOURCE,
    CONF_N_CTX,
    CONF_SERVER_API_KEY,
    CONF_SERVER_URL,
    CONF_VISION,
    DEFAULT_AI_TASK_NAME,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_N_CTX,
    DOMAIN,
    LOGGER,
    PRESETS,
    SOURCE_LOCAL,
    SOURCE_SERVER,
    SUBENTRY_AI_TASK,
    SUBENTRY_CLOUD_SYNC,
    SUBENTRY_CONVERSATION,
    SUBENTRY_STT,
    ModelPreset,
)
from .engine.download import (
    DownloadError,
    NotEnoughDiskError,
    RemoteFile,
    check_free_disk,
    download_files,
    resolve_remote_file,
)
from .engine.llama_model import EngineSettings
from .engine.preflight import PreflightError, check_memory_for
from .flow_checks import async_check_model_files, async_check_server
from .flow_download import FlowDownload, default_download_dir
from .llama_runtime import async_llama_cpp_problem
from .options_flow import ENGINE_DEFAULTS, GemmaEdgeOptionsFlow
from .subentry_flow import (
    AI_TASK_DEFAULTS,
    CONVERSATION_DEFAULTS,
    ModelSubentryFlow,
    SpeechSubentryFlow,
)
from .sync_flow import CloudSyncSubentryFlow

_SERVER_FIELDS = {
    vol.Required(CONF_SERVER_URL): TextSelector(
        TextSelectorConfig(type=TextSelectorType.URL)
    ),
    vol.Optional(CONF_SERVER_API_KEY): TextSelector(
        TextSelectorConfig(type=TextSelectorType.PASSWORD)
    ),
}


def _local_schema() -> vol.Schema:
    return vol.Schema(
        {
            vol.Required(CONF_MODEL_PATH): TextSelector(),
            vol.Optional(CONF_MMPROJ_PATH): TextSelector(),
        }
    )


class GemmaEdgeConfigFlow(ConfigFlow, domain=DOMAIN):
    """Create a model engine: a Gemma 4 preset, a local GGUF or a llama.cpp server."""

    VERSION = 1
    MINOR_VERSION = 1

    def __init__(self) -> None:
        """Start with nothing chosen and no download."""
        self._preset: ModelPreset | None = None
        self._download_dir = ""
        self._remotes: list[RemoteFile] = []
        self._download: FlowDownload[list[Path]] = FlowDownload()

    @callback
    def async_remove(self) -> None:
        """Stop the download thread when the flow is closed (the part file stays)."""
        self._download.cancel()

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose where the model comes from (a server only where none can run here)."""
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
        """Start reauthentication: the server refused the entry's API key."""
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
            errors, _found = await async_check_server(self.hass, settings)
            if not errors:
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

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Point the engine at another model file (and projector) or server."""
        if self._get_reconfigure_entry().data.get(CONF_MODEL_SOURCE) == SOURCE_SERVER:
            return await self.async_step_reconfigure_server(user_input)
        return await self.async_step_reconfigure_local(user_input)

    async def async_step_reconfigure_local(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Check the new files, then keep them; the entry reloads with the new model."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            path = user_input[CONF_MODEL_PATH].strip()
            mmproj = (user_input.get(CONF_MMPROJ_PATH) or "").strip()
            current_model = entry.data.get(CONF_MODEL_PATH)
            current_projector = entry.data.get(CONF_MMPROJ_PATH, "")
            if self._used_by_another(entry, CONF_MODEL_PATH, path):
                return self.async_abort(reason="already_configured")
            errors, _info = await async_check_model_files(self.hass, path, mmproj)
            if not errors:
                data = {k: v for k, v in entry.data.items() if k != CONF_MMPROJ_PATH}
                data.update({CONF_MODEL_SOURCE: SOURCE_LOCAL, CONF_MODEL_PATH: path})
                if mmproj:
                    data[CONF_MMPROJ_PATH] = mmproj
                # The entry's update listener reloads the engine for another model; it
                # leaves the projector alone (one that fails costs vision only), so a
                # new or removed projector alone reloads here.
                result = self.async_update_and_abort(entry, data=data)
                if path == current_model and mmproj != current_projector:
                    self.hass.config_entries.async_schedule_reload(entry.entry_id)
                return result
        current = {
            CONF_MODEL_PATH: entry.data.get(CONF_MODEL_PATH, ""),
            CONF_MMPROJ_PATH: entry.data.get(CONF_MMPROJ_PATH, ""),
        }
        return self.async_show_form(
            step_id="reconfigure_local",
            data_schema=self.add_suggested_values_to_schema(
                _local_schema(), user_input or current
            ),
            errors=errors,
        )

    async def async_step_reconfigure_server(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Probe the new server address (and key), then keep them."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            url = user_input[CONF_SERVER_URL].strip().rstrip("/")
            key = (user_input.get(CONF_SERVER_API_KEY) or "").strip()
            if self._used_by_another(entry, CONF_SERVER_URL, url):
                return self.async_abort(reason="already_configured")
            settings = EngineSettings(
                "",
                n_ctx=int(entry.data.get(CONF_N_CTX, DEFAULT_N_CTX)),
                server_url=url,
                server_api_key=key or None,
            )
            errors, _found = await async_check_server(self.hass, settings)
            if not errors:
                data = {k: v for k, v in entry.data.items() if k != CONF_SERVER_API_KEY}
                data[CONF_SERVER_URL] = url
                if key:
                    data[CONF_SERVER_API_KEY] = key
                return self.async_update_and_abort(entry, data=data)
        schema = vol.Schema(_SERVER_FIELDS)
        current = {CONF_SERVER_URL: entry.data[CONF_SERVER_URL]}
        return self.async_show_form(
            step_id="reconfigure_server",
            data_schema=self.add_suggested_values_to_schema(
                schema, user_input or current
            ),
            errors=errors,
        )

    def _used_by_another(self, entry: ConfigEntry, key: str, value: str) -> bool:
        return any(
            other.entry_id != entry.entry_id and other.data.get(key) == value
            for other in self._async_current_entries(include_ignore=False)
        )

    async def async_step_server(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Use a llama.cpp server on this hub or the LAN to run the model."""
        errors: dict[str, str] = {}
        if user_input is not None:
            url = user_input[CONF_SERVER_URL].strip().rstrip("/")
            key = (user_input.get(CONF_SERVER_API_KEY) or "").strip()
            n_ctx = int(user_input[CONF_N_CTX])
            self._async_abort_entries_match({CONF_SERVER_URL: url})
            settings = EngineSettings(
                "", n_ctx=n_ctx, server_url=url, server_api_key=key or None
            )
            errors, found = await async_check_server(self.hass, settings)
            if found is not None:
                kind, model = found
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
                **_SERVER_FIELDS,
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
        """Use a GGUF file already on this machine."""
        errors: dict[str, str] = {}
        if user_input is not None:
            path = user_input[CONF_MODEL_PATH].strip()
            mmproj = (user_input.get(CONF_MMPROJ_PATH) or "").strip()
            errors, info = await async_check_model_files(self.hass, path, mmproj)
            if not errors:
                self._async_abort_entries_match({CONF_MODEL_PATH: path})
                data = {
                    CONF_MODEL_SOURCE: SOURCE_LOCAL,
                    CONF_MODEL_PATH: path,
                    **ENGINE_DEFAULTS,
                }
                if mmproj:
                    data[CONF_MMPROJ_PATH] = mmproj
                name = info.name if info is not None else ""
                return self._create_engine_entry(name or Path(path).stem, data)
        return self.async_show_form(
            step_id="local",
            data_schema=self.add_suggested_values_to_schema(
                _local_schema(), user_input or {}
            ),
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
            except Exception:
                LOGGER.exception("Unexpected error while preparing %s", preset.title)
                errors["base"] = "unknown"
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
        """Download with a progress bar, resuming a part file of an earlier attempt."""
        assert self._preset is not None and self._remotes
        if not self._download.started:
            remotes, folder = self._remotes, Path(self._download_dir)

            def job(
                progress: Callable[[float], None], cancelled: threading.Event
            ) -> list[Path]:
                return download_files(remotes, folder, progress, cancelled)

            self._download.async_start(self, job, remotes[0].filename)
        return self._download.async_progress(self, self._preset.title)

    async def async_step_download_failed(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """End the flow: the download did not produce a verified file."""
        return self.async_abort(reason=self._download.error)

    async def async_step_download_done(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Create the entry for the downloaded model."""
        assert self._preset is not None
        paths = self._download.result or []
        model_path = str(paths[0])
        self._async_abort_entries_match({CONF_MODEL_PATH: model_path})
        data = {
            CONF_MODEL_SOURCE: self._preset.key,
            CONF_MODEL_PATH: model_path,
            **ENGINE_DEFAULTS,
        }
        if len(paths) > 1:
            data[CONF_MMPROJ_PATH] = str(paths[1])
        return self._create_engine_entry(self._preset.title, data)

    def _create_engine_entry(
        self, title: str, data: dict[str, Any]
    ) -> ConfigFlowResult:
        return self.async_create_entry(
            title=title,
            data=data,
            subentries=[
                {
                    "subentry_type": SUBENTRY_CONVERSATION,
                    "data": dict(CONVERSATION_DEFAULTS),
                    "title": DEFAULT_CONVERSATION_NAME,
                    "unique_id": None,
                },
                {
                    "subentry_type": SUBENTRY_AI_TASK,
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
            SUBENTRY_CONVERSATION: ModelSubentryFlow,
            SUBENTRY_AI_TASK: ModelSubentryFlow,
            SUBENTRY_STT: SpeechSubentryFlow,
            SUBENTRY_CLOUD_SYNC: CloudSyncSubentryFlow,
        }


def _existing_bytes(path: Path, expected: int) -> int:
    """Return the bytes of this file already on disk (complete or partial).

    The disk check counts only the rest.
    """
    for candidate in (path, path.with_name(path.name + ".part")):
        if candidate.exists():
            return min(candidate.stat().st_size, expected)
    return 0
