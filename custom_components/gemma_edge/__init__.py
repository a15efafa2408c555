"""Gemma Edge Agent: a local Gemma model inside Home Assistant as an Assist agent."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import (
    ConfigEntryAuthFailed,
    ConfigEntryError,
    ConfigEntryNotReady,
    HomeAssistantError,
)
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.typing import ConfigType

from .action_events import announce_outcome, async_follow_language, async_load_phrases
from .actions.executor import ActionExecutor
from .actions.ledger import ActionLedger, LedgerError
from .actions.outcomes import ActionOutcome
from .camera_vision import CameraVision
from .cloud_push import CommandWebhook
from .cloud_sync import (
    CloudSync,
    async_forget_cloud_sync,
    cloud_sync_subentry,
    new_outbox,
    new_reporter,
)
from .const import (
    CONF_FLASH_ATTN,
    CONF_MMPROJ_PATH,
    CONF_MODEL_PATH,
    CONF_MODEL_SOURCE,
    CONF_N_CTX,
    CONF_SERVER_API_KEY,
    CONF_SERVER_URL,
    CONF_THREADS,
    DEFAULT_FLASH_ATTN,
    DEFAULT_N_CTX,
    DEFAULT_THREADS,
    DOMAIN,
    LOGGER,
    SOURCE_SERVER,
)
from .engine.gguf_info import GGUFError, GGUFInfo, read_gguf_info
from .engine.llama_model import EngineError, EngineSettings
from .engine.local_engine import LocalEngine
from .engine.preflight import PreflightError, check_memory_for
from .engine.server_model import ServerAuthError, ServerUnavailableError
from .hass_home import HassHome
from .llama_runtime import async_ensure_llama_cpp, checked_cpu_variant
from .repairs import (
    ISSUE_LEDGER,
    ISSUE_MODEL_INVALID,
    ISSUE_NOT_ENOUGH_MEMORY,
    ISSUE_VISION_UNAVAILABLE,
    clear_issues,
    raise_issue,
)
from .services import async_register_services
from .sync.outbox import Outbox

if TYPE_CHECKING:
    from .conversation import GemmaConversationEntity

PLATFORMS = (
    Platform.AI_TASK,
    Platform.CALENDAR,
    Platform.CONVERSATION,
    Platform.SENSOR,
    Platform.STT,
)
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
PRUNE_INTERVAL = timedelta(hours=6)
# The vision projector (~0.56 GB for E4B) is freed after this long without images.
VISION_IDLE = timedelta(minutes=10)
VISION_CHECK_INTERVAL = timedelta(minutes=1)
# How often a llama.cpp server that stopped answering is asked whether it is back.
SERVER_CHECK_INTERVAL = timedelta(seconds=30)


@dataclass
class GemmaRuntimeData:
    """What a loaded entry holds."""

    engine: LocalEngine
    executor: ActionExecutor
    vision: CameraVision
    cloud_sync: CloudSync | None = None
    command_webhook: CommandWebhook | None = None
    # conversation entities by entity id (the ask action talks to them)
    agents: dict[str, GemmaConversationEntity] = field(default_factory=dict)


type GemmaConfigEntry = ConfigEntry[GemmaRuntimeData]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the actions and load the sentences about actions."""
    async_register_services(hass)
    await async_load_phrases(hass)
    async_follow_language(hass)
    return True


def ledger_path(hass: HomeAssistant, entry_id: str) -> Path:
    """Return the path of the entry's own SQLite action ledger.

    One ledger per entry, in Home Assistant's storage folder.
    """
    return Path(hass.config.path(".storage", DOMAIN, f"ledger_{entry_id}.db"))


async def _async_start_executor(
    hass: HomeAssistant, entry: GemmaConfigEntry
) -> tuple[ActionExecutor, Outbox | None]:
    """Open the ledger and settle interrupted actions; with cloud sync, its outbox.

    An unusable ledger fails closed: no actions.
    """
    ledger = ActionLedger(ledger_path(hass, entry.entry_id))
    outbox = None
    if (sync := cloud_sync_subentry(entry)) is not None:
        outbox = new_outbox(ledger, sync)

    @callback
    def on_outcome(outcome: ActionOutcome) -> None:
        announce_outcome(hass, entry, outcome)
        runtime = getattr(entry, "runtime_data", None)
        if runtime is not None and runtime.cloud_sync is not None:
            runtime.cloud_sync.wake()

    executor = ActionExecutor(
        ledger,
        HassHome(hass),
        on_outcome=on_outcome,
        # each recorded outcome's event for the cloud, in the outcome's transaction
        reporter=new_reporter(outbox, sync) if outbox and sync else None,
        # not the entry's tasks: unloading the entry must not cancel a script halfway
        spawn=lambda coro, name: hass.async_create_background_task(coro, name),
    )
    try:
        recovered = await executor.async_start()
    except LedgerError as err:
        LOGGER.error("Actions are disabled: %s", err)
        raise_issue(
            hass,
            ISSUE_LEDGER,
            entry.entry_id,
            error=str(err),
            title=entry.title,
            path=str(ledger_path(hass, entry.entry_id)),
        )
        await executor.async_stop()
        return executor, outbox
    if recovered:
        LOGGER.warning("Settled %d actions interrupted by a restart", len(recovered))
    if outbox is None:
        await async_forget_cloud_sync(hass, entry, executor)
    return executor, outbox


