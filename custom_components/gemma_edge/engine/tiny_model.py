"""A tiny random-weight llama model (~60 KB GGUF).

It is for checking that llama.cpp runs on this CPU. Importing llama-cpp-python only
loads libraries; the instructions a build was compiled for run in its matrix kernels.
Evaluating a few tokens of this model in a child process runs the quantized (Q8_0 and
Q4_0) and float kernels a real model uses, so a build that needs a newer CPU dies there
with SIGILL instead of in Home Assistant's process. Plain Python, written with
``struct``.
"""

from __future__ import annotations

from pathlib import Path
import random
import struct

N_EMBD = 64
N_FF = 128
N_HEAD = 2
N_VOCAB = 288
_ALIGNMENT = 32
_GGML_F32, _GGML_Q4_0, _GGML_Q8_0 = 0, 2, 8
_U32, _I32, _F32, _STRING, _ARRAY = 4, 5, 6, 8, 9


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(value: object) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + _string(value)
    if isinstance(value, float):
        return struct.pack("<If", _F32, value)
    if isinstance(value, int):
        return struct.pack("<II", _U32, value)
    if isinstance(value, tuple) and value[0] == "f32":
        return struct.pack("<IIQ", _ARRAY, _F32, len(value[1])) + struct.pack(
            f"<{len(value[1])}f", *value[1]
        )
    if isinstance(value, tuple) and value[0] == "i32":
        return struct.pack("<IIQ", _ARRAY, _I32, len(value[1])) + struct.pack(
            f"<{len(value[1])}i", *value[1]
        )
    if isinstance(value, list):
        return struct.pack("<IIQ", _ARRAY, _STRING, len(value)) + b"".join(
            _string(v) for v in value
        )
    raise TypeError(value)


def _quantized(rng: random.Random, kind: int, values: int) -> bytes:
    """Return random quantized blocks of 32 values each.

    A block is an fp16 scale and 32 int8 (Q8_0) or 32 packed 4-bit (Q4_0) weights.
    """
    scale = struct.pack("<e", 0.02)
    per_block = 32 if kind == _GGML_Q8_0 else 16
    return b"".join(scale + rng.randbytes(per_block) for _ in range(values // 32))


def _tensor_data(rng: random.Random, kind: int, dims: tuple[int, ...]) -> bytes:
    count = 1
    for dim in dims:
        count *= dim
    if kind == _GGML_F32:
        return struct.pack(f"<{count}f", *([1.0] * count))
    return _quantized(rng, kind, count)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Unknown, BOS, EOS, the 256 byte tokens (so any text tokenizes), a few words."""
    words = [f"\u2581{chr(ord('a') + i)}" for i in range(N_VOCAB - 3 - 256)]
    tokens = [
        "<unk>",
        "<s>",
        "</s>",
        *(f"<0x{byte:02X}>" for byte in range(256)),
        *words,
    ]
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)  # unknown, control, byte, normal
    return tokens, [0.0] * N_VOCAB, types


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the model to ``path`` and return it."""
    tokens, scores, types = _vocabulary()
    metadata: dict[str, object] = {
        "general.architecture": "llama",
        "general.name": "gemma-edge cpu check",
        "llama.context_length": 256,
        "llama.embedding_length": N_EMBD,
        "llama.block_count": 1,
        "llama.feed_forward_length": N_FF,
        "llama.attention.head_count": N_HEAD,
        "llama.attention.head_count_kv": N_HEAD,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": ("f32", scores),
        "tokenizer.ggml.token_type": ("i32", types),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    tensors: list[tuple[str, int, tuple[int, ...]]] = [
        ("token_embd.weight", _GGML_Q8_0, (N_EMBD, N_VOCAB)),
        ("blk.0.attn_norm.weight", _GGML_F32, (N_EMBD,)),
        *(
            (f"blk.0.attn_{part}.weight", _GGML_Q8_0, (N_EMBD, N_EMBD))
            for part in ("q", "k", "v", "output")
        ),
        ("blk.0.ffn_norm.weight", _GGML_F32, (N_EMBD,)),
        ("blk.0.ffn_gate.weight", _GGML_Q4_0, (N_EMBD, N_FF)),
        ("blk.0.ffn_up.weight", _GGML_Q4_0, (N_EMBD, N_FF)),
        ("blk.0.ffn_down.weight", _GGML_Q4_0, (N_FF, N_EMBD)),
        ("output_norm.weight", _GGML_F32, (N_EMBD,)),
        ("output.weight", _GGML_Q8_0, (N_EMBD, N_VOCAB)),
    ]
    rng = random.Random(seed)
    blobs = [_tensor_data(rng, kind, dims) for _, kind, dims in tensors]
    infos, offset = [], 0
    for (name, kind, dims), blob in zip(tensors, blobs, strict=True):
        infos.append(
            _string(name)
            + struct.pack("<I", len(dims))
            + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", kind, offset)
        )
        offset += -(-len(blob) // _ALIGNMENT) * _ALIGNMENT
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    header += b"".join(
        _string(key) + _value(value) for key, value in metadata.items()
    ) + b"".join(infos)
    data = b"".join(blob + bytes(-len(blob) % _ALIGNMENT) for blob in blobs)
    path.write_bytes(header + bytes(-len(header) % _ALIGNMENT) + data)
    return path
