"""Home Assistant LLM tools as engine ToolSpecs.

Their names are constrained to what is exposed. Small models invent names; the grammar
built from these specs only lets them write the names of entities, areas and floors
exposed to Assist, so a call can always be matched.
"""

from __future__ import annotations

from typing import Any

from voluptuous_openapi import convert

from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.components.homeassistant import async_should_expose
from homeassistant.core import HomeAssistant
from homeassistant.helpers import (
    area_registry as ar,
    entity_registry as er,
    floor_registry as fr,
    llm,
)

from .actions.intents import FREE_NAME_INTENTS
from .camera_vision import exposed_cameras
from .engine.grammar import ToolSpec
from .intent_targets import intent_domains
from .tool_runner import CONFIRM_ARGUMENT, LOOK_TOOL, is_action_tool

CONFIRM_SCHEMA = {
    "type": "boolean",
    "description": (
        "true only when the user has just confirmed this action after you asked"
    ),
}

# Tool parameters whose values name an exposed thing, by the kind of thing they name.
_NAMED_PARAMETERS = {
    "name": "entities",
    "area": "areas",
    "floor": "floors",
    "domain": "domains",
    "device_class": "device_classes",
}
_TARGET_PARAMETERS = ("name", "area", "floor")


def exposed_names(hass: HomeAssistant) -> dict[str, list[str]]:
    """Return the sorted names (and aliases) the model may use.

    Those of exposed entities, and of all areas and floors.
    """
    entity_registry = er.async_get(hass)
    entities: set[str] = set()
    domains: set[str] = set()
    device_classes: set[str] = set()
    by_domain: dict[str, set[str]] = {}
    for state in hass.states.async_all():
        if not async_should_expose(hass, CONVERSATION_DOMAIN, state.entity_id):
            continue
        names = {state.name}
        domains.add(state.domain)
        if isinstance(device_class := state.attributes.get("device_class"), str):
            device_classes.add(device_class)
        if (entry := entity_registry.async_get(state.entity_id)) is not None:
            names.update(alias for alias in entry.aliases if isinstance(alias, str))
        entities.update(names)
        by_domain.setdefault(state.domain, set()).update(names)
    areas = {a.name for a in ar.async_get(hass).async_list_areas()}
    areas.update(
        alias for a in ar.async_get(hass).async_list_areas() for alias in a.aliases
    )
    floors = {f.name for f in fr.async_get(hass).async_list_floors()}
    return {
        "entities": sorted(n for n in entities if n),
        "areas": sorted(n for n in areas if n),
        "floors": sorted(n for n in floors if n),
        "domains": sorted(domains),
        "device_classes": sorted(device_classes),
        **{
            f"entities:{domain}": sorted(n for n in names if n)
            for domain, names in by_domain.items()
        },
    }