def engine_settings(entry: ConfigEntry) -> EngineSettings:
    """Return the engine settings from the entry's data and options."""
    options = {**entry.data, **entry.options}
    return EngineSettings(
        model_path=entry.data.get(CONF_MODEL_PATH, ""),
        n_ctx=int(options.get(CONF_N_CTX, DEFAULT_N_CTX)),
        n_threads=int(options.get(CONF_THREADS, DEFAULT_THREADS)),
        flash_attn=bool(options.get(CONF_FLASH_ATTN, DEFAULT_FLASH_ATTN)),
        mmproj_path=entry.data.get(CONF_MMPROJ_PATH) or None,
        server_url=entry.data.get(CONF_SERVER_URL) or None,
        server_api_key=entry.data.get(CONF_SERVER_API_KEY) or None,
    )


async def _async_check_projector(
    hass: HomeAssistant, entry: ConfigEntry, settings: EngineSettings, model_bytes: int
) -> EngineSettings:
    """Check the vision projector; drop it from the settings when it cannot be used.

    A missing or unreadable vision projector, or no memory left for it, costs vision
    only: Repairs issue, text keeps working.
    """
    if settings.mmproj_path is None:
        return settings
    try:
        info = await hass.async_add_executor_job(read_gguf_info, settings.mmproj_path)
        _check_is_projector(info)
        await hass.async_add_executor_job(
            check_memory_for, model_bytes + info.size_bytes
        )
    except (GGUFError, PreflightError) as err:
        LOGGER.error("Vision is off: %s", err)
        raise_issue(
            hass,
            ISSUE_VISION_UNAVAILABLE,
            entry.entry_id,
            path=settings.mmproj_path,
            error=str(err),
            title=entry.title,
        )
        return replace(settings, mmproj_path=None)
    return settings


def _check_is_projector(info: GGUFInfo) -> None:
    """Raise GGUFError unless the file is a vision projector (clip architecture)."""
    if info.architecture != "clip":
        raise GGUFError(
            f"architecture {info.architecture!r} is not a vision projector (clip)"
        )


async def _async_local_settings(
    hass: HomeAssistant, entry: GemmaConfigEntry
) -> EngineSettings:
    """Return the settings of an in-process model, after checking it can run.

    llama-cpp-python installed and working, the model file usable, memory free.
    """
    await async_ensure_llama_cpp(hass)
    settings = engine_settings(entry)
    try:
        info = await hass.async_add_executor_job(read_gguf_info, settings.model_path)
    except GGUFError as err:
        raise_issue(
            hass,
            ISSUE_MODEL_INVALID,
            entry.entry_id,
            path=settings.model_path,
            error=str(err),
            title=entry.title,
        )
        raise _entry_error(ConfigEntryError, "model_unusable", err) from err
    try:
        await hass.async_add_executor_job(check_memory_for, info.size_bytes)
    except PreflightError as err:
        raise_issue(
            hass,
            ISSUE_NOT_ENOUGH_MEMORY,
            entry.entry_id,
            error=str(err),
            title=entry.title,
        )
        raise _entry_error(ConfigEntryNotReady, "not_enough_memory", err) from err
    clear_issues(hass, entry.entry_id)
    settings = replace(settings, cpu_variant=checked_cpu_variant(hass))
    return await _async_check_projector(hass, entry, settings, info.size_bytes)


def _entry_error[ErrorT: HomeAssistantError](
    cls: type[ErrorT], key: str, err: Exception
) -> ErrorT:
    """Return a translated entry setup error (``key``) carrying ``err``'s text."""
    return cls(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders={"error": str(err)},
    )


