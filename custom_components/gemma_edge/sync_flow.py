"""The cloud sync subentry: the receiver's URL, what to report, the outbox's bounds.

The signing secret is generated here (``whsec_...``) and shown once, when sync is
added or the secret is rotated; the receiver needs it to verify the hub's deliveries.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

import voluptuous as vol

from homeassistant.config_entries import ConfigSubentryFlow, SubentryFlowResult
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    ObjectSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .const import (
    CONF_SYNC_MAX_EVENTS,
    CONF_SYNC_MAX_MB,
    CONF_SYNC_REMOTE_ACTIONS,
    CONF_SYNC_ROTATE_SECRET,
    CONF_SYNC_SECRET,
    CONF_SYNC_STATES,
    CONF_SYNC_TURNS,
    CONF_SYNC_URL,
    CONF_SYNC_WEBHOOK_ID,
    CONF_SYNC_WORDS,
    DEFAULT_SYNC_MAX_EVENTS,
    DEFAULT_SYNC_MAX_MB,
    DEFAULT_SYNC_STATES,
    DEFAULT_SYNC_TURNS,
    DEFAULT_SYNC_WORDS,
    DOMAIN,
    SUBENTRY_CLOUD_SYNC,
)
from .sync.remote_actions import RemoteActionError, parse_specs
from .sync.signing import new_secret

SYNC_DEFAULTS: dict[str, Any] = {
    CONF_SYNC_STATES: DEFAULT_SYNC_STATES,
    CONF_SYNC_TURNS: DEFAULT_SYNC_TURNS,
    CONF_SYNC_WORDS: DEFAULT_SYNC_WORDS,
    CONF_SYNC_MAX_EVENTS: DEFAULT_SYNC_MAX_EVENTS,
    CONF_SYNC_MAX_MB: DEFAULT_SYNC_MAX_MB,
}


def url_problem(url: str) -> str | None:
    """Return why the URL cannot receive the hub's events, or None.

    https, or plain http to this machine or the local network only.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return "invalid_url"
    if parts.scheme not in ("http", "https") or not host:
        return "invalid_url"
    if parts.scheme == "https":
        return None
    if host == "localhost" or host.endswith(".local"):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "insecure_url"
    return None if address.is_private or address.is_loopback else "insecure_url"


class CloudSyncSubentryFlow(ConfigSubentryFlow):
    """Add or change cloud sync; the secret is shown once."""

    def __init__(self) -> None:
        """Start with no answers."""
        self._data: dict[str, Any] = {}

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Ask for the receiver; one cloud sync per hub.

        The hub is one CloudEvents source with one sequence: a second engine's sync
        would report the same devices again under the same source.
        """
        if self.source == "user" and any(
            sub.subentry_type == SUBENTRY_CLOUD_SYNC
            for entry in self.hass.config_entries.async_entries(DOMAIN)
            for sub in entry.subentries.values()
        ):
            return self.async_abort(reason="already_configured")
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            try:
                parse_specs(user_input.get(CONF_SYNC_REMOTE_ACTIONS))
            except RemoteActionError as err:
                errors[CONF_SYNC_REMOTE_ACTIONS] = "invalid_remote_actions"
                placeholders["error"] = str(err)
            if problem := url_problem(user_input[CONF_SYNC_URL]):
                errors[CONF_SYNC_URL] = problem
            if not errors:
                current = (
                    {}
                    if self.source == "user"
                    else self._get_reconfigure_subentry().data
                )
                rotate = bool(user_input.pop(CONF_SYNC_ROTATE_SECRET, False))
                self._data = {
                    **user_input,
                    CONF_SYNC_URL: user_input[CONF_SYNC_URL].strip(),
                    CONF_SYNC_MAX_EVENTS: int(user_input[CONF_SYNC_MAX_EVENTS]),
                    CONF_SYNC_MAX_MB: int(user_input[CONF_SYNC_MAX_MB]),
                    CONF_SYNC_SECRET: current.get(CONF_SYNC_SECRET) or new_secret(),
                    # where the cloud may push commands (Home Assistant's webhooks)
                    CONF_SYNC_WEBHOOK_ID: current.get(CONF_SYNC_WEBHOOK_ID)
                    or secrets.token_hex(16),
                }
                if rotate:
                    self._data[CONF_SYNC_SECRET] = new_secret()
                if rotate or not current:
                    return await self.async_step_secret()
                return self._async_save()
        suggested = user_input or (
            SYNC_DEFAULTS
            if self.source == "user"
            else {**SYNC_DEFAULTS, **self._get_reconfigure_subentry().data}
        )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(self._schema(), suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    async_step_reconfigure = async_step_user

    async def async_step_secret(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Show the new secret once; saved when the user has copied it."""
        if user_input is not None:
            return self._async_save()
        return self.async_show_form(
            step_id="secret",
            data_schema=vol.Schema({}),
            description_placeholders={
                "secret": self._data[CONF_SYNC_SECRET],
                "webhook_path": f"/api/webhook/{self._data[CONF_SYNC_WEBHOOK_ID]}",
            },
        )

    def _async_save(self) -> SubentryFlowResult:
        if self.source == "user":
            return self.async_create_entry(title="Cloud sync", data=self._data)
        return self.async_update_and_abort(
            self._get_entry(), self._get_reconfigure_subentry(), data=self._data
        )

    def _schema(self) -> vol.Schema:
        fields: dict[vol.Marker, Any] = {
            vol.Required(CONF_SYNC_URL): TextSelector(
                TextSelectorConfig(type=TextSelectorType.URL)
            ),
            vol.Required(CONF_SYNC_STATES): BooleanSelector(),
            vol.Optional(
                CONF_SYNC_TURNS, default=DEFAULT_SYNC_TURNS
            ): BooleanSelector(),
            vol.Optional(
                CONF_SYNC_WORDS, default=DEFAULT_SYNC_WORDS
            ): BooleanSelector(),
            vol.Required(CONF_SYNC_MAX_EVENTS): NumberSelector(
                NumberSelectorConfig(
                    min=100, max=1_000_000, step=100, mode=NumberSelectorMode.BOX
                )
            ),
            vol.Required(CONF_SYNC_MAX_MB): NumberSelector(
                NumberSelectorConfig(
                    min=1,
                    max=1024,
                    step=1,
                    mode=NumberSelectorMode.BOX,
                    unit_of_measurement="MB",
                )
            ),
        }
        fields[vol.Optional(CONF_SYNC_REMOTE_ACTIONS)] = ObjectSelector()
        if self.source != "user":
            fields[vol.Optional(CONF_SYNC_ROTATE_SECRET, default=False)] = (
                BooleanSelector()
            )
        return vol.Schema(fields)
