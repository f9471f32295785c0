"""State of charge and energy counters from the battery current (pure; time is ``now_s``).

Method (mr-manuel/venus-os_dbus-serialbattery battery.py, stuartpittaway/diyBMS-CurrentShunt, Tom-evnut/VW-bms VWBMSV2.ino):

- Coulomb counting: each update carries the mean current over the interval since
  the previous update; remaining Ah += I x dt / 3600, with the charge
  efficiency applied to charge going in, clamped to [0, capacity].
- Separate, never-decreasing Ah and Wh counters in and out (Wh with the pack
  voltage from the bms; an interval without a pack voltage adds no Wh).
- An interval longer than ``max_gap_s`` (or one without a valid current) is not
  integrated: counting pauses rather than guessing.
- Re-anchoring: 100 % when the highest cell is at or above ``full_cell_v`` and
  the current is a small charge (0..``tail_current_a``) held for ``full_hold_s``
  (diyBMS-CurrentShunt: 3 min); 0 % when the lowest cell is at or below
  ``empty_cell_v`` while discharging or idle for ``empty_hold_s``
  (dbus-serialbattery: 60 s).
- With no stored value, a first estimate comes from the pack voltage under load,
  corrected by I x R (``estimate.py``; source ``estimated``), within seconds of start.
  Coulomb counting continues from it.
- With no stored value, or an estimated one, the SoC comes from the lowest cell's
  open-circuit voltage (``gridzero.ocv``) once the current has stayed within
  +-``rest_current_a`` for ``rest_hold_s`` (source ``ocv``). The lowest cell is used,
  as in the VW BMS projects (6.3): it never overstates what is left.

SoC is relative to the window between the two anchors: 0 % at ``empty_cell_v``,
100 % at ``full_cell_v``; the OCV value is mapped onto that window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gridzero.contract import SOC_SOURCES, SocSource
from gridzero.ocv import mean_ocv_v, soc_from_ocv
from gridzero_shunt.estimate import EstimateSettings, VoltageEstimator, window_fraction

# One GTE module (12S NMC): 1.086 kWh at 44.4 V nominal = 24.46 Ah. The original system
# (anikrooz/housebatt housebatt.ino) had 9 modules in parallel (`Pstrings 9`); it counted
# 22.5 Ah per module (`CAP`, stored as int 22).
MODULE_ENERGY_WH = 1086.0
MODULE_NOMINAL_V = 44.4
MODULE_CAPACITY_AH = MODULE_ENERGY_WH / MODULE_NOMINAL_V
DEFAULT_MODULES = 9
DEFAULT_CAPACITY_AH = DEFAULT_MODULES * MODULE_CAPACITY_AH
# One module's internal resistance, 12 cells in series: a 25 Ah PHEV2 prismatic NMC cell
# (the Sanyo/Panasonic cell VW used) has about 1-2 mOhm DC resistance new at 25 C
# (foxBMS's cell table: 2.0 mOhm for a 25.9 Ah high-power automotive NMC cell); 1.5 mOhm
# per cell, as the bms measures cell voltages at the cells (no cables in between).
DEFAULT_MODULE_RESISTANCE_MOHM = 18.0
DEFAULT_PACK_RESISTANCE_OHM = DEFAULT_MODULE_RESISTANCE_MOHM / 1000.0 / DEFAULT_MODULES

# The contract owns the list, so the published soc_source, docs/mqtt.md and services/shunt/README.md agree.
Source = SocSource
SOURCES: tuple[Source, ...] = SOC_SOURCES
STATE_VERSION = 1


def _finite(place: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{place}: {value!r} is not a finite number")
    return float(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class SocSettings:
    """Capacity and anchor thresholds; the sources of each default are in services/shunt/README.md."""

    capacity_ah: float = DEFAULT_CAPACITY_AH
    charge_efficiency: float = 0.995  # diyBMS-CurrentShunt default 99.5 %
    series_cells: int = 12  # one GTE module is 12S; modules are in parallel
    full_cell_v: float = 4.08  # charge end 4.10 V (Tom VWBMSV2, ESP32-BMS) less 20 mV
    tail_current_a: float = 5.0  # charge-end current 5 A (Tom, housebatt)
    full_hold_s: float = 180.0  # diyBMS-CurrentShunt: 3 min
    empty_cell_v: float = 3.20  # discharge cut-off 3.20 V (Tom, housebatt, ESP32-BMS)
    empty_hold_s: float = 60.0  # dbus-serialbattery SOC_RESET_TIME in code
    max_gap_s: float = 5.0
    rest_current_a: float = 2.0
    rest_hold_s: float = 30.0
    pack_resistance_ohm: float = DEFAULT_PACK_RESISTANCE_OHM
    estimate_window_s: float = 5.0

    def __post_init__(self) -> None:
        _require(
            _finite("capacity", self.capacity_ah) > 0,
            f"battery capacity {self.capacity_ah!r} Ah must be > 0",
        )
        _require(
            0.5 <= _finite("charge efficiency", self.charge_efficiency) <= 1.0,
            f"charge efficiency {self.charge_efficiency!r} is outside 0.5..1.0",
        )
        _require(
            isinstance(self.series_cells, int) and 1 <= self.series_cells <= 200,
            f"series cells {self.series_cells!r} is outside 1..200",
        )
        _require(
            2.5
            <= _finite("empty cell voltage", self.empty_cell_v)
            < _finite("full cell voltage", self.full_cell_v)
            <= 4.25,
            f"cell voltages empty {self.empty_cell_v!r} V / full {self.full_cell_v!r} V must"
            " satisfy 2.5 <= empty < full <= 4.25",
        )
        for name in (
            "tail_current_a",
            "full_hold_s",
            "empty_hold_s",
            "rest_current_a",
            "rest_hold_s",
        ):
            value = getattr(self, name)
            _require(_finite(name, value) >= 0, f"{name} {value!r} must be >= 0")
        _require(
            _finite("max gap", self.max_gap_s) > 0, f"max_gap_s {self.max_gap_s!r} must be > 0"
        )
        self.estimate()  # its own checks: resistance, window

    @property
    def window(self) -> tuple[float, float]:
        """The cell-OCV state of charge (fraction) at the empty and full anchors."""
        return soc_from_ocv(self.empty_cell_v), soc_from_ocv(self.full_cell_v)

    def estimate(self) -> EstimateSettings:
        """The loaded-voltage estimate's settings (validated there)."""
        return EstimateSettings(
            pack_resistance_ohm=self.pack_resistance_ohm,
            series_cells=self.series_cells,
            window=self.window,
            window_s=self.estimate_window_s,
        )


