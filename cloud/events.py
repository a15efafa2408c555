"""The hub's batches: CloudEvents 1.0 in JSON batch mode, checked and named.

A batch (``application/cloudevents-batch+json``) is a JSON array of events in the
structured JSON format. The CloudEvents SDK (2.2) has no batch reader, so the array
is split here and each event is read and validated by the SDK's JSON format.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import re
from typing import Any

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
HUB_SOURCE_PREFIX = "urn:gemma-edge:"
TYPE_PREFIX = "gemma_edge."

ACTION_PERFORMED = "gemma_edge.action.performed"
ACTION_INDETERMINATE = "gemma_edge.action.indeterminate"
STATE_CHANGED = "gemma_edge.state.changed"
CONVERSATION_TURN = "gemma_edge.conversation.turn"
COMMAND_RESULT = "gemma_edge.command.result"
REMOTE_ACTION_REQUESTED = "gemma_edge.remote_action.requested"
GAP = "gemma_edge.gap"

ENTITY_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
# Printable ASCII without spaces: safe as a NATS header value.
_EVENT_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")
_SEQUENCE = re.compile(r"^[0-9]{1,20}$")
_FORMAT = JSONFormat()
_REQUIRED = ("specversion", "id", "source", "type")


class BatchError(ValueError):
    """A body that is not a batch of the hub's CloudEvents."""


@dataclass(frozen=True)
class HubEvent:
    """One event of a batch, validated."""

    id: str
    hub: str
    type: str
    subject: str | None
    time: str | None
    sequence: int | None
    data: dict[str, Any]
    raw: bytes
    # the hub's outbox the sequence counts in (a new ledger file starts again)
    epoch: str = ""

    @property
    def position(self) -> tuple[str, int] | None:
        """Return where the event stands in the hub's history (None: unknown).

        Epochs are ULIDs: a later outbox sorts after, whatever its sequence.
        """
        return None if self.sequence is None else (self.epoch, self.sequence)

    @property
    def log_subject(self) -> str:
        """Return the NATS subject: ``gemma_edge.events.<hub>.<type>``."""
        kind = self.type.removeprefix(TYPE_PREFIX)
        tokens = [token_of(part) for part in kind.split(".")]
        return ".".join(["gemma_edge.events", self.hub, *tokens])


def token_of(text: str) -> str:
    """Return ``text`` as one NATS subject token (letters, digits, ``_``, ``-``)."""
    return _NOT_TOKEN.sub("_", text) or "_"


def hub_id(source: str) -> str:
    """Return the hub's id (a subject token) from ``urn:gemma-edge:<id>`` or the id."""
    return token_of(source.removeprefix(HUB_SOURCE_PREFIX))


def parse_batch(body: bytes) -> list[HubEvent]:
    """Return the events of a batch body, or raise BatchError."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise BatchError(f"the body is not JSON: {err}") from err
    if not isinstance(items, list):
        raise BatchError("a batch is a JSON array of CloudEvents")
    return [_event(index, item) for index, item in enumerate(items)]


def _event(index: int, item: Any) -> HubEvent:
    if not isinstance(item, dict):
        raise BatchError(f"event {index} is not a JSON object")
    # the SDK would make up a missing id or specversion: a batch must carry them
    if missing := [name for name in _REQUIRED if name not in item]:
        raise BatchError(f"event {index} has no {', '.join(missing)}")
    raw = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        event = _FORMAT.read(CloudEvent, raw)
    except (BaseCloudEventException, ValueError, TypeError, AttributeError) as err:
        raise BatchError(f"event {index} is not a CloudEvent 1.0: {err}") from err
    event_id, source = event.get_id(), event.get_source()
    if not _EVENT_ID.match(event_id):
        raise BatchError(f"event {index}: the id is not printable ASCII")
    if not source.startswith(HUB_SOURCE_PREFIX) or source == HUB_SOURCE_PREFIX:
        raise BatchError(f"event {index}: the source is not {HUB_SOURCE_PREFIX}<id>")
    data = event.get_data()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BatchError(f"event {index}: data is not a JSON object")
    sequence = item.get("sequence")
    if sequence is not None and not (
        isinstance(sequence, str) and _SEQUENCE.match(sequence)
    ):
        raise BatchError(f"event {index}: sequence is not a decimal counter")
    time = item.get("time")
    return HubEvent(
        id=event_id,
        hub=hub_id(source),
        type=event.get_type(),
        subject=event.get_subject(),
        time=time if isinstance(time, str) else None,
        sequence=int(sequence) if sequence is not None else None,
        data=data,
        raw=raw,
        epoch=epoch if isinstance(epoch := item.get("outboxepoch"), str) else "",
    )
