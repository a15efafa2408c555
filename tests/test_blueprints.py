"""The automation blueprints under blueprints/automation/gemma_edge/, loaded into a real Home
Assistant from its blueprints folder, instantiated as an automation and run by their trigger;
the model's output is scripted (tests/scripted_model.py), everything after it is real."""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
from typing import Any

from homeassistant.components import persistent_notification
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.setup import async_setup_component

from .demo_agent import AGENT, state
from .scripted_model import call
from .test_vision import cameras, vision_entry  # noqa: F401 - fixtures

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


async def confirm_on_phone(hass: HomeAssistant, entry: Any) -> list[ServiceCall]:
    """The agent with Home Assistant's sentences on, a phone's notify action (registered in Home
    Assistant: a phone cannot exist in a test) and the blueprint's automation; what the phone got."""
    from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS  # noqa: PLC0415

    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, CONF_INSTANT_COMMANDS: True})
    await hass.async_block_till_done()
    notified: list[ServiceCall] = []

    async def phone(call: ServiceCall) -> None:
        notified.append(call)

    hass.services.async_register("notify", "mobile_app_test_phone", phone)
    path = install(hass, "confirm_on_phone.yaml")
    assert await async_setup_component(hass, "automation", {"automation": [{
        "alias": "Confirm on phone",
        "use_blueprint": {"path": path, "input": {"notify_action": "notify.mobile_app_test_phone", "agent": AGENT}},
    }]})  # fmt: skip
    await hass.async_block_till_done()
    return notified


async def test_confirm_on_phone_answers_the_agents_question_from_the_notification(hass: HomeAssistant, agent: Any) -> None:
    """"Open the garage door" asks first; the blueprint notifies the phone (here a notify action
    registered in Home Assistant: a phone cannot exist in a test) with a button; the tap (the
    Companion app's mobile_app_notification_action event) answers "yes" in the same conversation,
    and the door opens through the agent's confirmation rules."""
    from homeassistant.components import conversation  # noqa: PLC0415
    from homeassistant.core import Context  # noqa: PLC0415

    entry, model, calls = agent
    notified = await confirm_on_phone(hass, entry)

    result = await conversation.async_converse(hass, "Open the garage door", "garage", Context(), language="en", agent_id=AGENT)
    assert "confirmation" in result.response.speech["plain"]["speech"]
    for _ in range(50):
        if notified:
            break
        await asyncio.sleep(0.05)
    [question] = notified
    assert question.data["title"] == "Gemma asks before acting" and "cover.open_cover cover.garage_door" in question.data["message"]
    [button] = question.data["data"]["actions"]
    assert state(hass, "cover.garage_door") == "closed"
    hass.bus.async_fire("mobile_app_notification_action", {"action": button["action"]})  # the tap
    for _ in range(100):
        if state(hass, "cover.garage_door") in ("opening", "open"):
            break
        await asyncio.sleep(0.05)
    assert state(hass, "cover.garage_door") in ("opening", "open")
    assert [c for c in calls if c["service"] == "cover.open_cover"] == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]
    assert model.requests == []  # a bare yes: no generation
    for _ in range(50):
        if len(notified) == 2:
            break
        await asyncio.sleep(0.05)
    assert notified[1].data == {"title": "Gemma", "message": "Opened Garage Door."}  # the answer, on the phone
    # a second tap (or a replayed event) confirms nothing more
    hass.bus.async_fire("mobile_app_notification_action", {"action": button["action"]})
    await hass.async_block_till_done()
    assert len([c for c in calls if c["service"] == "cover.open_cover"]) == 1


async def test_camera_to_data_looks_counts_and_notifies(hass: HomeAssistant, vision_entry: Any, cameras: Any) -> None:
    """A doorbell (an input_boolean here) turns on: the AI Task entity gets the front door's
    snapshot and the structure; its checked answer becomes the notification; nobody seen, no
    notification."""
    from .scripted_model import ScriptedModel  # noqa: PLC0415

    hass.config_entries.async_update_entry(vision_entry, options={**vision_entry.options, "camera_min_interval": 0})
    await hass.async_block_till_done()
    model = ScriptedModel(vision_entry.runtime_data.engine)  # after the reload the new options caused
    assert await async_setup_component(hass, "persistent_notification", {})
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": {"doorbell": {"name": "Doorbell"}}})
    path = install(hass, "camera_to_data.yaml")
    assert await async_setup_component(hass, "automation", {"automation": [{
        "alias": "Who is at the door",
        "use_blueprint": {"path": path, "input": {
            "trigger_entity": "input_boolean.doorbell", "camera": "camera.front_door", "ai_task": "ai_task.gemma_ai_task",
        }},
    }]})  # fmt: skip
    await hass.async_block_till_done()

    async def ring(answer: str) -> None:
        asked = len(model.requests)
        model.script(answer)
        await hass.services.async_call("input_boolean", "turn_on", {"entity_id": "input_boolean.doorbell"}, blocking=True)
        for _ in range(100):  # until the run that looked has ended
            run = hass.states.get("automation.who_is_at_the_door")
            if len(model.requests) > asked and run is not None and not run.attributes.get("current"):
                break
            await asyncio.sleep(0.05)
        await hass.async_block_till_done()
        await hass.services.async_call("input_boolean", "turn_off", {"entity_id": "input_boolean.doorbell"}, blocking=True)

    await ring('{"people": 2, "description": "Two people are waiting at the door."}')
    [notification] = persistent_notification._async_get_or_create_notifications(hass).values()  # noqa: SLF001
    assert notification["title"] == "Front Door: 2 people" and notification["message"] == "Two people are waiting at the door."
    assert cameras["front"].snapshots == 1 and model.requests[0].images  # the snapshot went to the model
    persistent_notification.async_dismiss(hass, notification["notification_id"])
    await ring('{"people": 0, "description": "The porch is empty."}')
    assert cameras["front"].snapshots == 2
    assert not persistent_notification._async_get_or_create_notifications(hass)  # noqa: SLF001


async def test_confirm_on_phone_lets_a_newer_question_end_the_wait(hass: HomeAssistant, agent: Any) -> None:
    """A tap must answer only its own question: when the agent asks something newer in the same
    conversation, the older button's wait ends, and a late tap confirms nothing."""
    from homeassistant.components import conversation  # noqa: PLC0415
    from homeassistant.core import Context  # noqa: PLC0415

    entry, _model, calls = agent
    notified = await confirm_on_phone(hass, entry)
    await conversation.async_converse(hass, "Open the garage door", "garage", Context(), language="en", agent_id=AGENT)
    for _ in range(50):
        if notified:
            break
        await asyncio.sleep(0.05)
    first = notified[0].data["data"]["actions"][0]["action"]
    await conversation.async_converse(hass, "Open the garage door", "garage", Context(), language="en", agent_id=AGENT)  # asked again
    for _ in range(50):
        if len(notified) >= 3:  # the first button cleared, the second question notified
            break
        await asyncio.sleep(0.05)
    assert {"message": "clear_notification", "data": {"tag": first}} in [n.data for n in notified]
    hass.bus.async_fire("mobile_app_notification_action", {"action": first})  # a late tap on the old button
    await hass.async_block_till_done()
    await asyncio.sleep(0.2)
    assert not [c for c in calls if c["service"] == "cover.open_cover"]
