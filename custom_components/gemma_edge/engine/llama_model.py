"""llama-cpp-python behind one worker thread.

Loading, tokenizing and grammar-constrained generation. Every method that touches
llama.cpp runs on the worker thread (``SerialWorker``); the guard in ``_on_worker``
makes a call from any other thread an error instead of a crash or a race.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
import ctypes
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
import threading
import time
from typing import Any

from .chat_format import TEMPLATE_MARKERS, ChatFormat, select_chat_format
from .gguf_info import read_gguf_info
from .llama_check import load_ggml_backends
from .vision import (
    PromptChunk,
    TokenizedPrompt,
    VisionError,
    VisionProjector,
    route_logs,
)

_LOGGER = logging.getLogger(__name__)
_LLAMA_LOGGER = logging.getLogger(__name__.rsplit(".", 2)[0] + ".llama_cpp")

# ggml log levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continue previous line.
# llama.cpp's info level is chatty (and mtmd logs prompt text there): it goes to debug.
# Its warnings are notes about the model file ("full-size SWA cache", token types) for
# developers: info. Errors stay errors.
_GGML_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.DEBUG,
    3: logging.INFO,
    4: logging.ERROR,
}


class EngineError(Exception):
    """Base class of engine errors; the message is meant for the user."""


class ModelLoadError(EngineError):
    """The model file could not be loaded."""


class VisionUnavailableError(EngineError):
    """Images were given but the model has no usable vision projector."""


class ImageInputError(EngineError):
    """llama.cpp could not use an image."""


class ContextOverflowError(EngineError):
    """The prompt does not fit in the context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int, reserved: int) -> None:
        """Record the prompt and context sizes; the message says what does not fit."""
        super().__init__(
            f"the conversation needs {prompt_tokens} tokens plus {reserved}"
            f" for the answer, but the context holds {n_ctx}"
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


@dataclass(frozen=True)
class EngineSettings:
    """How to load a model.

    Explicit values for everything llama-cpp-python defaults badly.
    """

    model_path: str
    mmproj_path: str | None = None  # vision projector; images are refused without one
    n_ctx: int = 8192
    n_threads: int = 0  # 0: physical cores
    flash_attn: bool = True
    use_mmap: bool = True
    n_batch: int = 512
    seed: int = 0
    # A llama.cpp server to use instead of loading model_path in this process
    # (ServerModel).
    server_url: str | None = None
    server_api_key: str | None = None
    # A backend-DL build's ggml CPU variant to load instead of ggml's own pick (see
    # llama_check.py)
    cpu_variant: str | None = None

    def resolved_threads(self) -> int:
        """Return the thread count: the configured one, else the physical cores."""
        return self.n_threads or physical_cores()


@dataclass
class GenerationStats:
    """Token counts and timings of one generation step."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    reused_tokens: int = 0
    evaluated_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    total_s: float = 0.0
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the stats as a dict."""
        return dict(self.__dict__)


@dataclass
class GenerationRequest:
    """One generation step."""

    prompt: str
    grammar: str | None = None
    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 64
    stop: tuple[str, ...] = field(default_factory=tuple)
    # JPEG bytes, one per media marker in the prompt, in order
    images: tuple[bytes, ...] = ()


def physical_cores() -> int:
    """Count the physical CPU cores, at least 1.

    Hyper-threads do not speed up llama.cpp. x86 lists "physical id"/"core id" per
    logical CPU; ARM boards (Raspberry Pi) have no SMT and no such lines, so every CPU
    counts.
    """
    try:
        with Path("/proc/cpuinfo").open(encoding="ascii", errors="replace") as handle:
            pairs = set()
            physical = "0"
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    physical = value.strip()
                elif key.strip() == "core id":
                    pairs.add((physical, value.strip()))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)


_log_callback: Any = None
_last_level = logging.DEBUG


