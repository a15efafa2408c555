"""Structured output: for generated AI Task structures, real sampled generation under the grammar
built from the structure always parses and validates against Home Assistant's own schema."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.gemma_edge.ai_task import structure_schema
from custom_components.gemma_edge.engine.step_plan import structure_hint
from custom_components.gemma_edge.engine.local_engine import LocalEngine, StepOptions
from custom_components.gemma_edge.engine.llama_model import EngineSettings
from homeassistant.components.ai_task import _validate_structure_fields

from .conftest import SMOLLM2

EXAMPLES = int(os.environ.get("GEMMA_EDGE_STRUCTURED_EXAMPLES", "15"))
names = st.from_regex(r"[a-z][a-z_]{1,10}", fullmatch=True)


@st.composite
def number_selectors(draw: st.DrawFn) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if draw(st.booleans()):
        low = draw(st.integers(-100, 100))
        config = {"min": low, "max": low + draw(st.integers(0, 1000))}
    return {"number": config}


selectors = st.one_of(
    number_selectors(),
    st.just({"boolean": {}}),
    st.just({"text": {}}),
    st.lists(names, min_size=1, max_size=5, unique=True).map(lambda options: {"select": {"options": options}}),
)


@st.composite
def structures(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(st.dictionaries(names, selectors, min_size=1, max_size=4))
    return {key: {"selector": value, "required": draw(st.booleans())} for key, value in fields.items()}


@pytest.fixture(scope="module")
def engine() -> Generator[LocalEngine]:
    loop = asyncio.new_event_loop()
    local = LocalEngine(EngineSettings(str(SMOLLM2), n_ctx=2048))
    loop.run_until_complete(local.async_load())
    local.loop = loop  # type: ignore[attr-defined]
    yield local
    loop.run_until_complete(local.async_unload())
    loop.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(structure=structures(), seed_words=st.sampled_from(["the front door", "the garage", "the garden", "the street"]))
def test_sampled_answers_always_validate(engine: LocalEngine, structure: dict[str, Any], seed_words: str) -> None:
    schema = _validate_structure_fields(structure)
    json_schema = structure_schema(schema)
    messages = [{"role": "user", "content": f"Describe {seed_words}.\n\n{structure_hint(json_schema)}"}]
    options = StepOptions(max_tokens=700, temperature=1.0, json_schema=json_schema)
    text, calls, stats = engine.loop.run_until_complete(engine.async_complete(messages, (), options))  # type: ignore[attr-defined]
    assert not calls
    assert stats.stop_reason != "length", f"cut off: {text!r}"
    schema(json.loads(text))  # raises if the answer does not validate
