"""Delivery of the outbox to the cloud: signed CloudEvents batches over HTTPS.

One batch at a time, oldest first: ``application/cloudevents-batch+json``, Standard
Webhooks headers (the ``webhook-id`` is derived from the batch's event ids, so a retry
carries the same id). 2xx acknowledges the batch; its body may carry reconciliation
commands, run only if the answer is signed with the same secret and the batch's id;
408, 429, 5xx, timeouts and network errors retry with capped exponential
backoff and full jitter, honouring ``Retry-After``; 401, 403, 404, 405 and redirects
(never followed) retry the same way but say the URL or secret is wrong; 410 stops sync;
any other 4xx dead-letters the batch. Nothing is marked sent before a 2xx. Plain
Python (aiohttp, no Home Assistant).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
import enum
import hashlib
import json
import logging
import random
import time
from typing import Any

import aiohttp

from .outbox import Outbox, StoredEvent
from .signing import SignatureError, headers, verify

CONTENT_TYPE = "application/cloudevents-batch+json"
TIMEOUT_S = 20.0
BACKOFF_START_S = 5.0
BACKOFF_CAP_S = 600.0
# A Retry-After further away than this is read as this (a misconfigured receiver).
RETRY_AFTER_CAP_S = 24 * 3600.0
# With nothing due, look again at least this often (a clock change, a missed wake-up).
IDLE_WAIT_S = 60.0
# An answer is read up to this size (commands fit; a runaway body does not fill memory).
MAX_ANSWER_BYTES = 1024 * 1024
# Answers that say the URL or the secret is wrong: not the batch's fault.
_MISCONFIGURED = frozenset({401, 403, 404, 405})
_LOGGER = logging.getLogger(__name__)


class Delivery(enum.StrEnum):
    """What one delivery attempt ended in."""

    NOTHING = "nothing"  # no event due
    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver or the network failed; the batch waits
    # 401, 403, 404, 405 or a redirect: the URL or the secret is wrong; the batch waits
    MISCONFIGURED = "misconfigured"
    REFUSED = "refused"  # a 4xx: the batch is dead-lettered
    GONE = "gone"  # 410: the receiver is gone; sync stops


@dataclass(frozen=True)
class DeliveryReport:
    """The outcome of one attempt, for the sync status and Repairs."""

    delivery: Delivery
    events: int = 0
    status: int | None = None
    message: str = ""
    retry_at: float | None = None
    commands: tuple[dict[str, Any], ...] = ()
    # Commands of an answer that was not signed for this batch: not run.
    ignored_commands: int = 0


def cloud_event(stored: StoredEvent, source: str, epoch: str) -> dict[str, Any]:
    """Return a stored event as a CloudEvent 1.0 (JSON).

    ``outboxepoch`` (an extension attribute) names the outbox the ``sequence``
    counts in: a new ledger file starts counting again under a later epoch.
    """
    event = stored.event
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": event.type,
        "subject": event.subject,
        "time": datetime.fromtimestamp(event.time, tz=UTC).isoformat(),
        "sequence": f"{stored.seq:020d}",
        "outboxepoch": epoch,
        "datacontenttype": "application/json",
        "data": event.data,
    }


def batch_id(batch: Sequence[StoredEvent]) -> str:
    """Return the batch's ``webhook-id``: the same events give the same id."""
    digest = hashlib.sha256("\n".join(s.event.id for s in batch).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def retry_after_s(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or a date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


class WebhookSender:
    """Delivers the outbox of one hub to one URL."""

    def __init__(
        self,
        outbox: Outbox,
        session: aiohttp.ClientSession,
        *,
        url: str,
        secret: str,
        source: str,
        on_ledger: Callable[..., Awaitable[Any]],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        """Deliver ``outbox`` to ``url``.

        ``on_ledger`` runs the outbox's calls on the ledger's thread.
        """
        self.outbox = outbox
        self.session = session
        self.url = url
        self.secret = secret
        self.source = source
        self.on_ledger = on_ledger
        self.clock = clock
        self.rng = rng or random.Random()
        self.timeout_s = timeout_s
        self._epoch: str | None = None

    async def async_deliver_once(self) -> DeliveryReport:
        """Send the oldest due batch and settle it by the answer."""
        now = self.clock()
        batch: list[StoredEvent] = await self.on_ledger(self.outbox.next_batch, now)
        if not batch:
            return DeliveryReport(Delivery.NOTHING)
        if self._epoch is None:
            self._epoch = str(await self.on_ledger(self.outbox.epoch))
        epoch = self._epoch
        body = json.dumps(
            [cloud_event(stored, self.source, epoch) for stored in batch],
            separators=(",", ":"),
            default=str,
        ).encode()
        # The receiver checks the timestamp against its clock: always the wall clock.
        message_id = batch_id(batch)
        signed = headers(self.secret, message_id, int(time.time()), body)
        seqs = [stored.seq for stored in batch]
        try:
            async with self.session.post(
                self.url,
                data=body,
                headers={**signed, "content-type": CONTENT_TYPE},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                # a redirect would turn the POST into a GET elsewhere, or send the
                # signed events to another host: never followed
                allow_redirects=False,
            ) as response:
                status = response.status
                raw, whole = await read_body(response.content, MAX_ANSWER_BYTES)
                text = raw.decode(errors="replace")
                retry_after = retry_after_s(response.headers.get("Retry-After"), now)
                location = response.headers.get("Location", "")
                answer_headers = dict(response.headers)
        except (TimeoutError, aiohttp.ClientError) as err:
            message = str(err) or type(err).__name__
            return await self._retry(batch, seqs, None, message, None)
        if 200 <= status < 300:
            await self.on_ledger(self.outbox.acknowledge, seqs, self.clock())
            commands = _commands(text) if whole else []
            problem = (
                self._answer_problem(message_id, answer_headers, raw)
                if commands
                else None
            )
            if not whole:
                problem = f"the answer is over {MAX_ANSWER_BYTES} bytes"
                _LOGGER.warning("Ignoring the cloud's answer: %s", problem)
            if problem is not None:
                _LOGGER.warning(
                    "Ignoring %d cloud commands: the answer is not signed for the"
                    " batch (%s)",
                    len(commands),
                    problem,
                )
            return DeliveryReport(
                Delivery.DELIVERED,
                len(batch),
                status,
                message=f"commands ignored: {problem}" if problem else "",
                commands=() if problem else tuple(commands),
                ignored_commands=len(commands) if problem else 0,
            )
        if status in (408, 429) or status >= 500:
            return await self._retry(batch, seqs, status, text[:200], retry_after)
        if status in _MISCONFIGURED or 300 <= status < 400:
            message = f"redirects to {location}" if location else text[:200]
            return await self._retry(
                batch, seqs, status, message, retry_after, Delivery.MISCONFIGURED
            )
        if status == 410:
            return DeliveryReport(Delivery.GONE, len(batch), status, text[:200])
        await self.on_ledger(self.outbox.dead_letter, seqs, self.clock())
        return DeliveryReport(Delivery.REFUSED, len(batch), status, text[:200])

    def _answer_problem(
        self, message_id: str, answer_headers: dict[str, str], raw: bytes
    ) -> str | None:
        """Return why an answer's commands cannot be trusted, or None.

        The receiver signs its answer like the hub signs its batch, with the batch's
        ``webhook-id``: commands from anyone else on the path, or an old answer
        replayed, do not run.
        """
        try:
            answered = verify(self.secret, answer_headers, raw, time.time())
        except SignatureError as err:
            return str(err)
        if answered != message_id:
            return f"signed for {answered}, not {message_id}"
        return None

    async def async_run(
        self,
        wake: asyncio.Event,
        on_report: Callable[[DeliveryReport], Awaitable[None]],
    ) -> None:
        """Deliver until cancelled or the receiver is gone.

        Batch after batch while events are due; then wait until the oldest is due
        again, or until ``wake`` is set (new events, "sync now").
        """
        while True:
            wake.clear()
            try:
                report = await self.async_deliver_once()
                await on_report(report)
                if report.delivery is Delivery.GONE:
                    return
                if report.delivery is Delivery.DELIVERED:
                    continue  # the next batch at once
                due = await self.on_ledger(self.outbox.next_due)
            except asyncio.CancelledError:
                raise
            except Exception:
                # a failing ledger or a bug: never a dead loop that looks alive
                _LOGGER.exception("Cloud sync delivery failed; trying again later")
                due = None
            delay = IDLE_WAIT_S if due is None else due - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(delay, IDLE_WAIT_S))

    def backoff_s(self, attempts: int, retry_after: float | None = None) -> float:
        """Return the wait before the next attempt.

        Full jitter under a capped exponential ceiling; a longer Retry-After wins.
        """
        ceiling = min(BACKOFF_CAP_S, BACKOFF_START_S * 2 ** max(attempts, 0))
        delay = self.rng.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after is not None else delay

    async def _retry(
        self,
        batch: Sequence[StoredEvent],
        seqs: list[int],
        status: int | None,
        message: str,
        retry_after: float | None,
        delivery: Delivery = Delivery.RETRY,
    ) -> DeliveryReport:
        attempts = max(stored.attempts for stored in batch)
        retry_at = self.clock() + self.backoff_s(attempts, retry_after)
        await self.on_ledger(self.outbox.retry_later, seqs, retry_at)
        return DeliveryReport(delivery, len(batch), status, message, retry_at)


async def read_body(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Read a whole body, up to ``limit`` bytes; return it and whether it was whole.

    (``StreamReader.read(n)`` returns what has arrived so far, not the whole body.)
    """
    chunks: list[bytes] = []
    total = 0
    async for chunk in stream.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def _commands(text: str) -> list[dict[str, Any]]:
    """Return the reconciliation commands of a 2xx answer (none if it has none)."""
    try:
        body = json.loads(text) if text.strip() else {}
    except ValueError as err:
        _LOGGER.warning("The cloud's answer is not JSON; no commands run: %s", err)
        return []
    commands = body.get("commands") if isinstance(body, dict) else None
    if not isinstance(commands, list):
        return []
    return [command for command in commands if isinstance(command, dict)]
