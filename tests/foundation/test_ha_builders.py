"""Home Assistant discovery builders against HA's documented device-discovery schema."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from gridzero import ha
from gridzero.contract import Topics

T = Topics()


class Mode(StrEnum):
    A = "a"
    B = "b"


class Runtime(BaseModel):
    target_w: float = Field(
        0, ge=-500, le=500, json_schema_extra={"unit": "W", "step": 10, "device_class": "power"}
    )
    enabled: bool = True
    mode: Mode = Mode.A
    level: Literal["low", "high"] = "low"
    count: int = Field(3, ge=1, le=9)


def build() -> tuple[str, dict[str, object]]:
    comps = [
        ha.sensor(
            "pack_voltage",
            "Pack voltage",
            T.bms_pack,
            "pack_voltage_v",
            unit="V",
            device_class="voltage",
        ),
        ha.sensor(
            "energy_in",
            "Energy in",
            T.shunt_state,
            "energy_in_kwh",
            unit="kWh",
            device_class="energy",
            state_class="total_increasing",
        ),
        ha.binary_sensor("balancing", "Balancing", T.bms_pack, "balancing"),
        ha.button("soc_full", "Set SoC 100 %", T.action_set("shunt", "soc_full")),
        *ha.settings_components(Runtime, T, "controller"),
    ]
    return ha.device_discovery(ha.service_device("bms", "VW GTE BMS"), comps, T.status("bms"))


def test_device_discovery_has_required_blocks() -> None:
    topic, payload = build()
    assert topic == "homeassistant/device/gridzero_bms/config"
    dev = payload["dev"]
    assert isinstance(dev, dict)
    assert dev["ids"] == ["gridzero_bms"]
    assert dev["via_device"] == ha.HUB_ID
    origin = payload["o"]
    assert isinstance(origin, dict)
    assert origin["name"] == "gridzero"
    avail = payload["availability"]
    assert isinstance(avail, list)
    assert avail[0]["topic"] == "gridzero/bms/status"
    cmps = payload["cmps"]
    assert isinstance(cmps, dict)
    for key, comp in cmps.items():
        assert comp["p"] in {"sensor", "binary_sensor", "number", "select", "switch", "button"}
        assert comp["unique_id"] == f"gridzero_bms_{key}"


def test_settings_become_matching_entities() -> None:
    cmps = build()[1]["cmps"]
    assert isinstance(cmps, dict)
    target = cmps["target_w"]
    assert (target["p"], target["min"], target["max"], target["step"]) == ("number", -500, 500, 10)
    assert target["unit_of_measurement"] == "W"
    assert target["command_topic"] == "gridzero/controller/settings/target_w/set"
    assert target["state_topic"] == "gridzero/controller/settings/target_w"
    assert target["entity_category"] == "config"
    assert cmps["enabled"]["p"] == "switch"
    assert cmps["enabled"]["payload_on"] == "true"
    assert cmps["mode"]["options"] == ["a", "b"]
    assert cmps["level"]["options"] == ["low", "high"]
    assert cmps["count"]["step"] == 1


def test_energy_needs_total_increasing_and_units_match_classes() -> None:
    with pytest.raises(ValueError, match="state_class total"):
        ha.sensor("e", "E", "t", "k", unit="kWh", device_class="energy", state_class="measurement")
    with pytest.raises(ValueError, match="not valid for device_class 'voltage'"):
        ha.sensor("v", "V", "t", "k", unit="A", device_class="voltage")


def test_duplicate_component_keys_are_refused() -> None:
    comps = [ha.button("x", "X", "t"), ha.button("x", "X", "t")]
    with pytest.raises(ValueError, match="used twice"):
        ha.device_discovery(ha.service_device("bms", "m"), comps, "s")


def test_unbounded_number_setting_is_refused() -> None:
    class Bad(BaseModel):
        x: float = 1.0

    with pytest.raises(ValueError, match="lower and an upper bound"):
        ha.settings_components(Bad, T, "bms")


def test_unit_devices_use_a_node_id_for_acl_scoping() -> None:
    dev = ha.service_device("inverter", "SoyoSource GTN", unit="gtn1")
    assert (
        dev.discovery_topic()
        == "homeassistant/device/gridzero_inverter/gridzero_inverter_gtn1/config"
    )
