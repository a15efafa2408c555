"""Sentences about actions, for the logbook, the calendar and the last-action sensor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_action(
    service: str,
    target: str,
    status: str,
    message: str,
    source: str,
    phrases: Mapping[str, str],
) -> str:
    """Describe what was done with an action, for the logbook and the dashboards.

    E.g. "turned on Kitchen Light (asked in Assist)"; ``target`` is a friendly name.
    ``phrases`` are the integration's ``common`` translations in the user's language
    (strings.json): ``do_<service>``/``done_<service>`` phrases with the target in
    them, ``action_<status>`` sentences made of them, ``source_<source>`` notes.
    """
    domain, _, name = service.partition(".")
    if domain == "tool":
        kind, target = "tool", name
    elif domain == "remote":
        kind, target = "remote", name.replace("_", " ")
    elif f"do_{name}" in phrases and f"done_{name}" in phrases:
        kind = name
    else:
        kind = "other"
    fields = {"target": target, "service": name.replace("_", " ")}
    # Without phrases (translations not loaded): the bare facts.
    action = phrases.get(f"do_{kind}", "{service} {target}").format(**fields)
    done = phrases.get(f"done_{kind}", "{service} {target}").format(**fields)
    template = phrases.get(
        f"action_{status}", phrases.get("action_other", "{action}: {status}")
    )
    sentence = template.format(
        action=action, done=done, target=target, message=message, status=status
    )
    if not source:
        return sentence
    note = phrases.get(f"source_{source}", source)
    with_source = phrases.get("action_with_source", "{sentence} ({source})")
    return with_source.format(sentence=sentence, source=note)


# --- what the agent says about its actions ----------------------------------------
# service -> (infinitive, past tense) of the spoken answers (English)
_VERBS = {
    "turn_on": ("turn on", "turned on"),
    "turn_off": ("turn off", "turned off"),
    "open_cover": ("open", "opened"),
    "close_cover": ("close", "closed"),
    "open_valve": ("open", "opened"),
    "close_valve": ("close", "closed"),
    "lock": ("lock", "locked"),
    "unlock": ("unlock", "unlocked"),
    "open": ("open", "opened"),
    "press": ("press", "pressed"),
    "set_cover_position": ("move", "moved"),
    "set_valve_position": ("move", "moved"),
    "volume_set": ("set the volume of", "set the volume of"),
    "media_pause": ("pause", "paused"),
    "media_play": ("resume", "resumed"),
    "media_next_track": ("skip to the next track on", "skipped to the next track on"),
    "media_previous_track": ("go back a track on", "went back a track on"),
    "start": ("start", "started"),
    "return_to_base": ("send home", "sent home"),
    "set_temperature": ("set the temperature of", "set the temperature of"),
    "select_option": ("change", "changed"),
    "set_value": ("set", "set"),
    "set_percentage": ("set the speed of", "set the speed of"),
    "set_humidity": ("set the humidity of", "set the humidity of"),
    "set_mode": ("set the mode of", "set the mode of"),
    "stop_cover": ("stop", "stopped"),
    "stop_valve": ("stop", "stopped"),
    "start_mowing": ("start", "started"),
    "dock": ("dock", "docked"),
    "volume_mute": ("mute", "muted"),
    "set_hvac_mode": ("switch", "switched"),
}

# service -> the state it leaves an entity in, for "X is already on"
_RESULT_STATE = {
    "turn_on": "on",
    "turn_off": "off",
    "open_cover": "open",
    "close_cover": "closed",
    "open_valve": "open",
    "close_valve": "closed",
    "lock": "locked",
    "unlock": "unlocked",
    "media_pause": "paused",
    "media_play": "playing",
    "start_mowing": "mowing",
    "dock": "docked",
}
_GERMAN_VERBS = {
    "turn_on": ("einschalten", "eingeschaltet"),
    "turn_off": ("ausschalten", "ausgeschaltet"),
    "open_cover": ("öffnen", "geöffnet"),
    "close_cover": ("schließen", "geschlossen"),
    "open_valve": ("öffnen", "geöffnet"),
    "close_valve": ("schließen", "geschlossen"),
    "lock": ("abschließen", "abgeschlossen"),
    "unlock": ("aufschließen", "aufgeschlossen"),
    "press": ("drücken", "gedrückt"),
    "media_pause": ("pausieren", "pausiert"),
    "media_play": ("fortsetzen", "fortgesetzt"),
    "start": ("starten", "gestartet"),
    "return_to_base": ("zurückschicken", "zurückgeschickt"),
}
_SPOKEN = {
    "en": {
        "executed": "{Past} {name}{to}.",
        "unconfirmed": "{Past} {name}{to}, but it has not confirmed the change yet.",
        "no_op": "{Name} is already {state}.",
        "deduplicated": "I already did that: {name}.",
        "needs_confirmation": (
            "I need your confirmation to {verb} {name}. Should I go ahead?"
        ),
        "rejected": "I did not {verb} {name}: {message}.",
        "failed": "I could not {verb} {name}: {message}.",
        "indeterminate": (
            "I tried to {verb} {name}, but I cannot tell whether it worked."
        ),
        "running": "I started to {verb} {name}; it is still running.",
        "nothing": "I did not change anything.",
        "unusable": (
            "Sorry, I could not work out an answer to that. "
            "Could you say it differently?"
        ),
    },
    "de": {
        "executed": "{Name} {past}.",
        "unconfirmed": "{Name} {past}, aber das Gerät hat es noch nicht bestätigt.",
        "no_op": "{Name} ist schon {state}.",
        "deduplicated": "Das habe ich schon erledigt: {name}.",
        "needs_confirmation": "Soll ich {name} wirklich {verb}? Bitte bestätige.",
        "rejected": "Ich habe {name} nicht {past}: {message}.",
        "failed": "Ich konnte {name} nicht {verb}: {message}.",
        "indeterminate": (
            "Ich habe versucht, {name} zu {verb}, weiß aber nicht, ob es geklappt hat."
        ),
        "running": "Ich habe begonnen, {name} zu {verb}; das läuft noch.",
        "nothing": "Ich habe nichts geändert.",
        "unusable": (
            "Entschuldigung, darauf habe ich keine Antwort gefunden. "
            "Kannst du es anders sagen?"
        ),
    },
}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# service -> (data key, unit, scale) for "Set the speed of Ceiling Fan to 50%"
_VALUES = {
    "set_percentage": ("percentage", "%", 1),
    "volume_set": ("volume_level", "%", 100),
    "set_cover_position": ("position", "%", 1),
    "set_valve_position": ("position", "%", 1),
    "set_temperature": ("temperature", "°", 1),
    "set_humidity": ("humidity", "%", 1),
    "set_value": ("value", "", 1),
    "select_option": ("option", "", 1),
    "set_mode": ("mode", "", 1),
}


def _value(action: str, data: dict[str, Any]) -> str:
    if action == "turn_on":
        # A fan's speed or a light's brightness set with turning it on.
        value = data.get("percentage", data.get("brightness_pct"))
        return "" if value is None else f" at {round(float(value)):d}%"
    key, unit, scale = _VALUES.get(action, ("", "", 1))
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        value = f"{round(float(value) * scale, 1):g}"
    return f" to {value}{unit}"


def spoken_outcome(
    service: str,
    name: str,
    status: str,
    message: str,
    language: str = "en",
    data: dict[str, Any] | None = None,
) -> str:
    """Say one action's outcome in one sentence.

    In the user's language (English when unknown).
    """
    lang = language.split("-")[0].lower()
    templates = _SPOKEN.get(lang, _SPOKEN["en"])
    if status == "deduplicated":  # a retry: say what the first attempt's outcome was
        recorded, _, inner = message.removeprefix("already handled: ").partition(" ")
        if recorded in templates and recorded not in ("executed", "deduplicated"):
            status, message = (
                recorded,
                inner.strip().removeprefix("(").removesuffix(")"),
            )
    action = service.partition(".")[2] or service
    if service.startswith("tool."):  # a script, a timer, a list: "run Morning Routine"
        verb, past = ("ausführen", "ausgeführt") if lang == "de" else ("run", "ran")
    elif service.startswith("remote."):  # queued for the cloud: "requested ..."
        verb, past = (
            ("anfordern", "angefordert") if lang == "de" else ("request", "requested")
        )
    elif lang == "de" and action in _GERMAN_VERBS:
        verb, past = _GERMAN_VERBS[action]
    else:
        templates = _SPOKEN["en"] if lang == "de" else templates
        verb, past = _VERBS.get(
            action,
            (
                f"run {action.replace('_', ' ')} on",
                f"ran {action.replace('_', ' ')} on",
            ),
        )
        if action == "volume_mute" and (data or {}).get("is_volume_muted") is False:
            verb, past = "unmute", "unmuted"
    state = _RESULT_STATE.get(action) or message.removeprefix("already ") or "as asked"
    message = message.removeprefix("failed: ").rstrip(".") or status
    if " @ data[" in message or "exclusion" in message:
        # Home Assistant's schema text is not for people.
        message = "it did not accept those settings"
    return templates.get(status, templates["failed"]).format(
        Past=_capital(past),
        past=past,
        verb=verb,
        name=name,
        Name=_capital(name),
        state=state,
        message=message,
        to=_value(action, data or {}),
    )


def spoken_unusable(language: str = "en") -> str:
    """Return what the agent says when the model's answer was unusable."""
    return _SPOKEN.get(language.split("-")[0].lower(), _SPOKEN["en"])["unusable"]


def spoken_summary(sentences: list[str], language: str = "en") -> str:
    """Join the outcomes of a turn into one answer (each sentence once, in order)."""
    unique = list(dict.fromkeys(s for s in sentences if s))
    if not unique:
        return _SPOKEN.get(language.split("-")[0].lower(), _SPOKEN["en"])["nothing"]
    return " ".join(unique)
