"""Dispatch: turn one signed set-point into inverter demands and a charger command (pure).

Safety rules enforced here, whatever the law asks:

- Charge and discharge never run together. Before a side starts, the other side must be
  commanded off and *measured* off (the inverters' outputs summed <= `off_inverter_w`, charger
  <= `off_charger_a`)
  for `min_dwell_s`. Only when a device reports nothing at all does a long timeout
  (`off_unconfirmed_s`, longer than the devices' own frame-loss stop, and never shorter than
  an inverter's ramp-down hold-off) stand in for the measurement.
- An inverter whose demand went to 0 may still feed for its ramp-down (`unit_holdoff_s`):
  `core.FeedingTracker` reports it as feeding (``math.inf``) until then.
- After a (re)start nothing is known of what the previous process commanded: the "commanded
  off since" timers start at the first step (never at 0.0, the host's boot on a monotonic
  clock), so both sides count as on until measured off for the dwell or, unmeasured, until
  the long timeout has passed since then.
- The charger starts only at or above its minimum current (~5.2 A, about 10 % of the rated current: anikrooz/Emerson-Vertiv-R48 VertivPsu.cpp) and never when
  the bms charge current limit is below that minimum; its voltage is the bms CVL.
- A running charge whose bms charge limit falls below the charger's minimum current goes on
  at constant voltage (the charger service's taper) while the limit is at least
  `TAPER_END_A`; once such a charge has ended, the charger starts again only when the limit
  is `CHARGER_RESTART_MARGIN_A` above its minimum (`ChargeLimitLatch`).
- SoC bounds with hysteresis: discharge stops at `soc_min_pct` and resumes at min + hysteresis;
  charge stops at `soc_max_pct` and resumes at max − hysteresis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from gridzero.contract import BmsLimits
from gridzero_controller.settings import ControllerSettings

# Half the chargers' state period (1 s): on average, how long until a stop is measured.
SWITCH_READING_S = 0.5
# How far above the charger's minimum current the bms's charge limit must be before a charge
# that ended below it starts again. Near full the limit tapers with the highest cell's
# voltage, which charging at the minimum raises by its IR rise and stopping lowers again: on
# the bench (issue 18, hh-s8-011) the limit swung 5.19 <-> 5.39 A around the 5.2 A minimum and
# the rectifier's DC output was switched on and off every 2 s for 6 minutes (195 starts).
# 1 A is five times that swing; like a charger's recharge threshold, the pack is left alone
# near full until it has room for a real charge.
CHARGER_RESTART_MARGIN_A = 1.0
# A running charge goes on below the minimum current at constant voltage (the charger
# service's taper, services/charger/gridzero_charger/domain.py `Taper`) while the bms's limit
# is at least this; below it the charge is over.
TAPER_END_A = 0.5
# A tapering charger measured at or below this has stopped: the pack takes nothing more at
# the held voltage, or the charger service switched off rather than taper
# (`Dispatcher._taper_stalled`). Below `off_charger_a` (0.5 A): the last hour of a taper
# trickles at 0.1-0.5 A.
TAPER_STALL_A = 0.1


class ChargeLimitLatch:
    """The bms's charge limit against the charger's minimum current (pure).

    A running charge goes on while the limit is at least `TAPER_END_A`: below the minimum
    the charger service holds the pack's voltage and the current tapers. A charge that ends
    while the limit is below the minimum (the surplus went, the pack is full) sets the latch;
    while set, a start needs the limit `CHARGER_RESTART_MARGIN_A` above the minimum, which
    also clears it. A limit that was low while nothing charged holds nothing back.
    """

    def __init__(self) -> None:
        self.latched = False
        # the running charge has met a limit below the minimum (so it tapers)
        self.tapered = False

    def floor_a(self, charge_limit_a: float, charging: bool, settings: ControllerSettings) -> float:
        """The least charge limit at which the charger may run now."""
        min_a = settings.charger_min_current_a
        if charging:
            self.tapered = self.tapered or charge_limit_a < min_a
            return TAPER_END_A
        if self.tapered:
            self.latched = True
            self.tapered = False
        if charge_limit_a >= min_a + CHARGER_RESTART_MARGIN_A:
            self.latched = False
        return min_a + CHARGER_RESTART_MARGIN_A if self.latched else min_a


@dataclass(frozen=True, slots=True)
class InverterUnit:
    """One discharge inverter: AC limit and the DC window in which it runs."""

    name: str
    max_w: float = 1000.0
    dc_min_v: float = 40.0
    dc_max_v: float = 60.0
    dc_margin_v: float = 0.5
    # How long after its demand went to 0 the unit may still feed; None: `default_holdoff_s`.
    off_holdoff_s: float | None = None


# The SoyoSource's behaviour (syssi soyosource_modbus.cpp, KlausLi/Esp-Soyosource-Controller README; the simulator's plant defaults): it follows a
# new demand through a ~1 s first-order lag with a ~300 W/s slew limit, and stops ~3 s after
# frames stop. Nothing on the limiter port says when its output really reached 0.
SOYOSOURCE_LAG_S = 1.0
SOYOSOURCE_RAMP_W_PER_S = 300.0
SOYOSOURCE_FRAME_STOP_S = 3.0
HOLDOFF_MARGIN_S = 1.0  # the frame's way out (tick, MQTT, 4800 baud) and the unit's dead time


def ramp_down_s(from_w: float, off_w: float, lag_s: float, ramp_w_per_s: float) -> float:
    """Time a unit at ``from_w`` takes to fall to ``off_w`` after a 0 W demand.

    Slew-limited while the lag would fall faster than ``ramp_w_per_s`` (above ramp x lag),
    then exponential with the lag's time constant.
    """
    off_w = max(off_w, 0.1)
    if from_w <= off_w:
        return 0.0
    knee_w = ramp_w_per_s * lag_s
    if from_w <= knee_w:
        return lag_s * math.log(from_w / off_w)
    return (from_w - knee_w) / ramp_w_per_s + lag_s * math.log(max(knee_w, off_w) / off_w)


def default_holdoff_s(max_w: float, off_w: float) -> float:
    """A conservative hold-off for a SoyoSource at up to ``max_w``: its ramp-down from full
    power, at least its frame-loss stop, plus a margin (900 W, 5 W: 7.1 s)."""
    ramp_s = ramp_down_s(max_w, off_w, SOYOSOURCE_LAG_S, SOYOSOURCE_RAMP_W_PER_S)
    return HOLDOFF_MARGIN_S + max(SOYOSOURCE_FRAME_STOP_S, ramp_s)


def unit_holdoff_s(unit: InverterUnit, settings: ControllerSettings) -> float:
    """The unit's hold-off: its own setting, else the SoyoSource default for its max power."""
    if unit.off_holdoff_s is not None:
        return unit.off_holdoff_s
    return default_holdoff_s(unit.max_w, settings.off_inverter_w)


