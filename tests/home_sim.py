"""A small simulated home for the executor's plain-Python tests (Home Assistant glue is tested with hass)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
import itertools
from typing import Any

from custom_components.gemma_edge.actions.records import EntityState, ServiceAction
from custom_components.gemma_edge.actions.policy import expected_state_holds

_ids = itertools.count()


@dataclass
class SimHome:
    states: dict[str, EntityState] = field(default_factory=dict)
    exposed: set[str] = field(default_factory=set)
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    hang: set[str] = field(default_factory=set)  # entities whose services never answer
    broken: set[str] = field(default_factory=set)  # entities whose services raise
    lazy: set[str] = field(default_factory=set)  # entities that never reach the target state

    def state(self, entity_id: str) -> EntityState | None:
        return self.states.get(entity_id)

    def is_exposed(self, entity_id: str) -> bool:
        return entity_id in self.exposed

    def new_action_id(self) -> str:
        return f"01SIM{next(_ids):021d}"

    async def async_call(self, action: ServiceAction, action_id: str, parent_context_id: str | None, user_id: str | None) -> None:
        self.calls[(action.domain, action.service, action.entity_id)] += 1
        if action.entity_id in self.hang:
            await asyncio.sleep(3600)
        if action.entity_id in self.broken:
            raise RuntimeError("device offline")
        if action.entity_id not in self.lazy:
            self.apply(action)

    def apply(self, action: ServiceAction) -> None:
        current = self.states[action.entity_id]
        attrs: dict[str, Any] = dict(current.attributes)
        target = current.state
        if action.service in ("turn_on", "turn_off"):
            target = "on" if action.service == "turn_on" else "off"
            if "brightness" in action.data:
                attrs["brightness"] = action.data["brightness"]
        elif action.service in ("lock", "unlock"):
            target = "locked" if action.service == "lock" else "unlocked"
        elif action.service == "volume_set":
            attrs["volume_level"] = action.data["volume_level"]
        self.states[action.entity_id] = EntityState(target, attrs)

    async def wait_for_state(self, action: ServiceAction, timeout_s: float) -> bool:
        state = self.states.get(action.entity_id)
        return bool(state and expected_state_holds(action, state))
