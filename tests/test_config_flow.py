"""The real config flow: local files, preset downloads from a fake hub, options and agents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge import config_flow, flow_checks
from custom_components.gemma_edge.engine import preflight
from custom_components.gemma_edge.const import (
    CONF_MAX_TOKENS,
    CONF_MODEL_PATH,
    CONF_MODEL_SOURCE,
    CONF_N_CTX,
    CONF_PROMPT,
    CONF_TOOL_CHOICE,
    DOMAIN,
    PRESETS,
)
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, FlowResultType

from .conftest import async_create_local_entry
from .mmproj_files import write_tiny_mmproj
from .fake_hub import FakeHub, HubFile, serve_fake_hub
from .gguf_files import write_gguf


async def _local_step(hass: HomeAssistant, data: dict[str, Any]) -> dict[str, Any]:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["gemma4_e4b", "gemma4_e2b", "local", "server"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": "local"})
    return await hass.config_entries.flow.async_configure(result["flow_id"], data)


async def test_local_model_creates_engine_and_agent(hass: HomeAssistant, smollm2_path: Path) -> None:
    entry = await async_create_local_entry(hass, smollm2_path)
    assert entry.data[CONF_MODEL_PATH] == str(smollm2_path)
    assert entry.data[CONF_MODEL_SOURCE] == "local"
    assert entry.title == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    subentry, ai_task = entry.subentries.values()
    assert subentry.subentry_type == "conversation"
    assert subentry.data[CONF_LLM_HASS_API] == ["assist"]
    assert ai_task.subentry_type == "ai_task_data"
    assert hass.states.get("conversation.gemma_conversation") is not None
    assert hass.states.get("ai_task.gemma_ai_task") is not None
    # the same file twice is refused
    result = await _local_step(hass, {CONF_MODEL_PATH: str(smollm2_path)})
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "already_configured"
    # unloading frees the model and ends its thread
    thread = entry.runtime_data.engine.worker.thread
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert not thread.is_alive()
    assert entry.state is ConfigEntryState.NOT_LOADED


@pytest.mark.parametrize(
    ("make", "field", "error"),
    [
        (lambda tmp: tmp / "missing.gguf", "model_path", "model_not_found"),
        (lambda tmp: _write(tmp / "notes.txt", b"just text"), "model_path", "not_gguf"),
        (lambda tmp: write_gguf(tmp / "mmproj.gguf", {"general.architecture": "clip"}), "model_path", "unsupported_architecture"),
        (lambda tmp: write_gguf(tmp / "embed.gguf", {"general.architecture": "bert"}), "model_path", "unsupported_architecture"),
    ],
)
async def test_local_model_errors(hass: HomeAssistant, tmp_path: Path, make: Any, field: str, error: str) -> None:
    result = await _local_step(hass, {CONF_MODEL_PATH: str(make(tmp_path))})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}


async def test_a_local_error_then_the_right_file_creates_the_engine(hass: HomeAssistant, smollm2_path: Path, tmp_path: Path) -> None:
    result = await _local_step(hass, {CONF_MODEL_PATH: str(tmp_path / "missing.gguf")})
    assert result["errors"] == {CONF_MODEL_PATH: "model_not_found"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_MODEL_PATH: str(smollm2_path)})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(result["result"].entry_id)


async def test_missing_mmproj_is_a_form_error(hass: HomeAssistant, smollm2_path: Path, tmp_path: Path) -> None:
    result = await _local_step(hass, {CONF_MODEL_PATH: str(smollm2_path), "mmproj_path": str(tmp_path / "no.gguf")})
    assert result["errors"] == {"mmproj_path": "mmproj_not_found"}


async def test_reconfigure_moves_the_engine_to_another_model_file(
    hass: HomeAssistant, smollm2_path: Path, gemma3_path: Path, tmp_path: Path, projectors: dict[str, Path]
) -> None:
    """Reconfigure shows the current files, checks the new ones like the setup does, refuses a
    file another engine uses, and reloads the engine on the new model with its agents."""
    entry = await async_create_local_entry(hass, smollm2_path)
    other = await async_create_local_entry(hass, gemma3_path)
    agents = set(entry.subentries)
    flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
    assert flow["step_id"] == "reconfigure_local"
    [model_field, _projector] = flow["data_schema"].schema
    assert model_field.description["suggested_value"] == str(smollm2_path)
    missing = await hass.config_entries.flow.async_configure(flow["flow_id"], {CONF_MODEL_PATH: str(tmp_path / "gone.gguf")})
    assert missing["errors"] == {CONF_MODEL_PATH: "model_not_found"}
    taken = await hass.config_entries.flow.async_configure(flow["flow_id"], {CONF_MODEL_PATH: str(gemma3_path)})
    assert taken["type"] is FlowResultType.ABORT and taken["reason"] == "already_configured"
    await hass.config_entries.async_remove(other.entry_id)
    flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
    no_projector = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_MODEL_PATH: str(gemma3_path), "mmproj_path": str(tmp_path / "no.gguf")}
    )
    assert no_projector["errors"] == {"mmproj_path": "mmproj_not_found"}
    done = await hass.config_entries.flow.async_configure(flow["flow_id"], {CONF_MODEL_PATH: f" {gemma3_path} "})
    assert done["type"] is FlowResultType.ABORT and done["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED and entry.data[CONF_MODEL_PATH] == str(gemma3_path)
    assert entry.runtime_data.engine.settings.model_path == str(gemma3_path)
    assert set(entry.subentries) == agents and hass.states.get("conversation.gemma_conversation") is not None
    # a projector added to the same model: the engine reloads and can see
    assert not entry.runtime_data.engine.has_vision
    flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
    done = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_MODEL_PATH: str(gemma3_path), "mmproj_path": str(projectors["gemma3"])}
    )
    assert done["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED and entry.runtime_data.engine.has_vision
    await hass.config_entries.async_unload(entry.entry_id)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def _start_preset(
    hass: HomeAssistant, hub: FakeHub, folder: Path, monkeypatch: pytest.MonkeyPatch, vision: bool = False
) -> dict[str, Any]:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": "gemma4_e2b"})
    assert result["step_id"] == "gemma4_e2b"
    return await hass.config_entries.flow.async_configure(result["flow_id"], {"download_dir": str(folder), "vision": vision})


def _hub_key(filename: str | None = None) -> str:
    preset = PRESETS["gemma4_e2b"]
    return f"{preset.repo_id}/{filename or preset.filename}"


async def test_preset_download_with_progress_and_resume(
    hass: HomeAssistant, socket_enabled: None, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset downloads (a stand-in GGUF served as E2B, and a tiny vision projector as its
    mmproj), resumes a dropped transfer, loads with vision."""
    projector = write_tiny_mmproj(tmp_path / "served-mmproj.gguf", 576)
    preset = PRESETS["gemma4_e2b"]
    hub = FakeHub(
        {_hub_key(): HubFile(smollm2_path, drop_after=20_000_000), _hub_key(preset.mmproj_filename): HubFile(projector)}
    )
    progress: list[float] = []
    hass.bus.async_listen(EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, callback(lambda e: progress.append(e.data["progress"])))
    with serve_fake_hub(hub):
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch, vision=True)
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        assert result["progress_action"] == "download"
        await hass.async_block_till_done(wait_background_tasks=True)
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    entry = result["result"]
    target = tmp_path / "models" / PRESETS["gemma4_e2b"].filename
    assert entry.data[CONF_MODEL_PATH] == str(target)
    assert entry.data[CONF_MODEL_SOURCE] == "gemma4_e2b"
    assert target.read_bytes() == smollm2_path.read_bytes()
    assert Path(entry.data["mmproj_path"]).read_bytes() == projector.read_bytes()
    assert any(r and r.startswith("bytes=") for m, _, r in hub.requests if m == "GET")
    assert len(progress) > 5 and progress == sorted(progress) and progress[-1] == 1.0
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.engine.has_vision
    await hass.config_entries.async_unload(entry.entry_id)


