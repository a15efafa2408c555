"""Remote actions in Home Assistant: tools for the model, results from the cloud.

The actions are defined in the cloud sync subentry. A call is checked against its
schema and queued for the cloud (``sync/remote_actions.py``); the cloud's result
arrives later as a ``remote_action.result`` command and is announced once: a
``gemma_edge_remote_action`` event (logbook), a persistent notification, and the
Remote actions sensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import time
from typing import Any

from homeassistant.components import persistent_notification
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_send

from .actions.executor import ActionExecutor
from .const import DOMAIN, LOGGER
from .engine.grammar import ToolSpec
from .sync.outbox import Outbox
from .sync.remote_actions import (
    SUCCEEDED,
    RemoteActionBook,
    RemoteActionError,
    RemoteActionSpec,
    RemoteRequest,
    check_arguments,
    parse_specs,
)

EVENT_REMOTE_ACTION = f"{DOMAIN}_remote_action"


def remote_result_sentence(data: Mapping[str, Any]) -> str:
    """Say how a remote action ended: "order groceries done: Delivery at 5 pm."."""
    name = str(data.get("action", "")).replace("_", " ")
    done = "done" if data.get("status") == SUCCEEDED else "failed"
    message = str(data.get("message") or "")
    return f"{name} {done}: {message}" if message else f"{name} {done}"


def signal_remote(entry_id: str) -> str:
    """Return the dispatcher signal sent when a remote action is requested or done."""
    return f"{DOMAIN}_{entry_id}_remote"


def remote_specs(raw: Any) -> list[RemoteActionSpec]:
    """Return the subentry's remote actions; none (logged) if they are invalid."""
    try:
        return parse_specs(raw)
    except RemoteActionError as err:
        # the subentry flow refuses invalid ones; this is a hand-edited file
        LOGGER.error("Remote actions are off: %s", err)
        return []


class RemoteActions:
    """One entry's remote actions."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        executor: ActionExecutor,
        outbox: Outbox,
        specs: list[RemoteActionSpec],
        wake: Callable[[], None],
    ) -> None:
        """Offer ``specs``; requests go to ``outbox`` and ``wake`` the sender."""
        self.hass = hass
        self.entry = entry
        self.executor = executor
        self.book = RemoteActionBook(executor.ledger, outbox)
        self.specs = {spec.name: spec for spec in specs}
        self._wake = wake
        self._warned: set[str] = set()

    def tool_specs(self, taken: set[str]) -> list[ToolSpec]:
        """Return the model's tools, one per remote action.

        Not one named like a tool in ``taken``: a script exposed as a tool wins.
        """
        specs = []
        for spec in self.specs.values():
            if spec.name in taken:
                if spec.name not in self._warned:
                    self._warned.add(spec.name)
                    LOGGER.warning(
                        "Remote action %s is not offered: a tool of that name exists",
                        spec.name,
                    )
                continue
            specs.append(
                ToolSpec(spec.name, spec.description, spec.parameters, spec.parameters)
            )
        return specs

    def check(self, name: str, arguments: dict[str, Any]) -> None:
        """Raise RemoteActionError if the call's arguments do not fit."""
        check_arguments(self.specs[name], arguments)

    async def async_request(
        self, name: str, arguments: dict[str, Any], conversation_id: str | None
    ) -> None:
        """Queue the request for the cloud (the executor records it as done)."""
        request_id = await self.executor.async_on_ledger(
            self.book.request, name, arguments, conversation_id, time.time()
        )
        LOGGER.debug("Remote action %s requested: %s", name, request_id)
        self._wake()
        async_dispatcher_send(self.hass, signal_remote(self.entry.entry_id))

    @callback
    def announce(self, request: RemoteRequest) -> None:
        """Tell the user and the dashboards the cloud's result (once per request)."""
        name = request.action.replace("_", " ")
        self.hass.bus.async_fire(
            EVENT_REMOTE_ACTION,
            {
                "request_id": request.request_id,
                "action": request.action,
                "arguments": request.arguments,
                "status": request.status,
                "message": request.message,
                "result": request.result,
                "conversation_id": request.conversation_id,
            },
        )
        done = "done" if request.status == SUCCEEDED else "failed"
        persistent_notification.async_create(
            self.hass,
            request.message or f"{name.capitalize()}: {done}.",
            title=f"{name.capitalize()}: {done}",
            notification_id=f"{DOMAIN}_remote_{request.request_id}",
        )
        async_dispatcher_send(self.hass, signal_remote(self.entry.entry_id))
