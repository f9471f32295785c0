"""A first state of charge from the pack voltage under load (pure; time is ``now_s``).

A battery held at grid zero may never rest, so the rest estimate (``soc.py``) may never
come. This one works while current flows: a loaded cell's terminal voltage is its
open-circuit voltage plus the drop across its internal resistance,

    V_terminal = V_ocv + I x R      (I + charging, gridzero's sign: charging raises V)
    V_ocv      = V_terminal - I x R

per cell: the bms's pack voltage (the mean of the parallel modules' cell sums) divided by
the cells in series, ``R`` the pack's resistance divided likewise. The corrected voltages
of the last ``window_s`` are averaged (at least ``min_samples``) and go through the OCV
table (``gridzero.ocv``), mapped onto the SoC window between the empty and full anchors.

What it leaves out, and so what the uncertainty covers: the table itself (a typical NMC
curve, +-5 % at best), ``R`` (a start-up setting; taken as +-50 % uncertain) and the
slow polarisation of a cell that a single resistance does not model (the spread of the
samples). A sample is taken only with a pack voltage that arrived here at most
``max_voltage_age_s`` ago (local arrival time, never the publisher's stamp) and is used
once: a stale or repeated voltage adds nothing, and without fresh samples there is no
new estimate.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from gridzero.chemistry import CELL_MAX_V, DEEP_DISCHARGE_V
from gridzero.ocv import soc_from_ocv

TABLE_UNCERTAIN_PCT = 5.0
"""The OCV table is a typical NMC curve, not measured on GTE cells: +-5 % SoC at best."""

RESISTANCE_UNCERTAIN = 0.5
"""The pack resistance setting is taken as uncertain by this fraction (age, temperature)."""

MAX_CORRECTION_V = 0.15
"""The largest I x R correction per cell a sample may need: beyond it the correction, not
the measurement, would decide the estimate (and a current that large is a fault)."""

TERMINAL_MAX_V = CELL_MAX_V + 0.15
"""A loaded cell above this (or below DEEP_DISCHARGE_V) is no healthy cell: the table says
nothing about it."""


def window_fraction(v_cell: float, window: tuple[float, float]) -> float:
    """The state of charge of a resting cell as a fraction of the ``(lo, hi)`` window."""
    lo, hi = window
    return min(1.0, max(0.0, (soc_from_ocv(v_cell) - lo) / (hi - lo)))


@dataclass(frozen=True, slots=True)
class EstimateSettings:
    """How the loaded-voltage estimate is made; the service builds it from start-up settings."""

    pack_resistance_ohm: float
    series_cells: int
    window: tuple[float, float]
    window_s: float = 5.0
    min_samples: int = 3
    max_voltage_age_s: float = 2.0

    def __post_init__(self) -> None:
        r = self.pack_resistance_ohm
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1.0:
            raise ValueError(f"pack resistance {r!r} ohm is outside 0..1 ohm")
        if not isinstance(self.series_cells, int) or not 1 <= self.series_cells <= 200:
            raise ValueError(f"series cells {self.series_cells!r} is outside 1..200")
        lo, hi = self.window
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"SoC window {self.window!r} must satisfy 0 <= lo < hi <= 1")
        for name in ("window_s", "max_voltage_age_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 600:
                raise ValueError(f"{name} {value!r} s is outside 0 < x <= 600")
        if not isinstance(self.min_samples, int) or not 1 <= self.min_samples <= 1000:
            raise ValueError(f"min_samples {self.min_samples!r} is outside 1..1000")


@dataclass(frozen=True, slots=True)
class Estimate:
    """The estimate now: SoC as a fraction of the window, with its uncertainty in %."""

    soc: float
    uncertain_pct: float
    ocv_cell_v: float
    current_a: float
    samples: int


@dataclass(frozen=True, slots=True)
class _Sample:
    at_s: float
    ocv_cell_v: float
    current_a: float


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class VoltageEstimator:
    """Averages current-corrected cell voltages over a few seconds into a SoC estimate."""

    def __init__(self, settings: EstimateSettings) -> None:
        self.settings = settings
        self._samples: deque[_Sample] = deque()
        self._last_voltage_at_s: float | None = None
        self._last_now_s: float | None = None
        self.refused = 0
        self.last_refusal = ""

    def add(
        self,
        now_s: float,
        current_a: float | None,
        pack_voltage_v: float | None,
        voltage_at_s: float,
    ) -> str:
        """Take one sample; return "" if taken, else why not (value, limit), changing nothing.

        ``current_a`` is the mean current up to ``now_s``; ``pack_voltage_v`` arrived here at
        ``voltage_at_s`` (this host's monotonic clock, the same as ``now_s``)."""
        reason = self._problem(now_s, current_a, pack_voltage_v, voltage_at_s)
        if reason:
            self.refused += 1
            self.last_refusal = reason
            return reason
        assert current_a is not None
        assert pack_voltage_v is not None
        s = self.settings
        self._last_now_s = now_s
        self._last_voltage_at_s = voltage_at_s
        terminal = pack_voltage_v / s.series_cells
        correction = current_a * s.pack_resistance_ohm / s.series_cells
        self._samples.append(_Sample(now_s, terminal - correction, current_a))
        self._forget(now_s)
        return ""

    def _problem(
        self, now_s: float, current_a: float | None, pack_voltage_v: float | None, at_s: float
    ) -> str:
        now, current, volts, at = (_number(x) for x in (now_s, current_a, pack_voltage_v, at_s))
        if now is None or at is None:
            return f"voltage estimate: time {now_s!r} / voltage arrival {at_s!r} is not a number"
        if current is None:
            return f"voltage estimate: current {current_a!r} A is not a number"
        if volts is None:
            return f"voltage estimate: pack voltage {pack_voltage_v!r} V is not a number"
        return self._time_problem(now, at) or self._value_problem(current, volts)

    def _time_problem(self, now: float, at: float) -> str:
        """A sample must be later than the last, with a voltage that is fresh and new."""
        if self._last_now_s is not None and now < self._last_now_s:
            return f"voltage estimate: time {now:g} s is before the last sample's {self._last_now_s:g} s"
        age, limit = now - at, self.settings.max_voltage_age_s
        if not 0 <= age <= limit:
            return f"voltage estimate: pack voltage arrived {age:g} s ago, outside 0..{limit:g} s"
        if self._last_voltage_at_s is not None and at <= self._last_voltage_at_s:
            return "voltage estimate: no new pack voltage since the last sample"
        return ""

    def _value_problem(self, current: float, volts: float) -> str:
        """A healthy cell's voltage, and a correction that does not decide the result."""
        s = self.settings
        cell = volts / s.series_cells
        if not DEEP_DISCHARGE_V <= cell <= TERMINAL_MAX_V:
            return (
                f"voltage estimate: {cell:.3f} V per cell ({volts:g} V / {s.series_cells}) is"
                f" outside {DEEP_DISCHARGE_V:g}..{TERMINAL_MAX_V:g} V"
            )
        correction = abs(current * s.pack_resistance_ohm / s.series_cells)
        if correction > MAX_CORRECTION_V:
            return (
                f"voltage estimate: current {current:g} A needs a {correction:.3f} V per cell"
                f" correction, above {MAX_CORRECTION_V:g} V"
            )
        return ""

    def _forget(self, now_s: float) -> None:
        while self._samples and now_s - self._samples[0].at_s > self.settings.window_s:
            self._samples.popleft()

    def estimate(self, now_s: float) -> Estimate | None:
        """The estimate from the samples of the last ``window_s``; None if too few."""
        now = _number(now_s)
        if now is None:
            return None
        self._forget(now)
        samples = [x for x in self._samples if x.at_s <= now]
        if len(samples) < self.settings.min_samples:
            return None
        ocv = statistics.fmean(x.ocv_cell_v for x in samples)
        current = statistics.fmean(x.current_a for x in samples)
        spread = statistics.pstdev(x.ocv_cell_v for x in samples)
        return Estimate(
            soc=window_fraction(ocv, self.settings.window),
            uncertain_pct=self._uncertainty(ocv, current, spread),
            ocv_cell_v=ocv,
            current_a=current,
            samples=len(samples),
        )

    def _uncertainty(self, ocv: float, current: float, spread_v: float) -> float:
        """Table +-5 % plus the SoC that the voltage's own uncertainty spans at this point."""
        s = self.settings
        dv = RESISTANCE_UNCERTAIN * abs(current) * s.pack_resistance_ohm / s.series_cells
        dv += spread_v
        span = window_fraction(ocv + dv, s.window) - window_fraction(ocv - dv, s.window)
        return min(100.0, TABLE_UNCERTAIN_PCT + 50.0 * span)

    def clear(self) -> None:
        self._samples.clear()
