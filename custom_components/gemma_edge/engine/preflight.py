"""Checks before a model is loaded into Home Assistant's process."""

from __future__ import annotations

import subprocess
import sys

IMPORT_CHECK_TIMEOUT_S = 120
# Import llama_cpp and initialise its backend: a wheel built for another CPU dies here with
# SIGILL, in the child process, instead of taking Home Assistant down with it.
_IMPORT_CHECK = "import llama_cpp; llama_cpp.llama_backend_init(); print(llama_cpp.__version__)"


class PreflightError(Exception):
    """A check failed; the message says what the user must do."""


def check_llama_cpp_import(python: str | None = None) -> str:
    """Import llama_cpp in a child process; return its version or raise PreflightError."""
    try:
        result = subprocess.run(  # noqa: S603 - fixed command, our own interpreter
            [python or sys.executable, "-c", _IMPORT_CHECK],
            capture_output=True,
            text=True,
            timeout=IMPORT_CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise PreflightError("importing llama-cpp-python did not finish in time") from err
    if result.returncode == 0:
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "unknown"
    if result.returncode < 0:
        raise PreflightError(
            f"importing llama-cpp-python crashed the test process (signal {-result.returncode}); "
            "the installed build does not fit this CPU"
        )
    last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise PreflightError(f"llama-cpp-python cannot be imported: {last_line}")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
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
            f"the model needs about {needed / 1e9:.1f} GB of memory, {available / 1e9:.1f} GB is available"
        )
