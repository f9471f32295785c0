"""The controller's whole pure domain in one object: observation in, commands out.

`Controller.step(observation)` runs, in order: data freshness checks, the mode, the bounds
(settings, bms limits, SoC gates), the law, dispatch with its interlock, supervision and loop
quality. The MQTT service and the bench both drive exactly this object.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from gridzero.contract import BmsLimits
from gridzero.runtime.freshness import FreshValue, is_fresh
from gridzero_controller.dispatch import (
    SAG_GUARD_UNIT_V,
    UNIT_READING_STEP_V,
    Commands,
    Dispatcher,
    DispatchInput,
    InverterUnit,
    SagEstimate,
    headroom_caps,
)
from gridzero_controller.law import ControlLaw, LawOutput, MeterSample, PowerBounds
from gridzero_controller.schedule import NO_RULE, Applied, Rule, RuleGate
from gridzero_controller.settings import ControllerSettings, Mode
from gridzero_controller.supervision import (
    FollowFault,
    FollowMonitor,
    LoopQuality,
    QualityMonitor,
)

# An output and a voltage measured this close in time count as one operating point.
SAG_PAIRING_S = 0.3


@dataclass(frozen=True, slots=True)
class InverterReading:
    """What a unit's state says, received at ``at_s``.

    ``output_w``: its measured AC output, if ``measured`` (a unit that answers no status
    query reports none). ``feeding_until_s``: until when the interlock must count it as
    feeding whatever it reports (`FeedingTracker`); the default, minus infinity, trusts the
    measurement alone (the bench's plant truth). ``dc_voltage_v``: the unit's own reading of
    its DC input, if it reports one; its low-voltage cut-off acts on this reading, which the
    cable's drop puts below the bms's pack voltage.
    """

    output_w: float
    at_s: float
    feeding_until_s: float = -math.inf
    measured: bool = True
    dc_voltage_v: float | None = None


class FeedingTracker:
    """Until when one inverter unit may still feed, from its service's published states (pure).

    A 0 W frame on the wire is not 0 W at the grid: the SoyoSource ramps down over seconds,
    and most units never report their output. So a unit counts as feeding while its service
    sends it a non-zero demand, and for ``holdoff_s`` after its demand went to 0 (or its
    frames stopped). A new tracker knows no history (a restart): the first state starts the
    hold-off even if it shows 0 W.
    """

    def __init__(self) -> None:
        self.zero_since_s: float | None = None

    def update(
        self,
        now_s: float,
        *,
        demand_w: float,
        sending: bool,
        output_w: float | None,
        holdoff_s: float,
        dc_voltage_v: float | None = None,
    ) -> InverterReading:
        """One state, arrived at ``now_s``: the reading the controller sees."""
        if sending and demand_w > 0:
            self.zero_since_s = None
        elif self.zero_since_s is None:
            self.zero_since_s = now_s
        until_s = math.inf if self.zero_since_s is None else self.zero_since_s + holdoff_s
        if output_w is None:
            return InverterReading(0.0, now_s, feeding_until_s=until_s, measured=False)
        return InverterReading(output_w, now_s, feeding_until_s=until_s, dc_voltage_v=dc_voltage_v)


@dataclass(frozen=True, slots=True)
class ChargerReading:
    """The charger's measured DC output."""

    voltage_v: float
    current_a: float
    at_s: float


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the controller sees at ``now_s`` (the newest value of each input)."""

    now_s: float
    meter: MeterSample | None
    limits: FreshValue[BmsLimits] | None
    pack_voltage_v: float | None
    soc_pct: float | None
    inverters: tuple[InverterReading | None, ...]
    charger: ChargerReading | None
    # the window or price rule in force (schedule.decide, from the wall clock and the price)
    rule: Rule = NO_RULE


@dataclass(frozen=True, slots=True)
class ControllerOutput:
    """Commands plus what explains them."""

    commands: Commands
    setpoint_w: float
    law: LawOutput
    limits_ok: bool
    faults: tuple[FollowFault, ...]
    quality: LoopQuality
    applied: Applied


def unit_volts(reading_v: float, pack_v: float | None) -> float:
    """The units' DC voltage for their caps, from their reading and the bms's pack voltage.

    The reading is what their cut-off compares (the cable's drop included) but comes in
    `UNIT_READING_STEP_V` steps; the bms measures the pack finer. A pack voltage within half
    a step of the reading is the same voltage measured finer, and is used: the rounded
    reading cost a 900 W unit up to 90 W of the static derating near the cut-off (issue 18:
    evenings draining the pack). A pack further above the reading means a drop to the units,
    and the reading decides; a reading above the pack is an offset in the unit's
    measurement and is not believed.
    """
    if pack_v is None:
        return reading_v
    if abs(pack_v - reading_v) <= UNIT_READING_STEP_V / 2:
        return pack_v
    return min(reading_v, pack_v)


class SagTracker:
    """The units' caps from the measured sag (`SagEstimate`, `headroom_caps`).

    Two voltages, each with a slope of its own: the units' own DC readings when every unit
    reports one (what their cut-off acts on, the cable's drop included; kept
    `SAG_GUARD_UNIT_V` above the cut-off), else the bms's pack voltage (kept `SAG_GUARD_V`
    above it: the drop to the units is not known). The pack's slope pairs each set of
    measured outputs with the pack voltage measured at the same time.
    """

    def __init__(self, units: tuple[InverterUnit, ...]) -> None:
        self.units = units
        self.estimate = SagEstimate()
        self.unit_estimate = SagEstimate()
        self._voltages: deque[tuple[float, float]] = deque(maxlen=8)  # (at_s, pack V)

    def update(
        self, obs: Observation, readings: tuple[InverterReading | None, ...]
    ) -> tuple[float, ...]:
        """Learn from ``obs`` (``readings``: the units' fresh readings, None stale); the caps
        for this step."""
        outputs = tuple(r.output_w if r is not None and r.measured else None for r in readings)
        self._learn(obs, outputs)
        known = len(outputs) == len(self.units) and all(w is not None for w in outputs)
        output_w = sum(w for w in outputs if w is not None) if known else None
        at_units = self._unit_voltage(readings) if known else None
        if at_units is None or output_w is None:
            slope = self.estimate.slope_v_per_w
            return headroom_caps(self.units, obs.pack_voltage_v, output_w, slope)
        at_s, unit_v = at_units
        self.unit_estimate.observe(at_s, output_w, unit_v, sum(u.max_w for u in self.units))
        volts = unit_volts(unit_v, obs.pack_voltage_v)
        slope = self.unit_estimate.slope_v_per_w
        return headroom_caps(self.units, volts, output_w, slope, SAG_GUARD_UNIT_V)

    def _unit_voltage(
        self, readings: tuple[InverterReading | None, ...]
    ) -> tuple[float, float] | None:
        """(when, the lowest of the units' own DC readings), if every unit gave one at once."""
        units = [r for r in readings[: len(self.units)] if r is not None]
        if len(units) != len(self.units):
            return None
        volts = [r.dc_voltage_v for r in units]
        if any(v is None or not v > 0 for v in volts):
            return None
        stamps = [r.at_s for r in units]
        if max(stamps) - min(stamps) > SAG_PAIRING_S:
            return None
        return max(stamps), min(v for v in volts if v is not None)

    def _learn(self, obs: Observation, outputs: tuple[float | None, ...]) -> None:
        volts = obs.pack_voltage_v
        if obs.limits is not None and volts is not None and volts > 0:
            v_at_s = obs.limits.at_s
            if not self._voltages or v_at_s > self._voltages[-1][0]:
                self._voltages.append((v_at_s, volts))
        readings = [r for r in obs.inverters[: len(self.units)] if r is not None]
        if (
            not self._voltages
            or len(readings) != len(self.units)
            or len(outputs) != len(self.units)
            or any(w is None for w in outputs)
        ):
            return
        stamps = [r.at_s for r in readings]
        at_s = max(stamps)
        if at_s - min(stamps) > SAG_PAIRING_S:
            return
        v_at_s, volts = min(self._voltages, key=lambda p: abs(p[0] - at_s))
        if abs(v_at_s - at_s) > SAG_PAIRING_S:
            return
        output_w = sum(w for w in outputs if w is not None)
        self.estimate.observe(at_s, output_w, volts, sum(u.max_w for u in self.units))


class Controller:
    """Pure and stateful; create one per service (or bench run)."""

    CV_MARGIN_V = 0.3

    def __init__(self, settings: ControllerSettings, units: tuple[InverterUnit, ...]) -> None:
        self.settings = settings
        self.units = units
        self.law = ControlLaw()
        self.dispatcher = Dispatcher(units)
        self.quality = QualityMonitor(settings.quality_window_s)
        self._inverter_monitors = tuple(FollowMonitor(u.name, "W") for u in units)
        self._charger_monitor = FollowMonitor("charger", "A")
        self._last: Commands | None = None
        self.rules = RuleGate()
        self.sag = SagTracker(units)

    def set_units(self, units: tuple[InverterUnit, ...]) -> None:
        """Take a new description of the inverter lines (learned from the inverter service).

        Same names: only ratings or DC windows changed, the state carries over. Other names:
        what was commanded to which line is no longer known, so the interlock starts afresh
        (both sides count as on until measured off, as after a restart); the SoC gate stays.
        """
        if not units:
            raise ValueError("controller: need at least one inverter line, got 0")
        if tuple(u.name for u in units) == tuple(u.name for u in self.units):
            self.units = units
            self.dispatcher.units = units
            self.sag.units = units
            return
        soc_gate = self.dispatcher.soc_gate
        self.sag = SagTracker(units)
        self.units = units
        self.dispatcher = Dispatcher(units)
        self.dispatcher.soc_gate = soc_gate
        self._inverter_monitors = tuple(FollowMonitor(u.name, "W") for u in units)
        self._last = None

    def update_settings(self, settings: ControllerSettings) -> None:
        """Take new (already validated) settings; state carries over."""
        self.settings = settings
        self.quality.window_s = settings.quality_window_s

    def _fresh_readings(self, now_s: float, obs: Observation) -> tuple[InverterReading | None, ...]:
        out: list[InverterReading | None] = []
        for i in range(len(self.units)):
            r = obs.inverters[i] if i < len(obs.inverters) else None
            fresh = r is not None and is_fresh(r.at_s, now_s, self.settings.state_stale_s)
            out.append(r if fresh else None)
        return tuple(out)

    def _fresh_inverters(self, now_s: float, obs: Observation) -> tuple[float | None, ...]:
        """Measured outputs (None: stale or not measured), for the law and supervision."""
        return tuple(
            r.output_w if r is not None and r.measured else None
            for r in self._fresh_readings(now_s, obs)
        )

    def _interlock_inverters(self, now_s: float, obs: Observation) -> tuple[float | None, ...]:
        """What the interlock assumes each unit feeds: None unknown, inf possibly feeding."""
        out: list[float | None] = []
        for r in self._fresh_readings(now_s, obs):
            if r is None:
                out.append(None)
            elif now_s < r.feeding_until_s:
                out.append(math.inf)
            else:
                # past its hold-off a unit that reports nothing is off
                out.append(r.output_w if r.measured else 0.0)
        return tuple(out)

    def _fresh_charger(self, now_s: float, obs: Observation) -> ChargerReading | None:
        r = obs.charger
        if r is None or not is_fresh(r.at_s, now_s, self.settings.state_stale_s):
            return None
        return r

    def _record_battery(self, obs: Observation, inverters: tuple[float | None, ...]) -> None:
        """Measured battery AC power; a device with no measurement counts as its last command."""
        last = self._last
        total = 0.0
        stamps: list[float] = []
        for i, w in enumerate(inverters):
            if w is None:
                total += last.inverter_w[i] if last is not None else 0.0
            else:
                total += w
                reading = obs.inverters[i] if i < len(obs.inverters) else None
                if reading is not None:
                    stamps.append(reading.at_s)
        charger = self._fresh_charger(obs.now_s, obs)
        if charger is not None:
            total -= charger.voltage_v * charger.current_a / self.settings.charger_efficiency
            stamps.append(charger.at_s)
        elif last is not None and last.charger.on and obs.pack_voltage_v:
            total -= last.charger.current_a * obs.pack_voltage_v / self.settings.charger_efficiency
        if stamps:
            self.law.record_battery(max(stamps), total)

    def _commanded_battery_w(self, commands: Commands, pack_voltage_v: float | None) -> float:
        charge_w = 0.0
        if commands.charger.on and pack_voltage_v:
            charge_w = (
                commands.charger.current_a * pack_voltage_v / self.settings.charger_efficiency
            )
        return commands.discharge_w - charge_w

    def limits_ok(self, obs: Observation) -> bool:
        """bms limits present, fresh and without alarm, and a pack voltage known."""
        lim = obs.limits
        return (
            lim is not None
            and not lim.value.alarm
            and lim.fresh(obs.now_s, self.settings.bms_stale_s)
            and obs.pack_voltage_v is not None
            and obs.pack_voltage_v > 0
        )

    def _bounds(self, obs: Observation, limits_ok: bool, caps_w: tuple[float, ...]) -> PowerBounds:
        s = self.settings
        if not limits_ok or obs.limits is None or obs.pack_voltage_v is None:
            return PowerBounds(0.0, 0.0)
        v = obs.pack_voltage_v
        gate = self.dispatcher.soc_gate
        gate.update(obs.soc_pct, s)
        units_w = sum(caps_w)
        dis = min(
            s.max_discharge_w,
            units_w,
            obs.limits.value.discharge_limit_a * v * s.inverter_efficiency,
        )
        chg_a = min(obs.limits.value.charge_limit_a, s.charger_max_current_a)
        chg = min(s.max_charge_w, chg_a * v / s.charger_efficiency)
        if chg_a < self.dispatcher.charge_floor_a(obs.limits.value, s):
            chg = 0.0
        if not gate.discharge_allowed or s.mode is Mode.CHARGE_ONLY or not s.discharge_enabled:
            dis = 0.0
        if not gate.charge_allowed or s.mode is Mode.DISCHARGE_ONLY or not s.charge_enabled:
            chg = 0.0
        return PowerBounds(max(0.0, dis), max(0.0, chg))

    def step(self, obs: Observation) -> ControllerOutput:
        """One control step at ``obs.now_s``."""
        s = self.settings
        now_s = obs.now_s
        inverters = self._fresh_inverters(now_s, obs)
        charger = self._fresh_charger(now_s, obs)
        self._record_battery(obs, inverters)
        caps_w = self.sag.update(obs, self._fresh_readings(now_s, obs))
        ok = self.limits_ok(obs)
        applied = self._apply_rule(obs, ok)
        bounds = self._bounds(obs, ok, caps_w)
        if not applied.discharge_allowed:
            bounds = PowerBounds(0.0, bounds.max_charge_w)
        if not ok or s.mode in (Mode.HOLD, Mode.OFF):
            law_out = self.law.force_zero(now_s, s)
        elif applied.grid_charge_w > 0 and bounds.max_charge_w > 0:
            law_out = self.law.set_constant(now_s, -applied.grid_charge_w, bounds, s)
        elif s.mode is Mode.CONSTANT_POWER:
            law_out = self.law.set_constant(now_s, s.constant_power_w, bounds, s)
        else:
            law_out = self.law.step(now_s, obs.meter, bounds, s)
        data = DispatchInput(
            pack_voltage_v=obs.pack_voltage_v,
            soc_pct=obs.soc_pct,
            limits=obs.limits.value if ok and obs.limits is not None else None,
            inverter_output_w=self._interlock_inverters(now_s, obs),
            charger_current_a=None if charger is None else charger.current_a,
            unit_caps_w=caps_w,
        )
        commands = self.dispatcher.step(now_s, self._calibrated(law_out.command_w, bounds), data, s)
        self._last = commands
        self.law.record_command(now_s, self._commanded_battery_w(commands, obs.pack_voltage_v))
        faults = self._supervise(now_s, commands, inverters, charger)
        if obs.meter is not None:
            self.quality.add_meter(obs.meter.at_s, obs.meter.grid_w - s.target_grid_w)
        self.quality.add_setpoint(now_s, law_out.setpoint_w, s.deadband_w)
        return ControllerOutput(
            commands=commands,
            setpoint_w=law_out.setpoint_w,
            law=law_out,
            limits_ok=ok,
            faults=faults,
            quality=self.quality.report(now_s),
            applied=applied,
        )

    def _calibrated(self, command_w: float, bounds: PowerBounds) -> float:
        """The law's command corrected by the devices' measured ratio (`law.Calibration`),
        except at a bound: there the dispatcher's clamps decide (the charger's current at the
        bms's CCL, each unit at its cap), and the ratio would only hold the output below
        them (charging at 49.6 A under a 50 A CCL)."""
        at_bound = (
            -command_w >= bounds.max_charge_w - 0.5 or command_w >= bounds.max_discharge_w - 0.5
        )
        return command_w if at_bound else self.law.calibrated(command_w)

    def _apply_rule(self, obs: Observation, limits_ok: bool) -> Applied:
        """The schedule's or price rule's effect. Windows and price rules act in mode auto
        only (another mode is the owner's explicit order); the reserve SoC in every mode."""
        s = self.settings
        rule = obs.rule if s.mode is Mode.AUTO else NO_RULE
        lim = obs.limits
        return self.rules.apply(
            rule,
            soc_pct=obs.soc_pct,
            reserve_soc_pct=s.reserve_soc_pct,
            hysteresis_pct=s.soc_hysteresis_pct,
            limits_ok=limits_ok,
            pack_voltage_v=obs.pack_voltage_v,
            cvl_v=None if lim is None else lim.value.cvl_v,
        )

    def _supervise(
        self,
        now_s: float,
        commands: Commands,
        inverters: tuple[float | None, ...],
        charger: ChargerReading | None,
    ) -> tuple[FollowFault, ...]:
        s = self.settings
        faults: list[FollowFault] = []
        for monitor, cmd, measured in zip(
            self._inverter_monitors, commands.inverter_w, inverters, strict=True
        ):
            fault = monitor.update(now_s, cmd, measured, s.follow_tolerance_w, s.follow_timeout_s)
            if fault is not None:
                faults.append(fault)
        cmd_a = commands.charger.current_a if commands.charger.on else 0.0
        measured_a = None if charger is None else charger.current_a
        cv_phase = (
            charger is not None
            and commands.charger.on
            and charger.voltage_v >= commands.charger.voltage_v - self.CV_MARGIN_V
        )
        if cv_phase and measured_a is not None and measured_a <= cmd_a:
            # At its voltage limit the charger rightly delivers less than the current asked.
            measured_a = cmd_a
        tol_a = s.follow_tolerance_w / max(charger.voltage_v if charger else 48.0, 1.0)
        fault = self._charger_monitor.update(now_s, cmd_a, measured_a, tol_a, s.follow_timeout_s)
        if fault is not None:
            faults.append(fault)
        return tuple(faults)
