"""The end of a charge: the bms's limit tapers below the charger's minimum current. The
charger service holds the voltage and the current tapers (one start); a service that switched
off instead would have the rectifier follow the limit's swing on and off (issue 18: 195
rectifier starts in 6 minutes of one household)."""

from __future__ import annotations

import pytest

import gridzero_controller.dispatch as dispatch
import gridzero_tools.bench.engine as engine
from gridzero_charger.domain import Taper
from gridzero_tools.bench.cli import bench_settings, make_controller
from gridzero_tools.bench.engine import RunTrace, run
from gridzero_tools.bench.metrics import metrics_for
from gridzero_tools.sim.params import parse_plant
from gridzero_tools.sim.profile import Profile

# The default plant at 89 % reaches the taper within minutes of a steady 1 kW surplus.
PARAMS = parse_plant("pack: {initial_soc_pct: 89.0}\n")
SURPLUS = Profile.constant(200.0, 1200.0, 1200.0)
SETTINGS = bench_settings(PARAMS)


def _run(name: str) -> RunTrace:
    controller = make_controller(name, PARAMS, SURPLUS, SETTINGS)
    return run(controller, PARAMS, SURPLUS)


def _no_taper(*_args: object) -> Taper | None:
    return None


def _last_minute_w(trace: RunTrace) -> float:
    n = round(60.0 / trace.tick_s)
    return sum(trace.battery_w[-n:]) / n


def test_gridzero_tapers_the_end_of_charge_on_one_start() -> None:
    trace = _run("gridzero")
    assert trace.charger_starts == 1
    assert trace.violations.total == 0
    # still charging at the end, below the charger's minimum power: the current tapers
    min_w = SETTINGS.charger_min_current_a * 48.0 / SETTINGS.charger_efficiency
    assert -0.5 * min_w < _last_minute_w(trace) < -10.0


def test_without_the_taper_gridzero_ends_the_charge_and_housebatt_toggles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A charger service that switches off below the minimum: gridzero's dispatcher ends the
    charge once the charger is measured off and restarts only with the margin; housebatt
    restarts it whenever the limit is back above the minimum (the bench counts the starts)."""
    tapered = _run("gridzero")
    monkeypatch.setattr(engine, "next_taper", _no_taper)
    ended = _run("gridzero")
    assert ended.charger_starts <= 2
    assert _last_minute_w(ended) == pytest.approx(0.0, abs=1.0)
    # the taper put more into the pack and exported less
    assert tapered.soc_pct[-1] > ended.soc_pct[-1] + 0.1
    assert tapered.abs_grid_wh < ended.abs_grid_wh - 10.0
    assert _run("housebatt").charger_starts >= 20


def test_without_the_taper_and_the_restart_margin_gridzero_toggles_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "next_taper", _no_taper)
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
