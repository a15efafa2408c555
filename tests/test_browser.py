"""The whole flow in a real browser, as a user meets it (issue 16).

Debian's Chromium, driven by Playwright from PyPI with ``executable_path`` (no browser
download), against the real Home Assistant of ``scripts/develop`` (the demo home, started
fresh in a temporary folder on a free port by scripts/dev_bootstrap.py, exactly as a
developer starts it): log in; add a second engine through the config-flow UI with a local
model file; open Assist from the toolbar and type "turn on the kitchen lights"; see the
answer and the light on in the UI, and check that our agent acted (a gemma_edge_action
event in the light's context); see our blueprints listed; open the ready dashboard and see
the action in the Last action card and in the Agent activity calendar. Screenshots go to tests/artifacts/browser/
(README's pictures are taken from there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import contextlib
import os
import re
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlparse

import pytest

from .conftest import SMOLLM2

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("GEMMA_EDGE_ARTIFACTS", ROOT / "tests" / "artifacts")) / "browser"
CHROMIUM = Path(os.environ.get("GEMMA_EDGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
# As root in a container, without a GPU, on a machine whose network is closed: no sandbox,
# no GPU, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
READY_LINE = "Home Assistant is running on"
COMMAND = "turn on the kitchen lights"
ANSWER = "Turned on Kitchen Lights."
LIGHT = "light.kitchen_lights"
SENTENCE = "turned on Kitchen Lights (asked in Assist)"
BLUEPRINTS = [
    "Ask Gemma when something happens",
    "Camera snapshot to data with Gemma",
    "Confirm Gemma's sensitive actions from your phone",
]
# The toolbar's Assist button shows mdi:comment-processing-outline (its label is a tooltip).
ASSIST_ICON = "M9,22A1,1 0 0,1 8,21V18H4A2,2"

sys.path.insert(0, str(ROOT / "scripts"))
import dev_client  # noqa: E402
from dev_bootstrap import stop_with_parent  # noqa: E402

try:
    from playwright.sync_api import Page, TimeoutError as PlaywrightTimeoutError, expect, sync_playwright
except ImportError:  # pragma: no cover - requirements_test.txt installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(1200)


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dev_home(config: Path, log: Path) -> Iterator[str]:
    """scripts/dev_bootstrap.py on a fresh configuration folder; yields the home's URL."""
    port = _free_port()
    config.mkdir(parents=True)
    source = (ROOT / "dev" / "config" / "configuration.yaml").read_text()
    assert "server_port: 8123" in source
    (config / "configuration.yaml").write_text(source.replace("server_port: 8123", f"server_port: {port}"))
    env = {**os.environ, "GEMMA_EDGE_DEV_CONFIG": str(config), "GEMMA_EDGE_DEV_PORT": str(port)}
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 - our own script
            [sys.executable, str(ROOT / "scripts" / "dev_bootstrap.py")], env=env, stdout=output, stderr=subprocess.STDOUT,
            preexec_fn=stop_with_parent,  # it (and its Home Assistant) stop if pytest is killed  # noqa: PLW1509
        )
    try:
        deadline = time.monotonic() + 900
        while READY_LINE not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                pytest.fail(f"scripts/dev_bootstrap.py did not start the home (exit {process.poll()}):\n{tail}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)  # it stops Home Assistant, then exits
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EventRecorder:
    """Records the home's gemma_edge_action events over the websocket API, in a thread."""

    def __init__(self, base: str, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._base, self._token = base, token
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="event-recorder", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # noqa: BLE001 - reported by __enter__ and the test
            self.error = err
            self._subscribed.set()

    def __enter__(self) -> EventRecorder:
        self._thread.start()
        if not self._subscribed.wait(30) or self.error is not None:
            self._stop.set()
            raise AssertionError(f"could not subscribe to gemma_edge_action: {self.error}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        import aiohttp  # noqa: PLC0415

        async with aiohttp.ClientSession() as session, session.ws_connect(f"{self._base}/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": self._token})
            await ws.receive_json()
            await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "gemma_edge_action"})
            assert (await ws.receive_json())["success"]
            self._subscribed.set()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    message = await ws.receive_json(timeout=0.5)
                    if message.get("type") == "event":
                        self.events.append(message["event"])


