"""Cloud sync in Home Assistant: the outbox's sender, state reports, status, Repairs.

The plain parts live in ``sync/``; this module runs them for one engine entry: the
sender as a background task, exposed entities' state changes into the outbox (the
latest per entity, written once a second), the commands in the receiver's answers
(through the executor), the sync status for the sensors, and the Repairs issues a
receiver that is gone (410) or refuses batches (4xx) needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import contextlib
from dataclasses import dataclass
import time
from typing import Any
from urllib.parse import urlsplit

from homeassistant.components.conversation import DOMAIN as CONVERSATION_DOMAIN
from homeassistant.components.homeassistant import async_should_expose
from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.dispatcher import (
    async_dispatcher_connect,
    async_dispatcher_send,
)
from homeassistant.helpers.instance_id import async_get as async_get_instance_id

from .action_events import TurnReport, signal_turn
from .actions.executor import ActionExecutor
from .actions.ledger import ActionLedger, LedgerError
from .cloud_remote import RemoteActions, remote_specs
from .const import (
    CONF_SYNC_MAX_EVENTS,
    CONF_SYNC_MAX_MB,
    CONF_SYNC_REMOTE_ACTIONS,
    CONF_SYNC_SECRET,
    CONF_SYNC_STATES,
    CONF_SYNC_TURNS,
    CONF_SYNC_URL,
    CONF_SYNC_WORDS,
    DEFAULT_SYNC_MAX_EVENTS,
    DEFAULT_SYNC_MAX_MB,
    DEFAULT_SYNC_STATES,
    DEFAULT_SYNC_TURNS,
    DEFAULT_SYNC_WORDS,
    DOMAIN,
    LOGGER,
    SUBENTRY_CLOUD_SYNC,
)
from .repairs import issue_id, raise_issue
from .sync.commands import VersionBook
from .sync.outbox import (
    CONVERSATION_TURN,
    STATE_CHANGED,
    Outbox,
    OutboxEvent,
    OutboxStats,
    discard_outbox,
)
from .sync.reconcile import CommandRunner
from .sync.reporter import CloudReporter
from .sync.sender import Delivery, DeliveryReport, WebhookSender

ISSUE_SYNC_GONE = "sync_gone"
ISSUE_SYNC_REFUSED = "sync_refused"
ISSUE_SYNC_MISCONFIGURED = "sync_misconfigured"
# Attributes that carry access tokens (cameras, media players' pictures).
_PRIVATE_ATTRIBUTES = frozenset(
    {"access_token", "entity_picture", "entity_picture_local"}
)
# State changes are written at most this often (the latest per entity).
STATE_FLUSH_S = 1.0


def cloud_sync_subentry(entry: ConfigEntry) -> ConfigSubentry | None:
    """Return the entry's cloud sync subentry, if sync is set up."""
    return next(
        (
            sub
            for sub in entry.subentries.values()
            if sub.subentry_type == SUBENTRY_CLOUD_SYNC
        ),
        None,
    )