@dataclass(frozen=True, slots=True)
class DispatchInput:
    """What dispatch needs to know, as measured (None = unknown or stale).

    ``inverter_output_w``: a unit's measured output, or ``math.inf`` while it may still feed
    (see `core.FeedingTracker`).
    """

    pack_voltage_v: float | None
    soc_pct: float | None
    limits: BmsLimits | None
    inverter_output_w: tuple[float | None, ...]
    charger_current_a: float | None
    # What each unit may be asked for (`headroom_caps`); None: the static map `unit_cap_w`.
    unit_caps_w: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class ChargerCommand:
    """DC output on/off, voltage set-point (CVL) and current limit in A."""

    on: bool
    voltage_v: float
    current_a: float


CHARGER_OFF = ChargerCommand(on=False, voltage_v=0.0, current_a=0.0)


class Side(StrEnum):
    """Which side runs (or is being prepared)."""

    IDLE = "idle"
    DISCHARGE = "discharge"
    CHARGE = "charge"
    TO_DISCHARGE = "to_discharge"
    TO_CHARGE = "to_charge"


@dataclass(frozen=True, slots=True)
class Commands:
    """Device commands for one step."""

    inverter_w: tuple[float, ...]
    charger: ChargerCommand
    side: Side

    @property
    def discharge_w(self) -> float:
        """Total inverter demand."""
        return sum(self.inverter_w)


