"""The wheel workflow cannot run here (GitHub runners, musllinux containers): it is linted.

GitHub's workflow schema, shellcheck on every shell step and script, cibuildwheel's own reading
of the build selection, the llama.cpp build flags, and the two scripts the workflow runs, run for
real on the wheel scripts/setup built here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from custom_components.gemma_edge.engine.host_platform import HostPlatform
from custom_components.gemma_edge.engine.wheels import WHEEL_MANIFEST, choose_wheel, load_manifest

from .wheel_index import llama_wheel, sha256_of

ROOT = Path(__file__).parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "llama-wheels.yml"
BIN = Path(sys.executable).parent


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps() -> list[dict]:
    return [step for job in _workflow()["jobs"].values() for step in job["steps"]]


def test_the_workflow_matches_githubs_schema() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shell_step_and_script_passes_shellcheck() -> None:
    runs = [step["run"] for step in _steps() if "run" in step]
    assert len(runs) >= 6
    for script in runs:
        # GitHub replaces ${{ ... }} before the shell sees the text
        text = re.sub(r"\$\{\{[^}]*\}\}", "x86_64", script)
        result = subprocess.run([BIN / "shellcheck", "-s", "bash", "-"], input=text, capture_output=True, text=True)
        assert result.returncode == 0, f"{script}\n{result.stdout}"
    result = subprocess.run([BIN / "shellcheck", ROOT / "scripts" / "ci_check_wheel.sh"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_one_musllinux_build_per_architecture_with_every_cpu_level(tmp_path: Path) -> None:
    workflow = _workflow()
    build = workflow["jobs"]["build"]
    step = next(step for step in build["steps"] if "CIBW_BUILD" in step.get("env", {}))
    env = step["env"]
    assert "cibuildwheel==4.3.5" in step["run"]  # the version the test environment lints with
    cmake_flags = (
        "GGML_NATIVE=OFF", "GGML_BACKEND_DL=ON", "GGML_CPU_ALL_VARIANTS=ON", "GGML_OPENMP=OFF",
        # everything next to libggml (ggml's own rules would put the variants in <wheel>/bin)
        "CMAKE_INSTALL_BINDIR=llama_cpp/lib", "CMAKE_INSTALL_LIBDIR=llama_cpp/lib", "CMAKE_INSTALL_RPATH=$ORIGIN",
    )  # fmt: skip
    # the environment as cibuildwheel evaluates it in the build container ($ORIGIN stays literal)
    from cibuildwheel.environment import parse_environment  # noqa: PLC0415

    build_env = parse_environment(env["CIBW_ENVIRONMENT"]).as_dictionary(prev_environment={})
    for cmake_flag in cmake_flags:
        assert f"-D{cmake_flag}" in build_env["CMAKE_ARGS"].split()
    arches = [item["arch"] for item in build["strategy"]["matrix"]["include"]]
    assert arches == ["x86_64", "aarch64"]
    # a project declaring what llama-cpp-python 0.3.36 declares: only the selection is printed
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "llama_cpp_python"\nversion = "0.3.36"\nrequires-python = ">=3.8"\n')
    for arch in arches:
        result = subprocess.run(
            [BIN / "cibuildwheel", "--print-build-identifiers", "--platform", "linux", "--archs", arch, str(project)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "CIBW_BUILD": env["CIBW_BUILD"]},
        )  # fmt: skip
        assert result.stdout.split() == [f"cp313-musllinux_{arch}"]
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["workflow_dispatch"]["inputs"]["version"]["default"] == load_manifest().version


def _musl_copy(folder: Path) -> Path:
    """The wheel built here under the name auditwheel gives a musllinux repair (for the scripts'
    bookkeeping only: nothing installs it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(llama_wheel(), folder / llama_wheel().name.replace("linux_x86_64", "musllinux_1_2_x86_64")))


def test_the_wheel_list_script_describes_merges_and_refuses(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "wheel_manifest.py"), "--version", "0.3.36"]
    base = "https://github.com/gemma-edge/gemma-edge-agent/releases/download/llama-cpp-python-0.3.36"
    refused = subprocess.run([*script, "--url-base", base, "--out", str(tmp_path / "x.json"), str(llama_wheel())], capture_output=True, text=True)
    assert refused.returncode != 0 and "generic linux wheel" in refused.stderr

    wheel = _musl_copy(tmp_path / "x86")
    subprocess.run([*script, "--url-base", base, "--out", str(tmp_path / "wheels-x86_64.json"), str(wheel)], check=True)
    arm = tmp_path / "wheels-aarch64.json"
    arm_entry = {"file": wheel.name.replace("x86_64", "aarch64"), "url": f"{base}/arm.whl", "size": 5, "sha256": "b" * 64, "cpu_features": []}
    arm.write_text(json.dumps({"package": "llama-cpp-python", "version": "0.3.36", "wheels": [arm_entry]}))
    merged = tmp_path / "llama_wheels.json"
    subprocess.run([*script, "--out", str(merged), "--merge", str(tmp_path / "wheels-x86_64.json"), str(arm)], check=True)

    listing = load_manifest(merged)  # what the integration reads
    assert [w.file for w in listing.wheels] == sorted([wheel.name, arm_entry["file"]])
    x86 = next(w for w in listing.wheels if w.file == wheel.name)
    assert (x86.size, x86.sha256, x86.url) == (wheel.stat().st_size, sha256_of(wheel), f"{base}/{wheel.name}")
    n100 = HostPlatform("x86_64", "musl", (1, 2), (3, 14), frozenset({"avx2"}))
    assert choose_wheel(listing, n100) == x86

    other_version = subprocess.run([*script[:-1], "0.3.37", "--out", str(tmp_path / "y.json"), "--merge", str(merged)], capture_output=True, text=True)
    assert other_version.returncode != 0 and "is not 0.3.37" in other_version.stderr


def test_the_shipped_wheel_list_is_what_the_script_writes(tmp_path: Path) -> None:
    shipped = json.loads(WHEEL_MANIFEST.read_text())
    assert set(shipped) == {"package", "version", "wheels"}
    assert shipped["wheels"] == sorted(shipped["wheels"], key=lambda w: w["file"])
    # merged on its own by the workflow's script, the list comes out byte for byte the same
    again = tmp_path / "llama_wheels.json"
    script = [sys.executable, str(ROOT / "scripts" / "wheel_manifest.py"), "--version", shipped["version"]]
    subprocess.run([*script, "--out", str(again), "--merge", str(WHEEL_MANIFEST)], check=True)
    assert again.read_text() == WHEEL_MANIFEST.read_text()


@pytest.mark.timeout(120)
def test_the_workflows_cpu_check_runs_here() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_llama_wheel.py")], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("llama-cpp-python 0.3.36 runs here")