def url_for_people(url: str) -> str:
    """Return the receiver's scheme and host only (a query may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def signal_sync(entry_id: str) -> str:
    """Return the dispatcher signal sent when the sync status changes."""
    return f"{DOMAIN}_{entry_id}_sync"


def new_outbox(ledger: ActionLedger, subentry: ConfigSubentry) -> Outbox:
    """Return the outbox of the ledger's file with the subentry's bounds."""
    data = subentry.data
    return Outbox(
        ledger,
        max_rows=int(data.get(CONF_SYNC_MAX_EVENTS, DEFAULT_SYNC_MAX_EVENTS)),
        max_bytes=int(data.get(CONF_SYNC_MAX_MB, DEFAULT_SYNC_MAX_MB)) * 1024 * 1024,
    )


def reports_words(subentry: ConfigSubentry) -> bool:
    """Return whether what was said goes to the cloud (the user chose it)."""
    return bool(subentry.data.get(CONF_SYNC_WORDS, DEFAULT_SYNC_WORDS))


def new_reporter(outbox: Outbox, subentry: ConfigSubentry) -> CloudReporter:
    """Return the executor's reporter: each recorded outcome's event."""
    return CloudReporter(outbox, keep_words=lambda: reports_words(subentry))


async def async_forget_cloud_sync(
    hass: HomeAssistant, entry: ConfigEntry, executor: ActionExecutor
) -> None:
    """Cloud sync was removed (or never set up): nothing more leaves the hub."""
    for kind in (ISSUE_SYNC_GONE, ISSUE_SYNC_REFUSED, ISSUE_SYNC_MISCONFIGURED):
        ir.async_delete_issue(hass, DOMAIN, issue_id(kind, entry.entry_id))
    try:
        discarded = await executor.async_on_ledger(discard_outbox, executor.ledger)
    except LedgerError as err:
        LOGGER.warning("Could not empty the cloud outbox: %s", err)
        return
    if discarded:
        LOGGER.info(
            "Cloud sync is off: %d undelivered or kept events deleted", discarded
        )


@dataclass
class SyncStatus:
    """What the sensors show."""

    state: str = "starting"  # ok, retrying, refused, disabled, starting
    last_success: float | None = None
    last_error: str | None = None
    stats: OutboxStats | None = None


class CloudSync:
    """Runs one entry's cloud sync."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry,
        subentry: ConfigSubentry,
        executor: ActionExecutor,
        outbox: Outbox,
    ) -> None:
        """Sync ``outbox`` (in ``executor``'s ledger file) as ``subentry`` says."""
        self.hass = hass
        self.entry = entry
        self.subentry = subentry
        # what it runs with (Home Assistant updates the subentry object in place)
        self.settings = dict(subentry.data)
        self.executor = executor
        self.outbox = outbox
        self.status = SyncStatus()
        self.versions = VersionBook(executor.ledger)
        self.remote = RemoteActions(
            hass,
            entry,
            executor,
            outbox,
            remote_specs(self.settings.get(CONF_SYNC_REMOTE_ACTIONS)),
            self.wake,
        )
        self.commands = CommandRunner(
            executor,
            outbox,
            self.versions,
            remote=self.remote.book,
            on_remote_result=self.remote.announce,
        )
        self._wake = asyncio.Event()
        self._states: dict[str, OutboxEvent] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._own: set[str] | None = None

    async def async_open(self) -> None:
        """Prepare the tables in the ledger's file (before the entities read them)."""
        if self.executor.error is not None:
            self._set(state="disabled", last_error=self.executor.error)
            return
        try:
            await self.executor.async_on_ledger(self.versions.open)
            await self.executor.async_on_ledger(self.remote.book.open)
            await self.executor.async_on_ledger(self.outbox.prune, time.time())
        except LedgerError as err:
            self._set(state="disabled", last_error=str(err))
            LOGGER.error("Cloud sync is off: %s", err)

    async def async_start(self) -> None:
        """Start the sender and, if chosen, the state reports."""
        # a reconfigured receiver gets a new chance
        self._clear(ISSUE_SYNC_GONE)
        if self.status.state == "disabled":
            return
        source = f"urn:gemma-edge:{await async_get_instance_id(self.hass)}"
        sender = WebhookSender(
            self.outbox,
            async_get_clientsession(self.hass),
            url=self.settings[CONF_SYNC_URL],
            secret=self.settings[CONF_SYNC_SECRET],
            source=source,
            on_ledger=self.executor.async_on_ledger,
        )
        if self.settings.get(CONF_SYNC_STATES, DEFAULT_SYNC_STATES):
            self.entry.async_on_unload(
                self.hass.bus.async_listen(EVENT_STATE_CHANGED, self._on_state)
            )
        if self.settings.get(CONF_SYNC_TURNS, DEFAULT_SYNC_TURNS):
            self.entry.async_on_unload(
                async_dispatcher_connect(
                    self.hass, signal_turn(self.entry.entry_id), self._on_turn
                )
            )
        self._sender_task = self.entry.async_create_background_task(
            self.hass,
            sender.async_run(self._wake, self._async_on_report),
            f"{DOMAIN} cloud sync",
        )
        stats = self.status.stats = await self._async_stats()
        if stats is not None and stats.pending == 0:
            # nothing waits: nothing is failing (a quiet home may send nothing for long)
            self._set(state="ok", last_success=stats.last_sent)
        await self._async_refresh_stats()

    async def _async_stats(self) -> OutboxStats | None:
        try:
            stats: OutboxStats = await self.executor.async_on_ledger(self.outbox.stats)
        except LedgerError as err:
            self.status.last_error = str(err)
            return None
        return stats

    async def async_prune(self) -> None:
        """Forget delivered and refused events older than 7 days (housekeeping)."""
        try:
            await self.executor.async_on_ledger(self.outbox.prune, time.time())
        except LedgerError as err:
            LOGGER.warning("Could not prune the cloud outbox: %s", err)

    @callback
    def wake(self) -> None:
        """Deliver now if events are due (new events were written)."""
        self._wake.set()

    async def async_sync_now(self) -> None:
        """Deliver at once, also what waits for a retry."""
        try:
            await self.executor.async_on_ledger(self.outbox.due_now)
        except LedgerError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="outbox_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        self.wake()

    @callback
    def _on_state(self, event: Event[EventStateChangedData]) -> None:
        new = event.data["new_state"]
        entity_id = event.data["entity_id"]
        if (
            self._stopped
            or new is None
            or not async_should_expose(self.hass, CONVERSATION_DOMAIN, entity_id)
            or entity_id in self._own_entities()
        ):
            return
        data = {
            "entity_id": entity_id,
            "state": new.state,
            # not the tokens of cameras' and players' picture URLs
            "attributes": {
                key: value
                for key, value in new.attributes.items()
                if key not in _PRIVATE_ATTRIBUTES
            },
            "last_changed": new.last_changed.isoformat(),
        }
        self._states[entity_id] = OutboxEvent.new(
            STATE_CHANGED, entity_id, data, new.last_updated.timestamp()
        )
        if self._flush_timer is None:
            self._flush_timer = self.hass.loop.call_later(
                STATE_FLUSH_S, self._schedule_flush
            )

    @callback
    def _on_turn(self, report: TurnReport) -> None:
        """Report a conversation turn; the words only if the user chose so."""
        if self._stopped:
            return
        data: dict[str, Any] = {
            "agent": report.agent,
            "conversation_id": report.conversation_id,
            "source": report.source,
            "language": report.language,
            "path": report.path,
            "seconds": report.seconds,
            "action_ids": list(report.action_ids),
        }
        if reports_words(self.subentry):
            data |= {"text": report.words, "answer": report.answer}
        event = OutboxEvent.new(
            CONVERSATION_TURN, report.conversation_id or report.agent, data, time.time()
        )
        self.entry.async_create_background_task(
            self.hass, self._async_append([event]), f"{DOMAIN} cloud sync turn"
        )

    async def _async_append(self, events: list[OutboxEvent]) -> None:
        try:
            await self.executor.async_on_ledger(self.outbox.append, events)
        except LedgerError as err:
            LOGGER.warning("Events not written to the cloud outbox: %s", err)
            return
        self.wake()

    @callback
    def _schedule_flush(self) -> None:
        self.entry.async_create_background_task(
            self.hass, self._async_flush(), f"{DOMAIN} cloud sync states"
        )

    async def async_stop(self) -> None:
        """Stop delivering; write the state changes still in memory (unloading).

        Runs before the ledger closes.
        """
        self._stopped = True
        if self._sender_task is not None:
            self._sender_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender_task
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            await self._async_flush()

    def _own_entities(self) -> set[str]:
        """Return this entry's entities: their sensors change with every delivery."""
        if self._own is None:
            self._own = {
                entity.entity_id
                for entity in er.async_entries_for_config_entry(
                    er.async_get(self.hass), self.entry.entry_id
                )
            }
        return self._own

    async def _async_flush(self) -> None:
        events, self._states = list(self._states.values()), {}
        self._flush_timer = None
        if events:
            await self._async_append(events)

    async def _async_on_report(self, report: DeliveryReport) -> None:
        if report.delivery is Delivery.DELIVERED:
            # an answer whose commands were not signed for the batch says so
            self._set(
                state="ok",
                last_success=self.executor.clock(),
                last_error=report.message or None,
            )
            self._clear(ISSUE_SYNC_REFUSED)
            self._clear(ISSUE_SYNC_MISCONFIGURED)
            if (await self.async_run_commands(report.commands))[1]:
                self.wake()  # new results go back at once
        elif report.delivery is Delivery.RETRY:
            error = f"{report.status or 'no answer'}: {report.message}"
            self._set(state="retrying", last_error=error)
        elif report.delivery is Delivery.MISCONFIGURED:
            self._receiver_problem("retrying", ISSUE_SYNC_MISCONFIGURED, report)
        elif report.delivery is Delivery.REFUSED:
            self._receiver_problem(
                "refused", ISSUE_SYNC_REFUSED, report, events=str(report.events)
            )
        elif report.delivery is Delivery.GONE:
            # events keep collecting (bounded; actions are never dropped) for the
            # receiver the user sets up next; removing sync deletes them
            self._set(state="disabled", last_error=f"410: {report.message}")
            raise_issue(
                self.hass,
                ISSUE_SYNC_GONE,
                self.entry.entry_id,
                title=self.entry.title,
                url=url_for_people(self.settings[CONF_SYNC_URL]),
            )
        await self._async_refresh_stats()

    async def async_run_commands(
        self, commands: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], bool]:
        """Run commands (an answer's, or pushed); return their results.

        And whether any was new (not a repeat of a command run before).
        """
        new = False
        results = []
        for command in commands:
            try:
                result = await self.commands.async_run(command)
            except Exception:
                # one bad command must not cost the others
                LOGGER.exception("Cloud command %r failed", command.get("id"))
                results.append({"command_id": command.get("id"), "status": "failed"})
                continue
            LOGGER.debug("Cloud command %s: %s", result["command_id"], result)
            results.append(result)
            new = new or (
                result["repeat"] is False
                if "repeat" in result
                else any(
                    outcome["status"] != "deduplicated"
                    for outcome in result["outcomes"]
                )
            )
        return results, new

    async def _async_refresh_stats(self) -> None:
        if (stats := await self._async_stats()) is not None:
            self.status.stats = stats
        async_dispatcher_send(self.hass, signal_sync(self.entry.entry_id))

    def _receiver_problem(
        self, state: str, kind: str, report: DeliveryReport, **placeholders: str
    ) -> None:
        """Show an answer that needs the user: the status, and a Repairs issue."""
        self._set(state=state, last_error=f"{report.status}: {report.message}")
        raise_issue(
            self.hass,
            kind,
            self.entry.entry_id,
            ir.IssueSeverity.ERROR,
            title=self.entry.title,
            status=str(report.status),
            message=report.message or "-",
            **placeholders,
        )

    def _set(self, **changes: Any) -> None:
        before = self.status.state
        for name, value in changes.items():
            setattr(self.status, name, value)
        # once when the receiver stops answering, once when it is back
        if self.status.state == "retrying" and before != "retrying":
            LOGGER.info(
                "Cloud sync: the receiver cannot take events (%s); they wait in the"
                " outbox",
                self.status.last_error,
            )
        elif before == "retrying" and self.status.state == "ok":
            LOGGER.info("Cloud sync: the receiver takes events again")

    def _clear(self, kind: str) -> None:
        ir.async_delete_issue(self.hass, DOMAIN, issue_id(kind, self.entry.entry_id))
