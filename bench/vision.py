#!/usr/bin/env python3
"""Vision benchmark: image tokens and time per camera snapshot size, with and without our downscaling.

Runs the real image path (Pillow preparation -> llama.cpp mtmd -> image tokens evaluated by the text
model) on Gemma 3 270M with a tiny random-weight gemma4v projector (its preprocessing, and so the
image token count, is Gemma 4's; its vision encoder is tiny, so the seconds here are mostly the
text model evaluating image tokens). For each snapshot size it prints, side by side in one run:
image tokens and time to first token as sent (only re-encoded as JPEG; llama.cpp itself caps an
image at 1120 tokens) and shrunk to the default 768 px, the ratio, and what those image tokens cost
at the 20-80 tokens/s a Raspberry Pi 5 or an N100 prefills Gemma 4 E4B (derived, not measured).
Usage: .venv/bin/python bench/vision.py [REPEATS]
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
import resource
import statistics
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "custom_components" / "gemma_edge"))
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from engine.local_engine import LocalEngine, StepOptions  # noqa: E402
from engine.images import DEFAULT_MAX_SIDE, prepare_image  # noqa: E402
from engine.llama_model import EngineSettings  # noqa: E402
from tests.mmproj_files import write_tiny_mmproj  # noqa: E402

MODELS = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))
MODEL = MODELS / "gemma-3-270m-q4_k_m.gguf"
SIZES = [(640, 480), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160)]
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SYSTEM = {"role": "system", "content": "You look at pictures from home cameras and answer in one short sentence. " * 8}
STEP = StepOptions(max_tokens=1, temperature=0.0, top_k=1)


def snapshot(width: int, height: int, frame: int = 0) -> bytes:
    """A camera-like JPEG (structure, not one flat colour) at the camera's own resolution; each
    frame differs, so no measurement reuses an earlier picture from the cache."""
    shift = frame * 0.01
    image = Image.effect_mandelbrot((width, height), (-2.0 + shift, -1.2, 1.0 + shift, 1.2), 60).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def as_sent(data: bytes) -> bytes:
    """No downscaling: decoded and re-encoded as JPEG at full size (what a naive integration sends)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


async def measure(engine: LocalEngine, images: list[bytes]) -> tuple[int, float]:
    """Image tokens and median time to first token (image encoding + evaluation), one frame each."""
    times = []
    tokens = 0
    for image in images:
        messages = [SYSTEM, {"role": "user", "content": "Is the garage door open?", "images": [image]}]
        _, _, stats = await engine.async_complete(messages, (), STEP)
        tokens = stats.image_tokens
        times.append(stats.time_to_first_token_s)
    return tokens, statistics.median(times)


async def second_step(engine: LocalEngine) -> None:
    """A turn that looked at a camera and then acts: its next step carries the same picture.
    Ours reuses the picture's cached positions; without that (here: the same picture with other
    bytes) the picture and everything after it is evaluated again."""
    picture = prepare_image(snapshot(1920, 1080)).jpeg
    other_bytes = as_sent(picture)  # the same picture re-encoded: other bytes
    follow = [{"role": "assistant", "content": "The garage door is open."}, {"role": "user", "content": "Close it then."}]
    results = {}
    for label, image in (("same picture, cached", picture), ("picture evaluated again", other_bytes)):
        first = [SYSTEM, {"role": "user", "content": "Is the garage door open?", "images": [picture]}]
        await engine.async_complete(first, (), STEP)
        second = [SYSTEM, {"role": "user", "content": "Is the garage door open?", "images": [image]}, *follow]
        _, _, stats = await engine.async_complete(second, (), STEP)
        results[label] = stats
    print("\nsecond step of a turn that looked at a 1080p camera (768 px):")
    for label, stats in results.items():
        print(f"  {label:<24} evaluated {stats.evaluated_tokens:>4} of {stats.prompt_tokens} prompt tokens, TTFT {stats.time_to_first_token_s:.2f} s")
    cached, again = results["same picture, cached"], results["picture evaluated again"]
    print(f"  ratio {again.evaluated_tokens / cached.evaluated_tokens:.1f}x tokens, {again.time_to_first_token_s / cached.time_to_first_token_s:.1f}x time")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        projector = write_tiny_mmproj(Path(folder) / "mmproj-640.gguf", 640)
        engine = LocalEngine(EngineSettings(str(MODEL), mmproj_path=str(projector), n_ctx=4096))
        await engine.async_load()
        await engine.async_prime([SYSTEM], ())
        print(f"model {MODEL.name}, tiny gemma4v projector, {REPEATS} repeats (median), default max side {DEFAULT_MAX_SIDE} px\n")
        header = f"{'snapshot':>11} | {'as sent: tokens':>15} {'TTFT s':>7} | {'768 px: size':>12} {'tokens':>6} {'TTFT s':>7} {'prep s':>6} | {'tokens x':>8} {'TTFT x':>6} | {'E4B @80..20 tok/s, as sent vs 768 px':>36}"
        print(header)
        print("-" * len(header))
        for width, height in SIZES:
            frames = [snapshot(width, height, frame) for frame in range(REPEATS)]
            full_tokens, full_ttft = await measure(engine, [as_sent(raw) for raw in frames])
            started = time.monotonic()
            prepared_frames = [prepare_image(raw) for raw in frames]
            prep_s = (time.monotonic() - started) / REPEATS
            prepared = prepared_frames[0]
            small_tokens, small_ttft = await measure(engine, [p.jpeg for p in prepared_frames])
            estimate = (
                f"{full_tokens / 80:5.1f}-{full_tokens / 20:5.1f} s vs {small_tokens / 80:4.1f}-{small_tokens / 20:4.1f} s"
            )
            print(
                f"{width:>5}x{height:<5} | {full_tokens:>15} {full_ttft:>7.2f} | "
                f"{prepared.width:>5}x{prepared.height:<6} {small_tokens:>6} {small_ttft:>7.2f} {prep_s:>6.3f} | "
                f"{full_tokens / small_tokens:>8.1f} {full_ttft / small_ttft:>6.1f} | {estimate:>36}"
            )
        await second_step(engine)
        await engine.async_unload()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