class SocGate:
    """SoC bounds with hysteresis. Unknown SoC keeps the last decision (the bms still guards)."""

    def __init__(self) -> None:
        self.discharge_allowed = True
        self.charge_allowed = True

    def update(self, soc_pct: float | None, settings: ControllerSettings) -> None:
        """Re-evaluate both gates from the newest SoC."""
        if soc_pct is None:
            return
        hyst = settings.soc_hysteresis_pct
        if soc_pct <= settings.soc_min_pct:
            self.discharge_allowed = False
        elif soc_pct >= settings.soc_min_pct + hyst:
            self.discharge_allowed = True
        if soc_pct >= settings.soc_max_pct:
            self.charge_allowed = False
        elif soc_pct <= settings.soc_max_pct - hyst:
            self.charge_allowed = True


def unit_cap_w(unit: InverterUnit, pack_voltage_v: float | None) -> float:
    """What a unit may be asked for at this pack voltage.

    Inside its DC window the full rating, derated linearly over the `dc_margin_v` above the
    lower end: a pack that sags under load then settles where the inverter still runs, instead
    of dropping out, recovering and dropping out again.
    """
    if pack_voltage_v is None or not unit.dc_min_v <= pack_voltage_v <= unit.dc_max_v:
        return 0.0
    if unit.dc_margin_v <= 0:
        return unit.max_w
    return unit.max_w * min(1.0, (pack_voltage_v - unit.dc_min_v) / unit.dc_margin_v)


# The measured sag (`SagEstimate`): a pair of readings teaches the slope only when the output
# changed by at least this share of the units' total rating (a small change is lost in the
# voltage's resolution) within `SAG_PAIR_S`; each such pair moves the slope by `SAG_GAIN`.
SAG_MIN_STEP = 0.25
SAG_PAIR_S = 5.0
SAG_GAIN = 0.2
# The slope used is the learnt one times this (a pack that sags more than learnt, e.g. warming
# less than it cools, must not cross the cut-off), and the loaded voltage is kept this far
# above the units' lower DC limit (the inverter's own measurement may read lower than the bms).
SAG_SAFETY = 1.25
SAG_GUARD_V = 0.2
# With the units' own DC readings (what their cut-off compares) the guard only covers the
# reading's resolution (the SoyoSource status reports the DC voltage in 0.1 V steps).
UNIT_READING_STEP_V = 0.1
SAG_GUARD_UNIT_V = UNIT_READING_STEP_V
# Slopes outside [1/SAG_RANGE, SAG_RANGE] times the prior are measurement errors.
SAG_RANGE = 10.0


class SagEstimate:
    """How far the pack voltage falls per W of inverter output, learnt from measurements.

    The static derating (`unit_cap_w`) assumes the worst: a full rating sags the pack by
    `InverterUnit.dc_margin_v`. A pack with more strings, or warm, sags less: near the
    inverters' low-voltage shutdown the static map then holds them below a power at which
    they would run on (issue 18: 4-module packs near 30 % SoC). Pairs of (output, voltage)
    measured at the same instant give the real slope; `headroom_caps` uses it. Pure: time is
    a parameter.
    """

    def __init__(self) -> None:
        self.slope_v_per_w: float | None = None
        self._last: tuple[float, float, float] | None = None  # at_s, output W, pack V

    def observe(self, at_s: float, output_w: float, pack_v: float, rating_w: float) -> None:
        """One (total output, pack voltage) pair measured at ``at_s``."""
        last = self._last
        if last is not None and at_s <= last[0]:
            return
        if last is None or at_s - last[0] > SAG_PAIR_S:
            self._last = (at_s, output_w, pack_v)
            return
        d_w = output_w - last[1]
        if d_w == 0 or abs(d_w) < SAG_MIN_STEP * rating_w:
            # keep the older reference: the change may grow large enough (and with no rating,
            # e.g. every unit disabled, an unchanged output must not divide by zero)
            return
        self._last = (at_s, output_w, pack_v)
        slope = -(pack_v - last[2]) / d_w
        if slope <= 0:
            return
        prior = self.slope_v_per_w
        self.slope_v_per_w = slope if prior is None else prior + SAG_GAIN * (slope - prior)


