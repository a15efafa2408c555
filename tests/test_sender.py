"""Delivery of the outbox to a real HTTP receiver on 127.0.0.1 that verifies every request with
the independent `standardwebhooks` package and injects faults: dropped connections, 500s, 429
with Retry-After, answers slower than the timeout, a lost acknowledgement, 410 and 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import json
from pathlib import Path
import random
from typing import Any

import aiohttp
from aiohttp import web
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.sync.outbox import ACTION_PERFORMED, STATE_CHANGED, Outbox, OutboxEvent
from custom_components.gemma_edge.sync.sender import (
    BACKOFF_CAP_S,
    batch_id,
    CONTENT_TYPE,
    Delivery,
    DeliveryReport,
    WebhookSender,
    retry_after_s,
)
from custom_components.gemma_edge.sync.signing import new_secret

from .test_outbox import Clock

SOURCE = "urn:gemma-edge:test-hub"


class Receiver:
    """The cloud side: verifies, records every event it is sent, answers as scripted."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.script: list[Any] = []
        self.arrivals: list[dict[str, Any]] = []  # every event received, duplicates included
        self.batch_ids: list[str] = []
        self.refused_signatures = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            events = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused_signatures += 1
            return web.Response(status=401)
        assert request.headers["content-type"] == CONTENT_TYPE
        answer = self.script.pop(0) if self.script else 200
        self.batch_ids.append(request.headers["webhook-id"])
        if answer == "redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if answer == "drop":  # the connection dies before anything is processed
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        self.arrivals.extend(events)
        if answer == "slow":
            await asyncio.sleep(2)
            return web.Response(status=200)
        if answer == "lost ack":  # processed, but the answer never reaches the hub
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        if callable(answer):
            return await answer(request)
        if isinstance(answer, tuple):
            status, headers, text = answer
            return web.Response(status=status, headers=headers, text=text)
        return web.Response(status=answer)


@pytest.fixture
async def rig(tmp_path: Path, socket_enabled: None) -> AsyncGenerator[tuple[WebhookSender, Receiver, Outbox, Clock]]:
    secret = new_secret()
    receiver = Receiver(secret)
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    gets: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        gets.append(request.method)
        return web.Response(status=200)

    app.router.add_route("*", "/elsewhere", elsewhere)
    receiver.redirected = gets  # type: ignore[attr-defined]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    clock = Clock()
    outbox = Outbox(ledger, clock=clock)
    outbox.open()

    async def on_ledger(func: Any, *args: Any) -> Any:
        return func(*args)

    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(
            outbox, session, url=f"http://127.0.0.1:{port}/events", secret=secret, source=SOURCE,
            on_ledger=on_ledger, clock=clock, rng=random.Random(7), timeout_s=0.5,
        )  # fmt: skip
        yield sender, receiver, outbox, clock
    await runner.cleanup()
    ledger.close()


def append(outbox: Outbox, clock: Clock, count: int, event_type: str = ACTION_PERFORMED) -> list[str]:
    events = []
    for index in range(count):
        clock.now += 0.001
        events.append(OutboxEvent.new(event_type, f"light.{index % 7}", {"index": index}, clock.now))
    outbox.append(events)
    return [event.id for event in events]


async def deliver_all(sender: WebhookSender, clock: Clock) -> list[DeliveryReport]:
    """Attempt after attempt, the clock jumping to each retry, until nothing is due."""
    reports = []
    for _ in range(100):
        report = await sender.async_deliver_once()
        reports.append(report)
        if report.delivery is Delivery.NOTHING:
            return reports
        if report.retry_at is not None:
            clock.now = report.retry_at
    raise AssertionError("delivery did not finish")