def route_llama_logs() -> None:
    """Send llama.cpp's C logs to Python logging; never redirect stdout/stderr.

    llama-cpp-python silences C output by dup2-ing file descriptors 1 and 2 around
    loads, process wide and without locking; in Home Assistant that can swallow or
    misdirect the whole log. We route logs through a callback instead and turn that
    redirection off. llama.cpp's info level (which includes prompt text in mtmd) goes to
    debug.
    """
    global _log_callback  # noqa: PLW0603 - the ctypes callback must stay alive
    if _log_callback is not None:
        return
    import llama_cpp  # noqa: PLC0415 - heavy native import, only in the worker
    from llama_cpp import _utils  # noqa: PLC0415

    def _never_redirect(self: Any, disable: bool = True) -> None:
        self.disable = True

    _utils.suppress_stdout_stderr.__init__ = _never_redirect  # type: ignore[method-assign]

    # llama_cpp's ctypes callback factory is untyped.
    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        global _last_level  # noqa: PLW0603
        log_level = (
            _last_level if level == 5 else _GGML_LEVELS.get(level, logging.DEBUG)
        )
        _last_level = log_level
        if _LLAMA_LOGGER.isEnabledFor(log_level):
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                _LLAMA_LOGGER.log(log_level, "%s", message)

    _log_callback = _callback
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