def headroom_caps(
    units: tuple[InverterUnit, ...],
    pack_voltage_v: float | None,
    output_w: float | None,
    slope_v_per_w: float | None,
    guard_v: float = SAG_GUARD_V,
) -> tuple[float, ...]:
    """What each unit may be asked for, from the measured sag (`SagEstimate`).

    The output may rise until the loaded voltage, falling by the slope (times `SAG_SAFETY`)
    per W, reaches the units' lower DC limit + ``guard_v``; below it, it must fall as far.
    Never less than the static map (`unit_cap_w`), which needs no measurement; the static map
    alone while the slope, the output or the voltage is unknown or implausible.
    """
    static = tuple(unit_cap_w(u, pack_voltage_v) for u in units)
    rating_w = sum(u.max_w for u, c in zip(units, static, strict=True) if c > 0)
    if pack_voltage_v is None or output_w is None or slope_v_per_w is None or rating_w <= 0:
        return static
    floor_v = max(u.dc_min_v for u, c in zip(units, static, strict=True) if c > 0) + guard_v
    prior = max(u.dc_margin_v for u in units) / rating_w
    if prior > 0 and not prior / SAG_RANGE <= slope_v_per_w <= prior * SAG_RANGE:
        return static
    allowed_w = output_w + (pack_voltage_v - floor_v) / (SAG_SAFETY * slope_v_per_w)
    share = max(0.0, min(1.0, allowed_w / rating_w))
    return tuple(
        c if c <= 0 else max(c, u.max_w * share) for u, c in zip(units, static, strict=True)
    )


def split_discharge(
    total_w: float,
    units: tuple[InverterUnit, ...],
    pack_voltage_v: float | None,
    caps_w: tuple[float, ...] | None = None,
) -> tuple[float, ...]:
    """Share ``total_w`` equally over the units, each within its cap (``caps_w``, default
    `unit_cap_w`).

    Water-filling: a unit at its cap passes the rest to the others.
    """
    caps = list(caps_w) if caps_w is not None else [unit_cap_w(u, pack_voltage_v) for u in units]
    demand = [0.0] * len(units)
    remaining = max(0.0, total_w)
    open_units = sorted((i for i, c in enumerate(caps) if c > 0), key=lambda i: caps[i])
    while open_units and remaining > 1e-9:
        share = remaining / len(open_units)
        i = open_units[0]
        give = min(share, caps[i] - demand[i])
        if give >= share:
            for j in open_units:
                demand[j] += share
            remaining = 0.0
            break
        demand[i] += give
        remaining -= give
        open_units.pop(0)
    return tuple(demand)


def charger_min_power_w(pack_voltage_v: float, settings: ControllerSettings) -> float:
    """AC power the charger draws at its minimum current."""
    return settings.charger_min_current_a * pack_voltage_v / settings.charger_efficiency


def switch_delay_s(settings: ControllerSettings) -> float:
    """How long a load waits when it comes while the charger runs: the charger's dead time,
    half a state period (`SWITCH_READING_S`) until it is measured off, and the dwell."""
    return settings.charger_dead_time_s + SWITCH_READING_S + settings.min_dwell_s


def charge_pays(surplus_w: float, min_w: float, charging: bool, hysteresis_w: float) -> bool:
    """Whether charging exchanges less with the grid than not charging (pure).

    The charger cannot draw less than ``min_w`` (AC W at its minimum current, the
    efficiency included: `charger_min_power_w`). Charging with a surplus ``surplus_w`` below
    it imports ``min_w - surplus_w``; not charging exports ``surplus_w``. Above the minimum
    charging follows the surplus and exchanges nothing. So charging pays when
    ``surplus - max(0, min - surplus) > 0``, i.e. when the surplus exceeds half the minimum.
    ``hysteresis_w`` (W of grid exchange) is the gain a start needs and the loss a running
    charger tolerates, so a surplus at the break-even point does not toggle the charger.
    """
    if surplus_w <= 0:
        return False
    gain_w = surplus_w - max(0.0, min_w - surplus_w)
    return gain_w > (-hysteresis_w if charging else hysteresis_w)


