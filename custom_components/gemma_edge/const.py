"""Constants of the Gemma Edge Agent integration."""

from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Final

DOMAIN: Final = "gemma_edge"
LOGGER = logging.getLogger(__package__)
DEFAULT_NAME: Final = "Gemma Edge Agent"
DEFAULT_CONVERSATION_NAME: Final = "Gemma conversation"

# Config entry data (one entry = one local model engine)
CONF_MODEL_SOURCE: Final = "model_source"
CONF_MODEL_PATH: Final = "model_path"
CONF_MMPROJ_PATH: Final = "mmproj_path"
CONF_DOWNLOAD_DIR: Final = "download_dir"
CONF_VISION: Final = "vision"  # preset step: also download the vision projector
CONF_N_CTX: Final = "context_size"
CONF_THREADS: Final = "threads"
CONF_FLASH_ATTN: Final = "flash_attention"

SOURCE_LOCAL: Final = "local"
# A llama.cpp server (llama-server, or llama-cpp-python's llama_cpp.server) runs the
# model instead
SOURCE_SERVER: Final = "server"
CONF_SERVER_URL: Final = "server_url"
CONF_SERVER_API_KEY: Final = "server_api_key"

# Vision (entry options; read live, no reload)
CONF_IMAGE_MAX_SIDE: Final = "image_max_side"
CONF_CAMERA_MIN_INTERVAL: Final = "camera_min_interval"
# Keep the user's words with the agent's actions in events, the Last action sensor and
# the activity calendar (all recorded, readable by every user): off by default.
CONF_KEEP_WORDS: Final = "keep_words"
DEFAULT_KEEP_WORDS: Final = False
DEFAULT_IMAGE_MAX_SIDE: Final = (
    768  # <= 256 image tokens per snapshot (see engine/images.py)
)
DEFAULT_CAMERA_MIN_INTERVAL: Final = (
    10  # seconds between automation-driven analyses of a camera
)

DEFAULT_N_CTX: Final = 8192
DEFAULT_THREADS: Final = 0  # physical cores
DEFAULT_FLASH_ATTN: Final = True

# Conversation subentry data
CONF_PROMPT: Final = "prompt"
CONF_TEMPERATURE: Final = "temperature"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_MAX_HISTORY: Final = "max_history"
CONF_TOOL_CHOICE: Final = "tool_choice"
CONF_SENSITIVE_ACTIONS: Final = "sensitive_actions"
# Home Assistant's sentence matcher handles the commands it recognises, without the
# model; the model answers the rest.
CONF_INSTANT_COMMANDS: Final = "instant_commands"
DEFAULT_INSTANT_COMMANDS: Final = True

DEFAULT_TEMPERATURE: Final = 0.2
DEFAULT_MAX_TOKENS: Final = 256
DEFAULT_MAX_HISTORY: Final = 10
DEFAULT_TOOL_CHOICE: Final = "auto"
TOOL_CHOICES: Final = ("auto", "required")
DEFAULT_SENSITIVE_ACTIONS: Final = "confirm"
SENSITIVE_CHOICES: Final = ("allow", "confirm", "deny")

MAX_TOOL_ITERATIONS: Final = 6

# Speech-to-text subentry data
CONF_STT_MODEL: Final = "model"
CONF_STT_LANGUAGE: Final = "language"
CONF_STT_BEAM_SIZE: Final = "beam_size"
CONF_STT_VAD: Final = "vad_filter"
DEFAULT_STT_NAME: Final = "Gemma speech-to-text"

# AI Task subentry data
DEFAULT_AI_TASK_NAME: Final = "Gemma AI Task"
DEFAULT_AI_TASK_MAX_TOKENS: Final = 512


@dataclass(frozen=True)
class ModelPreset:
    """A Gemma 4 model we know how to download."""

    key: str
    title: str
    repo_id: str
    filename: str
    ram_bytes: int  # resident memory while loaded (estimate)
    mmproj_filename: str  # the vision projector (optional download)


PRESETS: Final = {
    "gemma4_e4b": ModelPreset(
        key="gemma4_e4b",
        title="Gemma 4 E4B",
        repo_id="ggml-org/gemma-4-E4B-it-GGUF",
        filename="gemma-4-E4B-it-Q4_0.gguf",
        ram_bytes=5_000_000_000,
        mmproj_filename="mmproj-gemma-4-E4B-it-Q8_0.gguf",
    ),
    "gemma4_e2b": ModelPreset(
        key="gemma4_e2b",
        title="Gemma 4 E2B",
        repo_id="ggml-org/gemma-4-E2B-it-GGUF",
        filename="gemma-4-E2B-it-Q4_0.gguf",
        ram_bytes=3_300_000_000,
        mmproj_filename="mmproj-gemma-4-E2B-it-Q8_0.gguf",
    ),
}

# Subentry types: agents and AI Tasks run on the entry's model; speech-to-text.
SUBENTRY_CONVERSATION: Final = "conversation"
SUBENTRY_AI_TASK: Final = "ai_task_data"
SUBENTRY_STT: Final = "stt"
# Cloud sync (at most one per engine entry): the webhook that receives the hub's events.
SUBENTRY_CLOUD_SYNC: Final = "cloud_sync"
CONF_SYNC_URL: Final = "url"
CONF_SYNC_SECRET: Final = "secret"
CONF_SYNC_STATES: Final = "report_states"
DEFAULT_SYNC_STATES: Final = True
CONF_SYNC_MAX_EVENTS: Final = "max_events"
DEFAULT_SYNC_MAX_EVENTS: Final = 10_000
CONF_SYNC_MAX_MB: Final = "max_mb"
DEFAULT_SYNC_MAX_MB: Final = 20
CONF_SYNC_ROTATE_SECRET: Final = "rotate_secret"
CONF_SYNC_TURNS: Final = "report_turns"
DEFAULT_SYNC_TURNS: Final = True
# What was said (the user's words and the answer) goes to the cloud only when chosen.
CONF_SYNC_WORDS: Final = "report_words"
DEFAULT_SYNC_WORDS: Final = False
CONF_SYNC_REMOTE_ACTIONS: Final = "remote_actions"
# The id of the entry's webhook for commands the cloud pushes.
CONF_SYNC_WEBHOOK_ID: Final = "webhook_id"


def engine_unique_id(entry_id: str, key: str) -> str:
    """Return the unique id of an engine's entity ``key`` (its translation key)."""
    return f"{entry_id}_{key}"
