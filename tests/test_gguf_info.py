"""Reading GGUF headers: real models, crafted files, and broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.gemma_edge.engine.chat_format import (
    Gemma4Format,
    GemmaTurnFormat,
    JinjaFormat,
    UnsupportedModelError,
    select_chat_format,
)
from custom_components.gemma_edge.engine.gguf_info import GGUFError, read_gguf_info

from .gguf_files import write_gguf


def test_real_models(smollm2_path: Path, gemma3_path: Path) -> None:
    smol = read_gguf_info(smollm2_path)
    assert smol.architecture == "llama" and smol.is_text_model
    assert "<|im_start|>" in (smol.chat_template or "")
    assert smol.context_length == 8192
    gemma = read_gguf_info(gemma3_path)
    assert gemma.architecture == "gemma3" and gemma.chat_template is None
    assert isinstance(select_chat_format(gemma.architecture, gemma.chat_template), GemmaTurnFormat)
    assert isinstance(select_chat_format(smol.architecture, smol.chat_template), JinjaFormat)


def test_format_selection() -> None:
    assert isinstance(select_chat_format("gemma4", None), Gemma4Format)
    native = select_chat_format("gemma4", "{{ '<|tool_call>' }}")
    assert isinstance(native, JinjaFormat) and native.syntax == "native"
    with pytest.raises(UnsupportedModelError):
        select_chat_format("qwen2", None)


def test_crafted_header(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "x.gguf",
        {"general.architecture": "clip", "general.name": "proj", "tokenizer.ggml.tokens": ["a", "b"], "clip.has_vision_encoder": True},
    )
    info = read_gguf_info(path)
    assert (info.architecture, info.name, info.is_text_model) == ("clip", "proj", False)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a GGUF file"),
        (b"PK\x03\x04 zip archive", "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00", "ends inside its header"),
        (b"GGUF\x09\x00\x00\x00" + bytes(16), "unsupported GGUF version 9"),
    ],
)
def test_broken_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=reason):
        read_gguf_info(path)


def test_missing_architecture_and_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="does not name its architecture"):
        read_gguf_info(write_gguf(tmp_path / "a.gguf", {"general.name": "x"}))
    with pytest.raises(GGUFError, match="does not exist"):
        read_gguf_info(tmp_path / "nope.gguf")


def test_truncated_real_model(tmp_path: Path, smollm2_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    with smollm2_path.open("rb") as handle:
        path.write_bytes(handle.read(3000))
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(path)
