"""Assist intents resolved to entities.

One list of service actions per matched, exposed entity.

Every state-changing Assist intent of Home Assistant is matched here with Home
Assistant's own target matching and the intent handler's own constraints (domains,
features, states, slot validation), then turned into plain ``ServiceAction``s that the
idempotent executor runs one entity at a time. Nothing goes to an intent handler that
could act on many entities at once.

Targeting rule: a call must name an entity, an area or a floor. A call that names none
acts only on the requesting satellite's area, or on every match when the user's words
say "all"; otherwise it acts on nothing and the model reads why. A name that matches
several entities asks which one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import re
from typing import Any

import voluptuous as vol

from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.helpers import area_registry as ar, device_registry as dr, intent

from .actions.intents import (
    SEARCH_AND_PLAY,
    TARGET_ARGUMENTS,
    device_kinds,
    distinctive_words,
    is_pressed,
    own_service,
    says_all,
)
from .actions.records import ServiceAction


class TargetError(Exception):
    """The call cannot be resolved to entities (a message for the model, not the user).

    The message tells the model what to do; ``reason`` is a short code for why.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        """Keep the message for the model and the reason code."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Special:
    """An intent whose handler is not a plain service handler.

    It comes with its own constraints and actions.
    """

    domains: frozenset[str]
    schema: dict[Any, Any]
    actions: Callable[[State, dict[str, Any]], list[ServiceAction]]
    features: int = 0


def _humidifier_mode(state: State, slots: dict[str, Any]) -> list[ServiceAction]:
    mode = slots["mode"]
    modes = state.attributes.get("available_modes") or []
    if mode not in modes:  # the model's word is not repeated: it may be anything
        raise TargetError(
            f"{state.name} has no such mode; its modes are {', '.join(map(str, modes))}"
            if modes
            else f"{state.name} has no modes",
            "mode",
        )
    actions = (
        [ServiceAction("humidifier", "turn_on", state.entity_id)]
        if state.state == "off"
        else []
    )
    return [
        *actions,
        ServiceAction("humidifier", "set_mode", state.entity_id, {"mode": mode}),
    ]


def _volume_relative(state: State, slots: dict[str, Any]) -> list[ServiceAction]:
    step = slots["volume_step"]
    if step in ("up", "down"):
        return [ServiceAction("media_player", f"volume_{step}", state.entity_id)]
    service = "volume_up" if step >= 0 else "volume_down"
    return [
        ServiceAction(
            "media_player", service, state.entity_id, {"volume_step": abs(step)}
        )
    ]


def _percent(value: Any) -> int:
    return int(vol.All(vol.Coerce(int), vol.Range(min=0, max=100))(value))


_SPECIALS: dict[str, _Special] = {
    "HassClimateSetTemperature": _Special(
        frozenset({"climate"}),
        {vol.Required("temperature"): vol.Coerce(float)},
        lambda s, a: [
            ServiceAction(
                "climate",
                "set_temperature",
                s.entity_id,
                {"temperature": a["temperature"]},
            )
        ],
        features=1,  # ClimateEntityFeature.TARGET_TEMPERATURE
    ),
    "HassHumidifierSetpoint": _Special(
        frozenset({"humidifier"}),
        {vol.Required("humidity"): _percent},
        lambda s, a: [
            ServiceAction(
                "humidifier", "set_humidity", s.entity_id, {"humidity": a["humidity"]}
            )
        ],
    ),
    "HassHumidifierMode": _Special(
        frozenset({"humidifier"}), {vol.Required("mode"): str}, _humidifier_mode
    ),
    "HassSetVolumeRelative": _Special(
        frozenset({"media_player"}),
        {
            vol.Required("volume_step"): vol.Any(
                "up",
                "down",
                vol.All(vol.Coerce(int), vol.Range(-100, 100), lambda v: v / 100),
            )
        },
        _volume_relative,
        features=4,  # MediaPlayerEntityFeature.VOLUME_SET
    ),
    SEARCH_AND_PLAY: _Special(
        frozenset({"media_player"}),
        {vol.Required("search_query"): str},
        lambda s, a: [],
        features=0,
    ),
}


def is_resolved_intent(hass: HomeAssistant, tool: str) -> bool:
    """Return whether the tool is an Assist intent on entities, resolved here."""
    if tool in _SPECIALS:
        return True
    handler = hass.data.get(intent.DATA_KEY, {}).get(tool)
    return isinstance(handler, intent.DynamicServiceIntentHandler)


def intent_domains(hass: HomeAssistant, tool: str) -> set[str] | None:
    """Return the only domains an intent acts on (None: any)."""
    if (special := _SPECIALS.get(tool)) is not None:
        return set(special.domains)
    handler = hass.data.get(intent.DATA_KEY, {}).get(tool)
    return (
        _handler_domains(handler)
        if isinstance(handler, intent.DynamicServiceIntentHandler)
        else None
    )


def _handler_domains(handler: intent.DynamicServiceIntentHandler) -> set[str] | None:
    """Return the domains an intent acts on.

    Its required domains, else the platforms it is for (HassLightSet declares only
    ``platforms={"light"}``; HA would send light.turn_on to a cover).
    """
    domains = handler.required_domains or handler.platforms
    return set(domains) if domains else None


class IntentTargets:
    """Resolves one turn's intent calls to per-entity service actions.

    ``strict_names`` (the "always act first" mode for very small models): a call naming
    a device or an area acts only if the user said that name (see ``_said_name``); a
    tiny model otherwise picks any name the grammar allows.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        turn_text: str,
        device_id: str | None,
        strict_names: bool = False,
        said: str | None = None,
    ) -> None:
        """Set up for one turn; ``said``: the words names are looked for in."""
        self.hass = hass
        self.turn_text = turn_text
        self.area_id, self.floor_id = self._device_area(device_id)
        self.strict_names = strict_names
        said = turn_text if said is None else said
        self._said_text = said.lower()
        self._said = distinctive_words(said)
        self._said_joined = re.sub(r"\W+", "", self._said_text)

    def _device_area(self, device_id: str | None) -> tuple[str | None, str | None]:
        if (
            not device_id
            or (device := dr.async_get(self.hass).async_get(device_id)) is None
            or not device.area_id
        ):
            return None, None
        area = ar.async_get(self.hass).async_get_area(device.area_id)
        return (area.id, area.floor_id) if area else (None, None)

    def resolve(
        self, tool: str, args: dict[str, Any]
    ) -> list[tuple[State, list[ServiceAction]]]:
        """Return the matched entities and, for each, the service actions to run.

        Raises TargetError when the call cannot be resolved.
        """
        if self.strict_names:
            self._check_named(args)
            if args.get("name"):
                # The name says which device; a tiny model's added kinds are noise.
                args = {
                    key: value
                    for key, value in args.items()
                    if key not in ("domain", "device_class")
                }
        if (special := _SPECIALS.get(tool)) is not None:
            slots = self._validate(
                vol.Schema(special.schema, extra=vol.ALLOW_EXTRA), args
            )
            states = self._match(
                tool, args, set(special.domains), special.features or None, None
            )
            if tool == SEARCH_AND_PLAY and len(states) != 1:
                raise TargetError(
                    "which media player should play it?", "multiple_targets"
                )
            return [(state, special.actions(state, slots)) for state in states]
        handler = self.hass.data[intent.DATA_KEY][tool]
        assert isinstance(handler, intent.DynamicServiceIntentHandler)
        validated = self._validate(
            handler.async_validate_slots, {k: {"value": v} for k, v in args.items()}
        )
        slots = {
            key: value["value"]
            for key, value in validated.items()
            if isinstance(value, dict)
        }
        if tool in ("HassMediaPlayerMute", "HassMediaPlayerUnmute"):
            slots["is_volume_muted"] = tool == "HassMediaPlayerMute"
        # The model's domains narrow the intent's own, never widen them.
        own = _handler_domains(handler)
        domains = (
            (set(slots["domain"]) & own if own else set(slots["domain"]))
            if slots.get("domain")
            else own
        )
        if domains is not None and not domains:
            # An empty set would match every domain.
            kinds = " or ".join(sorted(map(str, slots["domain"])))
            raise TargetError(f"that cannot be done with {kinds} devices", "domain")
        states = self._match(
            tool, args, domains, handler.required_features, handler.required_states
        )
        data = {
            info.service_data_name or key: slots[key]
            for key, info in (handler.required_slots | handler.optional_slots).items()
            if slots.get(key) is not None
        }
        intent_obj = intent.Intent(
            self.hass,
            "gemma_edge",
            tool,
            validated,
            None,
            Context(),
            self.hass.config.language,
            assistant=CONVERSATION_DOMAIN,
        )
        return [
            (state, [self._action(handler, intent_obj, tool, state, data)])
            for state in states
        ]

    @staticmethod
    def _validate(
        validator: Callable[[dict[str, Any]], Any], values: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return dict(validator(values))
        except (vol.Invalid, intent.InvalidSlotInfo) as err:
            raise TargetError(f"invalid arguments: {err}", "invalid_arguments") from err

    def _match(
        self,
        tool: str,
        args: dict[str, Any],
        domains: set[str] | None,
        features: int | None,
        states: Any,
    ) -> list[State]:
        area = args.get("area")
        if not any(args.get(key) for key in TARGET_ARGUMENTS):
            scope = set(domains or ()) | set(_list(args.get("device_class")))
            if scope and self.area_id is not None:
                area = self.area_id_name()
            elif not (scope and says_all(self.turn_text)):
                raise TargetError(
                    "which device do you mean? Name it, or its area or floor",
                    "no_target",
                )
        constraints = intent.MatchTargetsConstraints(
            name=args.get("name"),
            area_name=area,
            floor_name=args.get("floor"),
            domains=domains,
            device_classes=_list(args.get("device_class")) or None,
            features=features,
            states=states,
            assistant=CONVERSATION_DOMAIN,
        )
        preferences = intent.MatchTargetsPreferences(
            area_id=self.area_id, floor_id=self.floor_id
        )
        match = intent.async_match_targets(self.hass, constraints, preferences)
        if not match.is_match:
            named_elsewhere = (
                bool(args.get("name"))
                and intent.async_match_targets(
                    self.hass,
                    intent.MatchTargetsConstraints(
                        name=args.get("name"), assistant=CONVERSATION_DOMAIN
                    ),
                ).is_match
            )
            reason = match.no_match_reason.name.lower() if match.no_match_reason else ""
            raise TargetError(_no_match_message(match, args, named_elsewhere), reason)
        return list(match.states)

    def _check_named(self, args: dict[str, Any]) -> None:
        """Check that the user said each name, area or floor in the call.

        Strict names: raise TargetError if not.
        """
        for key in TARGET_ARGUMENTS:
            if (value := args.get(key)) and not self._said_name(str(value)):
                raise TargetError(
                    "which device do you mean? Say its name or its area",
                    "not_mentioned",
                )

    def _said_name(self, name: str) -> bool:
        """Return whether the user said the name.

        Every distinctive word of the name ("Living Room RGBWW Lights": living, rgbww),
        or the whole name as one word or apart ("heat pump" = HeatPump), is in the
        user's words, and a kind of device the name mentions is not contradicted by the
        kind the user said.
        """
        joined = re.sub(r"\W+", "", name.lower())
        words = distinctive_words(name)
        if not words:  # a name made of kind words only ("Lamp", "TV"): said as it is
            return bool(re.search(rf"\b{re.escape(name.lower())}\b", self._said_text))
        if not (
            words <= self._said or (len(joined) >= 4 and joined in self._said_joined)
        ):
            return False
        named, said = device_kinds(name), device_kinds(self._said_text)
        return not (named and said and not named & said)

    def area_id_name(self) -> str | None:
        """Return the name of the requesting satellite's area (None: no area)."""
        area = (
            ar.async_get(self.hass).async_get_area(self.area_id)
            if self.area_id
            else None
        )
        return area.name if area else None

    @staticmethod
    def _action(
        handler: intent.DynamicServiceIntentHandler,
        intent_obj: intent.Intent,
        tool: str,
        state: State,
        data: dict[str, Any],
    ) -> ServiceAction:
        domain, service = handler.get_domain_and_service(intent_obj, state)
        if domain == "homeassistant":  # HassTurnOn/Off/Toggle: the entity's own service
            if is_pressed(state.domain):
                if service != "turn_on":
                    raise TargetError(
                        f"{state.name} is a button: it can be pressed, not turned off",
                        "not_supported",
                    )
                return ServiceAction(state.domain, "press", state.entity_id)
            return ServiceAction(
                state.domain,
                own_service(state.domain, service),
                state.entity_id,
                data,
            )
        return ServiceAction(domain, service, state.entity_id, data)


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return sorted({str(v) for v in value}) if isinstance(value, list) else [str(value)]


_REASONS = {
    "NAME": "no exposed device is called {name}",
    "AREA": "no matching device in area {area}",
    "FLOOR": "no matching device on floor {floor}",
    "DOMAIN": "no exposed device of that kind ({domain})",
    "DEVICE_CLASS": "no exposed device of that class",
    "FEATURE": "{name} cannot do that",
    "STATE": (
        "the matching device is not in a state where that applies (e.g. not playing)"
    ),
    "ASSISTANT": "{name} is not exposed to the assistant",
    "INVALID_AREA": "there is no area {area}",
    "INVALID_FLOOR": "there is no floor {floor}",
    "DUPLICATE_NAME": (
        "several devices are called {name}: which one do you mean (in which area)?"
    ),
    "MULTIPLE_TARGETS": "several devices match: which one do you mean?",
}


def _no_match_message(
    match: intent.MatchTargetsResult, args: dict[str, Any], named_elsewhere: bool
) -> str:
    reason = match.no_match_reason.name if match.no_match_reason else "NAME"
    if reason == "NAME" and named_elsewhere:
        reason = "FEATURE"  # the device exists, but is not one this request can act on
    values = {
        key: args.get(key) or match.no_match_name or ""
        for key in ("name", "area", "floor")
    }
    values["name"] = values["name"] or "that device"
    values["domain"] = ", ".join(_list(args.get("domain")))
    return _REASONS.get(reason, "no matching exposed device").format(**values)
