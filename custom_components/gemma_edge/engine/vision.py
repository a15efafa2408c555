"""Images into the model's context through llama.cpp's mtmd library.

The images go in through mtmd and a vision projector (mmproj). We do not use
llama-cpp-python's ``MTMDChatHandler``: it clears the KV cache on every call (so the
agent's cached prompt prefix would be evaluated again after every image), renders
prompts with its own template handling, and silences C output by redirecting the
process's file descriptors. Instead the prompt (rendered by our chat formats, with
``MEDIA_MARKER`` where an image goes) is split by mtmd into text and image chunks; text
chunks are evaluated like any prompt text (the cached prefix is reused), image chunks by
mtmd into the same context. Positions holding image embeddings are recorded in the
model's token history as a negative key derived from the image's bytes (``image_key``),
which no text token equals: prefix reuse continues over the same picture at the same
place (a second step of a turn that looked at a camera) and stops before any other.

Every function here runs on the model's worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
import ctypes
from dataclasses import dataclass, field
import hashlib
import logging
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

# mtmd's default marker; checked against the library when loading
MEDIA_MARKER = "<__media__>"


def image_key(data: bytes) -> int:
    """Return the token-history value of an image's positions.

    It is negative (no text token equals it) and derived from the image's bytes.
    """
    return -2 - (int.from_bytes(hashlib.sha256(data).digest()[:4], "big") & 0x3FFFFFFF)


class VisionError(Exception):
    """Base of the vision errors (the engine maps them to user-facing engine errors)."""


class ProjectorLoadError(VisionError):
    """The mmproj file could not be loaded for this model."""


class ImageDecodeError(VisionError):
    """llama.cpp could not use an image."""


@dataclass
class PromptChunk:
    """Text tokens, or one image occupying ``n_pos`` positions."""

    tokens: list[int] = field(default_factory=list)
    image: Any = None  # mtmd chunk pointer, valid until the TokenizedPrompt is closed
    n_pos: int = 0
    n_image_tokens: int = 0
    key: int = 0  # image_key of the image


@dataclass
class TokenizedPrompt:
    """A prompt split into chunks.

    ``tokens`` holds text tokens and the image's key per image position.
    """

    chunks: list[PromptChunk]
    handle: Any
    free: Any

    @property
    def tokens(self) -> list[int]:
        """The text tokens, and the image's key at each image position."""
        out: list[int] = []
        for chunk in self.chunks:
            out.extend(
                chunk.tokens if chunk.image is None else [chunk.key] * chunk.n_pos
            )
        return out

    @property
    def image_tokens(self) -> int:
        """The number of image tokens in all chunks."""
        return sum(chunk.n_image_tokens for chunk in self.chunks)

    def close(self) -> None:
        """Free mtmd's chunks (the image chunks are invalid afterwards)."""
        if self.handle is not None:
            self.free(self.handle)
            self.handle = None


def route_logs(callback: Any) -> None:
    """Route mtmd's logs through the same callback as llama.cpp's.

    Its info level carries prompt text.
    """
    import llama_cpp.mtmd_cpp as mtmd  # noqa: PLC0415

    mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))


