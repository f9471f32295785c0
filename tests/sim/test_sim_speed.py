"""A day-long closed-loop run: prints the plant's speed (never asserts time)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gridzero_tools.sim.speed import run


@pytest.mark.slow
def test_day_long_run_prints_speed(figures: Callable[[str], None]) -> None:
    result = run("sunny-day", "default", step_s=0.1)
    figures(
        f"sim speed: {result.steps} steps of 0.1 s in {result.wall_s:.1f} s = "
        f"{result.steps_per_s:,.0f} steps/s ({result.simulated_s / result.wall_s:,.0f}x real time)"
    )
    assert result.simulated_s == pytest.approx(86399.0)
    assert 0.0 <= result.soc_end_pct <= 100.0
    assert result.export_wh > 0.0
