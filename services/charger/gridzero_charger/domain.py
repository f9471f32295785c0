"""The charger's own safety clamp and state, pure: time is the parameter ``now_s``.

The controller asks for a charge current or power; the bms publishes the battery's limits.
`decide` turns both into what the rectifier is told: DC on or off, the online voltage
set-point and the online current fraction, and the reason for the effective limit. Whatever
the controller asks, the result never exceeds the bms limits (CVL, CCL, charge allowed), the
pack's own ceiling (cells x 4.2 V, whatever the bms says), the charger's own settings or the
rectifier's ranges (PurpleAlien rectifier.py, endless-sphere); stale inputs and alarms turn the DC output off.

The charger also keeps DC off on its own account (`decide`'s ``hold_off``): while the stored
fallback is not confirmed by the rectifier (`FallbackWrite`) and after a measured over-current
(`OverCurrentWatch`, latched until a person resets it).

Times (``at_s``, ``now_s``) are local monotonic seconds: the service keeps each message with
the time it arrived by its own clock (`Freshness.take`, a `FreshValue`) and ages it with
`is_fresh` (gridzero.runtime.freshness); the payload's ``ts`` only serves to refuse a message
stamped ahead of this host's clock. So another host's clock never makes a value fresh or
stale here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from gridzero import chemistry
from gridzero.contract import BmsLimits
from gridzero.runtime.bounds import Bound, bound_problems
from gridzero.runtime.freshness import FreshValue, is_fresh
from gridzero_charger import codec
from gridzero_charger.codec import (
    FALLBACK_FRACTION_MAX,
    FRACTION_MAX,
    FRACTION_MIN,
    VOLTAGE_MAX_V,
    VOLTAGE_MIN_V,
    CanFrame,
    Control,
    Quantity,
    Register,
)


class Reason(StrEnum):
    """Why the effective limit is what it is (the first rule that decided it)."""

    CONTROLLER = "controller"
    CVL = "cvl"
    PACK_MAX = "pack_max"
    CCL = "ccl"
    MAX_POWER = "max_power"
    ALARM = "alarm"
    STALE_BMS = "stale_bms"
    STALE_COMMAND = "stale_command"
    BELOW_MIN_CURRENT = "below_min_current"
    TAPER = "taper"
    DISABLED = "disabled"
    OVER_CURRENT = "over_current"
    FALLBACK_UNCONFIRMED = "fallback_unconfirmed"
    CELLS_MISMATCH = "cells_mismatch"


class LinkState(StrEnum):
    """Whether the rectifier answers our polls (values as in the MQTT contract)."""

    UNKNOWN = "unknown"
    OK = "ok"
    LOST = "lost"


# 12 S NMC at 3.9 V per cell: about half charge, so a rectifier that falls back to its
# stored defaults (service dead for ~30 s) can never push any cell near 4.1-4.2 V, even
# with the pack's worst tolerated cell imbalance.
CELLS_IN_SERIES = chemistry.CELLS_PER_MODULE
DEFAULT_FALLBACK_VOLTAGE_V = CELLS_IN_SERIES * 3.9


@dataclass(frozen=True, slots=True)
class RectifierModel:
    """What one R48 model delivers: the current the 1.21 (121 %) fraction stands for
    (PurpleAlien rectifier.py, endless-sphere) and its rated output power."""

    name: str
    rated_current_a: float
    rated_power_w: float


# R48-3000e3: 62.5 A at 1.21 (PurpleAlien, luckylinux, ESPHome). R48-2000e3: no source
# states it; 2000 W / 48 V = 41.7 A by analogy [U]. Other models are not supported: their
# scaling is unknown, and a wrong one over-delivers current.
RECTIFIER_MODELS: dict[str, RectifierModel] = {
    m.name: m
    for m in (
        RectifierModel("R48-3000e3", codec.DEFAULT_RATED_CURRENT_A, 3000.0),
        RectifierModel("R48-2000e3", 41.7, 2000.0),
    )
}
DEFAULT_RECTIFIER_MODEL = "R48-3000e3"
# The two published scalings of the fraction: 1.21 = rated (majority) and 1.00 = rated (R48.c).
FRACTION_AT_RATED_MIN = 1.00


SETTING_BOUNDS: dict[str, Bound] = {
    "max_charge_power_w": Bound(50.0, 3000.0, "W"),
    "rated_current_a": Bound(
        min(m.rated_current_a for m in RECTIFIER_MODELS.values()),
        max(m.rated_current_a for m in RECTIFIER_MODELS.values()),
        "A",
    ),
    "fraction_at_rated": Bound(FRACTION_AT_RATED_MIN, FRACTION_MAX, ""),
    "min_current_a": Bound(0.5, 50.0, "A"),
    # 11 cells: 44 V fallback, the least above the rectifier's 41 V; 14 cells: 58.8 V full,
    # about the rectifier's 58.5 V top
    "cells_in_series": Bound(11, 14, "cells"),
    "fallback_voltage_v": Bound(VOLTAGE_MIN_V, VOLTAGE_MAX_V, "V"),
    "bms_stale_s": Bound(0.5, 10.0, "s"),
    "command_stale_s": Bound(0.5, 60.0, "s"),
    "refresh_period_s": Bound(0.5, 15.0, "s"),
    "link_timeout_s": Bound(2.0, 120.0, "s"),
    "measurement_stale_s": Bound(1.0, 10.0, "s"),
    "over_current_margin_a": Bound(0.5, 10.0, "A"),
    "over_current_margin_pct": Bound(5.0, 50.0, "%"),
    "over_current_trip_s": Bound(0.5, 10.0, "s"),
}


@dataclass(frozen=True, slots=True)
class ChargerSettings:
    """The charger's own limits and timings (defaults and sources in services/charger/README.md).

    All but ``enabled`` and ``max_charge_power_w`` are start-up settings; those two are
    runtime settings that may only tighten the start-up values (service.py)."""

    enabled: bool = True
    max_charge_power_w: float = 3000.0
    rated_current_a: float = codec.DEFAULT_RATED_CURRENT_A
    fraction_at_rated: float = codec.DEFAULT_FRACTION_AT_RATED
    min_current_a: float = 5.2
    cells_in_series: int = CELLS_IN_SERIES
    fallback_voltage_v: float = DEFAULT_FALLBACK_VOLTAGE_V
    bms_stale_s: float = 3.0
    command_stale_s: float = 5.0
    refresh_period_s: float = 5.0
    link_timeout_s: float = 10.0
    measurement_stale_s: float = 3.0
    over_current_margin_a: float = 2.0
    over_current_margin_pct: float = 10.0
    over_current_trip_s: float = 2.0

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise ValueError("charger settings: " + "; ".join(problems))

    @property
    def max_current_a(self) -> float:
        """The most the rectifier delivers: the largest fraction it accepts, in amps."""
        return self.fraction_to_current(FRACTION_MAX)

    @property
    def usable_min_current_a(self) -> float:
        """The least the rectifier regulates: the setting, never below the smallest fraction."""
        return max(self.min_current_a, self.fraction_to_current(FRACTION_MIN))

    @property
    def pack_ceiling_v(self) -> float:
        """No voltage set-point goes above this, whatever the bms says: cells x 4.2 V."""
        return min(chemistry.pack_max_v(self.cells_in_series), VOLTAGE_MAX_V)

    @property
    def fallback_ceiling_v(self) -> float:
        """The stored fallback never goes above this: cells x 4.0 V."""
        return min(chemistry.fallback_max_v(self.cells_in_series), VOLTAGE_MAX_V)

    def current_to_fraction(self, current_a: float) -> float:
        return current_a / self.rated_current_a * self.fraction_at_rated

    def fraction_to_current(self, fraction: float) -> float:
        return fraction / self.fraction_at_rated * self.rated_current_a


def settings_problems(settings: ChargerSettings) -> list[str]:
    """Every bad setting with its value and allowed range (empty when all are fine)."""
    problems: list[str] = []
    if settings.enabled not in (True, False):
        problems.append(f"enabled={settings.enabled!r} must be true or false")
    problems += bound_problems(settings, SETTING_BOUNDS)
    if not isinstance(settings.cells_in_series, int) or isinstance(settings.cells_in_series, bool):
        problems.append(f"cells_in_series={settings.cells_in_series!r} is not a whole number")
    elif not problems:
        problems += fallback_voltage_problems(settings.fallback_voltage_v, settings.cells_in_series)
    return problems


def fallback_voltage_problems(fallback_voltage_v: float, cells_in_series: int) -> list[str]:
    """Why a stored fallback voltage is too high for the pack ([] if it is fine)."""
    ceiling_v = chemistry.fallback_max_v(cells_in_series)
    if fallback_voltage_v <= ceiling_v:
        return []
    return [
        f"fallback_voltage_v={fallback_voltage_v:g} V is above {ceiling_v:g} V "
        f"({cells_in_series} cells x {chemistry.FALLBACK_CELL_MAX_V:g} V): the rectifier "
        "falls back to it unattended, so it must stay well below full"
    ]


@dataclass(frozen=True, slots=True)
class ChargeCommand:
    """What the controller asks: a current and/or a power (the smaller wins), an optional
    voltage (default: the bms CVL), whether to charge at all, and when the command arrived."""

    at_s: float
    current_a: float | None = None
    power_w: float | None = None
    voltage_v: float | None = None
    enable: bool = True


@dataclass(frozen=True, slots=True)
class OfflineDefaults:
    """What the rectifier falls back to when it is no longer refreshed (stored, EEPROM)."""

    voltage_v: float
    current_fraction: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rectifier is told now, and why."""

    dc_on: bool
    voltage_v: float
    current_a: float
    current_fraction: float
    reason: Reason
    voltage_reason: Reason

    @property
    def power_limit_w(self) -> float:
        return self.voltage_v * self.current_a if self.dc_on else 0.0


