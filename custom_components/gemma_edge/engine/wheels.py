"""Which llama-cpp-python to install on this hub, fetched and checked before installing.

Plain Python, no Home Assistant. llama-cpp-python is not in manifest.json: PyPI has only
its source, which Home Assistant OS and Container (Alpine, no compiler) cannot build,
and a failed manifest requirement stops the whole integration from loading.
``llama_wheels.json`` lists the prebuilt wheels (built by
.github/workflows/llama-wheels.yml, published as release assets) with their size and
sha256; the integration picks the one that fits this hub, downloads it, checks it in
Python (uv does not check hashes of local files) and installs it by path. A glibc hub
without a fitting wheel builds the pinned source release instead, as Home Assistant Core
installs can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import json
from pathlib import Path
import threading
from typing import Any

from .download import RemoteFile, download_file
from .host_platform import HostPlatform, wheel_fits

WHEEL_MANIFEST = Path(__file__).parent.parent / "llama_wheels.json"


class WheelChoiceError(Exception):
    """No llama-cpp-python can be installed on this hub; the message says why."""


@dataclass(frozen=True)
class WheelEntry:
    """One prebuilt wheel: where it is, what it must be, which CPU features it needs."""

    file: str
    url: str
    size: int
    sha256: str
    cpu_features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WheelManifest:
    """The wheel list: the pinned llama-cpp-python release and its prebuilt wheels."""

    package: str
    version: str
    wheels: tuple[WheelEntry, ...]

    @property
    def requirement(self) -> str:
        """The pinned requirement, ``package==version``."""
        return f"{self.package}=={self.version}"


def _entry(raw: dict[str, Any]) -> WheelEntry:
    file, url, sha256 = str(raw["file"]), str(raw["url"]), str(raw["sha256"]).lower()
    size = int(raw["size"])
    if not file.endswith(".whl") or "/" in file or not url.startswith("https://"):
        raise ValueError(f"bad wheel entry {file!r}")
    if (
        len(sha256) != 64
        or any(c not in "0123456789abcdef" for c in sha256)
        or size <= 0
    ):
        raise ValueError(f"bad size or sha256 for {file}")
    if file.split("-")[-1].startswith("linux_"):
        # uv prefers a generic linux_* wheel over musllinux_*, and musl cannot load it
        raise ValueError(
            f"{file} is a generic linux wheel;"
            " publish manylinux or musllinux wheels only"
        )
    return WheelEntry(file, url, size, sha256, frozenset(raw.get("cpu_features", ())))


def load_manifest(path: Path = WHEEL_MANIFEST) -> WheelManifest:
    """Read the wheel manifest (blocking). A damaged manifest is a WheelChoiceError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return WheelManifest(
            str(raw["package"]),
            str(raw["version"]),
            tuple(_entry(item) for item in raw.get("wheels", ())),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WheelChoiceError(
            f"the wheel list {path.name} is unusable: {err}"
        ) from err


def choose_wheel(manifest: WheelManifest, host: HostPlatform) -> WheelEntry | None:
    """Choose the wheel for this hub (None when none fits).

    The wheel's tags must be ones the hub accepts and its CPU features ones the hub has;
    the most specific build comes first (a wheel that needs AVX2 beats the all-CPU one
    only where the CPU has AVX2).
    """
    fitting = [
        wheel
        for wheel in manifest.wheels
        if wheel_fits(wheel.file, host) and wheel.cpu_features <= host.cpu_features
    ]
    return max(fitting, key=lambda wheel: len(wheel.cpu_features), default=None)


@dataclass(frozen=True)
class InstallPlan:
    """What to hand Home Assistant's installer.

    A checked wheel file, or the source requirement.
    """

    wheel: WheelEntry | None
    requirement: str

    def describe(self) -> str:
        """Return what will be installed, in a few words."""
        return (
            f"{self.wheel.file} ({self.wheel.size / 1e6:.0f} MB)"
            if self.wheel
            else f"{self.requirement} from source"
        )


def plan_install(manifest: WheelManifest, host: HostPlatform) -> InstallPlan:
    """Plan the install: a prebuilt wheel where one fits, else a build from source.

    Building from source is planned only where that can work (glibc).
    """
    if (wheel := choose_wheel(manifest, host)) is not None:
        return InstallPlan(wheel, manifest.requirement)
    if host.libc == "glibc":
        return InstallPlan(None, manifest.requirement)
    raise WheelChoiceError(
        f"no prebuilt {manifest.requirement} fits this hub ({host.describe()}), and it"
        " cannot be compiled here (no compiler on Home Assistant OS or Container)"
    )


def fetch_wheel(
    wheel: WheelEntry,
    folder: Path,
    progress: Callable[[float], None] | None = None,
    cancelled: threading.Event | None = None,
) -> Path:
    """Download the wheel into ``folder`` (or reuse a kept copy).

    Its size and sha256 are checked before it is returned (blocking). Raises
    DownloadError.
    """
    remote = RemoteFile(
        repo_id="",
        filename=wheel.file,
        url=wheel.url,
        size=wheel.size,
        sha256=wheel.sha256,
    )
    return download_file(remote, folder, progress, cancelled)


__all__ = [
    "InstallPlan",
    "WheelChoiceError",
    "WheelEntry",
    "WheelManifest",
    "choose_wheel",
    "fetch_wheel",
    "load_manifest",
    "plan_install",
]
