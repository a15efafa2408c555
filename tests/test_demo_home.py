"""The agent in Home Assistant's demo home (about 60 entities, default exposure, four areas).

The model's output is scripted where a tiny test model cannot make the call a real Gemma would;
the agent, the engine's parser, the runner, the executor and Home Assistant are real. Each test
counts the service calls Home Assistant actually received: no request may touch an entity it did
not name, an area it did not name, or an unexposed one, and every answer must be a sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custom_components.gemma_edge.const import CONF_TOOL_CHOICE
from custom_components.gemma_edge.actions.describe import spoken_unusable
from homeassistant.components import conversation
from homeassistant.core import Context, Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, intent

from .conftest import SMALL_MODEL_AGENT, async_create_local_entry
from .demo_agent import AGENT, ask, state
from .scripted_model import ScriptedModel, call


async def test_demo_home_is_a_real_home(hass: HomeAssistant, demo_home: dict[str, str]) -> None:
    """The fixture is the home the issue describes: dozens of entities, HA's default exposure."""
    from homeassistant.components.homeassistant.exposed_entities import async_should_expose  # noqa: PLC0415

    states = hass.states.async_all()
    exposed = {s.entity_id for s in states if async_should_expose(hass, conversation.DOMAIN, s.entity_id)}
    assert len(states) >= 60
    assert {"fan.ceiling_fan", "cover.garage_door", "light.kitchen_lights", "media_player.living_room"} <= exposed
    assert not {"lock.front_door", "alarm_control_panel.security"} & exposed  # not exposed by default


async def test_ceiling_fan_call_without_a_target_acts_on_nothing(hass: HomeAssistant, agent: Any) -> None:
    """The observed blast radius: HassFanSetSpeed with only a percentage changed every fan."""
    _entry, model, calls = agent
    fans = {s.entity_id: s.attributes.get("percentage") for s in hass.states.async_all("fan")}
    model.script(call("HassFanSetSpeed", percentage=100))
    speech = await ask(hass, "Turn on the ceiling fan")
    assert calls == []
    assert {s.entity_id: s.attributes.get("percentage") for s in hass.states.async_all("fan")} == fans
    assert "which device" in speech.lower()


async def test_ceiling_fan_by_name_changes_that_fan_only(hass: HomeAssistant, agent: Any) -> None:
    _entry, model, calls = agent
    model.script(call("HassFanSetSpeed", name="Ceiling Fan", percentage=100))
    speech = await ask(hass, "Set the ceiling fan to full speed")
    # Home Assistant's HassFanSetSpeed is fan.turn_on with a percentage
    assert calls == [{"service": "fan.turn_on", "entity_id": "fan.ceiling_fan", "percentage": 100}]
    assert state(hass, "fan.ceiling_fan", "percentage") == 100
    assert speech == "Turned on Ceiling Fan at 100%."
    assert len(model.requests) == 1  # "always act first": the outcome is the answer, no second generation


