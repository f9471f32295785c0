"""Figures of merit computed from a run's trace."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gridzero_tools.bench.engine import RunTrace
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.profile import Profile

STEP_MIN_W = 300.0
SETTLE_BAND_W = 30.0
SETTLE_HOLD_S = 5.0
REVERSAL_MIN_W = 20.0


@dataclass(frozen=True, slots=True)
class LoadStep:
    """A jump of the net load of at least STEP_MIN_W within 2 s."""

    t_s: float
    delta_w: float
    window_s: float


def find_steps(
    profile: Profile, params: PlantParams, start_s: float, end_s: float
) -> list[LoadStep]:
    """Load steps in [start_s, end_s), each with the time until the next one (max 120 s)."""
    hold = params.house.interpolation == "hold"

    def net(t: float) -> float:
        load, pv = profile.at(t, hold=hold)
        return max(0.0, load * params.house.load_scale) - pv * params.house.pv_scale

    raw: list[tuple[float, float]] = []
    t = start_s
    prev = net(t)
    while t + 1.0 < end_s:
        nxt = net(t + 1.0)
        if abs(nxt - prev) >= STEP_MIN_W / 2:
            after = net(t + 2.0)
            delta = after - net(t)
            if abs(delta) >= STEP_MIN_W and (not raw or t - raw[-1][0] > 5.0):
                raw.append((t, delta))
        prev = nxt
        t += 1.0
    steps = []
    for i, (ts, delta) in enumerate(raw):
        nxt_t = raw[i + 1][0] if i + 1 < len(raw) else end_s
        steps.append(LoadStep(ts, delta, min(120.0, nxt_t - ts)))
    return steps


def settling_time_s(trace: RunTrace, step: LoadStep) -> float | None:
    """Time from the step until the grid stays within ±30 W of its final value for 5 s.

    The final value is the mean over the last 5 s of the window, so a step the plant cannot
    fully cover (inverter or bms limit) settles to its own floor. None: never settled.
    """
    tick = trace.tick_s
    i0 = round((step.t_s - trace.start_s) / tick)
    i1 = min(len(trace.grid_w), round((step.t_s + step.window_s - trace.start_s) / tick))
    hold = round(SETTLE_HOLD_S / tick)
    if i0 < 0 or i1 - i0 <= 2 * hold:
        return None
    tail = trace.grid_w[i1 - hold : i1]
    final = sum(tail) / len(tail)
    inside_since: int | None = None
    for i in range(i0, i1):
        if abs(trace.grid_w[i] - final) <= SETTLE_BAND_W:
            if inside_since is None:
                inside_since = i
            if i - inside_since >= hold:
                return (inside_since - i0) * tick
        else:
            inside_since = None
    return None


OSCILLATION_SWING_W = 50.0
OSCILLATION_PER_MIN = 6
EXPLAIN_S = 3.0


def net_load_series(
    profile: Profile, params: PlantParams, start_s: float, tick_s: float, n: int
) -> list[float]:
    """True net load (load − PV) at each trace sample."""
    hold = params.house.interpolation == "hold"
    out = []
    for i in range(n):
        load, pv = profile.at(start_s + (i + 1) * tick_s, hold=hold)
        out.append(max(0.0, load * params.house.load_scale) - pv * params.house.pv_scale)
    return out


def oscillating_minutes(trace: RunTrace, net_w: Sequence[float]) -> int:
    """Minutes with >= 6 reversals of the battery's delivered power (swings >= 50 W) that the
    load does not explain: a reversal counts only if the net load did not itself move >= 25 W
    the same way during the 3 s before it.

    Counted on the delivered power, not on the command: a controller may shape its commands
    (gridzero's overdrive) without the plant swinging, and a swing of the plant is what wears
    the devices and shows on the meter."""
    cmd = trace.battery_w
    tick = trace.tick_s
    per_min = round(60.0 / tick)
    back = round(EXPLAIN_S / tick)
    count = 0
    for start in range(0, len(cmd) - per_min + 1, per_min):
        last = cmd[start]
        direction = 0
        n = 0
        for i in range(start + 1, start + per_min):
            delta = cmd[i] - last
            if abs(delta) < OSCILLATION_SWING_W:
                continue
            d = 1 if delta > 0 else -1
            if direction and d != direction:
                window = net_w[max(0, i - back) : i + 1]
                moved = (max(window) - window[0]) if d > 0 else (window[0] - min(window))
                if moved < OSCILLATION_SWING_W / 2:
                    n += 1
            direction = d
            last = cmd[i]
        count += n >= OSCILLATION_PER_MIN
    return count


def reversals(trace: RunTrace) -> tuple[float, float]:
    """(mean reversals per minute, worst minute) of the battery's delivered power."""
    cmd = trace.battery_w
    tick = trace.tick_s
    last = cmd[0] if cmd else 0.0
    direction = 0
    times: list[float] = []
    for i in range(1, len(cmd)):
        delta = cmd[i] - last
        if abs(delta) <= REVERSAL_MIN_W:
            continue
        d = 1 if delta > 0 else -1
        if direction and d != direction:
            times.append(i * tick)
        direction = d
        last = cmd[i]
    minutes = max(trace.duration_s / 60.0, 1e-9)
    worst = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 60.0:
            j += 1
        worst = max(worst, i - j + 1)
    return len(times) / minutes, float(worst)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Per controller, per profile and plant."""

    controller: str
    import_wh: float
    export_wh: float
    abs_grid_wh: float
    avoidable_wh: float | None
    mean_abs_grid_w: float
    settling_s: tuple[float | None, ...]
    mean_settling_s: float | None
    unsettled_steps: int
    reversals_per_min: float
    worst_reversals_per_min: float
    oscillating_minutes: int
    battery_throughput_wh: float
    violations: dict[str, int]
    charger_starts: int = 0
    # The pack's state of charge when the run ends: a controller that imports less may only
    # have emptied the pack further by then (the energy left is not counted in ∫|grid|).
    end_soc_pct: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly."""
        return {
            "controller": self.controller,
            "import_wh": round(self.import_wh, 2),
            "export_wh": round(self.export_wh, 2),
            "abs_grid_wh": round(self.abs_grid_wh, 2),
            "avoidable_wh": None if self.avoidable_wh is None else round(self.avoidable_wh, 2),
            "mean_abs_grid_w": round(self.mean_abs_grid_w, 2),
            "mean_settling_s": None
            if self.mean_settling_s is None
            else round(self.mean_settling_s, 2),
            "settling_s": [None if s is None else round(s, 2) for s in self.settling_s],
            "unsettled_steps": self.unsettled_steps,
            "reversals_per_min": round(self.reversals_per_min, 3),
            "worst_reversals_per_min": self.worst_reversals_per_min,
            "oscillating_minutes": self.oscillating_minutes,
            "battery_throughput_wh": round(self.battery_throughput_wh, 2),
            "violations": self.violations,
            "violations_total": sum(self.violations.values()),
            "charger_starts": self.charger_starts,
            "end_soc_pct": None if self.end_soc_pct is None else round(self.end_soc_pct, 2),
        }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def metrics_for(
    trace: RunTrace, steps: Sequence[LoadStep], oracle_abs_wh: float | None, net_w: Sequence[float]
) -> Metrics:
    """All figures for one run."""
    settling = tuple(settling_time_s(trace, s) for s in steps)
    settled = [s for s in settling if s is not None]
    rev, worst = reversals(trace)
    hours = trace.duration_s / 3600.0
    return Metrics(
        controller=trace.controller,
        import_wh=trace.import_wh,
        export_wh=trace.export_wh,
        abs_grid_wh=trace.abs_grid_wh,
        avoidable_wh=None if oracle_abs_wh is None else trace.abs_grid_wh - oracle_abs_wh,
        mean_abs_grid_w=trace.abs_grid_wh / hours if hours > 0 else math.nan,
        settling_s=settling,
        mean_settling_s=_mean(settled),
        unsettled_steps=len(settling) - len(settled),
        reversals_per_min=rev,
        worst_reversals_per_min=worst,
        oscillating_minutes=oscillating_minutes(trace, net_w),
        battery_throughput_wh=trace.battery_throughput_wh,
        violations=trace.violations.as_dict(),
        charger_starts=trace.charger_starts,
        end_soc_pct=trace.soc_pct[-1] if trace.soc_pct else None,
    )
