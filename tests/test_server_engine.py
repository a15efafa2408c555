"""The server engine against a real llama-cpp-python server on 127.0.0.1 (python -m llama_cpp.server).

The same small models run in-process and in the server, on this machine's one build of llama.cpp:
the prompts the engine sends must be token for token the ones the in-process model evaluates,
tool calls must come through the server's grammar, and a follow-up turn must evaluate only what
changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
import json
from pathlib import Path

import pytest

from custom_components.gemma_edge.engine.local_engine import LocalEngine, StepOptions, TextDelta
from custom_components.gemma_edge.engine.grammar import ToolSpec
from custom_components.gemma_edge.engine.images import prepare_image
from custom_components.gemma_edge.engine.llama_model import (
    ContextOverflowError,
    EngineSettings,
    ModelLoadError,
    VisionUnavailableError,
)
from custom_components.gemma_edge.engine.server_model import ServerAuthError, ServerUnavailableError, probe_server
from custom_components.gemma_edge.engine.tiny_model import write_tiny_model

from .conftest import GEMMA3, SMOLLM2
from .llama_server import free_port, llama_cpp_server, llama_server, llama_server_binary, sockets_allowed

TURN_ON = ToolSpec(
    name="HassTurnOn",
    description="Turns on a device",
    parameters={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
)
FIRST = [
    {"role": "system", "content": "You control a smart home."},
    {"role": "user", "content": "Turn on the kitchen light"},
]
FOLLOW_UP = [*FIRST, {"role": "assistant", "content": "Done."}, {"role": "user", "content": "Thanks!"}]


NO_LLAMA_SERVER = pytest.mark.skipif(
    llama_server_binary() is None, reason="llama-server not built (GEMMA_EDGE_LLAMA_SERVER=1 scripts/setup)"
)


@pytest.fixture(
    scope="module",
    params=[
        ("llama_cpp.server", SMOLLM2),
        ("llama_cpp.server", GEMMA3),
        pytest.param(("llama-server", SMOLLM2), marks=NO_LLAMA_SERVER),
        pytest.param(("llama-server", GEMMA3), marks=NO_LLAMA_SERVER),
    ],
    ids=["llama_cpp.server-smollm2", "llama_cpp.server-gemma3", "llama-server-smollm2", "llama-server-gemma3"],
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """One server per kind and model for the module (each test gets sockets through socket_enabled)."""
    kind, model = request.param
    with sockets_allowed():
        server = llama_cpp_server(model) if kind == "llama_cpp.server" else llama_server(str(llama_server_binary()), model)
        with server as url:
            yield model, url


async def _engine(settings: EngineSettings) -> LocalEngine:
    engine = LocalEngine(settings)
    await engine.async_load()
    return engine


@pytest.fixture
async def engines(socket_enabled: None, served: tuple[Path, str]) -> AsyncIterator[tuple[LocalEngine, LocalEngine]]:
    """The model in this process, and the same model behind the server."""
    path, url = served
    local = await _engine(EngineSettings(str(path), n_ctx=2048))
    remote = await _engine(EngineSettings("", n_ctx=2048, server_url=url))
    yield local, remote
    await local.async_unload()
    await remote.async_unload()


async def test_the_server_gets_exactly_the_in_process_prompt(engines: tuple[LocalEngine, LocalEngine]) -> None:
    local, remote = engines
    assert remote.model is not None and local.model is not None
    assert remote.model.chat_format is not None and local.model.chat_format is not None
    for messages in (FIRST, FOLLOW_UP):
        assert await remote.async_count_tokens(messages, [TURN_ON]) == await local.async_count_tokens(messages, [TURN_ON])
    # the prompt's tokens as the server's own tokenizer makes them (BOS once), id for id

    async def prompt_tokens(engine: LocalEngine) -> list[int]:
        model, worker = engine.model, engine.worker
        assert model is not None and model.chat_format is not None and worker is not None
        render = model.chat_format.render
        return await asyncio.wrap_future(worker.submit(lambda: model.tokenize(render(FIRST, [TURN_ON]))))

    assert await prompt_tokens(remote) == await prompt_tokens(local)


async def test_tool_calls_through_the_servers_grammar_and_a_cached_prefix(engines: tuple[LocalEngine, LocalEngine]) -> None:
    _, remote = engines
    required = StepOptions(max_tokens=48, temperature=0.0, tool_choice="required")
    text, calls, first = await remote.async_complete(FIRST, [TURN_ON], required)
    assert text == "" and [call.name for call in calls] == ["HassTurnOn"]
    assert isinstance(calls[0].arguments.get("name"), str)
    # the follow-up turn: only the new tokens are evaluated
    _, _, follow = await remote.async_complete(FOLLOW_UP, [TURN_ON], StepOptions(max_tokens=16, temperature=0.0))
    total = await remote.async_count_tokens(FOLLOW_UP, [TURN_ON])
    assert follow.prompt_tokens == total
    assert follow.reused_tokens == first.prompt_tokens
    assert follow.evaluated_tokens == total - first.prompt_tokens < 20
    assert follow.completion_tokens > 0 and follow.stop_reason in ("end", "length")


async def test_structured_output_and_streaming(engines: tuple[LocalEngine, LocalEngine]) -> None:
    _, remote = engines
    schema = {"type": "object", "properties": {"on": {"type": "boolean"}, "level": {"type": "integer", "minimum": 0, "maximum": 100}}, "required": ["on", "level"]}
    for _ in range(3):
        text, calls, stats = await remote.async_complete(FIRST, (), StepOptions(max_tokens=64, temperature=1.0, json_schema=schema))
        data = json.loads(text)
        assert set(data) == {"on", "level"} and 0 <= data["level"] <= 100 and not calls
    pieces = [event.text async for event in remote.async_stream_step(FIRST, (), StepOptions(max_tokens=12, temperature=0.0)) if isinstance(event, TextDelta)]
    assert len(pieces) > 1  # streamed piece by piece, not as one block


async def test_stopping_early_and_a_prompt_too_long(engines: tuple[LocalEngine, LocalEngine]) -> None:
    _, remote = engines
    stream = remote.async_stream_step(FIRST, (), StepOptions(max_tokens=200, temperature=1.0))
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()
    # the engine is free again and the server answers the next request
    _, _, stats = await remote.async_complete(FIRST, (), StepOptions(max_tokens=4, temperature=0.0))
    assert stats.completion_tokens > 0
    huge = [{"role": "user", "content": "light " * 3000}]
    with pytest.raises(ContextOverflowError):
        await remote.async_complete(huge, (), StepOptions(max_tokens=16))


def test_probe_names_the_server_and_refuses_what_it_cannot_use(socket_enabled: None, tmp_path: Path) -> None:
    with llama_cpp_server(SMOLLM2, api_key="sesame") as url:
        with pytest.raises(ServerAuthError, match="refused the API key"):
            probe_server(EngineSettings("", server_url=url))
        kind, model = probe_server(EngineSettings("", server_url=url, server_api_key="sesame"))
        assert (kind, model) == ("llama_cpp.server", SMOLLM2.name)
    with pytest.raises(ServerUnavailableError, match="cannot be reached"):
        probe_server(EngineSettings("", server_url=f"http://127.0.0.1:{free_port()}"))
    # a model with neither Gemma's turns nor ChatML, on a server that reports no template
    with llama_cpp_server(write_tiny_model(tmp_path / "tiny.gguf")) as url:
        with pytest.raises(ModelLoadError, match="not a Gemma model"):
            probe_server(EngineSettings("", server_url=url))


@NO_LLAMA_SERVER
async def test_images_through_llama_server_and_its_cache(
    socket_enabled: None, gemma3_path: Path, projectors: dict[str, Path]
) -> None:
    """llama-server with a projector sees images (its own media marker, base64 data); the same
    picture again comes from its cache, another picture does not."""
    from .test_vision_engine import snapshot  # noqa: PLC0415

    with llama_server(str(llama_server_binary()), gemma3_path, n_ctx=4096, mmproj=projectors["gemma3"]) as url:
        remote = await _engine(EngineSettings("", n_ctx=8192, server_url=url))
        try:
            assert remote.n_ctx == 4096  # what the server was started with, not the entry's guess
            assert remote.has_vision
            red, blue = (prepare_image(snapshot(800, 600, color)).jpeg for color in ((180, 40, 40), (40, 40, 180)))

            def ask(image: bytes) -> list[dict]:
                return [{"role": "user", "content": "What is in the picture?", "images": [image]}]

            greedy = StepOptions(max_tokens=4, temperature=0.0)
            _, _, first = await remote.async_complete(ask(red), (), greedy)
            assert first.image_tokens > 50 and first.evaluated_tokens == first.prompt_tokens
            _, _, again = await remote.async_complete(ask(red), (), greedy)
            assert again.prompt_tokens == first.prompt_tokens and again.evaluated_tokens < 10
            _, _, other = await remote.async_complete(ask(blue), (), greedy)
            assert other.evaluated_tokens >= other.image_tokens
        finally:
            await remote.async_unload()


async def test_images_to_a_server_without_vision_are_refused(engines: tuple[LocalEngine, LocalEngine]) -> None:
    _, remote = engines
    assert not remote.has_vision
    with pytest.raises(VisionUnavailableError, match="cannot see images"):
        await remote.async_complete([{"role": "user", "content": "Look", "images": [b"\xff\xd8"]}], (), StepOptions(max_tokens=4))


async def test_a_server_that_goes_away_is_an_error_not_a_crash(socket_enabled: None) -> None:
    with llama_cpp_server(SMOLLM2) as url:
        remote = await _engine(EngineSettings("", n_ctx=2048, server_url=url))
        _, _, stats = await remote.async_complete(FIRST, (), StepOptions(max_tokens=4, temperature=0.0))
        assert stats.completion_tokens > 0
    try:
        with pytest.raises(ServerUnavailableError, match="cannot be reached"):
            await remote.async_complete(FIRST, (), StepOptions(max_tokens=4))
        # background priming just primes nothing
        assert await remote.async_prime(FIRST, [TURN_ON]) == 0
    finally:
        await remote.async_unload()
