"""Turn non-idempotent service calls into absolute ones.

The absolute call is computed from the entity's current state:

toggle -> turn_on/turn_off, brightness_step -> brightness, volume_up -> volume_set,
increment -> set_value, select_next -> select_option, increase_speed -> set_percentage.
"""

from __future__ import annotations

from .records import EntityState, ServiceAction


class NormalizeError(ValueError):
    """The call cannot be made absolute.

    E.g. toggling an entity whose state is unknown.
    """


_TOGGLES = {
    "cover": ("open_cover", "close_cover", {"open", "opening"}),
    "valve": ("open_valve", "close_valve", {"open", "opening"}),
    "media_player": (
        "turn_on",
        "turn_off",
        {"on", "playing", "paused", "idle", "buffering"},
    ),
}


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def normalize(action: ServiceAction, state: EntityState | None) -> ServiceAction:
    """Return the absolute equivalent of ``action`` given ``state``.

    An action that is already absolute is returned unchanged.
    """
    domain, service, data = action.domain, action.service, dict(action.data)

    def need_state() -> EntityState:
        if state is None or state.state in ("unknown", "unavailable"):
            raise NormalizeError(
                f"{action.entity_id} has no known state"
                f" to compute {domain}.{service} from"
            )
        return state

    def make(new_service: str, new_data: dict[str, object]) -> ServiceAction:
        return ServiceAction(domain, new_service, action.entity_id, new_data)

    if service == "toggle":
        on_service, off_service, on_states = _TOGGLES.get(
            domain, ("turn_on", "turn_off", {"on"})
        )
        current = need_state()
        return make(off_service if current.state in on_states else on_service, data)
    if (
        domain == "light"
        and service == "turn_on"
        and ("brightness_step" in data or "brightness_step_pct" in data)
    ):
        current = need_state()
        brightness = (
            float(current.attributes.get("brightness") or 0)
            if current.state == "on"
            else 0.0
        )
        if "brightness_step_pct" in data:
            brightness += float(data.pop("brightness_step_pct")) * 255 / 100
        else:
            brightness += float(data.pop("brightness_step"))
        brightness = round(_clamp(brightness, 0, 255))
        if brightness == 0:
            return make(
                "turn_off", {k: v for k, v in data.items() if k == "transition"}
            )
        return make("turn_on", {**data, "brightness": brightness})
    if domain == "media_player" and service in ("volume_up", "volume_down"):
        volume = float(need_state().attributes.get("volume_level") or 0)
        step = float(data.get("volume_step", 0.1))
        step = step if service == "volume_up" else -step
        return make(
            "volume_set", {"volume_level": round(_clamp(volume + step, 0, 1), 2)}
        )
    if domain in ("input_number", "number") and service in ("increment", "decrement"):
        current = need_state()
        try:
            value = float(current.state)
        except ValueError as err:
            raise NormalizeError(
                f"{action.entity_id} is not a number: {current.state}"
            ) from err
        step = float(current.attributes.get("step", 1))
        value += step if service == "increment" else -step
        value = _clamp(
            value,
            float(current.attributes.get("min", value)),
            float(current.attributes.get("max", value)),
        )
        return make("set_value", {"value": value})
    if domain in ("select", "input_select") and service in (
        "select_next",
        "select_previous",
        "select_first",
        "select_last",
    ):
        current = need_state()
        options = list(current.attributes.get("options") or [])
        if not options:
            raise NormalizeError(f"{action.entity_id} has no options")
        if service in ("select_first", "select_last"):
            option = options[0] if service == "select_first" else options[-1]
        else:
            index = options.index(current.state) if current.state in options else -1
            index += 1 if service == "select_next" else -1
            if data.get("cycle", True):
                index %= len(options)
            option = options[int(_clamp(index, 0, len(options) - 1))]
        return make("select_option", {"option": option})
    if domain == "fan" and service in ("increase_speed", "decrease_speed"):
        current = need_state()
        percentage = float(current.attributes.get("percentage") or 0)
        step = float(
            data.get("percentage_step")
            or current.attributes.get("percentage_step")
            or 10
        )
        percentage += step if service == "increase_speed" else -step
        return make("set_percentage", {"percentage": round(_clamp(percentage, 0, 100))})
    return action


__all__ = ["NormalizeError", "normalize"]
