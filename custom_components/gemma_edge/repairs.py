"""Repairs issues for problems the user must fix.

A missing library, a bad model file, not enough memory.
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN

ISSUE_LLAMA_CPP = "llama_cpp_unavailable"
ISSUE_MODEL_INVALID = "model_invalid"
ISSUE_NOT_ENOUGH_MEMORY = "not_enough_memory"
ISSUE_LEDGER = "ledger_unavailable"
ISSUE_PROMPT_TOO_LARGE = "prompt_too_large"
ISSUE_SPEECH_UNAVAILABLE = "speech_unavailable"
ISSUE_VISION_UNAVAILABLE = "vision_unavailable"


def issue_id(kind: str, entry_id: str | None = None) -> str:
    """Return the issue id of a kind of issue, per entry when an entry id is given."""
    return f"{kind}_{entry_id}" if entry_id else kind


def raise_issue(
    hass: HomeAssistant,
    kind: str,
    entry_id: str | None,
    severity: ir.IssueSeverity = ir.IssueSeverity.ERROR,
    **placeholders: str,
) -> None:
    """Create (or refresh) a Repairs issue the user must act on."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(kind, entry_id),
        is_fixable=False,
        severity=severity,
        translation_key=kind,
        translation_placeholders=placeholders,
    )


def clear_issues(hass: HomeAssistant, entry_id: str) -> None:
    """Remove the issues of an entry that now loads fine."""
    for kind in (
        ISSUE_MODEL_INVALID,
        ISSUE_NOT_ENOUGH_MEMORY,
        ISSUE_LEDGER,
        ISSUE_VISION_UNAVAILABLE,
    ):
        ir.async_delete_issue(hass, DOMAIN, issue_id(kind, entry_id))
