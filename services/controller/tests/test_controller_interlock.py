"""The interlock against inverters that do not report their output, and after a restart
(issue 16 items 7a and 7b), in the pure controller with the simulator's SoyoSource model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from gridzero.testing import fresh_limits
from gridzero_controller.core import (
    ChargerReading,
    Controller,
    FeedingTracker,
    InverterReading,
    Observation,
)
from gridzero_controller.dispatch import (
    InverterUnit,
    default_holdoff_s,
    ramp_down_s,
    unit_holdoff_s,
)
from gridzero_controller.law import MeterSample
from gridzero_controller.settings import ControllerSettings
from gridzero_tools.sim.inverters import Inverter
from gridzero_tools.sim.params import InverterParams

UNIT = InverterUnit("gtn1", 900.0)
S = ControllerSettings()
BOOT_S = 1.0e6  # a monotonic clock far from 0: the host has been up for 11 days


def test_ramp_down_and_default_holdoff() -> None:
    # 900 W at 300 W/s down to 300 W (2 s), then the 1 s lag from 300 W to 5 W (ln 60 s)
    assert ramp_down_s(900.0, 5.0, 1.0, 300.0) == pytest.approx(2.0 + math.log(60.0))
    assert ramp_down_s(100.0, 5.0, 1.0, 300.0) == pytest.approx(math.log(20.0))
    assert ramp_down_s(3.0, 5.0, 1.0, 300.0) == 0.0
    assert default_holdoff_s(900.0, 5.0) == pytest.approx(1.0 + 2.0 + math.log(60.0))
    assert default_holdoff_s(50.0, 5.0) == pytest.approx(4.0)  # the frame-loss stop, 3 s + 1 s
    assert unit_holdoff_s(InverterUnit("x", 900.0, off_holdoff_s=12.0), S) == 12.0


def test_the_default_holdoff_covers_the_plant_models_ramp_down() -> None:
    # the simulator's SoyoSource (the same figures) from full power, fed 0 W frames
    params = InverterParams()
    inv = Inverter(params, 0.0, 50.0)
    t = 0.0
    while t < 20.0:
        inv.command(params.max_power_w, t)
        inv.step(t, 0.1, 50.0)
        t = round(t + 0.1, 9)
    assert inv.output_w == pytest.approx(900.0)
    zero_at = t
    while inv.output_w > S.off_inverter_w:
        inv.command(0.0, t)
        t = round(t + 0.1, 9)
        inv.step(t, 0.1, 50.0)
    print(
        f"plant model: 900 W to 5 W in {t - zero_at:.1f} s; hold-off {unit_holdoff_s(UNIT, S):.1f} s"
    )
    assert t - zero_at <= unit_holdoff_s(UNIT, S)


def test_feeding_tracker() -> None:
    tracker = FeedingTracker()
    # no history (a restart): a first state at 0 W starts the hold-off
    r = tracker.update(BOOT_S, demand_w=0.0, sending=True, output_w=None, holdoff_s=7.0)
    assert r.feeding_until_s == BOOT_S + 7.0
    r = tracker.update(BOOT_S + 1, demand_w=300.0, sending=True, output_w=None, holdoff_s=7.0)
    assert r.feeding_until_s == math.inf
    # frames stopped (port error) with a non-zero demand: it stops within its frame timeout
    r = tracker.update(BOOT_S + 2, demand_w=300.0, sending=False, output_w=None, holdoff_s=7.0)
    assert r.feeding_until_s == BOOT_S + 9.0
    r = tracker.update(BOOT_S + 3, demand_w=0.0, sending=False, output_w=None, holdoff_s=7.0)
    assert r.feeding_until_s == BOOT_S + 9.0  # still counted from the first state at 0


# ------------------------------------------------------------------ 7b: restart


def test_after_a_restart_a_unit_at_0_w_counts_as_feeding_for_its_holdoff() -> None:
    # through the whole controller, the way the service feeds it: the first state of a unit
    # without status shows 0 W, but what it did before the restart is unknown
    c = Controller(ControllerSettings(), (UNIT,))
    tracker = FeedingTracker()
    holdoff_s = unit_holdoff_s(UNIT, S)
    charged_at = None
    now = BOOT_S
    while now < BOOT_S + 30.0 and charged_at is None:
        reading = tracker.update(
            now, demand_w=0.0, sending=True, output_w=None, holdoff_s=holdoff_s
        )
        out = c.step(_observation(now, -2500.0, reading, 0.0))
        if out.commands.charger.on:
            charged_at = now
        now += 0.5
    assert charged_at is not None
    print(f"after a restart: charging {charged_at - BOOT_S:.1f} s after the first step")
    assert charged_at - BOOT_S >= holdoff_s + S.min_dwell_s


# ------------------------------------------------------------------ 7a: the plant


def _observation(
    now: float, grid_w: float, reading: InverterReading | None, charger_a: float
) -> Observation:
    return Observation(
        now_s=now,
        meter=MeterSample(grid_w, now),
        limits=fresh_limits(now),
        pack_voltage_v=48.0,
        soc_pct=50.0,
        inverters=(reading,),
        charger=ChargerReading(48.0, charger_a, now),
    )


@dataclass
class Overlap:
    seconds: float = 0.0
    worst_inverter_w: float = 0.0
    worst_charger_a: float = 0.0


def _old_mapping(_tracker: FeedingTracker, now: float, demand_w: float) -> InverterReading | None:
    """What the service did before: a unit sent 0 W counted as measured 0 W."""
    return InverterReading(0.0, now) if demand_w == 0 else None


def _new_mapping(tracker: FeedingTracker, now: float, demand_w: float) -> InverterReading:
    return tracker.update(
        now, demand_w=demand_w, sending=True, output_w=None, holdoff_s=unit_holdoff_s(UNIT, S)
    )


def _run_surplus_after_load(mapping: Callable[..., InverterReading | None]) -> Overlap:
    """900 W of load for 30 s, then 2.5 kW of surplus; the unit answers no status queries.

    The inverter service's state (every 1 s) shows the demand on the wire; the charger
    follows its command at once (the worst case for the interlock)."""
    params = InverterParams()
    inv = Inverter(params, 0.0, 48.0)
    c = Controller(ControllerSettings(), (UNIT,))
    tracker = FeedingTracker()
    reading: InverterReading | None = None
    demand_w = 0.0
    charger_a = 0.0
    overlap = Overlap()
    dt = 0.1
    for k in range(600):
        now = k * dt
        net_w = 900.0 if now < 30.0 else -2500.0
        grid_w = net_w - inv.output_w + charger_a * 48.0 / S.charger_efficiency
        if k % 10 == 0:  # the inverter service's state, every 1 s
            reading = mapping(tracker, now, demand_w)
        if k % 5 == 0:  # a control step every meter value (0.5 s)
            out = c.step(_observation(now, grid_w, reading, charger_a))
            demand_w = float(math.floor(out.commands.inverter_w[0]))
            charger_a = out.commands.charger.current_a if out.commands.charger.on else 0.0
        inv.command(demand_w, now)  # the frame goes out at once
        inv.step(now, dt, 48.0)
        if charger_a > S.off_charger_a and inv.output_w > S.off_inverter_w:
            overlap.seconds += dt
            overlap.worst_inverter_w = max(overlap.worst_inverter_w, inv.output_w)
            overlap.worst_charger_a = max(overlap.worst_charger_a, charger_a)
    return overlap


def test_the_old_mapping_charged_while_the_unit_still_fed() -> None:
    # the hazard as it was, in the plant model (the finding: 29.4 A against 405 W for 4.6 s)
    old = _run_surplus_after_load(_old_mapping)
    print(
        f"old: charger {old.worst_charger_a:.1f} A while the unit fed up to "
        f"{old.worst_inverter_w:.0f} W, for {old.seconds:.1f} s"
    )
    assert old.seconds > 1.0


def test_charge_never_starts_while_a_unit_without_status_still_feeds() -> None:
    new = _run_surplus_after_load(_new_mapping)
    print(f"new: overlap {new.seconds:.1f} s, {new.worst_inverter_w:.0f} W")
    assert new.seconds == 0.0
