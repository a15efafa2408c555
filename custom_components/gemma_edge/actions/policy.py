"""Action policy.

Which services act once, which are sensitive, and when a desired state already holds.
"""

from __future__ import annotations

from dataclasses import replace
import enum
from typing import Any

from .records import ActionKind, EntityState, ServiceAction

# Services that act every time they run (DESIGN.md "one-shot actions").
ONE_SHOT_SERVICES = frozenset(
    {
        ("button", "press"),
        ("input_button", "press"),
        ("automation", "trigger"),
        ("lock", "open"),
        ("vacuum", "start"),
        ("vacuum", "return_to_base"),
        ("vacuum", "clean_spot"),
        ("vacuum", "locate"),
        ("media_player", "media_next_track"),
        ("media_player", "media_previous_track"),
        ("remote", "send_command"),
        ("counter", "increment"),
        ("counter", "decrement"),
        ("counter", "reset"),
    }
)
ONE_SHOT_DOMAINS = frozenset(
    {"script", "notify", "tts", "shell_command", "rest_command"}
)
SENSITIVE_DOMAINS = frozenset({"lock", "alarm_control_panel", "valve"})
SENSITIVE_COVER_CLASSES = frozenset({"garage", "gate"})


class SensitivePolicy(enum.StrEnum):
    """What to do with actions on locks, alarms, garage doors, gates and valves."""

    ALLOW = "allow"
    CONFIRM = "confirm"
    DENY = "deny"


def action_kind(action: ServiceAction) -> ActionKind:
    """Return whether the action acts once or sets a desired state."""
    if (
        action.domain in ONE_SHOT_DOMAINS
        or (action.domain, action.service) in ONE_SHOT_SERVICES
    ):
        return ActionKind.ONE_SHOT
    if expected_state_holds(action, EntityState("unknown")) is None:
        return ActionKind.ONE_SHOT  # no known target state: treat as acting once
    return ActionKind.DESIRED_STATE


def is_sensitive(action: ServiceAction, state: EntityState | None) -> bool:
    """Return whether the action is sensitive.

    Sensitive: on a lock, an alarm panel, a valve, a garage door or a gate.
    """
    if action.domain in SENSITIVE_DOMAINS:
        return True
    return (
        action.domain == "cover"
        and state is not None
        and state.attributes.get("device_class") in SENSITIVE_COVER_CLASSES
    )


def _close(a: Any, b: Any, tolerance: float) -> bool:
    try:
        return abs(float(a) - float(b)) <= tolerance
    except (TypeError, ValueError):
        return False


_SIMPLE_TARGETS = {
    "turn_on": "on",
    "turn_off": "off",
    "open_cover": "open",
    "close_cover": "closed",
    "lock": "locked",
    "unlock": "unlocked",
    "open_valve": "open",
    "close_valve": "closed",
    "alarm_disarm": "disarmed",
    "alarm_arm_home": "armed_home",
    "alarm_arm_away": "armed_away",
    "alarm_arm_night": "armed_night",
    "media_play": "playing",
    "media_pause": "paused",
    "media_stop": "idle",
    "start_mowing": "mowing",
    "dock": "docked",
}


# Data a device does not report back as sent (colours, effects,
# transitions): acted on, not verified.
UNVERIFIED_KEYS = frozenset(
    {
        "rgb_color",
        "rgbw_color",
        "rgbww_color",
        "hs_color",
        "xy_color",
        "color_name",
        "color_temp_kelvin",
        "color_temp",
        "kelvin",
        "effect",
        "transition",
        "flash",
        "white",
        "profile",
    }
)
# Devices whose "on" is a mode or an activity (heat, cool, playing,
# idle), not the state "on".
_ON_IS_ANY_STATE = frozenset({"climate", "media_player", "water_heater", "remote"})
_NOT_ON = frozenset({"off", "standby", "unavailable", "unknown"})


def verifiable_part(action: ServiceAction) -> tuple[ServiceAction, list[str]]:
    """Return what the device's state can confirm of the action.

    Also return the data keys it cannot confirm.
    """
    skipped = sorted(key for key in action.data if key in UNVERIFIED_KEYS)
    target = replace(
        action, data={k: v for k, v in action.data.items() if k not in UNVERIFIED_KEYS}
    )
    if action.service == "turn_on" and (
        target.data.get("brightness_pct") == 0 or target.data.get("brightness") == 0
    ):
        # Brightness 0 turns a light off.
        target = replace(target, service="turn_off", data={})
    return target, skipped


def expected_state_holds(action: ServiceAction, state: EntityState) -> bool | None:
    """Return whether the entity is already where the action would take it.

    None: the action has no checkable target.
    """
    data, attrs = action.data, state.attributes
    service = action.service
    if (
        action.domain in ("scene", "script")
        or (action.domain, service) in ONE_SHOT_SERVICES
    ):
        return None
    if (
        action.domain in _ON_IS_ANY_STATE
        and service in ("turn_on", "turn_off")
        and not data
    ):
        return (
            state.state not in _NOT_ON
            if service == "turn_on"
            else state.state in ("off", "standby")
        )
    if action.domain == "media_player" and service == "media_stop":
        return state.state in ("idle", "off", "on", "standby")
    if service in ("turn_on", "turn_off") or service in _SIMPLE_TARGETS:
        if state.state != _SIMPLE_TARGETS[service]:
            return False
        if "brightness" in data and not _close(
            attrs.get("brightness"), data["brightness"], 2
        ):
            return False
        if "brightness_pct" in data:
            current = attrs.get("brightness")
            if current is None or not _close(
                float(current) * 100 / 255, data["brightness_pct"], 1
            ):
                return False
        if "percentage" in data and not _close(
            attrs.get("percentage"), data["percentage"], 0.5
        ):
            return False
        # Colours etc.: act.
        return not (set(data) - {"brightness", "brightness_pct", "percentage"})
    if service == "set_cover_position":
        return _close(attrs.get("current_position"), data.get("position"), 0.5)
    if service == "set_temperature" and "temperature" in data:
        return _close(attrs.get("temperature"), data["temperature"], 0.05)
    if service == "set_hvac_mode":
        return state.state == data.get("hvac_mode")
    if service == "volume_set":
        return _close(attrs.get("volume_level"), data.get("volume_level"), 0.005)
    if service == "volume_mute":
        return attrs.get("is_volume_muted") == data.get("is_volume_muted")
    if service == "set_value":
        return _close(state.state, data.get("value"), 1e-6)
    if service == "select_option":
        return state.state == data.get("option")
    if service == "set_humidity":
        return _close(attrs.get("humidity"), data.get("humidity"), 0.5)
    if service == "set_mode":
        return state.state != "off" and attrs.get("mode") == data.get("mode")
    if service == "set_percentage":
        return _close(attrs.get("percentage"), data.get("percentage"), 0.5)
    return None
