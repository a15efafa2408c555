#!/usr/bin/env python3
"""Write the integration's wheel list (custom_components/gemma_edge/llama_wheels.json).

    python scripts/wheel_manifest.py --version 0.3.36 --url-base URL --out F WHEEL...
        describe built wheels (file, url, size, sha256) as a wheel list
    python scripts/wheel_manifest.py --version 0.3.36 --out F --merge LIST...
        merge the lists of several build jobs into one

Refuses generic ``linux_*`` wheels: uv (Home Assistant's installer) prefers them over musllinux
ones on Alpine, where they cannot load. Standard library only (runs on a bare CI runner).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
import sys

PACKAGE = "llama-cpp-python"


def describe(wheel: Path, url_base: str) -> dict[str, object]:
    platforms = wheel.name.removesuffix(".whl").split("-")[-1].split(".")
    if any(tag.startswith("linux_") for tag in platforms):
        raise SystemExit(f"{wheel.name}: a generic linux wheel; repair it with auditwheel first")
    digest = hashlib.sha256()
    with wheel.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {
        "file": wheel.name,
        "url": url_base.rstrip("/") + "/" + wheel.name,
        "size": wheel.stat().st_size,
        "sha256": digest.hexdigest(),
        "cpu_features": [],  # GGML_CPU_ALL_VARIANTS: ggml picks the CPU variant at run time
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--url-base", help="release download URL the wheels are published under")
    parser.add_argument("--merge", action="store_true", help="the inputs are wheel lists to merge")
    parser.add_argument("inputs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.merge:
        wheels = []
        for listing in args.inputs:
            data = json.loads(listing.read_text(encoding="utf-8"))
            if data.get("version") != args.version:
                raise SystemExit(f"{listing}: version {data.get('version')} is not {args.version}")
            wheels += data["wheels"]
    else:
        if not args.url_base or not args.url_base.startswith("https://"):
            raise SystemExit("--url-base must be an https:// URL")
        wheels = [describe(wheel, args.url_base) for wheel in args.inputs]
    names = [wheel["file"] for wheel in wheels]
    if len(set(names)) != len(names):
        raise SystemExit(f"the same wheel twice: {sorted(names)}")
    listing = {"package": PACKAGE, "version": args.version, "wheels": sorted(wheels, key=lambda w: str(w["file"]))}
    args.out.write_text(json.dumps(listing, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
