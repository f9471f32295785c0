"""Protection and limits (pure): CVL, CCL, DCL and alarms from a pack snapshot.

Every condition has a trip threshold held for a trip delay, and a release threshold on the
safe side of it (hysteresis) held for ``release_delay_s``. A limit that fell to zero comes
back only past its release threshold and then ramps at ``ramp_a_per_s``; reductions apply at
once. Missing data is unsafe: a missing module, a wrong cell count or a module without a
temperature reading set both current limits to zero.

Protection uses the pack's worst readings (trusted or not, see pack.py), so a cell read while
balancing can only make the limits tighter. Defaults and sources: services/bms/README.md.

Three conditions come from outside the pack snapshot or never release on their own:

- **Deep discharge.** A cell below ``deep_discharge_v`` latches an alarm that blocks charge and
  discharge until a person releases it (`release_deep_discharge`, refused while a cell is still
  below the threshold or the pack is not otherwise healthy). The service persists the latch.
  After the release, a cell below under-voltage is charged at ``precharge_current_a`` at most.
- **Frame sanity.** Problems found by sanity.py (two boards with one number, a frozen board)
  block both directions while they last.
- **Over-current.** The measured current (shunt) against the highest limit of the last
  ``over_current_grace_s``, with a margin, for ``over_current_trip_s``; it blocks the direction
  it happened in, and releases after ``over_current_release_s`` within the limit.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridzero import chemistry
from gridzero_bms.pack import PackSnapshot

# Longest time step the current ramp accepts: after a pause the ramp does not jump to full.
_MAX_RAMP_STEP_S = 1.0


class ProtectionSettings(BaseModel):
    """Limits and delays; every default is cited in services/bms/README.md.

    These are start-up (hardware and chemistry) settings: the cell and temperature limits
    are bounded by `gridzero.chemistry`, and the service bounds the currents by the pack's
    capacity. Runtime settings may only tighten them (see service.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    charge_end_v: float = Field(
        4.10, ge=3.5, le=chemistry.CELL_MAX_V, description="cell voltage where CCL reaches 0"
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
    over_voltage_v: float = Field(
        4.20, ge=3.8, le=chemistry.CELL_MAX_V, description="cell over-voltage alarm"
    )
    over_voltage_release_v: float = Field(
        4.05, ge=3.5, le=chemistry.CELL_MAX_V, description="over-voltage clears below this"
    )
    over_voltage_trip_s: float = Field(0.5, ge=0.0, le=10.0, description="over-voltage trip delay")
    under_voltage_v: float = Field(
        3.00, ge=chemistry.CELL_MIN_V, le=3.6, description="cell under-voltage alarm"
    )
    under_voltage_release_v: float = Field(
        3.10, ge=chemistry.CELL_MIN_V, le=3.8, description="under-voltage clears above this"
    )
    under_voltage_trip_s: float = Field(
        5.0, ge=0.0, le=30.0, description="under-voltage trip delay"
    )
    deep_discharge_v: float = Field(
        chemistry.DEEP_DISCHARGE_V,
        ge=chemistry.DEEP_DISCHARGE_V,
        le=3.5,
        description="a cell below this latches deep_discharge until a person releases it",
    )
    deep_discharge_trip_s: float = Field(
        1.0, ge=0.0, le=10.0, description="deep-discharge trip delay"
    )
    precharge_current_a: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="CCL while the lowest cell is below under-voltage (at most C/20 of the pack)",
    )
    discharge_cutoff_v: float = Field(
        3.20, ge=chemistry.CELL_MIN_V, le=3.8, description="cell voltage where DCL reaches 0"
    )
    discharge_taper_v: float = Field(
        0.30, ge=0.0, le=0.8, description="DCL tapers over this span above cut-off"
    )
    discharge_restart_hysteresis_v: float = Field(
        0.10, gt=0.0, le=0.5, description="after empty, discharge again above cut-off plus this"
    )
    over_temperature_c: float = Field(
        60.0,
        ge=30.0,
        le=chemistry.DISCHARGE_MAX_C,
        description="over-temperature alarm: nothing flows above this; DCL is 0 from here",
    )
    over_temperature_release_c: float = Field(
        55.0, ge=20.0, le=chemistry.DISCHARGE_MAX_C, description="over-temperature clears below"
    )
    hot_derate_start_c: float = Field(
        40.0,
        ge=20.0,
        le=chemistry.DISCHARGE_MAX_C,
        description="DCL derates from here to over-temperature",
    )
    charge_max_temperature_c: float = Field(
        45.0,
        ge=20.0,
        le=chemistry.CHARGE_MAX_C,
        description="too hot to charge above this: CCL is 0 from here",
    )
    hot_charge_derate_start_c: float = Field(
        35.0,
        ge=10.0,
        le=chemistry.CHARGE_MAX_C,
        description="CCL derates from here up to the charge maximum temperature",
    )
    under_temperature_c: float = Field(
        0.0,
        ge=chemistry.CHARGE_MIN_C,
        le=20.0,
        description="too cold to charge below this: CCL is 0 from here",
    )
    under_temperature_release_c: float = Field(
        5.0, ge=chemistry.CHARGE_MIN_C, le=25.0, description="under-temperature clears above this"
    )
    cold_charge_derate_start_c: float = Field(
        10.0,
        ge=chemistry.CHARGE_MIN_C,
        le=30.0,
        description="CCL derates from here down to under-temperature",
    )
    discharge_min_temperature_c: float = Field(
        -20.0,
        ge=chemistry.DISCHARGE_MIN_C,
        le=10.0,
        description="too cold to discharge below this: DCL is 0 from here",
    )
    temperature_hysteresis_c: float = Field(
        5.0,
        gt=0.0,
        le=20.0,
        description="release margin of too-cold-to-discharge, too-hot-to-charge",
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
    max_charge_current_a: float = Field(30.0, ge=0.0, le=1000.0, description="CCL ceiling")
    max_discharge_current_a: float = Field(30.0, ge=0.0, le=1000.0, description="DCL ceiling")
    ramp_a_per_s: float = Field(
        5.0, gt=0.0, le=1000.0, description="how fast a raised limit comes back"
    )
    require_temperature: bool = Field(
        True,
        description="a present module without a temperature reading stops charge and "
        "discharge; false: only when no module of the pack has one",
    )
    over_current_margin_a: float = Field(
        5.0, ge=0.5, le=100.0, description="measured current may exceed its limit by this"
    )
    over_current_margin_pct: float = Field(
        10.0, ge=0.0, le=100.0, description="... or by this share of the limit, if more"
    )
    over_current_grace_s: float = Field(
        3.0,
        ge=0.0,
        le=30.0,
        description="a lowered limit counts this long at its old value (devices follow)",
    )
    over_current_trip_s: float = Field(2.0, ge=0.0, le=30.0, description="over-current trip delay")
    over_current_release_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="over-current clears after the current stayed within its limit this long",
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
    ("deep_discharge_v", "<", "under_voltage_v"),
    ("hot_charge_derate_start_c", "<", "charge_max_temperature_c"),
    ("cold_charge_derate_start_c", "<", "hot_charge_derate_start_c"),
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
    """What the charger and inverter must obey, computed at ``now_s``: the fields of
    `gridzero.contract.BmsLimits` under the same names (the service publishes it as one),
    plus what only the bms needs (when, each alarm's blocks, each side's reason)."""

    now_s: float
    cvl_v: float
    ccl_a: float
    dcl_a: float
    charge_allowed: bool
    discharge_allowed: bool
    alarms: tuple[Alarm, ...]
    charge_reason: str
    discharge_reason: str


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


class Condition(NamedTuple):
    """One check's state at one evaluation (its message is built only when it trips)."""

    tripping: bool
    releasable: bool
    trip_s: float
    release_s: float | None = None  # None: the common release_delay_s


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the checks judge at one evaluation."""

    settings: ProtectionSettings
    snap: PackSnapshot
    frame_problems: Sequence[str] = ()
    # the highest CCL and DCL of the over-current grace window (None: not known yet)
    reference: tuple[float, float] | None = None
    current_a: float | None = None  # measured, + = charging; None: no fresh measurement


@dataclass(frozen=True, slots=True)
class Check:
    """One protection condition, declared once: its alarm code, what it blocks, when it trips
    and releases (``condition``) and what its alarm says (``message``)."""

    code: str
    blocks_charge: bool
    blocks_discharge: bool
    condition: Callable[[Inputs], Condition]
    message: Callable[[Inputs], str]


def _above(value: float | None, trip: float, release: float, trip_s: float) -> Condition:
    return Condition(
        value is not None and value > trip, value is not None and value < release, trip_s
    )


def _below(value: float | None, trip: float, release: float, trip_s: float) -> Condition:
    return Condition(
        value is not None and value < trip, value is not None and value > release, trip_s
    )


def _high_v(i: Inputs) -> float | None:
    return None if i.snap.worst_high is None else i.snap.worst_high.voltage_v


def _low_v(i: Inputs) -> float | None:
    return None if i.snap.worst_low is None else i.snap.worst_low.voltage_v


def _lowest_any_v(i: Inputs) -> float | None:
    """The lowest reading of every cell, suspect cells included (deep discharge)."""
    low = i.snap.lowest_any or i.snap.worst_low
    return None if low is None else low.voltage_v


def _no_modules(snap: PackSnapshot) -> bool:
    return snap.present_modules == 0


def _module_missing(i: Inputs) -> Condition:
    snap = i.snap
    return Condition(
        bool(snap.missing) or _no_modules(snap), not snap.missing and not _no_modules(snap), 0.0
    )


def _module_missing_message(i: Inputs) -> str:
    if _no_modules(i.snap):
        return "no module reports"
    return "missing: " + ", ".join(map(str, i.snap.missing))


def _cell_count(i: Inputs) -> Condition:
    snap = i.snap
    return Condition(
        snap.present_modules > 0 and (not snap.cell_count_ok or bool(snap.unexpected)),
        snap.cell_count_ok and not snap.unexpected,
        i.settings.fault_trip_s,
    )


def _cell_count_message(i: Inputs) -> str:
    snap = i.snap
    message = f"{snap.cell_count} valid cells, expected {snap.expected_cell_count}"
    if snap.unexpected:
        message += "; unexpected " + ", ".join(map(str, snap.unexpected))
    if snap.invalid_cells:
        message += "; " + _shorten([str(c) for c in snap.invalid_cells])
    return message


def _without_temperature(snap: PackSnapshot) -> list[str]:
    return [
        str(m.key)
        for m in snap.modules
        if m.present and not any(t is not None for t in m.temperatures_c)
    ]


def _no_temperature_at_all(snap: PackSnapshot) -> bool:
    """No present module has a reading: every temperature limit would be blind."""
    present = [m for m in snap.modules if m.present]
    return bool(present) and len(_without_temperature(snap)) == len(present)


def _temperature_missing(i: Inputs) -> Condition:
    # a fitted sensor that dropped out may be the hottest one: it is not "absent", with or
    # without require_temperature
    dropped = bool(i.snap.dropped_sensors)
    if i.settings.require_temperature:
        unread = bool(_without_temperature(i.snap))
    else:
        # without the requirement a module's neighbours stand in for a sensor never fitted;
        # with no reading anywhere, a pack at -10 °C or +60 °C would be charged at full current
        unread = _no_temperature_at_all(i.snap)
    missing = dropped or unread
    return Condition(missing, not missing, i.settings.fault_trip_s)


def _temperature_missing_message(i: Inputs) -> str:
    without = _without_temperature(i.snap)
    parts = [str(d) for d in i.snap.dropped_sensors]
    if without or not parts:
        parts.insert(0, "no temperature from " + ", ".join(without))
    return _shorten(parts)


def _over_current(i: Inputs, charging: bool) -> tuple[float, float, float] | None:
    """(measured flow, limit, margin) in one direction, or None when either is unknown."""
    s = i.settings
    if i.reference is None or i.current_a is None:
        return None
    limit_a = i.reference[0] if charging else i.reference[1]
    flow_a = max(i.current_a if charging else -i.current_a, 0.0)
    margin = max(s.over_current_margin_a, limit_a * s.over_current_margin_pct / 100.0)
    return flow_a, limit_a, margin


def _over_current_condition(charging: bool) -> Callable[[Inputs], Condition]:
    def condition(i: Inputs) -> Condition:
        s = i.settings
        known = _over_current(i, charging)
        if known is None:  # no reading: neither trips nor releases
            return Condition(False, False, s.over_current_trip_s, s.over_current_release_s)
        flow_a, limit_a, margin = known
        return Condition(
            flow_a > limit_a + margin,
            flow_a <= limit_a + margin / 2.0,
            s.over_current_trip_s,
            s.over_current_release_s,
        )

    return condition


def _over_current_message(charging: bool) -> Callable[[Inputs], str]:
    def message(i: Inputs) -> str:
        flow_a, limit_a, margin = _over_current(i, charging) or (0.0, 0.0, 0.0)
        what = "charging" if charging else "discharging"
        return (
            f"over-current while {what}: the shunt measured {flow_a:.1f} A > limit {limit_a:.1f} A "
            f"+ margin {margin:.1f} A"
        )

    return message


# Every alarm but deep discharge, in the order they are reported. The alarm set is this table:
# a check cannot exist without its condition and message, nor a reading without its check.
CHECKS: tuple[Check, ...] = (
    Check("module_missing", True, True, _module_missing, _module_missing_message),
    Check("cell_count", True, True, _cell_count, _cell_count_message),
    Check(
        "temperature_missing",
        True,
        True,
        _temperature_missing,
        _temperature_missing_message,
    ),
    Check(
        "over_voltage",
        True,
        False,
        lambda i: _above(
            _high_v(i),
            i.settings.over_voltage_v,
            i.settings.over_voltage_release_v,
            i.settings.over_voltage_trip_s,
        ),
        lambda i: f"cell over-voltage: {i.snap.worst_high} > {i.settings.over_voltage_v:.3f} V",
    ),
    Check(
        "under_voltage",
        False,
        True,
        lambda i: _below(
            _low_v(i),
            i.settings.under_voltage_v,
            i.settings.under_voltage_release_v,
            i.settings.under_voltage_trip_s,
        ),
        lambda i: f"cell under-voltage: {i.snap.worst_low} < {i.settings.under_voltage_v:.3f} V",
    ),
    Check(
        "over_temperature",
        True,
        True,
        lambda i: _above(
            i.snap.temp_max_c,
            i.settings.over_temperature_c,
            i.settings.over_temperature_release_c,
            i.settings.temperature_trip_s,
        ),
        lambda i: (
            f"over-temperature: {i.snap.temp_max_c} °C at {i.snap.temp_max_at} "
            f"> {i.settings.over_temperature_c} °C"
        ),
    ),
    Check(
        "under_temperature",
        True,
        False,
        lambda i: _below(
            i.snap.temp_min_c,
            i.settings.under_temperature_c,
            i.settings.under_temperature_release_c,
            i.settings.temperature_trip_s,
        ),
        lambda i: (
            f"too cold to charge: {i.snap.temp_min_c} °C at {i.snap.temp_min_at} "
            f"< {i.settings.under_temperature_c} °C"
        ),
    ),
    Check(
        "too_hot_to_charge",
        True,
        False,
        lambda i: _above(
            i.snap.temp_max_c,
            i.settings.charge_max_temperature_c,
            i.settings.charge_max_temperature_c - i.settings.temperature_hysteresis_c,
            i.settings.temperature_trip_s,
        ),
        lambda i: (
            f"too hot to charge: {i.snap.temp_max_c} °C at {i.snap.temp_max_at} "
            f"> {i.settings.charge_max_temperature_c} °C"
        ),
    ),
    Check(
        "too_cold_to_discharge",
        False,
        True,
        lambda i: _below(
            i.snap.temp_min_c,
            i.settings.discharge_min_temperature_c,
            i.settings.discharge_min_temperature_c + i.settings.temperature_hysteresis_c,
            i.settings.temperature_trip_s,
        ),
        lambda i: (
            f"too cold to discharge: {i.snap.temp_min_c} °C at {i.snap.temp_min_at} "
            f"< {i.settings.discharge_min_temperature_c} °C"
        ),
    ),
    Check(
        "cell_delta",
        True,
        True,
        lambda i: _above(
            i.snap.delta_v,
            i.settings.cell_delta_alarm_v,
            i.settings.cell_delta_release_v,
            i.settings.cell_delta_trip_s,
        ),
        lambda i: (
            f"cell delta {i.snap.delta_v or 0:.3f} V > {i.settings.cell_delta_alarm_v:.3f} V "
            f"(highest {i.snap.max_cell}, lowest {i.snap.min_cell})"
        ),
    ),
    Check(
        "frame_sanity",
        True,
        True,
        lambda i: Condition(bool(i.frame_problems), not i.frame_problems, 0.0),
        lambda i: "frame sanity: " + _shorten(i.frame_problems),
    ),
    Check(
        "over_current_charge",
        True,
        False,
        _over_current_condition(charging=True),
        _over_current_message(charging=True),
    ),
    Check(
        "over_current_discharge",
        False,
        True,
        _over_current_condition(charging=False),
        _over_current_message(charging=False),
    ),
)
# Latched by its condition, released only by a person (Protection.release_deep_discharge).
DEEP_DISCHARGE = Check(
    "deep_discharge",
    True,
    True,
    lambda i: _below(
        _lowest_any_v(i),
        i.settings.deep_discharge_v,
        math.inf,
        i.settings.deep_discharge_trip_s,
    ),
    lambda i: (
        f"deep discharge: {i.snap.lowest_any or i.snap.worst_low} < "
        f"{i.settings.deep_discharge_v:.3f} V; "
        "charge and discharge blocked until a person releases it (action release_deep_discharge)"
    ),
)
ALARM_CODES = (*(check.code for check in CHECKS), DEEP_DISCHARGE.code)
# A released cell between deep discharge and under-voltage is expected to stay under-voltage
# until the pre-charge has brought it back: that alarm does not stop a release.
_RELEASE_TOLERATES = frozenset({DEEP_DISCHARGE.code, "under_voltage"})
_MAX_PROBLEMS_SHOWN = 4


@dataclass(frozen=True, slots=True)
class DeepDischarge:
    """The deep-discharge latch: set when a cell fell below ``deep_discharge_v``, cleared only
    by a person (`Protection.release_deep_discharge`)."""

    latched: bool
    since_s: float
    message: str


class Protection:
    """Turns pack snapshots into limits; call `update` every ~0.1-0.5 s with the time."""

    def __init__(self, settings: ProtectionSettings) -> None:
        self.settings = settings
        self._latches = {check: _Latch() for check in CHECKS}
        self._full = _Latch()
        self._empty = _Latch()
        self._precharge = _Latch()
        self._deep = DeepDischarge(False, 0.0, "")
        self._deep_trip_since: float | None = None
        self._ccl_a = 0.0
        self._dcl_a = 0.0
        self._last_s: float | None = None
        self._first_s: float | None = None
        self._history: deque[tuple[float, float, float]] = deque()  # (now_s, CCL, DCL)
        self._active: tuple[Alarm, ...] = ()

    def reconfigure(self, settings: ProtectionSettings) -> None:
        """New settings; alarm states, the deep-discharge latch and the ramps carry on."""
        self.settings = settings

    # ------------------------------------------------------------------ deep discharge

    @property
    def deep_discharge(self) -> DeepDischarge:
        return self._deep

    def latch_deep_discharge(self, message: str, now_s: float) -> None:
        """Set the latch without a reading (a restart restoring it from its store)."""
        self._deep = DeepDischarge(True, now_s, message)

    def release_deep_discharge(self, snap: PackSnapshot, now_s: float) -> None:
        """A person's release of the latch; raises ValueError saying why it is refused."""
        s = self.settings
        if not self._deep.latched:
            raise ValueError("refused: no deep-discharge latch is set")
        if not snap.complete:
            missing = ", ".join(map(str, (*snap.missing, *snap.unexpected))) or "none"
            raise ValueError(
                f"refused: the pack is not complete ({snap.cell_count} valid cells of "
                f"{snap.expected_cell_count}; missing or unexpected modules: {missing}); every "
                "cell must be read before a release"
            )
        lo = snap.lowest_any or snap.worst_low
        if lo is None or lo.voltage_v < s.deep_discharge_v:
            raise ValueError(
                f"refused: {lo} is still below deep_discharge_v {s.deep_discharge_v:.3f} V; "
                "inspect the cell and bring it above that by other means first"
            )
        others = [a for a in self._active if a.code not in _RELEASE_TOLERATES]
        if others:
            raise ValueError(
                "refused: the pack is not otherwise healthy: "
                + "; ".join(f"{a.code} ({a.message})" for a in others)
            )
        self._deep = DeepDischarge(False, now_s, "")
        self._deep_trip_since = None

    # ------------------------------------------------------------------ limits

    def update(
        self,
        snap: PackSnapshot,
        now_s: float,
        *,
        frame_problems: Sequence[str] = (),
        current_a: float | None = None,
    ) -> Limits:
        """Limits at ``now_s`` from the pack, the frame checks and the measured current
        (+ = charging; None = no fresh measurement)."""
        s = self.settings
        if self._first_s is None:
            self._first_s = now_s
        alarms = self._alarms(snap, now_s, frame_problems, current_a)
        self._active = alarms
        block_charge = [a.code for a in alarms if a.blocks_charge]
        block_discharge = [a.code for a in alarms if a.blocks_discharge]
        ccl_target, charge_reason = self._charge_target(snap, now_s, block_charge)
        dcl_target, discharge_reason = self._discharge_target(snap, now_s, block_discharge)
        dt = 0.0 if self._last_s is None else min(max(now_s - self._last_s, 0.0), _MAX_RAMP_STEP_S)
        self._last_s = now_s
        self._ccl_a = _ramp(self._ccl_a, ccl_target, s.ramp_a_per_s * dt)
        self._dcl_a = _ramp(self._dcl_a, dcl_target, s.ramp_a_per_s * dt)
        self._remember(now_s)
        if self._ccl_a < ccl_target and not charge_reason:
            charge_reason = "ramping up"
        if self._dcl_a < dcl_target and not discharge_reason:
            discharge_reason = "ramping up"
        return Limits(
            now_s=now_s,
            cvl_v=s.charge_end_v * snap.series_cells,
            ccl_a=self._ccl_a,
            dcl_a=self._dcl_a,
            charge_allowed=self._ccl_a > 0.0,
            discharge_allowed=self._dcl_a > 0.0,
            alarms=alarms,
            charge_reason=charge_reason,
            discharge_reason=discharge_reason,
        )

    def _remember(self, now_s: float) -> None:
        """Keep the limits of the last ``over_current_grace_s`` (and always the latest)."""
        history = self._history
        history.append((now_s, self._ccl_a, self._dcl_a))
        while len(history) > 1 and history[0][0] < now_s - self.settings.over_current_grace_s:
            history.popleft()

    def _reference(self, now_s: float) -> tuple[float, float] | None:
        """The highest CCL and DCL of the grace window: what a device may still be following.
        None until the service has run for that long (it cannot know what came before)."""
        grace = self.settings.over_current_grace_s
        if not self._history or self._first_s is None or now_s - self._first_s < grace:
            return None
        recent = [h for h in self._history if h[0] >= now_s - grace] or [self._history[-1]]
        return max(h[1] for h in recent), max(h[2] for h in recent)

    # ------------------------------------------------------------------ alarms

    def _alarms(
        self,
        snap: PackSnapshot,
        now_s: float,
        frame_problems: Sequence[str],
        current_a: float | None,
    ) -> tuple[Alarm, ...]:
        inputs = Inputs(self.settings, snap, frame_problems, self._reference(now_s), current_a)
        active = [
            alarm
            for check, latch in self._latches.items()
            if (alarm := self._judge(check, latch, inputs, now_s)) is not None
        ]
        if self._deep_discharge_step(inputs, now_s):
            active.append(
                Alarm(
                    DEEP_DISCHARGE.code,
                    self._deep.message,
                    DEEP_DISCHARGE.blocks_charge,
                    DEEP_DISCHARGE.blocks_discharge,
                    self._deep.since_s,
                )
            )
        return tuple(active)

    def _judge(self, check: Check, latch: _Latch, inputs: Inputs, now_s: float) -> Alarm | None:
        """Step one check's latch; its alarm while active (the message of its last trip)."""
        condition = check.condition(inputs)
        if condition.tripping:
            latch.message = check.message(inputs)
        release_s = (
            self.settings.release_delay_s if condition.release_s is None else condition.release_s
        )
        if not latch.step(
            condition.tripping, condition.releasable, now_s, condition.trip_s, release_s
        ):
            return None
        return Alarm(
            check.code,
            latch.message,
            check.blocks_charge,
            check.blocks_discharge,
            latch.active_since,
        )

    def _deep_discharge_step(self, inputs: Inputs, now_s: float) -> bool:
        """Trip the latch after ``deep_discharge_trip_s`` below the threshold; never release."""
        if self._deep.latched:
            return True
        condition = DEEP_DISCHARGE.condition(inputs)
        if not condition.tripping:
            self._deep_trip_since = None
            return False
        if self._deep_trip_since is None:
            self._deep_trip_since = now_s
        if now_s - self._deep_trip_since < condition.trip_s:
            return False
        self._deep = DeepDischarge(True, now_s, DEEP_DISCHARGE.message(inputs))
        return True

    # ------------------------------------------------------------------ targets

    def _charge_target(
        self, snap: PackSnapshot, now_s: float, blocked_by: list[str]
    ) -> tuple[float, str]:
        s = self.settings
        hi, lo = snap.worst_high, snap.worst_low
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
        low = None if lo is None else lo.voltage_v
        precharge = self._precharge.step(
            low is not None and low < s.under_voltage_v,
            low is not None and low > s.under_voltage_release_v,
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
        factor, why = self._charge_temperature_factor(snap)
        if factor < 1.0:
            target *= factor
            reason = why
        if precharge and target > s.precharge_current_a:
            target = s.precharge_current_a
            reason = (
                f"pre-charge: lowest cell {lo} below {s.under_voltage_v:.3f} V; at most "
                f"{s.precharge_current_a:g} A until it is above {s.under_voltage_release_v:.3f} V"
            )
        return target, reason

    def _charge_temperature_factor(self, snap: PackSnapshot) -> tuple[float, str]:
        """0..1: CCL derates towards both ends of the charge window and is 0 outside it."""
        s = self.settings
        t_min, t_max = snap.temp_min_c, snap.temp_max_c
        factor, reason = 1.0, ""
        if t_min is not None and t_min < s.cold_charge_derate_start_c:
            span = s.cold_charge_derate_start_c - s.under_temperature_c
            factor = _clamp01((t_min - s.under_temperature_c) / span)
            what = "too cold to charge" if factor == 0.0 else "cold derate"
            reason = f"{what}: {t_min} °C at {snap.temp_min_at}"
        if t_max is not None and t_max > s.hot_charge_derate_start_c:
            span = s.charge_max_temperature_c - s.hot_charge_derate_start_c
            hot = _clamp01((s.charge_max_temperature_c - t_max) / span)
            if hot < factor:
                what = "too hot to charge" if hot == 0.0 else "hot charge derate"
                factor, reason = hot, f"{what}: {t_max} °C at {snap.temp_max_at}"
        return factor, reason

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
        t_min = snap.temp_min_c
        if t_min is not None and t_min < s.discharge_min_temperature_c:
            return 0.0, f"too cold to discharge: {t_min} °C at {snap.temp_min_at}"
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


def _shorten(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    return shown + (f"; and {more} more" if more > 0 else "")


def _ramp(current: float, target: float, step: float) -> float:
    if target <= current:
        return target
    return min(target, current + step)


def _clamp01(value: float) -> float:
    return min(max(value, 0.0), 1.0)
