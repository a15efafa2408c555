"""strings.json as hassfest and Home Assistant's translation tooling check it (hassfest is not
in the package): the English translation is strings.json itself; every flow step, error and
abort reason a flow module names, every exception and Repairs issue the code raises, and every
action in services.yaml has its text; services.yaml, strings.json and icons.json name the same
actions as the integration registers."""

from __future__ import annotations

import json
from pathlib import Path
import re

from homeassistant.core import HomeAssistant
from homeassistant.util.yaml import load_yaml

from custom_components.gemma_edge.const import DOMAIN

PACKAGE = Path(__file__).parent.parent / "custom_components" / "gemma_edge"
STRINGS = json.loads((PACKAGE / "strings.json").read_text())
# flow module -> the strings.json sections its steps, errors and aborts live in
FLOW_SECTIONS = {
    "config_flow.py": [STRINGS["config"]],
    "flow_checks.py": [STRINGS["config"]],  # the engine flow's file and server checks
    "flow_download.py": [STRINGS["config"], *(STRINGS["config_subentries"][k] for k in ("stt",))],
    "options_flow.py": [STRINGS["options"]],
    "subentry_flow.py": [STRINGS["config_subentries"][k] for k in ("conversation", "ai_task_data", "stt")],
    "sync_flow.py": [STRINGS["config_subentries"]["cloud_sync"]],
}


def literals(pattern: str, source: str) -> set[str]:
    return set(re.findall(pattern, source))


def test_the_english_translation_is_strings_json() -> None:
    assert json.loads((PACKAGE / "translations" / "en.json").read_text()) == STRINGS


def test_every_flow_step_error_and_abort_has_text() -> None:
    for module, sections in FLOW_SECTIONS.items():
        source = (PACKAGE / module).read_text()
        steps = literals(r'(?<!next_)step_id="(\w+)"', source)  # a shown form or progress, not next_step_id
        errors = (
            literals(r'errors\[[^\]]+\] = "(\w+)"', source)
            | literals(r'\breturn \w+, "(\w+)"', source)
            | literals(r'\{[^{}:]+: "(\w+)"\}', source)  # return {"base": "invalid_auth"}, None
            | literals(r'GGUFError\("(\w+)"\)', source)  # the model file's error key
        )
        aborts = literals(r'reason="(\w+)"', source)
        assert steps or errors, module
        for step in steps:
            # a progress step (a download) has its text under "progress"
            assert any(step in s.get("step", {}) or step in s.get("progress", {}) for s in sections), f"{module}: step {step}"
        for error in errors:
            assert any(error in s.get("error", {}) for s in sections), f"{module}: error {error}"
        for reason in aborts:
            assert any(reason in s.get("abort", {}) for s in sections), f"{module}: abort {reason}"


def test_every_exception_and_repairs_issue_has_text() -> None:
    source = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    exceptions = literals(r'translation_key="(\w+)"', source)
    assert exceptions
    assert exceptions <= set(STRINGS["exceptions"]), exceptions - set(STRINGS["exceptions"])
    issues = set(re.findall(r'^ISSUE_\w+ = "(\w+)"', source, re.MULTILINE))
    assert len(issues) >= 10
    assert issues <= set(STRINGS["issues"]), issues - set(STRINGS["issues"])


async def test_services_yaml_strings_and_icons_name_the_registered_actions(hass: HomeAssistant, agent: object) -> None:
    services = load_yaml(str(PACKAGE / "services.yaml"))
    icons = json.loads((PACKAGE / "icons.json").read_text())["services"]
    registered = set(hass.services.async_services_for_domain(DOMAIN))
    assert registered == set(services) == set(STRINGS["services"]) == set(icons)
    for name, service in services.items():
        fields = set((service or {}).get("fields", {}))
        assert fields == set(STRINGS["services"][name].get("fields", {})), name
        assert STRINGS["services"][name]["name"] and STRINGS["services"][name]["description"]
