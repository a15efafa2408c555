"""Cloud sync in a real Home Assistant (demo home) against a real receiver on 127.0.0.1 that
verifies every delivery with the independent `standardwebhooks` package."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
import json
from typing import Any

from aiohttp import web
import pytest
from standardwebhooks import Webhook

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN
from custom_components.gemma_edge.diagnostics import async_get_config_entry_diagnostics
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er, issue_registry as ir

from .demo_agent import ask, state
from .local_http import serve_app


class Receiver:
    """Verifies each batch with the secret it was given; answers with the scripted status."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: list[dict[str, Any]] = []
        self.answers: list[tuple[int, str]] = []
        self.unverified = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            batch = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:  # noqa: BLE001 - any failure to verify is a refusal
            self.unverified += 1
            return web.Response(status=401)
        status, text = self.answers.pop(0) if self.answers else (200, "")
        if status < 300:
            self.events.extend(batch)
        # a receiver signs its answer for the batch (the hub runs commands only then)
        message_id, now = request.headers["webhook-id"], datetime.now(tz=UTC)
        signature = {"webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
                     "webhook-signature": Webhook(self.secret).sign(message_id, now, text)}  # fmt: skip
        return web.Response(status=status, text=text, headers=signature)


@pytest.fixture
async def receiver(socket_enabled: None) -> AsyncGenerator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hub", receiver.handle)
    async with serve_app(app) as url:
        yield receiver, f"{url}/hub"


async def add_cloud_sync(hass: HomeAssistant, entry: Any, url: str, **fields: Any) -> tuple[ConfigSubentry, str]:
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "cloud_sync"), context={"source": "user"})
    assert result["type"] is FlowResultType.FORM and result["step_id"] == "user"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"url": url, "report_states": True, "max_events": 10000, "max_mb": 20, **fields}
    )
    assert result["type"] is FlowResultType.FORM and result["step_id"] == "secret"
    secret = result["description_placeholders"]["secret"]
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    subentry = next(s for s in entry.subentries.values() if s.subentry_type == "cloud_sync")
    return subentry, secret


async def until(condition: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def sensor(hass: HomeAssistant, entry: Any, key: str) -> Any:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_{key}")
    assert entity_id is not None, key
    return hass.states.get(entity_id)


async def test_actions_and_states_reach_the_receiver_signed(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    entry, _model, _calls = agent
    rx, url = receiver
    subentry, secret = await add_cloud_sync(hass, entry, url)
    rx.secret = secret
    assert secret.startswith("whsec_") and subentry.data["secret"] == secret
    conversation = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, conversation, data={**conversation.data, CONF_INSTANT_COMMANDS: True})
    await hass.async_block_till_done()
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."
    await until(lambda: any(e["type"] == "gemma_edge.action.performed" for e in rx.events))
    action = next(e for e in rx.events if e["type"] == "gemma_edge.action.performed")
    assert action["subject"] == "light.kitchen_lights" and action["data"]["status"] == "executed"
    assert action["data"]["path"] == "matcher" and action["data"]["reason"] is None  # words only if kept
    assert action["source"].startswith("urn:gemma-edge:") and action["specversion"] == "1.0"
    await until(lambda: any(e["type"] == "gemma_edge.state.changed" and e["subject"] == "light.kitchen_lights" for e in rx.events))
    assert not any(e["subject"] == "lock.front_door" for e in rx.events)  # not exposed: not reported
    # a player's picture URL carries an access token: never reported
    assert hass.states.get("media_player.living_room").attributes.get("entity_picture")
    await hass.services.async_call("media_player", "media_pause", {"entity_id": "media_player.living_room"}, blocking=True)
    await until(lambda: any(e["subject"] == "media_player.living_room" for e in rx.events))
    player = next(e for e in rx.events if e["subject"] == "media_player.living_room")
    assert player["data"]["state"] == "paused" and "entity_picture" not in player["data"]["attributes"]
    assert "token=" not in json.dumps(rx.events)
    assert rx.unverified == 0
    await until(lambda: sensor(hass, entry, "sync_pending").state == "0")
    assert sensor(hass, entry, "sync_status").state == "ok"
    assert sensor(hass, entry, "sync_last_delivery").state not in ("unknown", None)
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert secret not in str(diagnostics) and subentry.data["webhook_id"] not in str(diagnostics)
    sync = diagnostics["cloud_sync"]
    assert sync["state"] == "ok" and sync["outbox"]["pending"] == 0 and sync["outbox"]["sent"] >= 2
    assert {"gemma_edge.action.performed", "gemma_edge.state.changed"} <= {e["type"] for e in sync["recent_events"]}
    assert all(e["status"] == "sent" and "data" not in e for e in sync["recent_events"])


async def test_a_refusing_receiver_raises_repairs_that_clear(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    entry, _model, _calls = agent
    rx, url = receiver
    rx.answers = [(400, "unknown event type")]
    _subentry, rx.secret = await add_cloud_sync(hass, entry, url)
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.bed_light"}, blocking=True)
    issues = ir.async_get(hass)
    await until(lambda: issues.async_get_issue(DOMAIN, f"sync_refused_{entry.entry_id}") is not None)
    assert "unknown event type" in issues.async_get_issue(DOMAIN, f"sync_refused_{entry.entry_id}").translation_placeholders["message"]
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: issues.async_get_issue(DOMAIN, f"sync_refused_{entry.entry_id}") is None)
    rx.answers = [(410, "gone")]
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: issues.async_get_issue(DOMAIN, f"sync_gone_{entry.entry_id}") is not None)
    await until(lambda: sensor(hass, entry, "sync_status").state == "disabled")  # written after the issue
    delivered = len(rx.events)
    await hass.services.async_call(DOMAIN, "sync_now", {}, blocking=True)  # does not fail while disabled
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    await asyncio.sleep(1.5)
    assert len(rx.events) == delivered and sensor(hass, entry, "sync_status").state == "disabled"
    # nothing deleted: the events keep collecting for the next receiver (the Repairs text)
    from custom_components.gemma_edge.sync.outbox import Outbox  # noqa: PLC0415

    waiting = await entry.runtime_data.executor.async_on_ledger(Outbox(entry.runtime_data.executor.ledger).next_batch, 10**10)
    assert any(e.event.subject == "light.bed_light" and e.event.data.get("state") == "off" for e in waiting)
    # the Repairs issue shows where the receiver was, without its path or query
    assert issues.async_get_issue(DOMAIN, f"sync_gone_{entry.entry_id}").translation_placeholders["url"] == url.removesuffix("/hub")


