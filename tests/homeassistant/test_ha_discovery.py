"""The discovery builders' Home Assistant conventions (pure; no broker, no HA).

What a real Home Assistant makes of them is checked end to end in test_ha_e2e.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from pydantic import BaseModel, Field

from gridzero import ha
from gridzero.contract import Topics
from gridzero.runtime.service import Context

T = Topics()


def _payload(*comps: ha.Component) -> dict[str, object]:
    return ha.device_discovery(ha.service_device("bms", "m"), comps, T.status("bms"))[1]


def test_a_null_value_makes_the_sensor_unavailable_not_unknown() -> None:
    comp = ha.sensor("soc", "SoC", T.shunt_state, "soc_pct", unit="%", device_class="battery")
    cmp = _payload(comp)["cmps"]["soc"]  # type: ignore[index]
    assert cmp["value_template"] == "{{ value_json.soc_pct }}"
    service, value = cmp["availability"]
    assert service["topic"] == "gridzero/bms/status"
    assert value["topic"] == T.shunt_state
    assert value["value_template"] == (
        "{{ 'online' if value_json.soc_pct is not none else 'offline' }}"
    )
    assert cmp["availability_mode"] == "all"


def test_a_nested_key_is_guarded_at_every_level() -> None:
    comp = ha.sensor("cell_min", "Lowest", T.bms_pack, "cell_min.voltage_v", unit="V")
    guard = "value_json.cell_min is not none and value_json.cell_min.voltage_v is not none"
    assert comp.config["value_template"] == (
        "{{ value_json.cell_min.voltage_v if " + guard + " else none }}"
    )
    assert comp.available_when == guard


def test_bad_value_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="not a dotted identifier"):
        ha.sensor("x", "X", "t", "a..b")
    with pytest.raises(ValueError, match="not a dotted identifier"):
        ha.sensor("x", "X", "t", "a }}{{ b")


@pytest.mark.parametrize(
    ("unit", "precision"), [("W", 0), ("V", 2), ("A", 1), ("°C", 1), ("kWh", 3), ("%", 1)]
)
def test_display_precision_follows_the_unit(unit: str, precision: int) -> None:
    comp = ha.sensor("x", "X", "t", "x", unit=unit)
    assert comp.config["suggested_display_precision"] == precision


def test_an_explicit_precision_wins() -> None:
    comp = ha.sensor("x", "X", "t", "x", unit="V", precision=3)
    assert comp.config["suggested_display_precision"] == 3


def test_computed_sensor_has_attributes_from_its_topic() -> None:
    comp = ha.computed_sensor(
        "m", "Module", "topic", "value_json.cells_v | min", "value_json.present", unit="V",
        attributes="{'cells_v': value_json.cells_v}",
    )  # fmt: skip
    assert comp.config["json_attributes_topic"] == "topic"
    assert (
        comp.config["json_attributes_template"]
        == "{{ ({'cells_v': value_json.cells_v}) | tojson }}"
    )
    assert comp.available_when == "value_json.present"


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("target_grid_w", "Target grid power"),
        ("max_charge_w", "Max charge power"),
        ("constant_power_w", "Constant power"),
        ("soc_min_pct", "SoC min"),
        ("meter_stale_s", "Meter stale time"),
        ("over_voltage_v", "Over voltage"),
        ("max_charge_current_a", "Max charge current"),
        ("over_temperature_c", "Over temperature"),
        ("capacity_ah", "Capacity"),
        ("discharge_enabled", "Discharge enabled"),
        ("mode", "Mode"),
    ],
)
def test_setting_labels_read_like_words(name: str, label: str) -> None:
    assert ha.setting_label(name) == label


def test_a_title_is_the_label() -> None:
    assert ha.setting_label("invert", "Invert current sign") == "Invert current sign"


def test_number_device_class_follows_its_unit() -> None:
    class Runtime(BaseModel):
        cutoff_v: float = Field(3.2, ge=2.9, le=3.7, json_schema_extra={"unit": "V"})
        gain: float = Field(1.0, ge=0.5, le=2.0)
        power_w: float = Field(
            0, ge=0, le=10, json_schema_extra={"unit": "W", "device_class": "power"}
        )

    comps = {c.key: c.config for c in ha.settings_components(Runtime, T, "bms")}
    assert comps["cutoff_v"]["device_class"] == "voltage"
    assert comps["cutoff_v"]["name"] == "Cutoff voltage"
    assert "device_class" not in comps["gain"]
    assert comps["power_w"]["device_class"] == "power"


def test_the_hub_shows_every_service_and_hangs_off_nothing() -> None:
    topic, payload = ha.hub_discovery(T)
    assert topic == "homeassistant/device/gridzero_hub/config"
    dev = payload["dev"]
    assert dev["ids"] == [ha.HUB_ID]
    assert dev["name"] == "gridzero"
    assert "via_device" not in dev
    # the service states stay true when the announcing service is down: no availability
    assert "availability" not in payload
    cmps = payload["cmps"]
    assert set(cmps) == {s.replace("-", "_") for s in ha.HUB_SERVICES}
    bms = cmps["bms"]
    assert (bms["p"], bms["device_class"], bms["state_topic"]) == (
        "binary_sensor",
        "running",
        "gridzero/bms/status",
    )
    assert bms["value_template"] == "{{ 'ON' if value == 'online' else 'OFF' }}"
    assert bms["unique_id"] == "gridzero_hub_bms"
    assert "availability" not in bms


def test_service_devices_link_to_the_hub() -> None:
    payload = _payload(ha.button("x", "X", "t"))
    assert payload["dev"]["via_device"] == ha.HUB_ID  # type: ignore[index]
    assert "availability" not in payload["cmps"]["x"]  # type: ignore[index]  # inherits the device's


def test_inverter_measurements_only_for_units_that_are_asked() -> None:
    from gridzero_inverter import service as inverter

    ctx = cast(Context, SimpleNamespace(topics=T))
    measured = {"battery_voltage", "battery_current", "ac_voltage", "frequency", "temperature"}
    for asked in (True, False):
        unit = inverter.UnitConfig(id="gtn1", dc_min_v=43, dc_max_v=60, query_status=asked)
        topic, payload = inverter.discovery(ctx, unit)
        assert topic == "homeassistant/device/gridzero_inverter/gridzero_inverter_gtn1/config"
        assert (measured <= set(payload["cmps"])) is asked
        assert {"demand", "cap", "link", "enabled", "max_power_w"} <= set(payload["cmps"])
