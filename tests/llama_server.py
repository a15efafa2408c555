"""Real llama.cpp servers on 127.0.0.1 for tests: llama-cpp-python's ``python -m llama_cpp.server``
(always here) and llama.cpp's own ``llama-server`` (built by ``GEMMA_EDGE_LLAMA_SERVER=1
scripts/setup``, or named by $LLAMA_SERVER)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest_socket

STARTUP_TIMEOUT_S = 60


@contextmanager
def sockets_allowed() -> Iterator[None]:
    """Sockets for a fixture wider than one test (the harness blocks them at each test's setup,
    as Home Assistant's test plugin does: loopback only, once a test enables them)."""
    pytest_socket.enable_socket()
    try:
        yield
    finally:
        pytest_socket.socket_allow_hosts(["127.0.0.1"])
        pytest_socket.disable_socket(allow_unix_socket=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def llama_server_binary() -> str | None:
    """llama.cpp's llama-server, where one was built or named."""
    candidates = [os.environ.get("LLAMA_SERVER"), str(Path(sys.prefix) / "bin" / "llama-server"), shutil.which("llama-server")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@contextmanager
def llama_cpp_server(model: Path, n_ctx: int = 2048, api_key: str | None = None, port: int | None = None) -> Iterator[str]:
    """Run llama-cpp-python's server with ``model``; yield its base URL; stop it."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", "2", "--seed", "0",
    ]  # fmt: skip
    if api_key:
        command += ["--api_key", api_key]
    with _running(command, port, api_key) as url:
        yield url


@contextmanager
def llama_server(binary: str, model: Path, n_ctx: int = 2048, mmproj: Path | None = None) -> Iterator[str]:
    """Run llama.cpp's llama-server with ``model`` (one slot, as the engine uses it)."""
    port = free_port()
    command = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(n_ctx), "-t", "2", "-np", "1", "--swa-full"]
    if mmproj is not None:
        command += ["--mmproj", str(mmproj)]
    with _running(command, port, None) as url:
        yield url


@contextmanager
def _running(command: list[str], port: int, api_key: str | None) -> Iterator[str]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below; a pipe nobody reads would fill and stall the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[0]} exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
