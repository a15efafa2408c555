"""The local model engine: an asyncio facade over one worker thread and a loaded model.

Plain Python (no Home Assistant): the conversation entity, services and tests use it
alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
import contextlib
from dataclasses import dataclass
import enum
import logging
import threading
import time
from typing import Any

from .chat_format import Message, message_images, neutralize_markers
from .grammar import (
    GrammarError,
    ToolChoice,
    ToolSpec,
    build_json_grammar,
    build_output_grammar,
)
from .llama_model import (
    EngineError,
    EngineSettings,
    GenerationRequest,
    GenerationStats,
    LlamaModel,
)
from .server_model import ServerModel, ServerUnavailableError
from .tool_calls import ToolCall, looks_like_call, parse_tool_calls
from .worker import (
    PRIORITY_AUTOMATION,
    PRIORITY_BACKGROUND,
    PRIORITY_USER,
    SerialWorker,
    WorkerBusyError,
    WorkerStoppedError,
)

_LOGGER = logging.getLogger(__name__)

# End-of-turn texts some templates use that a model may print as plain text.
TURN_END_MARKERS = ("<turn|>", "<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")


class EngineStatus(enum.StrEnum):
    """What the model is doing."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"


class EngineBusyError(EngineError):
    """Too many requests are waiting for the model."""


@dataclass(frozen=True)
class TextDelta:
    """Answer text, streamed as it is generated."""

    text: str


@dataclass(frozen=True)
class ToolCallsReady:
    """The step ended in tool calls."""

    calls: list[ToolCall]


@dataclass(frozen=True)
class StepFinished:
    """The step ended; token counts and timings."""

    stats: GenerationStats


StreamEvent = TextDelta | ToolCallsReady | StepFinished


@dataclass
class StepOptions:
    """Sampling and tool options of one generation step."""

    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 64
    tool_choice: ToolChoice = "auto"
    # The answer must be one JSON value matching this schema (structured output; no tool
    # calls).
    json_schema: dict[str, Any] | None = None
    # PRIORITY_USER for a person waiting; PRIORITY_AUTOMATION for automations and AI
    # Tasks.
    priority: int = PRIORITY_USER


class OutputSplitter:
    """Separates streamed answer text from tool-call text.

    Tool-call text is held back and parsed at the end.
    """

    def __init__(self, tools_offered: bool) -> None:
        """Start splitting; without tools offered, all text is answer text."""
        self._tools_offered = tools_offered
        self._buffer = ""
        self._is_call: bool | None = None if tools_offered else False

    def feed(self, piece: str) -> str:
        """Add generated text; return the text that can be shown now."""
        if self._is_call is False:
            return piece
        self._buffer += piece
        if self._is_call is None:
            self._is_call = looks_like_call(self._buffer)
            if self._is_call is False:
                text, self._buffer = self._buffer, ""
                return text
        return ""

    def finish(self, truncated: bool = False) -> tuple[str, list[ToolCall]]:
        """Return the remaining text and the parsed tool calls.

        Raises ToolCallSyntaxError on bad calls.
        """
        if self._is_call:
            return "", parse_tool_calls(self._buffer, truncated=truncated)
        text, self._buffer = self._buffer, ""
        return text, []


def _strip_turn_end(text: str) -> str:
    for marker in TURN_END_MARKERS:
        if text.endswith(marker):
            return text[: -len(marker)]
    return text