async def test_the_flow_checks_the_url_and_rotates_the_secret(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    entry, _model, _calls = agent
    _rx, url = receiver
    result = await hass.config_entries.subentries.async_init((entry.entry_id, "cloud_sync"), context={"source": "user"})
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"url": "http://cloud.example.com/hub", "report_states": True, "max_events": 10000, "max_mb": 20}
    )
    assert result["errors"] == {"url": "insecure_url"}
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"url": "ftp://cloud.example.com/hub", "report_states": True, "max_events": 10000, "max_mb": 20,
         "remote_actions": [{"description": "an action without a name"}]},
    )  # fmt: skip
    assert result["errors"] == {"url": "invalid_url", "remote_actions": "invalid_remote_actions"}
    assert "name" in result["description_placeholders"]["error"]
    subentry, secret = await add_cloud_sync(hass, entry, url)
    assert sensor(hass, entry, "sync_status").state == "ok"  # nothing waits: not "starting" for ever
    again = await hass.config_entries.subentries.async_init((entry.entry_id, "cloud_sync"), context={"source": "user"})
    assert again["type"] is FlowResultType.ABORT and again["reason"] == "already_configured"
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "cloud_sync"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"url": url, "report_states": False, "max_events": 500, "max_mb": 5, "rotate_secret": True}
    )
    assert result["step_id"] == "secret" and result["description_placeholders"]["secret"] != secret
    result = await hass.config_entries.subentries.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    updated = entry.subentries[subentry.subentry_id].data
    assert updated["secret"] != secret and updated["max_events"] == 500 and entry.runtime_data.cloud_sync.outbox.max_rows == 500
    # changed again without a new secret: saved at once, the secret kept
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "cloud_sync"), context={"source": "reconfigure", "subentry_id": subentry.subentry_id}
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"url": url, "report_states": True, "max_events": 600, "max_mb": 5}
    )
    assert result["type"] is FlowResultType.ABORT and result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    kept = entry.subentries[subentry.subentry_id].data
    assert kept["secret"] == updated["secret"] and kept["max_events"] == 600


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://cloud.example.com/hub", None),
        ("http://localhost:8080/hub", None),
        ("http://receiver.local/hub", None),
        ("http://192.168.1.20/hub", None),
        ("http://cloud.example.com/hub", "insecure_url"),
        ("http://8.8.8.8/hub", "insecure_url"),
        ("ftp://cloud.example.com/hub", "invalid_url"),
        ("http:///hub", "invalid_url"),
        ("http://[::1/hub", "invalid_url"),
    ],
)
def test_receiver_urls(url: str, problem: str | None) -> None:
    """https anywhere; plain http only to this machine or the local network."""
    from custom_components.gemma_edge.sync_flow import url_problem  # noqa: PLC0415

    assert url_problem(url) == problem


