"""The housebatt baseline against anikrooz/housebatt housebatt.ino (HEAD 1c279d5): each cited
line's behaviour, and in closed loop that a silent meter means no more inverter frames."""

from __future__ import annotations

import pytest

from gridzero.testing import fresh_limits
from gridzero_controller.core import ChargerReading, InverterReading, Observation
from gridzero_controller.dispatch import InverterUnit, Side
from gridzero_controller.law import MeterSample
from gridzero_tools.bench.baselines import HousebattController
from gridzero_tools.bench.engine import BenchConfig, _Loop
from gridzero_tools.sim.faults import MeterSilent
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.profile import Profile

UNIT = (InverterUnit("gtn1", 900.0),)


def obs(now: float, grid: float | None, inv: float = 0.0, chg: float = 0.0) -> Observation:
    meter = None if grid is None else MeterSample(grid, now)
    return Observation(
        now_s=now,
        meter=meter,
        limits=fresh_limits(now, cvl_v=49.2, ccl_a=50.0, dcl_a=50.0),
        pack_voltage_v=48.0,
        soc_pct=50.0,
        inverters=(InverterReading(inv, now),),
        charger=ChargerReading(48.0, chg, now),
    )


def stale(now: float, meter_at: float, inv: float = 0.0, chg: float = 0.0) -> Observation:
    o = obs(now, 0.0, inv, chg)
    return Observation(
        o.now_s, MeterSample(0.0, meter_at), o.limits, o.pack_voltage_v, o.soc_pct,
        o.inverters, o.charger,
    )  # fmt: skip


def test_frames_only_at_a_meter_message_in_the_discharge_branch() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, 1000.0))
    assert c.take_frames() == (850.0,)  # L263-267
    # No new meter message: nothing written (the device keeps its last frame).
    for t in (0.25, 0.5, 1.0, 5.0):
        c.step(stale(t, 0.0, inv=850.0))
        assert c.take_frames() is None


def test_a_stop_writes_no_frame() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, 1000.0))
    c.take_frames()
    # 850 + 0.85 × (-1000 - 20) = -17: too small (L311-322): demand 0, no frame written.
    cmd = c.step(obs(0.5, -1000.0, inv=850.0))
    assert c.take_frames() is None
    assert cmd.side == Side.IDLE
    assert not c.inverting
    assert c.demand_w == 0


def test_a_silent_meter_sends_no_frames_and_switches_the_charger_off_after_15_s() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, 1000.0))
    c.take_frames()
    t = 0.5
    while t <= 15.0:
        c.step(stale(t, 0.0, inv=850.0))
        assert c.take_frames() is None
        t += 0.5
    # The timeout (L659-666) leaves demand and inverting alone.
    c.step(stale(15.5, 0.0, inv=0.0))
    assert c.inverting
    assert c.demand_w == 850
    assert not c.charging


def test_buffer_sign_follows_the_last_demand_and_demand_is_int() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, 101.0))
    assert c.demand_w == 85  # int(0.85 × 101) = int(85.85), L218
    # Inverter reads current, demand > 0: the buffer is subtracted (L216): 85 + 0.85 × 80.
    c.step(obs(0.5, 100.0, inv=85.0))
    assert c.demand_w == 153
    # The shunt reads no current: demand resets first (L214).
    c.step(obs(1.0, 100.0))
    assert c.demand_w == 85


def test_charging_start_full_current_at_next_message_and_no_lastmqtt_refresh() -> None:
    c = HousebattController(UNIT)
    cmd = c.step(obs(0.0, -400.0))  # -340 < -270: start (L288-299)
    assert cmd.charger.on
    assert cmd.charger.current_a == pytest.approx(0.8 * 340 / 48.0)
    # The next message inside the 8.5 s window: setCAmps(cAmps), the full 340 W (L203).
    cmd = c.step(obs(0.5, -50.0, chg=5.0))
    assert cmd.charger.current_a == pytest.approx(340 / 48.0)
    t = 1.0
    while t < 8.5:
        assert c.step(obs(t, -3000.0, chg=7.0)).charger.current_a == pytest.approx(340 / 48.0)
        t += 0.5
    # Messages inside the window did not refresh lastMQTT (L203 returns before L208): with
    # the meter silent from 8.5 s the charger goes off 15 s after the message at 0 s.
    assert c.step(stale(14.9, 8.0, chg=7.0)).charger.on
    assert not c.step(stale(15.1, 8.0, chg=7.0)).charger.on


def test_from_charging_to_discharging_takes_one_message_at_zero() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, -400.0))
    t = 0.5
    while t < 9.0:
        c.step(obs(t, -400.0, chg=5.0))
        t += 0.5
    c.step(obs(9.0, 3000.0, chg=5.0))  # L250-258: charger off, demand 0, no frame
    assert not c.charging
    assert c.demand_w == 0
    assert c.take_frames() is None
    c.step(obs(9.5, 1000.0))
    assert c.take_frames() == (850.0,)


def test_from_inverting_to_charging_waits_a_second_without_a_frame() -> None:
    c = HousebattController(UNIT)
    c.step(obs(0.0, 300.0))
    c.take_frames()
    c.step(obs(0.5, -1000.0, inv=255.0))  # 255 + 0.85 × (-1020) < -120: stop inverting first
    assert not c.inverting
    assert c.take_frames() is None
    assert not c.charging
    c.step(obs(1.0, -1000.0))  # inside the 1 s wait (L278, L203)
    assert not c.charging
    assert c.step(obs(1.5, -1000.0)).charger.on


def test_closed_loop_silent_meter_stops_the_inverter_at_its_frame_timeout() -> None:
    params = PlantParams()
    flat = Profile("flat", (0.0, 200.0), (600.0, 600.0), (0.0, 0.0))
    loop = _Loop(HousebattController((InverterUnit("gtn1", 900.0),)), params, flat, BenchConfig())
    while loop.plant.now_s < 40.0:
        loop.step(None, 1)
    assert loop.plant.inverters[0].output_w > 300.0
    loop.plant.inject(MeterSilent(start_s=40.0), 40.0)
    while loop.plant.now_s < 40.0 + params.inverters[0].frame_timeout_s + 1.0:
        loop.step(None, 1)
    # No frame after the last meter message: the unit stops at its own timeout (3 s), not
    # 15 s later as when the bench kept sending the last demand.
    assert loop.plant.inverters[0].output_w == 0.0
