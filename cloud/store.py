"""NATS JetStream: the event log (one stream) and the key-value buckets.

Every event is published with ``Nats-Msg-Id`` = its CloudEvent id, so the stream's
duplicate window (2 hours) drops an event the hub sends again. Key-value records are
JSON, changed by compare-and-set on the key's revision.
"""

from __future__ import annotations

from collections.abc import Callable
import copy
from dataclasses import dataclass
import json
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from .events import HubEvent

STREAM = "GEMMA_EDGE"
EVENTS_SUBJECTS = "gemma_edge.events.>"
# longer than the hub retries a batch it could not get acknowledged (it keeps events
# 7 days; RELIABILITY.md asks for at least 72 hours)
DUPLICATE_WINDOW_S = 7 * 24 * 3600.0
SHADOW_BUCKET = "gemma_edge_shadow"
REMOTE_BUCKET = "gemma_edge_remote"
# A remote action's record outlives any redelivery of its request by far.
REMOTE_TTL_S = 30 * 24 * 3600.0
# JetStream: "stream name already in use with a different configuration".
_STREAM_CONFIG_DIFFERS = 10058
_CAS_ATTEMPTS = 50

Record = dict[str, Any]
_LOGGER = logging.getLogger(__name__)


class ConflictError(Exception):
    """A record kept changing under a compare-and-set update."""


@dataclass
class CloudStore:
    """A NATS connection with the stream and the two buckets ready."""

    nc: NATS
    js: JetStreamContext
    shadow: KeyValue
    remote: KeyValue

    async def publish(self, event: HubEvent) -> bool:
        """Log an event; return False when the stream already had its id."""
        ack = await self.js.publish(
            event.log_subject,
            event.raw,
            headers={
                "Nats-Msg-Id": event.id,
                "Content-Type": "application/cloudevents+json",
            },
        )
        return not ack.duplicate

    @property
    def max_payload(self) -> int:
        """Return the largest message the server takes."""
        return self.nc.max_payload

    async def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Return the keys of a bucket under ``prefix`` (``hub`` -> ``hub.*``)."""
        root = f"$KV.{bucket}."
        pattern = f"{root}{prefix}.>" if prefix else f"{root}>"
        info = await self.js.stream_info(f"KV_{bucket}", subjects_filter=pattern)
        subjects = info.state.subjects or {}
        return sorted(subject[len(root) :] for subject in subjects)

    async def close(self) -> None:
        """Close the connection (every publish was acknowledged already)."""
        await self.nc.close()


async def connect(url: str, *, timeout_s: float = 5.0, **options: Any) -> CloudStore:
    """Connect to NATS and create the stream and buckets where missing."""
    options.setdefault("error_cb", _log_error)
    nc = await nats.connect(url, **options)
    try:
        js = nc.jetstream(timeout=timeout_s)
        await ensure_stream(js)
        shadow = await ensure_bucket(js, SHADOW_BUCKET, None)
        remote = await ensure_bucket(js, REMOTE_BUCKET, REMOTE_TTL_S)
    except BaseException:
        await nc.close()
        raise
    return CloudStore(nc, js, shadow, remote)


async def _log_error(err: Exception) -> None:
    """Log a connection problem in one line (nats-py logs a traceback by default)."""
    _LOGGER.warning("NATS: %r", err)


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the event stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=STREAM,
        description="Gemma Edge hub events (CloudEvents, deduplicated on their id)",
        subjects=[EVENTS_SUBJECTS],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(config)
    except BadRequestError as err:
        if err.err_code != _STREAM_CONFIG_DIFFERS:
            raise
        await js.update_stream(config)


async def ensure_bucket(
    js: JetStreamContext, bucket: str, ttl: float | None
) -> KeyValue:
    """Return a key-value bucket, created if missing."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            bucket=bucket, ttl=ttl, storage=StorageType.FILE
        )


async def get_json(kv: KeyValue, key: str) -> tuple[Record | None, int]:
    """Return a record and its revision (None, 0 when there is none)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    value = json.loads(entry.value) if entry.value else None
    return (value if isinstance(value, dict) else None), entry.revision or 0


async def update_json(
    kv: KeyValue, key: str, change: Callable[[Record | None], Record | None]
) -> Record | None:
    """Change a record by compare-and-set; return what is stored afterwards.

    ``change`` gets a copy of the record (None: none yet) and returns the new one, or
    None to leave it. It may run more than once when another writer wins a race.
    """
    for _ in range(_CAS_ATTEMPTS):
        current, revision = await get_json(kv, key)
        new = change(copy.deepcopy(current))
        if new is None or new == current:
            return current
        value = json.dumps(new, sort_keys=True).encode()
        try:
            if revision:
                await kv.update(key, value, last=revision)
            else:
                await kv.create(key, value)
        except KeyWrongLastSequenceError:
            continue
        return new
    raise ConflictError(f"{key} kept changing; giving up")
