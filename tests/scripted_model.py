"""Scripted model output: the loaded model's sampling is replaced by fixed text.

Everything else stays real: the prompt is rendered and tokenised by the real model, the text is
split and parsed by the engine, calls run through the agent, the runner, the executor and Home
Assistant. Used where a tiny test model cannot make the call a real Gemma would.
"""

from __future__ import annotations

import json
from typing import Any

from custom_components.gemma_edge.engine.local_engine import LocalEngine
from custom_components.gemma_edge.engine.llama_model import GenerationRequest, GenerationStats


def call(tool: str, /, **arguments: Any) -> str:
    """A tool call in the JSON syntax of non-Gemma chat formats (the test models')."""
    return json.dumps({"name": tool, "arguments": arguments})


class ScriptedModel:
    """Each generation step emits the next scripted text (in small pieces, as streaming does)."""

    def __init__(self, engine: LocalEngine) -> None:
        assert engine.model is not None
        self.model = engine.model
        self.outputs: list[str] = []
        self.requests: list[GenerationRequest] = []
        self.model.generate = self._generate  # type: ignore[method-assign]

    def script(self, *outputs: str) -> None:
        self.outputs.extend(outputs)

    def _generate(self, request: GenerationRequest, on_text: Any) -> GenerationStats:
        self.requests.append(request)
        text = self.outputs.pop(0) if self.outputs else ""
        for start in range(0, len(text), 5):
            on_text(text[start : start + 5])
        prompt_tokens = len(self.model.tokenize(request.prompt))
        return GenerationStats(prompt_tokens=prompt_tokens, evaluated_tokens=prompt_tokens, completion_tokens=len(text) // 4, stop_reason="stop")
