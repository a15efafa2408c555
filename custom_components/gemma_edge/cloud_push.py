"""The entry's webhook for commands the cloud pushes (instead of waiting for a batch).

Home Assistant's webhook component serves ``/api/webhook/<id>``; it answers 200 when a
handler raises, so every refusal is answered here: 401 (signature or timestamp), 400
(not a command list), 409 (a replayed ``webhook-id``), 413 (too large), 422 (an invalid
command; then none runs). Accepted commands run like those in a batch's answer, and the
answer lists their results.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from homeassistant.components import webhook
from homeassistant.core import HomeAssistant

from .actions.ledger import LedgerError
from .cloud_sync import CloudSync
from .const import CONF_SYNC_SECRET, CONF_SYNC_WEBHOOK_ID, DOMAIN, LOGGER
from .sync.push import MAX_PUSH_BYTES, PushLog, PushRefused, accepted_commands
from .sync.sender import read_body


class CommandWebhook:
    """Receives one entry's pushed commands."""

    def __init__(self, hass: HomeAssistant, sync: CloudSync) -> None:
        """Serve ``sync``'s webhook id; commands run through ``sync``."""
        self.hass = hass
        self.sync = sync
        self.webhook_id: str | None = sync.settings.get(CONF_SYNC_WEBHOOK_ID)
        self.log = PushLog(sync.executor.ledger)
        self._registered = False

    async def async_register(self) -> None:
        """Register the webhook, if Home Assistant serves webhooks here."""
        if not self.webhook_id or "webhook" not in self.hass.config.components:
            LOGGER.debug("No webhook for pushed cloud commands (webhook is not set up)")
            return
        try:
            await self.sync.executor.async_on_ledger(self.log.open)
        except LedgerError as err:
            LOGGER.warning("Pushed cloud commands are off: %s", err)
            return
        webhook.async_register(
            self.hass,
            DOMAIN,
            f"{self.sync.entry.title} cloud commands",
            self.webhook_id,
            self._async_handle,
            allowed_methods=["POST"],
        )
        self._registered = True

    def unregister(self) -> None:
        """Stop receiving pushes (unloading)."""
        if self._registered and self.webhook_id:
            webhook.async_unregister(self.hass, self.webhook_id)
            self._registered = False

    async def _async_handle(
        self, hass: HomeAssistant, webhook_id: str, request: web.Request
    ) -> web.Response:
        try:
            commands = await self._async_accept(request)
        except PushRefused as err:
            LOGGER.debug("Pushed commands refused (%s): %s", err.status, err.message)
            return web.json_response({"error": err.message}, status=err.status)
        except LedgerError as err:
            return web.json_response({"error": str(err)}, status=503)
        results, _new = await self.sync.async_run_commands(commands)
        self.sync.wake()  # the results go back at once
        return web.json_response({"results": results})

    async def _async_accept(self, request: web.Request) -> list[dict[str, Any]]:
        """Return the push's commands, or raise PushRefused (or LedgerError)."""
        body, whole = await read_body(request.content, MAX_PUSH_BYTES)
        if not whole:
            raise PushRefused(413, f"a push is at most {MAX_PUSH_BYTES} bytes")
        now = time.time()
        message_id, commands = accepted_commands(
            self.sync.settings[CONF_SYNC_SECRET], dict(request.headers), body, now
        )
        if not await self.sync.executor.async_on_ledger(
            self.log.first_time, message_id, now
        ):
            raise PushRefused(409, f"{message_id} was received before")
        return commands
