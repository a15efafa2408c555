"""End to end: a real Home Assistant hub (demo home) and the reference cloud (cloud/) with a
real nats-server. The hub reports what it does and how its devices are; a desired state set
with the cloud's CLI reaches the device through the hub's executor and comes back as the
reported state in the shadow; a remote action the model asks for runs once in the cloud and its
result is announced on the hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import io
from typing import Any

from aiohttp import web
import pytest
from standardwebhooks import Webhook

from cloud.cli import async_main
from cloud.receiver import DEFAULT_PATH, Cloud, make_app
from cloud.shadow import Shadow, in_sync
from cloud.store import STREAM, CloudStore, connect
from homeassistant.core import Event, HomeAssistant, callback

from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN

from .demo_agent import ask, state
from .scripted_model import ScriptedModel, call
from .test_cloud_sync import add_cloud_sync, until
from .test_reference_cloud import NatsServer, nats_server  # noqa: F401 - the nats_server fixture
from .test_remote_actions import GROCERIES


@pytest.fixture
async def cloud(nats_server: NatsServer) -> AsyncGenerator[tuple[Cloud, CloudStore, str, str]]:
    store = await connect(nats_server.url, timeout_s=1.0)
    cloud = Cloud(store, "whsec_" + "A" * 44)  # the hub's secret is set once the hub made it
    runner = web.AppRunner(make_app(cloud))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    yield cloud, store, f"http://127.0.0.1:{port}{DEFAULT_PATH}", nats_server.url
    await runner.cleanup()
    await store.close()


async def cli(nats_url: str, *words: str) -> str:
    out = io.StringIO()
    assert await async_main(["--nats", nats_url, *words], out) == 0
    return out.getvalue()


async def test_the_hub_and_the_reference_cloud_reconcile(hass: HomeAssistant, agent: Any, cloud: Any) -> None:
    entry, _model, calls = agent
    cloud_side, store, url, nats_url = cloud
    conversation = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
    hass.config_entries.async_update_subentry(entry, conversation, data={**conversation.data, CONF_INSTANT_COMMANDS: True})
    _subentry, secret = await add_cloud_sync(hass, entry, url, remote_actions=[GROCERIES])
    cloud_side.webhook = Webhook(secret)
    model = ScriptedModel(entry.runtime_data.engine)
    shadow = Shadow(store)

    # the hub reports: the action's event is in the log, the device's state in the shadow
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."

    async def reported(entity_id: str) -> str | None:
        [hub] = await shadow.hubs() or [None]
        if hub is None:
            return None
        record = (await shadow.entities(hub)).get(entity_id) or {}
        return (record.get("reported") or {}).get("state")

    async def until_async(check: Any, timeout: float = 15.0) -> None:
        for _ in range(int(timeout / 0.1)):
            if await check():
                return
            await hass.async_block_till_done()
            await asyncio.sleep(0.1)
        raise AssertionError("timed out")

    async def _eq(coro: Any, value: str) -> bool:
        return await coro == value

    await until_async(lambda: _eq(reported("light.kitchen_lights"), "off"))
    logged = (await store.js.stream_info(STREAM)).state.messages
    assert logged >= 2  # the action event and the state change, at least

    # the cloud wants the lights on: the CLI's desired state reaches the device on the next
    # batch, through the executor (source cloud), and comes back as the reported state
    assert (await cli(nats_url, "desire", "light.kitchen_lights", "on", "brightness=128")).strip() == "1"
    await hass.services.async_call("light", "toggle", {"entity_id": "light.bed_light"}, blocking=True)  # any event
    await until(lambda: state(hass, "light.kitchen_lights") == "on", timeout=15)
    assert state(hass, "light.kitchen_lights", "brightness") == 128
    await until_async(lambda: _eq(reported("light.kitchen_lights"), "on"))
    [hub] = await shadow.hubs()

    async def converged() -> bool:
        record = (await shadow.entities(hub))["light.kitchen_lights"]
        return in_sync(record) and (record.get("last_result") or {}).get("status") == "applied"

    await until_async(converged)
    turned_on = [c for c in calls if c["service"] == "light.turn_on" and c.get("entity_id") == "light.kitchen_lights"]
    assert len(turned_on) == 1  # however many batches carried the command

    # a remote action: the model asks, the cloud runs it once, the hub announces the result
    announced: list[Event] = []

    @callback
    def announce(event: Event) -> None:
        announced.append(event)

    hass.bus.async_listen(f"{DOMAIN}_remote_action", announce)
    model.script(call("order_groceries", items=["milk"]))
    assert await ask(hass, "Order milk") == "Requested order groceries."
    await until(lambda: bool(announced), timeout=15)
    assert announced[0].data["status"] == "succeeded" and announced[0].data["message"] == "Ordered milk."
    await hass.services.async_call("light", "toggle", {"entity_id": "light.bed_light"}, blocking=True)
    await hass.async_block_till_done()
    assert len(announced) == 1
