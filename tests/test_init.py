"""Setup, unload, Repairs issues and diagnostics with a real Home Assistant."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.gemma_edge.const import DOMAIN
from custom_components.gemma_edge.engine.preflight import PreflightError, check_memory_for
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import get_diagnostics_for_config_entry

from .conftest import async_create_local_entry


def _entry(hass: HomeAssistant, model_path: Path) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Test model",
        data={"model_source": "local", "model_path": str(model_path), "context_size": 1024, "threads": 0, "flash_attention": True},
    )
    entry.add_to_hass(hass)
    return entry


@pytest.mark.parametrize(
    ("fake_module", "message"),
    [
        ("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n", "crashed the check process (illegal instruction)"),
        ("raise ImportError('libllama.so: cannot open shared object file')\n", "cannot open shared object file"),
    ],
)
async def test_unusable_llama_cpp_raises_a_repair_and_ha_keeps_running(
    hass: HomeAssistant, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_module: str, message: str
) -> None:
    """A llama_cpp build that dies on import is caught in a child process, not in Home Assistant."""
    package = tmp_path / "shadow" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(fake_module)
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    entry = _entry(hass, smollm2_path)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue = ir.async_get(hass).async_get_issue(DOMAIN, "llama_cpp_unavailable")
    assert issue is not None and message in issue.translation_placeholders["error"]
    assert hass.state is CoreState.running
    # fixed (the shadow gone): the next setup works and the issue disappears
    monkeypatch.delenv("PYTHONPATH")
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert ir.async_get(hass).async_get_issue(DOMAIN, "llama_cpp_unavailable") is None
    await hass.config_entries.async_unload(entry.entry_id)


async def test_missing_model_file_raises_a_repair(hass: HomeAssistant, smollm2_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(smollm2_path.read_bytes())
    entry = _entry(hass, model)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    await hass.config_entries.async_unload(entry.entry_id)
    model.unlink()
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"model_invalid_{entry.entry_id}")
    assert issue is not None and "does not exist" in issue.translation_placeholders["error"]


async def test_corrupt_model_file_raises_a_repair(hass: HomeAssistant, smollm2_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    with smollm2_path.open("rb") as handle:
        model.write_bytes(handle.read(8 << 20))  # a download cut short: header fine, tensors missing
    entry = _entry(hass, model)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"model_invalid_{entry.entry_id}")
    assert issue is not None and "could not load" in issue.translation_placeholders["error"]


def test_memory_check() -> None:
    check_memory_for(1_000_000_000, available=4_000_000_000)
    with pytest.raises(PreflightError, match="needs about 5.8 GB of memory, 4.0 GB is available"):
        check_memory_for(5_000_000_000, available=4_000_000_000)


async def test_diagnostics(hass: HomeAssistant, hass_client, smollm2_path: Path) -> None:  # noqa: ANN001
    assert await async_setup_component(hass, "diagnostics", {})
    entry = await async_create_local_entry(hass, smollm2_path, {"prompt": "My PIN is 1234"})
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["engine"]["status"] == "ready"
    assert diagnostics["engine"]["chat_format"] == "gguf-template"
    assert diagnostics["subentries"][0]["data"]["prompt"] == "**REDACTED**"
    assert diagnostics["vision"] == {"projector": None, "available": False, "max_image_side": 768, "camera_min_interval_s": 10.0}
    assert "1234" not in str(diagnostics)
    # what a "does not run on my box" report needs: the hub and the runtime that was checked
    assert diagnostics["hub"]["llama_cpp_python"] == "0.3.36"
    assert "glibc" in diagnostics["hub"]["platform"] and "llama.cpp CPU level" in diagnostics["hub"]["platform"]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_corrupt_ledger_fails_closed_with_a_repair(hass: HomeAssistant, smollm2_path: Path) -> None:
    """A damaged action ledger: the agent still loads, but refuses to act, and a Repairs issue says why."""
    from custom_components.gemma_edge import ledger_path  # noqa: PLC0415
    from custom_components.gemma_edge.actions.records import ServiceAction  # noqa: PLC0415
    from custom_components.gemma_edge.actions.outcomes import ActionRequest  # noqa: PLC0415

    entry = _entry(hass, smollm2_path)
    path = ledger_path(hass, entry.entry_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage, not SQLite" * 500)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"ledger_unavailable_{entry.entry_id}")
    assert issue is not None and "cannot be used" in issue.translation_placeholders["error"]
    hass.states.async_set("light.x", "off")
    outcome = await entry.runtime_data.executor.async_execute(
        ActionRequest(ServiceAction("light", "turn_on", "light.x"), "scope", "service")
    )
    assert outcome.status.value == "rejected" and "ledger is unavailable" in outcome.message
    await hass.config_entries.async_unload(entry.entry_id)
