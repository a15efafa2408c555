"""Run the model's tool calls: Assist intents become service actions through the idempotent executor.

Home-control intents (HassTurnOn, HassLightSet, ...) are resolved to exposed entities with Home
Assistant's own target matching and run as one ServiceAction per entity. Read-only tools go to
Home Assistant's LLM API directly. Every other tool (scripts, broadcasts, timers) runs through
the executor as a one-shot action: at most once per key.
"""

from __future__ import annotations

import hashlib
from typing import Any

from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import intent, llm

from .actions.executor import ActionExecutor, ActionOutcome, ActionRequest
from .actions.model import ServiceAction
from .actions.policy import SensitivePolicy
from .camera_vision import CameraVision
from .engine.images import PreparedImage

CONFIRM_ARGUMENT = "confirm"
# Our own read-only tool: a snapshot of an exposed camera, shown to the model in the next step.
LOOK_TOOL = "LookAtCamera"
READ_ONLY_TOOLS = frozenset(
    {
        "GetLiveContext", "GetDateTime", "HassGetState", "HassGetWeather", "HassClimateGetTemperature",
        "HassGetCurrentDate", "HassGetCurrentTime", "HassTimerStatus", "HassNevermind", "HassRespond",
        "todo_get_items", "calendar_get_events",
    }
)  # fmt: skip
_ON = {"cover": "open_cover", "valve": "open_valve", "lock": "lock", "button": "press", "input_button": "press", "vacuum": "start"}
_OFF = {"cover": "close_cover", "valve": "close_valve", "lock": "unlock", "vacuum": "return_to_base"}
_MEDIA = {
    "HassMediaPause": "media_pause", "HassMediaUnpause": "media_play", "HassMediaNext": "media_next_track",
    "HassMediaPrevious": "media_previous_track",
}  # fmt: skip
TARGET_INTENTS = frozenset(
    {"HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassSetPosition", "HassSetVolume",
     "HassVacuumStart", "HassVacuumReturnToBase", "HassClimateSetTemperature", *_MEDIA}
)  # fmt: skip


def is_action_tool(name: str) -> bool:
    """Tools that change something (they get the ``confirm`` argument)."""
    return name not in READ_ONLY_TOOLS and name != LOOK_TOOL


def _service_actions(tool: str, args: dict[str, Any], entity_id: str) -> list[ServiceAction]:
    domain = entity_id.split(".", 1)[0]
    if tool == "HassTurnOn":
        return [ServiceAction(domain, _ON.get(domain, "turn_on"), entity_id)]
    if tool == "HassTurnOff":
        return [ServiceAction(domain, _OFF.get(domain, "turn_off"), entity_id)]
    if tool == "HassToggle":
        return [ServiceAction(domain, "toggle", entity_id)]
    if tool == "HassLightSet":
        data: dict[str, Any] = {}
        if "brightness" in args:
            data["brightness_pct"] = int(args["brightness"])
        if "color" in args:
            data["color_name"] = str(args["color"])
        if "temperature" in args:
            data["color_temp_kelvin"] = int(args["temperature"])
        return [ServiceAction("light", "turn_on", entity_id, data)] if domain == "light" else []
    if tool == "HassSetPosition":
        service = "set_valve_position" if domain == "valve" else "set_cover_position"
        return [ServiceAction(domain, service, entity_id, {"position": int(args.get("position", 0))})]
    if tool == "HassSetVolume":
        return [ServiceAction(domain, "volume_set", entity_id, {"volume_level": float(args.get("volume_level", 0)) / 100})]
    if tool in _MEDIA:
        return [ServiceAction(domain, _MEDIA[tool], entity_id)]
    if tool == "HassVacuumStart":
        return [ServiceAction(domain, "start", entity_id)]
    if tool == "HassVacuumReturnToBase":
        return [ServiceAction(domain, "return_to_base", entity_id)]
    if tool == "HassClimateSetTemperature":
        return [ServiceAction(domain, "set_temperature", entity_id, {"temperature": float(args["temperature"])})]
    return []


def _as_list(value: Any) -> list[str] | None:
    """A list argument as distinct strings (models repeat items; HA would match duplicates)."""
    if value is None:
        return None
    return sorted({str(v) for v in value}) if isinstance(value, list) else [str(value)]