def shot(page: Page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def log_in(page: Page, base: str) -> None:
    page.goto(base)
    page.get_by_label("Username").fill(dev_client.USERNAME)
    page.get_by_label("Password", exact=True).fill(dev_client.PASSWORD)
    shot(page, "01-login")
    page.keyboard.press("Enter")
    # logged in once the frontend has its tokens and has moved on to a dashboard
    page.wait_for_url(lambda url: "auth" not in url and urlparse(url).path not in ("", "/"), timeout=60_000)
    expect(page.locator("ha-sidebar")).to_be_visible(timeout=60_000)


def add_engine_in_the_ui(page: Page, base: str, model: Path) -> None:
    """Settings > Devices & services > Gemma Edge Agent > Add service > a GGUF file."""
    page.goto(f"{base}/config/integrations/integration/gemma_edge")
    page.get_by_text("Add service", exact=True).click(timeout=90_000)
    local_file = page.get_by_text("A GGUF file on this machine")
    expect(local_file).to_be_visible(timeout=30_000)
    shot(page, "02-add-engine")
    local_file.click()
    page.get_by_label("Model file (.gguf)").fill(str(model))
    shot(page, "03-local-model-file")
    page.get_by_role("button", name="Submit").click()
    finish = page.get_by_role("button", name="Skip and finish")
    expect(finish).to_be_visible(timeout=120_000)
    shot(page, "04-engine-added")
    finish.click()


def ask_assist(page: Page, base: str, words: str) -> str:
    """Open Assist from the dashboard's toolbar, type the words, return the answer shown."""
    page.goto(base)
    assist = page.locator("ha-icon-button").filter(has=page.locator(f'path[d^="{ASSIST_ICON}"]'))
    assist.first.click()
    box = page.get_by_label("Enter a request")
    expect(box).to_be_visible(timeout=30_000)
    box.fill(words)
    box.press("Enter")
    answer = page.get_by_text(ANSWER, exact=True)
    expect(answer).to_be_visible(timeout=120_000)
    shot(page, "05-assist")
    return answer.inner_text()


def see_light_on(page: Page, base: str, name: str) -> None:
    """Find the light with the entity search and see it on (its brightness) in its dialog."""
    page.goto(base)
    search = page.get_by_role("textbox", name="Search Home Assistant")
    for _ in range(30):  # the shortcut works once the page has loaded its handlers
        page.keyboard.press("e")
        with contextlib.suppress(PlaywrightTimeoutError):
            search.wait_for(timeout=2_000)
            break
    expect(search).to_be_visible(timeout=10_000)
    search.fill(name)
    page.get_by_text(name, exact=True).first.click(timeout=30_000)
    dialog = page.locator("ha-more-info-dialog")
    expect(dialog.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
    expect(dialog.get_by_text(re.compile(r"^\d+\s?%$")).first).to_be_visible(timeout=30_000)
    expect(dialog.get_by_text("Off", exact=True)).to_have_count(0)


@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (requirements_test.txt)")
def test_add_an_engine_talk_to_assist_and_see_the_action_on_the_dashboard(
    socket_enabled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: scripts/setup installs Debian's chromium with apt (as root)")
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with dev_home(tmp_path / "config", ARTIFACTS / "home.log") as base:
        monkeypatch.setattr(dev_client, "BASE", base)
        monkeypatch.setattr(dev_client, "CLIENT_ID", f"{base}/")
        token = dev_client.login()
        [first] = dev_client.request("GET", "/api/config/config_entries/entry?domain=gemma_edge", token=token)
        # the demo starts with the kitchen lights on: off first, as a user would find them
        dev_client.request("POST", "/api/services/light/turn_off", {"entity_id": LIGHT}, token)
        with EventRecorder(base, token) as recorder, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            # English and UTC whatever the machine's settings: the test reads the UI's words
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US", timezone_id="UTC")
            try:
                use_the_home(page, base, token, recorder, first["entry_id"])
            except BaseException:
                shot(page, "failure", full_page=True)  # what the browser showed when it failed
                raise
            finally:
                browser.close()


def use_the_home(page: Page, base: str, token: str, recorder: EventRecorder, first_entry: str) -> None:
    """The user's steps, with the checks behind them."""
    log_in(page, base)

    add_engine_in_the_ui(page, base, SMOLLM2)
    entries = dev_client.request("GET", "/api/config/config_entries/entry?domain=gemma_edge", token=token)
    assert len(entries) == 2 and all(entry["state"] == "loaded" for entry in entries), entries
    assert first_entry in [entry["entry_id"] for entry in entries]

    assert ask_assist(page, base, COMMAND) == ANSWER
    # the light is on in the UI: its dialog, opened from the entity search ("e")
    page.keyboard.press("Escape")
    see_light_on(page, base, "Kitchen Lights")
    shot(page, "06-kitchen-lights-on")

    # our agent acted: the light's last change is in the context of a gemma_edge_action
    light = dev_client.request("GET", f"/api/states/{LIGHT}", token=token)
    assert light["state"] == "on"
    assert recorder.error is None, recorder.error
    ours = [event for event in recorder.events if event["context"]["id"] == light["context"]["id"]]
    assert len(ours) == 1, recorder.events
    assert {key: ours[0]["data"][key] for key in ("service", "entity_ids", "status", "source")} == {
        "service": "light.turn_on", "entity_ids": [LIGHT], "status": "executed", "source": "conversation",
    }  # fmt: skip

    # the blueprints are there to use (the dev home has them as if imported)
    page.goto(f"{base}/config/blueprint/dashboard")
    for name in BLUEPRINTS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
    shot(page, "07-blueprints")

    page.goto(f"{base}/gemma-edge/gemma")
    last_action = page.locator("ha-markdown").filter(has_text=SENTENCE)
    expect(last_action.first).to_be_visible(timeout=60_000)
    calendar = page.locator("ha-full-calendar").get_by_text(SENTENCE)
    expect(calendar.first).to_be_visible(timeout=60_000)
    shot(page, "08-dashboard", full_page=True)