@dataclass(frozen=True, slots=True)
class ChargerAlarm:
    """One of the charger's own alarms: a machine code and a text for a person."""

    code: str
    message: str


def _finite(*values: float | None) -> bool:
    return all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in values)


def offline_defaults(settings: ChargerSettings) -> OfflineDefaults:
    """The stored fallback written at start-up: a voltage that cannot overcharge the pack
    (clamped again to cells x 4.0 V) and the smallest current the rectifier accepts."""
    voltage_v = min(max(settings.fallback_voltage_v, VOLTAGE_MIN_V), settings.fallback_ceiling_v)
    return OfflineDefaults(voltage_v, FALLBACK_FRACTION_MAX)


def _off(
    reason: Reason, settings: ChargerSettings, limits: FreshValue[BmsLimits] | None, now_s: float
) -> Decision:
    # the "harmless" online set-points sent while DC is off: the stored fallback, or CVL if
    # lower, and the least current, so a lost DC-off frame still leaves a harmless output
    voltage_v = offline_defaults(settings).voltage_v
    if (
        limits is not None
        and limits.fresh(now_s, settings.bms_stale_s)
        and _finite(limits.value.cvl_v)
        and limits.value.cvl_v >= VOLTAGE_MIN_V
    ):
        voltage_v = min(voltage_v, limits.value.cvl_v)
    return Decision(False, voltage_v, 0.0, FALLBACK_FRACTION_MAX, reason, reason)


