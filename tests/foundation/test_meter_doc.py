"""docs/meter.md ("Connect your meter"): every YAML block is valid as the doc says it is.

A controller block is loaded as the controller loads its settings file, and the ACL made
from it lets the meter write the topic it resolves to; the Home Assistant automation
publishes where the home-assistant preset listens; the preset table is the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gridzero.meter import PRESETS, MeterPreset
from gridzero.runtime.credentials import render_acl_for
from gridzero.runtime.settings import load_settings
from gridzero_controller.service import ControllerServiceSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "meter.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
CONTROLLER_BLOCKS = [b for b in BLOCKS if b.startswith("meter_")]


def test_the_doc_has_a_block_for_every_preset() -> None:
    named = {yaml.safe_load(b)["meter_preset"] for b in CONTROLLER_BLOCKS}
    assert named == {p.value for p in MeterPreset}


@pytest.mark.parametrize("block", CONTROLLER_BLOCKS)
def test_each_controller_block_loads_and_its_topic_is_allowed(block: str, tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text(block, encoding="utf-8")
    source = load_settings(ControllerServiceSettings, path).meter_source()
    acl = render_acl_for(path)
    meter_section = acl.split("\nuser meter\n", 1)[1].split("\n\n", 1)[0]
    assert f"topic write {source.topic}" in meter_section.splitlines()


def test_the_home_assistant_automation_publishes_where_the_preset_listens() -> None:
    automation = next(yaml.safe_load(b) for b in BLOCKS if b.startswith("alias:"))
    action = automation["actions"][0]
    assert action["action"] == "mqtt.publish"
    assert action["data"]["topic"] == PRESETS[MeterPreset.HOME_ASSISTANT].topic
    assert action["data"]["retain"] is False  # a retained reading would be replayed as fresh
    assert automation["triggers"][0]["entity_id"] in action["data"]["payload"]


def test_the_docs_preset_table_is_the_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    for preset, source in PRESETS.items():
        path = f"`{source.json_path}`" if source.json_path else "bare number"
        row = f"| `{preset.value}` | `{source.topic}` | {path} | {source.sign:+d} | {source.unit} |"
        assert row in text, row
