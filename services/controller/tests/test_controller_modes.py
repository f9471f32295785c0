"""Settings validation, modes, supervision and the whole pure controller."""

from __future__ import annotations

import pytest

from gridzero.errors import SettingsError
from gridzero.testing import fresh_limits
from gridzero_controller.charge_target import ChargeTargetHold, overlay
from gridzero_controller.core import (
    ChargerReading,
    Controller,
    InverterReading,
    Observation,
)
from gridzero_controller.dispatch import InverterUnit, Side
from gridzero_controller.law import LawReason, MeterSample
from gridzero_controller.settings import (
    ControllerSettings,
    Mode,
    update_settings,
    validate_settings,
)
from gridzero_controller.supervision import FollowMonitor, QualityMonitor

UNITS = (InverterUnit("gtn1", 900.0),)


def test_settings_ranges_are_enforced_with_names():
    with pytest.raises(SettingsError, match="target_grid_w"):
        validate_settings({"target_grid_w": 9999})
    with pytest.raises(SettingsError, match="mode"):
        validate_settings({"mode": "turbo"})
    with pytest.raises(SettingsError, match="soc_min_pct"):
        validate_settings({"soc_min_pct": 90, "soc_max_pct": 91})


def test_update_is_all_or_nothing():
    s = ControllerSettings()
    with pytest.raises(SettingsError):
        update_settings(s, {"deadband_w": 7, "max_charge_w": -1})
    assert s.deadband_w == ControllerSettings().deadband_w
    assert update_settings(s, {"mode": "hold"}).mode is Mode.HOLD


def test_charge_target_command():
    hold = ChargeTargetHold()
    hold.receive(1500, now_s=100.0, timeout_s=15.0)
    s = overlay(ControllerSettings(), hold.current(100.0))
    assert s.mode is Mode.CONSTANT_POWER
    assert s.constant_power_w == -1500.0
    assert hold.receive(0, now_s=101.0, timeout_s=15.0) is True  # re-enable discharging
    assert overlay(ControllerSettings(), hold.current(101.0)).mode is Mode.AUTO


def test_charge_target_lapses_without_a_refresh():
    """housebatt.ino lines 659-667: no message for 15 s ends target mode."""
    hold = ChargeTargetHold()
    hold.receive(500, now_s=0.0, timeout_s=15.0)
    hold.receive(500, now_s=10.0, timeout_s=15.0)  # refreshed: 15 s from now
    assert hold.current(24.9) is not None
    assert hold.current(24.9).left_s(24.9) == pytest.approx(0.1)
    assert hold.current(25.0) is None
    assert hold.current(20.0) is None  # once lapsed it stays gone


def test_charge_target_does_not_override_off_and_is_range_checked():
    hold = ChargeTargetHold()
    hold.receive(500, now_s=0.0, timeout_s=15.0)
    off = ControllerSettings(mode=Mode.OFF)
    assert overlay(off, hold.current(0.0)).mode is Mode.OFF
    for mode in (Mode.HOLD, Mode.DISCHARGE_ONLY):  # the owner's "do not charge" wins too
        assert overlay(ControllerSettings(mode=mode), hold.current(0.0)).mode is mode
    hold.receive(30000, now_s=0.0, timeout_s=15.0)
    for mode in (Mode.AUTO, Mode.OFF):  # refused in mode off too: it would bite at mode auto
        with pytest.raises(SettingsError, match="constant_power_w"):
            overlay(ControllerSettings(mode=mode), hold.current(0.0))
    with pytest.raises(ValueError, match="not a number"):
        hold.receive(float("nan"), now_s=0.0, timeout_s=15.0)


def limits(at_s=0.0, alarm=False):
    return fresh_limits(at_s, cvl_v=49.0, alarms=("cell_over_voltage",) if alarm else ())


def obs(now, grid, inv=0.0, chg_a=0.0, lim_at=None, alarm=False, meter_at=None, soc=50.0):
    return Observation(
        now_s=now,
        meter=MeterSample(grid, now if meter_at is None else meter_at),
        limits=limits(now if lim_at is None else lim_at, alarm),
        pack_voltage_v=48.0,
        soc_pct=soc,
        inverters=(InverterReading(inv, now),),
        charger=ChargerReading(48.0, chg_a, now),
    )


def test_auto_mode_discharges_on_import():
    c = Controller(ControllerSettings(min_dwell_s=1.0), UNITS)
    c.step(obs(0.0, 0.0))
    out = c.step(obs(1.0, 500.0))
    assert out.commands.side is Side.DISCHARGE
    assert out.setpoint_w == pytest.approx(500.0)
    # The inverter still at 0 W is asked for more while it ramps, by at most ramp × lag.
    assert 500.0 < out.commands.inverter_w[0] <= 800.0


