"""A server entry in a real Home Assistant: created through the config flow against a real
llama_cpp.server on 127.0.0.1, no llama-cpp-python needed in Home Assistant, the agent talking
through it with the prefix cached, the server gone and back, its API key kept out of diagnostics.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from aiohttp import web

from custom_components.gemma_edge import flow_checks, llama_runtime
from custom_components.gemma_edge.const import CONF_INSTANT_COMMANDS, DOMAIN
from custom_components.gemma_edge.engine.host_platform import detect_host
from custom_components.gemma_edge.engine.preflight import LlamaCppMissingError
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import intent
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import async_fire_time_changed
from pytest_homeassistant_custom_component.components.diagnostics import get_diagnostics_for_config_entry

from .conftest import SMALL_MODEL_AGENT, SMOLLM2, record_steps
from .llama_server import free_port, llama_cpp_server
from .local_http import serve_app


async def _add_server(hass: HomeAssistant, url: str, **extra: str) -> dict:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    assert "server" in result["menu_options"]
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": "server"})
    assert result["type"] is FlowResultType.FORM and result["step_id"] == "server"
    return await hass.config_entries.flow.async_configure(result["flow_id"], {"server_url": url, "context_size": 2048, **extra})


async def test_a_server_entry_runs_the_agent_without_llama_cpp_in_home_assistant(
    hass: HomeAssistant, socket_enabled: None, lights: list[str], monkeypatch: pytest.MonkeyPatch, hass_client
) -> None:
    # Home Assistant OS with no llama-cpp-python build for it: llama_cpp absent, musl, no wheel listed
    checks: list[str] = []

    def absent(*_args: object, **_kwargs: object) -> str:
        checks.append("checked")
        raise LlamaCppMissingError("llama-cpp-python is not installed")

    monkeypatch.setattr(llama_runtime, "check_llama_cpp", absent)
    monkeypatch.setattr(llama_runtime, "detect_host", lambda: replace(detect_host(), libc="musl", libc_version=(1, 2)))
    with llama_cpp_server(SMOLLM2, api_key="sesame") as url:
        refused = await _add_server(hass, url)
        assert refused["type"] is FlowResultType.FORM and refused["errors"] == {"base": "invalid_auth"}
        result = await hass.config_entries.flow.async_configure(
            refused["flow_id"], {"server_url": url + "/", "server_api_key": "sesame", "context_size": 2048}
        )
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        entry = result["result"]
        assert result["title"] == f"{SMOLLM2.name} (llama_cpp.server)"
        assert entry.data["server_url"] == url and entry.data["model_source"] == "server"
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
        assert checks == ["checked"]  # once, by the flow's menu; setting the server entry up needs none
        assert hass.config_entries.flow.async_progress() == []

        subentry = next(s for s in entry.subentries.values() if s.subentry_type == "conversation")
        # the model's path (not Home Assistant's sentence matcher): what the server engine does
        model_path = {**SMALL_MODEL_AGENT, CONF_INSTANT_COMMANDS: False}
        hass.config_entries.async_update_subentry(entry, subentry, data={**subentry.data, **model_path})
        await hass.async_block_till_done()
        steps = record_steps(entry.runtime_data.engine)
        agent = next(state.entity_id for state in hass.states.async_all("conversation") if state.entity_id != "conversation.home_assistant")
        answers = []
        conversation_id = None
        for text in ("Turn on the kitchen light", "And the porch light"):
            result = await conversation.async_converse(hass, text, conversation_id, Context(), language="en", agent_id=agent)
            conversation_id = result.conversation_id
            assert result.response.response_type is not intent.IntentResponseType.ERROR, result.response.speech
            answers.append(result.response.speech["plain"]["speech"])
        assert all(answer.strip() for answer in answers)
        # the second turn re-evaluates only what is new, as with a model in process
        first, last = steps[0], steps[-1]
        assert first.reused_tokens == 0 and first.evaluated_tokens == first.prompt_tokens > 300
        # (the time in the prompt may have moved on between the turns, the rest of the prefix is kept)
        assert last.reused_tokens > 0.9 * first.prompt_tokens
        assert last.evaluated_tokens == last.prompt_tokens - last.reused_tokens < 200, [s.as_dict() for s in steps]

        diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
        assert diagnostics["entry"]["data"]["server_api_key"] == "**REDACTED**"
        assert diagnostics["engine"]["server"] == {"kind": "llama_cpp.server", "model": str(SMOLLM2)}
        assert "sesame" not in str(diagnostics)

    # the server is gone: the entry retries, Home Assistant keeps running
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_RETRY
    await hass.config_entries.async_unload(entry.entry_id)


async def test_a_changed_api_key_asks_for_the_new_one(hass: HomeAssistant, socket_enabled: None) -> None:
    port = free_port()
    with llama_cpp_server(SMOLLM2, api_key="old", port=port) as url:
        result = await _add_server(hass, url, server_api_key="old")
        entry = result["result"]
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
    with llama_cpp_server(SMOLLM2, api_key="new", port=port):
        await hass.config_entries.async_reload(entry.entry_id)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.SETUP_ERROR
        [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        assert flow["context"]["source"] == "reauth" and flow["step_id"] == "reauth_confirm"
        wrong = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_api_key": "old"})
        assert wrong["errors"] == {"base": "invalid_auth"}
        done = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_api_key": "new"})
        assert done["type"] is FlowResultType.ABORT and done["reason"] == "reauth_successful"
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED and entry.data["server_api_key"] == "new"
        await hass.config_entries.async_unload(entry.entry_id)


async def test_the_server_step_refuses_an_unreachable_url(hass: HomeAssistant, socket_enabled: None) -> None:
    result = await _add_server(hass, f"http://127.0.0.1:{free_port()}")
    assert result["type"] is FlowResultType.FORM and result["errors"] == {"base": "cannot_connect"}


def test_server_entries_have_their_own_translations() -> None:
    import json  # noqa: PLC0415

    strings = json.loads((Path(llama_runtime.__file__).parent / "strings.json").read_text())
    assert set(strings["config"]["step"]["server"]["data"]) == {"server_url", "server_api_key", "context_size"}
    assert {"cannot_connect", "server_model_unsupported"} <= set(strings["config"]["error"])


async def test_reconfigure_moves_the_engine_to_another_server(hass: HomeAssistant, socket_enabled: None) -> None:
    """The server moved: reconfigure refuses an address that does not answer, keeps one that does,
    and the engine reloads on it with its agents."""
    with llama_cpp_server(SMOLLM2, port=free_port()) as first_url:
        entry = (await _add_server(hass, first_url))["result"]
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
    subentries = set(entry.subentries)
    with llama_cpp_server(SMOLLM2, port=free_port()) as moved_url:
        flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
        assert flow["step_id"] == "reconfigure_server"
        nowhere = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_url": f"http://127.0.0.1:{free_port()}"})
        assert nowhere["errors"] == {"base": "cannot_connect"}
        done = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_url": moved_url + "/"})
        assert done["type"] is FlowResultType.ABORT and done["reason"] == "reconfigure_successful"
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED and entry.data["server_url"] == moved_url
        assert set(entry.subentries) == subentries
        # its options leave threads and flash attention to the server
        options = await hass.config_entries.options.async_init(entry.entry_id)
        assert "threads" not in [str(field) for field in options["data_schema"].schema]
        with llama_cpp_server(SMOLLM2, api_key="sesame", port=free_port()) as other_url:
            other = (await _add_server(hass, other_url, server_api_key="sesame"))["result"]
            await hass.async_block_till_done()
            flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
            taken = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_url": other_url})
            assert taken["type"] is FlowResultType.ABORT and taken["reason"] == "already_configured"
            await hass.config_entries.async_remove(other.entry_id)
            flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reconfigure", "entry_id": entry.entry_id})
            keyed = await hass.config_entries.flow.async_configure(flow["flow_id"], {"server_url": other_url, "server_api_key": "sesame"})
            assert keyed["reason"] == "reconfigure_successful"
            await hass.async_block_till_done()
            assert entry.data["server_api_key"] == "sesame" and entry.state is ConfigEntryState.LOADED
            await hass.config_entries.async_unload(entry.entry_id)


async def test_a_server_that_stops_answering_makes_the_agents_unavailable_until_it_is_back(
    hass: HomeAssistant, socket_enabled: None, lights: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away while Home Assistant runs: the next turn fails with a clear answer,
    the agents become unavailable and Model status says error, logged once however many turns
    fail; the server comes back: within the check interval the agents are available again,
    logged once."""
    port = free_port()
    with llama_cpp_server(SMOLLM2, port=port) as url:
        entry = (await _add_server(hass, url))["result"]
        await hass.async_block_till_done()
        assert hass.states.get("conversation.gemma_conversation").state != "unavailable"
    status = next(s.entity_id for s in hass.states.async_all("sensor") if s.entity_id.endswith("_model_status"))
    for _ in range(2):
        result = await conversation.async_converse(hass, "Hello?", None, Context(), agent_id="conversation.gemma_conversation")
        assert result.response.error_code is intent.IntentResponseErrorCode.UNKNOWN
    await hass.async_block_till_done()
    for agent in ("conversation.gemma_conversation", "ai_task.gemma_ai_task"):
        assert hass.states.get(agent).state == "unavailable", agent
    assert hass.states.get(status).state == "error" and "cannot be reached" in hass.states.get(status).attributes["last_error"]
    assert caplog.text.count("the agents are unavailable until it answers again") == 1
    # nothing answers yet: a check changes nothing
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=31))
    await hass.async_block_till_done(wait_background_tasks=True)
    assert hass.states.get("conversation.gemma_conversation").state == "unavailable"
    with llama_cpp_server(SMOLLM2, port=port) as url:
        async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=62))
        await hass.async_block_till_done(wait_background_tasks=True)
        for agent in ("conversation.gemma_conversation", "ai_task.gemma_ai_task"):
            assert hass.states.get(agent).state != "unavailable", agent
        assert hass.states.get(status).state == "ready" and "last_error" not in hass.states.get(status).attributes
        assert caplog.text.count(f"The llama.cpp server at {url} answers again") == 1
        await hass.config_entries.async_unload(entry.entry_id)


