"""Choosing, fetching, checking and installing llama-cpp-python at run time (no Home Assistant).

What cannot run here: a musl Python and Python 3.14. Wheel choice is therefore tested over real
/proc/cpuinfo listings with the libc and Python of each kind of hub, and uv's own choice with
its --python-platform/--python-version targeting; the download, checksum and install run for real
against an index on 127.0.0.1 serving the wheel scripts/setup built on this machine.
"""

from __future__ import annotations

import json
from pathlib import Path
import platform
import signal
import subprocess
import sys

import pytest

from custom_components.gemma_edge.engine.download import ChecksumMismatchError, DownloadError
from custom_components.gemma_edge.engine.host_platform import (
    HostPlatform,
    ggml_cpu_variant,
    parse_cpuinfo,
    wheel_fits,
)
from custom_components.gemma_edge.engine.preflight import (
    LlamaCppCrashedError,
    LlamaCppMissingError,
    PreflightError,
    check_llama_cpp,
)
from custom_components.gemma_edge.engine.wheels import (
    WHEEL_MANIFEST,
    WheelChoiceError,
    WheelEntry,
    WheelManifest,
    fetch_wheel,
    load_manifest,
    plan_install,
)
from homeassistant import requirements as ha_requirements
from homeassistant.util import package as pkg_util

from .wheel_index import llama_wheel, serve_wheels, sha256_of, write_wheel

CPUINFO = Path(__file__).parent / "cpuinfo"
ALL_CPU = "llama_cpp_python-0.3.36-py3-none-musllinux_1_2_x86_64.whl"
ALL_ARM = "llama_cpp_python-0.3.36-py3-none-musllinux_1_2_aarch64.whl"
GLIBC_AVX2 = "llama_cpp_python-0.3.36-py3-none-manylinux_2_28_x86_64.whl"
CP313_ONLY = "llama_cpp_python-0.3.36-cp313-cp313-musllinux_1_2_aarch64.whl"


def host(sample: str, libc: str = "musl", python: tuple[int, int] = (3, 14)) -> HostPlatform:
    features, name = parse_cpuinfo((CPUINFO / f"{sample}.txt").read_text())
    machine = "aarch64" if sample.startswith("raspberry") else "x86_64"
    return HostPlatform(machine, libc, (1, 2) if libc == "musl" else (2, 36), python, features, name)


def manifest(*entries: WheelEntry) -> WheelManifest:
    return WheelManifest("llama-cpp-python", "0.3.36", entries)


def entry(file: str, *features: str, url: str = "https://example.invalid/w.whl", size: int = 1, sha256: str = "0" * 64) -> WheelEntry:
    return WheelEntry(file, url, size, sha256, frozenset(features))


PUBLISHED = manifest(
    entry(ALL_CPU),
    entry(ALL_ARM),
    entry(GLIBC_AVX2, "avx2", "fma", "f16c"),  # like upstream's prebuilt wheels: Haswell or newer
)


@pytest.mark.parametrize(
    ("sample", "variant", "name"),
    [
        ("proxmox-kvm64", "x64", "Common KVM processor"),
        ("celeron-n5105", "sse42", "Intel(R) Celeron(R) N5105 @ 2.00GHz"),
        ("intel-n100", "alderlake", "Intel(R) N100"),
        ("raspberry-pi-4", "armv8.0_1", "Raspberry Pi 4 Model B Rev 1.4"),
        ("raspberry-pi-5", "armv8.2_2", "Raspberry Pi 5 Model B Rev 1.0"),
    ],
)
def test_cpu_features_and_the_llama_cpp_level_of_real_hubs(sample: str, variant: str, name: str) -> None:
    hub = host(sample)
    assert ggml_cpu_variant(hub) == variant
    assert hub.cpu_name == name
    assert variant in hub.describe()


@pytest.mark.parametrize(
    ("sample", "libc", "python", "expected"),
    [
        # Home Assistant OS / Container (musl, Python 3.14 since 2026.3, 3.13 before)
        ("proxmox-kvm64", "musl", (3, 14), ALL_CPU),
        ("celeron-n5105", "musl", (3, 13), ALL_CPU),
        ("intel-n100", "musl", (3, 14), ALL_CPU),
        ("raspberry-pi-4", "musl", (3, 14), ALL_ARM),
        ("raspberry-pi-5", "musl", (3, 13), ALL_ARM),
        # Core in a venv (glibc): the AVX2 build only where the CPU has AVX2, else from source
        ("intel-n100", "glibc", (3, 13), GLIBC_AVX2),
        ("celeron-n5105", "glibc", (3, 13), None),
        ("proxmox-kvm64", "glibc", (3, 14), None),
        ("raspberry-pi-5", "glibc", (3, 14), None),
    ],
)
def test_the_wheel_for_each_hub(sample: str, libc: str, python: tuple[int, int], expected: str | None) -> None:
    plan = plan_install(PUBLISHED, host(sample, libc, python))
    assert (plan.wheel.file if plan.wheel else None) == expected
    assert plan.requirement == "llama-cpp-python==0.3.36"


