"""The webhook receiver: signed CloudEvents batches in, commands out (aiohttp).

A batch is verified (Standard Webhooks, 401), checked (415, 400), logged event by
event into JetStream (deduplicated on the event id), and only then applied to the
shadow and the remote actions; the answer is ``{"commands": [...]}``, signed for the
batch's ``webhook-id`` (the hub ignores commands in an unsigned answer). When NATS
fails the answer is 503, so the hub sends the batch again: nothing is acknowledged
that is not in the log, and applying a batch twice changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
import json
import logging

from aiohttp import web
import nats.errors
from standardwebhooks import Webhook, WebhookVerificationError

from .events import (
    BATCH_CONTENT_TYPE,
    COMMAND_RESULT,
    REMOTE_ACTION_REQUESTED,
    BatchError,
    HubEvent,
    parse_batch,
)
from .remote import ACTION_TIMEOUT_S, RESULT_PREFIX, RemoteActions, RemoteExecutor
from .shadow import Shadow
from .store import CloudStore, ConflictError, Record

DEFAULT_PATH = "/hooks/gemma-edge"
# The hub sends at most 256 KiB of event data per batch (one larger event alone).
MAX_BODY_BYTES = 4 * 1024 * 1024
RETRY_AFTER_S = 5
_LOGGER = logging.getLogger(__name__)

CLOUD_KEY: web.AppKey[Cloud] = web.AppKey("cloud")


class Cloud:
    """What the receiver works with: the log, the shadow and the remote actions."""

    def __init__(
        self,
        store: CloudStore,
        secret: str,
        executor: RemoteExecutor | None = None,
        *,
        action_timeout_s: float = ACTION_TIMEOUT_S,
    ) -> None:
        """Verify with ``secret``; run remote actions with ``executor``."""
        self.store = store
        self.webhook = Webhook(secret)
        self.shadow = Shadow(store)
        self.remote = RemoteActions(store, executor, timeout_s=action_timeout_s)

    async def apply(self, events: list[HubEvent]) -> None:
        """Apply logged events to the shadow and the remote actions, in order."""
        for event in events:
            if event.type == REMOTE_ACTION_REQUESTED:
                await self.remote.request(event)
            elif event.type == COMMAND_RESULT and str(
                event.data.get("command_id", "")
            ).startswith(RESULT_PREFIX):
                await self.remote.acknowledge(event)
            else:
                await self.shadow.apply(event)

    async def commands(self, hub: str) -> list[Record]:
        """Return what the hub is to do: desired states, then remote results."""
        return [*await self.shadow.commands(hub), *await self.remote.commands(hub)]


def make_app(cloud: Cloud, path: str = DEFAULT_PATH) -> web.Application:
    """Return the aiohttp application that receives batches at ``path``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[CLOUD_KEY] = cloud
    app.router.add_post(path, receive)
    return app


async def receive(request: web.Request) -> web.Response:
    """Take one batch from a hub."""
    cloud = request.app[CLOUD_KEY]
    body = await request.read()
    try:
        cloud.webhook.verify(body, dict(request.headers), json_parse=False)
    except (WebhookVerificationError, ValueError) as err:
        # ValueError: a malformed signature header, or a body that is not UTF-8
        return web.Response(status=401, text=f"signature not verified: {err}")
    if request.content_type != BATCH_CONTENT_TYPE:
        return web.Response(status=415, text=f"send {BATCH_CONTENT_TYPE}")
    try:
        events = parse_batch(body)
    except BatchError as err:
        return web.Response(status=400, text=str(err))
    hubs = {event.hub for event in events}
    if len(hubs) > 1:
        return web.Response(status=400, text="a batch comes from one hub")
    too_big = [e.id for e in events if len(e.raw) > cloud.store.max_payload]
    if too_big:
        return web.Response(
            status=413, text=f"event {too_big[0]} is larger than the log takes"
        )
    try:
        fresh = [await cloud.store.publish(event) for event in events]
        await cloud.apply(events)
        commands = await cloud.commands(hubs.pop()) if hubs else []
    except (nats.errors.Error, TimeoutError, ConflictError) as err:
        _LOGGER.warning("Batch %s not taken: %r", request.headers["webhook-id"], err)
        return web.Response(
            status=503,
            text="the event log is unavailable; send the batch again",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    _LOGGER.info(
        "Batch %s: %d events (%d new), %d commands",
        request.headers["webhook-id"],
        len(events),
        sum(fresh),
        len(commands),
    )
    return signed_answer(cloud.webhook, request.headers["webhook-id"], commands)


def signed_answer(
    webhook: Webhook, message_id: str, commands: list[Record]
) -> web.Response:
    """Return ``{"commands": [...]}`` signed for the batch's ``webhook-id``.

    The hub runs an answer's commands only when the answer carries Standard Webhooks
    headers with the batch's id and the shared secret (no one else on the path, and
    no old answer replayed, can command it).
    """
    body = json.dumps({"commands": commands}, separators=(",", ":"))
    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook.sign(message_id, now, body),
    }
    return web.Response(text=body, content_type="application/json", headers=headers)
