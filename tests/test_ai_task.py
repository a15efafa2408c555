"""AI Task errors are clear and private: a structure the grammar cannot hold and an answer that
does not validate are HomeAssistantErrors, and the answer is not logged above debug."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import voluptuous as vol

from homeassistant.components import ai_task
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import selector

TASK_ENTITY = "ai_task.gemma_ai_task"


def _structure(**number: Any) -> vol.Schema:
    return vol.Schema({vol.Required("level"): selector.NumberSelector(selector.NumberSelectorConfig(**number))})


async def test_a_fractional_range_is_generated_and_validated(hass: HomeAssistant, agent: Any) -> None:
    """min 0.1 / max 0.9 raised a raw ValueError in the grammar builder; now 0.x is allowed."""
    _entry, model, _calls = agent
    model.script('{"level": 0.4}')
    result = await ai_task.async_generate_data(
        hass, task_name="dimmer", entity_id=TASK_ENTITY, instructions="How dim?", structure=_structure(min=0.1, max=0.9, step=0.1)
    )
    assert result.data == {"level": 0.4}


async def test_an_impossible_structure_is_a_clear_error(hass: HomeAssistant, agent: Any) -> None:
    _entry, model, _calls = agent
    with pytest.raises(HomeAssistantError, match="structure cannot be used: no number lies in"):
        await ai_task.async_generate_data(
            hass, task_name="impossible", entity_id=TASK_ENTITY, instructions="Pick", structure=_structure(min=5, max=1)
        )
    assert model.requests == []  # refused before generating


async def test_an_answer_that_does_not_validate_is_not_logged_as_an_error(
    hass: HomeAssistant, agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _entry, model, _calls = agent
    model.script('{"level": 50, "note": "my private words"}')  # out of range (the grammar was bypassed)
    with caplog.at_level(logging.INFO), pytest.raises(HomeAssistantError, match="does not match the structure"):
        await ai_task.async_generate_data(
            hass, task_name="check", entity_id=TASK_ENTITY, instructions="Rate", structure=_structure(min=0, max=10)
        )
    assert "my private words" not in caplog.text