def cells_mismatch(bms_cells: int | None, settings: ChargerSettings) -> str:
    """Why the bms's cells in series and the charger's disagree ("" if they agree or the bms
    has not said).

    Fewer cells than the charger is set for make its ceiling and the rectifier's stored
    fallback too high per cell: 14 set on a 12 S pack stores 54.6 V, 4.55 V a cell, which
    the rectifier charges to on its own once this service stops."""
    if bms_cells is None or bms_cells == settings.cells_in_series:
        return ""
    per_cell_v = settings.fallback_voltage_v / bms_cells
    return (
        f"the bms counts {bms_cells} cells in series, the charger is set for cells_in_series "
        f"{settings.cells_in_series}: its stored fallback {settings.fallback_voltage_v:.2f} V "
        f"is {per_cell_v:.2f} V a cell on the bms's pack (at most "
        f"{chemistry.FALLBACK_CELL_MAX_V:g} V); DC stays off until the settings agree"
    )


def cvl_above_ceiling(limits: FreshValue[BmsLimits] | None, settings: ChargerSettings) -> bool:
    """True if the bms asks for more than the pack can take (e.g. a wrong layout setting)."""
    if limits is None:
        return False
    cvl_v = limits.value.cvl_v
    return _finite(cvl_v) and cvl_v > settings.pack_ceiling_v


def _requested_current_a(command: ChargeCommand, voltage_v: float) -> float | None:
    wanted: list[float] = []
    if command.current_a is not None:
        wanted.append(command.current_a)
    if command.power_w is not None:
        wanted.append(command.power_w / voltage_v)
    return min(wanted) if wanted else None


# --- the end of a charge -------------------------------------------------------------------

# How far the measured current may be above the CCL during a taper, and for how long, before
# the taper's voltage is lowered by a step. The entry voltage already holds the current at or
# below what it was (about the minimum); this corrects a rectifier whose output sits above its
# set-point or cells that drift apart. The over-current trip stays the last barrier.
TAPER_TOLERANCE_A = 0.5
TAPER_OVER_S = 2.0
TAPER_STEP_V = 0.05
# A taper ends (back to constant current) only once the CCL is this far above the minimum:
# held at constant voltage the current falls, the cells' IR rise with it, and the CCL comes
# back above the minimum; returning to the minimum current at once would push it under again
# (on the bench, constant current and constant voltage alternated every second).
TAPER_RELEASE_A = 1.0
# How far above the bms's pack voltage the rectifier's own reading may set a taper's voltage:
# the cables' and contacts' drop at the minimum current (5 A through 0.1 Ohm). A reading
# further above is not believed (a corrupt reply, a wrong calibration).
TAPER_MAX_DROP_V = 0.5


@dataclass(frozen=True, slots=True)
class Taper:
    """Constant voltage at the end of a charge, once the bms's CCL is below the rectifier's
    minimum current (README "The end of a charge").

    Near full the bms tapers its CCL with the highest cell's voltage. The rectifier cannot
    regulate less than its minimum current (~5.2 A), but as a constant-voltage source it
    delivers whatever the pack accepts at its voltage set-point, which falls as the cells
    fill. So a running charge whose CCL falls just below the minimum (by at most
    `TAPER_TOLERANCE_A`) goes on at the output's voltage of that moment (`taper_entry_v`),
    with the least current limit: the current starts at what it was and only falls, and the
    cells, held at that voltage, stay where the bms's limit put them. Switching the output off
    instead would let the cells relax, the limit come back, and the charge start again: on and
    off every 2 s (issue 18, hh-s8-011). A CCL that drops by more than `TAPER_TOLERANCE_A` at
    once, on entry or during the taper (a bms derating for temperature, a warning), stops the
    charge as before: the current could not come down before the over-current trip latched.
    A CCL that drifts down slowly (the cells evening out under the held voltage: 5.2 -> 3.7 A
    over an hour on the bench) is the step-down's to follow."""

    voltage_v: float
    over_since_s: float | None = None
    # False: a candidate at the output's voltage now; True: in force since an earlier step
    engaged: bool = False
    # the CCL at the last step, against which a sudden drop is judged
    ccl_a: float = math.inf


