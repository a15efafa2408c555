"""Model download against a fake hub on 127.0.0.1: resume, verification, disk checks, hub errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.gemma_edge.engine.download import (
    ChecksumMismatchError,
    DownloadError,
    NotEnoughDiskError,
    download_file,
    resolve_remote_file,
)

from .fake_hub import FakeHub, HubFile, serve_fake_hub

REPO, NAME = "org/model-GGUF", "model.gguf"


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "served.bin"
    path.write_bytes(bytes(range(256)) * 20_000)  # 5 MB
    return path


def test_download_resumes_after_a_dropped_connection(socket_enabled: None, payload: Path, tmp_path: Path) -> None:
    hub = FakeHub({f"{REPO}/{NAME}": HubFile(payload, drop_after=1_500_000)})
    progress: list[float] = []
    with serve_fake_hub(hub):
        remote = resolve_remote_file(REPO, NAME, endpoint=hub.url)
        assert remote.size == payload.stat().st_size and remote.sha256 == hub.files[f"{REPO}/{NAME}"].sha256
        target = download_file(remote, tmp_path / "models", progress.append)
    assert target.read_bytes() == payload.read_bytes()
    assert not (tmp_path / "models" / f"{NAME}.part").exists()
    ranges = [r for method, _, r in hub.requests if method == "GET"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) >= 1_000_000  # continued, not restarted
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_a_partial_file_from_an_earlier_run_is_continued(socket_enabled: None, payload: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / f"{NAME}.part").write_bytes(payload.read_bytes()[:3_000_000])
    hub = FakeHub({f"{REPO}/{NAME}": HubFile(payload)})
    with serve_fake_hub(hub):
        download_file(resolve_remote_file(REPO, NAME, endpoint=hub.url), folder)
    assert (folder / NAME).read_bytes() == payload.read_bytes()
    assert [r for m, _, r in hub.requests if m == "GET"] == ["bytes=3000000-"]


def test_checksum_mismatch_is_rejected_and_removed(socket_enabled: None, payload: Path, tmp_path: Path) -> None:
    hub = FakeHub({f"{REPO}/{NAME}": HubFile(payload, advertised_sha256="ab" * 32)})
    with serve_fake_hub(hub), pytest.raises(ChecksumMismatchError, match="does not match"):
        download_file(resolve_remote_file(REPO, NAME, endpoint=hub.url), tmp_path)
    assert list(tmp_path.glob(f"{NAME}*")) == []


def test_not_enough_disk(socket_enabled: None, payload: Path, tmp_path: Path) -> None:
    hub = FakeHub({f"{REPO}/{NAME}": HubFile(payload, advertised_size=10**16)})
    with serve_fake_hub(hub), pytest.raises(NotEnoughDiskError, match="GB free"):
        download_file(resolve_remote_file(REPO, NAME, endpoint=hub.url), tmp_path)
    assert [m for m, _, _ in hub.requests] == ["HEAD"]  # nothing downloaded


def test_missing_file_on_the_hub(socket_enabled: None, tmp_path: Path) -> None:
    with serve_fake_hub(FakeHub()) as hub, pytest.raises(DownloadError, match="cannot reach"):
        resolve_remote_file(REPO, NAME, endpoint=hub.url)


def test_verified_file_is_not_downloaded_again(socket_enabled: None, payload: Path, tmp_path: Path) -> None:
    hub = FakeHub({f"{REPO}/{NAME}": HubFile(payload)})
    with serve_fake_hub(hub):
        remote = resolve_remote_file(REPO, NAME, endpoint=hub.url)
        download_file(remote, tmp_path)
        download_file(remote, tmp_path)
    assert [m for m, _, _ in hub.requests] == ["HEAD", "GET"]
