"""What the user hears: the answer guard and the sentences built from action outcomes (plain Python)."""

from __future__ import annotations

import pytest

from custom_components.gemma_edge.actions.describe import spoken_outcome, spoken_summary
from custom_components.gemma_edge.engine.answer_guard import AnswerGuard

PROMPT = "You are a voice assistant for Home Assistant. Answer questions about the world truthfully."


def stream(guard: AnswerGuard, text: str, size: int = 3) -> str:
    out = "".join(guard.feed(text[i : i + size]) for i in range(0, len(text), size))
    return out + guard.finish()


@pytest.mark.parametrize(
    ("answer", "spoken"),
    [
        ("Turned on the light. Anything else?", "Turned on the light. Anything else?"),
        ('{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}', ""),
        ("Done. {\"name\": \"HassTurnOn\"}", "Done. "),
        ("<|im_start|>assistant\nHi", ""),
        ("<start_of_turn>model", ""),
        ("call:HassTurnOn{name:x}", ""),
        ("You are a voice assistant for Home Assistant.", ""),
        ("OK. Answer questions about the world truthfully. More", "OK. "),
        ("The kitchen light is on!\nThe fan is off.", "The kitchen light is on!\nThe fan is off."),
        ("", ""),
    ],
)
def test_guard_releases_sentences_only(answer: str, spoken: str) -> None:
    guard = AnswerGuard(PROMPT)
    assert stream(guard, answer) == spoken
    assert guard.said_nothing == (not spoken.strip())


def test_guard_streams_sentence_by_sentence() -> None:
    guard = AnswerGuard(PROMPT)
    assert guard.feed("Turned on the ") == ""
    assert guard.feed("light. And") == "Turned on the light. "
    assert guard.finish() == "And"


@pytest.mark.parametrize(
    ("service", "status", "message", "data", "sentence"),
    [
        ("fan.set_percentage", "executed", "done", {"percentage": 100}, "Set the speed of Ceiling Fan to 100%."),
        ("fan.turn_on", "unconfirmed", "called", {}, "Turned on Ceiling Fan, but it has not confirmed the change yet."),
        ("fan.turn_on", "no_op", "already on", {}, "Ceiling Fan is already on."),
        ("fan.turn_on", "deduplicated", "already handled: executed (done)", {}, "I already did that: Ceiling Fan."),
        # a retry of a turn that asked or failed says so again, not "I already did that"
        ("fan.turn_on", "deduplicated", "already handled: needs_confirmation (needs your confirmation)", {},
         "I need your confirmation to turn on Ceiling Fan. Should I go ahead?"),
        ("fan.turn_on", "deduplicated", "already handled: failed (failed: boom)", {}, "I could not turn on Ceiling Fan: boom."),
        ("fan.turn_on", "needs_confirmation", "x", {}, "I need your confirmation to turn on Ceiling Fan. Should I go ahead?"),
        ("fan.turn_on", "rejected", "not allowed", {}, "I did not turn on Ceiling Fan: not allowed."),
        ("fan.turn_on", "failed", "failed: boom", {}, "I could not turn on Ceiling Fan: boom."),
        ("fan.turn_on", "failed", "failed: two or more values in the same group of exclusion 'Color descriptors' @ data[<Color descriptors>]",
         {}, "I could not turn on Ceiling Fan: it did not accept those settings."),  # HA's schema text is not spoken
        ("fan.turn_on", "indeterminate", "timeout", {}, "I tried to turn on Ceiling Fan, but I cannot tell whether it worked."),
        ("media_player.volume_set", "executed", "done", {"volume_level": 0.35}, "Set the volume of Ceiling Fan to 35%."),
    ],
)
def test_a_sentence_for_every_status(service: str, status: str, message: str, data: dict, sentence: str) -> None:
    assert spoken_outcome(service, "Ceiling Fan", status, message, "en", data) == sentence


def test_german_and_unknown_languages() -> None:
    assert spoken_outcome("cover.open_cover", "Garagentor", "needs_confirmation", "", "de-DE") == (
        "Soll ich Garagentor wirklich öffnen? Bitte bestätige."
    )
    assert spoken_outcome("light.turn_off", "Licht", "executed", "done", "de") == "Licht ausgeschaltet."
    assert spoken_outcome("light.turn_off", "Lamp", "executed", "done", "xx") == "Turned off Lamp."
    assert spoken_summary([], "de") == "Ich habe nichts geändert."
    assert spoken_summary(["A.", "A.", "B."]) == "A. B."


def test_more_services_read_as_sentences() -> None:
    assert spoken_outcome("humidifier.set_humidity", "Humidifier", "executed", "done", "en", {"humidity": 55}) == (
        "Set the humidity of Humidifier to 55%."
    )
    assert spoken_outcome("media_player.volume_mute", "Bedroom", "executed", "done", "en", {"is_volume_muted": False}) == (
        "Unmuted Bedroom."
    )
    assert spoken_outcome("cover.stop_cover", "Hall Window", "executed", "done") == "Stopped Hall Window."