@pytest.mark.parametrize(
    ("text", "tool", "arguments", "expected"),
    [
        ("Turn off the kitchen lights", "HassTurnOff", {"name": "Kitchen Lights"},
         [{"service": "light.turn_off", "entity_id": "light.kitchen_lights"}]),
        ("Dim the bed light to 30%", "HassLightSet", {"name": "Bed Light", "brightness": 30},
         [{"service": "light.turn_on", "entity_id": "light.bed_light", "brightness_pct": 30}]),
        ("Close the hall window", "HassTurnOff", {"name": "Hall Window"},
         [{"service": "cover.close_cover", "entity_id": "cover.hall_window"}]),
        ("Set the living room window to 20%", "HassSetPosition", {"name": "Living Room Window", "position": 20},
         [{"service": "cover.set_cover_position", "entity_id": "cover.living_room_window", "position": 20}]),
        ("Stop the kitchen window", "HassStopMoving", {"name": "Kitchen Window"},
         [{"service": "cover.stop_cover", "entity_id": "cover.kitchen_window"}]),
        ("Turn the living room down", "HassSetVolumeRelative", {"name": "Living Room", "volume_step": "down"},
         [{"service": "media_player.volume_set", "entity_id": "media_player.living_room", "volume_level": 0.9}]),
        ("Walkman 25% louder", "HassSetVolumeRelative", {"name": "Walkman", "volume_step": 25},
         []),  # already at 100%: a relative step becomes an absolute target that already holds
        ("Set the kitchen speaker to 40%", "HassSetVolume", {"name": "Kitchen", "volume_level": 40},
         [{"service": "media_player.volume_set", "entity_id": "media_player.kitchen", "volume_level": 0.4}]),
        ("Mute the bedroom player", "HassMediaPlayerMute", {"name": "Bedroom"},
         [{"service": "media_player.volume_mute", "entity_id": "media_player.bedroom", "is_volume_muted": True}]),
        ("Pause the living room", "HassMediaPause", {"name": "Living Room"},
         [{"service": "media_player.media_pause", "entity_id": "media_player.living_room"}]),
        ("Set the humidifier to 60%", "HassHumidifierSetpoint", {"name": "Humidifier", "humidity": 60},
         [{"service": "humidifier.set_humidity", "entity_id": "humidifier.humidifier", "humidity": 60}]),
        ("Put the hygrostat in eco mode", "HassHumidifierMode", {"name": "Hygrostat", "mode": "eco"},
         [{"service": "humidifier.set_mode", "entity_id": "humidifier.hygrostat", "mode": "eco"}]),
        ("Set the heat pump to 21 degrees", "HassClimateSetTemperature", {"name": "HeatPump", "temperature": 21},
         [{"service": "climate.set_temperature", "entity_id": "climate.heatpump", "temperature": 21.0}]),
        ("Set the ecobee to 21 degrees", "HassClimateSetTemperature", {"name": "Ecobee", "temperature": 21},
         []),  # in heat/cool mode it takes a range, not one temperature: refused, not sent
    ],
)  # fmt: skip
async def test_every_intent_acts_on_the_named_entity_only(
    hass: HomeAssistant, agent: Any, text: str, tool: str, arguments: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    """Each state-changing intent goes through the executor: exactly the service calls expected."""
    _entry, model, calls = agent
    model.script(call(tool, **arguments))
    await ask(hass, text)
    assert calls == expected


async def test_area_acts_on_its_devices_and_a_bare_kind_only_when_all_was_said(hass: HomeAssistant, agent: Any) -> None:
    _entry, model, calls = agent
    model.script(call("HassTurnOff", area="Living Room", domain=["light"]))
    await ask(hass, "Turn off the lights in the living room")
    assert sorted(c["entity_id"] for c in calls) == ["light.ceiling_lights", "light.living_room_rgbww_lights"]
    assert state(hass, "light.kitchen_lights") == "on"
    calls.clear()
    model.script(call("HassTurnOff", domain=["light"]))
    speech = await ask(hass, "Turn off the lights")
    assert calls == [] and "which device" in speech.lower()
    model.script(call("HassTurnOff", domain=["light"]))
    await ask(hass, "Turn off all the lights")
    assert {c["entity_id"] for c in calls} == {"light.kitchen_lights", "light.office_rgbw_lights", "light.entrance_color_white_lights"}
    assert {s.state for s in hass.states.async_all("light")} == {"off"}


async def test_satellite_area_scopes_a_call_without_a_target(hass: HomeAssistant, agent: Any, demo_home: dict[str, str]) -> None:
    entry, model, calls = agent
    satellite = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={("test", "kitchen-satellite")}, name="Kitchen satellite"
    )
    dr.async_get(hass).async_update_device(satellite.id, area_id=demo_home["Kitchen"])
    model.script(call("HassTurnOff", domain=["light"]))
    await ask(hass, "Turn off the lights", device_id=satellite.id)
    assert calls == [{"service": "light.turn_off", "entity_id": "light.kitchen_lights"}]


async def test_unexposed_and_sensitive_devices(hass: HomeAssistant, agent: Any) -> None:
    """The front door lock is not exposed: nothing happens. The garage door is exposed but
    sensitive: the answer asks for confirmation and nothing moves."""
    _entry, model, calls = agent
    model.script(call("HassTurnOff", name="Front Door"))
    speech = await ask(hass, "Unlock the front door")
    assert calls == [] and state(hass, "lock.front_door") == "locked"
    assert "Front Door" in speech
    model.script(call("HassTurnOn", name="Garage Door"))
    speech = await ask(hass, "Open the garage door")
    assert calls == [] and state(hass, "cover.garage_door") == "closed"
    assert speech == "I need your confirmation to open Garage Door. Should I go ahead?"


async def test_already_on_is_said_honestly(hass: HomeAssistant, agent: Any) -> None:
    _entry, model, calls = agent
    model.script(call("HassTurnOn", name="Kitchen Lights"))
    assert await ask(hass, "Turn on the kitchen lights") == "Kitchen Lights is already on."
    assert calls == []


