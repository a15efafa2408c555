"""What is asked of the executor, and what it answers.

``ActionRequest``: an action, who asks, how it was understood, its idempotency scope or
key. ``ActionOutcome``: what happened, as the model, the event bus, the ledger and the
cloud read it. Plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
import time
from typing import Any

from .ledger import IN_PROGRESS, LedgerRecord
from .policy import SensitivePolicy
from .records import NO_ENTITY_DOMAINS, ActionKind, ActionStatus, ServiceAction


@dataclass(frozen=True)
class ActionRequest:
    """An action some source wants done."""

    action: ServiceAction
    scope: str  # requests in one scope with the same action share a key
    source: str  # conversation, ai_task, service, cloud
    # A caller's own idempotency key (a cloud command's id).
    key: str | None = None
    # The user confirmed (the model's flag and the user's own "yes") an action
    # asked about in the scope ``confirms_scope`` (the turn right before this
    # one); nothing else can confirm.
    confirmed: bool = False
    confirms_scope: str | None = None
    # The user confirmed it outside a conversation (a cloud command's
    # "confirmed_by_user"): a sensitive action needs no question here.
    confirmed_elsewhere: bool = False
    conversation_id: str | None = None
    parent_context_id: str | None = None
    # The Home Assistant user who asked (permissions, logbook).
    user_id: str | None = None
    tool: str = ""
    reason: str = ""
    # How the request was understood: "matcher" (Home Assistant's sentences) or
    # "model"; "" for requests that were not understood from words (cloud, services).
    path: str = ""
    # The asking agent's; default: the executor's.
    sensitive_policy: SensitivePolicy | None = None
    # An effect that is not a service call on one entity (a script tool, a
    # broadcast): it runs as a one-shot action through the same ledger, in
    # place of ``HomePort.call``.
    effect: Callable[[], Coroutine[Any, Any, Any]] | None = field(
        default=None, compare=False
    )
    # A one-shot effect that may run again in a new turn without confirmation (a tool
    # not known to act); within its scope it still runs at most once.
    repeatable: bool = False


@dataclass(frozen=True)
class ActionOutcome:
    """What happened, for the model, the event bus and the dashboards."""

    key: str
    action_id: str
    status: ActionStatus
    message: str
    action: ServiceAction
    source: str
    kind: ActionKind
    conversation_id: str | None = None
    tool: str = ""
    reason: str = ""
    created_at: float = field(default_factory=time.time)
    path: str = ""

    @classmethod
    def of_request(
        cls,
        request: ActionRequest,
        key: str,
        action_id: str,
        status: ActionStatus,
        message: str,
        *,
        action: ServiceAction,
        kind: ActionKind,
        created_at: float,
    ) -> ActionOutcome:
        """Return the outcome of ``request``: who asked, how and why come from it."""
        return cls(
            key,
            action_id,
            status,
            message,
            action,
            request.source,
            kind,
            request.conversation_id,
            request.tool,
            request.reason,
            created_at,
            request.path,
        )

    def as_event(self, *, with_words: bool = True) -> dict[str, Any]:
        """Return the documented fields of the action's event (bus and cloud).

        ``reason`` (the user's words) is None unless ``with_words``.
        """
        action = self.action
        return {
            "key": self.key,
            "action_id": self.action_id or None,
            "tool": self.tool,
            "service": f"{action.domain}.{action.service}",
            "entity_ids": (
                [] if action.domain in NO_ENTITY_DOMAINS else [action.entity_id]
            ),
            "data": action.data,
            "status": self.status.value,
            "message": self.message,
            "kind": self.kind.value,
            "conversation_id": self.conversation_id,
            "source": self.source,
            "path": self.path or None,
            "reason": self.reason if with_words else None,
        }

    def for_model(self) -> dict[str, Any]:
        """Return what the model reads of the outcome: entity, status and message."""
        return {
            "entity_id": self.action.entity_id,
            "status": self.status.value,
            "message": self.message,
        }

    @classmethod
    def from_record(cls, record: LedgerRecord) -> ActionOutcome:
        """Return the outcome a ledger record holds.

        An unfinished one reads as indeterminate.
        """
        request = record.request
        status = (
            ActionStatus.INDETERMINATE
            if record.status == IN_PROGRESS
            else ActionStatus(record.status)
        )
        return cls(
            record.key,
            record.action_id,
            status,
            str(record.outcome.get("message", "")),
            ServiceAction(**request["action"]),
            request.get("source", ""),
            ActionKind(record.kind),
            request.get("conversation_id"),
            request.get("tool", ""),
            request.get("reason", ""),
            record.created_at,
            request.get("path", ""),
        )
