#!/usr/bin/env python3
"""Check that the installed llama-cpp-python runs on this machine: the integration's own check.

Imports llama_cpp, loads ggml's backends (a GGML_BACKEND_DL wheel picks its CPU variant here) and
evaluates four tokens of the integration's tiny check model, in this process. Standard library and
llama_cpp only, so it runs in a bare musllinux or Alpine container (the wheel workflow runs it
there). Usage: python scripts/check_llama_wheel.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
import sys
import tempfile
from types import ModuleType

ENGINE = Path(__file__).resolve().parent.parent / "custom_components" / "gemma_edge" / "engine"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gemma_edge_check_{name}", ENGINE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    tiny_model, llama_check = _load("tiny_model"), _load("llama_check")
    with tempfile.TemporaryDirectory() as folder:
        model = tiny_model.write_tiny_model(Path(folder) / "cpu-check.gguf")
        version = llama_check.run_check(str(model))
    import llama_cpp  # noqa: PLC0415

    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(f"llama-cpp-python {version} runs here ({sys.implementation.name} {sys.version.split()[0]}): {system}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
