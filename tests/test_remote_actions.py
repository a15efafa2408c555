"""Remote actions and pushed commands, the plain parts: the user's definitions, the model's
arguments checked against them, a request and its event in one transaction, a result that
settles a request once; a push's signature, size, shape and replay. Real SQLite."""

from __future__ import annotations

import json
from pathlib import Path
import time
from typing import Any

import pytest
from standardwebhooks import Webhook

from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.sync.commands import CommandError, parse_command
from custom_components.gemma_edge.sync.outbox import REMOTE_ACTION_REQUESTED, Outbox
from custom_components.gemma_edge.sync.push import PushLog, PushRefused, accepted_commands
from custom_components.gemma_edge.sync.remote_actions import (
    RemoteActionBook,
    RemoteActionError,
    check_arguments,
    parse_specs,
)
from custom_components.gemma_edge.sync.signing import new_secret

GROCERIES = {
    "name": "order_groceries",
    "description": "Order groceries for delivery",
    "parameters": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "string"}, "description": "what to order"},
            "shop": {"type": "string", "enum": ["corner", "market"]},
            "urgent": {"type": "boolean"},
            "budget": {"type": "number"},
        },
        "required": ["items"],
    },
}


@pytest.fixture
def ledger(tmp_path: Path) -> ActionLedger:
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    yield ledger
    ledger.close()


def test_definitions_are_checked() -> None:
    [spec] = parse_specs([GROCERIES])
    assert spec.name == "order_groceries" and spec.parameters["required"] == ["items"]
    assert parse_specs(None) == [] and parse_specs([]) == []
    # no parameters: a call without arguments
    assert parse_specs([{"name": "ring_bell", "description": "Ring"}])[0].parameters == {"type": "object", "properties": {}}
    for bad, why in [
        ({"name": "Order Groceries", "description": "x"}, "lower case"),
        ({"name": "order", "description": " "}, "needs a description"),
        ({"name": "order", "description": "x", "parameters": {"type": "string"}}, "not an object schema"),
        ({"name": "order", "description": "x", "parameters": {"type": "object", "properties": {"n": {}}}}, "needs a type"),
        ({"name": "order", "description": "x", "parameters": {"type": "object", "properties": {}, "required": ["n"]}}, "does not define"),
    ]:
        with pytest.raises(RemoteActionError, match=why):
            parse_specs([bad])
    with pytest.raises(RemoteActionError, match="defined twice"):
        parse_specs([GROCERIES, GROCERIES])
    with pytest.raises(RemoteActionError, match="a list"):
        parse_specs({"name": "x"})


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"items": ["milk"]}, None),
        ({"items": ["milk"], "shop": "market", "urgent": True, "budget": 20}, None),
        ({"items": ["milk"], "budget": 12.5}, None),
        ({}, "missing items"),
        ({"items": "milk"}, "items must be a array"),
        ({"items": [{"type": "array"}]}, "each of items must be a string"),  # a small model copying the schema
        ({"items": ["milk"], "shop": "mall"}, "shop must be one of corner, market"),
        ({"items": ["milk"], "urgent": 1}, "urgent must be a boolean"),
        ({"items": ["milk"], "budget": True}, "budget must be a number"),
        ({"items": ["milk"], "card": "1234"}, "unknown argument card"),
    ],
)  # fmt: skip
def test_arguments_are_checked_against_the_schema(arguments: dict[str, Any], problem: str | None) -> None:
    [spec] = parse_specs([GROCERIES])
    if problem is None:
        check_arguments(spec, arguments)
    else:
        with pytest.raises(RemoteActionError, match=problem):
            check_arguments(spec, arguments)


