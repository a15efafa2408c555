#!/usr/bin/env python3
"""Talk to the development Home Assistant over its REST API (stdlib only).

    scripts/dev_client.py converse "Turn on the bed light"
    scripts/dev_client.py converse --conversation <id from the answer> yes
    scripts/dev_client.py token
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from typing import Any

# GEMMA_EDGE_DEV_PORT: another port (tests/test_browser.py runs its own home beside yours).
PORT = int(os.environ.get("GEMMA_EDGE_DEV_PORT", "8123"))
BASE = f"http://127.0.0.1:{PORT}"
CLIENT_ID = f"{BASE}/"
USERNAME = PASSWORD = "dev"


def request(method: str, path: str, body: Any = None, token: str | None = None, form: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=300) as response:  # noqa: S310 - loopback only
        text = response.read().decode()
    return json.loads(text) if text else None


def login() -> str:
    """The regular login flow of the built-in user; returns an access token."""
    flow = request("POST", "/auth/login_flow", {"client_id": CLIENT_ID, "handler": ["homeassistant", None], "redirect_uri": CLIENT_ID})
    result = request("POST", f"/auth/login_flow/{flow['flow_id']}", {"client_id": CLIENT_ID, "username": USERNAME, "password": PASSWORD})
    tokens = request("POST", "/auth/token", {"grant_type": "authorization_code", "code": result["result"], "client_id": CLIENT_ID}, form=True)
    return tokens["access_token"]


def websocket(token: str, command: dict[str, Any]) -> Any:
    """One websocket API command (aiohttp comes with Home Assistant in .venv)."""
    import asyncio  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415

    async def run() -> Any:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{BASE}/api/websocket") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": token})
            await ws.receive_json()
            await ws.send_json({"id": 1, **command})
            reply = await ws.receive_json()
            if not reply.get("success"):
                raise RuntimeError(f"websocket command failed: {reply}")
            return reply["result"]

    return asyncio.run(run())


def converse(text: str, token: str, agent_id: str = "conversation.gemma_conversation", conversation_id: str | None = None) -> Any:
    body = {"text": text, "language": "en", "agent_id": agent_id}
    if conversation_id:  # continue a conversation (a "yes" after the agent asked)
        body["conversation_id"] = conversation_id
    return request("POST", "/api/conversation/process", body, token)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "token"
    token = login()
    if command == "token":
        print(token)
    elif command == "converse":  # converse [--conversation ID] words...
        words, conversation_id = sys.argv[2:], None
        if words[:1] == ["--conversation"]:
            conversation_id, words = words[1], words[2:]
        print(json.dumps(converse(" ".join(words), token, conversation_id=conversation_id), indent=2))
    elif command == "state":
        print(json.dumps(request("GET", f"/api/states/{sys.argv[2]}", token=token), indent=2))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
