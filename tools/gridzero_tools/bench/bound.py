"""A true lower bound of ∫|grid| dt: a linear programme over the whole profile (HiGHS).

No controller, however clever and however well it knows the future, can bring the plant's
∫|grid| dt below the optimum of a relaxation of the plant: a model that can do everything the
plant can, and more. The relaxed plant (per block b of the profile, length τ_b):

    g_b = N̄_b + standby + C_b − Σ_k D_kb          grid (+ = import), N̄_b the mean net load
    0 ≤ C_b ≤ C_max,  0 ≤ D_kb ≤ D_k,max          charger AC input, inverter k's AC output
    E_b = E_b−1 + (η_c·C_b − Σ_k D_kb/η_k)·τ_b    pack energy, at the cells' open-circuit voltage
    0 ≤ E_b ≤ E_full,  E_0 = the run's start
    minimise Σ_b |g_b|·τ_b   (|g| = g⁺ + g⁻ with g = g⁺ − g⁻, g⁺, g⁻ ≥ 0)

Why each line is a relaxation of tools/gridzero_tools/sim (so the optimum is a lower bound):

- Conversion. The plant's grid is load − pv − Σ inverter AC + charger AC (plant.py). The
  rectifier draws terminal_v·I/η_c + standby (rectifier.py `ac_input_w`) with terminal_v ≥
  the pack's terminal voltage v (cable drop), so the pack receives v·I ≤ η_c·(AC − standby).
  An inverter draws AC/η_k from the DC bus (inverters.py). The energy at the cells'
  open-circuit voltage, E = Σ_cells capacity·∫ocv dsoc, changes by v·I − Σ R·i² (every string's
  resistance loss is ≥ 0) minus self-discharge and bleed (≥ 0): dE/dt ≤ v·I. The LP keeps
  neither loss, so it stores at least as much as the plant for the same AC.
- Power limits. The rectifier's DC output is at most max_power_w (its current limit is
  max_power_w / set-point voltage, and the terminal voltage stays at or below the set-point)
  and at most max_fraction·amps_per_fraction amps at voltage_max_v; an inverter's output
  never exceeds its max_power_w (its lag approaches the demand from below). Nothing else:
  ramps, walk-in, lag, dead time, frame timeouts, the DC start delay, the charger's minimum
  current (the LP may charge with 1 W), the interlock (it may charge and discharge at once),
  the meter (it knows the load exactly and ahead) and the bms's current limits are all
  dropped; each can only forbid what the LP allows.
- Window. Every cell stays between 0 and 100 % (3.00..4.20 V open-circuit, gridzero.ocv):
  beyond them the bench counts a cell under- or over-voltage (engine.py `BmsRules`), so a run
  without cell-voltage violations keeps E in [0, E_full] (0 ≤ soc ≤ 1 for every cell, ocv > 0).
  The start E_0 is computed from the very cells the bench's plant starts with (same seed).
- Blocks. Any schedule of the plant gives, per block, mean powers that satisfy the block
  constraints (the limits are boxes, the energy update is linear, the window is only checked
  at block ends, which the fine schedule meets too), and ∫_b |g| dt ≥ |∫_b g dt| = τ_b·|ḡ_b|
  (the triangle inequality: the mean of |·| is at least the |·| of the mean). So the block
  LP's optimum is at most the fine LP's, which is at most the plant's: longer blocks are
  faster and still a bound, only a weaker one (tests/bench/test_bench_bound.py checks it).

The plant integrates the grid over its sub-steps (≤ sim.max_step_s) at their end, not exactly;
that sum differs from the exact integral by at most max_step_s × (total variation of the net
load). The LP's optimum moves by at most as much as the block means do (it is 1-Lipschitz in
N̄ under the τ-weighted L1 norm), so `tolerance_wh` is that figure: a run below
bound − tolerance is impossible for the model, and the bench fails on it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridzero.errors import UsageError
from gridzero_tools.sim.pack import cell_ocv_v
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile

MISSING = (
    "the bench's lower bound needs HiGHS (highspy), an optional extra not in the runtime "
    "install: run the bench with ./run.sh bench, or add it with ./run.sh install plot "
    "(installs the plot and bound extras; pip: pip install -c constraints.txt -e "
    "'tools[bound]'), or skip the bound with --no-bound"
)
# 10 s: a 24 h profile solves in ~6 s (1 s blocks: over 90 s; 60 s: 0.5 s) and the bound on
# the bundled profiles moves by under 0.2 % against 1 s blocks.
DEFAULT_BLOCK_S = 10.0
_OCV_STEPS = 1000


@dataclass(frozen=True, slots=True)
class RelaxedPlant:
    """What the LP knows of the plant (AC watts, Wh, efficiencies as fractions)."""

    charge_max_w: float
    charge_efficiency: float
    inverters: tuple[tuple[float, float], ...]  # (max AC output W, efficiency) per unit
    standby_w: float
    energy_start_wh: float
    energy_full_wh: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.energy_start_wh <= self.energy_full_wh:
            raise ValueError(
                f"relaxed plant: energy_start_wh = {self.energy_start_wh} outside "
                f"0..{self.energy_full_wh} Wh"
            )


@dataclass(frozen=True, slots=True)
class BoundResult:
    """The LP's optimum over a run window."""

    abs_grid_wh: float
    import_wh: float
    export_wh: float
    tolerance_wh: float
    block_s: float
    blocks: int
    solve_s: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly."""
        return {
            "abs_grid_wh": round(self.abs_grid_wh, 2),
            "import_wh": round(self.import_wh, 2),
            "export_wh": round(self.export_wh, 2),
            "tolerance_wh": round(self.tolerance_wh, 3),
            "block_s": self.block_s,
            "blocks": self.blocks,
            "solve_s": round(self.solve_s, 3),
        }


def require_highspy(option: str = "the bound") -> None:
    """Raise a UsageError naming the fix when highspy is not installed."""
    try:
        import highspy  # noqa: F401, PLC0415 - optional: only the bound needs it
    except ImportError as exc:
        raise UsageError(f"{option}: {MISSING}") from exc


def _cell_energy_wh_per_ah(soc: float) -> float:
    """∫_0^soc ocv dsoc (V), the open-circuit energy per Ah of a cell at ``soc`` (0..1)."""
    soc = min(1.0, max(0.0, soc))
    n = max(1, math.ceil(soc * _OCV_STEPS))
    h = soc / n
    # ocv is piecewise linear on a 1 % grid; the trapezoid rule on a finer grid is exact up to
    # the kinks, which fall on grid points (1000 is a multiple of 100) when soc is on one.
    return sum(0.5 * h * (cell_ocv_v(i * h) + cell_ocv_v((i + 1) * h)) for i in range(n))


def relaxed_plant(params: PlantParams, seed: int, start_s: float) -> RelaxedPlant:
    """The relaxation of ``params`` with the cells the bench's plant starts with (``seed``)."""
    plant = Plant(params, Profile.constant(0.0, 0.0, 1.0), seed=seed, start_s=start_s)
    pack = plant.pack
    full = _cell_energy_wh_per_ah(1.0)
    e_full = 0.0
    e_start = 0.0
    for caps, socs in zip(pack.cap_as, pack.soc, strict=True):
        for cap_as, soc in zip(caps, socs, strict=True):
            cap_ah = cap_as / 3600.0
            e_full += cap_ah * full
            e_start += cap_ah * _cell_energy_wh_per_ah(soc)
    ch = params.charger
    dc_max_w = min(ch.max_power_w, ch.max_fraction * ch.amps_per_fraction * ch.voltage_max_v)
    return RelaxedPlant(
        charge_max_w=dc_max_w / ch.efficiency,
        charge_efficiency=ch.efficiency,
        inverters=tuple((p.max_power_w, p.efficiency) for p in params.inverters),
        standby_w=ch.standby_w,
        energy_start_wh=min(e_start, e_full),
        energy_full_wh=e_full,
    )