async def test_junk_answers_are_replaced_by_the_outcomes(hass: HomeAssistant, smollm2_path: Path, demo_home: Any) -> None:
    """With tool use left to the model, an answer that is a call, JSON or the prompt is not spoken."""
    entry = await async_create_local_entry(hass, smollm2_path, {**SMALL_MODEL_AGENT, CONF_TOOL_CHOICE: "auto"})
    model = ScriptedModel(entry.runtime_data.engine)
    for junk in (
        '{"name": "HassTurnOn", "arguments": {"name": "HassTurnOn", "domain": ["hvac"',
        "You are a voice assistant for Home Assistant.",
        "",
    ):
        await hass.services.async_call("light", "turn_off", {"entity_id": "light.bed_light"}, blocking=True)
        model.script(call("HassTurnOn", name="Bed Light"), junk)
        assert await ask(hass, "Turn on the bed light") == "Turned on Bed Light."
        assert state(hass, "light.bed_light") == "on"
    model.script("Sure! {oops")
    assert await ask(hass, "Hello") == "Sure!"
    model.script("<|im_start|>assistant")
    speech = await ask(hass, "Hello")
    assert "could not work out" in speech
    await hass.config_entries.async_unload(entry.entry_id)


async def test_cut_off_call_after_acting_answers_from_outcomes(hass: HomeAssistant, agent: Any) -> None:
    entry, model, calls = agent
    hass.config_entries.async_update_subentry(
        entry, next(iter(entry.subentries.values())), data={**next(iter(entry.subentries.values())).data, CONF_TOOL_CHOICE: "auto"}
    )
    await hass.async_block_till_done()
    model = ScriptedModel(entry.runtime_data.engine)
    model.script(call("HassTurnOff", name="Kitchen Lights"), '{"name": "HassTurnOn", "arguments": {"na')
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."
    model.script('{"name": "HassTurnOn", "arguments": {"na')
    result = await conversation.async_converse(hass, "Do the thing", None, Context(), language="en", agent_id=AGENT)
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert "answer could not be understood" in result.response.speech["plain"]["speech"]


async def test_a_confirmation_is_the_next_turn_s_yes_and_used_once(hass: HomeAssistant, agent: Any) -> None:
    """The garage door is sensitive: it opens only on the user's own "yes" right after the
    question; the model's flag alone, a "no", a later turn or a second use do not open it."""
    _entry, model, calls = agent

    async def turn(words: str, **arguments: Any) -> str:
        model.script(call("HassTurnOn", name="Garage Door", **arguments))
        return await ask(hass, words)

    conversation_id = "garage"

    async def ask(hass: HomeAssistant, text: str) -> str:  # one conversation throughout
        result = await conversation.async_converse(hass, text, conversation_id, Context(), language="en", agent_id=AGENT)
        await hass.async_block_till_done()
        return result.response.speech["plain"]["speech"]

    assert "confirmation" in await turn("Open the garage door")
    assert "confirmation" in await turn("no, leave it", confirm=True)  # the model's flag after a "no"
    assert "confirmation" in await turn("please open the garage now", confirm=True)  # no question before
    assert calls == []
    assert "confirmation" in await turn("Open the garage door")
    await turn("yes", confirm=True)
    assert calls == [{"service": "cover.open_cover", "entity_id": "cover.garage_door"}]
    # the same confirmation cannot be used again, nor can a later turn's flag open it again
    await hass.services.async_call("cover", "close_cover", {"entity_id": "cover.garage_door"}, blocking=True)
    calls.clear()
    assert "confirmation" in await turn("yes, open it", confirm=True)
    assert [c for c in calls if c["service"] == "cover.open_cover"] == []


async def test_grammar_offers_each_intent_the_names_it_can_act_on(hass: HomeAssistant, agent: Any) -> None:
    """HassMediaPause can only name media players, HassFanSetSpeed only fans; a target is
    required even where the intent has other required arguments."""
    from custom_components.gemma_edge.tools import tool_specs  # noqa: PLC0415
    from homeassistant.helpers import llm  # noqa: PLC0415

    llm_context = llm.LLMContext("gemma_edge", Context(), "en", conversation.DOMAIN, None)
    specs = {s.name: s for s in tool_specs(hass, await llm.async_get_api(hass, llm.LLM_API_ASSIST, llm_context))}
    pause = specs["HassMediaPause"].constraints["properties"]["name"]["enum"]
    assert "Living Room" in pause and "Kitchen Lights" not in pause and "Ceiling Fan" not in pause
    fan = specs["HassFanSetSpeed"].constraints
    assert set(fan["properties"]["name"]["enum"]) == {s.name for s in hass.states.async_all("fan")}
    assert fan["anyOf"] == [{"required": ["name"]}, {"required": ["area"]}]
    assert "Kitchen Lights" in specs["HassTurnOn"].constraints["properties"]["name"]["enum"]


