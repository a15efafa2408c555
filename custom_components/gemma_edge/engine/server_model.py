"""A model behind a llama.cpp server, used exactly like a loaded one.

Plain Python, blocking. For hubs where llama-cpp-python cannot be installed (or a
stronger machine on the LAN runs the model): llama.cpp's ``llama-server`` (the llama.cpp
add-on) or llama-cpp-python's ``python -m llama_cpp.server``. The engine keeps rendering
prompts itself (the same chat formats, so the prompt is byte for byte what the
in-process model would see and its prefix stays stable) and sends them to
``/v1/completions`` with the tool-call or JSON grammar in ``grammar``, streamed. The
server keeps the evaluated prefix of its slot (``cache_prompt``; llama-cpp-python always
does), so a turn re-evaluates only what changed. Token counts come from the server's
tokenizer; reused/evaluated counts from the server's timings where it reports them
(llama-server), else from the previous prompt's common prefix (llama_cpp.server keeps
that prefix too).

All methods run on the engine's worker thread, one request at a time, like LlamaModel's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
import json
import logging
import time
from typing import Any

import httpx

from .chat_format import (
    TEMPLATE_MARKERS,
    ChatFormat,
    Gemma4Format,
    GemmaTurnFormat,
    JinjaFormat,
)
from .llama_model import (
    ContextOverflowError,
    EngineError,
    EngineSettings,
    GenerationRequest,
    GenerationStats,
    ModelLoadError,
    VisionUnavailableError,
)
from .vision import MEDIA_MARKER

_LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# A step may wait for the server's other clients; tokens then stream continuously.
READ_TIMEOUT_S = 300.0
# The ChatML template (SmolLM2 and other models without Gemma's turns) for servers that
# do not report their model's own template (llama_cpp.server).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n'"
    " + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_FINISH_REASONS = {"stop": "end", "length": "length"}
_STOP_TYPES = {"eos": "end", "word": "stop", "limit": "length"}


class ServerUnavailableError(EngineError):
    """The server cannot be reached or answered with an error.

    The message says which.
    """


class ServerAuthError(EngineError):
    """The server refused the API key (HTTP 401/403): retrying will not help."""


def _refused(response: httpx.Response, url: str) -> None:
    if response.status_code in (401, 403):
        raise ServerAuthError(
            f"the llama.cpp server at {url} refused the API key"
            f" (HTTP {response.status_code})"
        )


class ServerModel:
    """A llama.cpp server's model with LlamaModel's interface.

    That is load, tokenize, prime and generate.
    """

    vision_loaded = False

    def __init__(
        self, settings: EngineSettings, owner: Callable[[], bool] | None = None
    ) -> None:
        """Set up a model for the server in the settings; load connects to it."""
        if not settings.server_url:
            raise ValueError("a server model needs the server's URL")
        self.settings = settings
        self._owner = owner
        self._client: httpx.Client | None = None
        self.kind = ""  # "llama-server" or "llama_cpp.server"
        self.model_id = ""
        self.chat_format: ChatFormat | None = None
        self.architecture = ""
        self.native_markers = False
        self.markers: tuple[str, ...] = TEMPLATE_MARKERS
        self.has_vision = False
        self.n_ctx = settings.n_ctx
        self._bos_text = ""
        self._media_marker = MEDIA_MARKER
        self._last_prompt: list[int] = []

    @property
    def loaded(self) -> bool:
        """Connected, with a chat format."""
        return self._client is not None and self.chat_format is not None

    def _on_worker(self) -> None:
        if self._owner is not None and not self._owner():
            raise RuntimeError("ServerModel used outside its worker thread")

    # -- connection -------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self._client is not None
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ServerUnavailableError(
                f"the llama.cpp server at {self.settings.server_url} cannot be reached:"
                f" {err}"
            ) from err
        _refused(response, str(self.settings.server_url))
        if response.status_code >= 400:
            raise ServerUnavailableError(
                f"the llama.cpp server answered {method} {path}"
                f" with HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError as err:
            raise ServerUnavailableError(
                f"the llama.cpp server sent no JSON for {path}"
            ) from err

    def load(self) -> None:
        """Connect to the server.

        Find which server, which model, its tokenizer and chat format, its context size.
        """
        self._on_worker()
        if self.loaded:
            return
        headers = (
            {"Authorization": f"Bearer {self.settings.server_api_key}"}
            if self.settings.server_api_key
            else {}
        )
        self._client = httpx.Client(
            base_url=str(self.settings.server_url).rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )
        try:
            self._connect()
        except EngineError:
            self.close()
            raise

    def ping(self) -> None:
        """Ask the server for its models (blocking): raise if it does not answer."""
        self._on_worker()
        if self._client is None:
            raise ServerUnavailableError("not connected to the llama.cpp server")
        self._request("GET", "/v1/models")

    def _connect(self) -> None:
        models = self._request("GET", "/v1/models").get("data") or []
        if not models:
            raise ModelLoadError(
                f"the llama.cpp server at {self.settings.server_url}"
                " has no model loaded"
            )
        self.model_id = str(models[0].get("id", ""))
        props = self._props()
        self.kind = "llama-server" if props is not None else "llama_cpp.server"
        template = str(props.get("chat_template") or "") if props else ""
        if props:
            self.n_ctx = int(
                (props.get("default_generation_settings") or {}).get("n_ctx")
                or self.settings.n_ctx
            )
            self.has_vision = bool((props.get("modalities") or {}).get("vision"))
            self._media_marker = str(props.get("media_marker") or MEDIA_MARKER)
        self.chat_format = self._chat_format(
            template, str((props or {}).get("eos_token") or "")
        )
        _LOGGER.info(
            "Connected to %s at %s: model %s (%s, format %s), n_ctx=%d",
            self.kind,
            self.settings.server_url,
            self.model_id,
            self.architecture or "architecture unknown",
            self.chat_format.name,
            self.n_ctx,
        )

    def _props(self) -> dict[str, Any] | None:
        """Return llama-server's /props; None elsewhere.

        The props hold the model's template, the context size and the modalities.
        """
        assert self._client is not None
        try:
            response = self._client.get("/props")
        except httpx.HTTPError as err:
            raise ServerUnavailableError(
                f"the llama.cpp server at {self.settings.server_url} cannot be reached:"
                f" {err}"
            ) from err
        _refused(response, str(self.settings.server_url))
        if response.status_code != 200:
            return None
        try:
            props = response.json()
        except ValueError:
            return None
        return (
            props
            if isinstance(props, dict) and "default_generation_settings" in props
            else None
        )

    def _chat_format(self, template: str, eos: str) -> ChatFormat:
        """Pick Gemma's format by its turn tokens; the server's template otherwise."""
        added = len(self._tokenize_raw(""))  # BOS, where the model adds one

        def one_token(marker: str) -> bool:
            return len(self._tokenize_raw(marker)) - added == 1

        if one_token("<|turn>"):
            self.architecture, self.native_markers, self._bos_text = (
                "gemma4",
                True,
                "<bos>",
            )
            return Gemma4Format()
        if one_token("<start_of_turn>"):
            self.architecture, self._bos_text = "gemma3", "<bos>"
            return GemmaTurnFormat()
        if template:
            # the server adds BOS itself: the template must not write it as text
            return JinjaFormat(template, bos="", eos=eos)
        if one_token("<|im_start|>"):
            return JinjaFormat(CHATML_TEMPLATE)
        raise ModelLoadError(
            f"the model of the {self.kind} at {self.settings.server_url} is not a Gemma"
            " model and the server does not report a chat template (llama-server does)"
        )

    def close(self) -> None:
        """Close the connection; the model is then no longer loaded."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self.chat_format = None

    def release_vision(self) -> bool:
        """Return False: the server's vision projector is not ours to free."""
        return False

    # -- tokens -----------------------------------------------------------------------

    def _tokenize_raw(self, text: str) -> list[int]:
        """Return the server's own tokens for a prompt string.

        BOS is included as its completions add it.
        """
        if self.kind == "llama-server":
            body = {"content": text, "add_special": True, "parse_special": True}
            return list(self._request("POST", "/tokenize", json=body)["tokens"])
        return list(
            self._request(
                "POST", "/extras/tokenize", json={"input": text, "model": self.model_id}
            )["tokens"]
        )

    def _wire_prompt(self, prompt: str) -> str:
        """Return the rendered prompt as sent.

        That is without a BOS written as text (the server adds the token).
        """
        return (
            prompt[len(self._bos_text) :]
            if self._bos_text and prompt.startswith(self._bos_text)
            else prompt
        )

    def tokenize(self, text: str) -> list[int]:
        """Tokenize a rendered prompt with the server's tokenizer, as it is sent."""
        self._on_worker()
        return self._tokenize_raw(self._wire_prompt(text))

    # -- generation -------------------------------------------------------------------

    def prime(self, prompt: str, should_stop: Callable[[], bool]) -> int:
        """Have the server evaluate the prompt into its cache.

        One token is generated: a request for none means "until the context is full" to
        llama_cpp.server. Background work: a server that is down or a prompt that does
        not fit only means nothing is primed.
        """
        self._on_worker()
        if should_stop():
            return 0
        try:
            stats = self.generate(
                GenerationRequest(prompt=prompt, max_tokens=1, temperature=0.0),
                lambda _piece: True,
            )
        except EngineError as err:
            _LOGGER.debug("Priming the server's cache failed: %s", err)
            return 0
        return stats.prompt_tokens

    def generate(
        self, request: GenerationRequest, on_text: Callable[[str], bool]
    ) -> GenerationStats:
        """Stream one completion.

        on_text gets each piece and returns False to stop early.
        """
        self._on_worker()
        if request.images and not self.has_vision:
            raise VisionUnavailableError(
                f"the {self.kind or 'server'} at {self.settings.server_url}"
                " cannot see images"
            )
        started = time.monotonic()
        # the text's tokens (an image's are counted by the server, which refuses what
        # does not fit)
        tokens = self.tokenize(request.prompt.replace(MEDIA_MARKER, ""))
        if not request.images and len(tokens) + request.max_tokens > self.n_ctx:
            raise ContextOverflowError(len(tokens), self.n_ctx, request.max_tokens)
        stats = GenerationStats(prompt_tokens=len(tokens), stop_reason="length")
        common = 0
        for cached, token in zip(self._last_prompt, tokens, strict=False):
            if cached != token:
                break
            common += 1
        stats.reused_tokens = min(common, len(tokens) - 1)
        self._last_prompt = [] if request.images else tokens
        if self.kind == "llama-server":
            if request.images and (props := self._props()):
                # llama-server draws a new media marker each time it starts
                self._media_marker = str(props.get("media_marker") or MEDIA_MARKER)
            path, body = "/completion", self._native_body(request)
        else:
            path, body = "/v1/completions", self._openai_body(request)
        if request.grammar:
            body["grammar"] = request.grammar
        first_token_at = self._stream(path, body, stats, on_text)
        finished = time.monotonic()
        if request.images:
            stats.image_tokens = max(0, stats.prompt_tokens - len(tokens))
        stats.evaluated_tokens = stats.prompt_tokens - stats.reused_tokens
        stats.total_s = finished - started
        if first_token_at:
            stats.time_to_first_token_s = first_token_at - started
            if stats.completion_tokens > 1 and finished > first_token_at:
                stats.decode_tokens_per_s = (stats.completion_tokens - 1) / (
                    finished - first_token_at
                )
        return stats

    def _sampling(self, request: GenerationRequest) -> dict[str, Any]:
        return {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
            "repeat_penalty": 1.0,
            "stop": list(request.stop),
            "stream": True,
            "seed": self.settings.seed,
        }

    def _native_body(self, request: GenerationRequest) -> dict[str, Any]:
        """Return the body for llama-server's own /completion.

        It has prompt caching, grammar, and images with its media marker.
        """
        prompt: Any = self._wire_prompt(request.prompt)
        if request.images:
            prompt = {
                "prompt_string": prompt.replace(MEDIA_MARKER, self._media_marker),
                "multimodal_data": [
                    base64.b64encode(image).decode("ascii") for image in request.images
                ],
            }
        return {
            "prompt": prompt,
            "n_predict": request.max_tokens,
            "cache_prompt": True,
            **self._sampling(request),
        }

    def _openai_body(self, request: GenerationRequest) -> dict[str, Any]:
        """Return the body for llama_cpp.server's OpenAI-style /v1/completions.

        That server keeps its prefix by itself.
        """
        return {
            "model": self.model_id,
            "prompt": self._wire_prompt(request.prompt),
            "max_tokens": request.max_tokens,
            **self._sampling(request),
        }

    def _stream(
        self,
        path: str,
        body: dict[str, Any],
        stats: GenerationStats,
        on_text: Callable[[str], bool],
    ) -> float:
        """Read the server-sent events.

        Return when the first text came (0.0 if none).
        """
        assert self._client is not None
        first_token_at = 0.0
        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _refused(response, str(self.settings.server_url))
                    raise ServerUnavailableError(
                        "the llama.cpp server refused the request"
                        f" (HTTP {response.status_code}): {response.text[:200]}"
                    )
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line.removeprefix("data:").strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ServerUnavailableError(
                            f"the llama.cpp server failed: {chunk['error']}"
                        )
                    piece, finished = _read_chunk(chunk, stats)
                    if piece:
                        first_token_at = first_token_at or time.monotonic()
                        stats.completion_tokens += 1
                        if not on_text(piece):
                            stats.stop_reason = "cancelled"
                            break  # closing the stream stops the server's generation
                    if finished:
                        # llama-server's own count (a streamed piece can hold several
                        # tokens)
                        stats.completion_tokens = int(
                            (chunk.get("timings") or {}).get(
                                "predicted_n", stats.completion_tokens
                            )
                        )
                        break
        except httpx.HTTPError as err:
            raise ServerUnavailableError(
                f"the llama.cpp server connection broke: {err}"
            ) from err
        except ValueError as err:
            raise ServerUnavailableError(
                f"the llama.cpp server sent a malformed event: {err}"
            ) from err
        return first_token_at


