"""Protection and limits (pure): CVL, CCL, DCL and alarms from a pack snapshot.

Every condition has a trip threshold held for a trip delay, and a release threshold on the
safe side of it (hysteresis) held for ``release_delay_s``. A limit that fell to zero comes
back only past its release threshold and then ramps at ``ramp_a_per_s``; reductions apply at
once. Missing data is unsafe: a missing module, a wrong cell count or a module without a
temperature reading set both current limits to zero.

Protection uses the pack's worst readings (trusted or not, see pack.py), so a cell read while
balancing can only make the limits tighter. Defaults and sources: docs/bms.md.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridzero.services.bms.pack import PackSnapshot

# Longest time step the current ramp accepts: after a pause the ramp does not jump to full.
_MAX_RAMP_STEP_S = 1.0


class ProtectionSettings(BaseModel):
    """Limits and delays; every default is cited in docs/bms.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charge_end_v: float = Field(
        4.10, ge=3.5, le=4.2, description="cell voltage where CCL reaches 0"
    )
    charge_taper_v: float = Field(
        0.20, ge=0.0, le=0.5, description="CCL tapers over this span below charge end"
    )
    charge_end_current_a: float = Field(
        5.0, ge=0.0, le=500.0, description="CCL at the end of the taper"
    )
    charge_restart_hysteresis_v: float = Field(
        0.20, gt=0.0, le=0.5, description="after full, charge again below charge end minus this"
    )
    over_voltage_v: float = Field(4.20, ge=3.8, le=4.3, description="cell over-voltage alarm")
    over_voltage_release_v: float = Field(
        4.05, ge=3.5, le=4.3, description="over-voltage clears below this"
    )
    over_voltage_trip_s: float = Field(0.5, ge=0.0, le=10.0, description="over-voltage trip delay")
    under_voltage_v: float = Field(3.00, ge=2.5, le=3.6, description="cell under-voltage alarm")
    under_voltage_release_v: float = Field(
        3.10, ge=2.5, le=3.8, description="under-voltage clears above this"
    )
    under_voltage_trip_s: float = Field(
        5.0, ge=0.0, le=30.0, description="under-voltage trip delay"
    )
    discharge_cutoff_v: float = Field(
        3.20, ge=2.8, le=3.8, description="cell voltage where DCL reaches 0"
    )
    discharge_taper_v: float = Field(
        0.30, ge=0.0, le=0.8, description="DCL tapers over this span above cut-off"
    )
    discharge_restart_hysteresis_v: float = Field(
        0.10, gt=0.0, le=0.5, description="after empty, discharge again above cut-off plus this"
    )
    over_temperature_c: float = Field(65.0, ge=30.0, le=80.0, description="over-temperature alarm")
    over_temperature_release_c: float = Field(
        60.0, ge=20.0, le=80.0, description="over-temperature clears below this"
    )
    hot_derate_start_c: float = Field(
        40.0, ge=20.0, le=80.0, description="DCL derates from here to over-temperature"
    )
    under_temperature_c: float = Field(
        -10.0, ge=-30.0, le=10.0, description="charging stops below this"
    )
    under_temperature_release_c: float = Field(
        -5.0, ge=-30.0, le=15.0, description="under-temperature clears above this"
    )
    cold_charge_derate_start_c: float = Field(
        0.0, ge=-20.0, le=25.0, description="CCL derates from here down to under-temperature"
    )
    discharge_min_temperature_c: float = Field(
        -20.0, ge=-40.0, le=0.0, description="discharging stops below this"
    )
    temperature_hysteresis_c: float = Field(
        5.0, gt=0.0, le=20.0, description="release margin of the discharge cold limit"
    )
    temperature_trip_s: float = Field(
        2.0, ge=0.0, le=30.0, description="temperature alarm trip delay"
    )
    cell_delta_alarm_v: float = Field(0.20, ge=0.01, le=1.0, description="max-min cell alarm")
    cell_delta_release_v: float = Field(
        0.15, ge=0.0, le=1.0, description="cell delta clears below this"
    )
    cell_delta_trip_s: float = Field(5.0, ge=0.0, le=60.0, description="cell delta trip delay")
    fault_trip_s: float = Field(
        1.0, ge=0.0, le=30.0, description="trip delay of cell-count and temperature-missing faults"
    )
    release_delay_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="a condition must stay past its release threshold this long",
    )
    max_charge_current_a: float = Field(30.0, ge=0.0, le=500.0, description="CCL ceiling")
    max_discharge_current_a: float = Field(30.0, ge=0.0, le=500.0, description="DCL ceiling")
    ramp_a_per_s: float = Field(
        5.0, gt=0.0, le=1000.0, description="how fast a raised limit comes back"
    )
    require_temperature: bool = Field(
        True,
        description="a present module without a temperature reading stops charge and discharge",
    )

    @model_validator(mode="after")
    def _check_order(self) -> ProtectionSettings:
        errors = []
        for left, op, right in _ORDER_RULES:
            lv, rv = getattr(self, left), getattr(self, right)
            if not _OPS[op](lv, rv):
                errors.append(f"{left} = {lv} must be {op} {right} = {rv}")
        top_of_discharge_taper = self.discharge_cutoff_v + self.discharge_taper_v
        bottom_of_charge_taper = self.charge_end_v - self.charge_taper_v
        if top_of_discharge_taper > bottom_of_charge_taper:
            errors.append(
                f"discharge_cutoff_v + discharge_taper_v = {top_of_discharge_taper:.3f} must be "
                f"<= charge_end_v - charge_taper_v = {bottom_of_charge_taper:.3f}"
            )
        if errors:
            raise ValueError("; ".join(errors))
        return self


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    ">=": operator.ge,
}
# (setting, must be, than setting): the release side of every threshold is the safe side.
_ORDER_RULES: tuple[tuple[str, str, str], ...] = (
    ("over_voltage_release_v", "<", "over_voltage_v"),
    ("charge_end_v", "<", "over_voltage_v"),
    ("under_voltage_release_v", ">", "under_voltage_v"),
    ("discharge_cutoff_v", ">=", "under_voltage_v"),
    ("over_temperature_release_c", "<", "over_temperature_c"),
    ("hot_derate_start_c", "<", "over_temperature_c"),
    ("under_temperature_release_c", ">", "under_temperature_c"),
    ("cold_charge_derate_start_c", ">", "under_temperature_c"),
    ("cell_delta_release_v", "<", "cell_delta_alarm_v"),
)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An active protection condition and what it blocks."""

    code: str
    message: str
    blocks_charge: bool
    blocks_discharge: bool
    since_s: float


@dataclass(frozen=True, slots=True)
class Limits:
    """What the charger and inverter must obey, computed at ``now_s``."""

    now_s: float
    charge_voltage_v: float
    charge_current_a: float
    discharge_current_a: float
    charge_allowed: bool
    discharge_allowed: bool
    alarms: tuple[Alarm, ...]
    charge_reason: str
    discharge_reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "charge_voltage_v": round(self.charge_voltage_v, 3),
            "charge_current_a": round(self.charge_current_a, 2),
            "discharge_current_a": round(self.discharge_current_a, 2),
            "charge_allowed": self.charge_allowed,
            "discharge_allowed": self.discharge_allowed,
            "alarms": [{"code": a.code, "message": a.message} for a in self.alarms],
            "charge_reason": self.charge_reason,
            "discharge_reason": self.discharge_reason,
        }


class _Latch:
    """Trip after ``trip_s`` of tripping readings, release after ``release_s`` of safe ones.

    No reading (neither tripping nor releasable) holds the state: missing data never clears
    an alarm.
    """

    __slots__ = ("active", "active_since", "message", "release_since", "trip_since")

    def __init__(self) -> None:
        self.active = False
        self.active_since = 0.0
        self.trip_since: float | None = None
        self.release_since: float | None = None
        self.message = ""

    def step(
        self, tripping: bool, releasable: bool, now_s: float, trip_s: float, release_s: float
    ) -> bool:
        if self.active:
            self.trip_since = None
            if not releasable:
                self.release_since = None
            else:
                if self.release_since is None:
                    self.release_since = now_s
                if now_s - self.release_since >= release_s:
                    self.active = False
                    self.release_since = None
        else:
            self.release_since = None
            if not tripping:
                self.trip_since = None
            else:
                if self.trip_since is None:
                    self.trip_since = now_s
                if now_s - self.trip_since >= trip_s:
                    self.active = True
                    self.active_since = now_s
                    self.trip_since = None
        return self.active


@dataclass(frozen=True, slots=True)
class _Check:
    code: str
    blocks_charge: bool
    blocks_discharge: bool


_CHECKS = (
    _Check("module_missing", True, True),
    _Check("cell_count", True, True),
    _Check("temperature_missing", True, True),
    _Check("over_voltage", True, False),
    _Check("under_voltage", False, True),
    _Check("over_temperature", True, True),
    _Check("under_temperature", True, False),
    _Check("too_cold_to_discharge", False, True),
    _Check("cell_delta", True, True),
)


class Protection:
    """Turns pack snapshots into limits; call `update` every ~0.1-0.5 s with the time."""

    def __init__(self, settings: ProtectionSettings) -> None:
        self.settings = settings
        self._latches = {check.code: _Latch() for check in _CHECKS}
        self._full = _Latch()
        self._empty = _Latch()
        self._ccl_a = 0.0
        self._dcl_a = 0.0
        self._last_s: float | None = None

    def reconfigure(self, settings: ProtectionSettings) -> None:
        """New settings; alarm states and the ramps carry on."""
        self.settings = settings

    def update(self, snap: PackSnapshot, now_s: float) -> Limits:
        s = self.settings
        alarms = self._alarms(snap, now_s)
        block_charge = [a.code for a in alarms if a.blocks_charge]
        block_discharge = [a.code for a in alarms if a.blocks_discharge]
        ccl_target, charge_reason = self._charge_target(snap, now_s, block_charge)
        dcl_target, discharge_reason = self._discharge_target(snap, now_s, block_discharge)
        dt = 0.0 if self._last_s is None else min(max(now_s - self._last_s, 0.0), _MAX_RAMP_STEP_S)
        self._last_s = now_s
        self._ccl_a = _ramp(self._ccl_a, ccl_target, s.ramp_a_per_s * dt)
        self._dcl_a = _ramp(self._dcl_a, dcl_target, s.ramp_a_per_s * dt)
        if self._ccl_a < ccl_target and not charge_reason:
            charge_reason = "ramping up"
        if self._dcl_a < dcl_target and not discharge_reason:
            discharge_reason = "ramping up"
        return Limits(
            now_s=now_s,
            charge_voltage_v=s.charge_end_v * snap.series_cells,
            charge_current_a=self._ccl_a,
            discharge_current_a=self._dcl_a,
            charge_allowed=self._ccl_a > 0.0,
            discharge_allowed=self._dcl_a > 0.0,
            alarms=alarms,
            charge_reason=charge_reason,
            discharge_reason=discharge_reason,
        )

    def _alarms(self, snap: PackSnapshot, now_s: float) -> tuple[Alarm, ...]:
        s = self.settings
        hi, lo = snap.worst_high, snap.worst_low
        t_max, t_min = snap.temp_max_c, snap.temp_min_c
        no_temp = [
            str(m.key)
            for m in snap.modules
            if m.present and not any(t is not None for t in m.temperatures_c)
        ]
        no_modules = snap.present_modules == 0
        missing_msg = (
            "no module reports" if no_modules else "missing: " + ", ".join(map(str, snap.missing))
        )
        count_msg = f"{snap.cell_count} valid cells, expected {snap.expected_cell_count}"
        if snap.unexpected:
            count_msg += "; unexpected " + ", ".join(map(str, snap.unexpected))
        # code -> (tripping, releasable, trip delay, message)
        table: dict[str, tuple[bool, bool, float, str]] = {
            "module_missing": (
                bool(snap.missing) or no_modules,
                not snap.missing and not no_modules,
                0.0,
                missing_msg,
            ),
            "cell_count": (
                snap.present_modules > 0 and (not snap.cell_count_ok or bool(snap.unexpected)),
                snap.cell_count_ok and not snap.unexpected,
                s.fault_trip_s,
                count_msg,
            ),
            "temperature_missing": (
                s.require_temperature and bool(no_temp),
                not no_temp,
                s.fault_trip_s,
                "no temperature from " + ", ".join(no_temp),
            ),
            "over_voltage": _above(
                None if hi is None else hi.voltage_v,
                s.over_voltage_v,
                s.over_voltage_release_v,
                s.over_voltage_trip_s,
                f"cell over-voltage: {hi} > {s.over_voltage_v:.3f} V",
            ),
            "under_voltage": _below(
                None if lo is None else lo.voltage_v,
                s.under_voltage_v,
                s.under_voltage_release_v,
                s.under_voltage_trip_s,
                f"cell under-voltage: {lo} < {s.under_voltage_v:.3f} V",
            ),
            "over_temperature": _above(
                t_max,
                s.over_temperature_c,
                s.over_temperature_release_c,
                s.temperature_trip_s,
                f"over-temperature: {t_max} °C at {snap.temp_max_at} > {s.over_temperature_c} °C",
            ),
            "under_temperature": _below(
                t_min,
                s.under_temperature_c,
                s.under_temperature_release_c,
                s.temperature_trip_s,
                f"too cold to charge: {t_min} °C at {snap.temp_min_at} "
                f"< {s.under_temperature_c} °C",
            ),
            "too_cold_to_discharge": _below(
                t_min,
                s.discharge_min_temperature_c,
                s.discharge_min_temperature_c + s.temperature_hysteresis_c,
                s.temperature_trip_s,
                f"too cold to discharge: {t_min} °C at {snap.temp_min_at} "
                f"< {s.discharge_min_temperature_c} °C",
            ),
            "cell_delta": _above(
                snap.delta_v,
                s.cell_delta_alarm_v,
                s.cell_delta_release_v,
                s.cell_delta_trip_s,
                f"cell delta {snap.delta_v or 0:.3f} V > {s.cell_delta_alarm_v:.3f} V "
                f"(highest {snap.max_cell}, lowest {snap.min_cell})",
            ),
        }
        active = []
        for check in _CHECKS:
            tripping, releasable, trip_s, message = table[check.code]
            latch = self._latches[check.code]
            if tripping:
                latch.message = message
            if latch.step(tripping, releasable, now_s, trip_s, s.release_delay_s):
                active.append(
                    Alarm(
                        check.code,
                        latch.message,
                        check.blocks_charge,
                        check.blocks_discharge,
                        latch.active_since,
                    )
                )
        return tuple(active)

    def _charge_target(
        self, snap: PackSnapshot, now_s: float, blocked_by: list[str]
    ) -> tuple[float, str]:
        s = self.settings
        hi = snap.worst_high
        full_at = s.charge_end_v
        release_below = s.charge_end_v - s.charge_restart_hysteresis_v
        v = None if hi is None else hi.voltage_v
        full = self._full.step(
            v is not None and v >= full_at,
            v is not None and v < release_below,
            now_s,
            0.0,
            s.release_delay_s,
        )
        if blocked_by:
            return 0.0, "alarm: " + ", ".join(blocked_by)
        if full:
            return (
                0.0,
                f"full: highest cell reached {full_at:.3f} V; "
                f"charges again below {release_below:.3f} V",
            )
        if v is None:
            return 0.0, "no cell data"
        target, reason = s.max_charge_current_a, ""
        taper_from = s.charge_end_v - s.charge_taper_v
        if v > taper_from:
            end = min(s.charge_end_current_a, s.max_charge_current_a)
            frac = (s.charge_end_v - v) / s.charge_taper_v
            target = end + (s.max_charge_current_a - end) * frac
            reason = f"taper: highest cell {hi}"
        t_min = snap.temp_min_c
        if t_min is not None and t_min < s.cold_charge_derate_start_c:
            span = s.cold_charge_derate_start_c - s.under_temperature_c
            target *= _clamp01((t_min - s.under_temperature_c) / span)
            reason = f"cold derate: {t_min} °C at {snap.temp_min_at}"
        return target, reason

    def _discharge_target(
        self, snap: PackSnapshot, now_s: float, blocked_by: list[str]
    ) -> tuple[float, str]:
        s = self.settings
        lo = snap.worst_low
        v = None if lo is None else lo.voltage_v
        release_above = s.discharge_cutoff_v + s.discharge_restart_hysteresis_v
        empty = self._empty.step(
            v is not None and v <= s.discharge_cutoff_v,
            v is not None and v > release_above,
            now_s,
            0.0,
            s.release_delay_s,
        )
        if blocked_by:
            return 0.0, "alarm: " + ", ".join(blocked_by)
        if empty:
            return (
                0.0,
                f"empty: lowest cell reached {s.discharge_cutoff_v:.3f} V; "
                f"discharges again above {release_above:.3f} V",
            )
        if v is None:
            return 0.0, "no cell data"
        target, reason = s.max_discharge_current_a, ""
        if v < s.discharge_cutoff_v + s.discharge_taper_v:
            target *= _clamp01((v - s.discharge_cutoff_v) / s.discharge_taper_v)
            reason = f"taper: lowest cell {lo}"
        t_max = snap.temp_max_c
        if t_max is not None and t_max > s.hot_derate_start_c:
            span = s.over_temperature_c - s.hot_derate_start_c
            target *= _clamp01((s.over_temperature_c - t_max) / span)
            reason = f"hot derate: {t_max} °C at {snap.temp_max_at}"
        return target, reason


def _above(
    value: float | None, trip: float, release: float, trip_s: float, message: str
) -> tuple[bool, bool, float, str]:
    return (
        value is not None and value > trip,
        value is not None and value < release,
        trip_s,
        message,
    )


def _below(
    value: float | None, trip: float, release: float, trip_s: float, message: str
) -> tuple[bool, bool, float, str]:
    return (
        value is not None and value < trip,
        value is not None and value > release,
        trip_s,
        message,
    )


def _ramp(current: float, target: float, step: float) -> float:
    if target <= current:
        return target
    return min(target, current + step)


def _clamp01(value: float) -> float:
    return min(max(value, 0.0), 1.0)
