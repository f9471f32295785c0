"""Schedules in simulated time on the bench's plant, and `gridzero bench --tariff`."""

from __future__ import annotations

import json
from array import array
from dataclasses import replace
from pathlib import Path

import pytest

from gridzero.errors import UsageError
from gridzero.runtime.freshness import FreshValue
from gridzero_controller.prices import Price, fresh_price
from gridzero_controller.schedule import time_zone
from gridzero_controller.settings import update_settings
from gridzero_tools.bench.baselines import ScheduledGridzero
from gridzero_tools.bench.cli import BENCH_DAY_WALL_S, bench_settings, main
from gridzero_tools.bench.engine import BenchConfig, RunTrace, run, units_of
from gridzero_tools.bench.households import household
from gridzero_tools.bench.tariff import PriceTable, load_tariff, run_cost, schedule_settings
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.profile import Profile

WINDOW = "daily 00:30-04:30 charge 80% 2000W"


def _run(window: str, start_s: float, duration_s: float, load_w: float = 300.0) -> RunTrace:
    params = load_plant("small-pack")  # 2.2 kWh: 50 -> 80 % in about 25 min at 2 kW
    settings = update_settings(bench_settings(params), {"window_1": window})
    ctl = ScheduledGridzero(
        settings, units_of(params), day_start_wall_s=BENCH_DAY_WALL_S, zone=time_zone("UTC")
    )
    config = BenchConfig(start_s=start_s, duration_s=duration_s)
    return run(ctl, params, Profile.constant(load_w, duration_s=start_s + duration_s), config)


def _at(trace: RunTrace, t_s: float) -> int:
    return round((t_s - trace.start_s) / trace.tick_s) - 1


def _mean(values: object, a: int, b: int) -> float:
    part = list(values)[a:b]  # type: ignore[call-overload]
    return sum(part) / len(part)


def test_charge_to_80_between_00_30_and_04_30_stops_at_80_and_the_loop_resumes_after() -> None:
    trace = _run(WINDOW, 0.0, 5 * 3600.0)
    bat, grid, soc = trace.battery_w, trace.grid_w, trace.soc_pct
    # before the window: the plain loop covers the house from the battery
    assert _mean(bat, _at(trace, 600), _at(trace, 1700)) > 250
    assert abs(_mean(grid, _at(trace, 600), _at(trace, 1700))) < 30
    # inside: charging from the grid at about 2 kW (+ charging is negative battery_w here)
    assert _mean(bat, _at(trace, 1900), _at(trace, 2400)) < -1700
    assert _mean(grid, _at(trace, 1900), _at(trace, 2400)) > 2000
    # stops at 80 % and holds (no discharge) for the rest of the window
    assert max(soc) < 81.5
    assert max(soc[_at(trace, 1800) : _at(trace, 16200)]) > 79.0
    assert abs(_mean(bat, _at(trace, 12000), _at(trace, 16100))) < 30
    assert _mean(grid, _at(trace, 12000), _at(trace, 16100)) > 250
    # after 04:30 the loop discharges into the house again
    assert _mean(bat, _at(trace, 16500), _at(trace, 17900)) > 250
    assert trace.violations.total == 0


def test_charging_stops_at_the_window_end_before_the_target() -> None:
    trace = _run("daily 00:30-04:30 charge 80% 1000W", 4 * 3600.0, 3600.0)
    bat, soc = trace.battery_w, trace.soc_pct
    assert _mean(bat, _at(trace, 14700), _at(trace, 16100)) < -800
    end_soc = soc[_at(trace, 16200)]
    assert end_soc < 75.0  # the window ended first
    assert _mean(bat, _at(trace, 16500), _at(trace, 17900)) > 250
    assert max(soc[_at(trace, 16400) :]) <= end_soc + 0.2


def test_a_hold_window_keeps_the_inverter_at_0_w_while_the_house_imports() -> None:
    trace = _run("daily 00:00-01:00 hold", 0.0, 900.0, load_w=500.0)
    assert max(trace.battery_w) <= 5.0
    assert _mean(trace.grid_w, 40, len(trace.grid_w)) > 450


def test_cost_counts_import_export_and_stored_energy() -> None:
    tariff = load_tariff("cheap-night")
    assert tariff.import_price.at(3600) == pytest.approx(0.075)
    assert tariff.import_price.at(12 * 3600) == pytest.approx(0.285)
    grid = array("f", [1000.0] * 3600)  # 1 kW for one hour at 01:00 (cheap)
    soc = array("f", [50.0] * 3600)
    cost = run_cost(
        "x",
        grid,
        soc,
        3600.0,
        1.0,
        tariff,
        capacity_kwh=10,
        inverter_efficiency=0.9,
        start_soc_pct=50.0,
    )
    assert cost.import_cost == pytest.approx(0.075, rel=1e-3)
    assert cost.per_day == pytest.approx(0.075 * 24, rel=1e-3)
    half = load_tariff("half-hourly")
    assert len(half.import_price.prices) == 48
    assert half.import_price.at(17 * 3600) > half.import_price.at(3 * 3600)


def test_bench_tariff_prints_cost_per_controller_and_the_schedule_saves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "--profile",
            "night-base",
            "--controllers",
            "gridzero,housebatt",
            "--tariff",
            "cheap-night",
            "--duration",
            "18000",
            "--no-bound",
            "--no-progress",
            "--json",
        ]
    )
    assert status == 0
    doc = json.loads(capsys.readouterr().out)
    costs = {c["controller"]: c["per_day"] for c in doc["cases"][0]["costs"]}
    assert set(costs) == {"gridzero", "housebatt", "gridzero+schedule"}
    assert costs["gridzero+schedule"] < costs["gridzero"]


