"""Sentences about actions from the integration's translations (plain Python, no Home Assistant)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custom_components.gemma_edge.actions.describe import describe_action

PACKAGE = Path(__file__).parent.parent / "custom_components" / "gemma_edge"
ENGLISH = json.loads((PACKAGE / "strings.json").read_text())["common"]
GERMAN = {**ENGLISH, **json.loads((PACKAGE / "translations" / "de.json").read_text())["common"]}


@pytest.mark.parametrize(
    ("service", "target", "status", "message", "source", "sentence"),
    [
        ("light.turn_on", "Kitchen Light", "executed", "done", "conversation", "turned on Kitchen Light (asked in Assist)"),
        ("light.turn_on", "Kitchen Light", "no_op", "already on", "conversation", "left Kitchen Light as it was (already on) (asked in Assist)"),
        ("cover.open_cover", "Garage Door", "needs_confirmation", "", "service", "asked for confirmation to open Garage Door (asked by an automation)"),
        ("fan.set_percentage", "Ceiling Fan", "failed", "unavailable", "ai_task", "could not set the speed of Ceiling Fan: unavailable (for an AI task)"),
        ("tool.Morning_Routine", "", "running", "", "conversation", "started to run Morning_Routine; still running (asked in Assist)"),
        ("vacuum.clean_spot", "Robot", "executed", "done", "cloud", "ran clean spot on Robot (asked by the cloud)"),
        ("light.turn_off", "Lamp", "weird", "", "", "turn off Lamp: weird"),
        ("light.turn_off", "Lamp", "executed", "", "telepathy", "turned off Lamp (telepathy)"),
    ],
)
def test_english_sentences(service: str, target: str, status: str, message: str, source: str, sentence: str) -> None:
    assert describe_action(service, target, status, message, source, ENGLISH) == sentence


def test_german_sentences_put_the_device_where_german_wants_it() -> None:
    assert describe_action("light.turn_on", "Küchenlicht", "executed", "", "conversation", GERMAN) == (
        "hat Küchenlicht eingeschaltet (in Assist gefragt)"
    )
    assert describe_action("climate.set_temperature", "Bad", "failed", "offline", "service", GERMAN) == (
        "ist gescheitert: die Temperatur von Bad einstellen (offline) (von einer Automatisierung gefragt)"
    )


def test_every_language_has_every_phrase_with_the_same_placeholders() -> None:
    german = json.loads((PACKAGE / "translations" / "de.json").read_text())["common"]
    assert set(german) == set(ENGLISH)
    for key, text in ENGLISH.items():
        assert sorted(_placeholders(german[key])) == sorted(_placeholders(text)), key


def _placeholders(text: str) -> list[str]:
    import string  # noqa: PLC0415

    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def test_without_translations_the_facts_remain() -> None:
    assert describe_action("light.turn_on", "Lamp", "executed", "done", "conversation", {}) == (
        "turn on Lamp: executed (conversation)"
    )