def next_taper(
    taper: Taper | None,
    running: bool,
    output_voltage_v: float | None,
    measured_a: float | None,
    ccl_a: float,
    now_s: float,
) -> Taper | None:
    """The taper `decide` may use now (pure).

    Only a running charge tapers (``running``: the last decision had DC on); a stopped one
    starts only at or above the minimum. Not yet tapering: a candidate at the output's voltage
    now (the rectifier's own reading, which its regulation holds, else the pack's), so the
    current starts at what it is. Tapering: the same voltage, lowered by `TAPER_STEP_V` once
    the measured current has been above the CCL by `TAPER_TOLERANCE_A` for `TAPER_OVER_S`;
    none (the charge stops) when the CCL fell by more than `TAPER_TOLERANCE_A` since the last
    step."""
    if not running or not _finite(ccl_a):
        return None
    if taper is None:
        if output_voltage_v is None or not _finite(output_voltage_v):
            return None
        return Taper(output_voltage_v, ccl_a=ccl_a)
    if ccl_a < taper.ccl_a - TAPER_TOLERANCE_A:
        return None
    return _held(taper, measured_a, ccl_a, now_s)


def _held(taper: Taper, measured_a: float | None, ccl_a: float, now_s: float) -> Taper:
    """An engaged taper one step on: its voltage, a step lower once the measured current has
    been above the CCL by `TAPER_TOLERANCE_A` for `TAPER_OVER_S`."""
    over = measured_a is not None and _finite(measured_a) and measured_a > ccl_a + TAPER_TOLERANCE_A
    if not over:
        return Taper(taper.voltage_v, engaged=True, ccl_a=ccl_a)
    since = now_s if taper.over_since_s is None else taper.over_since_s
    if now_s - since >= TAPER_OVER_S:
        return Taper(taper.voltage_v - TAPER_STEP_V, engaged=True, ccl_a=ccl_a)
    return Taper(taper.voltage_v, since, engaged=True, ccl_a=ccl_a)


def taper_entry_v(output_voltage_v: float | None, pack_voltage_v: float | None) -> float | None:
    """The voltage a taper starts at: the rectifier's own output reading (what its regulation
    holds), at most `TAPER_MAX_DROP_V` above the bms's pack voltage; the pack's voltage alone
    when the rectifier has no fresh reading; None when neither is known."""
    readings = [v for v in (output_voltage_v, pack_voltage_v) if v is not None and _finite(v)]
    if not readings:
        return None
    if pack_voltage_v is None or not _finite(pack_voltage_v):
        return readings[0]
    return min(readings[0], pack_voltage_v + TAPER_MAX_DROP_V)


def taper_holds(taper: Taper, ccl_a: float, min_a: float) -> bool:
    """Whether the CCL calls for the taper's constant voltage: a candidate when the CCL is
    below the minimum by at most `TAPER_TOLERANCE_A`; an engaged taper while it is above 0
    and below the minimum + `TAPER_RELEASE_A` (a lower CCL is the step-down's to follow)."""
    if not _finite(taper.voltage_v, ccl_a) or ccl_a <= 0.0:
        return False
    if taper.engaged:
        return ccl_a < min_a + TAPER_RELEASE_A
    return min_a - TAPER_TOLERANCE_A <= ccl_a < min_a


def _taper_applies(
    taper: Taper, ccl_a: float, current_a: float, reason: Reason, settings: ChargerSettings
) -> bool:
    """Whether the charge goes on at the taper's constant voltage (`taper_holds`) and nothing
    but the CCL asks for less than the minimum (a controller or a power cap below it is
    refused as before)."""
    if not taper_holds(taper, ccl_a, settings.usable_min_current_a):
        return False
    return reason is Reason.CCL or current_a >= settings.usable_min_current_a


