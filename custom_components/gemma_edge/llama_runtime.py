"""llama-cpp-python at run time: checked at every start, installed when missing.

It is not a manifest requirement (Home Assistant would try to compile it on Alpine and
refuse to load the integration). A recreated container loses run-time installs, so every
start checks it in a child process (import and a tiny inference) and installs it again
when it is gone. Any failure is a Repairs issue and a failed entry; Home Assistant and
the other entries keep running.
"""

from __future__ import annotations

import asyncio
from functools import partial
import importlib
from pathlib import Path
import shutil
import signal
from typing import Any, NoReturn

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryError, ConfigEntryNotReady
from homeassistant.helpers import issue_registry as ir
from homeassistant.requirements import pip_kwargs
from homeassistant.util import package as pkg_util
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN, LOGGER
from .engine.download import ChecksumMismatchError, DownloadError
from .engine.host_platform import HostPlatform, detect_host
from .engine.preflight import (
    LlamaCppCrashedError,
    LlamaCppMissingError,
    PreflightError,
    check_llama_cpp,
    installed_cpu_variants,
)
from .engine.wheels import (
    InstallPlan,
    WheelChoiceError,
    WheelManifest,
    fetch_wheel,
    load_manifest,
    plan_install,
)
from .repairs import ISSUE_LLAMA_CPP, raise_issue


class _RuntimeState:
    """What this Home Assistant run found out about llama-cpp-python.

    Checked once per run.
    """

    def __init__(self) -> None:
        """Start with nothing checked yet."""
        self.lock = asyncio.Lock()
        self.version: str | None = None
        # a lower ggml CPU variant than ggml's own pick, which died on this machine
        self.cpu_variant: str | None = None


_STATE: HassKey[_RuntimeState] = HassKey(f"{DOMAIN}_llama_cpp")


def check_fitting(extra_paths: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """Check the installed llama-cpp-python (blocking).

    When ggml's own pick of CPU variant dies with an illegal instruction (a CPU that
    reports a feature its hypervisor or kernel does not enable, seen with AMX), the
    build's variants are tried from the best down; returns the version and the variant
    that ran (None: ggml's own pick). Otherwise the first error stands.
    """
    try:
        return check_llama_cpp(extra_paths=extra_paths), None
    except LlamaCppCrashedError as crash:
        if crash.signal != signal.SIGILL:
            raise
        try:
            variants = installed_cpu_variants(extra_paths=extra_paths)
        except PreflightError:
            raise crash from None
        for variant in variants:
            try:
                return check_llama_cpp(
                    extra_paths=extra_paths, cpu_variant=variant
                ), variant
            except PreflightError:
                continue
        raise


class _InstalledButBrokenError(ConfigEntryError):
    """The pinned build was installed (replacing what was there) and does not work."""


def read_hub() -> tuple[HostPlatform, WheelManifest]:
    """Return this hub and the wheel list.

    Blocking: files and musl's loader. Raises WheelChoiceError when the list is damaged.
    """
    return detect_host(), load_manifest()


def install_kwargs(hass: HomeAssistant) -> dict[str, Any]:
    """Return where and how Home Assistant installs packages here.

    Its own rules for venv, container and config/deps.
    """
    return pip_kwargs(hass.config.config_dir)


def wheel_folder(hass: HomeAssistant) -> Path:
    """Return the folder downloaded wheels are kept in until installed."""
    return Path(hass.config.path(".storage", DOMAIN, "wheels"))


async def async_ensure_llama_cpp(hass: HomeAssistant) -> str:
    """Return the working llama-cpp-python's version, installing it first if missing.

    Raises ConfigEntryError (a Repairs issue says why and what to do) or
    ConfigEntryNotReady (the download failed: Home Assistant retries the entry later).
    """
    state = hass.data.setdefault(_STATE, _RuntimeState())
    async with state.lock:
        if state.version is not None:
            return state.version
        try:
            version, state.cpu_variant = await hass.async_add_executor_job(
                check_fitting
            )
        except LlamaCppMissingError:
            try:
                host, manifest = await hass.async_add_executor_job(read_hub)
                plan = plan_install(manifest, host)
            except WheelChoiceError as err:
                _fail(hass, str(err))
            version = await _async_install(hass, host, plan)
        except PreflightError as err:
            _fail(hass, str(err))
        version = await _async_pinned(hass, version)
        LOGGER.debug("llama-cpp-python %s runs on this CPU", version)
        ir.async_delete_issue(hass, DOMAIN, ISSUE_LLAMA_CPP)
        state.version = version
        return version


async def async_llama_cpp_problem(hass: HomeAssistant) -> str | None:
    """Return why a model cannot run inside this Home Assistant.

    None: it can, or can be installed. For the config flow, before anything is
    downloaded: a hub with no fitting build is offered the llama.cpp server entry
    instead of a model it could never load.
    """
    state = hass.data.setdefault(_STATE, _RuntimeState())
    if state.version is not None:
        return None
    try:
        await hass.async_add_executor_job(check_fitting)
    except LlamaCppMissingError:
        try:
            host, manifest = await hass.async_add_executor_job(read_hub)
            plan_install(manifest, host)
        except WheelChoiceError as err:
            return str(err)
    except PreflightError as err:
        return str(err)
    return None


def _fail(hass: HomeAssistant, error: str, *, retry: bool = False) -> NoReturn:
    raise_issue(hass, ISSUE_LLAMA_CPP, None, error=error)
    if retry:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="llama_cpp_not_installed",
            translation_placeholders={"error": error},
        )
    raise ConfigEntryError(
        translation_domain=DOMAIN,
        translation_key="llama_cpp_unusable",
        translation_placeholders={"error": error},
    )