def test_a_request_and_its_event_commit_together_and_a_result_settles_it_once(ledger: ActionLedger) -> None:
    outbox = Outbox(ledger)
    outbox.open()
    book = RemoteActionBook(ledger, outbox)
    book.open()
    request_id = book.request("order_groceries", {"items": ["milk"]}, "conv-1", 1_800_000_000.0)
    [event] = outbox.next_batch(1_800_000_001.0)
    assert event.event.id == request_id and event.event.type == REMOTE_ACTION_REQUESTED
    assert event.event.subject == "order_groceries" and event.event.data == {"action": "order_groceries", "arguments": {"items": ["milk"]}}
    assert book.waiting() == 1
    request, new = book.settle(request_id, "succeeded", "Delivery at 5 pm", {"order": 17}, 1_800_000_100.0)
    assert new and request is not None and request.status == "succeeded" and request.result == {"order": 17}
    again, new = book.settle(request_id, "failed", "late duplicate", None, 1_800_000_200.0)
    assert not new and again == request  # the first result stands
    assert book.settle("01UNKNOWN", "succeeded", "", None, 1_800_000_300.0) == (None, False)
    assert book.waiting() == 0 and [r.message for r in book.recent()] == ["Delivery at 5 pm"]


def test_a_failing_event_write_leaves_no_request(ledger: ActionLedger) -> None:
    """Both rows in one transaction: an outbox that cannot take the event keeps no request."""
    outbox = Outbox(ledger)  # never opened: no outbox table
    book = RemoteActionBook(ledger, outbox)
    book.open()
    with pytest.raises(Exception, match="outbox"):
        book.request("order_groceries", {"items": []}, None, 1.0)
    assert book.waiting() == 0 and book.recent() == []


def test_remote_results_are_parsed() -> None:
    command = parse_command({"id": "r-1", "type": "remote_action.result", "data": {"request_id": "01X", "status": "failed", "message": "out of stock"}})
    assert command.type == "remote_action.result" and command.target == "" and command.data["status"] == "failed"
    for data, why in [
        ({"status": "succeeded"}, "request_id"),
        ({"request_id": "01X", "status": "maybe"}, "succeeded or failed"),
        ({"request_id": "01X", "status": "failed", "message": 3}, "message is text"),
    ]:
        with pytest.raises(CommandError, match=why):
            parse_command({"id": "r-1", "type": "remote_action.result", "data": data})


def signed(secret: str, payload: Any, message_id: str = "msg_1", at: float | None = None) -> tuple[dict[str, str], bytes]:
    """A push signed by the independent standardwebhooks package, as a cloud would."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    from datetime import UTC, datetime  # noqa: PLC0415

    moment = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(message_id, moment, body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}, body


def test_a_push_is_refused_unless_signed_fresh_and_well_formed() -> None:
    secret = new_secret()
    commands = [{"id": "c-1", "type": "desired_state", "target": "light.kitchen", "data": {"state": "on"}}]
    headers, body = signed(secret, {"commands": commands})
    assert accepted_commands(secret, headers, body, time.time()) == ("msg_1", commands)

    def refused(headers: dict[str, str], body: bytes, now: float | None = None) -> tuple[int, str]:
        with pytest.raises(PushRefused) as caught:
            accepted_commands(secret, headers, body, now or time.time())
        return caught.value.status, caught.value.message

    assert refused(*signed(new_secret(), {"commands": commands}))[0] == 401  # another secret
    assert refused({**headers, "webhook-signature": ""}, body)[0] == 401
    assert refused(headers, body.replace(b"on", b"of"))[0] == 401  # tampered
    assert refused(*signed(secret, {"commands": commands}, at=time.time() - 600)) == (401, "webhook-timestamp is more than 5 minutes off")
    assert refused(*signed(secret, b"not json"))[0] == 400
    assert refused(*signed(secret, {"commands": []}))[0] == 400
    assert refused(*signed(secret, [commands]))[0] == 400
    status, message = refused(*signed(secret, {"commands": [*commands, {"id": "c-2", "type": "reboot", "target": "light.kitchen"}]}))
    assert status == 422 and message == "command 1: unknown command type 'reboot'"
    assert refused(*signed(secret, b"[" * 300_000))[0] == 413


def test_a_push_is_accepted_once(ledger: ActionLedger) -> None:
    log = PushLog(ledger)
    log.open()
    assert log.first_time("msg_1", 1_800_000_000.0)
    assert not log.first_time("msg_1", 1_800_000_010.0)  # a replay within the day
    assert log.first_time("msg_2", 1_800_000_010.0)
    assert log.first_time("msg_1", 1_800_000_000.0 + 25 * 3600)  # forgotten after a day (its timestamp is long stale by then)