def test_auto_mode_without_overdrive_commands_the_set_point():
    c = Controller(ControllerSettings(min_dwell_s=1.0, overdrive_gain=0.0), UNITS)
    c.step(obs(0.0, 0.0))
    out = c.step(obs(1.0, 500.0))
    assert out.commands.inverter_w[0] == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("mode", "grid", "expect"),
    [
        (Mode.HOLD, 500.0, Side.IDLE),
        (Mode.OFF, 500.0, Side.IDLE),
        (Mode.CHARGE_ONLY, 500.0, Side.IDLE),
        (Mode.DISCHARGE_ONLY, -2000.0, Side.IDLE),
        (Mode.DISCHARGE_ONLY, 500.0, Side.DISCHARGE),
        (Mode.CHARGE_ONLY, -2000.0, Side.CHARGE),
    ],
)
def test_modes(mode, grid, expect):
    c = Controller(ControllerSettings(mode=mode, min_dwell_s=1.0), UNITS)
    c.step(obs(0.0, 0.0))
    c.step(obs(1.0, grid))  # a jump > spike_w needs a second sample to be believed
    assert c.step(obs(1.5, grid)).commands.side is expect


def test_constant_mode_ignores_meter():
    c = Controller(
        ControllerSettings(mode=Mode.CONSTANT_POWER, constant_power_w=-1000.0, min_dwell_s=1.0),
        UNITS,
    )
    c.step(obs(0.0, 0.0))
    out = c.step(obs(1.0, 3000.0))
    assert out.law.reason is LawReason.CONSTANT
    assert out.commands.charger.on
    assert out.commands.charger.current_a == pytest.approx(1000.0 * 0.94 / 48.0)


def test_stale_bms_limits_zero_at_once():
    # Default settings: the overdrive must not survive stale limits either.
    c = Controller(ControllerSettings(min_dwell_s=1.0, bms_stale_s=3.0), UNITS)
    c.step(obs(0.0, 0.0))
    assert 800.0 <= c.step(obs(1.0, 800.0, lim_at=1.0)).commands.discharge_w <= 900.0
    out = c.step(obs(4.5, 0.0, inv=800.0, lim_at=1.0))
    assert not out.limits_ok
    assert out.setpoint_w == 0.0
    assert out.commands.discharge_w == 0.0


def test_bms_alarm_zero_at_once():
    c = Controller(ControllerSettings(min_dwell_s=1.0), UNITS)
    c.step(obs(0.0, 0.0))
    c.step(obs(1.0, 800.0))
    assert c.step(obs(1.5, 0.0, inv=800.0, alarm=True)).commands.discharge_w == 0.0


def test_stale_meter_ramps_down_through_controller():
    c = Controller(ControllerSettings(min_dwell_s=1.0, stale_ramp_w_per_s=100.0), UNITS)
    c.step(obs(0.0, 0.0))
    c.step(obs(1.0, 800.0))
    out = c.step(obs(7.0, 800.0, inv=800.0, meter_at=1.0))
    assert out.law.reason is LawReason.METER_STALE
    assert out.setpoint_w == pytest.approx(200.0)


def test_follow_monitor_flags_device_that_ignores_command():
    m = FollowMonitor("gtn1", "W")
    assert m.update(0.0, 500.0, 0.0, 80.0, 15.0) is None
    assert m.update(10.0, 500.0, 0.0, 80.0, 15.0) is None
    fault = m.update(15.0, 500.0, 0.0, 80.0, 15.0)
    assert fault is not None
    assert "gtn1 does not follow" in fault.message(15.0)
    assert m.update(16.0, 500.0, 480.0, 80.0, 15.0) is None


def test_controller_reports_follow_fault():
    c = Controller(ControllerSettings(min_dwell_s=1.0, follow_timeout_s=5.0), UNITS)
    c.step(obs(0.0, 0.0))
    faults = ()
    for i in range(2, 20):
        faults = c.step(obs(i * 0.5, 600.0, inv=0.0)).faults
    assert faults
    assert faults[0].device == "gtn1"


def test_quality_monitor():
    q = QualityMonitor(60.0)
    for i, e in enumerate([10.0, -10.0, 10.0, -10.0]):
        q.add_meter(i * 1.0, e)
    sp = [0.0, 100.0, 0.0, 100.0, 0.0]
    for i, v in enumerate(sp):
        q.add_setpoint(i * 1.0, v, 10.0)
    r = q.report(4.0)
    assert r.mean_error_w == pytest.approx(0.0)
    assert r.rms_error_w == pytest.approx(10.0)
    assert r.reversals_per_min == pytest.approx(3.0)
    assert r.meter_age_s == pytest.approx(1.0)
    assert q.report(200.0).samples == 0
