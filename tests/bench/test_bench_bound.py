"""The bench's lower bound (tools/gridzero_tools/bench/bound.py): known optima on hand-made
profiles, block aggregation never above the fine LP, and no controller below it."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero_tools.bench import cli
from gridzero_tools.bench.bound import (
    RelaxedPlant,
    block_means,
    lower_bound,
    relaxed_plant,
    solve,
)
from gridzero_tools.bench.metrics import Metrics
from gridzero_tools.sim.params import load_plant, parse_plant
from gridzero_tools.sim.profile import Profile

pytest.importorskip("highspy")

HOUR = 3600.0


def _plant(e_start: float = 5000.0, e_full: float = 10000.0) -> RelaxedPlant:
    return RelaxedPlant(
        charge_max_w=2000.0,
        charge_efficiency=0.95,
        inverters=((900.0, 0.87),),
        standby_w=0.0,
        energy_start_wh=e_start,
        energy_full_wh=e_full,
    )


def _flat(net_w: float, n: int = 6, block_s: float = 600.0) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, block_s), np.full(n, net_w)


def test_surplus_below_the_chargers_maximum_is_all_stored() -> None:
    abs_wh, imp, exp = solve(*_flat(-1500.0), _plant())
    assert abs_wh == pytest.approx(0.0, abs=1e-6)
    assert imp == pytest.approx(0.0, abs=1e-6)
    assert exp == pytest.approx(0.0, abs=1e-6)


def test_surplus_above_the_chargers_maximum_exports_the_excess() -> None:
    abs_wh, _imp, exp = solve(*_flat(-2600.0), _plant())
    assert abs_wh == pytest.approx(600.0, rel=1e-9)  # (2600 − 2000) W for 1 h
    assert exp == pytest.approx(600.0, rel=1e-9)


def test_a_full_pack_takes_no_charge() -> None:
    full = _plant(e_start=10000.0)
    no_inverter = RelaxedPlant(2000.0, 0.95, ((0.0, 0.87),), 0.0, 10000.0, 10000.0)
    abs_wh, _imp, exp = solve(*_flat(-1500.0), no_inverter)
    assert abs_wh == pytest.approx(1500.0, rel=1e-9)
    assert exp == pytest.approx(1500.0, rel=1e-9)
    # With the interlock relaxed, charging while discharging turns surplus into conversion
    # loss without storing anything (the plant can do that too): 900 W out takes
    # 900 / (0.95 × 0.87) W in.
    burn_w = 900.0 / (0.95 * 0.87) - 900.0
    abs_wh, _imp, exp = solve(*_flat(-1500.0), full)
    assert abs_wh == pytest.approx(1500.0 - burn_w, rel=1e-9)


def test_load_above_the_inverters_is_imported() -> None:
    abs_wh, imp, _exp = solve(*_flat(1200.0), _plant())
    assert abs_wh == pytest.approx(300.0, rel=1e-9)
    assert imp == pytest.approx(300.0, rel=1e-9)


def test_stored_energy_comes_back_through_both_efficiencies() -> None:
    # 1 h of 500 W surplus stores 475 Wh; 2 h of 500 W load get 475 × 0.87 Wh of it back.
    tau = np.full(3, HOUR)
    net = np.array([-500.0, 500.0, 500.0])
    abs_wh, imp, exp = solve(tau, net, _plant(e_start=0.0))
    assert exp == pytest.approx(0.0, abs=1e-6)
    assert imp == pytest.approx(1000.0 - 475.0 * 0.87, rel=1e-9)
    assert abs_wh == pytest.approx(imp, rel=1e-12)


def test_a_full_pack_from_the_plant_file_takes_no_charge() -> None:
    params = parse_plant("pack: {initial_soc_pct: 100.0, initial_soc_spread_pct: 0.0}\n")
    rp = relaxed_plant(params, seed=1, start_s=0.0)
    assert rp.energy_start_wh == pytest.approx(rp.energy_full_wh, rel=1e-12)
    b = lower_bound(Profile.constant(200.0, 1200.0, HOUR), params, 1, 0.0, HOUR)
    burn_w = 900.0 / (0.95 * 0.87) - 900.0  # see test_a_full_pack_takes_no_charge
    assert b.abs_grid_wh == pytest.approx(1000.0 - burn_w, rel=1e-6)


def test_the_default_plants_relaxation() -> None:
    rp = relaxed_plant(load_plant("default"), seed=1, start_s=0.0)
    # 9 modules of 12 cells of 24.46 Ah between 3.0 and 4.2 V; starting near half.
    assert 9000.0 < rp.energy_full_wh < 11000.0
    assert 0.4 < rp.energy_start_wh / rp.energy_full_wh < 0.6
    assert rp.charge_max_w == pytest.approx(3000.0 / 0.95)
    assert rp.inverters == ((900.0, 0.87),)


def test_block_means_are_exact_integrals() -> None:
    prof = Profile("ramp", (0.0, 10.0, 20.0), (0.0, 1000.0, 0.0), (0.0, 0.0, 0.0))
    tau, net = block_means(prof, load_plant("default"), 0.0, 20.0, 5.0)
    assert list(tau) == [5.0] * 4
    assert list(net) == pytest.approx([250.0, 750.0, 750.0, 250.0])


@settings(max_examples=25, deadline=None)
@given(
    net=st.lists(st.floats(-4000.0, 2500.0), min_size=4, max_size=40),
    block=st.integers(2, 7),
    start=st.floats(0.0, 1.0),
    full=st.floats(50.0, 2000.0),
)
def test_blocks_never_raise_the_bound(
    net: list[float], block: int, start: float, full: float
) -> None:
    # The block LP relaxes the fine one (|mean| <= mean|·|, constraints only at block ends).
    rows = np.asarray(net)
    plant = _plant(e_start=start * full, e_full=full)
    fine, _, _ = solve(np.full(len(rows), 60.0), rows, plant)
    n = len(rows)
    edges = [*range(0, n, block), n]
    tau = np.array([60.0 * (b - a) for a, b in itertools.pairwise(edges)])
    means = np.array([rows[a:b].mean() for a, b in itertools.pairwise(edges)])
    coarse, _, _ = solve(tau, means, plant)
    assert coarse <= fine + 1e-6 * max(1.0, fine)


def _metrics(name: str, abs_wh: float, violations: int = 0) -> Metrics:
    return Metrics(
        controller=name,
        import_wh=abs_wh,
        export_wh=0.0,
        abs_grid_wh=abs_wh,
        avoidable_wh=None,
        mean_abs_grid_w=0.0,
        settling_s=(),
        mean_settling_s=None,
        unsettled_steps=0,
        reversals_per_min=0.0,
        worst_reversals_per_min=0.0,
        oscillating_minutes=0,
        battery_throughput_wh=0.0,
        violations={"cell_over_voltage": violations},
    )


def test_a_run_below_the_bound_is_reported_with_case_controller_and_numbers() -> None:
    from gridzero_tools.bench.bound import BoundResult

    bound = BoundResult(100.0, 100.0, 0.0, 0.5, 10.0, 36, 0.1)
    case = cli.Case(
        "winter", "default", [], [_metrics("good", 100.2), _metrics("bad", 99.0, 2)], [], None
    )
    case.bound = bound
    lines = cli.below_bound(case)
    assert len(lines) == 1
    assert "winter / default" in lines[0]
    assert "bad" in lines[0]
    assert "99.00" in lines[0]
    assert "100.00" in lines[0]
    assert "2 limit violation" in lines[0]


def test_every_controller_is_at_or_above_the_bound_on_load_steps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = cli.main(["--duration", "240", "--start", "300", "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    case = out["cases"][0]
    bound = case["bound"]
    assert bound["abs_grid_wh"] > 0.0  # the stretch has load above the inverter
    names = {c["controller"] for c in case["controllers"]}
    assert {"gridzero", "housebatt", "opendtu", "oracle", "oracle-meter"} <= names
    for c in case["controllers"]:
        assert c["abs_grid_wh"] >= bound["abs_grid_wh"] - bound["tolerance_wh"], c["controller"]
        assert c["excess_over_bound_wh"] == pytest.approx(
            c["abs_grid_wh"] - bound["abs_grid_wh"], abs=0.02
        )


def test_no_bound_skips_it_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--duration", "20", "--controllers", "gridzero", "--no-bound", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "lower bound skipped (--no-bound)" in out
    assert "\nbound " not in out
