"""Checks before a model is loaded into Home Assistant's process."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import tempfile

from .tiny_model import write_tiny_model

IMPORT_CHECK_TIMEOUT_S = 120
_CHECK_SCRIPT = Path(__file__).with_name("llama_check.py")
_SIGNALS = {4: "illegal instruction", 7: "bus error", 11: "segmentation fault"}


class PreflightError(Exception):
    """A check failed; the message says what the user must do."""


class LlamaCppMissingError(PreflightError):
    """llama-cpp-python is not installed.

    It is installed at run time, not from the manifest.
    """


class LlamaCppCrashedError(PreflightError):
    """The check process died from a signal.

    The installed build does not fit this CPU.
    """

    def __init__(self, message: str, signal: int = 0) -> None:
        """Keep the message and the number of the signal the check died from."""
        super().__init__(message)
        self.signal = signal


def _run_check_script(
    args: list[str], python: str | None, extra_paths: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """Run llama_check.py in a child with this process's import path.

    ``extra_paths`` come first on that path.
    """
    paths = [
        *extra_paths,
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
        *sys.path,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    try:
        return subprocess.run(
            [python or sys.executable, str(_CHECK_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=IMPORT_CHECK_TIMEOUT_S,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as err:
        raise PreflightError(
            "checking llama-cpp-python did not finish in time"
        ) from err
    except OSError as err:
        raise PreflightError(f"the check process could not be started: {err}") from err


def check_llama_cpp(
    python: str | None = None,
    extra_paths: tuple[str, ...] = (),
    cpu_variant: str | None = None,
) -> str:
    """Import llama_cpp and run a tiny model in a child process; return its version.

    The child sees this process's import path (plus ``extra_paths`` first), so it checks
    exactly the llama_cpp Home Assistant would load; ``cpu_variant`` makes a backend-DL
    build use that ggml CPU variant instead of its own pick. Raises
    LlamaCppMissingError, LlamaCppCrashedError or PreflightError.
    """
    with tempfile.TemporaryDirectory(prefix="gemma_edge_check_") as folder:
        model = write_tiny_model(Path(folder) / "cpu-check.gguf")
        result = _run_check_script(
            [str(model), *([cpu_variant] if cpu_variant else [])], python, extra_paths
        )
    if result.returncode == 0:
        return (
            result.stdout.strip().splitlines()[-1]
            if result.stdout.strip()
            else "unknown"
        )
    if result.returncode < 0:
        signal = -result.returncode
        raise LlamaCppCrashedError(
            "llama-cpp-python crashed the check process"
            f" ({_SIGNALS.get(signal, f'signal {signal}')}); "
            "the installed build does not fit this CPU",
            signal,
        )
    last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
    if "No module named 'llama_cpp'" in last_line:
        raise LlamaCppMissingError("llama-cpp-python is not installed")
    raise PreflightError(f"llama-cpp-python does not work: {last_line}")


def installed_cpu_variants(
    python: str | None = None, extra_paths: tuple[str, ...] = ()
) -> list[str]:
    """Return the ggml CPU variants the installed build carries, best first.

    None for a build with the CPU backend linked in. Read without importing llama_cpp.
    """
    result = _run_check_script(["--variants"], python, extra_paths)
    return result.stdout.split() if result.returncode == 0 else []


def available_memory_bytes() -> int | None:
    """Return MemAvailable from /proc/meminfo (None where unknown)."""
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory_for(model_bytes: int, available: int | None = None) -> None:
    """Raise PreflightError when the model would not fit in the memory available now."""
    available = available_memory_bytes() if available is None else available
    if available is None:
        return
    needed = int(model_bytes * 1.1) + (300 << 20)
    if available < needed:
        raise PreflightError(
            f"the model needs about {needed / 1e9:.1f} GB of memory,"
            f" {available / 1e9:.1f} GB is available"
        )
