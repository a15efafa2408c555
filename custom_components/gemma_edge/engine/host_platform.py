"""What this hub is, for choosing a llama-cpp-python wheel.

Its C library, architecture, Python and CPU. Plain Python, no Home Assistant. Home
Assistant OS and Container are Alpine (musl) on x86_64 or aarch64; a Core install is
usually glibc. A wheel fits when one of its tags is one this host takes (the same rules
pip and uv apply) and the CPU has every feature the wheel's entry requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import platform
import re
import sys

MUSL_LOADERS = ("/lib/ld-musl-x86_64.so.1", "/lib/ld-musl-aarch64.so.1")
_MUSL_VERSION = re.compile(rb"Version (\d+)\.(\d+)")

# The CPU variants ggml builds with GGML_CPU_ALL_VARIANTS, best first, with the
# /proc/cpuinfo features each needs (llama.cpp's
# ggml/src/ggml-cpu/arch/*/cpu-feats.cpp). ggml itself picks the variant at run time; we
# name it so diagnostics say how fast this CPU will be.
X86_VARIANTS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "sapphirerapids",
        frozenset(
            {
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512_vnni",
                "avx512_bf16",
                "amx_int8",
            }
        ),
    ),
    (
        "icelake",
        frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi"}),
    ),
    (
        "skylakex",
        frozenset({"avx512f", "avx512bw", "avx512vl", "avx512cd", "avx512dq"}),
    ),
    ("alderlake", frozenset({"avx2", "fma", "f16c", "bmi2", "avx_vnni"})),
    ("haswell", frozenset({"avx2", "fma", "f16c", "bmi2"})),
    ("sandybridge", frozenset({"avx"})),
    ("sse42", frozenset({"ssse3", "sse4_1", "sse4_2", "popcnt"})),
    ("x64", frozenset()),
)
ARM_VARIANTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("armv8.6_1", frozenset({"asimddp", "asimdhp", "i8mm", "sve"})),
    ("armv8.2_2", frozenset({"asimddp", "asimdhp"})),
    ("armv8.2_1", frozenset({"asimddp"})),
    ("armv8.0_1", frozenset({"asimd"})),
)


@dataclass(frozen=True)
class HostPlatform:
    """The facts a wheel choice depends on."""

    machine: str  # "x86_64" or "aarch64"
    libc: str  # "musl" or "glibc"
    libc_version: tuple[int, int]
    python: tuple[int, int]
    cpu_features: frozenset[str]
    cpu_name: str = ""

    def describe(self) -> str:
        """Return a one-line description of the host (for diagnostics and logs)."""
        major, minor = self.libc_version
        return (
            f"{self.machine}, {self.libc} {major}.{minor},"
            f" Python {self.python[0]}.{self.python[1]},"
            f" {self.cpu_name or 'unknown CPU'}"
            f" (llama.cpp CPU level {ggml_cpu_variant(self) or 'none'})"
        )


def parse_cpuinfo(text: str) -> tuple[frozenset[str], str]:
    """Return the CPU's feature flags and name from /proc/cpuinfo text.

    The flags are x86's "flags" or ARM's "Features".
    """
    features: frozenset[str] = frozenset()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not features:
            features = frozenset(value.split())
        elif key == "model name" and not name:
            name = value.strip()
        elif key == "Model" and not name:
            # Raspberry Pi kernels: "Raspberry Pi 5 Model B Rev 1.0"
            name = value.strip()
    return features, name


def ggml_cpu_variant(host: HostPlatform) -> str | None:
    """Return the best ggml CPU variant this CPU can run.

    None: not a CPU ggml has variants for.
    """
    variants = {"x86_64": X86_VARIANTS, "aarch64": ARM_VARIANTS}.get(host.machine, ())
    return next((name for name, needs in variants if needs <= host.cpu_features), None)


def _musl_version(loader: str) -> tuple[int, int]:
    """Return musl's version, as its loader reports it.

    Musl's loader prints "Version 1.2.5" on stderr when run without arguments.
    """
    import subprocess  # noqa: PLC0415

    try:
        result = subprocess.run([loader], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return (1, 2)
    match = _MUSL_VERSION.search(result.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (1, 2)


def detect_host(cpuinfo_path: str = "/proc/cpuinfo") -> HostPlatform:
    """Detect the platform of this machine.

    Blocking: reads files and may run musl's loader.
    """
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    libc_name, libc_release = platform.libc_ver()
    if libc_name == "glibc":
        major, minor = (int(part) for part in libc_release.split(".")[:2])
        libc: tuple[str, tuple[int, int]] = ("glibc", (major, minor))
    else:
        loader = next((path for path in MUSL_LOADERS if Path(path).exists()), None)
        libc = ("musl", _musl_version(loader)) if loader else ("unknown", (0, 0))
    try:
        with Path(cpuinfo_path).open(encoding="utf-8", errors="replace") as handle:
            features, name = parse_cpuinfo(handle.read())
    except OSError:
        features, name = frozenset(), ""
    return HostPlatform(machine, libc[0], libc[1], sys.version_info[:2], features, name)


def platform_tags(host: HostPlatform) -> list[str]:
    """Return the wheel platform tags this host accepts, most specific first.

    The tags follow PEP 600 and PEP 656.
    """
    major, minor = host.libc_version
    if host.libc == "musl":
        tags = [f"musllinux_{major}_{m}_{host.machine}" for m in range(minor, -1, -1)]
    elif host.libc == "glibc":
        tags = [f"manylinux_{major}_{m}_{host.machine}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [
            f"{name}_{host.machine}"
            for glibc_minor, name in legacy.items()
            if minor >= glibc_minor
        ]
    else:
        tags = []
    return [*tags, f"linux_{host.machine}"]


def interpreter_tags(host: HostPlatform) -> list[tuple[str, str]]:
    """(python tag, abi tag) pairs this host's CPython accepts, most specific first."""
    cp = f"cp{host.python[0]}{host.python[1]}"
    pairs = [(cp, cp), (cp, "abi3"), (cp, "none")]
    pairs += [
        (f"cp{host.python[0]}{m}", "abi3") for m in range(host.python[1] - 1, 1, -1)
    ]
    return [
        *pairs,
        (f"py{host.python[0]}", "none"),
        (f"py{host.python[0]}{host.python[1]}", "none"),
    ]


def wheel_fits(filename: str, host: HostPlatform) -> bool:
    """Return whether a wheel file name's tags include one this host takes.

    Compressed tag sets are allowed.
    """
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) < 5:
        return False
    pythons, abis, platforms = (set(tag.split(".")) for tag in parts[-3:])
    accepted_platforms = set(platform_tags(host))
    if host.libc == "musl":
        # a generic linux_* wheel is built against glibc: musl cannot load it
        accepted_platforms.discard(f"linux_{host.machine}")
    return bool(platforms & accepted_platforms) and any(
        python in pythons and abi in abis for python, abi in interpreter_tags(host)
    )