def _control_token_texts(llm: Any) -> tuple[str, ...]:
    """Return the texts of the vocabulary's control tokens that look like markers.

    Such as ``<|im_end|>`` or ``[INST]``: content containing them would otherwise
    tokenize into the real special token.
    """
    import llama_cpp  # noqa: PLC0415

    vocab = llm._model.vocab  # noqa: SLF001
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    texts = set()
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & special:
            text = (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode(
                "utf-8", "replace"
            )
            if len(text) >= 3 and any(c in text for c in "<>[]|"):
                texts.add(text)
    return tuple(sorted(texts))


class LlamaModel:
    """A loaded GGUF model. All methods must run on the owning worker thread."""

    def __init__(
        self, settings: EngineSettings, owner: Callable[[], bool] | None = None
    ) -> None:
        """Set up an unloaded model; owner tells whether a call is on its worker."""
        self.settings = settings
        self._owner = owner
        self._llm: Any = None
        self.chat_format: ChatFormat | None = None
        self.architecture = ""
        self.native_markers = False
        # Texts that must never come from content: the template's markers and the
        # model's control tokens (see chat_format.neutralize_markers).
        self.markers: tuple[str, ...] = TEMPLATE_MARKERS
        self.threads_used: set[str] = set()
        self._pieces: dict[int, bytes] = {}
        self._projector: VisionProjector | None = None

    def _on_worker(self) -> None:
        self.threads_used.add(threading.current_thread().name)
        if self._owner is not None and not self._owner():
            raise RuntimeError("llama.cpp called outside the model worker thread")

    @property
    def loaded(self) -> bool:
        """The model is loaded."""
        return self._llm is not None

    @property
    def n_ctx(self) -> int:
        """The context size the model was loaded with."""
        return self.settings.n_ctx

    def load(self) -> None:
        """Load the model file and pick its chat format (no-op when loaded)."""
        self._on_worker()
        if self._llm is not None:
            return
        info = read_gguf_info(self.settings.model_path)
        route_llama_logs()
        import llama_cpp  # noqa: PLC0415

        if load_ggml_backends(llama_cpp, self.settings.cpu_variant) == 0:
            raise ModelLoadError("llama.cpp found no backend that runs on this CPU")
        started = time.monotonic()
        try:
            llm = llama_cpp.Llama(
                model_path=self.settings.model_path,
                n_ctx=self.settings.n_ctx,
                n_batch=self.settings.n_batch,
                n_threads=self.settings.resolved_threads(),
                n_threads_batch=self.settings.resolved_threads(),
                flash_attn=self.settings.flash_attn,
                use_mmap=self.settings.use_mmap,
                seed=self.settings.seed,
                # Prefix reuse rolls the cache back to where prompts differ; with a
                # sliding-window cache (Gemma) that is only correct when the window
                # keeps every position.
                swa_full=True,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelLoadError(
                f"llama.cpp could not load {Path(self.settings.model_path).name}: {err}"
            ) from err
        vocab = llm._model  # noqa: SLF001 - token texts are only on the internal wrapper
        bos = vocab.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        eos = vocab.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        self.chat_format = select_chat_format(
            info.architecture, info.chat_template, bos=bos, eos=eos
        )
        self.architecture = info.architecture
        self.native_markers = info.architecture == "gemma4"
        self.markers = TEMPLATE_MARKERS + _control_token_texts(llm)
        self._llm = llm
        _LOGGER.info(
            "Loaded %s (%s, format %s) in %.1f s: n_ctx=%d threads=%d flash_attn=%s",
            Path(self.settings.model_path).name,
            info.architecture,
            self.chat_format.name,
            time.monotonic() - started,
            self.settings.n_ctx,
            self.settings.resolved_threads(),
            self.settings.flash_attn,
        )

    def _vision(self) -> VisionProjector:
        """Return the vision projector, loaded on first use.

        It costs memory only when images are used.
        """
        if self._projector is None:
            if not self.settings.mmproj_path:
                raise VisionUnavailableError(
                    "this model has no vision projector (mmproj) configured, so it"
                    " cannot see images"
                )
            route_logs(_log_callback)
            started = time.monotonic()
            try:
                self._projector = VisionProjector(
                    self.settings.mmproj_path,
                    self._require(),
                    n_threads=self.settings.resolved_threads(),
                    flash_attn=self.settings.flash_attn,
                )
            except VisionError as err:
                raise VisionUnavailableError(str(err)) from err
            _LOGGER.info(
                "Loaded vision projector %s in %.1f s",
                Path(self.settings.mmproj_path).name,
                time.monotonic() - started,
            )
        return self._projector

    @property
    def vision_loaded(self) -> bool:
        """The vision projector is loaded."""
        return self._projector is not None

    def release_vision(self) -> bool:
        """Free the vision projector's memory (it loads again with the next image)."""
        self._on_worker()
        if self._projector is None:
            return False
        self._projector.close()
        self._projector = None
        _LOGGER.info("Freed the vision projector (no images for a while)")
        return True

    def close(self) -> None:
        """Free the vision projector and the model."""
        self._on_worker()
        self.release_vision()
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _require(self) -> Any:
        if self._llm is None:
            raise EngineError("the model is not loaded")
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        """Tokenize prompt text, special tokens parsed.

        BOS is added if the model wants one.
        """
        self._on_worker()
        llm = self._require()
        tokens: list[int] = llm.tokenize(
            text.encode("utf-8"), add_bos=False, special=True
        )
        bos = llm.token_bos()
        if llm._model.add_bos_token() and bos >= 0 and (not tokens or tokens[0] != bos):  # noqa: SLF001
            tokens.insert(0, bos)
        return tokens

    def _piece(self, token: int) -> bytes:
        """Return the bytes of one token, special tokens included (cached)."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp  # noqa: PLC0415

            vocab = self._require()._model.vocab  # noqa: SLF001
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, True)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def cached_prefix(self, tokens: list[int]) -> int:
        """Count the leading tokens of ``tokens`` the KV cache already holds."""
        llm = self._require()
        n = 0
        for cached, token in zip(
            llm._input_ids[: llm.n_tokens],  # noqa: SLF001
            tokens,
            strict=False,
        ):
            # an image's positions match only the same image at the same place
            if cached != token:
                break
            n += 1
        return n

    def prime(self, prompt: str, should_stop: Callable[[], bool]) -> int:
        """Evaluate a prompt into the KV cache (no generation), a batch at a time.

        Stops early when should_stop() says a user request is waiting. Returns the
        tokens now cached.
        """
        self._on_worker()
        llm = self._require()
        tokens = self.tokenize(prompt)[: self.settings.n_ctx - 1]
        start = self.cached_prefix(tokens)
        if start < llm.n_tokens:
            llm._ctx.kv_cache_seq_rm(-1, start, -1)  # noqa: SLF001 - drop the diverging tail
            llm.n_tokens = start
        for offset in range(start, len(tokens), self.settings.n_batch):
            if should_stop():
                break
            llm.eval(tokens[offset : offset + self.settings.n_batch])
        cached: int = llm.n_tokens
        return cached

    def generate(
        self, request: GenerationRequest, on_text: Callable[[str], bool]
    ) -> GenerationStats:
        """Generate, calling on_text with each decoded piece.

        on_text returns False to stop early.
        """
        self._on_worker()
        llm = self._require()
        import llama_cpp  # noqa: PLC0415

        started = time.monotonic()
        tokens, stats = self._prepare_prompt(request)
        grammar = None
        if request.grammar:
            grammar = llama_cpp.LlamaGrammar.from_string(request.grammar, verbose=False)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        longest_stop = max((len(stop) for stop in request.stop), default=0)
        text = ""
        first_token_at = 0.0
        stats.stop_reason = "length"
        for token in llm.generate(
            tokens,
            top_k=request.top_k,
            top_p=request.top_p,
            temp=request.temperature,
            repeat_penalty=1.0,
            grammar=grammar,
        ):
            if not first_token_at:
                first_token_at = time.monotonic()
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):  # noqa: SLF001
                stats.stop_reason = "end"
                break
            stats.completion_tokens += 1
            piece = decoder.decode(self._piece(token))
            text += piece
            # a stop text can only end in the newest piece: search just the tail
            tail_start = max(0, len(text) - len(piece) - longest_stop)
            stop_at = _find_stop(text[tail_start:], request.stop)
            if stop_at is not None:
                stop_at += tail_start
                piece = piece[: max(0, len(piece) - (len(text) - stop_at))]
                if piece:
                    on_text(piece)
                stats.stop_reason = "stop"
                break
            if piece and not on_text(piece):
                stats.stop_reason = "cancelled"
                break
            if stats.completion_tokens >= request.max_tokens:
                break
        tail = decoder.decode(b"", final=True)
        if tail and stats.stop_reason != "stop":
            on_text(tail)
        finished = time.monotonic()
        stats.total_s = finished - started
        if first_token_at:
            stats.time_to_first_token_s = first_token_at - started
            decode_time = finished - first_token_at
            if stats.completion_tokens > 1 and decode_time > 0:
                stats.decode_tokens_per_s = (stats.completion_tokens - 1) / decode_time
        return stats

    def first_token_logits(
        self, request: GenerationRequest
    ) -> tuple[Any, GenerationStats]:
        """Return the first answer token's logits and the prompt's token counts.

        The logits are those the first answer token is sampled from. The prompt goes
        the way ``generate`` sends it (cached prefix reused, images through mtmd, the
        rest through llama-cpp-python's ``generate``), which stops at its first sampled
        token before evaluating it, so llama.cpp's last output row is the last prompt
        position's. Returns a float32 numpy copy (one value per vocabulary entry).
        Sampling options and grammar are ignored; nothing is generated. For comparing
        cached and fresh evaluation by numbers: greedy text is not comparable across
        CPUs whose SIMD kernels round differently.
        """
        self._on_worker()
        llm = self._require()
        import numpy as np  # noqa: PLC0415 - a llama-cpp-python dependency

        tokens, stats = self._prepare_prompt(request)
        steps = llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0)
        try:
            next(steps)
            logits = np.ctypeslib.as_array(
                # One row's logits are only on llama-cpp-python's internal context.
                llm._ctx.get_logits_ith(-1),  # noqa: SLF001
                shape=(llm.n_vocab(),),
            ).copy()
        finally:
            steps.close()
        return logits, stats

    def _prepare_prompt(
        self, request: GenerationRequest
    ) -> tuple[list[int], GenerationStats]:
        """Return the prompt's tokens, its images already evaluated, and token counts.

        The counts include the reused and the evaluated tokens.
        """
        if request.images:
            tokens, stats = self._evaluate_with_images(request)
        else:
            tokens = self.tokenize(request.prompt)
            self._check_fits(len(tokens), request.max_tokens)
            stats = GenerationStats(prompt_tokens=len(tokens))
            # llama-cpp-python re-evaluates the last prompt token when the whole prompt
            # is cached
            stats.reused_tokens = min(self.cached_prefix(tokens), len(tokens) - 1)
        stats.evaluated_tokens = len(tokens) - stats.reused_tokens
        return tokens, stats

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.settings.n_ctx:
            raise ContextOverflowError(prompt_tokens, self.settings.n_ctx, max_tokens)

    def _evaluate_with_images(
        self, request: GenerationRequest
    ) -> tuple[list[int], GenerationStats]:
        """Evaluate a prompt with images, all but its last token.

        Generation evaluates the last one. The cached prefix is reused up to the first
        difference (an image matches only the same image at the same place); text chunks
        go through llama-cpp-python's eval, images through mtmd into the same sequence.
        """
        llm = self._require()
        projector = self._vision()
        try:
            prompt = projector.tokenize(request.prompt, request.images)
        except VisionError as err:
            raise ImageInputError(str(err)) from err
        try:
            self._add_bos(prompt)
            tokens = prompt.tokens
            self._check_fits(len(tokens), request.max_tokens)
            if not prompt.chunks or prompt.chunks[-1].image is not None:
                raise ImageInputError("a prompt must end with text after its images")
            stats = GenerationStats(
                prompt_tokens=len(tokens), image_tokens=prompt.image_tokens
            )
            reused = min(self.cached_prefix(tokens), len(tokens) - 1)
            position = 0
            # never start evaluating in the middle of an image
            for chunk in prompt.chunks:
                if (
                    chunk.image is not None
                    and position < reused < position + chunk.n_pos
                ):
                    reused = position
                position += chunk.n_pos
            stats.reused_tokens = reused
            if reused < llm.n_tokens:
                llm._ctx.kv_cache_seq_rm(-1, reused, -1)  # noqa: SLF001 - drop the diverging tail
                llm.n_tokens = reused
            position = 0
            for index, chunk in enumerate(prompt.chunks):
                if position + chunk.n_pos <= llm.n_tokens:
                    pass  # already in the cache
                elif chunk.image is not None:
                    try:
                        projector.evaluate_image(llm, chunk, self.settings.n_batch)
                    except VisionError as err:
                        raise ImageInputError(str(err)) from err
                else:
                    todo = chunk.tokens[max(0, llm.n_tokens - position) :]
                    if index == len(prompt.chunks) - 1:
                        todo = todo[:-1]
                    if todo:
                        llm.eval(todo)
                position += chunk.n_pos
            return tokens, stats
        finally:
            prompt.close()

    def _add_bos(self, prompt: TokenizedPrompt) -> None:
        """Insert the BOS token first when the model wants one.

        Only when the rendered prompt lacks it.
        """
        llm = self._require()
        bos = llm.token_bos()
        first = prompt.chunks[0] if prompt.chunks else None
        if not (llm._model.add_bos_token() and bos >= 0):  # noqa: SLF001
            return
        if first is None or first.image is not None:
            prompt.chunks.insert(0, PromptChunk(tokens=[bos], n_pos=1))
        elif not first.tokens or first.tokens[0] != bos:
            first.tokens.insert(0, bos)
            first.n_pos += 1


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return min(positions) if positions else None
