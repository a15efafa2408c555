"""A tiny random-weight Gemma 4 vision projector (``gemma4v`` mmproj) for tests.

It runs llama.cpp's real image path end to end (bytes -> bitmap -> image tokens -> ViT ->
projection into the text model's embedding space -> evaluation) in well under a second on the
small test models. The weights are random, so what the model "sees" is noise: tests assert what
is deterministic (token counts, that the call returns, structure), never what the model says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EMBEDDING = 64
FEED_FORWARD = 128
BLOCKS = 2
HEADS = 4
PATCH = 16
POSITIONS = 1024


def write_tiny_mmproj(path: Path, text_embedding: int, *, seed: int = 0) -> Path:
    """Write a gemma4v mmproj whose projection matches a text model of width ``text_embedding``."""
    import gguf  # noqa: PLC0415 - test-only dependency

    rng = np.random.default_rng(seed)

    def tensor(*ne: int, scale: float = 0.02) -> np.ndarray:
        # ggml lists dimensions innermost first; numpy wants them the other way round
        return (rng.standard_normal(tuple(reversed(ne))) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch="clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "gemma4v")
    writer.add_uint32("clip.vision.embedding_length", EMBEDDING)
    writer.add_uint32("clip.vision.feed_forward_length", FEED_FORWARD)
    writer.add_uint32("clip.vision.block_count", BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.projection_dim", text_embedding)
    writer.add_uint32("clip.vision.image_size", 768)
    writer.add_uint32("clip.vision.patch_size", PATCH)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_uint32("clip.vision.projector.scale_factor", 3)

    writer.add_tensor("v.patch_embd.weight", tensor(PATCH, PATCH, 3, EMBEDDING))
    writer.add_tensor("v.position_embd.weight", tensor(EMBEDDING, POSITIONS, 2))
    for block in range(BLOCKS):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{prefix}.{name}.weight", tensor(EMBEDDING, EMBEDDING))
        writer.add_tensor(f"{prefix}.ffn_up.weight", tensor(EMBEDDING, FEED_FORWARD))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", tensor(EMBEDDING, FEED_FORWARD))
        writer.add_tensor(f"{prefix}.ffn_down.weight", tensor(FEED_FORWARD, EMBEDDING))
        for name in ("ln1", "ln2", "attn_post_norm", "ffn_post_norm"):
            writer.add_tensor(f"{prefix}.{name}.weight", np.ones(EMBEDDING, dtype=np.float32))
        for name in ("attn_q_norm", "attn_k_norm"):
            writer.add_tensor(f"{prefix}.{name}.weight", np.ones(EMBEDDING // HEADS, dtype=np.float32))
    writer.add_tensor("mm.input_projection.weight", tensor(EMBEDDING, text_embedding))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def text_embedding_of(model_path: Path) -> int:
    """The text model's embedding width (the projector's output width must match it)."""
    import gguf  # noqa: PLC0415

    reader = gguf.GGUFReader(str(model_path))
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    field = reader.fields[f"{arch}.embedding_length"]
    return int(field.parts[-1][0])
