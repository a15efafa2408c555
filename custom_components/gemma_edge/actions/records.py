"""Action data types shared by the normaliser, the policy and the executor."""

from __future__ import annotations

from dataclasses import dataclass, field
import enum
import hashlib
import json
from typing import Any

# Service data keys that choose what a call acts on: an action acts on its own entity
# only, so these never pass in its data.
TARGET_KEYS = frozenset({"entity_id", "area_id", "device_id", "floor_id", "label_id"})
# Actions on no entity: another API's tool ("tool"), a remote action for the cloud
# ("remote").
NO_ENTITY_DOMAINS = frozenset({"tool", "remote"})


class ActionStatus(enum.StrEnum):
    """Outcome of one action (the ``status`` of a ``gemma_edge_action`` event)."""

    EXECUTED = "executed"
    UNCONFIRMED = "unconfirmed"  # called, but the expected state was not seen in time
    NO_OP = "no_op"
    DEDUPLICATED = "deduplicated"
    NEEDS_CONFIRMATION = "needs_confirmation"
    REJECTED = "rejected"
    FAILED = "failed"
    INDETERMINATE = "indeterminate"
    # A one-shot call (a long script) started and still running; never repeated.
    RUNNING = "running"


class ActionKind(enum.StrEnum):
    """How an action may be repeated."""

    # Absolute target state: verifiable, harmless to re-check.
    DESIRED_STATE = "desired_state"
    ONE_SHOT = "one_shot"  # acts each time it runs: at most once per key, never retried


@dataclass(frozen=True)
class EntityState:
    """What the executor needs to know of an entity's current state."""

    state: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceAction:
    """One concrete service call on one entity."""

    domain: str
    service: str
    entity_id: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> str:
        """Stable hash of what the action does (not who asked)."""
        text = json.dumps(
            [self.domain, self.service, self.entity_id, self.data],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """Return the action as recorded for people: service, entity and data."""
        return {
            "service": f"{self.domain}.{self.service}",
            "entity_id": self.entity_id,
            "data": self.data,
        }


def derive_key(scope: str, action: ServiceAction) -> str:
    """Return the idempotency key.

    The same action in the same scope gets the same key.
    """
    return hashlib.sha256(f"{scope}\n{action.signature}".encode()).hexdigest()[:32]
