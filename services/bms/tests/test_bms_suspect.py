"""Suspect cells (a cell that reads wrong) and the choice of temperature sensors.

housebatt's README shows a module-3 cell "measuring way below what it really is"
(anikrooz/housebatt README.md); its code once copied the neighbour's value over it
(BMSModule.cpp line 123, commented out). gridzero names such a cell at start-up instead.
"""

from __future__ import annotations

import pytest
from bms_helpers import feed_all, small_pack
from pydantic import ValidationError

from gridzero_bms.balancing import BalanceSettings, decide
from gridzero_bms.pack import Pack, PackSettings, PackSnapshot
from gridzero_bms.protection import Limits, Protection, ProtectionSettings
from gridzero_bms.service import BmsSettings, BusSettings

SUSPECT = {"bus": 0, "module": 2, "cell": 11}
LOW = {(0, 2, 11): 3300}  # reads 0.4 V below its neighbours at 3.70 V


def _run(pack: Pack, prot: Protection, t_to: float, overrides: dict[tuple[int, int, int], int],
         mv: int = 3700) -> Limits:  # fmt: skip
    limits = None
    for i in range(round(t_to / 0.5) + 1):
        now = i * 0.5
        feed_all(pack, now, mv, overrides)
        limits = prot.update(pack.snapshot(now), now)
    assert limits is not None
    return limits


def _codes(limits: Limits) -> set[str]:
    return {a.code for a in limits.alarms}


def _pack(suspect: bool) -> Pack:
    return small_pack(suspect_cells=[SUSPECT] if suspect else [])


def _prot() -> Protection:
    return Protection(ProtectionSettings(ramp_a_per_s=1000.0))


def test_a_suspect_cell_does_not_trip_the_delta_alarm_nor_stop_discharge() -> None:
    # Before: the 0.4 V delta took the whole battery offline (cell_delta blocks both ways).
    assert "cell_delta" in _codes(_run(_pack(False), _prot(), 10.0, LOW))
    limits = _run(_pack(True), _prot(), 10.0, LOW)
    assert _codes(limits) == set()
    assert limits.ccl_a == limits.dcl_a == 30.0
    snap = _pack_snapshot(True, LOW)
    assert snap.delta_v == pytest.approx(0.0)
    assert snap.min_cell is not None
    assert snap.min_cell.voltage_v == pytest.approx(3.7)


def _pack_snapshot(suspect: bool, overrides: dict[tuple[int, int, int], int]) -> PackSnapshot:
    pack = _pack(suspect)
    feed_all(pack, 0.0, 3700, overrides)
    return pack.snapshot(0.0)


def test_a_suspect_cell_is_not_judged_for_under_voltage() -> None:
    low = {(0, 2, 11): 2900}  # below under-voltage 3.0 V, above deep discharge 2.5 V
    assert "under_voltage" in _codes(_run(_pack(False), _prot(), 10.0, low))
    limits = _run(_pack(True), _prot(), 10.0, low)
    assert "under_voltage" not in _codes(limits)
    assert limits.dcl_a == 30.0


def test_a_suspect_cell_still_trips_over_voltage() -> None:
    high = {(0, 2, 11): 4250}
    limits = _run(_pack(True), _prot(), 5.0, high)
    assert "over_voltage" in _codes(limits)
    assert limits.ccl_a == 0.0


def test_a_suspect_cell_below_the_hard_floor_still_latches_deep_discharge() -> None:
    limits = _run(_pack(True), _prot(), 5.0, {(0, 2, 11): 2400})
    assert "deep_discharge" in _codes(limits)
    assert limits.ccl_a == limits.dcl_a == 0.0


def test_a_suspect_cell_neither_bleeds_nor_sets_the_reference() -> None:
    settings = BalanceSettings()
    # a suspect reading high: it would bleed on a wrong reading
    high = {(0, 2, 11): 4000}
    assert decide(_pack_snapshot(False, high), settings, frozenset({1, 2})) != {}
    assert decide(_pack_snapshot(True, high), settings, frozenset({1, 2})) == {}
    # a suspect reading low: every good cell would bleed down towards it
    at_4v = {(0, m, c): 4000 for m in (1, 2) for c in range(1, 13)} | {(0, 2, 11): 3800}
    assert decide(_pack_snapshot(False, at_4v), settings, frozenset({1, 2})) != {}
    assert decide(_pack_snapshot(True, at_4v), settings, frozenset({1, 2})) == {}


