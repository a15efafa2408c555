#!/usr/bin/env python3
"""Prepare dev/config, start Home Assistant, configure Gemma Edge Agent through its real config flow.

Run by scripts/develop. The home is Home Assistant's own `demo` integration (about 60 entities)
with Home Assistant's default exposure to Assist. On top of it this script makes sure of, every run:

- the login (dev / dev) and a finished onboarding, so the UI opens straight to the home;
- an engine entry on the bundled small model (Gemma 3 270M from the test-model cache) with the
  tests' tiny random-weight vision projector (the image path runs for real; what the model says
  about a picture is noise);
- the conversation agent's options a 270M model needs (AGENT_OPTIONS);
- a "Front Door" camera showing a still picture (local_file).

Every step looks at the actual state (files, config entries, the agent's current options through
its reconfigure flow) and does only what is missing, so the script can be interrupted anywhere
(Ctrl+C, kill, kill -9: Home Assistant is stopped with it) and run again, and it ends configured.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
from typing import Any
import urllib.error

sys.path.insert(0, str(Path(__file__).parent))
from dev_client import BASE, PASSWORD, PORT, USERNAME, converse, login, request, websocket  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.demo_areas import DEMO_AREAS  # noqa: E402  (the tests' demo home has the same areas)
# GEMMA_EDGE_DEV_CONFIG: another configuration folder (tests/test_browser.py starts a fresh
# home there, its configuration.yaml on GEMMA_EDGE_DEV_PORT).
CONFIG = Path(os.environ.get("GEMMA_EDGE_DEV_CONFIG", ROOT / "dev" / "config"))
MODELS = Path(os.environ.get("GEMMA_EDGE_TEST_MODELS", Path.home() / ".cache" / "gemma-edge" / "models"))
DEV_MODEL = Path(os.environ.get("GEMMA_EDGE_DEV_MODEL", MODELS / "gemma-3-270m-q4_k_m.gguf"))
DEV_PROJECTOR = CONFIG / "models" / "mmproj-tiny-gemma4v.gguf"
DEV_PICTURE = CONFIG / "www" / "front_door.jpg"
WHISPER_MODEL = MODELS / "faster-whisper-tiny.en"  # fetched by scripts/setup, like the test models
SPEECH_NAME = "Gemma speech"
PIPELINE_NAME = "Gemma"
DASHBOARD_PATH = "gemma-edge"
CAMERA_NAME = "Front Door"
CAMERA_ENTITY = "camera.front_door"

# A 270M model needs "always act first" to control the home; a real Gemma 4 does not.
AGENT_OPTIONS: dict[str, Any] = {
    "tool_choice": "required",
    "temperature": 0,
    "max_tokens": 64,
    "max_history": 4,
    "llm_hass_api": ["assist"],
}

# --check: the demo's "Bed Light" (light.bed_light) starts off on every start of the demo.
CHECK_COMMAND = "Turn on the bed light"
CHECK_ENTITY = "light.bed_light"
CHECK_STATE = "on"


def step(message: str) -> None:
    print(f"develop: {message}", flush=True)


def _write_atomically(target: Path, write: Any) -> None:
    """write(path) into a temporary file next to target, then rename: an interrupted run leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".partial-{target.name}")
    partial.unlink(missing_ok=True)
    write(partial)
    partial.replace(target)


