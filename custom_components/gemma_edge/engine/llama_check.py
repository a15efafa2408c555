"""llama.cpp's backends, and the check that llama-cpp-python runs on this CPU.

Run as a script in a child process (``python llama_check.py MODEL``): it imports llama_cpp, loads
ggml's backends, evaluates a few tokens of the tiny check model and prints the version. A build
for a newer CPU dies there with SIGILL, not in Home Assistant. Only the standard library and
llama_cpp are imported, so the script runs by path without our package.
"""

from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path
import sys
from typing import Any


def loaded_ggml(lib_dir: Path) -> ctypes.CDLL | None:
    """The libggml that llama_cpp's libllama was linked with, already in this process.

    Found by its soname with RTLD_NOLOAD: a wheel stores libggml.so, .so.0 and .so.0.x as separate
    files (zip has no symlinks), and opening another of them by path would map a second copy with
    a registry of its own that libllama never sees.
    """
    try:
        return ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
    except OSError:
        library = lib_dir / "libggml.so.0"
        return ctypes.CDLL(str(library)) if library.exists() else None


def backend_folder(lib_dir: Path) -> Path | None:
    """Where the build's CPU backend modules are: llama_cpp/lib, or the bin folder ggml's own
    install rule uses (``<site-packages>/bin``) when the wheel was built without moving them."""
    for folder in (lib_dir, lib_dir.parent.parent / "bin"):
        if any(folder.glob("libggml-cpu*.so")):
            return folder
    return None


def load_ggml_backends(llama_cpp: Any) -> int:
    """Register ggml's backends when the build loads them dynamically; return how many there are.

    A wheel built with GGML_BACKEND_DL=ON and GGML_CPU_ALL_VARIANTS=ON carries its CPU code as
    ``libggml-cpu-<variant>.so`` modules and registers none until asked: ggml's
    ``ggml_backend_load_all_from_path`` loads the best variant this CPU can run. A build with the
    CPU backend linked in (ours from source) already has it, and nothing is loaded.
    """
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = loaded_ggml(lib_dir)
    if ggml is None:
        return -1
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    if ggml.ggml_backend_reg_count() == 0 and (folder := backend_folder(lib_dir)) is not None:
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        ggml.ggml_backend_load_all_from_path(str(folder).encode())
    return int(ggml.ggml_backend_reg_count())


def run_check(model_path: str) -> str:
    """Evaluate four tokens of the tiny model; return llama_cpp's version or raise RuntimeError."""
    import llama_cpp  # noqa: PLC0415

    llama_cpp.llama_backend_init()
    if load_ggml_backends(llama_cpp) == 0:
        raise RuntimeError("llama.cpp found no backend for this CPU")
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    llm.eval([1, 5, 6, 7])
    logits = [float(value) for value in llm.scores[llm.n_tokens - 1]]
    if not logits or not all(math.isfinite(value) for value in logits) or not any(logits):
        raise RuntimeError("llama.cpp computed invalid numbers on this CPU")
    return str(llama_cpp.__version__)


if __name__ == "__main__":
    print(run_check(sys.argv[1]))  # noqa: T201 - the parent reads the version from stdout
