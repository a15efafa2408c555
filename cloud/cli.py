"""The command line: ``python -m cloud [--nats URL] serve | desire | shadow | push``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import contextlib
from datetime import UTC, datetime
import json
import logging
import os
import signal
import sys
import time
from typing import Any, TextIO
import uuid

import aiohttp
from aiohttp import web
import nats.errors
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from .events import ENTITY_ID, hub_id
from .receiver import DEFAULT_PATH, Cloud, make_app
from .remote import ACTION_TIMEOUT_S, RemoteActions
from .shadow import Shadow, in_sync
from .store import CloudStore, connect

DEFAULT_NATS = "nats://127.0.0.1:4222"
SECRET_ENV = "GEMMA_EDGE_SECRET"


class UsageError(ValueError):
    """Arguments that do not make a command."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the three commands."""
    parser = argparse.ArgumentParser(
        prog="python -m cloud", description="Gemma Edge's reference cloud side."
    )
    parser.add_argument(
        "--nats",
        default=os.environ.get("GEMMA_EDGE_NATS", DEFAULT_NATS),
        help=f"NATS server URL (default {DEFAULT_NATS}, or $GEMMA_EDGE_NATS)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="receive the hubs' batches")
    serve.add_argument(
        "--secret", help=f"the hub's whsec_... signing secret (or ${SECRET_ENV})"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--path", default=DEFAULT_PATH)
    serve.add_argument(
        "--action-timeout", type=float, default=ACTION_TIMEOUT_S, metavar="SECONDS"
    )
    desire = commands.add_parser(
        "desire",
        help="set an entity's desired state",
        description="[hub] entity_id [state] [key=value ...]; values are JSON when"
        " they parse as JSON, else text. The hub may be left out when there is one.",
    )
    desire.add_argument("words", nargs="+", metavar="ARG")
    desire.add_argument(
        "--confirmed",
        action="store_true",
        help="the user confirmed it (a lock, alarm, valve, garage door or gate)",
    )
    desire.add_argument(
        "--expires-in", type=float, metavar="SECONDS", help="the hub refuses it after"
    )
    shadow = commands.add_parser("shadow", help="print a hub's shadow as JSON")
    shadow.add_argument("hub", nargs="?")
    push = commands.add_parser(
        "push",
        help="push a hub's pending commands to its webhook now",
        description="POST the commands a batch's answer would carry, signed, to the"
        " hub's command webhook (https://<home assistant>/api/webhook/<id>).",
    )
    push.add_argument("hub", nargs="?")
    push.add_argument("--url", required=True, help="the hub's command webhook")
    push.add_argument(
        "--secret", help=f"the hub's whsec_... signing secret (or ${SECRET_ENV})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return the exit status."""
    return asyncio.run(async_main(argv))


async def async_main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run a command in a running event loop; return the exit status."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        if args.command == "serve":
            return await serve(args)
        store = await connect(
            args.nats,
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=1,
        )
        try:
            if args.command == "desire":
                return await desire(store, args, out)
            if args.command == "push":
                return await push(store, args, out)
            return await show_shadow(store, args.hub, out)
        finally:
            await store.close()
    except UsageError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    except (nats.errors.Error, OSError) as err:
        sys.stderr.write(f"NATS at {args.nats}: {err!r}\n")
        return 1


async def serve(args: argparse.Namespace) -> int:
    """Receive batches until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise UsageError(f"give the hub's signing secret (--secret or ${SECRET_ENV})")
    store = await connect(args.nats, max_reconnect_attempts=-1, reconnect_time_wait=1.0)
    runner: web.AppRunner | None = None
    try:
        try:
            cloud = Cloud(store, secret, action_timeout_s=args.action_timeout)
        except (ValueError, EmptyWebhookSecretError) as err:
            raise UsageError(f"the secret is not whsec_<base64>: {err}") from err
        runner = web.AppRunner(make_app(cloud, args.path))
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        logging.getLogger(__name__).info(
            "Receiving at http://%s:%d%s", args.host, args.port, args.path
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await store.close()
    return 0


async def desire(store: CloudStore, args: argparse.Namespace, out: TextIO) -> int:
    """Set a desired state; print its version."""
    hub, entity_id, state, attributes = parse_desire(args.words)
    shadow = Shadow(store)
    hub = await resolve_hub(shadow, hub)
    expires_at = time.time() + args.expires_in if args.expires_in else None
    version = await shadow.set_desired(
        hub,
        entity_id,
        state,
        attributes,
        confirmed_by_user=args.confirmed,
        expires_at=expires_at,
    )
    out.write(f"{version}\n")
    return 0


async def show_shadow(store: CloudStore, hub: str | None, out: TextIO) -> int:
    """Print a hub's shadow, what it would be told, and its remote actions."""
    shadow = Shadow(store)
    hub = await resolve_hub(shadow, hub)
    entities = await shadow.entities(hub)
    for record in entities.values():
        record["in_sync"] = in_sync(record)
    remote = RemoteActions(store)
    document = {
        "hub": hub,
        "entities": entities,
        "commands": [*await shadow.commands(hub), *await remote.commands(hub)],
        "remote_actions": await remote.records(hub),
    }
    out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


async def push(store: CloudStore, args: argparse.Namespace, out: TextIO) -> int:
    """Push a hub's pending commands to its webhook; print the hub's answer."""
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise UsageError(f"give the hub's signing secret (--secret or ${SECRET_ENV})")
    shadow = Shadow(store)
    hub = await resolve_hub(shadow, args.hub)
    commands = [*await shadow.commands(hub), *await RemoteActions(store).commands(hub)]
    if not commands:
        out.write("nothing to push\n")
        return 0
    body = json.dumps({"commands": commands}, separators=(",", ":")).encode()
    signed = signing_headers(secret, f"msg_{uuid.uuid4().hex}", body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            args.url,
            data=body,
            headers={**signed, "content-type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
            allow_redirects=False,
        ) as response,
    ):
        answer = await response.text()
    out.write(f"{response.status} {answer}\n")
    return 0 if response.status == 200 else 1


def signing_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """Return the Standard Webhooks headers of a body signed now."""
    try:
        webhook = Webhook(secret)
    except (ValueError, EmptyWebhookSecretError) as err:
        raise UsageError(f"the secret is not whsec_<base64>: {err}") from err
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook.sign(message_id, now, body.decode()),
    }


def parse_desire(
    words: Sequence[str],
) -> tuple[str | None, str, str | None, dict[str, Any]]:
    """Return hub (None: left out), entity id, state (None: none) and attributes."""
    rest = list(words)
    hub = rest.pop(0) if rest and "." not in rest[0] else None
    if not rest or not ENTITY_ID.match(rest[0]):
        raise UsageError("desire [hub] entity_id [state] [key=value ...]")
    entity_id = rest.pop(0)
    state = rest.pop(0) if rest and "=" not in rest[0] else None
    attributes: dict[str, Any] = {}
    for word in rest:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{word!r} is not key=value")
        attributes[key] = parse_value(text)
    return hub, entity_id, state, attributes


def parse_value(text: str) -> Any:
    """Return ``text`` as JSON when it is JSON (128, true, [255, 0, 0]), else text."""
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


async def resolve_hub(shadow: Shadow, hub: str | None) -> str:
    """Return the hub named, or the only one there is."""
    if hub is not None:
        return hub_id(hub)
    hubs = await shadow.hubs()
    if len(hubs) != 1:
        known = ", ".join(hubs) or "none has sent anything yet"
        raise UsageError(f"name the hub ({known})")
    return hubs[0]
