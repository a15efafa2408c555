"""Stateful Hypothesis test of the cloud's commands on the hub: executor + ledger + outbox +
version book + command runner + the hub's sender delivering to a real HTTP receiver on
127.0.0.1, with commands arriving through both channels the hub accepts (the receiver's signed
answer to a batch, and a signed push) and through forged ones.

The cloud (modelled here) sets desired states with rising versions, some with an expiry; each
command is delivered 1-3 times, in any order, after any clock advance, possibly tampered,
unsigned, signed with another secret, signed for another batch, or a replayed push.
Invariants: every accepted command acts at most once (never twice on redelivery); a stale or
expired command never acts and is rejected with the right reason; a forged delivery never acts;
a command run before answers with its own result; every result is an outbox event and reaches
the receiver once, in sequence order; and the shadow converges: once the newest desired state of each entity is delivered, the home is in it.
GEMMA_EDGE_STATEFUL_EXAMPLES sets the number of schedules (CI default 60).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
import json
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web
from hypothesis import settings, strategies as st
import pytest
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from standardwebhooks import Webhook

from custom_components.gemma_edge.actions.executor import ActionExecutor
from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.actions.records import EntityState
from custom_components.gemma_edge.sync.commands import VersionBook
from custom_components.gemma_edge.sync.outbox import COMMAND_RESULT, STATE_CHANGED, Outbox, OutboxEvent
from custom_components.gemma_edge.sync.push import PushLog, PushRefused, accepted_commands
from custom_components.gemma_edge.sync.reconcile import CommandRunner
from custom_components.gemma_edge.sync.sender import Delivery, WebhookSender
from custom_components.gemma_edge.sync.signing import new_secret

from .home_sim import SimHome

EXAMPLES = int(os.environ.get("GEMMA_EDGE_STATEFUL_EXAMPLES", "60"))
ENTITIES = ["light.a", "light.b", "switch.pump"]
SECRET = new_secret()
OTHER_SECRET = new_secret()
FORGERIES = ["tampered", "unsigned", "other_secret", "other_batch"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def sign(secret: str, message_id: str, body: str, at: float) -> dict[str, str]:
    """Headers as the independent standardwebhooks package signs them (a real cloud)."""
    moment = datetime.fromtimestamp(at, tz=UTC)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at)), "webhook-signature": Webhook(secret).sign(message_id, moment, body)}


class CommandsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.home = SimHome(states={e: EntityState("off") for e in ENTITIES}, exposed=set(ENTITIES))
        self.calls_by_action: Counter[str] = Counter()
        original_call = self.home.async_call

        async def counting_call(action: Any, action_id: str, parent: str | None, user_id: str | None) -> None:
            self.calls_by_action[action_id] += 1
            await original_call(action, action_id, parent, user_id)

        self.home.async_call = counting_call  # type: ignore[method-assign]
        ledger = ActionLedger(Path(self.dir.name) / "ledger.db")
        self.executor = ActionExecutor(ledger, self.home, clock=self.clock, call_timeout_s=0.05, verify_timeout_s=0.0)
        self.run(self.executor.async_start())
        self.outbox = Outbox(ledger, clock=self.clock)
        self.versions = VersionBook(ledger)
        self.pushes = PushLog(ledger)
        for table in (self.outbox, self.versions, self.pushes):
            self.run(self.executor.async_on_ledger(table.open))
        self.runner = CommandRunner(self.executor, self.outbox, self.versions, clock=self.clock)
        # the cloud's receiver on 127.0.0.1, and the hub's sender delivering to it
        self.received: dict[str, dict[str, Any]] = {}  # event id -> event (first arrival)
        self.arrival_order: list[int] = []
        self.answer: tuple[list[dict[str, Any]], str | None] = ([], None)
        self.session, self.http = self.run(self._start_receiver())
        self.sender = WebhookSender(self.outbox, self.session, url=self.url, secret=SECRET, source="urn:gemma-edge:stateful",
                                    on_ledger=self.executor.async_on_ledger, clock=self.clock)  # fmt: skip
        # the cloud's side: commands issued, the newest desired state per entity
        self.commands: list[dict[str, Any]] = []
        self.version: Counter[str] = Counter()
        self.desired: dict[str, tuple[int, str]] = {}
        # what the hub did: commands applied (id -> state), the highest applied version
        self.applied: dict[str, str] = {}
        self.applied_version: dict[str, int] = {}
        self.results = 0
        self.push_ids = 0
        self.reconciliations = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start_receiver(self) -> tuple[aiohttp.ClientSession, web.AppRunner]:
        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            for event in Webhook(SECRET).verify(body, dict(request.headers)):
                self.received.setdefault(event["id"], event)
                self.arrival_order.append(int(event["sequence"]))
            commands, forgery = self.answer
            text = json.dumps({"commands": commands})
            secret = OTHER_SECRET if forgery == "other_secret" else SECRET
            message_id = "msg_another" if forgery == "other_batch" else request.headers["webhook-id"]
            headers = {} if forgery == "unsigned" else sign(secret, message_id, text, time.time())
            return web.Response(text=text + " " if forgery == "tampered" else text, headers=headers)

        app = web.Application()
        app.router.add_post("/hub", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hub"  # type: ignore[union-attr]  # noqa: SLF001
        return aiohttp.ClientSession(), runner

    def teardown(self) -> None:
        self.flush()
        self.run(self.session.close())
        self.run(self.http.cleanup())
        self.run(self.executor.async_stop())
        self.loop.close()
        self.dir.cleanup()

    def flush(self) -> None:
        """Deliver what waits; every result arrived, in sequence order, once each."""
        self.answer = ([], None)
        while self.run(self.executor.async_on_ledger(self.outbox.next_due)) is not None:
            assert self.run(self.sender.async_deliver_once()).delivery is Delivery.DELIVERED
        results = [e for e in self.received.values() if e["type"] == COMMAND_RESULT]
        assert len(results) == self.results
        assert self.arrival_order == sorted(self.arrival_order)

    # --- the cloud ------------------------------------------------------------------------
    @rule(entity=st.sampled_from(ENTITIES), state=st.sampled_from(["on", "off"]), expires_in=st.sampled_from([None, 30, 600]))
    def desire(self, entity: str, state: str, expires_in: int | None) -> None:
        self.version[entity] += 1
        version = self.version[entity]
        command = {"id": f"desire-{entity}-{version}", "type": "desired_state", "target": entity, "data": {"state": state}, "version": version}
        if expires_in is not None:
            command["expires_at"] = self.clock.now + expires_in
        self.commands.append(command)
        self.desired[entity] = (version, state)

    @rule(seconds=st.sampled_from([1, 60, 3600]))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds

    @rule(outside=st.sampled_from(ENTITIES))
    def someone_switches_a_device(self, outside: str) -> None:
        current = self.home.states[outside].state
        self.home.states[outside] = EntityState("off" if current == "on" else "on")

    # --- deliveries -----------------------------------------------------------------------
    @precondition(lambda self: self.commands)
    @rule(data=st.data(), times=st.integers(1, 3), channel=st.sampled_from(["answer", "push"]))
    def deliver(self, data: st.DataObject, times: int, channel: str) -> None:
        batch = data.draw(st.lists(st.sampled_from(self.commands), min_size=1, max_size=3))
        for _ in range(times):
            accepted = self._answer(batch) if channel == "answer" else self._push(batch)
            assert accepted is not None
            for command in accepted:
                self._run(command)

    @precondition(lambda self: self.commands)
    @rule(data=st.data(), forgery=st.sampled_from(FORGERIES), channel=st.sampled_from(["answer", "push"]))
    def forged_delivery(self, data: st.DataObject, forgery: str, channel: str) -> None:
        batch = data.draw(st.lists(st.sampled_from(self.commands), min_size=1, max_size=3))
        accepted = self._answer(batch, forgery) if channel == "answer" else self._push(batch, forgery)
        assert accepted is None  # nothing runs

    @precondition(lambda self: self.commands)
    @rule(data=st.data())
    def replayed_push(self, data: st.DataObject) -> None:
        batch = [data.draw(st.sampled_from(self.commands))]
        body = json.dumps({"commands": batch})
        message_id = self._next_push_id()
        headers = sign(SECRET, message_id, body, time.time())
        for command in self._accept_push(headers, body.encode()) or []:
            self._run(command)
        assert self._accept_push(headers, body.encode()) is None  # the same push again: 409

    def _answer(self, batch: list[dict[str, Any]], forgery: str | None = None) -> list[dict[str, Any]] | None:
        """The receiver's answer to the hub's next batch: its commands, if the sender trusts
        it (a device changed, so there is a batch to answer)."""
        self.answer = (batch, forgery)
        device = ENTITIES[len(self.received) % len(ENTITIES)]
        event = OutboxEvent.new(STATE_CHANGED, device, {"entity_id": device, "state": self.home.states[device].state}, self.clock.now)
        self.run(self.executor.async_on_ledger(self.outbox.append, [event]))
        report = self.run(self.sender.async_deliver_once())
        assert report.delivery is Delivery.DELIVERED
        self.answer = ([], None)
        if forgery is not None:
            assert report.commands == () and report.ignored_commands == len(batch)
            return None
        return list(report.commands)

    def _push(self, batch: list[dict[str, Any]], forgery: str | None = None) -> list[dict[str, Any]] | None:
        body = json.dumps({"commands": batch})
        message_id = self._next_push_id()
        secret = OTHER_SECRET if forgery == "other_secret" else SECRET
        headers = {} if forgery == "unsigned" else sign(secret, message_id, body, time.time())
        if forgery == "other_batch":  # a push signed a quarter of an hour ago
            headers = sign(SECRET, message_id, body, time.time() - 900)
        raw = (body + " ").encode() if forgery == "tampered" else body.encode()  # still JSON, not what was signed
        return self._accept_push(headers, raw)

    def _accept_push(self, headers: dict[str, str], raw: bytes) -> list[dict[str, Any]] | None:
        try:
            message_id, commands = accepted_commands(SECRET, headers, raw, time.time())
        except PushRefused:
            return None
        if not self.run(self.executor.async_on_ledger(self.pushes.first_time, message_id, self.clock.now)):
            return None
        return commands

    def _next_push_id(self) -> str:
        self.push_ids += 1
        return f"msg_push{self.push_ids}"

    def _run(self, command: dict[str, Any]) -> None:
        entity, version, state = command["target"], command["version"], command["data"]["state"]
        before = sum(self.calls_by_action.values())
        result = self.run(self.runner.async_run(command))
        self.results += 1
        acted = sum(self.calls_by_action.values()) - before
        if command["id"] in self.applied:
            # delivered again: its own result, nothing done again
            assert result["status"] == "applied", result
            assert acted == 0
            return
        expired = command.get("expires_at") is not None and command["expires_at"] < self.clock.now
        stale = version < self.applied_version.get(entity, 0)
        if expired or stale:
            assert (result["status"], result["reason"]) == ("rejected", "expired" if expired else "stale"), result
            assert acted == 0
            return
        assert result["status"] == "applied", result
        assert self.home.states[entity].state == state
        assert acted <= 1
        self.applied[command["id"]] = state
        self.applied_version[entity] = max(version, self.applied_version.get(entity, 0))

    @rule()
    def cloud_reconciles(self) -> None:
        """The cloud sends the newest desired state of each entity (the shadow's delta)."""
        self.reconciliations += 1
        for entity, (version, state) in self.desired.items():
            command = {"id": f"shadow-{entity}-{version}-{self.reconciliations}", "type": "desired_state",
                       "target": entity, "data": {"state": state}, "version": version}  # fmt: skip
            accepted = self._answer([command])
            assert accepted is not None
            self._run(accepted[0])
            assert self.home.states[entity].state == state  # converged

    # --- invariants -----------------------------------------------------------------------
    @invariant()
    def no_action_ran_twice(self) -> None:
        assert all(count == 1 for count in self.calls_by_action.values())

    @invariant()
    def every_result_is_reported(self) -> None:
        conn = self.executor.ledger.connection()
        [(written,)] = conn.execute("SELECT COUNT(*) FROM outbox WHERE type = ?", (COMMAND_RESULT,)).fetchall()
        assert written == self.results


@pytest.fixture(autouse=True)
def _sockets(socket_enabled: None) -> None:
    """The receiver is a real HTTP server on 127.0.0.1."""


CommandsMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=25, deadline=None)
TestCommands = CommandsMachine.TestCase