# One early return per safety rule, in priority order: clearer than any table of lambdas.
def decide(  # noqa: PLR0911
    command: ChargeCommand | None,
    fresh_limits: FreshValue[BmsLimits] | None,
    settings: ChargerSettings,
    now_s: float,
    pack_voltage_v: float | None = None,
    *,
    hold_off: Reason | None = None,
    taper: Taper | None = None,
) -> Decision:
    """The rectifier's state for ``now_s``; every rule is in services/charger/README.md "Safety".

    ``hold_off`` is the charger's own reason to keep DC off (a latched over-current, an
    unconfirmed stored fallback): it comes before every other rule. ``taper`` (`next_taper`)
    lets a running charge whose CCL fell below the minimum current go on at constant voltage."""
    if hold_off is not None:
        return _off(hold_off, settings, fresh_limits, now_s)
    if not settings.enabled:
        return _off(Reason.DISABLED, settings, fresh_limits, now_s)
    if (
        fresh_limits is None
        or not fresh_limits.fresh(now_s, settings.bms_stale_s)
        or not _finite(fresh_limits.value.cvl_v, fresh_limits.value.ccl_a)
    ):
        return _off(Reason.STALE_BMS, settings, None, now_s)
    limits = fresh_limits.value
    if limits.alarm:
        return _off(Reason.ALARM, settings, fresh_limits, now_s)
    if command is None or not is_fresh(command.at_s, now_s, settings.command_stale_s):
        return _off(Reason.STALE_COMMAND, settings, fresh_limits, now_s)
    if not command.enable or not _finite(
        command.current_a, command.power_w, command.voltage_v, pack_voltage_v
    ):
        return _off(Reason.CONTROLLER, settings, fresh_limits, now_s)
    if not limits.charge_allowed or limits.ccl_a <= 0.0:
        return _off(Reason.CCL, settings, fresh_limits, now_s)

    voltage_v, voltage_reason = _voltage(command, limits, settings)
    if voltage_v < VOLTAGE_MIN_V:
        return _off(voltage_reason, settings, fresh_limits, now_s)

    # Power -> current with the pack voltage when known (accurate); the power cap uses the
    # set-point, the highest voltage the output can reach, so V x I never exceeds it.
    basis_v = pack_voltage_v if pack_voltage_v is not None and pack_voltage_v > 0 else voltage_v
    requested_a = _requested_current_a(command, basis_v)
    if requested_a is None or requested_a <= 0.0:
        return _off(Reason.CONTROLLER, settings, fresh_limits, now_s)
    current_a, reason = min(
        (
            (requested_a, Reason.CONTROLLER),
            (limits.ccl_a, Reason.CCL),
            (settings.max_charge_power_w / voltage_v, Reason.MAX_POWER),
            (settings.max_current_a, Reason.MAX_POWER),
        ),
        key=lambda pair: pair[0],
    )
    if taper is not None and _taper_applies(taper, limits.ccl_a, current_a, reason, settings):
        return _tapering(min(taper.voltage_v, voltage_v), current_a, settings, fresh_limits, now_s)
    if current_a < settings.usable_min_current_a:
        return _off(Reason.BELOW_MIN_CURRENT, settings, fresh_limits, now_s)
    fraction = min(max(settings.current_to_fraction(current_a), FRACTION_MIN), FRACTION_MAX)
    # The controller's own current/power is binding; name CVL if it also cut the voltage asked.
    if reason is Reason.CONTROLLER and _cvl_cut_voltage(command, limits):
        reason = Reason.CVL
    return Decision(True, voltage_v, current_a, fraction, reason, voltage_reason)


def _tapering(
    voltage_v: float,
    ccl_a: float,
    settings: ChargerSettings,
    limits: FreshValue[BmsLimits],
    now_s: float,
) -> Decision:
    """Constant voltage (the taper's, never above what the rules above allow) with the least
    current limit (`Taper`)."""
    if voltage_v < VOLTAGE_MIN_V:
        return _off(Reason.BELOW_MIN_CURRENT, settings, limits, now_s)
    return Decision(True, voltage_v, ccl_a, FRACTION_MIN, Reason.TAPER, Reason.TAPER)


def _cvl_cut_voltage(command: ChargeCommand, limits: BmsLimits) -> bool:
    return command.voltage_v is not None and command.voltage_v > limits.cvl_v


def _voltage(
    command: ChargeCommand, limits: BmsLimits, settings: ChargerSettings
) -> tuple[float, Reason]:
    """The online voltage: the controller's wish, never above CVL nor the pack's ceiling
    (cells x 4.2 V, which also keeps it inside the rectifier's range)."""
    if command.voltage_v is None or command.voltage_v > limits.cvl_v:
        voltage_v, reason = limits.cvl_v, Reason.CVL
    else:
        voltage_v, reason = command.voltage_v, Reason.CONTROLLER
    if voltage_v > settings.pack_ceiling_v:
        voltage_v, reason = settings.pack_ceiling_v, Reason.PACK_MAX
    return voltage_v, reason


# --- refresh and frames -------------------------------------------------------------------


def needs_refresh(
    sent: Decision | None,
    last_sent_s: float | None,
    decision: Decision,
    now_s: float,
    settings: ChargerSettings,
) -> bool:
    """Send now? When ``decision`` differs from what was last ``sent`` (not from the previous
    decision: a CCL falling by less than the tolerance per step must add up), else every
    refresh period (online values expire ~30 s)."""
    if sent is None or last_sent_s is None:
        return True
    changed = (
        sent.dc_on != decision.dc_on
        or abs(sent.voltage_v - decision.voltage_v) > 0.005
        or abs(sent.current_fraction - decision.current_fraction) > 0.0005
    )
    return changed or not 0.0 <= now_s - last_sent_s < settings.refresh_period_s


def decision_frames(decision: Decision, settings: ChargerSettings) -> tuple[CanFrame, ...]:
    """Frames that put a decision on the bus: off goes first when stopping, on goes last
    when starting, so the output never runs on the previous set-points. The encoder refuses
    a voltage above the pack's ceiling (cells x 4.2 V) as a second barrier."""
    setpoints = (
        codec.encode_voltage(decision.voltage_v, cells_in_series=settings.cells_in_series),
        codec.encode_current_fraction(decision.current_fraction),
    )
    control = codec.encode_control(Control(dc_off=not decision.dc_on))
    return (*setpoints, control) if decision.dc_on else (control, *setpoints)