async def test_preset_checksum_mismatch_aborts(
    hass: HomeAssistant, socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _write(tmp_path / "served.gguf", b"GGUF" + bytes(4096))
    hub = FakeHub({_hub_key(): HubFile(served, advertised_sha256="cd" * 32)})
    with serve_fake_hub(hub):
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch)
        await hass.async_block_till_done(wait_background_tasks=True)
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "checksum_mismatch"
    assert list((tmp_path / "models").iterdir()) == []


async def test_preset_not_enough_disk_is_a_form_error(
    hass: HomeAssistant, socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = _write(tmp_path / "served.gguf", b"GGUF" + bytes(4096))
    hub = FakeHub({_hub_key(): HubFile(served, advertised_size=10**16)})
    with serve_fake_hub(hub):
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "not_enough_disk"}
    assert float(result["description_placeholders"]["needed"]) > 1e6
    assert [m for m, _, _ in hub.requests] == ["HEAD"]


async def test_preset_memory_and_folder_errors_then_the_download(
    hass: HomeAssistant, socket_enabled: None, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little memory and a folder that cannot be made are form errors on the same form; once
    both are fixed, the same flow downloads and creates the engine."""
    monkeypatch.setattr(preflight, "available_memory_bytes", lambda: 1 << 30)  # this machine has more
    (tmp_path / "a file").write_text("not a folder")
    with serve_fake_hub(FakeHub({_hub_key(): HubFile(smollm2_path)})) as hub:
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch)
        assert result["type"] is FlowResultType.FORM and result["errors"] == {"base": "not_enough_memory"}
        monkeypatch.setattr(preflight, "available_memory_bytes", lambda: None)  # unknown: not refused
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {"download_dir": str(tmp_path / "a file" / "models"), "vision": False}
        )
        assert result["errors"] == {"download_dir": "folder_not_writable"}
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {"download_dir": str(tmp_path / "models"), "vision": False}
        )
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        await hass.async_block_till_done(wait_background_tasks=True)
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(result["result"].entry_id)


async def test_the_e4b_step_offers_a_folder_and_vision(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": "gemma4_e4b"})
    assert result["type"] is FlowResultType.FORM and result["step_id"] == "gemma4_e4b"
    assert result["description_placeholders"]["model"] == "Gemma 4 E4B"
    assert [str(field) for field in result["data_schema"].schema] == ["download_dir", "vision"]


async def test_preset_unexpected_error_is_unknown(
    hass: HomeAssistant, socket_enabled: None, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(config_flow, "check_free_disk", broken)
    with serve_fake_hub(FakeHub({_hub_key(): HubFile(smollm2_path)})) as hub:
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch)
    assert result["type"] is FlowResultType.FORM and result["errors"] == {"base": "unknown"}


async def test_preset_hub_unreachable(hass: HomeAssistant, socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_fake_hub(FakeHub()) as hub:
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch)
    assert result["errors"] == {"base": "cannot_reach_hub"}


async def test_preset_without_projector_on_hub(
    hass: HomeAssistant, socket_enabled: None, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vision asked for but the hub lacks the projector: a form error before anything downloads."""
    with serve_fake_hub(FakeHub({_hub_key(): HubFile(smollm2_path)})) as hub:
        result = await _start_preset(hass, hub, tmp_path / "models", monkeypatch, vision=True)
    assert result["errors"] == {"base": "cannot_reach_hub"}
    # only the files' metadata was asked for (huggingface_hub may also ask the hub for
    # its own API once per process)
    files = [method for method, path, _ in hub.requests if "/resolve/" in path]
    assert files == ["HEAD", "HEAD"], hub.requests


async def test_options_flow_reloads_engine(hass: HomeAssistant, smollm2_path: Path) -> None:
    entry = await async_create_local_entry(hass, smollm2_path)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_N_CTX: 2048, "threads": 1, "flash_attention": False}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    settings = entry.runtime_data.engine.settings
    assert (settings.n_ctx, settings.n_threads, settings.flash_attn) == (2048, 1, False)
    assert entry.options["image_max_side"] == 768 and entry.options["camera_min_interval"] == 10
    await hass.config_entries.async_unload(entry.entry_id)


