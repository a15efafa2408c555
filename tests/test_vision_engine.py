"""Images through the engine: real llama.cpp mtmd with a tiny random-weight gemma4v projector.

The projector's weights are random, so what the model says about an image means nothing; token
counts and prefix reuse are deterministic, and cached and fresh evaluation give the same first-token
logits within floating-point noise (greedy text can differ between CPUs: see LOGIT_TOLERANCE).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from custom_components.gemma_edge.engine.chat_format import message_images
from custom_components.gemma_edge.engine.local_engine import LocalEngine, StepOptions
from custom_components.gemma_edge.engine.grammar import max_json_chars
from custom_components.gemma_edge.engine.images import DEFAULT_MAX_SIDE, prepare_image
from custom_components.gemma_edge.engine.llama_model import (
    EngineSettings,
    GenerationRequest,
    GenerationStats,
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


# Cached and fresh evaluation are compared by the logits the first answer token is sampled from,
# never by greedy text: the two paths split the prompt into different llama.cpp batches, and
# llama.cpp's CPU kernels round differently for different batch shapes (and the image encoder for
# different thread counts), so near-tied tokens swap places. With the random projector the first
# two candidates after an image are 0.02-0.75 apart, which is how a CI machine got "<image>"
# greedily where this one got other text. Measured with Gemma 3 270M Q4_K_M and this projector
# on llama-cpp-python 0.3.36 built for AVX2 (scripts/setup) and for AVX-512:
#   - the cached path is exactly a fresh evaluation split where the cache ends (a fresh engine with
#     n_batch = reused tokens gives bit-identical logits on both builds);
#   - cached vs a fresh default evaluation: max |difference| 0.74-0.85 (image prompt), 1.4-2.0 (the
#     text prompt after it); AVX2 vs AVX-512 build for the same prompt: 0.77-1.6;
#   - two fresh evaluations of the same prompt differing only in n_batch (512 down to 17) or
#     threads (1 to 8): up to 3.9 (image prompt) and 2.1 (text prompt); among the 50 most likely
#     tokens up to 1.25 for n_batch >= 64;
#   - real mistakes are far larger: the other picture's logits differ by >= 14, a cache holding a
#     different system prompt by 9.7.
# So the tolerance is the worst natural noise (3.9) with a margin, and below half a wrong picture.
LOGIT_TOLERANCE = 5.0
# Two candidates closer than this may swap ranks between two correct evaluations (about twice the
# largest movement of a top-50 logit seen between fresh evaluations with realistic batch sizes).
RANK_TIE = 2.5


async def first_logits(engine: LocalEngine, messages: list[dict]) -> tuple[np.ndarray, GenerationStats]:
    """The first answer token's logits and the token counts, through the engine's prompt path."""
    model = engine.model

    def run() -> tuple[np.ndarray, GenerationStats]:
        request = GenerationRequest(model.chat_format.render(messages, ()), images=message_images(messages))
        return model.first_token_logits(request)

    return await asyncio.wrap_future(engine.worker.submit(run))


async def fresh_logits(settings: EngineSettings, messages: list[dict]) -> tuple[np.ndarray, GenerationStats]:
    """The same, evaluated from an empty cache (a newly loaded model)."""
    engine = LocalEngine(settings)
    await engine.async_load()
    try:
        return await first_logits(engine, messages)
    finally:
        await engine.async_unload()


def counts(stats: GenerationStats) -> tuple[int, int, int, int]:
    return stats.prompt_tokens, stats.image_tokens, stats.reused_tokens, stats.evaluated_tokens


def assert_same_distribution(one: np.ndarray, other: np.ndarray) -> None:
    """Equal within floating-point noise; the top 5 agree up to near-ties."""
    difference = float(np.abs(one - other).max())
    assert difference <= LOGIT_TOLERANCE, f"logits differ by up to {difference:.3f}"
    for a, b in ((one, other), (other, one)):
        fifth = np.sort(b)[-5]
        for token in np.argsort(-a)[:5]:  # in b's top 5 too, or tied with its fifth
            assert b[token] >= fifth - RANK_TIE, (int(token), float(b[token]), float(fifth))
        greedy = int(a.argmax())  # a's greedy choice is b's or ties with it
        assert b.max() - b[greedy] <= RANK_TIE, (greedy, float(b.max() - b[greedy]))


async def test_cached_prefix_plus_image_equals_fresh_evaluation(gemma3_vision: LocalEngine) -> None:
    """The agent's cached prompt prefix is reused before an image, across it only for the same
    picture, and the first answer token is sampled from what a fresh evaluation gives (within
    floating-point noise; see LOGIT_TOLERANCE). Token counts are exact."""
    image = prepare_image(snapshot(640, 480)).jpeg
    other = prepare_image(snapshot(640, 480, (10, 200, 10))).jpeg
    # 284 prompt tokens: 141 of text (system prompt, question start), 130 of the image, 13 after it
    cached = await gemma3_vision.async_prime([SYSTEM], ())
    assert cached == 141
    warm_logits, warm = await first_logits(gemma3_vision, ask(image))
    # everything but the generation prompt the primed prefix ended with (5 tokens) is reused
    assert counts(warm) == (284, 130, 136, 148)
    # the same picture at the same place again, after a real generation (a later step of the same
    # turn): taken from the cache, only the last prompt token is evaluated
    _, _, again = await gemma3_vision.async_complete(ask(image), (), GREEDY)
    assert counts(again) == (284, 130, 283, 1)
    again_logits, again = await first_logits(gemma3_vision, ask(image))
    assert counts(again) == (284, 130, 283, 1)
    # another picture: reuse stops where the picture starts
    other_logits, changed = await first_logits(gemma3_vision, ask(other))
    assert counts(changed) == (284, 130, 141, 143)
    # a text turn afterwards reuses the prefix up to where the image was
    text_logits, after = await first_logits(gemma3_vision, ask(None))
    assert counts(after) == (147, 0, 137, 10)

    fresh_image, fresh = await fresh_logits(gemma3_vision.settings, ask(image))
    fresh_text, fresh_after = await fresh_logits(gemma3_vision.settings, ask(None))
    assert counts(fresh) == (284, 130, 0, 284) and counts(fresh_after) == (147, 0, 0, 147)
    assert_same_distribution(warm_logits, fresh_image)
    assert_same_distribution(again_logits, fresh_image)
    assert_same_distribution(text_logits, fresh_text)
    # the comparison can tell pictures apart: reusing a wrong picture would not pass it
    assert float(np.abs(other_logits - fresh_image).max()) > 2 * LOGIT_TOLERANCE


async def test_structured_output_with_an_image_is_valid_json(gemma3_vision: LocalEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"people": {"type": "integer"}, "door_open": {"type": "boolean"}},
        "required": ["people", "door_open"],
    }
    image = prepare_image(snapshot(800, 600)).jpeg
    # every token is at least one character: with room for the longest answer the grammar allows
    # (a 16-digit count), sampling at temperature 1 always completes the object
    options = StepOptions(max_tokens=64, temperature=1.0, json_schema=schema)
    assert max_json_chars(schema, 0) <= options.max_tokens
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