class Dispatcher:
    """Stateful, pure: the interlock and side state machine."""

    def __init__(self, units: tuple[InverterUnit, ...]) -> None:
        if not units:
            raise ValueError("dispatch: need at least one inverter unit, got 0")
        self.units = units
        self.side = Side.IDLE
        self.soc_gate = SocGate()
        self.charge_latch = ChargeLimitLatch()
        # Set at the first step (see `_remember`): never at 0.0, which is the host's boot on a
        # monotonic clock, so a long timeout would already have passed after a restart.
        self._inverters_cmd_zero_since: float | None = None
        self._inverters_measured_zero_since: float | None = None
        self._charger_cmd_off_since: float | None = None
        self._charger_measured_off_since: float | None = None
        # Whether a command of ours to run can still be in flight (its dead time counts). A
        # previous process's command is not: our first step commands both sides off, and
        # until they are measured off for the dwell, or the long timeout has passed since
        # that step, both count as on; an inverter's ramp-down is `FeedingTracker`'s.
        self._inverters_ever_on = False
        self._charger_ever_on = False
        # Ski rental for a charger start (`_charge_start_due`): the peak discharge of the last
        # discharge episode, and since when charging first paid in this idle stretch.
        self._discharge_peak_w = 0.0
        self._discharge_episode = False
        self._charge_pays_since: float | None = None
        self._discharge_ended_s: float | None = None
        self._last_gap_s: float | None = None

    # -- confirmation of "the other side is off" -------------------------------------------

    def _track_off(self, now_s: float, data: DispatchInput, settings: ControllerSettings) -> None:
        outputs = data.inverter_output_w
        off_w = settings.off_inverter_w
        # The units together, not each: three units at 2 W each feed 6 W while the charger
        # would run (the bench counts the sum; household hh-s2-065 of issue 18 did exactly that).
        inv_zero = (
            bool(outputs)
            and all(o is not None for o in outputs)
            and sum(o for o in outputs if o is not None) <= off_w
        )
        if inv_zero:
            if self._inverters_measured_zero_since is None:
                self._inverters_measured_zero_since = now_s
        else:
            self._inverters_measured_zero_since = None
        current = data.charger_current_a
        if current is not None and current <= settings.off_charger_a:
            if self._charger_measured_off_since is None:
                self._charger_measured_off_since = now_s
        else:
            self._charger_measured_off_since = None

    def _confirmed(
        self,
        now_s: float,
        cmd_since: float | None,
        measured_since: float | None,
        unknown_after_s: float | None,
        settings: ControllerSettings,
        dead_time_s: float,
    ) -> bool:
        """``unknown_after_s``: the device reports nothing; off this long after the command."""
        if cmd_since is None:
            return False
        if unknown_after_s is not None:
            return now_s - cmd_since >= unknown_after_s
        if measured_since is None:
            return False
        # A command still in flight (the device's dead time) can switch it on after it was
        # measured off: the dwell counts from when the command to stop has surely landed.
        landed_s = cmd_since + dead_time_s
        return now_s - max(landed_s, measured_since) >= settings.min_dwell_s

    def inverters_off_confirmed(
        self, now_s: float, data: DispatchInput, settings: ControllerSettings
    ) -> bool:
        """All inverters commanded 0 and measured ~0 for the dwell."""
        unknown = any(o is None for o in data.inverter_output_w)
        # a unit that reports nothing is off once the devices' own stops and its ramp-down
        # are surely over
        holdoff_s = max(unit_holdoff_s(u, settings) for u in self.units)
        return self._confirmed(
            now_s,
            self._inverters_cmd_zero_since,
            self._inverters_measured_zero_since,
            max(settings.off_unconfirmed_s, holdoff_s) if unknown else None,
            settings,
            settings.plant_dead_time_s if self._inverters_ever_on else 0.0,
        )

    def charger_off_confirmed(
        self, now_s: float, data: DispatchInput, settings: ControllerSettings
    ) -> bool:
        """Charger commanded off and measured ~0 A for the dwell."""
        return self._confirmed(
            now_s,
            self._charger_cmd_off_since,
            self._charger_measured_off_since,
            settings.off_unconfirmed_s if data.charger_current_a is None else None,
            settings,
            settings.charger_dead_time_s if self._charger_ever_on else 0.0,
        )

    # -- main step ---------------------------------------------------------------------------

    def step(
        self, now_s: float, setpoint_w: float, data: DispatchInput, settings: ControllerSettings
    ) -> Commands:
        """Commands for ``now_s``; remembers what it commanded for the interlock."""
        self._track_off(now_s, data, settings)
        self.soc_gate.update(data.soc_pct, settings)
        want = self._wanted_side(setpoint_w, data, settings)
        if want is Side.CHARGE and not self._charge_start_due(now_s, setpoint_w, data, settings):
            want = Side.IDLE
        commands = self._commands_for(now_s, want, setpoint_w, data, settings)
        self._remember(now_s, commands)
        return commands

    def _charge_start_due(
        self, now_s: float, setpoint_w: float, data: DispatchInput, settings: ControllerSettings
    ) -> bool:
        """Whether a charger start that pays (`charge_pays`) is due yet: a ski rental.

        A running charger must be measured off before the inverters may start: when a load
        comes back, the house imports it for `switch_delay_s` (issue 18: a hob pulsing 1.9 kW
        while a 140 W surplus charged at the 243 W minimum lost ~10 Wh in 15 minutes). The
        switch may cost the last discharge's peak × that delay. A start is due at once if the
        gain (W) over the last stretch between two discharges covers it (the load has not
        been coming back quickly); else it waits until the gain over the time waited does
        (a ski rental, about twice the better choice at worst, whether the surplus lasts or
        the load returns). A running charger, or one that never followed a discharge, starts
        as before."""
        if self.side in (Side.CHARGE, Side.TO_CHARGE) or self._discharge_peak_w <= 0:
            return True
        assert data.pack_voltage_v is not None
        surplus_w = -setpoint_w
        min_w = charger_min_power_w(data.pack_voltage_v, settings)
        gain_w = surplus_w - max(0.0, min_w - surplus_w)
        if self._charge_pays_since is None:
            self._charge_pays_since = now_s
        cost_j = self._discharge_peak_w * switch_delay_s(settings)
        # The last stretch between two discharges says how long a charge would likely run.
        likely_s = max(now_s - self._charge_pays_since, self._last_gap_s or math.inf)
        return gain_w > 0 and likely_s * gain_w >= cost_j

    def _charge_possible(self, data: DispatchInput, settings: ControllerSettings) -> bool:
        limits = data.limits
        return (
            limits is not None
            and not limits.alarm
            and data.pack_voltage_v is not None
            and data.pack_voltage_v > 0
            and limits.charge_limit_a >= self.charge_floor_a(limits, settings)
            and not self._taper_stalled(data.charger_current_a)
            and self.soc_gate.charge_allowed
        )

    @staticmethod
    def _taper_draw_w(data: DispatchInput, settings: ControllerSettings) -> float:
        """What a running charger draws at most while it tapers below its minimum current:
        no more than the limit allows, and, at constant voltage, what it is measured at."""
        assert data.limits is not None
        assert data.pack_voltage_v is not None
        draw_a = data.limits.charge_limit_a
        if data.charger_current_a is not None:
            draw_a = min(draw_a, max(0.0, data.charger_current_a))
        return draw_a * data.pack_voltage_v / settings.charger_efficiency

    def _taper_stalled(self, charger_current_a: float | None) -> bool:
        """A charge that has met a limit below the minimum current and whose charger is
        measured off is over: the pack takes nothing more at the held voltage, or the charger
        service did not taper and would start again each time the limit is back above the
        minimum (by the time the charger reports 0 A the limit is usually back above it)."""
        return (
            self.side is Side.CHARGE
            and self.charge_latch.tapered
            and charger_current_a is not None
            and charger_current_a <= TAPER_STALL_A
        )

    def charge_floor_a(self, limits: BmsLimits, settings: ControllerSettings) -> float:
        """The least bms charge limit at which the charger may run this step
        (`ChargeLimitLatch`; the same answer however often it is asked within a step). Only a
        charger we run tapers: one still waiting for the inverters to be measured off
        (`Side.TO_CHARGE`) has not started."""
        charging = self.side is Side.CHARGE
        return self.charge_latch.floor_a(limits.charge_limit_a, charging, settings)

    def _discharge_possible(self, data: DispatchInput) -> bool:
        limits = data.limits
        return (
            limits is not None
            and not limits.alarm
            and limits.discharge_limit_a > 0
            and data.pack_voltage_v is not None
            and self.soc_gate.discharge_allowed
        )

    def _wanted_side(
        self, setpoint_w: float, data: DispatchInput, settings: ControllerSettings
    ) -> Side:
        discharging = self.side in (Side.DISCHARGE, Side.TO_DISCHARGE)
        charging = self.side in (Side.CHARGE, Side.TO_CHARGE)
        start_w = 0.0 if discharging else settings.discharge_start_w
        if setpoint_w > start_w and self._discharge_possible(data):
            return Side.DISCHARGE
        if setpoint_w < 0 and self._charge_possible(data, settings):
            assert data.pack_voltage_v is not None
            assert data.limits is not None
            min_w = charger_min_power_w(data.pack_voltage_v, settings)
            if self.side is Side.CHARGE and self.charge_latch.tapered:
                min_w = min(min_w, self._taper_draw_w(data, settings))
            if charge_pays(-setpoint_w, min_w, charging, settings.charge_hysteresis_w):
                return Side.CHARGE
        return Side.IDLE

    def _commands_for(
        self,
        now_s: float,
        want: Side,
        setpoint_w: float,
        data: DispatchInput,
        settings: ControllerSettings,
    ) -> Commands:
        zeros = tuple(0.0 for _ in self.units)
        if want is Side.DISCHARGE:
            if self.side is not Side.DISCHARGE and not self.charger_off_confirmed(
                now_s, data, settings
            ):
                return Commands(zeros, CHARGER_OFF, Side.TO_DISCHARGE)
            return Commands(
                self._discharge_split(setpoint_w, data, settings), CHARGER_OFF, Side.DISCHARGE
            )
        if want is Side.CHARGE:
            if self.side is not Side.CHARGE and not self.inverters_off_confirmed(
                now_s, data, settings
            ):
                return Commands(zeros, CHARGER_OFF, Side.TO_CHARGE)
            return Commands(zeros, self._charger_command(-setpoint_w, data, settings), Side.CHARGE)
        return Commands(zeros, CHARGER_OFF, Side.IDLE)

    def _discharge_split(
        self, setpoint_w: float, data: DispatchInput, settings: ControllerSettings
    ) -> tuple[float, ...]:
        limits = data.limits
        assert limits is not None
        assert data.pack_voltage_v is not None
        bms_max_w = limits.discharge_limit_a * data.pack_voltage_v * settings.inverter_efficiency
        total = min(setpoint_w, bms_max_w, settings.max_discharge_w)
        return split_discharge(total, self.units, data.pack_voltage_v, data.unit_caps_w)

    def _charger_command(
        self, charge_w: float, data: DispatchInput, settings: ControllerSettings
    ) -> ChargerCommand:
        limits = data.limits
        assert limits is not None
        assert data.pack_voltage_v is not None
        current_a = (
            min(charge_w, settings.max_charge_w) * settings.charger_efficiency / data.pack_voltage_v
        )
        top_a = min(limits.charge_limit_a, settings.charger_max_current_a)
        current_a = max(settings.charger_min_current_a, min(top_a, current_a))
        return ChargerCommand(on=True, voltage_v=limits.cvl_v, current_a=current_a)

    def _remember(self, now_s: float, commands: Commands) -> None:
        if commands.side is not Side.IDLE:
            self._charge_pays_since = None  # the wait counts within one idle stretch
        if commands.side is Side.DISCHARGE:
            if not self._discharge_episode:
                self._discharge_peak_w = 0.0
                if self._discharge_ended_s is not None:
                    self._last_gap_s = now_s - self._discharge_ended_s
            self._discharge_episode = True
            self._discharge_peak_w = max(self._discharge_peak_w, commands.discharge_w)
        elif self._discharge_episode:
            self._discharge_episode = False
            self._discharge_ended_s = now_s
        self.side = commands.side
        if any(w > 0 for w in commands.inverter_w):
            self._inverters_cmd_zero_since = None
            self._inverters_ever_on = True
        elif self._inverters_cmd_zero_since is None:
            self._inverters_cmd_zero_since = now_s
        if commands.charger.on:
            self._charger_cmd_off_since = None
            self._charger_ever_on = True
        elif self._charger_cmd_off_since is None:
            self._charger_cmd_off_since = now_s
