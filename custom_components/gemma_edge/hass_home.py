"""Home Assistant as the executor's HomePort.

States, exposure, service calls and waits for a state.
"""

from __future__ import annotations

import asyncio

from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.components.homeassistant import async_should_expose
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import (
    Context,
    Event,
    EventStateChangedData,
    HomeAssistant,
    callback,
)
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util.ulid import ulid_now

from .actions.policy import expected_state_holds
from .actions.records import TARGET_KEYS, EntityState, ServiceAction


class HassHome:
    """The executor's view of Home Assistant."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Act on this Home Assistant instance."""
        self.hass = hass

    def state(self, entity_id: str) -> EntityState | None:
        """Return the entity's current state, or None if it does not exist."""
        state = self.hass.states.get(entity_id)
        return (
            None if state is None else EntityState(state.state, dict(state.attributes))
        )

    def is_exposed(self, entity_id: str) -> bool:
        """Return whether the entity is exposed to Assist (the agent may act on it)."""
        return async_should_expose(self.hass, CONVERSATION_DOMAIN, entity_id)

    def new_action_id(self) -> str:
        """Return a fresh ULID (the service call's context id)."""
        return ulid_now()

    async def async_call(
        self,
        action: ServiceAction,
        action_id: str,
        parent_context_id: str | None,
        user_id: str | None,
    ) -> None:
        """Call the service and wait for it.

        The action's ULID is the context id (the recorder keeps ULIDs only), the
        requesting user its user: the logbook names them, and Home Assistant refuses an
        entity that user may not control.
        """
        # the action's own entity only: no key of its data may aim elsewhere
        data = {k: v for k, v in action.data.items() if k not in TARGET_KEYS}
        await self.hass.services.async_call(
            action.domain,
            action.service,
            {**data, ATTR_ENTITY_ID: action.entity_id},
            blocking=True,
            context=Context(id=action_id, parent_id=parent_context_id, user_id=user_id),
        )

    async def wait_for_state(self, action: ServiceAction, timeout_s: float) -> bool:
        """Return True once the entity shows the action's target state.

        Slow devices get ``timeout_s`` seconds; False if it is not shown by then.
        """
        current = self.state(action.entity_id)
        if current is not None and expected_state_holds(action, current):
            return True
        if timeout_s <= 0:
            return False
        reached = asyncio.Event()

        @callback
        def changed(event: Event[EventStateChangedData]) -> None:
            new = event.data["new_state"]
            if new is not None and expected_state_holds(
                action, EntityState(new.state, dict(new.attributes))
            ):
                reached.set()

        remove = async_track_state_change_event(self.hass, action.entity_id, changed)
        try:
            async with asyncio.timeout(timeout_s):
                await reached.wait()
        except TimeoutError:
            return False
        else:
            return True
        finally:
            remove()
