"""llama-cpp-python installed at run time by a real Home Assistant: missing, fetched, checked.

The package index on 127.0.0.1 serves the wheel scripts/setup built here; Home Assistant's own
installer (uv) installs it into a folder of the test (never into the test's environment), and a
folder in front of the path makes llama_cpp look absent, as on a freshly recreated container.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
import json
from pathlib import Path

import pytest

from custom_components.gemma_edge import llama_runtime
from custom_components.gemma_edge.const import DOMAIN
from custom_components.gemma_edge.engine.host_platform import detect_host
from custom_components.gemma_edge.engine.preflight import LlamaCppCrashedError
from custom_components.gemma_edge.engine.wheels import WheelEntry, WheelManifest
from homeassistant import requirements as ha_requirements
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .wheel_index import WheelIndex, llama_wheel, serve_wheels, sha256_of


@pytest.fixture
def index(socket_enabled: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[WheelIndex]:
    with serve_wheels() as running:
        monkeypatch.setenv("UV_DEFAULT_INDEX", running.simple)
        monkeypatch.setenv("UV_NO_CACHE", "1")
        yield running


@pytest.fixture
def llama_cpp_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """llama_cpp absent for the check process; installs go to a folder of the test."""
    package = tmp_path / "shadow" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'llama_cpp'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    target = tmp_path / "deps"
    monkeypatch.setattr(
        llama_runtime, "install_kwargs", lambda hass: {**ha_requirements.pip_kwargs(None), "target": str(target)}
    )
    return target


def _serve_manifest(monkeypatch: pytest.MonkeyPatch, index: WheelIndex, *, sha256: str | None = None) -> None:
    wheel = llama_wheel()
    listed = WheelEntry(wheel.name, index.url(wheel.name), wheel.stat().st_size, sha256 or sha256_of(wheel))
    monkeypatch.setattr(llama_runtime, "load_manifest", lambda: WheelManifest("llama-cpp-python", "0.3.36", (listed,)))


def _entry(hass: HomeAssistant, model_path: Path) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN, title="Test model",
        data={"model_source": "local", "model_path": str(model_path), "context_size": 1024, "threads": 0, "flash_attention": True},
    )  # fmt: skip
    entry.add_to_hass(hass)
    return entry


def _issue_error(hass: HomeAssistant) -> str | None:
    issue = ir.async_get(hass).async_get_issue(DOMAIN, "llama_cpp_unavailable")
    return issue.translation_placeholders["error"] if issue and issue.translation_placeholders else None


async def _set_up(hass: HomeAssistant, model_path: Path) -> MockConfigEntry:
    entry = _entry(hass, model_path)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def test_a_missing_llama_cpp_is_installed_and_the_entry_loads(
    hass: HomeAssistant, smollm2_path: Path, index: WheelIndex, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve_manifest(monkeypatch, index)
    entry = await _set_up(hass, smollm2_path)
    assert entry.state is ConfigEntryState.LOADED
    assert (llama_cpp_missing / "llama_cpp" / "lib" / "libllama.so").exists()
    assert _issue_error(hass) is None
    # the downloaded wheel is not kept in the config folder
    assert not llama_runtime.wheel_folder(hass).exists()
    await hass.config_entries.async_unload(entry.entry_id)


async def test_a_failed_download_retries_later_and_a_wrong_file_does_not(
    hass: HomeAssistant, smollm2_path: Path, index: WheelIndex, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the release is not reachable (yet): Home Assistant retries the entry, nothing is left behind
    _serve_manifest(monkeypatch, index)
    index.handler.broken.add(llama_wheel().name)
    entry = await _set_up(hass, smollm2_path)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert "HTTP 404" in (_issue_error(hass) or "")
    assert not llama_runtime.wheel_folder(hass).exists()
    assert hass.state is CoreState.running
    # a file that is not the one listed: no retry (waiting does not change it), nothing installed
    await hass.config_entries.async_unload(entry.entry_id)
    index.handler.broken.clear()
    _serve_manifest(monkeypatch, index, sha256="e" * 64)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert "does not match" in (_issue_error(hass) or "")
    assert not (llama_cpp_missing / "llama_cpp").exists()
    # the listed file is served again: the next setup installs it and the issue goes
    _serve_manifest(monkeypatch, index)
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert _issue_error(hass) is None
    await hass.config_entries.async_unload(entry.entry_id)


async def test_a_musl_hub_without_a_wheel_gets_a_repair_not_a_compile(
    hass: HomeAssistant, smollm2_path: Path, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_runtime, "detect_host", lambda: replace(detect_host(), libc="musl", libc_version=(1, 2)))
    installs: list[str] = []
    monkeypatch.setattr(llama_runtime.pkg_util, "install_package", lambda package, **kwargs: installs.append(package))
    entry = await _set_up(hass, smollm2_path)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert "no prebuilt llama-cpp-python==0.3.36 fits" in (_issue_error(hass) or "")
    assert installs == []
    assert hass.state is CoreState.running


def test_the_manifest_has_no_compiled_requirements() -> None:
    manifest = json.loads((Path(llama_runtime.__file__).parent / "manifest.json").read_text())
    assert not [r for r in manifest["requirements"] if r.split("==")[0] in ("llama-cpp-python", "faster-whisper", "ctranslate2")]


async def test_where_no_model_can_run_the_flow_offers_only_a_server(
    hass: HomeAssistant, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any model is downloaded: a hub with no fitting build is sent to the server entry."""
    monkeypatch.setattr(llama_runtime, "detect_host", lambda: replace(detect_host(), libc="musl", libc_version=(1, 2)))
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    assert result["step_id"] == "server_only" and result["menu_options"] == ["server"]
    assert "no prebuilt llama-cpp-python==0.3.36 fits" in result["description_placeholders"]["error"]
    # a glibc hub can build it: every choice is offered
    monkeypatch.setattr(llama_runtime, "detect_host", detect_host)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    assert result["step_id"] == "user" and result["menu_options"] == ["gemma4_e4b", "gemma4_e2b", "local", "server"]