def _net_rows(profile: Profile, params: PlantParams) -> tuple[np.ndarray, np.ndarray]:
    """Row times and net load (load − PV, scaled as the plant does) at the rows."""
    t = np.asarray(profile.t_s, dtype=float)
    load = np.maximum(0.0, np.asarray(profile.load_w, dtype=float) * params.house.load_scale)
    net = load - np.asarray(profile.pv_w, dtype=float) * params.house.pv_scale
    return t, net


def _cumulative_ws(t: np.ndarray, net: np.ndarray, at: np.ndarray, hold: bool) -> np.ndarray:
    """Exact ∫ net dt (W·s) from t[0] to each time in ``at`` (the profile holds its ends)."""
    seg = np.diff(t)
    area = seg * net[:-1] if hold else seg * 0.5 * (net[:-1] + net[1:])
    cum = np.concatenate(([0.0], np.cumsum(area)))
    x = np.clip(at, t[0], t[-1])
    j = np.clip(np.searchsorted(t, x, side="right") - 1, 0, max(0, len(t) - 2))
    out = np.zeros_like(x)
    if len(t) > 1:
        d = x - t[j]
        if hold:
            part = net[j] * d
        else:
            slope = (net[j + 1] - net[j]) / seg[j]
            part = net[j] * d + 0.5 * slope * d * d
        out = cum[j] + part
    # Outside the rows the profile holds its first / last value.
    out = out + np.minimum(0.0, at - t[0]) * net[0] + np.maximum(0.0, at - t[-1]) * net[-1]
    return np.asarray(out)