def _login_exists() -> bool:
    try:
        users = json.loads((CONFIG / ".storage" / "auth_provider.homeassistant").read_text())["data"]["users"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return any(user.get("username") == USERNAME for user in users)


def prepare_config() -> None:
    """Files Home Assistant reads at start: login, onboarding, our integration, projector, picture."""
    storage = CONFIG / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    link = CONFIG / "custom_components"
    if link.is_symlink() and link.resolve() != ROOT / "custom_components":
        link.unlink()
    if not link.is_symlink() and not link.exists():
        link.symlink_to(ROOT / "custom_components")
    automations = CONFIG / "automations.yaml"  # the UI's automations (configuration.yaml)
    if not automations.exists():
        automations.write_text("[]\n")
    # Our blueprints, as if imported (Settings > Automations & scenes > Blueprints lists them);
    # copies, kept up to date: Home Assistant does not look into linked folders.
    blueprints = CONFIG / "blueprints" / "automation" / "gemma_edge"
    if blueprints.is_symlink():
        blueprints.unlink()
    blueprints.mkdir(parents=True, exist_ok=True)
    for source in (ROOT / "blueprints" / "automation" / "gemma_edge").glob("*.yaml"):
        if not (copy := blueprints / source.name).exists() or copy.read_text() != source.read_text():
            _write_atomically(copy, lambda path, text=source.read_text(): path.write_text(text))
    if not _login_exists():
        subprocess.run(
            [sys.executable, "-c", "import sys; from homeassistant.scripts import auth; auth.run(sys.argv[1:])",
             "--config", str(CONFIG), "add", USERNAME, PASSWORD],
            check=True,
        )  # fmt: skip
        if not _login_exists():
            raise SystemExit(f"could not create the login {USERNAME} in {storage}")
        step(f"created the login {USERNAME} / {PASSWORD}")
    onboarding = storage / "onboarding"
    done = ["user", "core_config", "analytics", "integration"]
    try:
        onboarded = set(done) <= set(json.loads(onboarding.read_text())["data"]["done"])
    except (OSError, ValueError, KeyError, TypeError):
        onboarded = False
    if not onboarded:
        text = json.dumps({"version": 4, "minor_version": 1, "key": "onboarding", "data": {"done": done}})
        _write_atomically(onboarding, lambda path: path.write_text(text))
    if not DEV_PROJECTOR.exists():
        sys.path.insert(0, str(ROOT))
        from tests.mmproj_files import text_embedding_of, write_tiny_mmproj  # noqa: PLC0415

        _write_atomically(DEV_PROJECTOR, lambda path: write_tiny_mmproj(path, text_embedding_of(DEV_MODEL)))
        step(f"wrote the tiny vision projector {DEV_PROJECTOR}")
    if not DEV_PICTURE.exists():
        from PIL import Image  # noqa: PLC0415

        picture = Image.effect_mandelbrot((1280, 720), (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
        _write_atomically(DEV_PICTURE, lambda path: picture.save(path, "JPEG"))


def port_in_use() -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        return sock.connect_ex(("127.0.0.1", PORT)) == 0


def stop_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when this script dies, even by kill -9."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_home_assistant() -> subprocess.Popen[bytes]:
    if port_in_use():
        raise SystemExit(
            f"something already listens on {BASE} (an earlier Home Assistant still running?): stop it first,"
            f" e.g. find it with `ss -ltnp 'sport = :{PORT}'`"
        )
    preexec = stop_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_hass.py"), "-c", str(CONFIG)], preexec_fn=preexec)  # noqa: PLW1509


def stop_home_assistant(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def wait_until_running(process: subprocess.Popen[bytes], token: str, timeout: float = 600) -> None:
    """The HTTP server answers as soon as the frontend is up; integrations set up until the state is RUNNING."""
    deadline = time.monotonic() + timeout
    while (state := request("GET", "/api/config", token=token).get("state")) != "RUNNING":
        if process.poll() is not None:
            raise SystemExit(f"Home Assistant exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"Home Assistant is still {state} after {timeout:.0f} s")
        time.sleep(1)


def _entries(token: str, domain: str) -> list[dict[str, Any]]:
    return request("GET", f"/api/config/config_entries/entry?domain={domain}", token=token) or []


def _wait_for_entry_setup(token: str, domain: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Entries of the domain once none is still setting up (a reload after reconfiguring takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = _entries(token, domain)
        if time.monotonic() > deadline or not any(entry["state"] in ("setup_in_progress", "unload_in_progress") for entry in entries):
            return entries
        time.sleep(1)


def ensure_engine_entry(token: str) -> str:
    """The engine entry: created through the config flow when there is none; reported when it did not load."""
    entries = _wait_for_entry_setup(token, "gemma_edge")
    if not entries:
        flow = request("POST", "/api/config/config_entries/flow", {"handler": "gemma_edge"}, token)
        flow = request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"next_step_id": "local"}, token)
        result = request(
            "POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"model_path": str(DEV_MODEL), "mmproj_path": str(DEV_PROJECTOR)}, token,
        )  # fmt: skip
        if result.get("type") != "create_entry":
            raise SystemExit(f"config flow failed: {result}")
        step(f"created the engine entry on {DEV_MODEL.name} with a vision projector")
        entries = _wait_for_entry_setup(token, "gemma_edge")
    if len(entries) > 1:
        step(f"{len(entries)} Gemma Edge entries; configuring the first one ({entries[0]['title']})")
    entry = entries[0]
    if entry["state"] != "loaded":
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        step(f"WARNING: the engine entry '{entry['title']}' is {entry['state']}{reason} (see dev/config/home-assistant.log)")
    return entry["entry_id"]


def _conversation_subentry(token: str, entry_id: str) -> str:
    subentries = websocket(token, {"type": "config_entries/subentries/list", "entry_id": entry_id})
    for subentry in subentries:
        if subentry["subentry_type"] == "conversation":
            return subentry["subentry_id"]
    raise SystemExit(f"the engine entry {entry_id} has no conversation agent (subentry); add one in the UI or delete the entry")


def _current_values(form: dict[str, Any]) -> dict[str, Any]:
    """What the reconfigure form shows: the subentry's current data (defaults and suggested values)."""
    values = {}
    for field in form.get("data_schema", []):
        suggested = (field.get("description") or {}).get("suggested_value")
        if suggested is not None:
            values[field["name"]] = suggested
        elif "default" in field:
            values[field["name"]] = field["default"]
    return values


def _reconfigure_form(token: str, entry_id: str, subentry_id: str) -> dict[str, Any]:
    form = request(
        "POST", "/api/config/config_entries/subentries/flow",
        {"handler": [entry_id, "conversation"], "source": "reconfigure", "subentry_id": subentry_id}, token,
    )  # fmt: skip
    if form.get("type") != "form":
        raise SystemExit(f"could not open the agent's reconfigure flow: {form}")
    return form


def _differences(current: dict[str, Any]) -> dict[str, Any]:
    return {key: current.get(key) for key, value in AGENT_OPTIONS.items() if current.get(key) != value}


def ensure_agent_options(token: str, entry_id: str) -> None:
    """Reconfigure the conversation agent when its current options differ from AGENT_OPTIONS."""
    subentry_id = _conversation_subentry(token, entry_id)
    form = _reconfigure_form(token, entry_id, subentry_id)
    current = _current_values(form)
    differences = _differences(current)
    if not differences:
        request("DELETE", f"/api/config/config_entries/subentries/flow/{form['flow_id']}", token=token)
        step(f"agent options already set: {json.dumps(AGENT_OPTIONS)}")
        return
    # Everything the form has keeps its current value (the prompt, sensitive actions...); ours on top.
    names = {field["name"] for field in form["data_schema"]}
    answer = {**{key: value for key, value in current.items() if key in names}, **AGENT_OPTIONS}
    result = request("POST", f"/api/config/config_entries/subentries/flow/{form['flow_id']}", answer, token)
    if result.get("type") != "abort" or result.get("reason") != "reconfigure_successful":
        raise SystemExit(f"reconfiguring the agent failed: {result}")
    # Read them back the same way: the check is the actual state, not what we sent.
    form = _reconfigure_form(token, entry_id, subentry_id)
    request("DELETE", f"/api/config/config_entries/subentries/flow/{form['flow_id']}", token=token)
    if still := _differences(_current_values(form)):
        raise SystemExit(f"the agent's options did not take: {still}")
    step(f"agent options set (were {json.dumps(differences)}): {json.dumps(AGENT_OPTIONS)}")


def ensure_camera(token: str) -> None:
    """The Front Door camera: a local_file entry of that name, created when there is none."""
    if any(entry["title"] == CAMERA_NAME for entry in _entries(token, "local_file")):
        step(f"camera '{CAMERA_NAME}' already configured")
        return
    flow = request("POST", "/api/config/config_entries/flow", {"handler": "local_file"}, token)
    result = request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {"name": CAMERA_NAME, "file_path": str(DEV_PICTURE)}, token)
    if result.get("type") != "create_entry":
        raise SystemExit(f"could not add the {CAMERA_NAME} camera (local_file): {result}")
    step(f"created the camera '{CAMERA_NAME}' ({DEV_PICTURE})")


def ensure_speech(token: str, entry_id: str) -> None:
    """Our speech-to-text: a speech subentry on the engine, on the local tiny.en model."""
    subentries = websocket(token, {"type": "config_entries/subentries/list", "entry_id": entry_id})
    if any(subentry["subentry_type"] == "stt" for subentry in subentries):
        step("speech-to-text already configured")
        return
    if not WHISPER_MODEL.is_dir():
        step(f"WARNING: no speech-to-text: {WHISPER_MODEL} is missing (run scripts/setup)")
        return
    flow = request("POST", "/api/config/config_entries/subentries/flow", {"handler": [entry_id, "stt"]}, token)
    if flow.get("type") != "form":
        raise SystemExit(f"could not open the speech flow: {flow}")
    answer = {"name": SPEECH_NAME, "model": str(WHISPER_MODEL), "language": "en", "beam_size": 1, "vad_filter": True}
    names = {field["name"] for field in flow["data_schema"]}
    result = request("POST", f"/api/config/config_entries/subentries/flow/{flow['flow_id']}", {k: v for k, v in answer.items() if k in names}, token)
    if result.get("type") != "create_entry":
        raise SystemExit(f"could not add speech-to-text: {result}")
    step(f"added speech-to-text '{SPEECH_NAME}' on {WHISPER_MODEL.name}")


def _our_entity(token: str, entry_id: str, domain: str, timeout: float = 120) -> str | None:
    """The entry's entity of ``domain`` (None if it has none after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        for entity in websocket(token, {"type": "config/entity_registry/list"}):
            if entity["config_entry_id"] == entry_id and entity["entity_id"].startswith(f"{domain}."):
                return str(entity["entity_id"])
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def ensure_pipeline(token: str, entry_id: str) -> str:
    """The Assist pipeline "Gemma": our agent and our speech-to-text, Home Assistant's own
    handling of commands off (our agent runs its sentence matcher itself, through the
    ledger), preferred. Created, corrected or made preferred only where needed."""
    agent = _our_entity(token, entry_id, "conversation")
    if agent is None:
        raise SystemExit(f"the engine entry {entry_id} has no conversation agent entity")
    wanted = {
        "name": PIPELINE_NAME,
        "language": "en",
        "conversation_engine": agent,
        "conversation_language": "en",
        "stt_engine": _our_entity(token, entry_id, "stt", timeout=30),
        "stt_language": "en",
        "tts_engine": None,
        "tts_language": None,
        "tts_voice": None,
        "wake_word_entity": None,
        "wake_word_id": None,
        "prefer_local_intents": False,
    }
    listed = websocket(token, {"type": "assist_pipeline/pipeline/list"})
    ours = next((p for p in listed["pipelines"] if p["name"] == PIPELINE_NAME), None)
    done = []
    if ours is None:
        ours = websocket(token, {"type": "assist_pipeline/pipeline/create", **wanted})
        done.append("created")
    elif any(ours.get(key) != value for key, value in wanted.items()):
        ours = websocket(token, {"type": "assist_pipeline/pipeline/update", "pipeline_id": ours["id"], **wanted})
        done.append("updated")
    if listed.get("preferred_pipeline") != ours["id"]:
        websocket(token, {"type": "assist_pipeline/pipeline/set_preferred", "pipeline_id": ours["id"]})
        done.append("made preferred")
    state = " and ".join(done) if done else "already set and preferred"
    step(f"Assist pipeline '{PIPELINE_NAME}' ({wanted['conversation_engine']}, {wanted['stt_engine']}): {state}")
    return agent


def ensure_areas(token: str) -> None:
    """The demo home's areas (tests/demo_areas.py), created and assigned where missing."""
    areas = {area["name"]: area["area_id"] for area in websocket(token, {"type": "config/area_registry/list"})}
    entities = {entity["entity_id"]: entity for entity in websocket(token, {"type": "config/entity_registry/list"})}
    changed = []
    for name, entity_ids in DEMO_AREAS.items():
        if name not in areas:
            areas[name] = websocket(token, {"type": "config/area_registry/create", "name": name})["area_id"]
            changed.append(f"area {name}")
        for entity_id in entity_ids:
            if entity_id in entities and entities[entity_id].get("area_id") != areas[name]:
                websocket(token, {"type": "config/entity_registry/update", "entity_id": entity_id, "area_id": areas[name]})
                changed.append(f"{entity_id} in {name}")
    step(f"areas: set {', '.join(changed)}" if changed else f"areas already set: {', '.join(DEMO_AREAS)}")


def ensure_dashboard(token: str, entry_id: str) -> None:
    """The dashboard "Gemma" in the sidebar, as a user makes it: a new dashboard whose raw
    configuration is what gemma_edge.get_dashboard returns (kept up to date)."""
    wanted = request(
        "POST", "/api/services/gemma_edge/get_dashboard?return_response", {"config_entry_id": entry_id}, token
    )["service_response"]  # fmt: skip
    dashboards = websocket(token, {"type": "lovelace/dashboards/list"})
    done = []
    if not any(d["url_path"] == DASHBOARD_PATH for d in dashboards):
        websocket(token, {
            "type": "lovelace/dashboards/create", "url_path": DASHBOARD_PATH, "title": "Gemma",
            "icon": "mdi:robot-happy-outline", "show_in_sidebar": True, "require_admin": False, "mode": "storage",
        })  # fmt: skip
        done.append("created")
    try:
        current = websocket(token, {"type": "lovelace/config", "url_path": DASHBOARD_PATH})
    except RuntimeError:  # a new dashboard has no configuration yet
        current = None
    if current != wanted:
        websocket(token, {"type": "lovelace/config/save", "url_path": DASHBOARD_PATH, "config": wanted})
        done.append("filled from gemma_edge.get_dashboard")
    step(f"dashboard '{BASE}/{DASHBOARD_PATH}': {' and '.join(done) if done else 'up to date'}")


def _log_problems() -> list[str]:
    """First lines of the ERROR and WARNING records of this run's home-assistant.log."""
    try:
        lines = (CONFIG / "home-assistant.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if " ERROR " in line[:40] or " WARNING " in line[:40]]


def check(token: str, agent: str) -> bool:
    """Ask the agent to act on the demo home, call gemma_edge.ask with the camera, report."""
    time.sleep(2)  # a reconfigured agent reloads its entry: let that start, then wait for it
    _wait_for_entry_setup(token, "gemma_edge")
    states = request("GET", "/api/states", token=token)
    before = next((s["state"] for s in states if s["entity_id"] == CHECK_ENTITY), None)
    started = time.monotonic()
    answer = converse(CHECK_COMMAND, token)
    took = time.monotonic() - started
    speech = answer["response"].get("speech", {}).get("plain", {}).get("speech")
    state = request("GET", f"/api/states/{CHECK_ENTITY}", token=token)["state"]
    # Exposure is settled per entity the first time someone asks (the agent just did): list it now.
    exposed = websocket(token, {"type": "homeassistant/expose_entity/list"})["exposed_entities"]
    to_assist = sorted(entity for entity, assistants in exposed.items() if assistants.get("conversation"))
    domains: dict[str, int] = {}
    for entity in to_assist:
        domains[entity.split(".")[0]] = domains.get(entity.split(".")[0], 0) + 1
    print(f"home: {len(states)} entities, {len(to_assist)} exposed to Assist ({', '.join(f'{d} {n}' for d, n in sorted(domains.items()))})")
    print(f"asked {CHECK_COMMAND!r} ({took:.1f} s): speech {json.dumps(speech)}; response type {answer['response'].get('response_type')}")
    print(f"{CHECK_ENTITY}: {before} -> {state} (wanted {CHECK_STATE})")
    started = time.monotonic()
    asked = request(
        "POST", "/api/services/gemma_edge/ask?return_response",
        {"text": "Who is at the door?", "camera_entity_id": CAMERA_ENTITY}, token,
    )["service_response"]  # fmt: skip
    print(f"gemma_edge.ask with the Front Door camera ({time.monotonic() - started:.1f} s):", json.dumps(asked))
    engine, spoken = assist_dialog(token, "Turn off the bed light")
    after = request("GET", f"/api/states/{CHECK_ENTITY}", token=token)["state"]
    print(f"Assist dialog (preferred pipeline): agent {engine}, speech {json.dumps(spoken)}, {CHECK_ENTITY} -> {after}")
    problems = _log_problems()
    print(f"home-assistant.log: {len(problems)} error/warning records")
    for line in problems:
        print("  " + line[:300])
    return (
        state == CHECK_STATE
        and isinstance(asked.get("text"), str)
        and engine == agent
        and after == "off"
    )


def assist_dialog(token: str, text: str) -> tuple[str | None, str | None]:
    """Type into Assist as the UI's dialog does: the preferred pipeline, text in; return the
    agent that answered and what it said."""
    import asyncio  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415

    async def run() -> tuple[str | None, str | None]:
        engine = spoken = None
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{BASE}/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": token})
            if (await ws.receive_json()).get("type") != "auth_ok":
                raise SystemExit("the websocket login failed")
            await ws.send_json({"id": 1, "type": "assist_pipeline/run", "start_stage": "intent", "end_stage": "intent", "input": {"text": text}})
            while True:
                message = await ws.receive_json(timeout=120)
                event = message.get("event") or {}
                if event.get("type") == "intent-start":
                    engine = event["data"].get("engine")
                elif event.get("type") == "intent-end":
                    output = event["data"].get("intent_output") or {}
                    spoken = output.get("response", {}).get("speech", {}).get("plain", {}).get("speech")
                elif event.get("type") in ("run-end", "error") or message.get("success") is False:
                    return engine, spoken

    return asyncio.run(run())


def main() -> None:
    if not DEV_MODEL.exists():
        raise SystemExit(f"{DEV_MODEL} is missing: run scripts/setup")
    prepare_config()
    process = start_home_assistant()

    def on_sigterm(*_: object) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    ok = serving = False
    try:
        wait_until_up(process)
        token = login()
        wait_until_running(process, token)
        entry_id = ensure_engine_entry(token)
        ensure_agent_options(token, entry_id)
        ensure_speech(token, entry_id)
        agent = ensure_pipeline(token, entry_id)
        ensure_camera(token)
        ensure_areas(token)
        ensure_dashboard(token, entry_id)
        if "--check" in sys.argv:
            ok = check(token, agent)
        else:
            print(f"Home Assistant is running on {BASE} (login {USERNAME} / {PASSWORD}); Ctrl+C stops it.", flush=True)
            ok = serving = True
            process.wait()
    except KeyboardInterrupt:
        ok = serving
    finally:
        stop_home_assistant(process)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