@dataclass(frozen=True, slots=True)
class SocReading:
    """What the counter knows now. ``soc_pct`` is None until a first anchor."""

    soc_pct: float | None
    remaining_ah: float | None
    remaining_wh: float | None
    ah_in: float
    ah_out: float
    wh_in: float
    wh_out: float
    source: Source
    counting: bool
    gaps: int
    uncertain_pct: float | None = None


class CoulombCounter:
    """Counts charge in and out and keeps the state of charge anchored."""

    def __init__(self, settings: SocSettings | None = None) -> None:
        self._settings = settings or SocSettings()
        self.remaining_ah: float | None = None
        self.source: Source = "unknown"
        self.ah_in = 0.0
        self.ah_out = 0.0
        self.wh_in = 0.0
        self.wh_out = 0.0
        self.counting = False
        self.gaps = 0
        self._last_s: float | None = None
        self._full_since_s: float | None = None
        self._empty_since_s: float | None = None
        self._rest_since_s: float | None = None
        self.uncertain_pct: float | None = None
        self.estimator = VoltageEstimator(self._settings.estimate())

    @property
    def settings(self) -> SocSettings:
        return self._settings

    @settings.setter
    def settings(self, new: SocSettings) -> None:
        """New settings; a new capacity keeps the state of charge (not the Ah)."""
        if self.remaining_ah is not None:
            self.remaining_ah = self.remaining_ah / self._settings.capacity_ah * new.capacity_ah
        self._settings = new
        self.estimator.settings = new.estimate()

    # --- counting ---------------------------------------------------------------------

    def update(
        self,
        now_s: float,
        current_a: float | None,
        *,
        pack_voltage_v: float | None = None,
        cell_min_v: float | None = None,
        cell_max_v: float | None = None,
        pack_voltage_at_s: float | None = None,
    ) -> None:
        """One step. ``current_a`` is the mean over (previous update, now_s], None if unknown.

        ``pack_voltage_at_s`` is when the pack voltage arrived (this host's clock; ``now_s``
        if not given): the loaded-voltage estimate uses each fresh voltage once."""
        now = _finite("now_s", now_s)
        if pack_voltage_v is not None:
            at = now if pack_voltage_at_s is None else pack_voltage_at_s
            self.estimator.add(now, current_a, pack_voltage_v, at)
        current = None if current_a is None else _finite("current", current_a)
        last, self._last_s = self._last_s, now
        dt = None if last is None else now - last
        if dt is None:
            self.counting = False
        elif current is None or not 0 < dt <= self._settings.max_gap_s:
            self.counting = False
            if dt > self._settings.max_gap_s or dt < 0:
                self.gaps += 1
                self._full_since_s = self._empty_since_s = self._rest_since_s = None
        else:
            self._integrate(current, dt, pack_voltage_v)
            self.counting = True
        self._anchor(now, current, cell_min_v, cell_max_v)
        if self.remaining_ah is None:
            self._estimate(now)

    def _estimate(self, now_s: float) -> None:
        """A first SoC from the loaded pack voltage; counting continues from it."""
        estimate = self.estimator.estimate(now_s)
        if estimate is not None:
            self.remaining_ah = estimate.soc * self._settings.capacity_ah
            self.source = "estimated"
            self.uncertain_pct = estimate.uncertain_pct

    def _integrate(self, current_a: float, dt_s: float, pack_voltage_v: float | None) -> None:
        ah = current_a * dt_s / 3600.0
        volts = None if pack_voltage_v is None else _finite("pack voltage", pack_voltage_v)
        if ah > 0:
            self.ah_in += ah
            if volts is not None and volts > 0:
                self.wh_in += ah * volts
            stored = ah * self._settings.charge_efficiency
        else:
            self.ah_out -= ah
            if volts is not None and volts > 0:
                self.wh_out -= ah * volts
            stored = ah
        if self.remaining_ah is not None:
            self.remaining_ah = min(
                self._settings.capacity_ah, max(0.0, self.remaining_ah + stored)
            )

    def _held(self, since_s: float | None, condition: bool, now_s: float) -> float | None:
        if not condition:
            return None
        return now_s if since_s is None else since_s

    def _anchor(
        self,
        now_s: float,
        current_a: float | None,
        cell_min_v: float | None,
        cell_max_v: float | None,
    ) -> None:
        s = self._settings
        full = (
            current_a is not None
            and cell_max_v is not None
            and cell_max_v >= s.full_cell_v
            and 0 <= current_a <= s.tail_current_a
        )
        empty = (
            current_a is not None
            and cell_min_v is not None
            and cell_min_v <= s.empty_cell_v
            and current_a <= 0
        )
        rest = (
            (self.remaining_ah is None or self.source == "estimated")
            and current_a is not None
            and cell_min_v is not None
            and abs(current_a) <= s.rest_current_a
        )
        self._full_since_s = self._held(self._full_since_s, full, now_s)
        self._empty_since_s = self._held(self._empty_since_s, empty, now_s)
        self._rest_since_s = self._held(self._rest_since_s, rest, now_s)
        if self._full_since_s is not None and now_s - self._full_since_s >= s.full_hold_s:
            self.remaining_ah, self.source = s.capacity_ah, "full_anchor"
            self.uncertain_pct = None
        elif self._empty_since_s is not None and now_s - self._empty_since_s >= s.empty_hold_s:
            self.remaining_ah, self.source = 0.0, "empty_anchor"
            self.uncertain_pct = None
        elif (
            self._rest_since_s is not None
            and cell_min_v is not None
            and now_s - self._rest_since_s >= s.rest_hold_s
        ):
            self.remaining_ah = soc_window_from_ocv(cell_min_v, s) * s.capacity_ah
            self.source = "ocv"
            self.uncertain_pct = None
            self._rest_since_s = None

    # --- manual actions ------------------------------------------------------------------

    def set_soc(self, soc_pct: float, source: Source = "set") -> None:
        """Set the state of charge (0..100 %), e.g. the "battery is full" button."""
        value = _finite("soc", soc_pct)
        if not 0 <= value <= 100:
            raise ValueError(f"state of charge {soc_pct!r} % is outside 0..100 %")
        self.remaining_ah = value / 100.0 * self._settings.capacity_ah
        self.source = source
        self.uncertain_pct = None

    # --- reading ----------------------------------------------------------------------------

    def reading(self) -> SocReading:
        remaining = self.remaining_ah
        soc_pct = None if remaining is None else remaining / self._settings.capacity_ah * 100.0
        return SocReading(
            soc_pct=soc_pct,
            remaining_ah=remaining,
            remaining_wh=None if remaining is None else remaining_wh(remaining, self._settings),
            ah_in=self.ah_in,
            ah_out=self.ah_out,
            wh_in=self.wh_in,
            wh_out=self.wh_out,
            source=self.source,
            counting=self.counting,
            gaps=self.gaps,
            uncertain_pct=None if remaining is None else self.uncertain_pct,
        )

    # --- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        """The state worth keeping across a restart (JSON-friendly)."""
        return {
            "version": STATE_VERSION,
            "capacity_ah": self._settings.capacity_ah,
            "remaining_ah": self.remaining_ah,
            "source": self.source,
            "ah_in": self.ah_in,
            "ah_out": self.ah_out,
            "wh_in": self.wh_in,
            "wh_out": self.wh_out,
            "uncertain_pct": self.uncertain_pct,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, object], settings: SocSettings | None = None
    ) -> CoulombCounter:
        """A counter restored from ``to_dict``; raises ValueError naming the bad entry."""
        counter = cls(settings)
        _require(
            data.get("version") == STATE_VERSION,
            f"stored shunt state: version {data.get('version')!r}, expected {STATE_VERSION}",
        )
        for key in ("ah_in", "ah_out", "wh_in", "wh_out"):
            value = _finite(f"stored shunt state {key}", data.get(key))
            _require(value >= 0, f"stored shunt state: {key} {value!r} is negative")
            setattr(counter, key, value)
        source = data.get("source")
        _require(
            source in SOURCES, f"stored shunt state: source {source!r} is not one of {SOURCES}"
        )
        remaining = data.get("remaining_ah")
        if remaining is not None and source != "unknown":
            saved_capacity = _finite("stored shunt state capacity_ah", data.get("capacity_ah"))
            _require(saved_capacity > 0, f"stored capacity {saved_capacity!r} Ah must be > 0")
            value = _finite("stored shunt state remaining_ah", remaining)
            _require(
                0 <= value <= saved_capacity * (1 + 1e-9),
                f"stored remaining {value!r} Ah is outside 0..{saved_capacity:g} Ah",
            )
            counter.remaining_ah = min(1.0, value / saved_capacity) * counter.settings.capacity_ah
            # an estimate stays an estimate (a rest may still refine it)
            counter.source = "estimated" if source == "estimated" else "restored"
            if source == "estimated":
                counter.uncertain_pct = _stored_uncertainty(data.get("uncertain_pct"))
        return counter

    def with_settings(self, settings: SocSettings) -> CoulombCounter:
        """A copy of this counter's persisted state under new settings."""
        return CoulombCounter.from_dict(self.to_dict(), settings)


def _stored_uncertainty(value: object) -> float | None:
    if value is None:
        return None
    number = _finite("stored shunt state uncertain_pct", value)
    _require(0 <= number <= 100, f"stored uncertain_pct {number!r} % is outside 0..100 %")
    return number


def soc_window_from_ocv(v_cell: float, settings: SocSettings) -> float:
    """The state of charge (fraction of the empty..full window) of a resting cell."""
    return window_fraction(v_cell, settings.window)


def remaining_wh(remaining_ah: float, settings: SocSettings) -> float:
    """Energy left above the empty anchor: Ah x mean OCV over the window x series cells."""
    lo, hi = settings.window
    fraction = min(1.0, max(0.0, remaining_ah / settings.capacity_ah))
    cell_soc = lo + fraction * (hi - lo)
    return remaining_ah * mean_ocv_v(lo, cell_soc) * settings.series_cells