def block_means(
    profile: Profile, params: PlantParams, start_s: float, end_s: float, block_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(block lengths s, mean net load W) over [start_s, end_s); the last block may be short."""
    if not end_s > start_s:
        raise ValueError(f"bound: end_s = {end_s} must be after start_s = {start_s}")
    if not block_s > 0:
        raise ValueError(f"bound: block_s = {block_s} must be > 0")
    n = math.ceil((end_s - start_s) / block_s - 1e-9)
    edges = np.minimum(start_s + block_s * np.arange(n + 1), end_s)
    t, net = _net_rows(profile, params)
    cum = _cumulative_ws(t, net, edges, params.house.interpolation == "hold")
    tau = np.diff(edges)
    return tau, np.diff(cum) / tau


def total_variation_w(profile: Profile, params: PlantParams, start_s: float, end_s: float) -> float:
    """Total variation of the net load over the rows that touch [start_s, end_s] (W)."""
    t, net = _net_rows(profile, params)
    i0 = max(0, int(np.searchsorted(t, start_s, side="right")) - 1)
    i1 = min(len(t), int(np.searchsorted(t, end_s, side="left")) + 1)
    return float(np.abs(np.diff(net[i0:i1])).sum())


def _new_highs() -> Any:
    """A silent solver. HiGHS prints its banner on the process's stdout (file descriptor 1,
    below Python) when the first solver is made; that would corrupt ``--json``, so the
    descriptor points at stderr for that moment."""
    import highspy  # noqa: PLC0415 - optional extra

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        make: Any = highspy.Highs  # highspy ships no annotations for the constructor
        h = make()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


@dataclass(frozen=True, slots=True)
class _Model:
    """The LP in HiGHS's column-wise form."""

    cost: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rhs: np.ndarray
    starts: np.ndarray
    index: np.ndarray
    value: np.ndarray


