"""Open-circuit voltage of one NMC cell against its state of charge (pure).

Shared by the shunt service (initial state of charge at rest) and the plant
simulator (cell voltage from state of charge), so both agree on one curve.

The table is a *typical* NMC/graphite open-circuit-voltage curve (the usual
shape: steep below 10 %, a flat middle around 3.6-3.8 V, rising to 4.2 V at
100 %), not a measurement of VW GTE cells. No VW GTE project uses an OCV
table (Tom-evnut/VW-bms and anikrooz/housebatt: they map the lowest cell linearly,
3100 mV -> 10 %, 4100 mV -> 90 %); jsphuebner/stm32-car has an MEB table whose
fit to GTE cells is uncertain. Treat values as +-5 % SoC accurate at best.

``soc`` is a fraction 0..1 of the cell's full 3.0..4.2 V range (not percent).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import pairwise

# (soc fraction, open-circuit voltage V), strictly increasing in both columns so the
# curve can be inverted. Typical NMC/graphite shape; see the module docstring.
NMC_OCV_TABLE: tuple[tuple[float, float], ...] = (
    (0.00, 3.000),
    (0.05, 3.450),
    (0.10, 3.530),
    (0.15, 3.580),
    (0.20, 3.610),
    (0.25, 3.640),
    (0.30, 3.665),
    (0.35, 3.690),
    (0.40, 3.715),
    (0.45, 3.740),
    (0.50, 3.770),
    (0.55, 3.800),
    (0.60, 3.835),
    (0.65, 3.870),
    (0.70, 3.910),
    (0.75, 3.950),
    (0.80, 3.990),
    (0.85, 4.030),
    (0.90, 4.070),
    (0.95, 4.120),
    (1.00, 4.200),
)

_SOCS = tuple(s for s, _ in NMC_OCV_TABLE)
_VOLTS = tuple(v for _, v in NMC_OCV_TABLE)
OCV_MIN_V = _VOLTS[0]
OCV_MAX_V = _VOLTS[-1]


def _check_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"ocv: {name} {value!r} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"ocv: {name} {value!r} is not a finite number")
    return float(value)


def _interpolate(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x) - 1
    frac = (x - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + frac * (ys[i + 1] - ys[i])


def soc_from_ocv(v_cell: float) -> float:
    """State of charge (fraction 0..1) of a cell resting at ``v_cell`` volts.

    Voltages outside the table (below 3.0 V / above 4.2 V) clamp to 0 / 1.
    """
    return _interpolate(_check_finite("cell voltage", v_cell), _VOLTS, _SOCS)


def ocv_from_soc(soc: float) -> float:
    """Open-circuit voltage (V) of a cell at ``soc`` (fraction 0..1, clamped)."""
    return _interpolate(_check_finite("soc", soc), _SOCS, _VOLTS)


def mean_ocv_v(soc_lo: float, soc_hi: float) -> float:
    """The mean open-circuit voltage between two states of charge (exact for the table).

    Used to turn remaining ampere-hours into remaining watt-hours: the energy a
    cell gives from ``soc_hi`` down to ``soc_lo`` is Ah x mean OCV.
    """
    lo = min(max(_check_finite("soc_lo", soc_lo), 0.0), 1.0)
    hi = min(max(_check_finite("soc_hi", soc_hi), 0.0), 1.0)
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        return ocv_from_soc(lo)
    points = [lo, *(s for s in _SOCS if lo < s < hi), hi]
    area = sum((b - a) * (ocv_from_soc(a) + ocv_from_soc(b)) / 2 for a, b in pairwise(points))
    return area / (hi - lo)