async def _async_pinned(hass: HomeAssistant, version: str) -> str:
    """Replace another version than the pinned one with the pinned one.

    Another version was installed by hand, or before the pin moved (the engine uses
    llama-cpp-python internals). Where the pinned one cannot be installed, the working
    one stays.
    """
    try:
        host, manifest = await hass.async_add_executor_job(read_hub)
    except WheelChoiceError as err:
        LOGGER.warning("Keeping llama-cpp-python %s: %s", version, err)
        return version
    if version == manifest.version:
        return version
    try:
        plan = plan_install(manifest, host)
    except WheelChoiceError:
        plan = None
    if plan is None or plan.wheel is None:
        # no source build at every start (minutes, or a failure without a compiler)
        LOGGER.warning(
            "llama-cpp-python %s is installed; this integration is made for %s",
            version,
            manifest.version,
        )
        return version
    LOGGER.warning(
        "llama-cpp-python %s is installed; this integration is made for %s: "
        "installing it",
        version,
        manifest.version,
    )
    try:
        return await _async_install(hass, host, plan)
    except _InstalledButBrokenError:
        # the working one is gone: loading the broken one could kill Home Assistant
        raise
    except (ConfigEntryError, ConfigEntryNotReady) as err:
        LOGGER.warning("Keeping llama-cpp-python %s, which works: %s", version, err)
        return version


async def _async_install(
    hass: HomeAssistant, host: HostPlatform, plan: InstallPlan
) -> str:
    LOGGER.info("Installing %s for %s", plan.describe(), host.describe())
    package = await _async_fetch(hass, plan)
    kwargs = install_kwargs(hass)
    installed = await hass.async_add_executor_job(
        partial(pkg_util.install_package, package, upgrade=False, **kwargs)
    )
    if plan.wheel is not None:
        await hass.async_add_executor_job(
            partial(shutil.rmtree, wheel_folder(hass), ignore_errors=True)
        )
    if not installed:
        _fail(
            hass,
            f"installing {plan.describe()} failed "
            "(Home Assistant's log has the installer's output)",
        )
    importlib.invalidate_caches()
    target = kwargs.get("target")
    state = hass.data.setdefault(_STATE, _RuntimeState())
    try:
        version, state.cpu_variant = await hass.async_add_executor_job(
            check_fitting, (target,) if target else ()
        )
    except PreflightError as err:
        error = f"the installed {plan.describe()} does not work: {err}"
        raise_issue(hass, ISSUE_LLAMA_CPP, None, error=error)
        raise _InstalledButBrokenError(
            translation_domain=DOMAIN,
            translation_key="llama_cpp_unusable",
            translation_placeholders={"error": error},
        ) from err
    LOGGER.info("Installed llama-cpp-python %s", version)
    return version


async def _async_fetch(hass: HomeAssistant, plan: InstallPlan) -> str:
    """Return the package to hand the installer.

    The checked wheel's path, or the source requirement.
    """
    wheel = plan.wheel
    if wheel is None:
        return plan.requirement
    reported = [0]

    def progress(fraction: float) -> None:
        if int(fraction * 4) > reported[0]:
            reported[0] = int(fraction * 4)
            LOGGER.info("Downloading %s: %d%%", wheel.file, reported[0] * 25)

    try:
        path = await hass.async_add_executor_job(
            fetch_wheel, wheel, wheel_folder(hass), progress
        )
    except DownloadError as err:
        await hass.async_add_executor_job(
            partial(shutil.rmtree, wheel_folder(hass), ignore_errors=True)
        )
        # the network may come back; a file that is not the listed one will not change
        # by waiting
        _fail(hass, str(err), retry=not isinstance(err, ChecksumMismatchError))
    return str(path)


def checked_version(hass: HomeAssistant) -> str | None:
    """Return the llama-cpp-python version this run checked.

    None: not checked or not needed.
    """
    state = hass.data.get(_STATE)
    return state.version if state else None


def checked_cpu_variant(hass: HomeAssistant) -> str | None:
    """Return the ggml CPU variant the check fell back to (None: ggml's own pick)."""
    state = hass.data.get(_STATE)
    return state.cpu_variant if state else None