def fallback_frames(settings: ChargerSettings) -> tuple[CanFrame, CanFrame]:
    """The stored fallback writes (voltage, then current), bounded again by the encoder."""
    defaults = offline_defaults(settings)
    return (
        codec.encode_voltage(
            defaults.voltage_v, offline=True, cells_in_series=settings.cells_in_series
        ),
        codec.encode_current_fraction(defaults.current_fraction, offline=True),
    )


def startup_frames(
    settings: ChargerSettings, *, store_fallback: bool = True
) -> tuple[CanFrame, ...]:
    """DC off first, then the stored fallback (unless ``store_fallback`` is False:
    `fallback_due_on_open`), then the same values online."""
    defaults = offline_defaults(settings)
    return (
        codec.encode_control(Control(dc_off=True)),
        *(fallback_frames(settings) if store_fallback else ()),
        codec.encode_voltage(defaults.voltage_v, cells_in_series=settings.cells_in_series),
        codec.encode_current_fraction(defaults.current_fraction),
    )


def fallback_due_on_open(written: FallbackWrite | None, settings: ChargerSettings) -> bool:
    """Whether a bus that has just opened gets the stored fallback written: only if this
    process has not written it yet or the values to store differ from those last written.

    The stored memory (EEPROM) wears with every write, and a link that opens but whose reads
    fail reopens about once a second (~90,000 writes a day if each open wrote). A write not
    confirmed yet is left to `FallbackWrite.retry_due`, whose back-off holds across reopens."""
    return written is None or written.frames != fallback_frames(settings)


# --- the stored fallback: written, then confirmed ---------------------------------------------


