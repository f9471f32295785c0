"""Fault injections on the plant model, and the fault JSON parser."""

from __future__ import annotations

import math

import pytest

from gridzero.errors import UsageError
from gridzero_tools.sim.faults import (
    BusGarbage,
    CellDrift,
    CellLeak,
    ChargerSilent,
    GatewayRestart,
    InverterSilent,
    LoadStep,
    MeterJunk,
    MeterSilent,
    ModuleSilent,
    parse_fault,
)
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile


def _plant() -> Plant:
    return Plant(load_plant("default"), Profile.constant(500.0), seed=2)


def test_load_step_adds_watts_from_its_start() -> None:
    plant = _plant()
    plant.inject(LoadStep(extra_w=1000.0, start_s=10.0, duration_s=5.0), 0.0)
    plant.step(9.9)
    assert plant.truth().load_w == 500.0
    plant.step(10.1)
    assert plant.truth().load_w == 1500.0
    assert plant.truth().grid_w == 1500.0
    plant.step(15.1)
    assert plant.truth().load_w == 500.0


def test_meter_silent_then_junk() -> None:
    plant = _plant()
    plant.step(5.0)
    plant.meter.take_new(5.0)
    plant.inject(MeterSilent(duration_s=5.0), 5.0)
    plant.step(10.0)
    # only the sample taken at 5.0 (visible at 5.1) arrives
    assert [r.t_s for r in plant.meter.take_new(10.0)] == [5.0]
    plant.inject(MeterJunk(), 10.0)
    plant.step(12.0)
    junk = [r for r in plant.meter.take_new(12.0) if r.t_s > 10.0]
    assert [r.t_s for r in junk] == [10.5, 11.0, 11.5]
    assert all(math.isnan(r.value_w) for r in junk)
    assert all(not r.payload.lstrip("-").isdigit() or len(r.payload) > 12 for r in junk)
    assert plant.clear_faults("meter_junk", now_s=12.0) == 1
    plant.step(13.0)
    assert plant.meter.reading(13.0) == 500.0


def test_charger_silent_ignores_commands_and_falls_back() -> None:
    plant = _plant()
    plant.command_charger_online(50.0, 0.3, 0.0)
    plant.inject(ChargerSilent(), 1.0)
    assert not plant.command_charger_online(50.0, 0.3, 20.0)
    assert plant.charger_silent(20.0)
    plant.step(31.0)
    assert not plant.truth().charger_online
    plant.clear_faults(now_s=31.0)
    assert plant.command_charger_online(50.0, 0.3, 32.0)


def test_inverter_silent_and_gateway_restart_stop_the_inverter() -> None:
    plant = _plant()
    for k in range(5):
        plant.command_inverter(0, 300.0, float(k))
    plant.inject(InverterSilent(unit=0), 5.0)
    for k in range(5, 10):
        assert not plant.command_inverter(0, 300.0, float(k))
    plant.step(10.0)
    assert plant.truth().inverter_ac_w == (0.0,)
    plant.clear_faults("inverter_silent", now_s=10.0)
    plant.inject(GatewayRestart(unit=0, duration_s=4.0), 10.0)
    assert plant.gateway_down(0, 12.0)
    assert not plant.command_inverter(0, 300.0, 12.0)
    assert not plant.gateway_down(0, 14.5)
    assert plant.command_inverter(0, 300.0, 14.5)


def test_cell_drift_moves_the_measured_voltage_only() -> None:
    plant = _plant()
    plant.step(1.0)
    before = plant.truth().cell_voltages_v[2][5]
    soc_before = plant.pack.soc[2][5]
    plant.inject(CellDrift(module=2, cell=5, offset_v=0.05, v_per_h=0.36), 1.0)
    plant.step(101.0)
    after = plant.truth().cell_voltages_v[2][5]
    assert after - before == pytest.approx(0.05 + 0.36 * 100.0 / 3600.0, abs=2e-3)
    # parallel modules exchange a little current, nothing like 0.1 V worth of charge
    assert plant.pack.soc[2][5] == pytest.approx(soc_before, abs=2e-3)


def test_cell_leak_lowers_that_cell() -> None:
    plant = _plant()
    before = list(plant.pack.soc[0])
    plant.inject(CellLeak(module=0, cell=1, current_a=2.0, duration_s=1800.0), 0.0)
    plant.step(3600.0)
    drops = [b - a for a, b in zip(plant.pack.soc[0], before, strict=True)]
    assert drops[1] - drops[0] == pytest.approx(2.0 * 1800.0 / (24.46 * 3600.0), rel=0.1)


def test_wire_only_faults_are_queryable() -> None:
    plant = _plant()
    plant.inject(ModuleSilent(module=3), 0.0)
    plant.inject(BusGarbage(bus="charger", rate_hz=20.0, duration_s=2.0), 0.0)
    assert plant.module_silent(3, 1.0)
    assert not plant.module_silent(2, 1.0)
    assert plant.bus_garbage_hz("charger", 1.0) == 20.0
    assert plant.bus_garbage_hz("charger", 3.0) == 0.0
    assert plant.bus_garbage_hz(0, 1.0) == 0.0
    assert len(plant.active_faults(1.0)) == 2


def test_fault_with_bad_module_is_refused() -> None:
    with pytest.raises(ValueError, match="module 9"):
        _plant().inject(ModuleSilent(module=9), 0.0)
    with pytest.raises(ValueError, match="unit 1"):
        _plant().inject(InverterSilent(unit=1), 0.0)


def test_parse_fault_json() -> None:
    fault = parse_fault('{"kind": "load_step", "extra_w": 800, "duration_s": 60}')
    assert isinstance(fault, LoadStep)
    assert fault.extra_w == 800.0
    assert isinstance(parse_fault(b'{"kind": "bus_garbage", "bus": "charger"}'), BusGarbage)


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ("not json", "not JSON"),
        ('{"kind": "melt"}', "kinds: cell_drift"),
        ('{"kind": "cell_drift", "module": -1, "cell": 0}', "module"),
        ('{"kind": "load_step"}', "extra_w"),
        ('{"kind": "meter_silent", "duration_s": 0}', "duration_s"),
        ('{"kind": "meter_silent", "color": 1}', "color"),
        ('{"kind": "cell_leak", "module": 0, "cell": 0, "current_a": NaN}', "current_a"),
    ],
)
def test_parse_fault_errors(payload: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_fault(payload)
    assert needle in str(err.value)
