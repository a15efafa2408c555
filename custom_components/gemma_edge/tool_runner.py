"""Run the model's tool calls.

Assist intents become service actions through the idempotent executor. Every Assist
intent that acts on entities (HassTurnOn, HassFanSetSpeed, HassSetVolumeRelative, ...)
is resolved to exposed entities by ``intent_targets`` and runs as one ServiceAction per
entity. Other tools that change something (scripts, broadcasts, timers, lists, media
search) run through the executor as one-shot actions: at most once per key. Tools that
only read go to Home Assistant's LLM API directly. Other APIs' tools, which may do
either, run once per turn (a retry never runs them twice) and again, without a
question, when asked again.
"""

from __future__ import annotations

import json
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import intent, llm

from .actions.describe import spoken_outcome, spoken_summary
from .actions.executor import RESULT_PREFIX, ActionExecutor
from .actions.intents import ONE_SHOT_INTENTS, SEARCH_AND_PLAY
from .actions.outcomes import ActionOutcome, ActionRequest
from .actions.policy import SensitivePolicy
from .actions.records import ServiceAction
from .actions.turns import is_affirmation
from .camera_vision import CameraVision
from .cloud_remote import RemoteActions
from .const import LOGGER
from .engine.images import PreparedImage
from .engine.prompt_budget import compact_live_context
from .intent_targets import IntentTargets, TargetError, is_resolved_intent
from .sync.remote_actions import RemoteActionError

CONFIRM_ARGUMENT = "confirm"
# Our own read-only tool: a snapshot of an exposed camera, shown to
# the model in the next step.
LOOK_TOOL = "LookAtCamera"
# Home Assistant's tools that only read (the rest of its intents and
# every script change something).
READ_ONLY_TOOLS = frozenset(
    {
        "GetLiveContext",
        "GetDateTime",
        "HassGetState",
        "HassGetWeather",
        "HassClimateGetTemperature",
        "HassGetCurrentDate",
        "HassGetCurrentTime",
        "HassTimerStatus",
        "HassNevermind",
        "HassRespond",
        "todo_get_items",
        "calendar_get_events",
        "HassShoppingListLastItems",
    }
)


def is_action_tool(hass: HomeAssistant, tool: llm.Tool) -> bool:
    """Return whether the tool is known to change something.

    Such tools run through the executor as one-shot actions (at most once per key, a
    quick repeat and sensitive ones confirmed) and get the ``confirm`` argument:
    scripts, Assist's acting intents, timers, lists, broadcasts, intent scripts.
    """
    tool = _unwrapped(tool)
    name = tool.name
    if name in READ_ONLY_TOOLS or name == LOOK_TOOL:
        return False
    if isinstance(tool, llm.ActionTool):
        return True
    if not isinstance(tool, llm.IntentTool):
        return False
    handler = hass.data.get(intent.DATA_KEY, {}).get(name)
    return (
        name in ONE_SHOT_INTENTS
        or is_resolved_intent(hass, name)
        or isinstance(handler, intent.ServiceIntentHandler)
        # intent_script: runs the user's actions
        or type(handler).__name__ == "ScriptIntentHandler"
    )


def is_read_tool(hass: HomeAssistant, tool: llm.Tool) -> bool:
    """Return whether the tool is known only to read.

    Home Assistant's context, calendar, to-do and question intents: they pass straight
    through, as often as asked.
    """
    tool = _unwrapped(tool)
    if tool.name in READ_ONLY_TOOLS or isinstance(tool, _READ_TOOL_CLASSES):
        return True
    return isinstance(tool, llm.IntentTool) and not is_action_tool(hass, tool)


_READ_TOOL_CLASSES = (
    llm.GetLiveContextTool,
    llm.GetDateTimeTool,
    llm.CalendarGetEventsTool,
    llm.TodoGetItemsTool,
)