def _model(tau_s: np.ndarray, net_w: np.ndarray, plant: RelaxedPlant) -> _Model:
    """Variables per block b: C, D_1..D_k, g⁺, g⁻, E (in that order); rows: grid, energy."""
    n = len(tau_s)
    k = len(plant.inverters)
    # Variable layout per block b: C, D_1..D_k, g⁺, g⁻, E  (width w).
    w = k + 4
    idx = np.arange(n) * w
    inf = math.inf
    lower = np.zeros(n * w)
    upper = np.empty(n * w)
    cost = np.zeros(n * w)
    upper[idx] = plant.charge_max_w
    for u, (max_w, _eff) in enumerate(plant.inverters):
        upper[idx + 1 + u] = max_w
    upper[idx + k + 1] = inf
    upper[idx + k + 2] = inf
    upper[idx + k + 3] = plant.energy_full_wh
    hours = tau_s / 3600.0
    cost[idx + k + 1] = hours
    cost[idx + k + 2] = hours
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def put(row: np.ndarray, col: np.ndarray, val: np.ndarray | float) -> None:
        rows.append(row)
        cols.append(col)
        vals.append(np.broadcast_to(np.asarray(val, dtype=float), row.shape))

    b = np.arange(n)
    # Grid rows (0..n-1): C − ΣD − g⁺ + g⁻ = −(N̄ + standby).
    put(b, idx, 1.0)
    for u in range(k):
        put(b, idx + 1 + u, -1.0)
    put(b, idx + k + 1, -1.0)
    put(b, idx + k + 2, 1.0)
    grid_rhs = -(net_w + plant.standby_w)
    # Energy rows (n..2n-1): E_b − E_b−1 − η_c·C·h + Σ D_k·h/η_k = 0 (E_-1 = E_0 on the rhs).
    put(n + b, idx + k + 3, 1.0)
    put(n + b[1:], idx[1:] - w + k + 3, -1.0)
    put(n + b, idx, -plant.charge_efficiency * hours)
    for u, (_max_w, eff) in enumerate(plant.inverters):
        put(n + b, idx + 1 + u, hours / eff)
    energy_rhs = np.zeros(n)
    energy_rhs[0] = plant.energy_start_wh
    rhs = np.concatenate((grid_rhs, energy_rhs))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals)
    order = np.lexsort((r, c))
    r, c, v = r[order], c[order], v[order]
    starts = np.searchsorted(c, np.arange(n * w + 1))
    return _Model(cost, lower, upper, rhs, starts, r, v)


def solve(tau_s: np.ndarray, net_w: np.ndarray, plant: RelaxedPlant) -> tuple[float, float, float]:
    """The LP of the module docstring: (∫|grid|, import, export) in Wh."""
    import highspy  # noqa: PLC0415 - optional extra

    m = _model(tau_s, net_w, plant)
    n = len(tau_s)
    k = len(plant.inverters)
    w = k + 4
    idx = np.arange(n) * w
    hours = tau_s / 3600.0
    lp = highspy.HighsLp()
    lp.num_col_ = n * w
    lp.num_row_ = 2 * n
    lp.col_cost_ = m.cost
    lp.col_lower_ = m.lower
    lp.col_upper_ = np.where(np.isinf(m.upper), highspy.kHighsInf, m.upper)
    lp.row_lower_ = m.rhs
    lp.row_upper_ = m.rhs
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = m.starts.astype(np.int32)
    lp.a_matrix_.index_ = m.index.astype(np.int32)
    lp.a_matrix_.value_ = m.value
    h = _new_highs()
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"bound: HiGHS did not solve the LP: {h.modelStatusToString(status)}")
    x = np.asarray(h.getSolution().col_value)
    imp = float(np.dot(x[idx + k + 1], hours))
    exp = float(np.dot(x[idx + k + 2], hours))
    # The LP's own objective value, as a dual bound would be: solver tolerances (1e-7 relative)
    # are far below the tolerance the plant's sub-steps need.
    return imp + exp, imp, exp


def lower_bound(
    profile: Profile,
    params: PlantParams,
    seed: int,
    start_s: float,
    end_s: float,
    block_s: float = DEFAULT_BLOCK_S,
) -> BoundResult:
    """The bound on ∫|grid| over [start_s, end_s] for any controller on ``params``."""
    began = time.perf_counter()
    tau, net = block_means(profile, params, start_s, end_s, block_s)
    plant = relaxed_plant(params, seed, start_s)
    abs_wh, imp, exp = solve(tau, net, plant)
    tolerance = params.sim.max_step_s * total_variation_w(profile, params, start_s, end_s) / 3600.0
    return BoundResult(
        abs_grid_wh=abs_wh,
        import_wh=imp,
        export_wh=exp,
        tolerance_wh=tolerance,
        block_s=block_s,
        blocks=len(tau),
        solve_s=time.perf_counter() - began,
    )
