"""A ready dashboard of an engine, built from Home Assistant's own cards.

``gemma_edge.get_dashboard`` returns it with the entity ids the user's home has (they
follow the entry's title and the user's renames): pasted into a new dashboard's raw
configuration editor, it shows the model's status and last turn, today's actions, the
questions waiting for an answer, the activity calendar, speech and vision usage and
cloud sync. ``dashboards/gemma_edge.yaml`` is this dashboard for an entry titled
"Gemma 4 E4B" with cloud sync and remote actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from .const import DOMAIN, engine_unique_id

# The engine's entities by the key their unique id ends with, and their platform.
ENGINE_ENTITIES = {
    "model_status": "sensor",
    "turns_today": "sensor",
    "actions_today": "sensor",
    "last_action": "sensor",
    "waiting_confirmation": "sensor",
    "agent_activity": "calendar",
    "sync_status": "sensor",
    "sync_pending": "sensor",
    "sync_last_delivery": "sensor",
    "remote_actions": "sensor",
}

# Attribute rows: (attribute, name, suffix).
LAST_TURN = [
    ("last_turn_path", "Path", ""),
    ("last_turn_s", "Turn took", "s"),
    ("last_turn_actions", "Actions", ""),
]
# The model's last generation step: a turn the sentences understood has none.
LAST_STEP = [
    ("prompt_tokens", "Prompt tokens", ""),
    ("reused_tokens", "Reused from cache", ""),
    ("evaluated_tokens", "Evaluated", ""),
    ("completion_tokens", "Generated", ""),
    ("time_to_first_token_s", "Time to first token", "s"),
    ("decode_tokens_per_s", "Generation speed", "tokens/s"),
]
USAGE = [
    ("matcher", "Home Assistant's sentences", ""),
    ("model", "The model", ""),
    ("transcriptions", "Speech transcribed", ""),
    ("speech_seconds", "Seconds of speech", "s"),
    ("images", "Images looked at", ""),
]
ACTIONS_BY_STATUS = [
    ("executed", "Done"),
    ("no_op", "Already so"),
    ("needs_confirmation", "Asked to confirm"),
    ("rejected", "Refused"),
    ("failed", "Failed"),
    ("indeterminate", "Unknown outcome"),
    ("unconfirmed", "Not confirmed by the device"),
    ("deduplicated", "Repeats ignored"),
    ("running", "Still running"),
]


# Markdown cards (Home Assistant renders their templates); ENTITY is the entity id.
LAST_ACTION = """\
{%- set a = states['ENTITY'] -%}
{%- if a is none or a.state in ('unknown', 'unavailable') -%}
No action yet.
{%- else -%}
{%- set ago = relative_time(as_datetime(a.attributes.time)) -%}
{%- set how = {'matcher': "Home Assistant's sentences", 'model': 'the model'} -%}
{%- set path = how.get(a.attributes.path, a.attributes.path) -%}
**{{ a.state }}**, {{ ago }} ago{{ ' (understood by ' ~ path ~ ')' if path }}
{%- if a.attributes.reason %}

Asked: *{{ a.attributes.reason }}*
{%- endif %}
{%- set earlier = (a.attributes.recent or [])[1:] %}
{%- if earlier %}

Before that:
{%- for r in earlier %}
- {{ as_timestamp(r.time) | timestamp_custom('%H:%M') }} {{ r.sentence }}
{%- endfor %}
{%- endif %}
{%- endif %}
"""
WAITING = """\
{%- for a in state_attr('ENTITY', 'actions') or [] %}
- {{ a.sentence }}: say yes in that conversation by
  {{ as_timestamp(a.expires_at) | timestamp_custom('%H:%M') }}
{%- else %}
Nothing is waiting.
{%- endfor %}
"""
REMOTE_ACTIONS = """\
{%- for a in state_attr('ENTITY', 'recent') or [] %}
- {{ a.action }}: {{ a.status }}
  {%- if a.message %} ({{ a.message }}){% endif %}
{%- else %}
No remote action requested yet.
{%- endfor %}
"""


def entry_entities(hass: HomeAssistant, entry: ConfigEntry) -> dict[str, str]:
    """Return the entity ids of the engine's entities that exist, by key."""
    registry = er.async_get(hass)
    found = {}
    for key, platform in ENGINE_ENTITIES.items():
        unique_id = engine_unique_id(entry.entry_id, key)
        if entity_id := registry.async_get_entity_id(platform, DOMAIN, unique_id):
            found[key] = entity_id
    return found


