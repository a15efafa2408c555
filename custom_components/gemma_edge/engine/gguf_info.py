"""Read a GGUF file's header metadata without loading the model.

Used to validate a model file and to find its chat template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import struct
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"

# GGUF value types -> struct format of scalar types
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9

# Architectures llama.cpp can run as chat models (a subset we accept for a conversation
# agent).
TEXT_ARCHITECTURES = frozenset(
    {
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3n",
        "gemma4",
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "granite",
        "smollm3",
        "olmo2",
        "exaone",
    }
)


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the header says about a model."""

    path: str
    size_bytes: int
    version: int
    architecture: str
    name: str | None
    chat_template: str | None
    context_length: int | None

    @property
    def is_text_model(self) -> bool:
        """The architecture is one we accept as a chat model."""
        return self.architecture in TEXT_ARCHITECTURES


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise GGUFError("the file ends inside its header (truncated download?)")
    return struct.unpack(fmt, data)[0]


def _read_string(handle: BinaryIO, limit: int) -> str:
    length = _read(handle, "<Q")
    if length > limit:
        raise GGUFError("the header holds an implausibly long string (corrupt file?)")
    data = handle.read(length)
    if len(data) != length:
        raise GGUFError("the file ends inside its header (truncated download?)")
    return data.decode("utf-8", errors="replace")


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        handle.seek(struct.calcsize(_SCALARS[kind]), 1)
    elif kind == _STRING:
        handle.seek(_read(handle, "<Q"), 1)
    elif kind == _ARRAY:
        item_kind = _read(handle, "<I")
        count = _read(handle, "<Q")
        if item_kind in _SCALARS:
            handle.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
        else:
            for _ in range(count):
                _skip_value(handle, item_kind)
    else:
        raise GGUFError(f"unknown metadata value type {kind} (corrupt file?)")


def _read_value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(handle, 1 << 24)
    raise GGUFError(f"unexpected metadata value type {kind}")


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Read the header of a GGUF file. Raises GGUFError with a readable reason."""
    file = Path(path)
    if not file.is_file():
        raise GGUFError(f"{file} does not exist or is not a file")
    wanted_suffix = (".context_length",)
    found: dict[str, Any] = {}
    with file.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{file.name} is not a GGUF file")
        version = _read(handle, "<I")
        if version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {version}")
        _read(handle, "<Q")  # tensor count
        kv_count = _read(handle, "<Q")
        if kv_count > 100_000:
            raise GGUFError(
                "the header claims too many metadata entries (corrupt file?)"
            )
        for _ in range(kv_count):
            key = _read_string(handle, 1 << 16)
            kind = _read(handle, "<I")
            if key in (
                "general.architecture",
                "general.name",
                "tokenizer.chat_template",
            ) or key.endswith(wanted_suffix):
                found[key] = _read_value(handle, kind)
            else:
                _skip_value(handle, kind)
    architecture = found.get("general.architecture")
    if not isinstance(architecture, str):
        raise GGUFError(f"{file.name} does not name its architecture")
    return GGUFInfo(
        path=str(file),
        size_bytes=file.stat().st_size,
        version=version,
        architecture=architecture,
        name=found.get("general.name"),
        chat_template=found.get("tokenizer.chat_template"),
        context_length=found.get(f"{architecture}.context_length"),
    )
