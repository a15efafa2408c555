#!/usr/bin/env python3
"""Prepare dev/config, start Home Assistant, configure Gemma Edge Agent through its real config flow.

Run by scripts/develop. The first run creates the login (dev / dev), an engine entry on the
bundled small model (Gemma 3 270M from the test-model cache) with the tests' tiny random-weight
vision projector (the image path runs for real; what the model says about a picture is noise), and
a "Front Door" camera showing a still picture (local_file); later runs reuse them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import urllib.error

sys.path.insert(0, str(Path(__file__).parent))
from dev_client import BASE, PASSWORD, USERNAME, converse, login, request, websocket  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "dev" / "config"
MODELS = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))
DEV_MODEL = Path(os.environ.get("GEMMA_EDGE_DEV_MODEL", MODELS / "gemma-3-270m-q4_k_m.gguf"))
DEV_PROJECTOR = CONFIG / "models" / "mmproj-tiny-gemma4v.gguf"
DEV_PICTURE = CONFIG / "www" / "front_door.jpg"


def prepare_config() -> None:
    """Onboarding done and a login, so the UI opens straight to the home."""
    storage = CONFIG / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    link = CONFIG / "custom_components"
    if not link.exists():
        link.symlink_to(ROOT / "custom_components")
    onboarding = storage / "onboarding"
    if not onboarding.exists():
        onboarding.write_text(json.dumps({
            "version": 4, "minor_version": 1, "key": "onboarding",
            "data": {"done": ["user", "core_config", "analytics", "integration"]},
        }))  # fmt: skip
        subprocess.run(
            [sys.executable, "-c", "import sys; from homeassistant.scripts import auth; auth.run(sys.argv[1:])",
             "--config", str(CONFIG), "add", USERNAME, PASSWORD],
            check=True,
        )  # fmt: skip
    if not DEV_PROJECTOR.exists():
        sys.path.insert(0, str(ROOT))
        from tests.mmproj_files import text_embedding_of, write_tiny_mmproj  # noqa: PLC0415

        DEV_PROJECTOR.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_mmproj(DEV_PROJECTOR, text_embedding_of(DEV_MODEL))
    if not DEV_PICTURE.exists():
        from PIL import Image  # noqa: PLC0415

        DEV_PICTURE.parent.mkdir(parents=True, exist_ok=True)
        Image.effect_mandelbrot((1280, 720), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB").save(DEV_PICTURE, "JPEG")


def wait_until_up(process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Home Assistant exited with {process.returncode}")
        try:
            request("GET", "/manifest.json")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(2)
    raise SystemExit("Home Assistant did not come up in time")


def configure_agent(token: str) -> None:
    """Create the engine entry through the config flow unless it exists."""
    entries = request("GET", "/api/config/config_entries/entry?domain=gemma_edge", token=token)
    if entries:
        return
    flow = request("POST", "/api/config/config_entries/flow", {"handler": "gemma_edge"}, token)
    flow = request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"next_step_id": "local"}, token)
    result = request(
        "POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"model_path": str(DEV_MODEL), "mmproj_path": str(DEV_PROJECTOR)}, token,
    )  # fmt: skip
    if result.get("type") != "create_entry":
        raise SystemExit(f"config flow failed: {result}")
    entry_id = result["result"]["entry_id"]
    # A 270M model needs "always act first" to control the home; a real Gemma 4 does not.
    flow = request(
        "POST", "/api/config/config_entries/subentries/flow",
        {"handler": [entry_id, "conversation"], "source": "reconfigure", "subentry_id": _subentry(token, entry_id)},
        token,
    )  # fmt: skip
    request(
        "POST", f"/api/config/config_entries/subentries/flow/{flow['flow_id']}",
        {"tool_choice": "required", "temperature": 0, "max_tokens": 64, "max_history": 4, "llm_hass_api": ["assist"]},
        token,
    )  # fmt: skip
    flow = request("POST", "/api/config/config_entries/flow", {"handler": "local_file"}, token)
    request(
        "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"name": "Front Door", "file_path": str(DEV_PICTURE)}, token
    )  # fmt: skip
    print(f"configured Gemma Edge Agent on {DEV_MODEL.name} with a vision projector, and a Front Door camera")


def _subentry(token: str, entry_id: str) -> str:
    subentries = websocket(token, {"type": "config_entries/subentries/list", "entry_id": entry_id})
    return subentries[0]["subentry_id"]


def main() -> None:
    if not DEV_MODEL.exists():
        raise SystemExit(f"{DEV_MODEL} is missing: run scripts/setup")
    prepare_config()
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_hass.py"), "-c", str(CONFIG)])
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        wait_until_up(process)
        token = login()
        configure_agent(token)
        if "--check" in sys.argv:
            answer = converse("Turn on the kitchen light", token)
            state = request("GET", "/api/states/light.kitchen_light", token=token)["state"]
            print(json.dumps(answer["response"]["speech"]), "kitchen light:", state)
            asked = request(
                "POST", "/api/services/gemma_edge/ask?return_response",
                {"text": "Who is at the door?", "camera_entity_id": "camera.front_door"}, token,
            )["service_response"]  # fmt: skip
            print("gemma_edge.ask with the Front Door camera:", json.dumps(asked))
            process.terminate()
            process.wait(60)
            raise SystemExit(0 if state == "on" and isinstance(asked.get("text"), str) else 1)
        print(f"Home Assistant is running on {BASE} (login {USERNAME} / {PASSWORD}); Ctrl+C stops it.")
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(60)


if __name__ == "__main__":
    main()