def test_the_module_view_names_its_suspect_cell() -> None:
    snap = _pack_snapshot(True, LOW)
    assert {m.module: m.suspect_cells for m in snap.modules} == {1: frozenset(), 2: {11}}
    assert snap.cell_count_ok


@pytest.mark.parametrize(
    ("suspects", "message"),
    [
        ([SUSPECT, {"bus": 0, "module": 2, "cell": 3}], "more than one suspect cell in bus 0 module 2"),
        ([{"bus": 0, "module": 5, "cell": 1}], "bus 0 module 5 cell 1 is not in an expected module"),
        ([{"bus": 0, "module": 1, "cell": 13}], "is above cells_per_module 12"),
    ],
)  # fmt: skip
def test_suspect_cells_are_bounded(suspects: list[dict[str, int]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PackSettings.model_validate({"modules": ((1, 2),), "suspect_cells": suspects})


def test_the_bms_settings_carry_suspects_and_sensors_to_the_pack() -> None:
    settings = BmsSettings(
        buses=[BusSettings(interface="virtual", channel="x", modules=[1, 2, 3])],
        suspect_cells=[{"bus": 0, "module": 3, "cell": 12}],
        temperature_sensors=(1,),
        temperature_offset_c=-3.0,
    )
    pack = settings.pack_settings()
    assert pack.suspects == {(0, 3, 12)}
    assert pack.temperature_sensors == (1,)
    assert pack.temperature_offset_c == -3.0


def test_only_the_chosen_temperature_sensors_count_with_the_offset() -> None:
    pack = small_pack(temperature_sensors=(1,), temperature_offset_c=-3.0)
    feed_all(pack, 0.0, temps_c=(20.0, 60.0))  # sensor 2 reads wrong (as in housebatt)
    snap = pack.snapshot(0.0)
    assert snap.temp_max_c == snap.temp_min_c == 17.0
    assert [m.temperatures_c for m in snap.modules] == [(17.0,), (17.0,)]
    everything = small_pack()
    feed_all(everything, 0.0, temps_c=(20.0, 60.0))
    assert everything.snapshot(0.0).temp_max_c == 60.0


def test_a_chosen_sensor_the_frame_lacks_counts_as_no_temperature() -> None:
    pack = small_pack(temperature_sensors=(3,))  # the DBC frame carries two sensors
    feed_all(pack, 0.0)
    assert pack.snapshot(0.0).temp_sensors == 0
    limits = Protection(ProtectionSettings(fault_trip_s=0.0)).update(pack.snapshot(0.0), 0.0)
    assert "temperature_missing" in _codes(limits)


@pytest.mark.parametrize("value", [5.5, -6.0])
def test_the_temperature_offset_is_bounded(value: float) -> None:
    with pytest.raises(ValidationError, match=r"temperature_offset_c\n  Input should be"):
        PackSettings(temperature_offset_c=value)
    PackSettings(temperature_offset_c=value / abs(value) * 5.0)  # the bound itself is fine


@pytest.mark.parametrize("sensors", [(), (0,), (1, 1), (4,)])
def test_the_sensor_choice_is_bounded(sensors: tuple[int, ...]) -> None:
    with pytest.raises(ValidationError, match="temperature_sensors") as info:
        PackSettings(temperature_sensors=sensors)
    assert "Extra inputs" not in str(info.value)


def test_current_ceilings_follow_the_number_of_modules() -> None:
    def bms(modules: list[list[int]], **kw: object) -> BmsSettings:
        buses = [
            BusSettings(interface="virtual", channel=f"c{i}", modules=m)
            for i, m in enumerate(modules)
        ]
        return BmsSettings(buses=buses, **kw)  # type: ignore[arg-type]

    one = bms([[1]])  # was 30 A: refused, above 1 C of one 25 Ah module
    assert one.protection.max_charge_current_a == one.protection.max_discharge_current_a == 3.75
    assert bms([[1, 2, 3, 4, 5, 6, 7, 8]]).protection.max_charge_current_a == 30.0
    nine = bms([[1, 2, 3, 4, 5, 6, 7, 8], [1]])
    assert nine.protection.max_charge_current_a == pytest.approx(33.75)
    assert bms([[1, 2]], current_per_string_a=5.0).protection.max_discharge_current_a == 10.0
    explicit = bms([[1, 2, 3]], protection=ProtectionSettings(max_charge_current_a=12.0))
    assert explicit.protection.max_charge_current_a == 12.0
    assert explicit.protection.max_discharge_current_a == 11.25
