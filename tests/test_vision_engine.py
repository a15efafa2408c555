"""Images through the engine: real llama.cpp mtmd with a tiny random-weight gemma4v projector.

The projector's weights are random, so what the model says about an image means nothing; token
counts, prefix reuse and greedy equality between cached and fresh evaluation are deterministic.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from PIL import Image
import pytest

from custom_components.gemma_edge.engine.engine import LocalEngine, StepOptions
from custom_components.gemma_edge.engine.images import DEFAULT_MAX_SIDE, prepare_image
from custom_components.gemma_edge.engine.llama_model import (
    EngineSettings,
    ImageInputError,
    VisionUnavailableError,
)

GREEDY = StepOptions(max_tokens=12, temperature=0.0, top_k=1)
SYSTEM = {"role": "system", "content": "You look at pictures from home cameras and answer briefly. " * 12}


def snapshot(width: int, height: int, color: tuple[int, int, int] = (180, 40, 40)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 37):  # some structure, so the picture is not one flat colour
        image.paste((20, 20, 200), (x, 0, min(width, x + 9), height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def ask(image: bytes | None, question: str = "What do you see?") -> list[dict]:
    user: dict = {"role": "user", "content": question}
    if image is not None:
        user["images"] = [image]
    return [SYSTEM, user]


@pytest.fixture
async def gemma3_vision(gemma3_path: Path, projectors: dict[str, Path]) -> LocalEngine:
    engine = LocalEngine(EngineSettings(str(gemma3_path), mmproj_path=str(projectors["gemma3"]), n_ctx=4096))
    await engine.async_load()
    yield engine
    await engine.async_unload()


async def test_downscaling_bounds_image_tokens(gemma3_vision: LocalEngine) -> None:
    """Gemma 4's projector spends one token per 48x48 pixels: a 1080p snapshot costs 920 image
    tokens as is and 144 at the default 768 px; no aspect ratio exceeds 256 at the default."""
    full = prepare_image(snapshot(1920, 1080), max_side=2048)
    small = prepare_image(snapshot(1920, 1080))
    _, _, full_stats = await gemma3_vision.async_complete(ask(full.jpeg), (), GREEDY)
    _, _, small_stats = await gemma3_vision.async_complete(ask(small.jpeg), (), GREEDY)
    assert (full.width, full.height, full_stats.image_tokens) == (1920, 1080, 920)
    assert (small.width, small.height, small_stats.image_tokens) == (768, 432, 144)
    assert full_stats.prompt_tokens - small_stats.prompt_tokens == 920 - 144
    for size in ((4000, 4000), (3000, 4000), (2592, 1944), (3840, 1080)):
        image = prepare_image(snapshot(*size))
        _, _, stats = await gemma3_vision.async_complete(ask(image.jpeg), (), GREEDY)
        assert 70 <= stats.image_tokens <= 256, (size, stats.image_tokens)
        assert max(image.width, image.height) == DEFAULT_MAX_SIDE


async def test_cached_prefix_plus_image_equals_fresh_evaluation(gemma3_path: Path, gemma3_vision: LocalEngine, projectors: dict[str, Path]) -> None:
    """The agent's cached prompt prefix is reused before an image, across it only for the same
    picture, and the answer is exactly what a fresh evaluation gives (greedy)."""
    image = prepare_image(snapshot(640, 480)).jpeg
    cached = await gemma3_vision.async_prime([SYSTEM], ())
    warm_text, _, warm = await gemma3_vision.async_complete(ask(image), (), GREEDY)
    # everything but the generation prompt the primed prefix ended with
    assert warm.reused_tokens >= cached - 8 and warm.reused_tokens > 100
    assert warm.image_tokens == 130 and warm.evaluated_tokens == warm.prompt_tokens - warm.reused_tokens
    # the same picture at the same place again (a later step of the same turn): taken from the cache
    again_text, _, again = await gemma3_vision.async_complete(ask(image), (), GREEDY)
    assert again.reused_tokens == again.prompt_tokens - 1 and again.evaluated_tokens == 1
    assert again_text == warm_text
    # another picture: reuse stops where the picture starts
    other = prepare_image(snapshot(640, 480, (10, 200, 10))).jpeg
    _, _, changed = await gemma3_vision.async_complete(ask(other), (), GREEDY)
    assert changed.reused_tokens < changed.prompt_tokens - 130 and changed.evaluated_tokens > 130
    # a text turn afterwards reuses the prefix up to where the image was
    text_after, _, after = await gemma3_vision.async_complete(ask(None), (), GREEDY)
    assert after.reused_tokens >= cached - 8 and after.image_tokens == 0

    fresh = LocalEngine(gemma3_vision.settings)
    await fresh.async_load()
    try:
        fresh_text, _, fresh_stats = await fresh.async_complete(ask(image), (), GREEDY)
        fresh_after, _, _ = await fresh.async_complete(ask(None), (), GREEDY)
    finally:
        await fresh.async_unload()
    assert fresh_stats.reused_tokens == 0 and fresh_stats.prompt_tokens == warm.prompt_tokens
    assert warm_text == fresh_text
    assert text_after == fresh_after


async def test_structured_output_with_an_image_is_valid_json(gemma3_vision: LocalEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"people": {"type": "integer"}, "door_open": {"type": "boolean"}},
        "required": ["people", "door_open"],
    }
    image = prepare_image(snapshot(800, 600)).jpeg
    options = StepOptions(max_tokens=40, temperature=1.0, json_schema=schema)
    for _ in range(3):
        text, calls, stats = await gemma3_vision.async_complete(ask(image, "How many people?"), (), options)
        data = json.loads(text)
        assert set(data) == {"people", "door_open"} and isinstance(data["door_open"], bool)
        assert not calls and stats.image_tokens > 0


async def test_bad_image_bytes_are_an_error_and_the_model_stays_usable(gemma3_vision: LocalEngine) -> None:
    """Bytes that skip our Pillow preparation and that llama.cpp cannot decode."""
    for data in (b"\x89PNG not really", b"GIF89a" + bytes(40)):
        with pytest.raises(ImageInputError, match="could not decode"):
            await gemma3_vision.async_complete(ask(data), (), GREEDY)
    _, _, stats = await gemma3_vision.async_complete(ask(None), (), GREEDY)
    assert stats.completion_tokens > 0


async def test_images_without_a_projector_are_refused(gemma3_path: Path) -> None:
    engine = LocalEngine(EngineSettings(str(gemma3_path), n_ctx=2048))
    await engine.async_load()
    try:
        assert not engine.has_vision
        with pytest.raises(VisionUnavailableError, match="no vision projector"):
            await engine.async_complete(ask(prepare_image(snapshot(64, 64)).jpeg), (), GREEDY)
    finally:
        await engine.async_unload()


async def test_projector_of_another_model_is_a_clear_error(gemma3_path: Path, projectors: dict[str, Path]) -> None:
    """SmolLM2's projector (576 wide) on Gemma 3 (640 wide): refused, text still works."""
    engine = LocalEngine(EngineSettings(str(gemma3_path), mmproj_path=str(projectors["smollm2"]), n_ctx=2048))
    await engine.async_load()
    try:
        with pytest.raises(VisionUnavailableError, match="could not load the vision projector"):
            await engine.async_complete(ask(prepare_image(snapshot(64, 64)).jpeg), (), GREEDY)
        _, _, stats = await engine.async_complete(ask(None), (), GREEDY)
        assert stats.completion_tokens > 0
    finally:
        await engine.async_unload()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_prompt_text_never_reaches_info_logs(gemma3_vision: LocalEngine) -> None:
    """mtmd logs the prompt text at its info level; that goes to debug, not to Home Assistant's log."""
    logger = logging.getLogger("custom_components.gemma_edge")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        secret = "ZebraPassphrase42"
        await gemma3_vision.async_complete(ask(prepare_image(snapshot(320, 240)).jpeg, f"Is {secret} visible?"), (), GREEDY)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [r for r in handler.records if r.levelno >= logging.INFO and secret in r.getMessage()]
    assert any(r.name.endswith("llama_cpp") for r in handler.records)  # llama.cpp's logs were routed here


async def test_idle_projector_is_freed_and_comes_back(gemma3_vision: LocalEngine) -> None:
    image = prepare_image(snapshot(320, 240)).jpeg
    assert not await gemma3_vision.async_release_idle_vision(0)  # never loaded: nothing to free
    await gemma3_vision.async_complete(ask(image), (), GREEDY)
    assert gemma3_vision.model.vision_loaded
    assert not await gemma3_vision.async_release_idle_vision(3600)  # used just now
    assert await gemma3_vision.async_release_idle_vision(0)
    assert not gemma3_vision.model.vision_loaded
    _, _, stats = await gemma3_vision.async_complete(ask(image), (), GREEDY)  # loads again
    assert stats.image_tokens >= 70
    assert gemma3_vision.model.vision_loaded
