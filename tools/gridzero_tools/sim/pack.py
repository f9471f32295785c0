"""The battery pack model: modules of NMC cells in parallel strings (pure).

Each cell has its own capacity, internal resistance (rising in the cold),
self-discharge and state of charge; each module one lumped temperature. A
string is ``modules_per_string`` modules in series; strings are in parallel.

Speed: the pack is a Thevenin source (``e_th``, ``r_th``) whose string
voltages are held between cell updates (every ``cell_update_s``). The fast
plant step only accumulates ∫V dt, ∫V² dt and ∫dt; since each string's current
is (V - E_k)/R_k, those three sums give every string's exact charge and I²R
heat over the interval, so cells are touched only once per update.
"""

from __future__ import annotations

import math
import random

from gridzero.ocv import ocv_from_soc
from gridzero_tools.sim.params import PackParams, ThermalParams

# Resampled OCV curve: uniform 1 % steps, extrapolated past 0 % and 100 % with the
# table's end slopes so over-charge and over-discharge keep moving the voltage.
_OCV_STEPS = 100
_OCV = tuple(ocv_from_soc(i / _OCV_STEPS) for i in range(_OCV_STEPS + 1))
_OCV_SLOPE = tuple(_OCV[i + 1] - _OCV[i] for i in range(_OCV_STEPS))
_SLOPE_LOW = (_OCV[1] - _OCV[0]) * _OCV_STEPS
_SLOPE_HIGH = (_OCV[-1] - _OCV[-2]) * _OCV_STEPS
CELL_V_FLOOR = 1.5
CELL_V_CEILING = 5.0
SOC_LIMIT_LOW = -0.25
SOC_LIMIT_HIGH = 1.25


def cell_ocv_v(soc: float) -> float:
    """Open-circuit voltage of a cell at ``soc`` (fraction; extrapolated beyond 0..1)."""
    if soc <= 0.0:
        return max(CELL_V_FLOOR, _OCV[0] + soc * _SLOPE_LOW)
    if soc >= 1.0:
        return min(CELL_V_CEILING, _OCV[-1] + (soc - 1.0) * _SLOPE_HIGH)
    x = soc * _OCV_STEPS
    i = int(x)
    return _OCV[i] + (x - i) * (_OCV[i + 1] - _OCV[i])


def _spread(rng: random.Random, nominal: float, pct: float, floor: float) -> float:
    """nominal x (1 + N(0, pct %)), the draw clipped at 3 sigma, at least nominal x floor."""
    z = max(-3.0, min(3.0, rng.gauss(0.0, 1.0)))
    return nominal * max(floor, 1.0 + z * pct / 100.0)