class FallbackStatus(StrEnum):
    """Where the stored fallback write stands (values as in the MQTT contract)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    UNANSWERED = "unanswered"


# The rectifier acknowledges a write at once (R48.c parses the acks); 2 s is many
# round trips. Retries back off to 5 min: a refused write changes nothing, but an unanswered
# one may have been stored, and the stored memory (EEPROM) wears with every write.
FALLBACK_ACK_TIMEOUT_S = 2.0
FALLBACK_RETRY_FIRST_S = 5.0
FALLBACK_RETRY_MAX_S = 300.0
# R48-1000e3, R48-2000e3 built before 2020 and R48-3500e3 store only 48-58 V (endless-sphere [S]).
STORED_VOLTAGE_MIN_SOME_MODELS_V = 48.0

_STORED_NAMES: dict[int, str] = {
    Register.OFFLINE_VOLTAGE: "voltage",
    Register.OFFLINE_CURRENT: "current",
}


def _raw(frame: CanFrame) -> int:
    return int.from_bytes(frame.data[4:8], "big")


def _value(frame: CanFrame) -> float:
    message = codec.decode_frame(frame.arbitration_id, frame.data)
    return message.value if isinstance(message, codec.SetPoint) else math.nan


@dataclass(frozen=True, slots=True)
class FallbackWrite:
    """One attempt at writing the stored fallback, and what the rectifier answered.

    DC may be switched on only once both stored registers are acknowledged with the value
    written (``confirmed``). An error reply or no answer within `FALLBACK_ACK_TIMEOUT_S` is
    an alarm; `retry_due` says when to write again (backing off)."""

    frames: tuple[CanFrame, ...]
    sent_at_s: float
    attempt: int = 1
    status: FallbackStatus = FallbackStatus.PENDING
    acked: frozenset[int] = frozenset()
    problem: str = ""

    @classmethod
    def sent(cls, settings: ChargerSettings, now_s: float) -> FallbackWrite:
        return cls(fallback_frames(settings), now_s)

    @property
    def confirmed(self) -> bool:
        return self.status is FallbackStatus.CONFIRMED

    @property
    def expected(self) -> dict[int, CanFrame]:
        return {frame.data[3]: frame for frame in self.frames}

    def on_message(self, message: codec.Message) -> FallbackWrite:
        """This attempt after one decoded reply (others leave it unchanged)."""
        if self.status is not FallbackStatus.PENDING:
            return self
        expected = self.expected
        if isinstance(message, codec.ErrorReply) and message.register in expected:
            frame = expected[message.register]
            return replace(
                self,
                status=FallbackStatus.REFUSED,
                problem=_refused_text(message, frame, self.attempt),
            )
        if isinstance(message, codec.WriteAck) and message.register in expected:
            frame = expected[message.register]
            if message.raw != _raw(frame):
                name = _STORED_NAMES.get(message.register, f"{message.register:#04x}")
                return replace(
                    self,
                    status=FallbackStatus.REFUSED,
                    problem=(
                        f"the rectifier acknowledged the stored fallback {name} with "
                        f"{message.raw:08X}, not the {_raw(frame):08X} written; DC stays off"
                    ),
                )
            acked = self.acked | {message.register}
            if acked >= set(expected):
                return replace(self, acked=acked, status=FallbackStatus.CONFIRMED, problem="")
            return replace(self, acked=acked)
        return self

    def check(self, now_s: float) -> FallbackWrite:
        """Unanswered once the acknowledgements are overdue."""
        if self.status is not FallbackStatus.PENDING:
            return self
        if now_s - self.sent_at_s < FALLBACK_ACK_TIMEOUT_S:
            return self
        missing = sorted(_STORED_NAMES.get(r, f"{r:#04x}") for r in set(self.expected) - self.acked)
        return replace(
            self,
            status=FallbackStatus.UNANSWERED,
            problem=(
                f"no acknowledgement of the stored fallback {' and '.join(missing)} within "
                f"{FALLBACK_ACK_TIMEOUT_S:g} s (attempt {self.attempt}); DC stays off"
            ),
        )

    def retry_after_s(self) -> float:
        return min(FALLBACK_RETRY_MAX_S, FALLBACK_RETRY_FIRST_S * 2.0 ** (self.attempt - 1))

    def retry_due(self, now_s: float) -> bool:
        failed = self.status in (FallbackStatus.REFUSED, FallbackStatus.UNANSWERED)
        return failed and now_s - self.sent_at_s >= self.retry_after_s()

    def retried(self, now_s: float) -> FallbackWrite:
        """The next attempt (same frames); the last problem stays visible until confirmed."""
        return FallbackWrite(self.frames, now_s, self.attempt + 1, problem=self.problem)

    def alarm(self) -> ChargerAlarm | None:
        if self.confirmed or not self.problem:
            return None
        return ChargerAlarm("fallback_unconfirmed", self.problem)


def _refused_text(message: codec.ErrorReply, frame: CanFrame, attempt: int) -> str:
    name = _STORED_NAMES.get(message.register, f"{message.register:#04x}")
    value = _value(frame)
    text = (
        f"the rectifier refused the stored fallback {name} {value:.4g} (error "
        f"{message.error_code:#04x} {message.error_name}, attempt {attempt}); DC stays off"
    )
    if message.register == Register.OFFLINE_VOLTAGE and value < STORED_VOLTAGE_MIN_SOME_MODELS_V:
        text += (
            f". Some R48 models store only {STORED_VOLTAGE_MIN_SOME_MODELS_V:g}-58 V: set "
            f"fallback_voltage_v to {STORED_VOLTAGE_MIN_SOME_MODELS_V:g} (needs 12 or more cells)"
        )
    return text


# --- measured over-current ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """A measured charge current (+ = into the battery) and when it arrived here."""

    source: str
    current_a: float
    at_s: float


@dataclass(frozen=True, slots=True)
class OverCurrentTrip:
    """A latched over-current: which measurement, how much, against which CCL."""

    source: str
    current_a: float
    ccl_a: float
    threshold_a: float
    over_s: float

    def alarm(self) -> ChargerAlarm:
        return ChargerAlarm(
            "over_current_trip",
            f"{self.source} measured {self.current_a:.1f} A, above CCL {self.ccl_a:.1f} A + "
            f"margin ({self.threshold_a:.1f} A) for {self.over_s:.1f} s; DC off until a person "
            "resets the trip",
        )


def over_current_threshold_a(ccl_a: float, settings: ChargerSettings) -> float:
    """Current above which a measurement counts as over: CCL plus the larger margin."""
    ccl = max(0.0, ccl_a)
    return max(
        ccl + settings.over_current_margin_a,
        ccl * (1.0 + settings.over_current_margin_pct / 100.0),
    )


def charge_limit_a(limits: FreshValue[BmsLimits] | None) -> float:
    """The CCL the measured current is judged against: 0 unless the bms allows charging.

    Stale limits still count (DC is off then, so any current is wrong)."""
    if limits is None or not _finite(limits.value.ccl_a):
        return 0.0
    return max(0.0, limits.value.charge_limit_a)


@dataclass(frozen=True, slots=True)
class OverCurrentWatch:
    """Measured current against the CCL: trips once some fresh measurement has stayed above
    the threshold for ``over_current_trip_s``; the trip stays until `reset`."""

    over_since_s: float | None = None
    trip: OverCurrentTrip | None = None

    def update(
        self,
        measurements: tuple[Measurement, ...],
        ccl_a: float,
        now_s: float,
        settings: ChargerSettings,
    ) -> OverCurrentWatch:
        if self.trip is not None:
            return self
        over = over_measurements(measurements, ccl_a, now_s, settings)
        if not over:
            return OverCurrentWatch()
        since = self.over_since_s if self.over_since_s is not None else now_s
        if now_s - since < settings.over_current_trip_s:
            return OverCurrentWatch(since)
        worst = max(over, key=lambda m: m.current_a)
        threshold = over_current_threshold_a(ccl_a, settings)
        trip = OverCurrentTrip(worst.source, worst.current_a, ccl_a, threshold, now_s - since)
        return OverCurrentWatch(since, trip)

    def reset(self) -> OverCurrentWatch:
        return OverCurrentWatch()


def over_measurements(
    measurements: tuple[Measurement, ...], ccl_a: float, now_s: float, settings: ChargerSettings
) -> tuple[Measurement, ...]:
    """The fresh measurements above the over-current threshold."""
    threshold = over_current_threshold_a(ccl_a, settings)
    return tuple(
        m
        for m in measurements
        if _finite(m.current_a)
        and m.current_a > threshold
        and is_fresh(m.at_s, now_s, settings.measurement_stale_s)
    )


def highest_fresh_a(
    measurements: tuple[Measurement, ...], now_s: float, settings: ChargerSettings
) -> float | None:
    """The highest fresh, finite measured current (None if there is none)."""
    fresh = [
        m.current_a
        for m in measurements
        if _finite(m.current_a) and is_fresh(m.at_s, now_s, settings.measurement_stale_s)
    ]
    return max(fresh, default=None)


POLL_QUANTITIES: tuple[Quantity, ...] = (
    Quantity.OUTPUT_VOLTAGE,
    Quantity.OUTPUT_CURRENT,
    Quantity.CURRENT_LIMIT,
    Quantity.TEMPERATURE,
    Quantity.INPUT_VOLTAGE,
    Quantity.STATUS,
)


def poll_frames() -> tuple[CanFrame, ...]:
    """One read request per quantity we publish."""
    return tuple(codec.encode_read_request(q) for q in POLL_QUANTITIES)


# --- link and readings --------------------------------------------------------------------


def link_state(
    started_s: float, last_reply_s: float | None, now_s: float, settings: ChargerSettings
) -> LinkState:
    """OK while replies keep coming; LOST after ``link_timeout_s`` without one."""
    if last_reply_s is None:
        return LinkState.UNKNOWN if now_s - started_s <= settings.link_timeout_s else LinkState.LOST
    return (
        LinkState.OK if is_fresh(last_reply_s, now_s, settings.link_timeout_s) else LinkState.LOST
    )


@dataclass(frozen=True, slots=True)
class Readings:
    """What the rectifier last reported; None until it has answered."""

    output_voltage_v: float | None = None
    output_voltage_at_s: float | None = None
    output_current_a: float | None = None
    output_current_at_s: float | None = None
    current_limit_fraction: float | None = None
    temperature_c: float | None = None
    input_voltage_v: float | None = None
    status_raw: int | None = None
    status_active: tuple[str, ...] = ()
    last_reply_s: float | None = None
    last_error: str | None = None
    error_count: int = 0
    acks: int = 0

    @property
    def power_w(self) -> float | None:
        if self.output_voltage_v is None or self.output_current_a is None:
            return None
        return self.output_voltage_v * self.output_current_a

    def current_measurement(self) -> Measurement | None:
        """The rectifier's own output current report, for the over-current trip."""
        if self.output_current_a is None or self.output_current_at_s is None:
            return None
        return Measurement("rectifier", self.output_current_a, self.output_current_at_s)

    def fresh_output_voltage_v(self, now_s: float, settings: ChargerSettings) -> float | None:
        """The rectifier's own output voltage, if reported within `measurement_stale_s`."""
        at_s = self.output_voltage_at_s
        if self.output_voltage_v is None or at_s is None:
            return None
        if not is_fresh(at_s, now_s, settings.measurement_stale_s):
            return None
        return self.output_voltage_v

    def current_limit_a(self, settings: ChargerSettings) -> float | None:
        if self.current_limit_fraction is None:
            return None
        return settings.fraction_to_current(self.current_limit_fraction)

    def apply(self, message: codec.Message, now_s: float) -> Readings:
        """These readings updated by one decoded reply (requests and others are ignored)."""
        if isinstance(message, codec.Reading):
            changes: dict[str, Any] = {_READING_FIELDS[message.quantity]: message.value}
            if message.quantity is Quantity.OUTPUT_CURRENT:
                changes["output_current_at_s"] = now_s
            if message.quantity is Quantity.OUTPUT_VOLTAGE:
                changes["output_voltage_at_s"] = now_s
            return replace(self, last_reply_s=now_s, **changes)
        if isinstance(message, codec.StatusReading):
            return replace(
                self, last_reply_s=now_s, status_raw=message.raw, status_active=message.active
            )
        if isinstance(message, codec.WriteAck):
            return replace(self, last_reply_s=now_s, acks=self.acks + 1)
        if isinstance(message, codec.ErrorReply):
            error = (
                f"error {message.error_code:#04x} ({message.error_name}) for message type "
                f"{message.msgtype:#04x} register {message.register:#04x}"
            )
            return replace(
                self, last_reply_s=now_s, last_error=error, error_count=self.error_count + 1
            )
        if isinstance(message, codec.OtherReading):
            return replace(self, last_reply_s=now_s)
        return self


_READING_FIELDS: dict[Quantity, str] = {
    Quantity.OUTPUT_VOLTAGE: "output_voltage_v",
    Quantity.OUTPUT_CURRENT: "output_current_a",
    Quantity.CURRENT_LIMIT: "current_limit_fraction",
    Quantity.TEMPERATURE: "temperature_c",
    Quantity.INPUT_VOLTAGE: "input_voltage_v",
}
