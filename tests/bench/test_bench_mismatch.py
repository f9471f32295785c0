"""A plant slower than the controller's guess (an inverter with 1 s of dead time the installer
did not set): the trust in the guess falls and the loop does not swing."""

from __future__ import annotations

import pytest

import gridzero_controller.law as law
from gridzero_tools.bench.cli import bench_settings, make_controller
from gridzero_tools.bench.engine import BenchConfig, run
from gridzero_tools.bench.metrics import net_load_series, oscillating_minutes
from gridzero_tools.sim.params import InverterParams, PlantParams
from gridzero_tools.sim.profile import load_profile


def _swinging_minutes() -> tuple[int, float]:
    # 15 minutes of the bundled evening: a steady ~700 W load while PV fades.
    params = PlantParams(inverters=[InverterParams(dead_time_s=1.0)])
    profile = load_profile("evening-oven")
    settings = bench_settings(params).model_copy(update={"plant_dead_time_s": 0.2})
    controller = make_controller("gridzero", params, profile, settings)
    trace = run(controller, params, profile, BenchConfig(start_s=11600.0, duration_s=900.0))
    net = net_load_series(profile, params, trace.start_s, trace.tick_s, len(trace.grid_w))
    wh = sum(abs(g) for g in trace.grid_w) * trace.tick_s / 3600.0
    return oscillating_minutes(trace, net), wh


def test_a_plant_slower_than_its_guess_does_not_swing() -> None:
    minutes, wh = _swinging_minutes()
    assert minutes == 0
    assert wh < 4.0


def test_without_the_trust_the_same_plant_swings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The case above is a real test of the mechanism: with reversals not cutting the trust,
    # this plant swings.
    monkeypatch.setattr(law, "TRUST_CUT", 1.0)
    minutes, _ = _swinging_minutes()
    assert minutes >= 3