def test_a_bad_tariff_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('import: {"25:00": 0.1}\n')
    with pytest.raises(UsageError, match="25:00"):
        load_tariff(str(bad))
    with pytest.raises(UsageError, match="no such file or bundled tariff"):
        load_tariff("nowhere")


def test_households_with_a_tariff_report_the_saving_on_each_households_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Generated households start at their drawn hour (06:00..21:00): the schedule's windows
    and the prices follow that clock, not the profile's second 0. A charge window over every
    possible start charges from the grid in every household; on the profile's own clock
    (00:00-00:10) it would never be active."""
    tariff = tmp_path / "day-charge.yaml"
    tariff.write_text(
        'name: day-charge\nunit: GBP/kWh\nimport: {"00:00": 0.3}\nexport: 0.1\n'
        'gridzero: {window_1: "daily 06:00-22:00 charge 95% 1000W"}\n'
    )
    argv = ["--households", "2", "--seed", "1", "--duration", "600", "--controllers"]
    argv += ["gridzero", "--tariff", str(tariff), "--no-bound", "--no-progress"]
    argv += ["--households-out", str(tmp_path / "hh")]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for case in doc["cases"]:
        rows = {r["controller"]: r for r in case["controllers"]}
        costs = {c["controller"]: c["per_day"] for c in case["costs"]}
        # ~1 kW bought for the whole run: the schedule costs more here, as it should
        assert rows["gridzero+schedule"]["import_wh"] > rows["gridzero"]["import_wh"] + 100
        assert costs["gridzero+schedule"] > costs["gridzero"]
    savings = doc["households"]["savings"]
    assert savings["n"] == 2
    assert savings["losing"] == 2
    assert savings["worst"] <= savings["median"] <= savings["best"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "cost per day on tariff day-charge (GBP/kWh" in text
    assert "saving over 2 households: median" in text


def test_the_tariff_clock_starts_at_the_households_hour() -> None:
    tariff = load_tariff("cheap-night")
    at_2300 = replace(tariff, clock_offset_s=23 * 3600.0)
    assert at_2300.import_at(0.0) == pytest.approx(0.285)
    assert at_2300.import_at(2 * 3600.0) == pytest.approx(0.075)  # 01:00 the next day
    assert at_2300.time_of_day_s(3600.0) == 0.0


def test_a_day_long_household_sees_the_next_mornings_sun() -> None:
    hh = next(
        h
        for h in (household(1, i, 86400.0) for i in range(40))
        if h.start_of_day_s >= 14 * 3600 and "no PV" not in h.features
    )
    noon_next_day = round(86400.0 - hh.start_of_day_s + 12 * 3600.0)
    assert max(hh.profile.pv_w[noon_next_day - 600 : noon_next_day + 600]) > 50.0


def test_a_price_below_the_limit_charges_from_the_grid_and_a_stale_price_stops_it() -> None:
    """In simulated time on the plant: a price of 0.05 arrives every 5 min until 00:20, then
    no more. It goes stale 900 s (price_stale_s) after its last arrival, at 00:35: charging
    from the grid stops there and the loop covers the house from the battery again."""
    params = load_plant("default")
    rules = {
        "price_charge_enabled": True,
        "charge_below_price": 0.10,
        "price_charge_soc_pct": 90.0,
        "price_charge_w": 1500.0,
    }
    settings = update_settings(bench_settings(params), rules)
    last_s, stale_s = 1200.0, 900.0

    def price_at(t_s: float) -> float | None:
        arrived = FreshValue(Price(0.05), min(last_s, t_s - t_s % 300.0))
        fresh = fresh_price(arrived, t_s, stale_s)
        return None if fresh is None else fresh.import_price

    ctl = ScheduledGridzero(
        settings,
        units_of(params),
        day_start_wall_s=BENCH_DAY_WALL_S,
        zone=time_zone("UTC"),
        price_at=price_at,
    )
    trace = run(ctl, params, Profile.constant(300.0, duration_s=3000.0), BenchConfig())
    bat, grid = trace.battery_w, trace.grid_w
    # price fresh and below the limit: charging at ~1.5 kW from the grid over a 300 W house
    assert _mean(bat, _at(trace, 300), _at(trace, 2000)) < -1300
    assert _mean(grid, _at(trace, 300), _at(trace, 2000)) > 1600
    # stale from 2100 s: no more grid charging, the battery covers the house
    assert _mean(bat, _at(trace, 2200), _at(trace, 2990)) > 250
    assert abs(_mean(grid, _at(trace, 2200), _at(trace, 2990))) < 40
    assert trace.violations.total == 0


def test_price_rules_from_a_tariff_charge_at_night_only_and_leave_room_for_pv() -> None:
    """The derivation (tariff.schedule_settings): a grid charge never at midday, where it only
    fills the battery ahead of the sun; to 50 % where export pays less than the cheapest
    import (the PV a full battery pushes out is sold for less than it cost); to 90 % where
    it pays more (cheap-night: 0.075 against 0.15)."""
    half = load_tariff("half-hourly")
    rules = schedule_settings(half, 3000.0)
    charging = [
        k * 1800
        for k in range(48)
        if half.import_price.at(k * 1800.0) < rules["charge_below_price"]
    ]
    assert charging == list(range(9000, 18000, 1800))  # 02:30 .. 04:30 starts, to 05:00
    assert rules["price_charge_soc_pct"] == 50.0
    night = replace(load_tariff("cheap-night"), gridzero={})
    rules = schedule_settings(night, 3000.0)
    assert rules["price_charge_soc_pct"] == 90.0
    assert night.import_price.at(3600.0) < rules["charge_below_price"] < 0.285
    flat = replace(night, import_price=PriceTable((0.0,), (0.2,)))
    assert not schedule_settings(flat, 3000.0)["price_charge_enabled"]
