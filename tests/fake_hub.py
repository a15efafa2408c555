"""A fake Hugging Face hub on 127.0.0.1: HEAD metadata, GET with Range, and injectable faults."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import threading
import time


@dataclass
class HubFile:
    path: Path  # served bytes
    advertised_sha256: str | None = None  # default: the real sha256
    advertised_size: int | None = None  # default: the real size
    drop_after: int | None = None  # close the first GET after this many bytes
    seconds_per_mb: float = 0.0  # serve slowly (a download still running when its flow closes)
    sha256: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        self.sha256 = digest.hexdigest()


@dataclass
class FakeHub:
    files: dict[str, HubFile] = field(default_factory=dict)  # "repo/name" -> file
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, range
    url: str = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def end_headers(self) -> None:
            # one request per connection: no handler thread outlives the test
            self.send_header("Connection", "close")
            self.close_connection = True
            super().end_headers()

        def _file(self, byte_range: str | None = None) -> HubFile | None:
            """Record the request; the file at /{org}/{repo}/resolve/{revision}/{filename}, or a 404."""
            hub.requests.append((self.command, self.path, byte_range))
            parts = self.path.split("?")[0].strip("/").split("/")
            file = hub.files.get(f"{parts[0]}/{parts[1]}/{parts[4]}") if len(parts) == 5 and parts[2] == "resolve" else None
            if file is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return file

        def do_HEAD(self) -> None:  # noqa: N802
            if (file := self._file()) is None:
                return
            size = file.advertised_size if file.advertised_size is not None else file.path.stat().st_size
            self.send_response(200)
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("X-Linked-Etag", f'"{file.advertised_sha256 or file.sha256}"')
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Content-Length", str(size))
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            byte_range = self.headers.get("Range")
            if (file := self._file(byte_range)) is None:
                return
            data = file.path.read_bytes()
            start = int(byte_range.split("=")[1].split("-")[0]) if byte_range else 0
            body = data[start:]
            self.send_response(206 if byte_range else 200)
            if byte_range:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if file.drop_after is not None:
                cut, file.drop_after = file.drop_after, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            if not file.seconds_per_mb:
                self.wfile.write(body)
                return
            for start in range(0, len(body), 1 << 16):
                try:
                    self.wfile.write(body[start : start + (1 << 16)])
                except OSError:  # the client went away
                    return
                time.sleep(file.seconds_per_mb / 16)

    return Handler


@contextmanager
def serve_fake_hub(hub: FakeHub) -> Generator[FakeHub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake_hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
