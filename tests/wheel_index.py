"""A package index on 127.0.0.1 for installer tests, and tiny wheels made on the spot.

The index serves scripts/setup's wheelhouse (``.venv/wheelhouse``: the llama-cpp-python wheel built
on this machine and the wheels of its requirements) as PEP 503 simple pages plus the files, the way
Home Assistant's own wheel index sits beside PyPI on Home Assistant OS.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import re
import sys
import threading
import zipfile

WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


def _project(filename: str) -> str:
    return re.sub(r"[-_.]+", "-", filename.split("-")[0]).lower()


class _Handler(BaseHTTPRequestHandler):
    folder: Path
    broken: set[str]
    with_body = True

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._serve(with_body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._serve(with_body=True)

    def _serve(self, *, with_body: bool) -> None:
        self.with_body = with_body
        if self.path.startswith("/simple/"):
            project = self.path.removeprefix("/simple/").strip("/")
            links = "".join(
                f'<a href="/files/{wheel.name}">{wheel.name}</a>\n'
                for wheel in sorted(self.folder.glob("*.whl"))
                if _project(wheel.name) == project
            )
            body = f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()
            self._reply(200 if links else 404, body, "text/html")
            return
        name = self.path.removeprefix("/files/")
        path = self.folder / name
        if name in self.broken or "/" in name or not path.is_file():
            self._reply(404, b"not found", "text/plain")
            return
        self._reply(200, path.read_bytes(), "application/octet-stream")

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.with_body:
            self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


class WheelIndex:
    """A running index: ``url(name)`` for one file, ``simple`` for uv's index URL."""

    def __init__(self, server: ThreadingHTTPServer, handler: type[_Handler]) -> None:
        self._server = server
        self.handler = handler
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        self.simple = f"{self.base}/simple"

    def url(self, filename: str) -> str:
        return f"{self.base}/files/{filename}"


@contextmanager
def serve_wheels(folder: Path = WHEELHOUSE) -> Iterator[WheelIndex]:
    handler = type("Handler", (_Handler,), {"folder": folder, "broken": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheel index", daemon=True)
    thread.start()
    try:
        yield WheelIndex(server, handler)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def llama_wheel() -> Path:
    """The llama-cpp-python wheel scripts/setup built on this machine."""
    return next(WHEELHOUSE.glob("llama_cpp_python-*.whl"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_wheel(folder: Path, name: str, version: str, tag: str, module_text: str) -> Path:
    """A minimal valid wheel with one module (``<name>/__init__.py``)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_text,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: gemma-edge tests\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    path = folder / f"{name}-{version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            records.append(f"{member},sha256={digest},{len(text.encode())}")
        archive.writestr(f"{dist}/RECORD", "\n".join([*records, f"{dist}/RECORD,,"]) + "\n")
    return path
