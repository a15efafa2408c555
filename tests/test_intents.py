"""Plain facts about Assist's intents and the user's words (actions/intents.py)."""

from __future__ import annotations

import pytest

from custom_components.gemma_edge.actions.intents import (
    device_kinds,
    distinctive_words,
    is_pressed,
    own_service,
    says_all,
)


@pytest.mark.parametrize(
    ("domain", "service", "own"),
    [
        ("cover", "turn_on", "open_cover"),
        ("cover", "turn_off", "close_cover"),
        ("lock", "turn_on", "lock"),
        ("lock", "turn_off", "unlock"),
        ("vacuum", "turn_off", "return_to_base"),
        ("lawn_mower", "turn_on", "start_mowing"),
        ("light", "turn_on", "turn_on"),
        ("cover", "toggle", "toggle"),
    ],
)
def test_turn_on_and_off_become_the_domain_s_own_service(domain: str, service: str, own: str) -> None:
    assert own_service(domain, service) == own


def test_buttons_are_pressed() -> None:
    assert is_pressed("button") and is_pressed("input_button") and not is_pressed("switch")


def test_the_words_that_show_which_device() -> None:
    assert says_all("Turn off all the lights") and says_all("Mach alle Lichter aus")
    assert not says_all("Turn off the hall light") and not says_all("the ballroom")
    assert distinctive_words("Turn on the kitchen lights please") == {"kitchen"}
    assert device_kinds("Kitchen Window and the lamps") == {"window", "light"}


@pytest.mark.parametrize(
    ("words", "bare"),
    [
        ("yes", True), ("Yes please.", True), ("ok, go ahead!", True), ("sure, do it", True), ("ja, bitte", True),
        ("Oui, vas-y", True), ("yeah thanks", True),
        ("yes, close it", False), ("yes open it", False), ("yes and turn off the lights", False), ("no", False),
        ("yes, no, wait", False), ("not yet", False), ("", False),
    ],
)
def test_a_bare_yes_is_only_assent(words: str, bare: bool) -> None:
    """Only a bare yes confirms without the model; anything more is read by the model."""
    from custom_components.gemma_edge.actions.turns import is_bare_affirmation  # noqa: PLC0415

    assert is_bare_affirmation(words) is bare