@pytest.mark.parametrize("model_fixture", ["smollm2_path", "gemma3_path"])
async def test_real_model_in_the_demo_home_acts_on_what_it_names(
    hass: HomeAssistant, demo_home: dict[str, str], request: pytest.FixtureRequest, model_fixture: str
) -> None:
    """A real (tiny) model, unscripted, on the whole demo home: whatever it calls, under the
    grammar every action call names a target, nothing it did not name changes, and the answer
    is a sentence."""
    entry = await async_create_local_entry(hass, request.getfixturevalue(model_fixture), SMALL_MODEL_AGENT)
    events: list[Event] = []

    @callback
    def record(event: Event) -> None:
        events.append(event)

    hass.bus.async_listen("gemma_edge_action", record)
    for words in ("Set the ceiling fan to 50 percent", "Open the garage door"):
        before = {s.entity_id: s.state for s in hass.states.async_all()}
        events.clear()
        await ask(hass, words)  # asserts the answer is a sentence
        acted = {entity for event in events for entity in event.data["entity_ids"] if event.data["status"] == "executed"}
        changed = {s.entity_id for s in hass.states.async_all() if before.get(s.entity_id) not in (None, s.state)}
        changed = {e for e in changed if e.split(".")[0] in ("light", "fan", "cover", "switch", "media_player", "lock")}
        assert changed <= acted, (words, changed, acted)  # nothing changed but what an action targeted
        assert len(acted) <= 2, (words, acted)  # no blast radius from a tiny model's call
        assert hass.states.get("cover.garage_door").state == "closed"  # sensitive: never without a yes
    await hass.config_entries.async_unload(entry.entry_id)


async def test_what_cannot_be_verified_is_not_waited_for(hass: HomeAssistant, agent: Any) -> None:
    """A colour is not reported back as sent, a thermostat's "on" is a mode: the action is
    executed at once (the colour said to be unchecked), not 'unconfirmed' after the wait."""
    entry, model, calls = agent
    entry.runtime_data.executor.verify_timeout_s = 30.0  # a wait would time the test out
    statuses: list[tuple[str, str]] = []

    @callback
    def record(event: Event) -> None:
        statuses.append((event.data["status"], event.data["message"]))

    hass.bus.async_listen("gemma_edge_action", record)
    model.script(call("HassLightSet", name="Bed Light", color="red"))
    assert await ask(hass, "Make the bed light red") == "Turned on Bed Light."
    assert statuses[-1] == ("executed", "done (rgb_color not checkable)")
    assert state(hass, "light.bed_light") == "on"
    await hass.services.async_call("climate", "turn_off", {"entity_id": "climate.heatpump"}, blocking=True)
    model.script(call("HassTurnOn", name="HeatPump"))
    await ask(hass, "Turn on the heat pump")
    assert statuses[-1] == ("executed", "done") and state(hass, "climate.heatpump") == "heat"
    model.script(call("HassLightSet", name="Bed Light", brightness=0))
    await ask(hass, "Bed light to zero")
    assert statuses[-1][0] == "executed" and state(hass, "light.bed_light") == "off"


async def test_an_intent_acts_only_on_its_own_kind_of_device(hass: HomeAssistant, agent: Any) -> None:
    """HassLightSet declares only the light platform; Home Assistant would send light.turn_on to a
    cover named in it. Here nothing is called and the answer says the device cannot do that."""
    _entry, model, calls = agent
    model.script(call("HassLightSet", name="Hall Window", color="red"))
    assert await ask(hass, "Make the hall window red") == "Hall Window cannot do that."
    # the model's own domain narrows the intent's, never widens it (outside act-first mode, where
    # a name's model-added kinds are dropped anyway)
    from custom_components.gemma_edge.intent_targets import IntentTargets, TargetError  # noqa: PLC0415

    with pytest.raises(TargetError, match="cannot be done with cover devices"):
        IntentTargets(hass, turn_text="Make the hall window red", device_id=None).resolve(
            "HassLightSet", {"name": "Hall Window", "domain": ["cover"], "color": "red"}
        )
    assert calls == []


