"""llama.cpp's backends, and the check that llama-cpp-python runs on this CPU.

Run as a script in a child process (``python llama_check.py MODEL [CPU_VARIANT]``): it
imports llama_cpp, loads ggml's backends (all of them, or the one CPU variant named),
evaluates a few tokens of the tiny check model and prints the version. A build for a
newer CPU dies there with SIGILL, not in Home Assistant. ``python llama_check.py
--variants`` lists the CPU variants a backend-DL build carries, best first. Only the
standard library and llama_cpp are imported, so the script runs by path without our
package.
"""

from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path
import sys
from typing import Any


def loaded_ggml(lib_dir: Path) -> ctypes.CDLL | None:
    """Return the libggml that llama_cpp's libllama was linked with, in this process.

    It is already loaded, and found by its soname with RTLD_NOLOAD: a wheel stores
    libggml.so, .so.0 and .so.0.x as separate files (zip has no symlinks), and opening
    another of them by path would map a second copy with a registry of its own that
    libllama never sees.
    """
    try:
        return ctypes.CDLL("libggml.so.0", mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
    except OSError:
        library = lib_dir / "libggml.so.0"
        return ctypes.CDLL(str(library)) if library.exists() else None


def backend_folder(lib_dir: Path) -> Path | None:
    """Return the folder of the build's CPU backend modules.

    That is llama_cpp/lib, or the bin folder ggml's own install rule uses
    (``<site-packages>/bin``) when the wheel was built without moving them.
    """
    for folder in (lib_dir, lib_dir.parent.parent / "bin"):
        if any(folder.glob("libggml-cpu*.so")):
            return folder
    return None


# ggml's x86 CPU variants, best first (ARM's names sort by themselves:
# armv9.2_2 > ... > armv8.0_1)
X86_VARIANT_ORDER = (
    "sapphirerapids",
    "zen4",
    "cooperlake",
    "cascadelake",
    "icelake",
    "cannonlake",
    "skylakex",
    "alderlake",
    "haswell",
    "piledriver",
    "ivybridge",
    "sandybridge",
    "sse42",
    "x64",
)


def variant_name(module: Path) -> str:
    """Return the CPU variant of a ``libggml-cpu-<variant>.so`` module."""
    return module.name.removeprefix("libggml-cpu-").removesuffix(".so")


def cpu_variants(folder: Path | None) -> list[str]:
    """Return the CPU variants in a backend folder, best first."""
    if folder is None:
        return []
    names = [variant_name(module) for module in folder.glob("libggml-cpu-*.so")]
    known = [name for name in X86_VARIANT_ORDER if name in names]
    return known + sorted((name for name in names if name not in known), reverse=True)


def load_ggml_backends(llama_cpp: Any, cpu_variant: str | None = None) -> int:
    """Register ggml's backends when the build loads them dynamically; return the count.

    A wheel built with GGML_BACKEND_DL=ON and GGML_CPU_ALL_VARIANTS=ON carries its CPU
    code as ``libggml-cpu-<variant>.so`` modules and registers none until asked: ggml's
    ``ggml_backend_load_all_from_path`` loads the best variant this CPU can run. A build
    with the CPU backend linked in (ours from source) already has it, and nothing is
    loaded.
    """
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = loaded_ggml(lib_dir)
    if ggml is None:
        return -1
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    if (
        ggml.ggml_backend_reg_count() == 0
        and (folder := backend_folder(lib_dir)) is not None
    ):
        module = folder / f"libggml-cpu-{cpu_variant}.so"
        if cpu_variant and module.exists():
            # a lower variant than ggml's own pick, which the check saw die on this
            # machine
            ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
            ggml.ggml_backend_load.restype = ctypes.c_void_p
            ggml.ggml_backend_load(str(module).encode())
        else:
            ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            ggml.ggml_backend_load_all_from_path(str(folder).encode())
    return int(ggml.ggml_backend_reg_count())


def run_check(model_path: str, cpu_variant: str | None = None) -> str:
    """Evaluate four tokens of the tiny model; return llama_cpp's version.

    Raise RuntimeError when there is no backend or the numbers are invalid.
    """
    import llama_cpp  # noqa: PLC0415

    llama_cpp.llama_backend_init()
    if load_ggml_backends(llama_cpp, cpu_variant) == 0:
        raise RuntimeError("llama.cpp found no backend for this CPU")
    llm = llama_cpp.Llama(
        model_path=model_path, n_ctx=64, n_threads=1, logits_all=True, verbose=False
    )
    llm.eval([1, 5, 6, 7])
    logits = [float(value) for value in llm.scores[llm.n_tokens - 1]]
    if (
        not logits
        or not all(math.isfinite(value) for value in logits)
        or not any(logits)
    ):
        raise RuntimeError("llama.cpp computed invalid numbers on this CPU")
    return str(llama_cpp.__version__)


def _variants_of_installed_build() -> list[str]:
    import importlib.util  # noqa: PLC0415 - find llama_cpp without importing (and running) it

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return []
    return cpu_variants(backend_folder(Path(spec.origin).parent / "lib"))


if __name__ == "__main__":
    # the parent reads the result from stdout
    if sys.argv[1] == "--variants":
        print(" ".join(_variants_of_installed_build()))
    else:
        print(run_check(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
