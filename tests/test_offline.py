"""The hub offline for 1 minute, 1 hour and 3 days (the clock advanced, the receiver's port
closed), with a home's traffic: a device's state every 15 seconds (12 devices), an action and
a conversation turn every 5 minutes; the outbox bounded at 300 rows. Then the receiver comes back (a real server on the same
port, verifying every delivery with `standardwebhooks`).

Checked: no action event is lost and each arrives once, in sequence order; each device's last
state arrives; what the outbox compacted or dropped is exactly what the gap events say; the
outbox stays within its bound whenever events that may go exist; the sender's attempts while
offline follow its capped backoff (not a retry storm). The figures are printed (-s)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
import json
from pathlib import Path
import random
import socket
from typing import Any

import aiohttp
from aiohttp import web
import pytest
from standardwebhooks import Webhook

from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.sync.outbox import (
    ACTION_PERFORMED,
    CONVERSATION_TURN,
    GAP,
    STATE_CHANGED,
    Outbox,
    OutboxEvent,
)
from custom_components.gemma_edge.sync.sender import Delivery, WebhookSender
from custom_components.gemma_edge.sync.signing import new_secret

from .test_outbox import Clock

DEVICES = [f"light.room_{n}" for n in range(12)]
MAX_ROWS = 300
TICK_S = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cloud:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.events.extend(Webhook(self.secret).verify(await request.read(), dict(request.headers)))
        return web.Response(status=200)


@pytest.fixture
async def session(socket_enabled: None) -> AsyncGenerator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("offline_s", [60, 3600, 3 * 24 * 3600], ids=["1 minute", "1 hour", "3 days"])
async def test_offline_and_back(tmp_path: Path, session: aiohttp.ClientSession, offline_s: int) -> None:
    clock, rng, secret, port = Clock(), random.Random(offline_s), new_secret(), free_port()
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    outbox = Outbox(ledger, clock=clock, max_rows=MAX_ROWS)
    outbox.open()

    async def on_ledger(func: Any, *args: Any) -> Any:
        return func(*args)

    sender = WebhookSender(outbox, session, url=f"http://127.0.0.1:{port}/hub", secret=secret,
                           source="urn:gemma-edge:offline", on_ledger=on_ledger, clock=clock, rng=rng)  # fmt: skip
    written: Counter[str] = Counter()
    actions: list[str] = []
    last_state: dict[str, str] = {}
    attempts, most_pending = 0, 0
    start = clock.now
    while clock.now - start < offline_s:
        clock.now += TICK_S
        tick = int((clock.now - start) // TICK_S)
        device = DEVICES[tick % len(DEVICES)]
        last_state[device] = f"{tick}"
        events = [OutboxEvent.new(STATE_CHANGED, device, {"entity_id": device, "state": last_state[device]}, clock.now)]
        if tick % 20 == 1:  # every 5 minutes, from the first
            events.append(OutboxEvent.new(ACTION_PERFORMED, device, {"status": "executed", "n": tick}, clock.now))
            actions.append(events[-1].id)
            events.append(OutboxEvent.new(CONVERSATION_TURN, f"conv-{tick}", {"path": "matcher"}, clock.now))
        outbox.append(events)
        written.update(event.type for event in events)
        stats = outbox.stats()
        most_pending = max(most_pending, stats.pending)
        # within the bound, unless what never goes (actions, each device's latest state,
        # the gap events) alone is more
        [(gaps_pending,)] = ledger.connection().execute("SELECT COUNT(*) FROM outbox WHERE type = ?", (GAP,)).fetchall()
        assert stats.pending <= max(MAX_ROWS, len(actions) + len(DEVICES) + gaps_pending)
        if (due := outbox.next_due()) is not None and due <= clock.now:
            report = await sender.async_deliver_once()
            assert report.delivery is Delivery.RETRY  # connection refused
            attempts += 1

    # back online: a receiver on the same port
    cloud = Cloud(secret)
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/hub", cloud.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    batches = 0
    try:
        while (due := outbox.next_due()) is not None:
            clock.now = max(clock.now, due)  # the sender sleeps until the batch is due
            assert (await sender.async_deliver_once()).delivery is Delivery.DELIVERED
            batches += 1
    finally:
        await runner.cleanup()
    ledger.close()

    received = Counter(event["type"] for event in cloud.events)
    sequences = [int(event["sequence"]) for event in cloud.events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert [e["id"] for e in cloud.events if e["type"] == ACTION_PERFORMED] == actions  # all, once, in order
    arrived_last = {e["subject"]: e["data"]["state"] for e in cloud.events if e["type"] == STATE_CHANGED}
    assert arrived_last == last_state
    gaps = [e["data"] for e in cloud.events if e["type"] == GAP]
    assert sum(g["compacted_state_changes"] for g in gaps) == written[STATE_CHANGED] - received[STATE_CHANGED]
    assert sum(g["dropped_conversation_turns"] for g in gaps) == written[CONVERSATION_TURN] - received[CONVERSATION_TURN]
    if offline_s <= 3600:
        assert not gaps  # an hour fits in the outbox
    else:
        assert gaps and received[CONVERSATION_TURN] < written[CONVERSATION_TURN]
    # capped exponential backoff with full jitter: on average one attempt per 5 minutes
    # at the cap, never a storm
    assert attempts <= 12 + offline_s / 150
    print(  # noqa: T201 - the figures for the closing note (pytest -s)
        json.dumps({"offline_s": offline_s, "written": dict(written), "delivered": dict(received),
                    "gap_events": len(gaps), "most_pending": most_pending, "attempts_offline": attempts,
                    "batches_to_drain": batches})  # fmt: skip
    )