async def test_every_event_arrives_in_order_with_stable_ids_through_faults(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    ids = append(outbox, clock, 250)
    receiver.script = ["drop", 500, (429, {"Retry-After": "30"}, "slow down"), "slow", "lost ack", 200, 503]
    reports = await deliver_all(sender, clock)
    kinds = [r.delivery for r in reports]
    assert kinds.count(Delivery.RETRY) == 6 and kinds.count(Delivery.DELIVERED) == 3
    throttled = reports[2]
    assert throttled.status == 429 and throttled.retry_at is not None and throttled.retry_at >= 30
    arrived = [event["id"] for event in receiver.arrivals]
    assert set(arrived) == set(ids)  # at least once each
    first_seen = list(dict.fromkeys(arrived))
    assert first_seen == ids  # in sequence order
    sequence = {event["id"]: int(event["sequence"]) for event in receiver.arrivals}
    numbers = [sequence[event_id] for event_id in ids]
    assert numbers == sorted(set(numbers))  # strictly increasing, one number per event, across retries
    assert {event["source"] for event in receiver.arrivals} == {SOURCE}
    assert {event["outboxepoch"] for event in receiver.arrivals} == {outbox.epoch()}
    assert receiver.arrivals[0]["specversion"] == "1.0" and receiver.arrivals[0]["type"] == ACTION_PERFORMED
    # the first batch was retried under the same webhook-id until acknowledged
    assert len(set(receiver.batch_ids[:6])) == 1 and receiver.refused_signatures == 0
    stats = outbox.stats()
    assert (stats.pending, stats.sent) == (0, 250)


async def test_410_stops_and_keeps_everything(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    append(outbox, clock, 5)
    receiver.script = [(410, {}, "this hub was removed")]
    report = await sender.async_deliver_once()
    assert (report.delivery, report.status, report.message) == (Delivery.GONE, 410, "this hub was removed")
    assert outbox.stats().pending == 5


async def test_a_refused_batch_is_dead_lettered_and_the_next_one_goes(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    first = append(outbox, clock, 100)
    second = append(outbox, clock, 3)
    receiver.script = [(400, {}, '{"error": "unknown event type"}'), 200]
    refused = await sender.async_deliver_once()
    assert (refused.delivery, refused.status, refused.events) == (Delivery.REFUSED, 400, 100)
    assert "unknown event type" in refused.message
    assert (await sender.async_deliver_once()).delivery is Delivery.DELIVERED
    stats = outbox.stats()
    assert (stats.dead, stats.sent, stats.pending) == (100, 3, 0)
    assert [e["id"] for e in receiver.arrivals] == first + second  # the refused ones did arrive once


def signed_answer(secret: str, message_id: str, payload: Any) -> tuple[int, dict[str, str], str]:
    """A receiver's answer signed by the independent standardwebhooks package."""
    from datetime import UTC, datetime  # noqa: PLC0415

    text = json.dumps(payload)
    now = datetime.now(tz=UTC)
    headers = {"content-type": "application/json", "webhook-id": message_id,
               "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": Webhook(secret).sign(message_id, now, text)}  # fmt: skip
    return 200, headers, text


async def test_the_answer_may_carry_commands_signed_for_the_batch(rig: Any) -> None:
    """Commands run only from an answer signed with the secret for this very batch: not from
    anyone else on the path, and not from an old answer replayed for another batch."""
    sender, receiver, outbox, clock = rig
    command = {"id": "cmd-1", "type": "desired_state", "target": "light.kitchen", "data": {"state": "on"}, "version": 3}
    append(outbox, clock, 1, STATE_CHANGED)
    message_id = batch_id(outbox.next_batch(clock()))
    receiver.script = [signed_answer(receiver.secret, message_id, {"commands": [command, "junk"]})]
    report = await sender.async_deliver_once()
    assert report.commands == (command,) and report.ignored_commands == 0
    for answer in [
        (200, {"content-type": "application/json"}, json.dumps({"commands": [command]})),  # unsigned
        signed_answer(new_secret(), "x", {"commands": [command]}),  # another secret
        signed_answer(receiver.secret, message_id, {"commands": [command]}),  # signed for the earlier batch
    ]:
        append(outbox, clock, 1, STATE_CHANGED)
        receiver.script = [answer]
        report = await sender.async_deliver_once()
        assert report.delivery is Delivery.DELIVERED  # the batch is acknowledged all the same
        assert report.commands == () and report.ignored_commands == 1 and "commands ignored" in report.message


def test_backoff_is_full_jitter_under_a_capped_ceiling() -> None:
    sender = WebhookSender.__new__(WebhookSender)
    sender.rng = random.Random(3)
    for attempts in range(12):
        ceiling = min(BACKOFF_CAP_S, 5.0 * 2**attempts)
        delays = [sender.backoff_s(attempts) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling and max(delays) > ceiling / 2
    assert sender.backoff_s(0, retry_after=120) >= 120
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 60) == pytest.approx(60)
    assert retry_after_s("soon", 0) is None and retry_after_s("999999999", 0) == 24 * 3600


async def test_the_loop_delivers_when_woken_and_stops_when_the_receiver_is_gone(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    reports: list[DeliveryReport] = []
    delivered = asyncio.Event()

    async def on_report(report: DeliveryReport) -> None:
        reports.append(report)
        if report.delivery is Delivery.DELIVERED:
            delivered.set()

    wake = asyncio.Event()
    append(outbox, clock, 2)
    task = asyncio.create_task(sender.async_run(wake, on_report))
    await asyncio.wait_for(delivered.wait(), 5)
    delivered.clear()
    append(outbox, clock, 1)
    wake.set()
    await asyncio.wait_for(delivered.wait(), 5)
    receiver.script = [(410, {}, "gone")]
    append(outbox, clock, 1)
    wake.set()
    await asyncio.wait_for(task, 5)  # the loop ended by itself
    assert [r.delivery for r in reports if r.delivery is not Delivery.NOTHING][-1] is Delivery.GONE
    assert len(receiver.arrivals) == 4


async def test_redirects_and_auth_errors_keep_the_events(rig: Any) -> None:
    """A redirect is never followed (a 302 would turn the POST into a GET that answers 200) and a
    401 after a secret change is not the events' fault: both keep the batch and say the URL or
    the secret is wrong."""
    sender, receiver, outbox, clock = rig
    ids = append(outbox, clock, 3)
    receiver.script = ["redirect", (401, {}, "bad signature")]
    moved = await sender.async_deliver_once()
    assert (moved.delivery, moved.status, moved.message) == (Delivery.MISCONFIGURED, 302, "redirects to /elsewhere")
    assert receiver.redirected == []  # type: ignore[attr-defined]
    clock.now = moved.retry_at
    refused = await sender.async_deliver_once()
    assert (refused.delivery, refused.status) == (Delivery.MISCONFIGURED, 401)
    assert outbox.stats().pending == 3 and outbox.stats().dead == 0
    clock.now = refused.retry_at
    assert (await sender.async_deliver_once()).delivery is Delivery.DELIVERED
    assert [e["id"] for e in receiver.arrivals][-3:] == ids


async def test_a_retried_batch_keeps_its_id_when_events_arrive_meanwhile(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    first = append(outbox, clock, 5)
    receiver.script = [503]
    failed = await sender.async_deliver_once()
    append(outbox, clock, 4)  # written while the batch waits to be retried
    clock.now = failed.retry_at
    await sender.async_deliver_once()
    assert receiver.batch_ids[0] == receiver.batch_ids[1]
    assert [e["id"] for e in receiver.arrivals] == first + first  # the same five again, alone
    await sender.async_deliver_once()
    assert len({e["id"] for e in receiver.arrivals}) == 9 and len(set(receiver.batch_ids)) == 2


async def test_a_gap_event_on_the_wire_is_never_changed(rig: Any) -> None:
    """Counts of later compactions go into a new gap event, not into one already handed out."""
    from custom_components.gemma_edge.sync.outbox import GAP  # noqa: PLC0415

    _sender, _receiver, _outbox, clock = rig
    ledger = _outbox.ledger
    outbox = Outbox(ledger, clock=clock, max_rows=5)
    for index in range(8):
        append(outbox, clock, 1, STATE_CHANGED)
    batch = outbox.next_batch(clock.now, max_events=100)
    gap = next(e for e in batch if e.event.type == GAP)
    for index in range(8):
        append(outbox, clock, 1, STATE_CHANGED)
    rows = ledger.connection().execute("SELECT seq, data FROM outbox WHERE type = ?", (GAP,)).fetchall()
    assert json.loads(dict(rows)[gap.seq]) == gap.event.data  # unchanged
    assert len(rows) == 2


async def test_the_loop_survives_a_failure_in_handling_an_answer(rig: Any) -> None:
    sender, receiver, outbox, clock = rig
    calls: list[DeliveryReport] = []
    done = asyncio.Event()

    async def on_report(report: DeliveryReport) -> None:
        calls.append(report)
        if len(calls) == 1:
            raise RuntimeError("a bug while handling the answer")
        if report.delivery is Delivery.DELIVERED:
            done.set()

    wake = asyncio.Event()
    append(outbox, clock, 1)
    task = asyncio.create_task(sender.async_run(wake, on_report))
    await asyncio.sleep(0.2)
    append(outbox, clock, 1)
    wake.set()
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    assert len(receiver.arrivals) == 2


async def test_an_answer_that_arrives_in_pieces_is_read_whole(rig: Any) -> None:
    """A signed answer sent in two parts (as through TLS or a proxy) and a large one (600
    commands): every command is read; an answer over the limit is acknowledged, its commands
    ignored."""
    sender, receiver, outbox, clock = rig
    commands = [{"id": f"cmd-{n}", "type": "desired_state", "target": "light.kitchen", "data": {"state": "on"}, "version": n} for n in range(600)]

    def in_two_parts(payload: Any) -> Any:
        async def answer(request: web.Request) -> web.StreamResponse:
            status, headers, text = signed_answer(receiver.secret, request.headers["webhook-id"], payload)
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            await response.write(text[:40].encode())
            await asyncio.sleep(0.05)
            await response.write(text[40:].encode())
            await response.write_eof()
            return response

        return answer

    for payload in ({"commands": commands[:1]}, {"commands": commands}):
        append(outbox, clock, 1, STATE_CHANGED)
        receiver.script = [in_two_parts(payload)]
        report = await sender.async_deliver_once()
        assert report.delivery is Delivery.DELIVERED and report.commands == tuple(payload["commands"])
    append(outbox, clock, 1, STATE_CHANGED)
    receiver.script = [in_two_parts({"commands": commands, "padding": "x" * 1_100_000})]  # over 1 MiB
    report = await sender.async_deliver_once()
    assert report.delivery is Delivery.DELIVERED and report.commands == () and "over 1048576 bytes" in report.message