def test_a_musl_hub_without_a_wheel_is_told_why() -> None:
    with pytest.raises(WheelChoiceError, match=r"no prebuilt llama-cpp-python==0.3.36 fits .*aarch64, musl 1.2, Python 3.14.*cannot be compiled"):
        plan_install(manifest(entry(ALL_CPU)), host("raspberry-pi-5"))


def test_platform_and_python_tags() -> None:
    pi5 = host("raspberry-pi-5")
    assert wheel_fits(ALL_ARM, pi5)
    assert not wheel_fits(ALL_CPU, pi5)  # other architecture
    assert not wheel_fits(CP313_ONLY, pi5)  # tied to Python 3.13: breaks when Home Assistant moves to 3.14
    assert wheel_fits(CP313_ONLY, host("raspberry-pi-5", python=(3, 13)))
    assert not wheel_fits(GLIBC_AVX2, host("intel-n100"))  # glibc build on musl
    assert not wheel_fits("llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", host("intel-n100"))
    assert wheel_fits("llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl", host("intel-n100", "glibc"))
    assert not wheel_fits("llama_cpp_python-0.3.36-py3-none-musllinux_1_3_x86_64.whl", host("intel-n100"))  # newer musl
    assert wheel_fits("x-1.0-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", host("intel-n100", "glibc"))


def test_the_wheel_list_refuses_generic_linux_wheels_and_bad_checksums(tmp_path: Path) -> None:
    good = {"file": ALL_CPU, "url": "https://github.com/x/y/releases/download/t/" + ALL_CPU, "size": 10, "sha256": "a" * 64}
    path = tmp_path / "wheels.json"
    for bad, message in [
        ({**good, "file": "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"}, "generic linux wheel"),
        ({**good, "sha256": "abc"}, "bad size or sha256"),
        ({**good, "url": "http://example.com/x.whl"}, "bad wheel entry"),
        ({**good, "size": 0}, "bad size or sha256"),
    ]:
        path.write_text(f'{{"package": "llama-cpp-python", "version": "0.3.36", "wheels": [{json.dumps(bad)}]}}')
        with pytest.raises(WheelChoiceError, match=message):
            load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(WheelChoiceError, match="unusable"):
        load_manifest(path)
    # the list the integration ships is valid and names the version scripts/setup builds
    shipped = load_manifest(WHEEL_MANIFEST)
    assert shipped.requirement == "llama-cpp-python==0.3.36"
    assert all(not w.file.split("-")[-1].startswith("linux_") for w in shipped.wheels)


def test_uv_prefers_a_generic_linux_wheel_over_musllinux_on_a_musl_target(tmp_path: Path) -> None:
    """Why the workflow must never publish a linux_* wheel beside the musllinux one: uv, which
    Home Assistant installs with, takes it on Alpine, and musl cannot load it."""
    links = tmp_path / "links"
    links.mkdir()
    for variant, tag in [("generic", "py3-none-linux_x86_64"), ("musl", "py3-none-musllinux_1_2_x86_64"), ("glibc", "py3-none-manylinux_2_17_x86_64")]:
        write_wheel(links, "demo_pkg", "1.0", tag, f"VARIANT = {variant!r}\n")

    def chosen(platform: str) -> str:
        target = tmp_path / platform
        subprocess.run(
            [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--target", str(target), "--python-platform", platform,
             "--python-version", "3.14", "--no-index", "--find-links", str(links), "demo-pkg"],
            check=True, capture_output=True,
        )  # fmt: skip
        return (target / "demo_pkg" / "__init__.py").read_text()

    assert chosen("x86_64-unknown-linux-musl") == "VARIANT = 'generic'\n"
    assert chosen("x86_64-unknown-linux-gnu") == "VARIANT = 'glibc'\n"
    (links / "demo_pkg-1.0-py3-none-linux_x86_64.whl").unlink()
    (tmp_path / "x86_64-unknown-linux-musl").rename(tmp_path / "before")
    assert chosen("x86_64-unknown-linux-musl") == "VARIANT = 'musl'\n"