async def test_act_first_acts_only_on_what_the_user_named(hass: HomeAssistant, agent: Any) -> None:
    """A tiny model picks any name the grammar allows ("turn off the living room fan" became the
    Percentage Limited Fan): in "always act first" mode a call acts only on a device whose name
    or area the user said; a generic word like "lights" is not enough."""
    _entry, model, calls = agent
    model.script(call("HassTurnOn", name="Percentage Limited Fan"))
    assert "which device" in (await ask(hass, "Turn on the living room fan")).lower()
    model.script(call("HassTurnOff", name="Living Room RGBWW Lights"))
    assert "which device" in (await ask(hass, "Turn off the decorative lights")).lower()
    # one shared word is not enough ("living" of Living Room RGBWW Lights), nor is another kind
    # of device in the same room (Kitchen Window for "the kitchen lights")
    model.script(call("HassTurnOn", name="Living Room RGBWW Lights"))
    assert "which device" in (await ask(hass, "Close the living room window")).lower()
    model.script(call("HassTurnOff", name="Kitchen Window"))
    assert "which device" in (await ask(hass, "Turn off the kitchen lights")).lower()
    # a name the user did not say is not blamed on the device ("Hall Window cannot do that")
    model.script(call("HassTurnOff", name="Hall Window", domain=["humidifier"]))
    assert "which device" in (await ask(hass, "Turn off the kitchen lights")).lower()
    assert calls == []
    # with a name the user said, kinds the model added do not hide the device
    model.script(call("HassTurnOff", name="Kitchen Lights", domain=["humidifier", "humidifier"], device_class=["tv"]))
    assert await ask(hass, "Turn off the kitchen lights") == "Turned off Kitchen Lights."
    calls.clear()
    model.script(call("HassTurnOn", name="Living Room Fan"))
    assert await ask(hass, "Turn on the living room fan", conversation_id="fan") == "Turned on Living Room Fan."
    assert [c["entity_id"] for c in calls] == ["fan.living_room_fan"]
    # "it" is what the user named in the last turns of this conversation
    calls.clear()
    model.script(call("HassTurnOff", name="Living Room Fan"))
    assert await ask(hass, "Turn it off again", conversation_id="fan") == "Turned off Living Room Fan."
    model.script(call("HassTurnOn", name="Living Room Fan"))
    assert "which device" in (await ask(hass, "Turn it on again")).lower()  # another conversation
    assert [c["entity_id"] for c in calls] == ["fan.living_room_fan"]


async def test_act_first_may_act_after_looking_something_up(hass: HomeAssistant, agent: Any) -> None:
    """A model that first reads the live context has not acted yet: its next step may still call
    a tool (it was limited to words, and "open the garage door" ended as tool syntax in text)."""
    _entry, model, calls = agent
    model.script(call("GetLiveContext"), call("HassTurnOn", name="Garage Door"))
    assert "confirmation" in await ask(hass, "Open the garage door")
    assert model.requests[1].grammar is not None  # the second step could call a tool
    assert calls == []


async def test_a_model_going_round_in_circles_still_answers(hass: HomeAssistant, agent: Any) -> None:
    """A tiny model looked up the live context six times in a row and the turn ended with no
    answer at all (Home Assistant said "Unable to get response"): a repeated call ends the turn
    with an answer."""
    _entry, model, calls = agent
    model.script(*[call("GetLiveContext")] * 6)
    assert await ask(hass, "Open the garage door") == spoken_unusable("en")
    assert len(model.requests) == 2 and calls == []


async def test_actions_run_as_the_user_who_asked(
    hass: HomeAssistant, agent: Any, hass_admin_user: Any, hass_read_only_user: Any
) -> None:
    """The service call carries the asking user: Home Assistant refuses a user who may not
    control the device, and the logbook can name who asked."""
    _entry, model, _calls = agent

    async def ask_as(user: Any) -> str:
        model.script(call("HassTurnOn", name="Bed Light"))
        result = await conversation.async_converse(
            hass, "Turn on the bed light", None, Context(user_id=user.id), language="en", agent_id=AGENT
        )
        await hass.async_block_till_done()
        return result.response.speech["plain"]["speech"]

    answer = await ask_as(hass_read_only_user)
    assert answer.startswith("I could not turn on Bed Light") and state(hass, "light.bed_light") == "off", answer
    assert await ask_as(hass_admin_user) == "Turned on Bed Light."
    assert hass.states.get("light.bed_light").context.user_id == hass_admin_user.id
