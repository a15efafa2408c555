"""manifest.json and hacs.json as Home Assistant's hassfest and HACS check them (hassfest itself lives
in Home Assistant's source repository, not in the package; these are its rules for a custom
integration)."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import get_args, get_type_hints

from awesomeversion import AwesomeVersion

from homeassistant.loader import Manifest

ROOT = Path(__file__).parent.parent
MANIFEST = json.loads((ROOT / "custom_components" / "gemma_edge" / "manifest.json").read_text())
IOT_CLASSES = {"assumed_state", "cloud_polling", "cloud_push", "local_polling", "local_push", "calculated"}


def test_keys_in_hassfest_order_and_known() -> None:
    keys = list(MANIFEST)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert set(keys) <= set(Manifest.__annotations__)


def test_required_values() -> None:
    assert MANIFEST["domain"] == "gemma_edge"
    assert MANIFEST["codeowners"] and all(re.fullmatch(r"@[\w-]+(/[\w-]+)?", owner) for owner in MANIFEST["codeowners"])
    assert MANIFEST["documentation"].startswith("https://") and MANIFEST["issue_tracker"].startswith("https://")
    assert MANIFEST["iot_class"] in IOT_CLASSES
    assert MANIFEST["integration_type"] in get_args(get_type_hints(Manifest)["integration_type"])
    assert AwesomeVersion(MANIFEST["version"]).valid  # custom integrations must have one
    assert MANIFEST["config_flow"] is True
    # requirements pinned exactly, as Home Assistant installs them
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", requirement) for requirement in MANIFEST["requirements"])


def test_hacs_json_names_the_integration() -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    assert hacs["name"] == MANIFEST["name"]
    assert AwesomeVersion(hacs["homeassistant"]) >= AwesomeVersion("2026.2.0")


RULES = {
    "bronze": ["action-setup", "appropriate-polling", "brands", "common-modules", "config-flow-test-coverage", "config-flow",
               "dependency-transparency", "docs-actions", "docs-high-level-description", "docs-installation-instructions",
               "docs-removal-instructions", "entity-event-setup", "entity-unique-id", "has-entity-name", "runtime-data",
               "test-before-configure", "test-before-setup", "unique-config-entry"],
    "silver": ["action-exceptions", "config-entry-unloading", "docs-configuration-parameters", "docs-installation-parameters",
               "entity-unavailable", "integration-owner", "log-when-unavailable", "parallel-updates", "reauthentication-flow",
               "test-coverage"],
    "gold": ["devices", "diagnostics", "discovery-update-info", "discovery", "docs-data-update", "docs-examples",
             "docs-known-limitations", "docs-supported-devices", "docs-supported-functions", "docs-troubleshooting",
             "docs-use-cases", "dynamic-devices", "entity-category", "entity-device-class", "entity-disabled-by-default",
             "entity-translations", "exception-translations", "icon-translations", "reconfiguration-flow", "repair-issues",
             "stale-devices"],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}  # fmt: skip


def test_quality_scale_records_every_rule_with_reasons() -> None:
    """As hassfest checks quality_scale.yaml: every rule of the scale, a known status, and a
    comment wherever a rule is not done."""
    from homeassistant.util.yaml import load_yaml  # noqa: PLC0415

    rules = load_yaml(str(ROOT / "custom_components" / "gemma_edge" / "quality_scale.yaml"))["rules"]
    assert set(rules) == {rule for tier in RULES.values() for rule in tier}
    for name, rule in rules.items():
        status = rule if isinstance(rule, str) else rule["status"]
        assert status in ("done", "todo", "exempt"), name
        if status != "done":
            assert isinstance(rule, dict) and rule.get("comment", "").strip(), f"{name}: {status} needs a reason"


def test_brand_images_are_the_sizes_home_assistant_reads() -> None:
    """brand/ (Home Assistant 2026.3+): square icons and logos, 256 px and 512 px (@2x), with a
    transparent background, as scripts/make_brand_images.py draws them."""
    from PIL import Image  # noqa: PLC0415

    brand = ROOT / "custom_components" / "gemma_edge" / "brand"
    for name, size in (("icon.png", 256), ("icon@2x.png", 512), ("logo.png", 256), ("logo@2x.png", 512)):
        with Image.open(brand / name) as image:
            assert image.format == "PNG" and image.size == (size, size), name
            assert image.mode == "RGBA" and image.getpixel((0, 0))[3] == 0, name
