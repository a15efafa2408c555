"""Sentences about actions, for the logbook, the calendar and the last-action sensor."""

from __future__ import annotations

# service -> (infinitive, past tense)
_VERBS = {
    "turn_on": ("turn on", "turned on"), "turn_off": ("turn off", "turned off"),
    "open_cover": ("open", "opened"), "close_cover": ("close", "closed"),
    "open_valve": ("open", "opened"), "close_valve": ("close", "closed"),
    "lock": ("lock", "locked"), "unlock": ("unlock", "unlocked"), "open": ("open", "opened"),
    "press": ("press", "pressed"), "set_cover_position": ("move", "moved"), "set_valve_position": ("move", "moved"),
    "volume_set": ("set the volume of", "set the volume of"), "media_pause": ("pause", "paused"),
    "media_play": ("resume", "resumed"), "media_next_track": ("skip to the next track on", "skipped to the next track on"),
    "media_previous_track": ("go back a track on", "went back a track on"), "start": ("start", "started"),
    "return_to_base": ("send home", "sent home"), "set_temperature": ("set the temperature of", "set the temperature of"),
    "select_option": ("change", "changed"), "set_value": ("set", "set"), "set_percentage": ("set the speed of", "set the speed of"),
}  # fmt: skip
_SOURCES = {
    "conversation": "asked in Assist", "ai_task": "for an AI task", "service": "asked by an automation",
    "cloud": "asked by the cloud",
}  # fmt: skip


def describe_action(service: str, target: str, status: str, message: str, source: str) -> str:
    """E.g. "turned on Kitchen Light (asked in Assist)"; ``target`` is a friendly name."""
    domain, _, name = service.partition(".")
    if domain == "tool":
        infinitive, past, target = f"run {name}", f"ran {name}", ""
    else:
        infinitive, past = _VERBS.get(name, (f"run {name} on", f"ran {name} on"))
    what = f"{infinitive} {target}".strip()
    sentence = {
        "executed": f"{past} {target}".strip(),
        "unconfirmed": f"{past} {target} (the device has not confirmed yet)".replace("  ", " "),
        "no_op": f"left {target or name} as it was ({message})",
        "deduplicated": f"ignored a repeated request to {what}",
        "needs_confirmation": f"asked for confirmation to {what}",
        "rejected": f"refused to {what}: {message}",
        "failed": f"could not {what}: {message}",
        "indeterminate": f"may not have managed to {what} ({message})",
    }.get(status, f"{what}: {status}")
    return f"{sentence} ({_SOURCES.get(source, source)})" if source else sentence
