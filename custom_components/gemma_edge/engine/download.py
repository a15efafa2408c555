"""Download a Hugging Face model file with progress, resume, size and sha256 checks.

huggingface_hub resolves the file (URL, size and the LFS sha256 from the hub's own
metadata) and provides the HTTP session; the transfer itself streams into
``<name>.part`` with HTTP Range requests so an interrupted download continues where it
stopped. The final file appears only after its size and sha256 match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import hashlib
import logging
import os
from pathlib import Path
import shutil
import threading

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DISK_MARGIN_BYTES = 256 << 20
MAX_ATTEMPTS = 5


class DownloadError(Exception):
    """The download failed; the message says why."""


class DownloadCancelledError(DownloadError):
    """The download was stopped (its config flow was closed)."""


_PART_LOCKS_GUARD = threading.Lock()
_PART_LOCKS: dict[Path, threading.Lock] = {}


def _part_lock(partial: Path) -> threading.Lock:
    with _PART_LOCKS_GUARD:
        return _PART_LOCKS.setdefault(partial.absolute(), threading.Lock())


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not match the hub's sha256."""


class NotEnoughDiskError(DownloadError):
    """The target folder lacks the space for the file."""

    def __init__(self, needed: int, free: int) -> None:
        """Record the bytes needed and the bytes free, and say both in the message."""
        super().__init__(
            f"needs {needed / 1e9:.2f} GB free, {free / 1e9:.2f} GB available"
        )
        self.needed = needed
        self.free = free


@dataclass(frozen=True)
class RemoteFile:
    """A file on the hub as its metadata describes it."""

    repo_id: str
    filename: str
    url: str
    size: int
    sha256: str | None


def resolve_remote_file(
    repo_id: str, filename: str, *, endpoint: str | None = None, revision: str = "main"
) -> RemoteFile:
    """Ask the hub for the file's URL, size and sha256.

    Blocking: run it in an executor.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url  # noqa: PLC0415
    from huggingface_hub.errors import HfHubHTTPError  # noqa: PLC0415

    # HF_ENDPOINT (a mirror) is read now, not when huggingface_hub was imported.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint, timeout=30)
    except (HfHubHTTPError, OSError) as err:
        raise DownloadError(f"cannot reach {repo_id}/{filename}: {err}") from err
    if meta.size is None:
        raise DownloadError(f"the hub did not report the size of {filename}")
    etag = (meta.etag or "").strip('"')
    sha256 = (
        etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag) else None
    )
    return RemoteFile(repo_id, filename, meta.location or url, meta.size, sha256)


def check_free_disk(folder: Path, needed: int) -> None:
    """Raise NotEnoughDiskError unless ``folder`` has room for ``needed`` more bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN_BYTES:
        raise NotEnoughDiskError(needed + DISK_MARGIN_BYTES, free)


def _sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done)
    return digest.hexdigest()


def download_file(
    remote: RemoteFile,
    folder: Path,
    progress: Callable[[float], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Path:
    """Download (or resume) ``remote`` into ``folder``; return the verified file's path.

    Blocking: run it in an executor or worker thread. ``progress`` receives 0.0-1.0.
    Setting ``cancelled`` stops it at the next block (DownloadCancelledError; the part
    file stays for a later resume). Only one download writes a given part file at a
    time: a second one waits for the first, then finds the file done or continues it.
    """
    partial = folder / f"{remote.filename}.part"
    with _part_lock(partial):
        return _download_file(remote, folder, partial, progress, cancelled)


def _download_file(
    remote: RemoteFile,
    folder: Path,
    partial: Path,
    progress: Callable[[float], None] | None,
    cancelled: threading.Event | None,
) -> Path:
    import httpx  # noqa: PLC0415
    from huggingface_hub.utils import get_session  # noqa: PLC0415

    target = folder / remote.filename
    if target.exists() and target.stat().st_size == remote.size:
        if remote.sha256 is None or _sha256_file(target) == remote.sha256:
            if progress:
                progress(1.0)
            return target
    have = partial.stat().st_size if partial.exists() else 0
    if have > remote.size:
        partial.unlink()
        have = 0
    check_free_disk(folder, remote.size - have)

    session = get_session()
    attempts = 0
    while have < remote.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.stream(
                "GET", remote.url, headers=headers, follow_redirects=True, timeout=60
            ) as response:
                if response.status_code == 200 and have:
                    _LOGGER.info(
                        "Server ignored the range request; restarting %s",
                        remote.filename,
                    )
                    have = 0
                elif response.status_code not in (200, 206):
                    raise DownloadError(
                        f"download of {remote.filename} failed:"
                        f" HTTP {response.status_code}"
                    )
                with partial.open("r+b" if have else "wb") as handle:
                    handle.seek(have)
                    for block in response.iter_bytes(CHUNK_BYTES):
                        if cancelled is not None and cancelled.is_set():
                            raise DownloadCancelledError(
                                f"the download of {remote.filename} was cancelled"
                            )
                        handle.write(block)
                        have += len(block)
                        if progress:
                            progress(min(have / remote.size, 1.0) * 0.98)
                    handle.flush()
                    os.fsync(handle.fileno())
        except (httpx.HTTPError, OSError) as err:
            attempts += 1
            have = partial.stat().st_size if partial.exists() else 0
            if attempts >= MAX_ATTEMPTS:
                raise DownloadError(
                    f"download of {remote.filename} kept failing: {err}"
                ) from err
            _LOGGER.warning(
                "Download of %s interrupted at %d bytes (%s); resuming",
                remote.filename,
                have,
                err,
            )
            continue
        if have < remote.size:
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise DownloadError(
                    f"download of {remote.filename} ended early at {have}"
                    f" of {remote.size} bytes"
                )
    if have != remote.size:
        partial.unlink()
        raise DownloadError(
            f"{remote.filename}: got {have} bytes, expected {remote.size}"
        )
    if remote.sha256 is not None:
        digest = _sha256_file(partial)
        if digest != remote.sha256:
            partial.unlink()
            raise ChecksumMismatchError(
                f"{remote.filename}: sha256 {digest[:12]}... does not match the hub's"
                f" {remote.sha256[:12]}..."
            )
    partial.replace(target)
    if progress:
        progress(1.0)
    return target


def download_files(
    remotes: list[RemoteFile],
    folder: Path,
    progress: Callable[[float], None],
    cancelled: threading.Event | None = None,
) -> list[Path]:
    """Download several files into one folder.

    Progress is reported over their total size.
    """
    total = sum(remote.size for remote in remotes) or 1
    done = 0
    paths = []
    for remote in remotes:

        def file_progress(
            fraction: float, base: int = done, size: int = remote.size
        ) -> None:
            progress((base + fraction * size) / total)

        paths.append(download_file(remote, folder, file_progress, cancelled))
        done += remote.size
    return paths