def _constrain(
    schema: dict[str, Any],
    names: dict[str, list[str]],
    *,
    free_name: bool = False,
    targeted: bool = True,
    domains: set[str] | None = None,
) -> dict[str, Any]:
    """Give name-like parameters the enum of what exists.

    Optional ones that name nothing that exists are dropped. ``free_name``: the tool's
    ``name`` is not a device's (a timer's). ``targeted``: a call that can target by
    name, area or floor must name one of them. ``domains``: the intent acts only on
    these domains, so only their devices' names are offered.
    """
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    required = set(schema.get("required") or [])
    constrained = dict(properties)
    for key, kind in _NAMED_PARAMETERS.items():
        spec = properties.get(key)
        if not isinstance(spec, dict) or (free_name and key == "name"):
            continue
        is_list = spec.get("type") == "array" and isinstance(spec.get("items"), dict)
        target = spec["items"] if is_list else spec
        if target.get("type") != "string":
            continue
        allowed = names[kind]
        if kind == "entities" and domains:
            allowed = sorted(
                {n for domain in domains for n in names.get(f"entities:{domain}", [])}
            )
        elif kind == "domains" and domains:
            allowed = [domain for domain in allowed if domain in domains]
        if "enum" in target:
            # A fixed list (device classes): keep the values that exist here.
            allowed = [value for value in target["enum"] if value in set(allowed)]
        if not allowed:
            if key not in required:
                del constrained[key]
            continue
        constrained[key] = (
            {**spec, "items": {**target, "enum": allowed}}
            if is_list
            else {**spec, "enum": allowed}
        )
    result = {**schema, "properties": constrained}
    # A call that can target by name, area or floor must name at least one of them:
    # a bare domain ("all lights") is what HA's own prompt tells models to ask
    # about first, and a small model's favourite way to act on everything at once.
    # The runner enforces the same rule (intent_targets.py); the grammar keeps the
    # model from wasting a step. Left out when the user said "all" or speaks
    # through a satellite in an area.
    targets = [key for key in _TARGET_PARAMETERS if key in constrained]
    if targets and targeted and not free_name and not required & set(targets):
        result["anyOf"] = [{"required": [key]} for key in targets]
    return result


def _with_confirm(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        **schema,
        "properties": {
            **schema.get("properties", {}),
            CONFIRM_ARGUMENT: CONFIRM_SCHEMA,
        },
    }


def look_tool_spec(camera_names: list[str]) -> ToolSpec:
    """Return our camera tool's spec.

    The model names an exposed camera and sees its snapshot in the next step.
    """
    declared = {
        "type": "object",
        "properties": {
            "camera": {"type": "string", "description": "name of the camera"}
        },
        "required": ["camera"],
    }
    constrained = {
        **declared,
        "properties": {"camera": {"type": "string", "enum": sorted(camera_names)}},
    }
    return ToolSpec(
        LOOK_TOOL,
        "Look at a camera's current picture to answer questions about what it shows.",
        declared,
        constrained,
    )


DEVICE_TOOLS = frozenset(
    {
        "HassStartTimer",
        "HassCancelTimer",
        "HassCancelAllTimers",
        "HassIncreaseTimer",
        "HassDecreaseTimer",
        "HassPauseTimer",
        "HassUnpauseTimer",
        "HassTimerStatus",
    }
)


def tool_specs(
    hass: HomeAssistant,
    api: llm.APIInstance,
    *,
    vision: bool = False,
    targeted: bool = True,
) -> list[ToolSpec]:
    """Return ToolSpecs for every tool of the API.

    Plus the camera tool when the model sees images and cameras are exposed; sorted by
    name (a stable prompt prefix). ``targeted=False`` lets calls name only a kind of
    device (the grammar only; the prompt is the same).
    """
    names = exposed_names(hass)
    specs = []
    for tool in api.tools:
        acts = is_action_tool(hass, tool)
        # an Assist intent's own name, also when several APIs prefix it ("assist__")
        base = tool.tool.name if isinstance(tool, llm.NamespacedTool) else tool.name
        declared = convert(tool.parameters, custom_serializer=api.custom_serializer)
        constrained = _constrain(
            declared,
            names,
            free_name=base in FREE_NAME_INTENTS,
            targeted=targeted and acts,
            domains=intent_domains(hass, base),
        )
        if acts:
            declared = _with_confirm(declared)
            constrained = _with_confirm(constrained)
        # The prompt declares the plain schema (the names are in the prompt's overview
        # already); the grammar enforces the constrained one.
        specs.append(ToolSpec(tool.name, tool.description or "", declared, constrained))
    if vision and (cameras := exposed_cameras(hass)):
        specs.append(look_tool_spec(list(cameras)))
    # Timer tools are offered only to satellites that can ring: they go last,
    # after what every device shares, so that a satellite's prompt shares the
    # primed prefix up to them.
    return sorted(specs, key=lambda spec: (spec.name in DEVICE_TOOLS, spec.name))