async def test_the_server_step_s_other_answers(hass: HomeAssistant, socket_enabled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without a model is "server_model_unsupported" (a real HTTP server on 127.0.0.1
    answering like llama_cpp.server with no model), a failure nobody foresaw "unknown", a server
    already used by an engine aborts, and a reauthentication while the server is down is
    "cannot_connect"."""

    async def no_models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", no_models)
    async with serve_app(app) as url:
        empty = await _add_server(hass, url)
        assert empty["errors"] == {"base": "server_model_unsupported"}

    def broken(_settings: object) -> None:
        raise RuntimeError("the network card is on fire")

    with monkeypatch.context() as patch:
        patch.setattr(flow_checks, "probe_server", broken)
        unknown = await _add_server(hass, f"http://127.0.0.1:{free_port()}")
        assert unknown["errors"] == {"base": "unknown"}

    with llama_cpp_server(SMOLLM2, port=free_port()) as url:
        entry = (await _add_server(hass, url))["result"]
        await hass.async_block_till_done()
        again = await _add_server(hass, url + "/")
        assert again["type"] is FlowResultType.ABORT and again["reason"] == "already_configured"
    reauth = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "reauth", "entry_id": entry.entry_id}, data=dict(entry.data))
    down = await hass.config_entries.flow.async_configure(reauth["flow_id"], {"server_api_key": "anything"})
    assert down["type"] is FlowResultType.FORM and down["errors"] == {"base": "cannot_connect"}
    await hass.config_entries.async_unload(entry.entry_id)