def dashboard_config(title: str, entities: Mapping[str, str]) -> dict[str, Any]:
    """Return a dashboard (one sections view) of the engine with these entities."""
    sections = [
        _section("Model", _model_cards(entities)),
        _section("Actions", _action_cards(entities)),
    ]
    if "agent_activity" in entities:
        calendar = {
            "type": "calendar",
            "entities": [entities["agent_activity"]],
            "initial_view": "listWeek",
            "grid_options": {"columns": "full"},
        }
        sections.append(_section("Activity", [calendar], column_span=2))
    if sync_cards := [
        _tile(entities[key], name)
        for key, name in (
            ("sync_status", "Cloud sync"),
            ("sync_pending", "Events waiting for the cloud"),
            ("sync_last_delivery", "Last delivery"),
        )
        if key in entities
    ]:
        if remote := entities.get("remote_actions"):
            sync_cards += [
                _tile(remote, "Remote actions waiting"),
                _markdown("Remote actions", REMOTE_ACTIONS, remote),
            ]
        sections.append(_section("Cloud sync", sync_cards))
    view = {
        "title": title,
        "path": "gemma",
        "icon": "mdi:robot-happy-outline",
        "type": "sections",
        "max_columns": 4,
        "sections": sections,
    }
    return {"title": title, "views": [view]}


def _section(
    heading: str, cards: list[dict[str, Any]], column_span: int = 1
) -> dict[str, Any]:
    return {
        "type": "grid",
        **({"column_span": column_span} if column_span > 1 else {}),
        "cards": [{"type": "heading", "heading": heading}, *cards],
    }


def _tile(entity_id: str, name: str) -> dict[str, Any]:
    """Return a tile as wide as its section, named by what it shows (not its device)."""
    return {
        "type": "tile",
        "entity": entity_id,
        "name": name,
        "grid_options": {"columns": "full"},
    }


def _attribute_rows(
    entity_id: str, rows: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    return [
        {
            "type": "attribute",
            "entity": entity_id,
            "attribute": attribute,
            "name": name,
            **({"suffix": suffix} if suffix else {}),
        }
        for attribute, name, suffix in rows
    ]


def _model_cards(entities: Mapping[str, str]) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    if status := entities.get("model_status"):
        cards += [
            _tile(status, "Model"),
            {
                "type": "entities",
                "title": "Last turn",
                "entities": _attribute_rows(status, LAST_TURN),
            },
            {
                "type": "entities",
                "title": "Last model step",
                "entities": _attribute_rows(status, LAST_STEP),
            },
        ]
    if turns := entities.get("turns_today"):
        cards += [
            _tile(turns, "Turns today"),
            {
                "type": "entities",
                "title": "Speech and vision today",
                "entities": _attribute_rows(turns, USAGE),
            },
        ]
    return cards


def _action_cards(entities: Mapping[str, str]) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = []
    if today := entities.get("actions_today"):
        rows = [(status, name, "") for status, name in ACTIONS_BY_STATUS]
        cards += [
            _tile(today, "Actions today"),
            {
                "type": "entities",
                "title": "Actions today by outcome",
                "entities": _attribute_rows(today, rows),
            },
        ]
    if last := entities.get("last_action"):
        cards.append(_markdown("Last action", LAST_ACTION, last))
    if waiting := entities.get("waiting_confirmation"):
        cards += [
            _tile(waiting, "Waiting for confirmation"),
            _markdown("Waiting for your confirmation", WAITING, waiting),
        ]
    return cards


def _markdown(title: str, template: str, entity_id: str) -> dict[str, Any]:
    content = template.replace("ENTITY", entity_id)
    return {"type": "markdown", "title": title, "content": content}
