"""Plain facts about Assist's intents and the user's words (no Home Assistant).

Which intents act on no entity, the service a domain uses for "on" and "off", and the
words that show which device, or that every device, the user meant.
"""

from __future__ import annotations

import re

# Intents that act on no entity (timers, lists, broadcasts): one-shot actions passed to
# Home Assistant's handler. Their "name" is a timer's or a list's name, not a device's.
ONE_SHOT_INTENTS = frozenset(
    {
        "HassStartTimer",
        "HassCancelTimer",
        "HassCancelAllTimers",
        "HassIncreaseTimer",
        "HassDecreaseTimer",
        "HassPauseTimer",
        "HassUnpauseTimer",
        "HassBroadcast",
        "HassListAddItem",
        "HassListCompleteItem",
        "HassShoppingListAddItem",
        "HassShoppingListCompleteItem",
    }
)
# Intents whose ``name`` argument is not an entity's name.
FREE_NAME_INTENTS = frozenset(
    {
        "HassStartTimer",
        "HassCancelTimer",
        "HassIncreaseTimer",
        "HassDecreaseTimer",
        "HassPauseTimer",
        "HassUnpauseTimer",
    }
)
# Resolved to a single media player, then run by Home Assistant's
# handler as a one-shot action.
SEARCH_AND_PLAY = "HassMediaSearchAndPlay"
TARGET_ARGUMENTS = ("name", "area", "floor")

# "All" in the languages Assist users speak most; a targetless call acts
# on every match only then.
_ALL_WORDS = re.compile(
    r"\b(all|every|everything|everywhere|alle|alles|überall|tous|toutes|tout|partout|todos|todas|todo|"
    r"tutti|tutte|tutto|allemaal|overal|wszystkie|wszystko|todas|všechny|alla|allt|kaikki)\b",
    re.IGNORECASE,
)

_ON = {
    "cover": "open_cover",
    "valve": "open_valve",
    "lock": "lock",
    "vacuum": "start",
    "lawn_mower": "start_mowing",
}
_OFF = {
    "cover": "close_cover",
    "valve": "close_valve",
    "lock": "unlock",
    "vacuum": "return_to_base",
    "lawn_mower": "dock",
}
_PRESS = frozenset({"button", "input_button"})


def own_service(domain: str, service: str) -> str:
    """Return the domain's own service for HassTurnOn/HassTurnOff's turn_on/turn_off.

    E.g. a cover opens (``open_cover``), a lock locks; other services are unchanged.
    """
    table = _ON if service == "turn_on" else _OFF if service == "turn_off" else {}
    return table.get(domain, service)


def is_pressed(domain: str) -> bool:
    """Return whether "turn on" means pressing an entity of this domain (a button)."""
    return domain in _PRESS


def says_all(text: str) -> bool:
    """Return whether the user's words ask for every matching device.

    E.g. "all the lights".
    """
    return bool(_ALL_WORDS.search(text))


# Words that name a kind of device, not a device: they do not show
# which device the user meant.
_GENERIC_WORDS = frozenset(
    [
        "the",
        "and",
        "all",
        "light",
        "lights",
        "lamp",
        "lamps",
        "fan",
        "fans",
        "window",
        "windows",
        "door",
        "doors",
        "switch",
        "switches",
        "speaker",
        "speakers",
        "player",
        "players",
        "cover",
        "covers",
        "blind",
        "blinds",
        "shade",
        "shades",
        "tv",
        "room",
        "please",
        "turn",
        "set",
        "open",
        "close",
    ]
)


def distinctive_words(text: str) -> set[str]:
    """Return the words of ``text`` that can tell one device from another."""
    return {
        w
        for w in re.findall(r"\w+", text.lower())
        if len(w) >= 3 and w not in _GENERIC_WORDS
    }


# Kinds of device a name or the user's words can mention ("Kitchen
# Window" is not "kitchen lights").
_KINDS = {
    "light": "light",
    "lights": "light",
    "lamp": "light",
    "lamps": "light",
    "fan": "fan",
    "fans": "fan",
    "window": "window",
    "windows": "window",
    "door": "door",
    "doors": "door",
    "blind": "blind",
    "blinds": "blind",
    "shade": "blind",
    "shades": "blind",
    "speaker": "speaker",
    "speakers": "speaker",
    "tv": "speaker",
    "player": "speaker",
}


def device_kinds(text: str) -> set[str]:
    """Return the kinds of device ``text`` mentions ("light", "window", ...)."""
    return {_KINDS[w] for w in re.findall(r"\w+", text.lower()) if w in _KINDS}