class Pack:
    """Cell states, module temperatures and the pack's Thevenin equivalent."""

    def __init__(
        self, params: PackParams, thermal: ThermalParams, rng: random.Random, now_s: float
    ):
        self.params = params
        self.thermal = thermal
        n_mod, n_cell = params.modules, params.cells_per_module
        cap_as = params.cell_capacity_ah * 3600.0
        r_ohm = params.cell_resistance_mohm / 1000.0
        self.cap_as = [
            [_spread(rng, cap_as, params.capacity_spread_pct, 0.5) for _ in range(n_cell)]
            for _ in range(n_mod)
        ]
        self.r25_ohm = [
            [_spread(rng, r_ohm, params.resistance_spread_pct, 0.2) for _ in range(n_cell)]
            for _ in range(n_mod)
        ]
        sd_scale = cap_as / 100.0 / 86400.0
        self.self_discharge_a = [
            [
                sd_scale
                * max(
                    0.0,
                    rng.gauss(
                        params.self_discharge_pct_per_day, params.self_discharge_spread_pct_per_day
                    ),
                )
                for _ in range(n_cell)
            ]
            for _ in range(n_mod)
        ]
        soc0 = params.initial_soc_pct / 100.0
        spread = params.initial_soc_spread_pct / 100.0
        self.soc = [
            [
                min(1.0, max(0.0, soc0 + spread * max(-3.0, min(3.0, rng.gauss(0.0, 1.0)))))
                for _ in range(n_cell)
            ]
            for _ in range(n_mod)
        ]
        self.leak_a = [[0.0] * n_cell for _ in range(n_mod)]
        # balancing: bleed on for now in [bleed_from, bleed_until)
        self.bleed_from = [[math.inf] * n_cell for _ in range(n_mod)]
        self.bleed_until = [[-math.inf] * n_cell for _ in range(n_mod)]
        t0 = thermal.initial_c if thermal.initial_c is not None else thermal.ambient_c
        self.temperature_c = [t0] * n_mod
        self.r25_sum_ohm = [sum(row) for row in self.r25_ohm]
        self.r_factor = [1.0] * n_mod
        self._capacity_as = sum(sum(row) for row in self.cap_as)
        self.strings = [
            list(range(k * params.modules_per_string, (k + 1) * params.modules_per_string))
            for k in range(params.strings)
        ]
        self.string_of = [m // params.modules_per_string for m in range(n_mod)]
        self.e_string_v = [0.0] * params.strings
        self.r_string_ohm = [0.0] * params.strings
        self.e_th_v = 0.0
        self.r_th_ohm = 0.0
        self.soc_pct = 0.0
        self.updated_s = now_s
        self._acc_t = 0.0
        self._acc_v = 0.0
        self._acc_v2 = 0.0
        self._refresh_thevenin()

    # --- fast path -----------------------------------------------------------------------

    def accumulate(self, voltage_v: float, dt_s: float) -> None:
        """Record that the pack terminals sat at ``voltage_v`` for ``dt_s``."""
        self._acc_t += dt_s
        self._acc_v += voltage_v * dt_s
        self._acc_v2 += voltage_v * voltage_v * dt_s

    def voltage_v(self, current_a: float) -> float:
        """Terminal voltage for a pack current (+ = charging)."""
        return self.e_th_v + current_a * self.r_th_ohm

    # --- cell update ---------------------------------------------------------------------

    def update(self, now_s: float) -> None:  # noqa: PLR0915 (one fused hot loop, for speed)
        """Move the charge and heat accumulated since the last update into the cells.

        One fused pass (this is the plant's hot loop): charge, bleed and heat per
        cell, module temperature and resistance, then the new string voltages.
        """
        t0, dt = self.updated_s, now_s - self.updated_s
        if dt <= 0.0:
            return
        sum_v, sum_v2 = self._acc_v, self._acc_v2
        acc_t = self._acc_t
        self._acc_t = self._acc_v = self._acc_v2 = 0.0
        self.updated_s = now_s
        bleed_a = self.params.balance_bleed_a
        alpha = self.params.resistance_temp_coeff_per_c
        r_extra = self.params.string_resistance_mohm / 1000.0
        amb = self.thermal.ambient_c
        r_amb = self.thermal.module_to_ambient_c_per_w
        decay = math.exp(-dt / (self.thermal.module_heat_capacity_j_per_c * r_amb))
        ocv, slope = _OCV, _OCV_SLOPE
        temps, factors, r25_sums = self.temperature_c, self.r_factor, self.r25_sum_ohm
        conductance = weighted = charge = 0.0
        for k, modules in enumerate(self.strings):
            e_k, r_k = self.e_string_v[k], self.r_string_ohm[k]
            charge_as = (sum_v - e_k * acc_t) / r_k
            i2_s = max(0.0, (sum_v2 - 2.0 * e_k * sum_v + e_k * e_k * acc_t) / (r_k * r_k))
            e_new = 0.0
            r_new = r_extra
            for m in modules:
                socs, caps = self.soc[m], self.cap_as[m]
                sds, leaks = self.self_discharge_a[m], self.leak_a[m]
                b_from, b_until = self.bleed_from[m], self.bleed_until[m]
                heat_j = i2_s * factors[m] * r25_sums[m]
                for c in range(len(socs)):
                    dq = charge_as - (sds[c] + leaks[c]) * dt
                    if b_until[c] > t0:
                        on_s = min(now_s, b_until[c]) - max(t0, b_from[c])
                        if on_s > 0.0:
                            dq -= bleed_a * on_s
                            heat_j += bleed_a * on_s * cell_ocv_v(socs[c])
                    soc = socs[c] + dq / caps[c]
                    if 0.0 < soc < 1.0:
                        x = soc * _OCV_STEPS
                        i = int(x)
                        e_new += ocv[i] + (x - i) * slope[i]
                    else:
                        soc = min(SOC_LIMIT_HIGH, max(SOC_LIMIT_LOW, soc))
                        e_new += cell_ocv_v(soc)
                    socs[c] = soc
                    charge += soc * caps[c]
                t_inf = amb + heat_j / dt * r_amb
                temp = t_inf + (temps[m] - t_inf) * decay
                temps[m] = temp
                factor = max(0.5, 1.0 + alpha * (25.0 - temp))
                factors[m] = factor
                r_new += factor * r25_sums[m]
            self.e_string_v[k] = e_new
            self.r_string_ohm[k] = r_new
            conductance += 1.0 / r_new
            weighted += e_new / r_new
        self.r_th_ohm = 1.0 / conductance
        self.e_th_v = weighted * self.r_th_ohm
        self.soc_pct = 100.0 * charge / self._capacity_as

    def _refresh_thevenin(self) -> None:
        """Recompute resistances and string voltages from scratch (start-up)."""
        alpha = self.params.resistance_temp_coeff_per_c
        r_extra = self.params.string_resistance_mohm / 1000.0
        conductance = weighted = charge = 0.0
        for k, modules in enumerate(self.strings):
            e_k = 0.0
            r_k = r_extra
            for m in modules:
                factor = max(0.5, 1.0 + alpha * (25.0 - self.temperature_c[m]))
                self.r_factor[m] = factor
                r_k += factor * self.r25_sum_ohm[m]
                for soc, cap in zip(self.soc[m], self.cap_as[m], strict=True):
                    e_k += cell_ocv_v(soc)
                    charge += soc * cap
            self.e_string_v[k] = e_k
            self.r_string_ohm[k] = r_k
            conductance += 1.0 / r_k
            weighted += e_k / r_k
        self.r_th_ohm = 1.0 / conductance
        self.e_th_v = weighted * self.r_th_ohm
        self.soc_pct = 100.0 * charge / self._capacity_as

    @property
    def r_ohm(self) -> list[list[float]]:
        """Every cell's internal resistance at its module's temperature."""
        return [[r * f for r in row] for row, f in zip(self.r25_ohm, self.r_factor, strict=True)]

    # --- views ---------------------------------------------------------------------------

    def string_current_a(self, k: int, voltage_v: float) -> float:
        """Current into string ``k`` at pack voltage ``voltage_v``."""
        return (voltage_v - self.e_string_v[k]) / self.r_string_ohm[k]

    def bleeding(self, m: int, c: int, now_s: float) -> bool:
        """True if cell ``c`` of module ``m`` is bleeding at ``now_s``."""
        return self.bleed_from[m][c] <= now_s < self.bleed_until[m][c]

    def cell_voltages_v(self, voltage_v: float, now_s: float) -> list[list[float]]:
        """Terminal voltage of every cell (no measurement faults) at pack voltage ``voltage_v``."""
        bleed_a = self.params.balance_bleed_a
        r_ohm = self.r_ohm
        out = []
        for m in range(self.params.modules):
            i_a = self.string_current_a(self.string_of[m], voltage_v)
            row = []
            for c, (soc, r) in enumerate(zip(self.soc[m], r_ohm[m], strict=True)):
                i_cell = i_a - (bleed_a if self.bleeding(m, c, now_s) else 0.0)
                row.append(cell_ocv_v(soc) + i_cell * r)
            out.append(row)
        return out

    def set_bleed(self, module: int, cells: frozenset[int], now_s: float, until_s: float) -> None:
        """Bleed exactly ``cells`` of ``module`` from ``now_s`` until ``until_s``; others stop."""
        b_from, b_until = self.bleed_from[module], self.bleed_until[module]
        for c in range(self.params.cells_per_module):
            if c in cells:
                if not b_from[c] <= now_s < b_until[c]:
                    b_from[c] = now_s
                b_until[c] = until_s
            elif b_from[c] <= now_s < b_until[c]:
                b_until[c] = now_s
