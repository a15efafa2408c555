"""Remote actions, conversation turns and pushed commands in a real Home Assistant (demo home)
against a real receiver on 127.0.0.1 that verifies every delivery with `standardwebhooks`.
The model's tool call is scripted (tests/scripted_model.py); everything after it is real."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.components import persistent_notification
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.setup import async_setup_component

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN

from .demo_agent import ask, state
from .scripted_model import ScriptedModel, call
from .test_cloud_sync import add_cloud_sync, receiver, sensor, until  # noqa: F401 - the receiver fixture
from .test_remote_actions import GROCERIES, signed


def events_of(rx: Any, event_type: str) -> list[dict[str, Any]]:
    return [e for e in rx.events if e["type"] == f"gemma_edge.{event_type}"]


async def test_a_remote_action_is_requested_once_and_its_result_announced_once(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    entry, _model, _calls = agent
    rx, url = receiver
    _subentry, rx.secret = await add_cloud_sync(hass, entry, url, remote_actions=[GROCERIES])
    model = ScriptedModel(entry.runtime_data.engine)  # the entry reloaded with sync
    announced: list[Event] = []

    @callback
    def announce(event: Event) -> None:
        announced.append(event)

    hass.bus.async_listen(f"{DOMAIN}_remote_action", announce)
    assert sensor(hass, entry, "remote_actions").state == "0"

    # the model sees the remote action as a tool and calls it; the answer says it was requested
    model.script(call("order_groceries", items=["milk", "eggs"], shop="market"))
    assert await ask(hass, "Order milk and eggs from the market", conversation_id="c1") == "Requested order groceries."
    tools = model.requests[-1].prompt
    assert "order_groceries" in tools and "Order groceries for delivery" in tools
    # a retried turn (the same words in the same conversation) does not order twice
    model.script(call("order_groceries", items=["milk", "eggs"], shop="market"))
    await ask(hass, "Order milk and eggs from the market", conversation_id="c1")
    await until(lambda: len(events_of(rx, "remote_action.requested")) >= 1)
    await hass.async_block_till_done()
    [requested] = events_of(rx, "remote_action.requested")
    assert requested["subject"] == "order_groceries"
    assert requested["data"] == {"action": "order_groceries", "arguments": {"items": ["milk", "eggs"], "shop": "market"}}
    await until(lambda: sensor(hass, entry, "remote_actions").state == "1")

    # arguments that do not fit the schema reach nobody
    model.script(call("order_groceries", items="milk", shop="mall"), "I could not order that.")
    await ask(hass, "Order milk from the mall", conversation_id="c2")
    assert len(events_of(rx, "remote_action.requested")) == 1

    # the cloud's result arrives in the answer to the next batch, twice: announced once
    result = {"id": f"result-{requested['id']}", "type": "remote_action.result",
              "data": {"request_id": requested["id"], "status": "succeeded", "message": "Delivery at 5 pm.", "result": {"order": 17}}}  # fmt: skip
    rx.answers = [(200, json.dumps({"commands": [result]})), (200, json.dumps({"commands": [result]}))]
    await hass.services.async_call("light", "toggle", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: len(announced) == 1)
    assert announced[0].data["status"] == "succeeded" and announced[0].data["message"] == "Delivery at 5 pm."
    assert announced[0].data["result"] == {"order": 17} and announced[0].data["conversation_id"] == "c1"
    from custom_components.gemma_edge import logbook as gemma_logbook  # noqa: PLC0415

    descriptions: dict[str, Any] = {}
    gemma_logbook.async_describe_events(hass, lambda _domain, event_type, describe: descriptions.update({event_type: describe}))
    line = descriptions[f"{DOMAIN}_remote_action"](announced[0])
    assert line == {"name": "Gemma", "message": "order groceries done: Delivery at 5 pm."}
    notifications = persistent_notification._async_get_or_create_notifications(hass)  # noqa: SLF001
    assert notifications[f"{DOMAIN}_remote_{requested['id']}"]["message"] == "Delivery at 5 pm."
    await until(lambda: sensor(hass, entry, "remote_actions").state == "0")
    recent = sensor(hass, entry, "remote_actions").attributes["recent"]
    assert recent[0]["action"] == "order_groceries" and recent[0]["status"] == "succeeded"
    await hass.services.async_call("light", "toggle", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: len(events_of(rx, "command.result")) >= 2)
    assert {e["data"]["status"] for e in events_of(rx, "command.result")} == {"applied"}
    assert len(announced) == 1  # the second delivery of the result changed nothing

    # a result for a request this hub never made is rejected with a reason
    stray = {"id": "result-x", "type": "remote_action.result", "data": {"request_id": "01NOPE", "status": "failed"}}
    rx.answers = [(200, json.dumps({"commands": [stray]}))]
    await hass.services.async_call("light", "toggle", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: any(e["data"]["command_id"] == "result-x" for e in events_of(rx, "command.result")))
    [rejected] = [e for e in events_of(rx, "command.result") if e["data"]["command_id"] == "result-x"]
    assert rejected["data"]["status"] == "rejected" and rejected["data"]["reason"] == "unknown_request"
    assert rx.unverified == 0


async def test_turns_are_reported_without_words_unless_chosen(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    entry, _model, _calls = agent
    rx, url = receiver
    conversation = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, conversation, data={**conversation.data, CONF_INSTANT_COMMANDS: True})
    subentry, rx.secret = await add_cloud_sync(hass, entry, url)
    assert await ask(hass, "Turn off the kitchen lights", conversation_id="t1") == "Turned off Kitchen Lights."
    await until(lambda: events_of(rx, "conversation.turn"))
    [turn] = events_of(rx, "conversation.turn")
    action = next(e for e in events_of(rx, "action.performed") if e["subject"] == "light.kitchen_lights")
    assert turn["subject"] == "t1" and turn["data"]["path"] == "matcher" and turn["data"]["source"] == "conversation"
    assert turn["data"]["action_ids"] == [action["data"]["action_id"]] and turn["data"]["agent"].startswith("conversation.")
    assert "text" not in turn["data"] and "answer" not in turn["data"] and action["data"]["reason"] is None
    assert "kitchen lights" not in json.dumps(rx.events).lower().replace("light.kitchen_lights", "")

    # the user chooses to send what was said
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "cloud_sync"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id})
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"url": url, "report_states": True, "report_turns": True, "report_words": True, "max_events": 10000, "max_mb": 20}
    )
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert await ask(hass, "Turn on the kitchen lights", conversation_id="t2") == "Turned on Kitchen Lights."
    await until(lambda: len(events_of(rx, "conversation.turn")) == 2)
    said = events_of(rx, "conversation.turn")[1]["data"]
    assert said["text"] == "Turn on the kitchen lights" and said["answer"] == "Turned on Kitchen Lights."
    await until(lambda: any(e["data"]["reason"] == "Turn on the kitchen lights" for e in events_of(rx, "action.performed")))


async def test_pushed_commands_are_verified_answered_and_run_once(
    hass: HomeAssistant, agent: Any, receiver: Any, hass_client_no_auth: Any
) -> None:
    """Commands pushed to the entry's webhook: signature, timestamp, replay, shape and
    validity are answered by us (Home Assistant's webhook would say 200 to anything)."""
    entry, _model, calls = agent
    rx, url = receiver
    assert await async_setup_component(hass, "webhook", {})
    subentry, secret = await add_cloud_sync(hass, entry, url)
    rx.secret = secret
    client = await hass_client_no_auth()
    path = f"/api/webhook/{subentry.data['webhook_id']}"
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    command = {"id": "push-1", "type": "desired_state", "target": "light.bed_light", "data": {"state": "on"}, "version": 3}

    async def push(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        response = await client.post(path, data=body, headers={**headers, "content-type": "application/json"})
        return response.status, await response.json()

    status, answer = await push(*signed(secret, {"commands": [command]}, message_id="msg_a"))
    assert status == 200 and answer["results"][0]["status"] == "applied" and answer["results"][0]["command_id"] == "push-1"
    assert state(hass, "light.bed_light") == "on"
    assert (await push(*signed(secret, {"commands": [command]}, message_id="msg_a")))[0] == 409  # replayed
    # the same command in a new push acts no more (its id is the key)
    status, answer = await push(*signed(secret, {"commands": [command]}, message_id="msg_b"))
    assert status == 200 and answer["results"][0]["outcomes"][0]["status"] == "deduplicated"
    assert len([c for c in calls if c["service"] == "light.turn_on" and c.get("entity_id") == "light.bed_light"]) == 1
    headers, body = signed(secret, {"commands": [{**command, "id": "push-2", "data": {"state": "off"}}]}, message_id="msg_c")
    assert (await push(headers, body.replace(b"off", b"on ")))[0] == 401  # tampered
    assert (await push({}, body))[0] == 401  # unsigned
    assert (await push(*signed(secret, {"hello": 1}, message_id="msg_d")))[0] == 400
    # a large push is read whole (it arrives in many pieces), one over 256 KiB is refused
    big = {"commands": [{**command, "id": "push-big"}], "padding": "x" * 200_000}
    status, answer = await push(*signed(secret, big, message_id="msg_big"))
    assert status == 200 and answer["results"][0]["command_id"] == "push-big"
    assert (await push(*signed(secret, {**big, "padding": "x" * 300_000}, message_id="msg_huge")))[0] == 413
    status, answer = await push(*signed(secret, {"commands": [{"id": "x", "type": "desired_state", "target": "all"}]}, message_id="msg_e"))
    assert status == 422 and "not an entity id" in answer["error"]
    # a stale version is run and rejected with its reason (and reported)
    status, answer = await push(*signed(secret, {"commands": [{**command, "id": "push-old", "data": {"state": "off"}, "version": 2}]}, message_id="msg_f"))
    assert status == 200 and answer["results"][0]["status"] == "rejected" and answer["results"][0]["reason"] == "stale"
    assert state(hass, "light.bed_light") == "on"
    await until(lambda: {"push-1", "push-old"} <= {e["data"]["command_id"] for e in events_of(rx, "command.result")})
    # unloaded: the webhook is gone
    await hass.config_entries.async_unload(entry.entry_id)
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 200 and not await response.text()  # Home Assistant's answer to an unknown webhook