async def _async_load_engine(
    hass: HomeAssistant, entry: GemmaConfigEntry, settings: EngineSettings
) -> LocalEngine:
    """Load the model (or reach the server); a failure fails or retries the entry."""
    engine = LocalEngine(settings)
    try:
        await engine.async_load()
    except ServerUnavailableError as err:
        await engine.async_unload()
        # the server may still be starting
        raise _entry_error(ConfigEntryNotReady, "server_unavailable", err) from err
    except ServerAuthError as err:
        await engine.async_unload()
        # Home Assistant asks for the new key
        raise _entry_error(ConfigEntryAuthFailed, "server_auth_failed", err) from err
    except EngineError as err:
        await engine.async_unload()
        where = settings.server_url or settings.model_path
        raise_issue(
            hass,
            ISSUE_MODEL_INVALID,
            entry.entry_id,
            path=where,
            error=str(err),
            title=entry.title,
        )
        raise _entry_error(ConfigEntryError, "model_unusable", err) from err
    except BaseException:
        await engine.async_unload()
        raise
    return engine


async def async_setup_entry(hass: HomeAssistant, entry: GemmaConfigEntry) -> bool:
    """Set up an entry: check the model and load it, or reach the server.

    The environment and the model are checked (or the server reached), then the model is
    loaded on its worker thread.
    """
    if entry.data.get(CONF_MODEL_SOURCE) == SOURCE_SERVER:
        settings = engine_settings(entry)
        clear_issues(hass, entry.entry_id)
    else:
        settings = await _async_local_settings(hass, entry)
    engine = await _async_load_engine(hass, entry, settings)
    executor, outbox = await _async_start_executor(hass, entry)
    entry.runtime_data = GemmaRuntimeData(
        engine=engine, executor=executor, vision=CameraVision(hass, entry)
    )
    if outbox is not None and (sync := cloud_sync_subentry(entry)) is not None:
        entry.runtime_data.cloud_sync = CloudSync(hass, entry, sync, executor, outbox)
        await entry.runtime_data.cloud_sync.async_open()
    _schedule_housekeeping(hass, entry, engine, executor)
    entry.async_on_unload(entry.add_update_listener(_async_reload_on_update))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    if (cloud_sync := entry.runtime_data.cloud_sync) is not None:
        await cloud_sync.async_start()
        entry.runtime_data.command_webhook = CommandWebhook(hass, cloud_sync)
        await entry.runtime_data.command_webhook.async_register()
    return True


def _schedule_housekeeping(
    hass: HomeAssistant,
    entry: GemmaConfigEntry,
    engine: LocalEngine,
    executor: ActionExecutor,
) -> None:
    """Schedule housekeeping on the event loop.

    Prune the ledger every few hours, free an idle vision projector, and ask a
    llama.cpp server that stopped answering whether it is back.
    """

    @callback
    def prune(_now: datetime) -> None:
        entry.async_create_background_task(
            hass, executor.async_prune(), f"{DOMAIN} prune ledger"
        )
        if (sync := entry.runtime_data.cloud_sync) is not None:
            entry.async_create_background_task(
                hass, sync.async_prune(), f"{DOMAIN} prune cloud outbox"
            )

    @callback
    def release_vision(_now: datetime) -> None:
        entry.async_create_background_task(
            hass,
            engine.async_release_idle_vision(VISION_IDLE.total_seconds()),
            f"{DOMAIN} release idle vision",
        )

    @callback
    def check_server(_now: datetime) -> None:
        if engine.unreachable is not None:
            entry.async_create_background_task(
                hass, engine.async_check_server(), f"{DOMAIN} check server"
            )

    if executor.error is None:
        entry.async_on_unload(async_track_time_interval(hass, prune, PRUNE_INTERVAL))
    if engine.settings.server_url:
        entry.async_on_unload(
            async_track_time_interval(hass, check_server, SERVER_CHECK_INTERVAL)
        )
    if engine.has_vision:
        entry.async_on_unload(
            async_track_time_interval(hass, release_vision, VISION_CHECK_INTERVAL)
        )


async def _async_reload_on_update(hass: HomeAssistant, entry: GemmaConfigEntry) -> None:
    """Reload what changed in the entry.

    Engine options or cloud sync changed: reload everything. Only agents changed: keep
    the loaded model.
    """
    sync = cloud_sync_subentry(entry)
    running = entry.runtime_data.cloud_sync
    if replace(engine_settings(entry), mmproj_path=None, cpu_variant=None) != replace(
        entry.runtime_data.engine.settings, mmproj_path=None, cpu_variant=None
    ) or (dict(sync.data) if sync else None) != (running.settings if running else None):
        await hass.config_entries.async_reload(entry.entry_id)
        return
    await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)


async def async_unload_entry(hass: HomeAssistant, entry: GemmaConfigEntry) -> bool:
    """Unload platforms, then free the model and stop its thread."""
    if not await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        return False
    if entry.runtime_data.command_webhook is not None:
        entry.runtime_data.command_webhook.unregister()
    if entry.runtime_data.cloud_sync is not None:
        await entry.runtime_data.cloud_sync.async_stop()
    await entry.runtime_data.engine.async_unload()
    await entry.runtime_data.executor.async_stop()
    return True
