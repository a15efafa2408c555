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
