"""charge_enabled / discharge_enabled: the owner's switches, independent of the mode."""

from __future__ import annotations

import pytest

from gridzero.testing import fresh_limits
from gridzero_controller.core import (
    ChargerReading,
    Controller,
    InverterReading,
    Observation,
)
from gridzero_controller.dispatch import InverterUnit, Side
from gridzero_controller.law import MeterSample
from gridzero_controller.service import ControllerRuntime
from gridzero_controller.settings import ControllerSettings, Mode

UNITS = (InverterUnit("gtn1", 900.0),)


def _obs(now: float, grid: float) -> Observation:
    return Observation(
        now_s=now,
        meter=MeterSample(grid, now),
        limits=fresh_limits(now, cvl_v=49.0),
        pack_voltage_v=48.0,
        soc_pct=50.0,
        inverters=(InverterReading(0.0, now),),
        charger=ChargerReading(48.0, 0.0, now),
    )


def _side(settings: ControllerSettings, grid: float) -> tuple[Side, float, float]:
    c = Controller(settings, UNITS)
    c.step(_obs(0.0, 0.0))
    c.step(_obs(1.0, grid))  # a jump > spike_w needs a second sample to be believed
    out = c.step(_obs(1.5, grid))
    return out.commands.side, out.commands.discharge_w, out.setpoint_w


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.DISCHARGE_ONLY])
def test_discharge_disabled_never_discharges(mode: Mode) -> None:
    base = ControllerSettings(mode=mode, min_dwell_s=1.0)
    assert _side(base, 500.0)[0] is Side.DISCHARGE
    side, discharge_w, setpoint_w = _side(
        base.model_copy(update={"discharge_enabled": False}), 500.0
    )
    assert side is Side.IDLE
    assert discharge_w == 0.0
    assert setpoint_w == 0.0


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.CHARGE_ONLY])
def test_charge_disabled_never_charges(mode: Mode) -> None:
    base = ControllerSettings(mode=mode, min_dwell_s=1.0)
    assert _side(base, -2000.0)[0] is Side.CHARGE
    off = base.model_copy(update={"charge_enabled": False})
    assert _side(off, -2000.0)[0] is Side.IDLE
    if mode is Mode.AUTO:  # the other side still works
        assert _side(off, 500.0)[0] is Side.DISCHARGE


def test_constant_power_obeys_the_switches() -> None:
    s = ControllerSettings(mode=Mode.CONSTANT_POWER, constant_power_w=600.0, min_dwell_s=1.0)
    assert _side(s, 0.0)[0] is Side.DISCHARGE
    assert _side(s.model_copy(update={"discharge_enabled": False}), 0.0)[0] is Side.IDLE


def test_the_switches_are_runtime_settings() -> None:
    fields = ControllerRuntime.model_fields
    assert fields["charge_enabled"].annotation is bool
    assert fields["discharge_enabled"].annotation is bool
    assert ControllerRuntime().charge_enabled
    assert ControllerRuntime().discharge_enabled
