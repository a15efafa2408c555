"""The automation blueprints under blueprints/automation/gemma_edge/, loaded into a real Home
Assistant from its blueprints folder, instantiated as an automation and run by their trigger;
the model's output is scripted (tests/scripted_model.py), everything after it is real."""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
from typing import Any

from homeassistant.components import persistent_notification
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from .demo_agent import AGENT, state
from .scripted_model import call

BLUEPRINTS = Path(__file__).parent.parent / "blueprints" / "automation" / "gemma_edge"


def install(hass: HomeAssistant, name: str) -> str:
    target = Path(hass.config.path("blueprints", "automation", "gemma_edge"))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(BLUEPRINTS / name, target / name)
    return f"gemma_edge/{name}"


async def test_ask_gemma_acts_and_notifies_when_the_entity_changes(hass: HomeAssistant, agent: Any) -> None:
    entry, model, calls = agent
    path = install(hass, "ask_gemma.yaml")
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(hass, "automation", {"automation": [{
        "alias": "Porch light when the garage opens",
        "use_blueprint": {"path": path, "input": {
            "trigger_entity": "cover.garage_door", "to_state": "open",
            "request": "Turn on the bed light", "agent": AGENT, "notify_title": "Garage",
        }},
    }]})  # fmt: skip
    await hass.async_block_till_done()
    assert state(hass, "automation.porch_light_when_the_garage_opens") == "on"  # the blueprint is valid

    model.script(call("HassTurnOn", name="Bed Light"))
    await hass.services.async_call("cover", "open_cover", {"entity_id": "cover.garage_door"}, blocking=True)
    await hass.async_block_till_done()
    for _ in range(300):  # the demo's garage door takes a few seconds to open
        if persistent_notification._async_get_or_create_notifications(hass):  # noqa: SLF001
            break
        await asyncio.sleep(0.1)
    assert state(hass, "light.bed_light") == "on"
    [notification] = persistent_notification._async_get_or_create_notifications(hass).values()  # noqa: SLF001
    assert notification["title"] == "Garage"
    assert notification["message"] == "Turned on Bed Light. (executed)"
    assert [c for c in calls if c["service"] == "light.turn_on"] == [{"service": "light.turn_on", "entity_id": "light.bed_light"}]
    # another change that is not "open" asks nothing
    await hass.services.async_call("cover", "close_cover", {"entity_id": "cover.garage_door"}, blocking=True)
    await hass.async_block_till_done()
    assert len(model.requests) == 1