def test_backends_are_registered_in_the_libggml_llama_cpp_uses() -> None:
    """The wheel holds libggml.so, .so.0 and .so.0.x as three files; opening another one than
    libllama's would map a second libggml with its own (unused) backend registry. In a fresh
    process: after loading the backends exactly one libggml file is mapped, and it has a backend."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import llama_cpp; from llama_check import load_ggml_backends; "
        "count = load_ggml_backends(llama_cpp); "
        "files = {line.split()[-1] for line in open('/proc/self/maps') if '/libggml.so' in line}; "
        "print(count, len(files))"
    )
    engine = Path(__file__).parent.parent / "custom_components" / "gemma_edge" / "engine"
    result = subprocess.run([sys.executable, "-c", script, str(engine)], capture_output=True, text=True, check=True)
    count, mapped = (int(value) for value in result.stdout.split())
    assert count >= 1 and mapped == 1


def _shadow_missing_llama_cpp(folder: Path) -> Path:
    """A folder whose llama_cpp fails like an absent package, to put in front of the real one."""
    package = folder / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'llama_cpp'\")\n")
    return folder


def test_download_is_checked_then_installed_and_run(
    socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = llama_wheel()
    with serve_wheels() as index:
        good = entry(wheel.name, url=index.url(wheel.name), size=wheel.stat().st_size, sha256=sha256_of(wheel))
        # a file that does not match its checksum is refused and not kept
        bad = entry(wheel.name, url=index.url(wheel.name), size=good.size, sha256="f" * 64)
        with pytest.raises(ChecksumMismatchError, match="does not match"):
            fetch_wheel(bad, tmp_path / "bad")
        assert not any((tmp_path / "bad").iterdir())
        index.handler.broken.add(wheel.name)
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch_wheel(good, tmp_path / "gone")
        index.handler.broken.clear()
        fractions: list[float] = []
        path = fetch_wheel(good, tmp_path / "wheels", fractions.append)
        assert sha256_of(path) == good.sha256 and fractions[-1] == 1.0 and len(fractions) > 3

        # Home Assistant's own installer (uv), the requirements from the local index only
        monkeypatch.setenv("UV_DEFAULT_INDEX", index.simple)
        monkeypatch.setenv("UV_NO_CACHE", "1")
        target = tmp_path / "target"
        kwargs = {**ha_requirements.pip_kwargs(None), "target": str(target)}
        assert pkg_util.install_package(str(path), upgrade=False, **kwargs)
    assert (target / "llama_cpp" / "lib" / "libllama.so").exists()
    assert (target / "diskcache").is_dir()  # a requirement Home Assistant does not have

    # the child check runs the installed copy: it wins over a missing one on the path
    shadow = _shadow_missing_llama_cpp(tmp_path / "shadow")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    with pytest.raises(LlamaCppMissingError):
        check_llama_cpp()
    assert check_llama_cpp(extra_paths=(str(target),)) == "0.3.36"


def _python_on(tmp_path: Path, cpu: str) -> str:
    """This Python run by QEMU user mode as another CPU model."""
    wrapper = tmp_path / f"python-{cpu}"
    wrapper.write_text(f'#!/bin/sh\nexec qemu-x86_64 -cpu {cpu} {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="scripts/setup fixes the CPU level of the x86-64 build only")
@pytest.mark.timeout(180)
def test_a_build_for_newer_cpus_dies_in_the_check_not_in_home_assistant(tmp_path: Path) -> None:
    """The build scripts/setup made needs AVX2 (like upstream's prebuilt wheels). On a CPU without
    AVX (QEMU's Westmere: Celeron J4125/N5105-class) it dies with SIGILL in the check process,
    which reports it; on a CPU with AVX2 (QEMU's max) the same check passes."""
    assert check_llama_cpp() == "0.3.36"
    assert check_llama_cpp(python=_python_on(tmp_path, "max")) == "0.3.36"
    with pytest.raises(LlamaCppCrashedError, match="illegal instruction"):
        check_llama_cpp(python=_python_on(tmp_path, "Westmere"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("platform_tag", ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"])
def test_the_manifest_requirements_install_from_wheels_on_home_assistant_os(platform_tag: str, tmp_path: Path) -> None:
    """What Home Assistant installs before the integration can load at all: on Alpine (musl,
    amd64 and aarch64, Python 3.13 and 3.14) every requirement must come as a wheel, nothing to
    compile. uv resolves against PyPI (which scripts/setup uses too) for the target platform."""
    manifest = json.loads((WHEEL_MANIFEST.parent / "manifest.json").read_text())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(manifest["requirements"]) + "\n")
    for python in ("3.13", "3.14"):
        result = subprocess.run(
            [sys.executable, "-m", "uv", "pip", "compile", str(requirements), "--python-platform", platform_tag,
             "--python-version", python, "--only-binary", ":all:", "--quiet", "--no-header"],
            capture_output=True, text=True, timeout=200,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "huggingface-hub==" in result.stdout and "llama-cpp-python" not in result.stdout


def test_cpu_variant_modules_are_found_and_ordered_best_first(tmp_path: Path) -> None:
    """A backend-DL wheel's CPU modules: next to libggml (our workflow) or in ggml's own bin folder."""
    from custom_components.gemma_edge.engine.llama_check import backend_folder, cpu_variants  # noqa: PLC0415

    lib = tmp_path / "site-packages" / "llama_cpp" / "lib"
    lib.mkdir(parents=True)
    assert backend_folder(lib) is None and cpu_variants(None) == []
    ggml_bin = tmp_path / "site-packages" / "bin"
    ggml_bin.mkdir()
    for name in ("x64", "haswell", "sapphirerapids", "sse42", "zen4"):
        (ggml_bin / f"libggml-cpu-{name}.so").touch()
    assert backend_folder(lib) == ggml_bin
    assert cpu_variants(ggml_bin) == ["sapphirerapids", "zen4", "haswell", "sse42", "x64"]
    for name in ("armv8.0_1", "armv9.2_2", "armv8.2_2", "armv8.6_1"):
        (lib / f"libggml-cpu-{name}.so").touch()
    assert backend_folder(lib) == lib
    assert cpu_variants(lib) == ["armv9.2_2", "armv8.6_1", "armv8.2_2", "armv8.0_1"]


def test_when_ggmls_own_pick_dies_the_next_variant_that_runs_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on this machine with a GGML_CPU_ALL_VARIANTS build: the CPU reports AMX, ggml picks
    sapphirerapids, and AMX is not enabled for the process: SIGILL. The check then tries the
    variants from the best down (the children are simulated here; the real run is in the issue's
    closing note: zen4 ran)."""
    from custom_components.gemma_edge import llama_runtime  # noqa: PLC0415

    tried: list[str | None] = []

    def child(extra_paths: tuple[str, ...] = (), cpu_variant: str | None = None) -> str:
        tried.append(cpu_variant)
        if cpu_variant in (None, "sapphirerapids"):
            raise LlamaCppCrashedError("illegal instruction", signal.SIGILL)
        if cpu_variant == "zen4":
            raise PreflightError("llama.cpp found no backend for this CPU")  # not this CPU's
        return "0.3.36"

    monkeypatch.setattr(llama_runtime, "check_llama_cpp", child)
    monkeypatch.setattr(llama_runtime, "installed_cpu_variants", lambda extra_paths=(): ["sapphirerapids", "zen4", "icelake", "x64"])
    assert llama_runtime.check_fitting() == ("0.3.36", "icelake")
    assert tried == [None, "sapphirerapids", "zen4", "icelake"]
    # a build with the CPU backend linked in has no variants: the crash stands
    monkeypatch.setattr(llama_runtime, "installed_cpu_variants", lambda extra_paths=(): [])
    with pytest.raises(LlamaCppCrashedError):
        llama_runtime.check_fitting()
    # another crash (killed for memory, a segfault) is not a CPU level question: no variants tried
    tried.clear()
    monkeypatch.setattr(llama_runtime, "installed_cpu_variants", lambda extra_paths=(): ["icelake", "x64"])

    def segfault(extra_paths: tuple[str, ...] = (), cpu_variant: str | None = None) -> str:
        tried.append(cpu_variant)
        raise LlamaCppCrashedError("segmentation fault", signal.SIGSEGV)

    monkeypatch.setattr(llama_runtime, "check_llama_cpp", segfault)
    with pytest.raises(LlamaCppCrashedError, match="segmentation"):
        llama_runtime.check_fitting()
    assert tried == [None]


def test_the_check_lists_no_variants_for_a_build_with_the_cpu_backend_linked_in() -> None:
    from custom_components.gemma_edge.engine.preflight import installed_cpu_variants  # noqa: PLC0415

    assert installed_cpu_variants() == []