def _unwrapped(tool: llm.Tool) -> llm.Tool:
    return tool.tool if isinstance(tool, llm.NamespacedTool) else tool


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
        user_id: str | None = None,
        sensitive_policy: SensitivePolicy,
        source: str = "conversation",
        vision: CameraVision | None = None,
        device_id: str | None = None,
        strict_names: bool = False,
        path: str = "model",
        remote: RemoteActions | None = None,
    ) -> None:
        """Start the turn: its idempotency scope, and the names the user may mean.

        ``path`` says how the calls were understood: "model", or "matcher" (Home
        Assistant's sentences); it is recorded with each action.
        """
        self.hass = hass
        self.executor = executor
        self.api = api
        self.conversation_id = conversation_id
        self.turn_text = turn_text
        self.parent_context_id = parent_context_id
        self.user_id = user_id
        self.sensitive_policy = sensitive_policy
        self.source = source
        self.path = path
        self.vision = vision
        self.remote = remote
        self._tools = {tool.name: tool for tool in api.tools}
        # What this turn did and saw: outcomes of actions, snapshots by the
        # tool call that took them.
        self.outcomes: list[ActionOutcome] = []
        self.snapshots: dict[str, tuple[str, PreparedImage]] = {}
        # Why a call acted on nothing, said to the user when the model cannot say it.
        self.notes: list[str] = []
        self.read_calls = 0
        # Calls made this turn; a model repeating one is going round in circles.
        self._made: set[str] = set()
        self.repeated_call = False
        # One turn is one scope: the same request repeated in it (by the model,
        # or by a retry of the turn seconds later) gets the same idempotency key;
        # a later turn gets new keys.
        self.scope = executor.turns.scope(source, conversation_id, turn_text)
        # A confirmation answers the question of the turn right before,
        # with the user's own "yes".
        self.confirms_scope = executor.turns.previous(source, conversation_id)
        self.affirmed = is_affirmation(turn_text)
        # names the user may mean: this turn's words and the last turns'
        # ("yes", "turn it off")
        said = f"{turn_text}\n{executor.turns.earlier_words(source, conversation_id)}"
        self.targets = IntentTargets(
            hass,
            turn_text=turn_text,
            device_id=device_id,
            strict_names=strict_names,
            said=said,
        )

    async def async_run(self, tool_input: llm.ToolInput) -> dict[str, Any]:
        """Run a tool call; the result is what the model reads (never raises)."""
        args = dict(tool_input.tool_args)
        confirmed = bool(args.pop(CONFIRM_ARGUMENT, False))
        name = tool_input.tool_name
        signature = json.dumps([name, args, confirmed], sort_keys=True, default=str)
        if signature in self._made:
            self.repeated_call = True
            return {
                "error": "repeated call",
                "error_text": (
                    "this call was already made in this turn; answer with its result"
                ),
            }
        self._made.add(signature)
        try:
            if name == LOOK_TOOL:
                self.read_calls += 1
                return await self._look(tool_input.id, args)
            if (
                self.remote is not None
                and name in self.remote.specs
                and name not in self._tools  # Home Assistant's own tool wins
            ):
                return await self._request_remote(name, args, confirmed)
            if (tool := self._tools.get(name)) is None:
                return {
                    "error": "no such tool",
                    "error_text": f"there is no tool called {name}",
                }
            if is_read_tool(self.hass, tool):
                self.read_calls += 1
                result = await self.api.async_call_tool(
                    llm.ToolInput(name, args, id=tool_input.id)
                )
                if isinstance(_unwrapped(tool), llm.GetLiveContextTool) and isinstance(
                    live := result.get("result"), str
                ):
                    result = {**result, "result": compact_live_context(live)}
                return result
            # With more than one LLM API, Assist's intents are "assist__HassTurnOn".
            base = _unwrapped(tool).name
            if base == SEARCH_AND_PLAY:
                # Resolved to one exposed player, then played by HA's handler.
                self.targets.resolve(base, args)
            elif isinstance(_unwrapped(tool), llm.IntentTool) and is_resolved_intent(
                self.hass, base
            ):
                return await self._run_intent(base, args, confirmed)
            # A tool of another API may act or only read: a retry of the turn never
            # runs it twice, a new request runs it again without a question.
            outcome = await self._execute(
                self._request(
                    ServiceAction("tool", name, f"tool.{name.lower()}", args),
                    name,
                    confirmed,
                    effect=lambda: self.api.async_call_tool(
                        llm.ToolInput(name, args, id=tool_input.id)
                    ),
                    repeatable=not is_action_tool(self.hass, tool),
                )
            )
            return {"results": [outcome.for_model()]}
        except TargetError as err:
            said = f"{str(err)[:1].upper()}{str(err)[1:]}"
            if err.reason == "invalid_arguments":
                # The model's own words: not for the user.
                said = "Sorry, I could not work out how to do that"
            self.notes.append(said if said.endswith(("?", ".", "!")) else f"{said}.")
            return {
                "error": "no action taken",
                "reason": err.reason,
                "error_text": str(err),
            }
        except (HomeAssistantError, ValueError, KeyError, TypeError) as err:
            self.notes.append(f"I could not do that: {err}.")
            return {"error": type(err).__name__, "error_text": str(err)}
        except Exception as err:
            # Any other tool's bug is an answer, never a failed turn.
            LOGGER.exception("Tool %s failed", name)
            self.notes.append("Sorry, that did not work.")
            return {"error": type(err).__name__, "error_text": str(err)}

    def finish(self) -> None:
        """End the turn: a retry of it counts from now."""
        self.executor.turns.finish(self.source, self.conversation_id)

    @property
    def answers_from_outcomes(self) -> bool:
        """Whether the turn only acted (no reads).

        Then its outcomes say everything the user needs to hear.
        """
        return bool(self.outcomes or self.notes) and not self.read_calls

    def spoken(self, language: str) -> str:
        """Return what this turn did, as sentences in the user's language."""
        sentences = []
        for outcome in self.outcomes:
            action = outcome.action
            if action.domain == "tool":
                # Home Assistant's own answer for timers, lists, scripts.
                executed = outcome.status.value == "executed"
                said = (
                    outcome.message.removeprefix("done: ")
                    if outcome.message.startswith("done: ")
                    else "Done."
                )
                sentences.append(
                    said
                    if executed
                    else spoken_outcome(
                        f"tool.{outcome.tool}",
                        self._tool_name(outcome.tool),
                        outcome.status.value,
                        outcome.message,
                        language,
                    )
                )
                continue
            state = self.hass.states.get(action.entity_id)
            name = state.name if state is not None else action.entity_id
            if action.domain == "remote":
                name = action.service.replace("_", " ")
            sentences.append(
                spoken_outcome(
                    f"{action.domain}.{action.service}",
                    name,
                    outcome.status.value,
                    outcome.message,
                    language,
                    action.data,
                )
            )
        return spoken_summary([*sentences, *self.notes], language)

    def _tool_name(self, tool: str) -> str:
        """Return a tool's name for people.

        A script's friendly name ("Morning Routine").
        """
        state = self.hass.states.get(f"script.{tool}")
        return state.name if state is not None else tool.replace("_", " ")

    async def _execute(self, request: ActionRequest) -> ActionOutcome:
        outcome = await self.executor.async_execute(request)
        self.outcomes.append(outcome)
        if outcome.message.startswith(RESULT_PREFIX):
            # A script answered with data: the model says it.
            self.read_calls += 1
        return outcome

    async def _request_remote(
        self, name: str, args: dict[str, Any], confirmed: bool
    ) -> dict[str, Any]:
        """Queue a remote action for the cloud; a retried turn queues it once."""
        assert self.remote is not None
        remote = self.remote
        try:
            remote.check(name, args)
        except RemoteActionError as err:
            return {"error": "invalid arguments", "error_text": str(err)}
        outcome = await self._execute(
            self._request(
                ServiceAction("remote", name, f"remote.{name}", args),
                name,
                confirmed,
                effect=lambda: remote.async_request(name, args, self.conversation_id),
            )
        )
        return {"results": [outcome.for_model()]}

    async def _look(self, call_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """Take the snapshot.

        The conversation shows it to the model right after this result.
        """
        if self.vision is None:
            return {"error": "this model cannot see images"}
        entity_id, image = await self.vision.async_snapshot_exposed(
            str(args.get("camera", ""))
        )
        state = self.hass.states.get(entity_id)
        name = state.name if state is not None else entity_id
        self.snapshots[call_id] = (name, image)
        return {
            "camera": name,
            "image": "the snapshot follows",
            "size": f"{image.width}x{image.height}",
        }

    def _request(
        self, action: ServiceAction, tool: str, confirmed: bool, **kwargs: Any
    ) -> ActionRequest:
        return ActionRequest(
            action=action,
            scope=self.scope,
            source=self.source,
            confirmed=confirmed and self.affirmed,
            confirms_scope=self.confirms_scope,
            conversation_id=self.conversation_id,
            parent_context_id=self.parent_context_id,
            user_id=self.user_id,
            tool=tool,
            reason=self.turn_text,
            path=self.path,
            sensitive_policy=self.sensitive_policy,
            **kwargs,
        )

    async def _run_intent(
        self, tool: str, args: dict[str, Any], confirmed: bool
    ) -> dict[str, Any]:
        """Run an intent one entity at a time through the executor.

        Exposure, policy and desired state are checked per entity.
        """
        outcomes: list[ActionOutcome] = []
        for _state, actions in self.targets.resolve(tool, args):
            for action in actions:
                outcome = await self._execute(self._request(action, tool, confirmed))
                outcomes.append(outcome)
                if outcome.status.value in (
                    "failed",
                    "rejected",
                    "needs_confirmation",
                    "indeterminate",
                ):
                    # The next step for this entity (a mode after turning on) waits.
                    break
        return {"results": [outcome.for_model() for outcome in outcomes]}