class LocalEngine:
    """Loads one GGUF model and runs generation steps on its worker thread.

    The model is loaded here or runs in a llama.cpp server this connects to. Steps run
    one at a time, in priority order.
    """

    def __init__(self, settings: EngineSettings, *, max_pending: int = 4) -> None:
        """Set up an unloaded engine; at most max_pending requests may wait."""
        self.settings = settings
        self._max_pending = max_pending
        self._worker: SerialWorker | None = None
        self._model: LlamaModel | ServerModel | None = None
        self._active = 0
        self._status = EngineStatus.UNLOADED
        self.last_error: str | None = None
        # Why a llama.cpp server did not answer the last request (None: it did).
        self.unreachable: str | None = None
        self.last_stats: GenerationStats | None = None
        self._load_lock = asyncio.Lock()
        # At most one step with images at a time: each holds its images and their image
        # tokens.
        self._vision_lock = asyncio.Lock()
        self._last_vision = 0.0  # monotonic time of the last step with images
        self._listeners: list[Callable[[], None]] = []

    @property
    def status(self) -> EngineStatus:
        """What the model is doing; setting it notifies the listeners on a change."""
        return self._status

    @status.setter
    def status(self, value: EngineStatus) -> None:
        if value != self._status:
            self._status = value
            self._notify()

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call listener (on the event loop) when the status or the last stats change.

        Return a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    @property
    def available(self) -> bool:
        """Whether the model can answer: loaded and, a server, answering."""
        return self._model is not None and self.unreachable is None

    def _server_answered(self, error: BaseException | None) -> None:
        """Record whether the server answered a request; log each change once."""
        if isinstance(error, ServerUnavailableError):
            if self.unreachable is None:
                _LOGGER.warning(
                    "%s; the agents are unavailable until it answers again", error
                )
            self.unreachable = self.last_error = str(error)
            self.status = EngineStatus.ERROR
            self._notify()
        elif error is None and self.unreachable is not None:
            _LOGGER.info(
                "The llama.cpp server at %s answers again", self.settings.server_url
            )
            self.unreachable = self.last_error = None
            if self._active == 0:
                self.status = EngineStatus.READY
            self._notify()

    async def _answer_of[T](self, future: Future[T]) -> T:
        """Await the worker's answer; note whether a server answered."""
        try:
            result = await asyncio.wrap_future(future)
        except ServerUnavailableError as err:
            self._server_answered(err)
            raise
        self._server_answered(None)
        return result

    async def async_check_server(self) -> bool:
        """Ask a server that stopped answering whether it answers again.

        Runs at background priority; returns whether the engine is available.
        """
        worker, model = self._worker, self._model
        if self.unreachable is None or worker is None:
            return self.available
        if not isinstance(model, ServerModel):
            return self.available
        try:
            await asyncio.wrap_future(
                worker.submit(model.ping, priority=PRIORITY_BACKGROUND)
            )
        except ServerUnavailableError:
            return False
        except (WorkerBusyError, WorkerStoppedError):
            return False
        self._server_answered(None)
        return True

    @property
    def model(self) -> LlamaModel | ServerModel | None:
        """The loaded model (or server connection), None when unloaded."""
        return self._model

    @property
    def worker(self) -> SerialWorker | None:
        """The model's worker, None before the first load and after unloading."""
        return self._worker

    @property
    def n_ctx(self) -> int:
        """The context the prompt must fit in.

        The settings' context, or what a llama-server reports.
        """
        return (
            self._model.n_ctx
            if isinstance(self._model, ServerModel)
            else self.settings.n_ctx
        )

    @property
    def has_vision(self) -> bool:
        """A vision projector is configured (or the server has one).

        Steps may then carry images.
        """
        return bool(self.settings.mmproj_path) or (
            isinstance(self._model, ServerModel) and self._model.has_vision
        )

    async def async_load(self) -> None:
        """Load the model on the worker thread (idempotent)."""
        async with self._load_lock:
            if self._model is not None and self._model.loaded:
                return
            if self._worker is None:
                self._worker = SerialWorker(max_pending=self._max_pending)
            worker = self._worker
            model_class = ServerModel if self.settings.server_url else LlamaModel
            model = model_class(self.settings, owner=worker.in_worker)
            self.status = EngineStatus.LOADING
            try:
                await asyncio.wrap_future(worker.submit(model.load))
            except Exception as err:
                self.status = EngineStatus.ERROR
                self.last_error = str(err)
                raise
            self._model = model
            self.status = EngineStatus.READY
            self.last_error = None

    async def async_unload(self) -> None:
        """Free the model and stop the worker thread."""
        worker, model = self._worker, self._model
        self._worker = self._model = None
        if worker is None:
            return
        if model is not None:
            with contextlib.suppress(WorkerStoppedError, WorkerBusyError):
                await asyncio.wrap_future(
                    worker.submit(model.close, priority=PRIORITY_USER)
                )
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)
        self.status = EngineStatus.UNLOADED

    async def async_stream_step(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        options: StepOptions,
    ) -> AsyncIterator[StreamEvent]:
        """Run one generation step.

        Yield text deltas, then tool calls (if any), then the stats.
        """
        images = message_images(messages)
        if not images:
            async for event in self._stream_step(messages, tools, options, images):
                yield event
            return
        async with self._vision_lock:
            try:
                async for event in self._stream_step(messages, tools, options, images):
                    yield event
            finally:
                self._last_vision = time.monotonic()

    async def async_release_idle_vision(self, idle_s: float) -> bool:
        """Free the vision projector when no image was seen for idle_s seconds.

        This is background work.
        """
        worker, model = self._worker, self._model
        if (
            worker is None
            or model is None
            or not model.vision_loaded
            or self._vision_lock.locked()
        ):
            return False
        if time.monotonic() - self._last_vision < idle_s:
            return False
        try:
            return await asyncio.wrap_future(
                worker.submit(model.release_vision, priority=PRIORITY_BACKGROUND)
            )
        except (WorkerBusyError, WorkerStoppedError):
            return False

    async def _stream_step(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        options: StepOptions,
        images: tuple[bytes, ...],
    ) -> AsyncIterator[StreamEvent]:
        worker, model = self._worker, self._model
        if worker is None or model is None:
            raise EngineError("the model is not loaded")
        if options.json_schema is not None:
            tools = ()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()
        # Pieces wait in a buffer; the loop is woken once per batch, not once per token,
        # so the event loop does not compete with llama.cpp's threads for every token.
        buffer: list[str] = []
        buffer_lock = threading.Lock()

        def drain() -> None:
            with buffer_lock:
                text, buffer[:] = "".join(buffer), []
            if text:
                pieces.put_nowait(text)

        def on_text(piece: str) -> bool:
            if cancelled.is_set():
                return False
            with buffer_lock:
                wake = not buffer
                buffer.append(piece)
            if wake:
                loop.call_soon_threadsafe(drain)
            return True

        def run() -> GenerationStats:
            chat_format = model.chat_format
            assert chat_format is not None
            grammar: str | None
            if options.json_schema is not None:
                try:
                    grammar = build_json_grammar(
                        options.json_schema, max_chars=options.max_tokens
                    )
                except GrammarError as err:
                    raise EngineError(
                        f"the answer's structure cannot be used: {err}"
                    ) from err
            else:
                grammar = build_output_grammar(
                    list(tools),
                    chat_format.syntax,
                    options.tool_choice,
                    markers_as_tokens=model.native_markers,
                )
            request = GenerationRequest(
                prompt=chat_format.render(
                    neutralize_markers(messages, model.markers), tools
                ),
                images=images,
                grammar=grammar,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                stop=TURN_END_MARKERS,
            )
            return model.generate(request, on_text)

        def finished(_future: Any) -> None:
            try:
                loop.call_soon_threadsafe(drain)
                loop.call_soon_threadsafe(pieces.put_nowait, None)
            except RuntimeError:  # the loop is closed
                pass

        try:
            future = worker.submit(run, priority=options.priority)
        except WorkerBusyError as err:
            raise EngineBusyError(str(err)) from err
        except WorkerStoppedError as err:
            raise EngineError("the model is unloading") from err
        self._active += 1
        self.status = EngineStatus.BUSY
        future.add_done_callback(finished)
        splitter = OutputSplitter(bool(tools) and options.tool_choice != "none")
        try:
            while (piece := await pieces.get()) is not None:
                if text := splitter.feed(piece):
                    yield TextDelta(text)
            stats = await self._answer_of(future)
            text, calls = splitter.finish(truncated=stats.stop_reason == "length")
            if text := _strip_turn_end(text):
                yield TextDelta(text)
            if calls:
                yield ToolCallsReady(calls)
            self.last_stats = stats
            self._notify()
            yield StepFinished(stats)
        finally:
            cancelled.set()
            self._active -= 1
            if self._active == 0 and self._model is not None:
                self.status = (
                    EngineStatus.READY
                    if self.unreachable is None
                    else EngineStatus.ERROR
                )

    async def async_count_tokens(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> int:
        """Count the prompt tokens of these messages and tools.

        They are rendered and tokenized on the worker.
        """
        worker, model = self._worker, self._model
        if worker is None or model is None:
            raise EngineError("the model is not loaded")

        def run() -> int:
            assert model.chat_format is not None
            return len(
                model.tokenize(
                    model.chat_format.render(
                        neutralize_markers(messages, model.markers), tools
                    )
                )
            )

        try:
            future = worker.submit(run)
        except WorkerBusyError as err:
            raise EngineBusyError(str(err)) from err
        except WorkerStoppedError as err:
            raise EngineError("the model was unloaded") from err
        return await self._answer_of(future)

    async def async_prime(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> int:
        """Evaluate the static prompt prefix in advance so the next turn starts warm.

        Runs at background priority and yields to any user request queued meanwhile
        (the rest is evaluated by that request anyway). Returns how many tokens the
        cache holds afterwards.
        """
        worker, model = self._worker, self._model
        if worker is None or model is None:
            return 0

        def run() -> int:
            assert model.chat_format is not None
            prompt = model.chat_format.render(
                neutralize_markers(messages, model.markers), tools
            )
            return model.prime(prompt, worker.user_waiting)

        try:
            return await asyncio.wrap_future(
                worker.submit(run, priority=PRIORITY_BACKGROUND)
            )
        except (WorkerBusyError, WorkerStoppedError):
            return 0

    async def async_complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        options: StepOptions | None = None,
    ) -> tuple[str, list[ToolCall], GenerationStats]:
        """Run one step and collect it (for services, benchmarks and tests)."""
        text_parts: list[str] = []
        calls: list[ToolCall] = []
        stats = GenerationStats()
        async for event in self.async_stream_step(
            messages, tools, options or StepOptions()
        ):
            if isinstance(event, TextDelta):
                text_parts.append(event.text)
            elif isinstance(event, ToolCallsReady):
                calls = event.calls
            else:
                stats = event.stats
        return "".join(text_parts), calls, stats


__all__ = [
    "PRIORITY_AUTOMATION",
    "EngineBusyError",
    "EngineError",
    "EngineSettings",
    "EngineStatus",
    "LocalEngine",
    "StepFinished",
    "StepOptions",
    "TextDelta",
    "ToolCallsReady",
]