class ToolRunner:
    """Executes one agent's tool calls for one turn."""

    def __init__(
        self,
        hass: HomeAssistant,
        executor: ActionExecutor,
        api: llm.APIInstance,
        *,
        conversation_id: str,
        turn_text: str,
        parent_context_id: str | None,
        sensitive_policy: SensitivePolicy,
        source: str = "conversation",
        vision: CameraVision | None = None,
    ) -> None:
        self.hass = hass
        self.executor = executor
        self.api = api
        self.conversation_id = conversation_id
        self.turn_text = turn_text
        self.parent_context_id = parent_context_id
        self.sensitive_policy = sensitive_policy
        self.source = source
        self.vision = vision
        # What this turn did and saw: outcomes of actions, snapshots by the tool call that took them.
        self.outcomes: list[ActionOutcome] = []
        self.snapshots: dict[str, tuple[str, PreparedImage]] = {}
        # One turn is one scope: the same request repeated in it (by the model, or by a retried
        # turn with the same words) gets the same idempotency key.
        digest = hashlib.sha256(" ".join(turn_text.lower().split()).encode()).hexdigest()[:16]
        self.scope = f"{source}:{conversation_id}:{digest}"

    async def async_run(self, tool_input: llm.ToolInput) -> dict[str, Any]:
        """Run a tool call; the result is what the model reads (never raises)."""
        args = dict(tool_input.tool_args)
        confirmed = bool(args.pop(CONFIRM_ARGUMENT, False))
        name = tool_input.tool_name
        try:
            if name == LOOK_TOOL:
                return await self._look(tool_input.id, args)
            if name in READ_ONLY_TOOLS:
                return await self.api.async_call_tool(llm.ToolInput(name, args, id=tool_input.id))
            if name in TARGET_INTENTS:
                return await self._run_intent(name, args, confirmed)
            outcome = await self._execute(self._request(
                ServiceAction("tool", name, f"tool.{name.lower()}", args), name, confirmed,
                effect=lambda: self.api.async_call_tool(llm.ToolInput(name, args, id=tool_input.id)),
            ))  # fmt: skip
            return {"results": [outcome.for_model()]}
        except (HomeAssistantError, ValueError, KeyError, TypeError) as err:
            return {"error": type(err).__name__, "error_text": str(err)}

    async def _execute(self, request: ActionRequest) -> ActionOutcome:
        outcome = await self.executor.execute(request)
        self.outcomes.append(outcome)
        return outcome

    async def _look(self, call_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """Take the snapshot; the conversation shows it to the model right after this result."""
        if self.vision is None:
            return {"error": "this model cannot see images"}
        entity_id, image = await self.vision.async_snapshot_exposed(str(args.get("camera", "")))
        state = self.hass.states.get(entity_id)
        name = state.name if state is not None else entity_id
        self.snapshots[call_id] = (name, image)
        return {"camera": name, "image": "the snapshot follows", "size": f"{image.width}x{image.height}"}

    def _request(self, action: ServiceAction, tool: str, confirmed: bool, **kwargs: Any) -> ActionRequest:
        return ActionRequest(
            action=action, scope=self.scope, source=self.source, confirmed=confirmed,
            conversation_id=self.conversation_id, parent_context_id=self.parent_context_id, tool=tool,
            reason=self.turn_text, sensitive_policy=self.sensitive_policy, **kwargs,
        )  # fmt: skip

    async def _run_intent(self, tool: str, args: dict[str, Any], confirmed: bool) -> dict[str, Any]:
        match = intent.async_match_targets(
            self.hass,
            intent.MatchTargetsConstraints(
                name=args.get("name"),
                area_name=args.get("area"),
                floor_name=args.get("floor"),
                domains=_as_list(args.get("domain")),
                device_classes=_as_list(args.get("device_class")),
                assistant=CONVERSATION_DOMAIN,
            ),
        )
        if not match.is_match:
            reason = match.no_match_reason.value if match.no_match_reason else "no match"
            return {"error": "no matching exposed entity", "reason": reason, "name": match.no_match_name}
        outcomes: list[ActionOutcome] = []
        for state in match.states:
            actions = _service_actions(tool, args, state.entity_id)
            if not actions:
                continue
            outcomes.append(await self._execute(self._request(actions[0], tool, confirmed)))
        if not outcomes:
            return {"error": f"{tool} does not apply to the matched entities"}
        return {"results": [outcome.for_model() for outcome in outcomes]}
