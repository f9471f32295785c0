"""The end of a charge: the bms's limit tapers to the charger's minimum current and swings
around it with the top cell's IR rise. The charger must not follow that swing on and off
(issue 18: 195 rectifier starts in 6 minutes of one household)."""

from __future__ import annotations

import pytest

import gridzero_controller.dispatch as dispatch
from gridzero_tools.bench.cli import bench_settings, make_controller
from gridzero_tools.bench.engine import RunTrace, run
from gridzero_tools.bench.metrics import metrics_for
from gridzero_tools.sim.params import parse_plant
from gridzero_tools.sim.profile import Profile

# The default plant at 89 % reaches the taper within minutes of a steady 1 kW surplus.
PARAMS = parse_plant("pack: {initial_soc_pct: 89.0}\n")
SURPLUS = Profile.constant(200.0, 1200.0, 1200.0)


def _run(name: str) -> RunTrace:
    controller = make_controller(name, PARAMS, SURPLUS, bench_settings(PARAMS))
    return run(controller, PARAMS, SURPLUS)


def test_gridzero_stops_the_charger_once_at_the_end_of_charge() -> None:
    trace = _run("gridzero")
    assert trace.charger_starts == 1
    assert trace.violations.total == 0


def test_the_bench_counts_the_starts_of_a_controller_that_toggles() -> None:
    # housebatt restarts the charger whenever the limit is back above the minimum.
    assert _run("housebatt").charger_starts >= 20


def test_without_the_restart_margin_gridzero_toggles_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "CHARGER_RESTART_MARGIN_A", 0.0)
    assert _run("gridzero").charger_starts >= 20


def test_the_report_carries_the_starts_and_the_charge_left() -> None:
    trace = _run("housebatt")
    doc = metrics_for(trace, (), None, [0.0] * len(trace.grid_w)).as_dict()
    assert doc["charger_starts"] == trace.charger_starts
    # charging all along from 89 %: the run ends fuller than it began
    assert doc["end_soc_pct"] == pytest.approx(trace.soc_pct[-1], abs=0.01)
    assert isinstance(doc["end_soc_pct"], float)
    assert doc["end_soc_pct"] > 89.0