async def test_conversation_subentry_create_and_reconfigure(hass: HomeAssistant, smollm2_path: Path) -> None:
    entry = await async_create_local_entry(hass, smollm2_path)
    engine = entry.runtime_data.engine
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "conversation"), context={"source": "user"})
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"name": "Kitchen helper", CONF_PROMPT: "Be brief.", "temperature": 0.5, CONF_MAX_TOKENS: 64,
         "max_history": 4, CONF_TOOL_CHOICE: "required", CONF_LLM_HASS_API: ["assist"]},
    )  # fmt: skip
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    subentry = next(s for s in entry.subentries.values() if s.title == "Kitchen helper")
    assert subentry.data[CONF_MAX_TOKENS] == 64
    assert hass.states.get("conversation.kitchen_helper") is not None
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "conversation"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_PROMPT: "Be very brief.", "temperature": 0.1, CONF_MAX_TOKENS: 32, "max_history": 2, CONF_TOOL_CHOICE: "auto"},
    )
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    # editing agents keeps the loaded model: no reload of the engine
    assert entry.runtime_data.engine is engine
    assert entry.subentries[subentry.subentry_id].data[CONF_PROMPT] == "Be very brief."
    assert CONF_LLM_HASS_API not in entry.subentries[subentry.subentry_id].data
    # reconfiguring again shows no API chosen: an agent without home control keeps none
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "conversation"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description and "suggested_value" in key.description
    }
    assert suggested[CONF_LLM_HASS_API] == []
    await hass.config_entries.async_unload(entry.entry_id)


