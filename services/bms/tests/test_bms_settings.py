"""Start-up settings: currents bounded by the pack, runtime settings only tighten."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gridzero_bms.balancing import BalanceSettings
from gridzero_bms.protection import ProtectionSettings
from gridzero_bms.service import BmsRuntime, BmsSettings, BusSettings, runtime_limit


def _bms(modules: list[int], **protection: float) -> BmsSettings:
    return BmsSettings(
        buses=[BusSettings(interface="virtual", channel="x", modules=modules)],
        protection=ProtectionSettings.model_validate(protection),
    )


def test_current_limits_are_bounded_by_the_pack_capacity() -> None:
    eight = list(range(1, 9))
    assert _bms(eight, max_charge_current_a=200.0).protection.max_charge_current_a == 200.0
    with pytest.raises(ValidationError) as info:
        _bms(eight, max_charge_current_a=300.0)  # was accepted: any value up to 500 A
    assert (
        "protection.max_charge_current_a = 300 A is above 1 C of the pack: module_capacity_ah "
        "25 Ah x 8 parallel strings x 1 = 200 A"
    ) in str(info.value)
    with pytest.raises(ValidationError, match="max_discharge_current_a = 60 A is above 2 C"):
        _bms([1], max_discharge_current_a=60.0)
    with pytest.raises(ValidationError, match=r"precharge_current_a = 2 A is above 0\.05 C"):
        _bms([1], max_charge_current_a=20.0, precharge_current_a=2.0)


def test_a_series_pack_is_one_string() -> None:
    with pytest.raises(ValidationError, match="x 1 parallel strings"):
        BmsSettings(
            buses=[BusSettings(interface="virtual", channel="x", modules=[1, 2, 3])],
            layout="series",
            protection=ProtectionSettings(max_charge_current_a=30.0),
        )


@pytest.mark.parametrize(
    ("name", "value", "limit"),
    [
        ("over_voltage_v", 4.2, 4.15),
        ("charge_end_v", 4.1, 4.05),
        ("under_voltage_v", 2.9, 3.0),
        ("discharge_cutoff_v", 3.1, 3.2),
        ("max_charge_current_a", 31.0, 30.0),
        ("max_discharge_current_a", 31.0, 30.0),
        ("over_temperature_c", 60.0, 55.0),
        ("under_temperature_c", 0.0, 2.0),
    ],
)
def test_runtime_values_that_widen_a_start_up_limit_are_refused(
    name: str, value: float, limit: float
) -> None:
    start_up = ProtectionSettings.model_validate(
        {
            "over_voltage_v": 4.15,
            "over_voltage_release_v": 4.0,
            "charge_end_v": 4.05,
            "over_temperature_c": 55.0,
            "over_temperature_release_c": 50.0,
            "under_temperature_c": 2.0,
            "under_voltage_release_v": 3.1,
        }
    )
    why = runtime_limit(start_up, BalanceSettings())
    initial = BmsRuntime.from_settings(start_up, BalanceSettings())
    assert why(initial) == ""
    reason = why(initial.model_copy(update={name: value}))
    assert f"{name} = {value:g} is " in reason
    assert f"its start-up limit protection.{name} = {limit:g}" in reason


def test_a_runtime_value_that_breaks_an_ordering_rule_is_refused() -> None:
    why = runtime_limit(ProtectionSettings(), BalanceSettings())
    reason = why(BmsRuntime(over_voltage_v=4.05))  # below charge_end_v 4.10
    assert "charge_end_v = 4.1 must be < over_voltage_v = 4.05" in reason