def _read_chunk(chunk: dict[str, Any], stats: GenerationStats) -> tuple[str, bool]:
    """Read one streamed event of either API: its text, and whether it was the last one.

    The last event's counts (llama-server: prompt tokens taken from the cache and
    evaluated, images included) replace the estimates.
    """
    if "choices" in chunk:  # OpenAI style
        choice = (chunk.get("choices") or [{}])[0]
        reason = choice.get("finish_reason")
        if reason:
            stats.stop_reason = _FINISH_REASONS.get(reason, str(reason))
        return str(choice.get("text") or ""), False
    finished = bool(chunk.get("stop"))
    if finished:
        stats.stop_reason = _STOP_TYPES.get(str(chunk.get("stop_type")), "length")
        timings = chunk.get("timings") or {}
        if "cache_n" in timings and "prompt_n" in timings:
            stats.reused_tokens = int(timings["cache_n"])
            stats.prompt_tokens = stats.reused_tokens + int(timings["prompt_n"])

    return str(chunk.get("content") or ""), finished


def probe_server(settings: EngineSettings) -> tuple[str, str]:
    """Connect once (blocking); return the server's kind and model name.

    Or raise ServerUnavailableError / ModelLoadError saying what is wrong. For the
    config flow.
    """
    model = ServerModel(settings)
    model.load()
    try:
        return model.kind, model.model_id.rsplit("/", 1)[-1]
    finally:
        model.close()