class VisionProjector:
    """An mmproj loaded for one llama model."""

    def __init__(
        self, path: str, llm: Any, *, n_threads: int, flash_attn: bool
    ) -> None:
        """Load the mmproj file at path for the llama model llm (CPU only)."""
        import llama_cpp  # noqa: PLC0415
        import llama_cpp.mtmd_cpp as mtmd  # noqa: PLC0415

        self._mtmd = mtmd
        marker = mtmd.mtmd_default_marker().decode("utf-8")
        if marker != MEDIA_MARKER:
            raise ProjectorLoadError(
                f"this llama-cpp-python uses the media marker {marker!r},"
                f" not {MEDIA_MARKER!r}"
            )
        if not Path(path).is_file():
            raise ProjectorLoadError(f"the vision projector {path} does not exist")
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.warmup = False
        params.n_threads = n_threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self._ctx = mtmd.mtmd_init_from_file(path.encode(), llm.model, params)
        if not self._ctx:
            raise ProjectorLoadError(
                "llama.cpp could not load the vision projector"
                f" {Path(path).name} for this model "
                "(is it the projector of this model? the reason is in the log)"
            )
        if not mtmd.mtmd_support_vision(self._ctx):
            self.close()
            raise ProjectorLoadError(f"{Path(path).name} is not a vision projector")

    def close(self) -> None:
        """Free the projector (safe to call twice)."""
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def tokenize(self, prompt: str, images: Sequence[bytes]) -> TokenizedPrompt:
        """Split the prompt at its media markers into text tokens and image chunks."""
        mtmd = self._mtmd
        if prompt.count(MEDIA_MARKER) != len(images):
            raise ImageDecodeError(
                f"the prompt has {prompt.count(MEDIA_MARKER)} image places"
                f" for {len(images)} images"
            )
        bitmaps: list[Any] = []
        try:
            for index, data in enumerate(images, start=1):
                buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(
                    self._ctx, buffer, len(data), False
                )
                if not bitmap:
                    raise ImageDecodeError(
                        f"llama.cpp could not decode image {index} ({len(data)} bytes)"
                    )
                bitmaps.append(bitmap)
            encoded = prompt.encode("utf-8")
            text = mtmd.mtmd_input_text()
            text.text = encoded
            text.text_len = len(encoded)
            text.add_special = False  # the rendered prompt carries its own BOS
            text.parse_special = True
            handle = mtmd.mtmd_input_chunks_init()
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            result = mtmd.mtmd_tokenize(
                self._ctx, handle, ctypes.byref(text), array, len(bitmaps)
            )
            prompt_chunks = TokenizedPrompt([], handle, mtmd.mtmd_input_chunks_free)
            if result != 0:
                prompt_chunks.close()
                raise ImageDecodeError(
                    "llama.cpp could not prepare the images"
                    f" (mtmd_tokenize error {result})"
                )
            keys = iter([image_key(data) for data in images])
            for index in range(mtmd.mtmd_input_chunks_size(handle)):
                chunk = mtmd.mtmd_input_chunks_get(handle, index)
                if (
                    mtmd.mtmd_input_chunk_get_type(chunk)
                    == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
                ):
                    count = ctypes.c_size_t()
                    pointer = mtmd.mtmd_input_chunk_get_tokens_text(
                        chunk, ctypes.byref(count)
                    )
                    tokens = [pointer[i] for i in range(count.value)]
                    prompt_chunks.chunks.append(
                        PromptChunk(tokens=tokens, n_pos=len(tokens))
                    )
                else:
                    prompt_chunks.chunks.append(
                        PromptChunk(
                            image=chunk,
                            n_pos=mtmd.mtmd_input_chunk_get_n_pos(chunk),
                            n_image_tokens=mtmd.mtmd_input_chunk_get_n_tokens(chunk),
                            key=next(keys),
                        )
                    )
            return prompt_chunks
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def evaluate_image(self, llm: Any, chunk: PromptChunk, n_batch: int) -> None:
        """Encode the image; decode its embeddings at the model's current position."""
        import llama_cpp  # noqa: PLC0415

        start = llm.n_tokens
        new_n_past = llama_cpp.llama_pos(0)
        result = self._mtmd.mtmd_helper_eval_chunk_single(
            self._ctx,
            # The llama_context pointer is only on llama-cpp-python's internal wrapper.
            llm._ctx.ctx,  # noqa: SLF001
            chunk.image,
            start,
            0,
            n_batch,
            False,
            ctypes.byref(new_n_past),
        )
        if result != 0:
            raise ImageDecodeError(
                f"llama.cpp could not evaluate the image (error {result})"
            )
        llm.input_ids[start : new_n_past.value] = chunk.key
        llm.n_tokens = new_n_past.value