async def test_ai_task_subentry_create_and_reconfigure(hass: HomeAssistant, smollm2_path: Path) -> None:
    entry = await async_create_local_entry(hass, smollm2_path)
    engine = entry.runtime_data.engine
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "ai_task_data"), context={"source": "user"})
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"name": "Camera analyst", "temperature": 0.0, CONF_MAX_TOKENS: 128}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert hass.states.get("ai_task.camera_analyst") is not None
    subentry = next(s for s in entry.subentries.values() if s.title == "Camera analyst")
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "ai_task_data"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], {"temperature": 0.5, CONF_MAX_TOKENS: 256})
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.runtime_data.engine is engine  # no model reload
    assert entry.subentries[subentry.subentry_id].data == {"temperature": 0.5, CONF_MAX_TOKENS: 256}
    await hass.config_entries.async_unload(entry.entry_id)


async def test_image_options_do_not_reload_the_model(hass: HomeAssistant, smollm2_path: Path) -> None:
    entry = await async_create_local_entry(hass, smollm2_path)
    engine = entry.runtime_data.engine
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_N_CTX: 8192, "threads": 0, "flash_attention": True, "image_max_side": 512, "camera_min_interval": 30},
    )
    await hass.async_block_till_done()
    assert entry.runtime_data.engine is engine
    assert (entry.runtime_data.vision.max_side, entry.runtime_data.vision.min_interval) == (512, 30)
    await hass.config_entries.async_unload(entry.entry_id)


async def test_unexpected_error_is_an_unknown_form_error(
    hass: HomeAssistant, smollm2_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure nobody foresaw leaves the form open with "unknown" and the traceback in the log."""

    def broken(path: str) -> None:
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(flow_checks, "read_gguf_info", broken)
    result = await _local_step(hass, {CONF_MODEL_PATH: str(smollm2_path)})
    assert result["type"] is FlowResultType.FORM and result["errors"] == {"base": "unknown"}
    assert "disk controller on fire" in caplog.text and "Traceback" in caplog.text


def test_speech_downloads_next_to_the_model_or_in_the_default_folder(hass: HomeAssistant, tmp_path: Path) -> None:
    """A server entry has no model file: speech models go to the default download folder."""
    from pytest_homeassistant_custom_component.common import MockConfigEntry  # noqa: PLC0415

    from custom_components.gemma_edge.flow_download import default_download_dir  # noqa: PLC0415
    from custom_components.gemma_edge.subentry_flow import speech_download_dir  # noqa: PLC0415

    local = MockConfigEntry(domain=DOMAIN, data={CONF_MODEL_PATH: str(tmp_path / "model.gguf")})
    assert speech_download_dir(hass, local) == tmp_path
    server = MockConfigEntry(domain=DOMAIN, data={"model_source": "server", "server_url": "http://127.0.0.1:1"})
    assert speech_download_dir(hass, server) == Path(default_download_dir(hass))
