"""The bench sends inverter frames the way the inverter service does (services/inverter/gridzero_inverter/domain.py
`LinkSchedule.due`): a change at once, one change per min_gap at most, never held back by a
periodic repeat, and a held change sent as soon as the gap is over."""

from __future__ import annotations

import math

import pytest

from gridzero.testing import fresh_limits
from gridzero_controller.dispatch import (
    CHARGER_OFF,
    Commands,
    Side,
)
from gridzero_tools.bench.engine import BenchConfig, DeviceServices
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile


def _setup() -> tuple[Plant, DeviceServices]:
    params = PlantParams()
    flat = Profile("flat", (0.0, 100.0), (300.0, 300.0), (0.0, 0.0))
    plant = Plant(params, flat)
    services = DeviceServices(params, BenchConfig())
    services.limits = fresh_limits(0.0, cvl_v=50.0, ccl_a=50.0, dcl_a=60.0)
    return plant, services


def _ask(services: DeviceServices, watts: float) -> None:
    services.commands = Commands((watts,), CHARGER_OFF, Side.DISCHARGE)


def _demand(plant: Plant) -> float:
    return plant.inverters[0].demand_w


def test_a_periodic_repeat_does_not_hold_back_a_change() -> None:
    plant, services = _setup()
    _ask(services, 200.0)
    services.send_frames(plant, 0.0)
    services.send_frames(plant, 1.0)  # a repeat of 200 W, not a change
    _ask(services, 400.0)
    services.send_cuts(plant, 1.1)
    assert _demand(plant) == 400.0
    assert services.pending_s == math.inf


def test_a_change_within_min_gap_goes_out_when_the_gap_is_over() -> None:
    plant, services = _setup()
    _ask(services, 200.0)
    services.send_frames(plant, 0.0)
    _ask(services, 400.0)
    services.send_cuts(plant, 0.5)
    _ask(services, 600.0)
    services.send_cuts(plant, 0.6)  # 0.1 s after the last change: held
    assert _demand(plant) == 400.0
    assert services.pending_s == pytest.approx(0.5 + BenchConfig().min_gap_s)
    services.send_cuts(plant, services.pending_s)
    assert _demand(plant) == 600.0
    assert services.pending_s == math.inf
