"""Reconciliation commands from the cloud: parsing, the absolute calls they become, expiry and
versions (kept in the ledger's SQLite file across a restart). Plain Python, real SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge.actions.ledger import ActionLedger
from custom_components.gemma_edge.actions.records import ServiceAction
from custom_components.gemma_edge.sync.commands import (
    CommandError,
    VersionBook,
    check_fresh,
    command_actions,
    parse_command,
)


def command(**fields: Any) -> dict[str, Any]:
    return {"id": "cmd-1", "type": "desired_state", "target": "light.kitchen", "data": {"state": "on"}, **fields}


@pytest.mark.parametrize(
    ("target", "data", "expected"),
    [
        ("light.kitchen", {"state": "on", "brightness": 128}, [("light", "turn_on", {"brightness": 128})]),
        ("light.kitchen", {"state": "off"}, [("light", "turn_off", {})]),
        ("cover.garage_door", {"state": "closed"}, [("cover", "close_cover", {})]),
        ("cover.hall_window", {"position": 40}, [("cover", "set_cover_position", {"position": 40})]),
        ("lock.front_door", {"state": "locked"}, [("lock", "lock", {})]),
        ("climate.heatpump", {"state": "heat", "temperature": 21}, None),  # a mode is not a state we map
        ("climate.heatpump", {"temperature": 21}, [("climate", "set_temperature", {"temperature": 21})]),
        ("media_player.kitchen", {"state": "paused", "volume_level": 0.3},
         [("media_player", "media_pause", {}), ("media_player", "volume_set", {"volume_level": 0.3})]),
        ("fan.ceiling_fan", {"state": "on", "percentage": 50}, [("fan", "turn_on", {"percentage": 50})]),
    ],
)  # fmt: skip
def test_a_desired_state_becomes_absolute_calls(target: str, data: dict[str, Any], expected: list[tuple[str, str, dict[str, Any]]] | None) -> None:
    parsed = parse_command(command(target=target, data=data))
    if expected is None:
        with pytest.raises(CommandError) as refused:
            command_actions(parsed)
        assert refused.value.reason == "unsupported"
        return
    assert command_actions(parsed) == [ServiceAction(domain, service, target, call_data) for domain, service, call_data in expected]


def test_call_service_stays_on_its_target() -> None:
    parsed = parse_command(command(type="call_service", data={"service": "light.turn_on", "data": {"brightness_pct": 30}}))
    assert command_actions(parsed) == [ServiceAction("light", "turn_on", "light.kitchen", {"brightness_pct": 30})]
    wrong = parse_command(command(type="call_service", data={"service": "lock.unlock"}))
    with pytest.raises(CommandError, match="cannot be called on light.kitchen"):
        command_actions(wrong)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("turn it on", "JSON object"),
        (command(id=""), "no id"),
        (command(type="delete_everything"), "unknown command type"),
        (command(target="kitchen light"), "not an entity id"),
        (command(data=["on"]), "not an object"),
        (command(version="3"), "not an integer"),
        (command(version=True), "not an integer"),
        (command(expires_at="tomorrow"), "not a time"),
        (command(expires_at="2026-11-29T10:00:00"), "not a time"),  # no zone: ambiguous
        (command(expires_at=10**400), "out of range"),
        (command(version=2**63), "from 0 to 2"),
        (command(data={"state": "on", "entity_id": "all"}), "acts on its target only"),  # no retargeting
        (command(type="call_service", data={"service": "cover.open_cover", "data": {"entity_id": "cover.garage_door"}}),
         "acts on its target only"),
        (command(data={"state": "on", "area_id": "kitchen"}), "acts on its target only"),
    ],
)
def test_a_malformed_command_is_refused_with_a_reason(raw: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message) as refused:
        parse_command(raw)
    assert refused.value.reason == "invalid"


def test_expired_and_stale_commands_are_refused() -> None:
    now = 1_800_000_000.0
    fresh = parse_command(command(version=5, expires_at="2027-01-15T08:00:00+00:00"))
    assert fresh.expires_at == pytest.approx(1_800_000_000.0)
    check_fresh(fresh, now - 1, last_version=5)  # the same version again: fine (idempotent by id)
    with pytest.raises(CommandError) as expired:
        check_fresh(fresh, now + 1, last_version=None)
    assert expired.value.reason == "expired"
    with pytest.raises(CommandError) as stale:
        check_fresh(parse_command(command(version=4)), now, last_version=5)
    assert stale.value.reason == "stale"
    check_fresh(parse_command(command()), now, last_version=5)  # no version: not compared


def test_applied_versions_survive_a_restart_and_never_go_back(tmp_path: Path) -> None:
    ledger = ActionLedger(tmp_path / "ledger.db")
    ledger.open()
    book = VersionBook(ledger)
    book.open()
    assert book.last("light.kitchen") is None
    book.record(parse_command(command(version=7)), 1.0)
    book.record(parse_command(command(id="cmd-0", version=3)), 2.0)  # a late, older one
    assert book.last("light.kitchen") == 7
    ledger.close()
    reopened = ActionLedger(tmp_path / "ledger.db")
    reopened.open()
    book = VersionBook(reopened)
    book.open()
    assert book.last("light.kitchen") == 7
    book.record(parse_command(command(id="cmd-2", version=8)), 3.0)
    assert book.last("light.kitchen") == 8
    reopened.close()


async def test_commands_run_once_through_the_executor_and_report_their_results(tmp_path: Path) -> None:
    """A desired state is applied once (a redelivery is deduplicated), a stale or expired one is
    refused, a lock needs confirmed_by_user, an unexposed device is refused; every command's
    result is an event in the outbox; versions advance only with applied commands."""
    from custom_components.gemma_edge.actions.executor import ActionExecutor  # noqa: PLC0415
    from custom_components.gemma_edge.sync.outbox import COMMAND_RESULT, Outbox  # noqa: PLC0415
    from custom_components.gemma_edge.sync.reconcile import CommandRunner  # noqa: PLC0415

    from .test_actions import LIGHT, LOCK, Clock, make_home  # noqa: PLC0415

    home, clock = make_home(), Clock()
    ledger = ActionLedger(tmp_path / "ledger.db")
    executor = ActionExecutor(ledger, home, clock=clock, call_timeout_s=0.2, verify_timeout_s=0.1)
    await executor.async_start()
    outbox, versions = Outbox(ledger, clock=clock), VersionBook(ledger)
    await executor.async_on_ledger(outbox.open)
    await executor.async_on_ledger(versions.open)
    runner = CommandRunner(executor, outbox, versions, clock=clock)

    def desired(command_id: str, target: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"id": command_id, "type": "desired_state", "target": target, "data": data, **extra}

    on = desired("c1", LIGHT, {"state": "on", "brightness": 200}, version=2)
    assert (await runner.async_run(on))["status"] == "applied"
    assert home.states[LIGHT].state == "on" and home.calls[("light", "turn_on", LIGHT)] == 1
    again = await runner.async_run(on)  # delivered twice
    assert again["status"] == "applied" and again["outcomes"][0]["status"] == "deduplicated"
    assert home.calls[("light", "turn_on", LIGHT)] == 1
    stale = await runner.async_run(desired("c0", LIGHT, {"state": "off"}, version=1))
    assert (stale["status"], stale["reason"]) == ("rejected", "stale") and home.states[LIGHT].state == "on"
    expired = await runner.async_run(desired("c2", LIGHT, {"state": "off"}, expires_at=clock.now - 1))
    assert (expired["status"], expired["reason"]) == ("rejected", "expired")
    lock = await runner.async_run(desired("c3", LOCK, {"state": "locked"}))
    assert (lock["status"], lock["reason"]) == ("rejected", "needs_confirmation") and home.states[LOCK].state == "unlocked"
    confirmed = await runner.async_run(desired("c4", LOCK, {"state": "locked"}, confirmed_by_user=True))
    assert confirmed["status"] == "applied" and home.states[LOCK].state == "locked"
    hidden = await runner.async_run(desired("c5", "light.hidden", {"state": "on"}))
    assert (hidden["status"], hidden["reason"]) == ("rejected", "rejected") and "not exposed" in hidden["message"]
    junk = await runner.async_run({"id": "c6", "type": "reboot", "target": LIGHT})
    assert (junk["status"], junk["reason"]) == ("rejected", "invalid")
    assert await executor.async_on_ledger(versions.last, LIGHT) == 2
    # c1 delivered once more after a newer version applied and after its expiry: its own
    # recorded result, not a rejection
    newer = await runner.async_run(desired("c7", LIGHT, {"state": "on", "brightness": 90}, version=5))
    assert newer["status"] == "applied" and await executor.async_on_ledger(versions.last, LIGHT) == 5
    late = await runner.async_run({**on, "expires_at": clock.now - 1})
    assert late["status"] == "applied" and late["outcomes"][0]["status"] == "deduplicated"
    assert home.states[LIGHT].attributes["brightness"] == 90  # and it did not act again
    batch = await executor.async_on_ledger(outbox.next_batch, clock.now)
    results = [(e.event.data["command_id"], e.event.data["status"]) for e in batch if e.event.type == COMMAND_RESULT]
    assert results == [("c1", "applied"), ("c1", "applied"), ("c0", "rejected"), ("c2", "rejected"),
                       ("c3", "rejected"), ("c4", "applied"), ("c5", "rejected"), ("c6", "rejected"),
                       ("c7", "applied"), ("c1", "applied")]  # fmt: skip
    await executor.async_stop()


async def test_a_stale_version_arriving_during_a_newer_one_never_wins(tmp_path: Path) -> None:
    """Version 6 is still being applied (a slow device) when version 5 arrives by the other
    channel (a push beside a batch's answer): 5 is checked after 6 is recorded, and refused."""
    import asyncio  # noqa: PLC0415

    from custom_components.gemma_edge.actions.executor import ActionExecutor  # noqa: PLC0415
    from custom_components.gemma_edge.sync.outbox import Outbox  # noqa: PLC0415
    from custom_components.gemma_edge.sync.reconcile import CommandRunner  # noqa: PLC0415

    from .test_actions import LIGHT, Clock, make_home  # noqa: PLC0415

    home, clock = make_home(), Clock()
    original_call = home.async_call

    async def slow_call(*args: Any) -> None:
        await asyncio.sleep(0.05)
        await original_call(*args)

    home.async_call = slow_call  # type: ignore[method-assign]
    ledger = ActionLedger(tmp_path / "ledger.db")
    executor = ActionExecutor(ledger, home, clock=clock, call_timeout_s=1.0, verify_timeout_s=0.2)
    await executor.async_start()
    outbox, versions = Outbox(ledger, clock=clock), VersionBook(ledger)
    await executor.async_on_ledger(outbox.open)
    await executor.async_on_ledger(versions.open)
    runner = CommandRunner(executor, outbox, versions, clock=clock)

    def desired(version: int, brightness: int) -> dict[str, Any]:
        return {"id": f"v{version}", "type": "desired_state", "target": LIGHT,
                "data": {"state": "on", "brightness": brightness}, "version": version}  # fmt: skip

    newer = asyncio.ensure_future(runner.async_run(desired(6, 200)))
    await asyncio.sleep(0.01)  # 6 is at the device
    older = await runner.async_run(desired(5, 50))
    assert (await newer)["status"] == "applied"
    assert (older["status"], older["reason"]) == ("rejected", "stale")
    assert home.states[LIGHT].attributes["brightness"] == 200
    assert await executor.async_on_ledger(versions.last, LIGHT) == 6
    await executor.async_stop()