async def test_commands_in_the_receiver_s_answer_run_once_and_report_back(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    """The receiver answers a batch with commands: the bed light is switched on through the
    executor (source cloud, the command id as key), the garage door is not opened without the
    user's confirmation, and both results come back as gemma_edge.command.result events."""
    entry, _model, calls = agent
    rx, url = receiver
    commands = [
        {"id": "cmd-bed", "type": "desired_state", "target": "light.bed_light", "data": {"state": "on"}, "version": 1},
        {"id": "cmd-garage", "type": "desired_state", "target": "cover.garage_door", "data": {"state": "open"}},
    ]
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    rx.answers = [(200, json.dumps({"commands": commands})), (200, json.dumps({"commands": commands}))]
    _subentry, rx.secret = await add_cloud_sync(hass, entry, url)
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.ceiling_lights"}, blocking=True)
    await until(lambda: len([e for e in rx.events if e["type"] == "gemma_edge.command.result"]) >= 4)
    results = {(e["data"]["command_id"], e["data"]["status"], e["data"]["reason"]) for e in rx.events if e["type"] == "gemma_edge.command.result"}
    assert results == {("cmd-bed", "applied", None), ("cmd-garage", "rejected", "needs_confirmation")}
    assert state(hass, "light.bed_light") == "on" and state(hass, "cover.garage_door") == "closed"
    assert [c for c in calls if c["service"] == "light.turn_on" and c["entity_id"] == "light.bed_light"] == [
        {"service": "light.turn_on", "entity_id": "light.bed_light"}
    ]  # delivered twice, acted once
    performed = [e for e in rx.events if e["type"] == "gemma_edge.action.performed" and e["subject"] == "light.bed_light"]
    assert performed and performed[0]["data"]["source"] == "cloud"


async def test_an_action_acts_on_its_own_entity_whatever_its_data_says(hass: HomeAssistant, agent: Any) -> None:
    """Defence in depth under every path: target keys in an action's data never reach the call."""
    from custom_components.gemma_edge.actions.records import ServiceAction  # noqa: PLC0415
    from custom_components.gemma_edge.hass_home import HassHome  # noqa: PLC0415

    await hass.services.async_call("light", "turn_off", {"entity_id": "all"}, blocking=True)
    action = ServiceAction("light", "turn_on", "light.bed_light", {"entity_id": "all", "area_id": "kitchen", "brightness": 100})
    await HassHome(hass).async_call(action, "01JTESTACTION00000000000000", None, None)
    await hass.async_block_till_done()
    assert [s.entity_id for s in hass.states.async_all("light") if s.state == "on"] == ["light.bed_light"]


async def test_removing_cloud_sync_deletes_what_waited_and_its_repairs(hass: HomeAssistant, agent: Any, receiver: Any) -> None:
    """Removed sync: nothing more leaves the hub, the backlog is deleted at once, its Repairs
    issue goes; and a hub has one sync (a second engine cannot add another)."""
    from custom_components.gemma_edge.sync.outbox import Outbox  # noqa: PLC0415

    entry, _model, _calls = agent
    rx, url = receiver
    rx.answers = [(400, "no")] + [(500, "down")] * 50
    subentry, rx.secret = await add_cloud_sync(hass, entry, url)
    await hass.services.async_call("light", "turn_on", {"entity_id": "light.bed_light"}, blocking=True)
    issues = ir.async_get(hass)
    await until(lambda: issues.async_get_issue(DOMAIN, f"sync_refused_{entry.entry_id}") is not None)
    await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
    await until(lambda: sensor(hass, entry, "sync_pending").state not in ("0", "unknown", "unavailable"))
    second = await hass.config_entries.subentries.async_init((entry.entry_id, "cloud_sync"), context={"source": "user"})
    assert second["type"] is FlowResultType.ABORT and second["reason"] == "already_configured"
    assert hass.config_entries.async_remove_subentry(entry, subentry.subentry_id)
    await hass.async_block_till_done()
    assert entry.runtime_data.cloud_sync is None
    assert issues.async_get_issue(DOMAIN, f"sync_refused_{entry.entry_id}") is None
    outbox = Outbox(entry.runtime_data.executor.ledger)
    stats = await entry.runtime_data.executor.async_on_ledger(outbox.stats)
    assert (stats.pending, stats.sent, stats.dead) == (0, 0, 0)
    # its sensors leave the entity registry too (not left "no longer provided")
    registry = er.async_get(hass)
    for key in ("sync_status", "sync_pending", "sync_last_delivery"):
        assert registry.async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_{key}") is None, key
    assert registry.async_get_entity_id("sensor", DOMAIN, f"{entry.entry_id}_actions_today") is not None