async def test_another_version_is_replaced_by_the_pinned_one_or_kept_when_that_fails(
    hass: HomeAssistant, smollm2_path: Path, index: WheelIndex, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older llama-cpp-python in Home Assistant (installed by hand): the pinned one replaces it."""
    real_check = llama_runtime.check_llama_cpp

    def older_installed(*args: object, extra_paths: tuple[str, ...] = ()) -> str:
        return real_check(extra_paths=extra_paths) if extra_paths else "0.3.30"

    monkeypatch.setattr(llama_runtime, "check_llama_cpp", older_installed)
    _serve_manifest(monkeypatch, index)
    entry = await _set_up(hass, smollm2_path)
    assert entry.state is ConfigEntryState.LOADED
    assert (llama_cpp_missing / "llama_cpp" / "lib" / "libllama.so").exists()
    assert llama_runtime.checked_version(hass) == "0.3.36"
    await hass.config_entries.async_unload(entry.entry_id)

    # the pinned one cannot be installed (offline): the working older one is kept, no Repairs issue
    hass.data.pop(llama_runtime._STATE)  # noqa: SLF001 - a new Home Assistant start
    index.handler.broken.add(llama_wheel().name)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert llama_runtime.checked_version(hass) == "0.3.30" and _issue_error(hass) is None
    await hass.config_entries.async_unload(entry.entry_id)


async def test_a_pinned_build_that_installs_but_does_not_run_fails_the_entry(
    hass: HomeAssistant, smollm2_path: Path, index: WheelIndex, llama_cpp_missing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older build was replaced by the install: it is gone, and loading the new one (which
    died in the check) in Home Assistant's process could kill it. The entry fails with a Repairs
    issue instead of "keeping" a version that is no longer there."""

    def older_then_broken(*args: object, extra_paths: tuple[str, ...] = (), cpu_variant: str | None = None) -> str:
        if extra_paths:
            raise LlamaCppCrashedError("llama-cpp-python crashed the check process (illegal instruction)", 4)
        return "0.3.30"

    monkeypatch.setattr(llama_runtime, "check_llama_cpp", older_then_broken)
    _serve_manifest(monkeypatch, index)
    entry = await _set_up(hass, smollm2_path)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert "does not work" in (_issue_error(hass) or "") and "illegal instruction" in (_issue_error(hass) or "")
    assert hass.state is CoreState.running
