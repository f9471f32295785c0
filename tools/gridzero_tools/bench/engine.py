"""Closed loop: one controller, the simulator's plant and models of the device services.

The controller under test only sees what it would see over MQTT: meter values as they are
published (every ``meter.period_s``, after ``meter.latency_s``), bms limits every 0.5 s,
inverter and charger states every 1 s, SoC every 1 s. Its commands reach the plant the way the
device services send them: frames every ``frame_period_s`` and a changed command at once (as the
inverter and charger services do), clamped to the bms limits, the
charger never below its minimum current but in the charger service's constant-voltage taper (the R48's set-point ranges, PurpleAlien/R48_Rectifier; the SoyoSource's send rate, syssi/esphome-soyosource-gtn-virtual-meter).

bms limits: the bms service's protection module was not available when the bench was written,
so `SimpleBms` computes limits from the plant's true cell voltages with the housebatt rules
(Tom-evnut/VW-bms VWBMSV2.ino loadSettings, anikrooz/housebatt housebatt.ino: CVL 4.10 V/cell, charge taper over the 0.2 V below it, discharge taper over
the 0.3 V above 3.20 V, 50 A maximum each way, alarms at 4.20 V and 3.00 V), with the release
latches and ramp of services/bms/gridzero_bms/protection.py.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from gridzero.contract import Alarm, BmsLimits
from gridzero.runtime.freshness import FreshValue
from gridzero_charger.domain import Taper, next_taper, taper_entry_v, taper_holds
from gridzero_controller.core import ChargerReading, InverterReading, Observation
from gridzero_controller.dispatch import Commands, InverterUnit
from gridzero_controller.law import MeterSample
from gridzero_tools.bench.baselines import BenchController, FramesItself
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.plant import Plant, PlantTruth
from gridzero_tools.sim.profile import Profile


@dataclass(frozen=True, slots=True)
class BmsRules:
    """Per-cell thresholds of the bench's stand-in bms (housebatt values)."""

    charge_end_v: float = 4.10
    charge_taper_v: float = 0.20
    discharge_cutoff_v: float = 3.20
    discharge_taper_v: float = 0.30
    over_voltage_v: float = 4.20
    under_voltage_v: float = 3.00
    max_charge_a: float = 50.0
    max_discharge_a: float = 50.0
    restart_hysteresis_v: float = 0.10
    release_delay_s: float = 2.0
    ramp_a_per_s: float = 5.0


_ALARM = Alarm(code="cell_voltage", message="a cell is outside its hard limits", since_ts=0.0)


class SimpleBms:
    """bms limits from the plant's true cell voltages (see the module docstring).

    Like the bms service's protection (services/bms/gridzero_bms/protection.py): an "empty" latch at the
    discharge cut-off released 0.1 V above it after 2 s, a "full" latch at the charge end
    released 0.2 V below it, and raised limits ramping back at 5 A/s (reductions at once).
    Without these, a pack that sags under load would toggle its own limit every few seconds.
    """

    def __init__(self, params: PlantParams, rules: BmsRules = BmsRules()) -> None:
        self.rules = rules
        self.series_cells = params.pack.cells_per_module * params.pack.modules_per_string
        self._empty = False
        self._empty_release_since: float | None = None
        self._full = False
        self._ccl_a = 0.0
        self._dcl_a = 0.0
        self._last_s: float | None = None
        self._seq = 0

    def _latches(self, high: float, low: float, now_s: float) -> None:
        r = self.rules
        if low <= r.discharge_cutoff_v:
            self._empty = True
            self._empty_release_since = None
        elif self._empty and low > r.discharge_cutoff_v + r.restart_hysteresis_v:
            if self._empty_release_since is None:
                self._empty_release_since = now_s
            if now_s - self._empty_release_since >= r.release_delay_s:
                self._empty = False
        else:
            self._empty_release_since = None
        if high >= r.charge_end_v:
            self._full = True
        elif high < r.charge_end_v - r.charge_taper_v:
            self._full = False

    def limits(self, truth: PlantTruth, now_s: float) -> FreshValue[BmsLimits]:
        """Limits for the present cell voltages, as the bms would publish them and a consumer
        would keep them (arrived at ``now_s``)."""
        r = self.rules
        high = truth.cell_max_v
        low = truth.cell_min_v
        self._latches(high, low, now_s)
        charge_frac = min(1.0, max(0.0, (r.charge_end_v - high) / r.charge_taper_v))
        discharge_frac = min(1.0, max(0.0, (low - r.discharge_cutoff_v) / r.discharge_taper_v))
        alarm = high >= r.over_voltage_v or low <= r.under_voltage_v
        ccl = 0.0 if alarm or self._full else r.max_charge_a * charge_frac
        dcl = 0.0 if alarm or self._empty else r.max_discharge_a * discharge_frac
        dt = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s
        step = r.ramp_a_per_s * min(dt, 1.0)
        self._ccl_a = ccl if ccl <= self._ccl_a else min(ccl, self._ccl_a + step)
        self._dcl_a = dcl if dcl <= self._dcl_a else min(dcl, self._dcl_a + step)
        self._seq += 1
        payload = BmsLimits(
            ts=max(0.0, now_s),
            boot="bench",
            seq=self._seq,
            cvl_v=r.charge_end_v * self.series_cells,
            ccl_a=self._ccl_a,
            dcl_a=self._dcl_a,
            charge_allowed=True,
            discharge_allowed=True,
            pack_voltage_v=max(0.0, truth.pack_voltage_v),
            alarms=[_ALARM] if alarm else [],
        )
        return FreshValue(payload, now_s)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Timing of the modelled services."""

    tick_s: float = 0.25
    frame_period_s: float = 1.0
    min_gap_s: float = 0.25
    state_period_s: float = 1.0
    bms_period_s: float = 0.5
    control_period_s: float = 0.5
    limits_stale_s: float = 3.0
    charger_min_current_a: float = 5.2
    seed: int = 1
    duration_s: float | None = None
    start_s: float | None = None


def units_of(params: PlantParams) -> tuple[InverterUnit, ...]:
    """The controller's view of the plant's inverters (names, limits, DC windows)."""
    return tuple(
        InverterUnit(
            name=p.name, max_w=p.max_power_w, dc_min_v=p.dc_shutdown_v, dc_max_v=p.dc_max_v
        )
        for p in params.inverters
    )


class DeviceServices:
    """What the inverter and charger services do with a command (clamp, frames)."""

    def __init__(self, params: PlantParams, config: BenchConfig) -> None:
        self.params = params
        self.config = config
        self.commands: Commands | None = None
        self.limits: FreshValue[BmsLimits] | None = None
        self.pack_voltage_v = 0.0
        self.last_sent: dict[int, tuple[float, float]] = {}
        # When a frame last carried a new value, per unit: min_gap spaces changes only.
        self.last_change: dict[int, float] = {}
        # When a change held back by min_gap is due (the service's next tick after the gap).
        self.pending_s = math.inf
        # The controller writes its own inverter frames (`FramesItself`): no service frames.
        self.own_frames = False
        # What the charger service last told the rectifier, and its taper (`next_taper`).
        self.charger_on = False
        self.taper: Taper | None = None

    def _limits_ok(self, now_s: float) -> bool:
        lim = self.limits
        return (
            lim is not None and not lim.value.alarm and lim.fresh(now_s, self.config.limits_stale_s)
        )

    def send_frames(self, plant: Plant, now_s: float) -> None:
        """One frame period: inverter demand frames and charger set-points."""
        ok = self._limits_ok(now_s)
        self.pack_voltage_v = plant.pack_voltage_v
        if not self.own_frames:
            for i, w in enumerate(self._demands(now_s)):
                self._send(plant, i, w, now_s)
        self._charger(plant, now_s, ok)

    def send_own(self, plant: Plant, frames: tuple[float, ...], now_s: float) -> None:
        """Frames a `FramesItself` controller wrote, clamped to the bms limits like any other."""
        self.pack_voltage_v = plant.pack_voltage_v
        for i, w in enumerate(self._clamp(now_s, frames)):
            self._send(plant, i, w, now_s)

    def _send(self, plant: Plant, unit: int, demand_w: float, now_s: float) -> None:
        watts = float(
            round(demand_w)
        )  # the frame carries integer watts (syssi soyosource_modbus.cpp)
        plant.command_inverter(unit, watts, now_s)
        sent = self.last_sent.get(unit)
        if sent is None or sent[1] != watts:
            self.last_change[unit] = now_s
        self.last_sent[unit] = (now_s, watts)

    def _demands(self, now_s: float) -> list[float]:
        cmd = self.commands
        if cmd is None:
            return [0.0] * len(self.params.inverters)
        return self._clamp(now_s, cmd.inverter_w)

    def _clamp(self, now_s: float, watts: tuple[float, ...]) -> list[float]:
        lim = self.limits
        n = len(self.params.inverters)
        if not self._limits_ok(now_s) or lim is None:
            return [0.0] * n
        eff = min(p.efficiency for p in self.params.inverters)
        cap_w = lim.value.discharge_limit_a * self.pack_voltage_v * eff
        total = sum(max(0.0, w) for w in watts)
        scale = min(1.0, cap_w / total) if total > 0 else 0.0
        return [max(0.0, w) * scale for w in watts[:n]]

    def send_cuts(self, plant: Plant, now_s: float) -> None:
        """Like the inverter service: a changed demand goes out at once, at most one change
        per ``min_gap_s`` (a periodic repeat does not hold a change back), and a change held
        back goes out when the gap is over, not only at the next period
        (services/inverter/gridzero_inverter/domain.py `due`). Like the charger service, a changed charge
        command goes out at once too (services/charger/gridzero_charger/domain.py `needs_refresh`)."""
        self.pack_voltage_v = plant.pack_voltage_v
        self._charger(plant, now_s, self._limits_ok(now_s))
        self.pending_s = math.inf
        if self.own_frames:
            return
        for i, w in enumerate(self._demands(now_s)):
            sent = self.last_sent.get(i)
            if sent is None or round(w) == sent[1]:
                continue
            free_s = self.last_change.get(i, -math.inf) + self.config.min_gap_s
            if now_s >= free_s - _EPS:
                self._send(plant, i, w, now_s)
            else:
                self.pending_s = min(self.pending_s, free_s)

    def _charger(self, plant: Plant, now_s: float, ok: bool) -> None:
        cmd = self.commands
        lim = self.limits
        cp = self.params.charger
        min_a = self.config.charger_min_current_a
        if not ok or cmd is None or lim is None or not cmd.charger.on:
            self._charger_off(plant, now_s)
            return
        ccl_a = lim.value.charge_limit_a
        # A running charge whose CCL fell below the minimum goes on at constant voltage, the
        # rectifier's output voltage of that moment (services/charger/gridzero_charger/domain.py
        # `Taper`, `next_taper`, `taper_holds`).
        taper = next_taper(
            self.taper,
            self.charger_on,
            taper_entry_v(plant.rectifier.terminal_v, self.pack_voltage_v),
            plant.charger_current_a,
            ccl_a,
            now_s,
        )
        voltage_v = lim.value.cvl_v
        if cmd.charger.voltage_v > 0:
            voltage_v = min(voltage_v, cmd.charger.voltage_v)
        if taper is not None and taper_holds(taper, ccl_a, min_a):
            voltage_v = min(voltage_v, taper.voltage_v)
            current_a = min_a
        elif ccl_a < min_a:
            self._charger_off(plant, now_s)
            return
        else:
            taper = None
            top_a = min(ccl_a, cp.max_fraction * cp.amps_per_fraction)
            current_a = max(min_a, min(top_a, cmd.charger.current_a))
        self.taper = taper
        voltage_v = max(cp.voltage_min_v, min(cp.voltage_max_v, voltage_v))
        plant.command_charger_online(voltage_v, current_a / cp.amps_per_fraction, now_s)
        plant.charger_dc(True, now_s)
        self.charger_on = True

    def _charger_off(self, plant: Plant, now_s: float) -> None:
        plant.charger_dc(False, now_s)
        self.charger_on = False
        self.taper = None


@dataclass(slots=True)
class Violations:
    """Limit violations seen in the plant's truth (each counted once per episode)."""

    cell_over_voltage: int = 0
    cell_under_voltage: int = 0
    charge_over_current: int = 0
    discharge_over_current: int = 0
    charge_and_discharge: int = 0
    _active: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All violations."""
        return (
            self.cell_over_voltage
            + self.cell_under_voltage
            + self.charge_over_current
            + self.discharge_over_current
            + self.charge_and_discharge
        )

    def as_dict(self) -> dict[str, int]:
        """Counts by kind."""
        return {
            "cell_over_voltage": self.cell_over_voltage,
            "cell_under_voltage": self.cell_under_voltage,
            "charge_over_current": self.charge_over_current,
            "discharge_over_current": self.discharge_over_current,
            "charge_and_discharge": self.charge_and_discharge,
        }

    def note(self, kind: str, active: bool, now_s: float, grace_s: float = 0.0) -> None:
        """Count an episode of ``kind`` once it has lasted ``grace_s``."""
        if not active:
            self._active.pop(kind, None)
            return
        since = self._active.setdefault(kind, now_s)
        if since >= 0 and now_s - since >= grace_s:
            setattr(self, kind, getattr(self, kind) + 1)
            self._active[kind] = -math.inf  # counted; wait for the episode to end


@dataclass(slots=True)
class RunTrace:
    """What one closed-loop run produced."""

    controller: str
    start_s: float
    tick_s: float
    grid_w: array[float]
    battery_cmd_w: array[float]
    # What the battery side actually delivered (inverters' AC output − charger AC input):
    # reversals and oscillation are counted on this, what the house and the devices see.
    battery_w: array[float]
    soc_pct: array[float]
    import_wh: float
    export_wh: float
    abs_grid_wh: float
    battery_throughput_wh: float
    violations: Violations
    duration_s: float
    # How often the charger's DC output was switched on (`Rectifier.dc_starts`).
    charger_starts: int = 0


class ViolationCheck:
    """Checks the plant's truth against hard cell limits and the bms's own current limits."""

    def __init__(
        self, bms: SimpleBms, current_tolerance_a: float = 1.0, grace_s: float = 5.0
    ) -> None:
        self.bms = bms
        self.tol = current_tolerance_a
        self.grace_s = grace_s
        self.v = Violations()
        self._limits: FreshValue[BmsLimits] | None = None

    def check(
        self, plant: Plant, truth: PlantTruth, now_s: float, limits: FreshValue[BmsLimits]
    ) -> None:
        """Cell voltages (from a fresh truth snapshot) and the limits the bms publishes."""
        r = self.bms.rules
        v = self.v
        self._limits = limits
        v.note("cell_over_voltage", truth.cell_max_v > r.over_voltage_v, now_s)
        v.note("cell_under_voltage", truth.cell_min_v < r.under_voltage_v, now_s)
        self.check_fast(plant, now_s)

    def check_fast(self, plant: Plant, now_s: float) -> None:
        """Currents against the newest limits, and charge/discharge at once."""
        v = self.v
        lim = self._limits
        if lim is None:
            return
        current = plant.battery_current_a
        v.note(
            "charge_over_current",
            current > lim.value.charge_limit_a + self.tol,
            now_s,
            self.grace_s,
        )
        v.note(
            "discharge_over_current",
            -current > lim.value.discharge_limit_a + self.tol,
            now_s,
            self.grace_s,
        )
        both = plant.inverter_ac_w > 5.0 and plant.charger_current_a > 0.5
        v.note("charge_and_discharge", both, now_s)


_EPS = 1e-9


def _battery_cmd_w(cmd: Commands, pack_v: float, charger_efficiency: float) -> float:
    charge_w = cmd.charger.current_a * pack_v / charger_efficiency if cmd.charger.on else 0.0
    return sum(cmd.inverter_w) - charge_w


class _Loop:
    """State of one closed-loop run (see `run`)."""

    def __init__(
        self,
        controller: BenchController,
        params: PlantParams,
        profile: Profile,
        config: BenchConfig,
    ) -> None:
        self.controller = controller
        self.params = params
        self.config = config
        self.start = profile.start_s if config.start_s is None else config.start_s
        end = profile.end_s if config.duration_s is None else self.start + config.duration_s
        self.plant = Plant(params, profile, seed=config.seed, start_s=self.start)
        self.bms = SimpleBms(params)
        self.services = DeviceServices(params, config)
        self.services.own_frames = isinstance(controller, FramesItself)
        self.check = ViolationCheck(self.bms)
        self.n_rec = max(1, round((end - self.start) / config.tick_s))
        self.grid = array("f")
        self.bat_cmd = array("f")
        self.bat = array("f")
        self.soc_trace = array("f")
        self.meter: MeterSample | None = None
        self.limits: FreshValue[BmsLimits] | None = None
        self.pack_v: float | None = None
        self.soc: float | None = None
        self.inverters: tuple[InverterReading | None, ...] = tuple(None for _ in params.inverters)
        self.charger: ChargerReading | None = None
        self.truth: PlantTruth | None = None
        mp = params.meter
        self.k_meter = math.ceil((self.start - mp.phase_s) / mp.period_s - 1e-9)
        self.next_meter = self._meter_time()
        self.next_bms = self.next_state = self.next_frame = self.next_ctrl = self.next_truth = (
            self.start
        )
        self.next_rec = self.start + config.tick_s
        self.cmd_w = 0.0

    def _meter_time(self) -> float:
        mp = self.params.meter
        return mp.phase_s + self.k_meter * mp.period_s + mp.latency_s

    def _on_meter(self, now: float) -> bool:
        self.k_meter += 1
        self.next_meter = self._meter_time()
        latest = self.plant.meter.latest(now + _EPS)
        if latest is None or math.isnan(latest.value_w):
            return False
        if self.meter is not None and latest.available_s <= self.meter.at_s:
            return False
        self.meter = MeterSample(latest.value_w, now)
        return True

    def _on_bms(self, now: float) -> None:
        self.next_bms += self.config.bms_period_s
        if self.truth is None or now >= self.next_truth - _EPS:
            # Cells are read once a second (they change slowly and are the costly part of
            # the plant); limits are published every bms period.
            self.next_truth = now + 1.0
            self.truth = self.plant.truth()
            self.limits = self.bms.limits(self.truth, now)
            self.check.check(self.plant, self.truth, now, self.limits)
        else:
            self.limits = self.bms.limits(self.truth, now)
        self.services.limits = self.limits
        self.pack_v = self.plant.pack_voltage_v

    def _on_state(self, now: float) -> None:
        plant = self.plant
        self.next_state += self.config.state_period_s
        # each unit's own DC reading as its status reports it (0.1 V steps), at the bus the
        # plant's units see
        volts = round(plant.pack_voltage_v, 1)
        self.inverters = tuple(
            InverterReading(inv.output_w, now, dc_voltage_v=volts) for inv in plant.inverters
        )
        self.charger = ChargerReading(plant.rectifier.terminal_v, plant.charger_current_a, now)
        self.soc = plant.soc_pct

    def _on_control(self, now: float) -> None:
        self.next_ctrl = now + self.config.control_period_s
        obs = Observation(
            now, self.meter, self.limits, self.pack_v, self.soc, self.inverters, self.charger
        )
        self.services.commands = self.controller.step(obs)
        if isinstance(self.controller, FramesItself):
            frames = self.controller.take_frames()
            if frames is not None:
                self.services.send_own(self.plant, frames, now)
        self.services.send_cuts(self.plant, now)
        self.cmd_w = _battery_cmd_w(
            self.services.commands, self.pack_v or 48.0, self.params.charger.efficiency
        )

    def step(self, progress: Callable[[float], None] | None, report_every: int) -> None:
        """Advance to the next event and handle everything due then."""
        now = min(
            self.next_meter,
            self.next_bms,
            self.next_state,
            self.next_frame,
            self.next_ctrl,
            self.next_rec,
            self.services.pending_s,
        )
        self.plant.step(now)
        fresh = now >= self.next_meter - _EPS and self._on_meter(now)
        if now >= self.next_bms - _EPS:
            self._on_bms(now)
        if now >= self.next_state - _EPS:
            self._on_state(now)
        if fresh or now >= self.next_ctrl - _EPS:
            self._on_control(now)
        if now >= self.next_frame - _EPS:
            self.next_frame += self.config.frame_period_s
            self.services.send_frames(self.plant, now)
        if now >= self.services.pending_s - _EPS:
            self.services.send_cuts(self.plant, now)
        if now >= self.next_rec - _EPS:
            self.next_rec += self.config.tick_s
            self.grid.append(self.plant.grid_w)
            self.bat_cmd.append(self.cmd_w)
            self.bat.append(self.plant.inverter_ac_w - self.plant.charger_ac_w)
            self.soc_trace.append(self.plant.soc_pct)
            self.check.check_fast(self.plant, now)
            if progress is not None and len(self.grid) % report_every == 0:
                progress(len(self.grid) / self.n_rec)

    def trace(self) -> RunTrace:
        """The result."""
        e = self.plant.energy
        return RunTrace(
            controller=self.controller.name,
            start_s=self.start,
            tick_s=self.config.tick_s,
            grid_w=self.grid,
            battery_cmd_w=self.bat_cmd,
            battery_w=self.bat,
            soc_pct=self.soc_trace,
            import_wh=e.grid_import_wh,
            export_wh=e.grid_export_wh,
            abs_grid_wh=e.abs_grid_wh,
            battery_throughput_wh=e.battery_in_wh + e.battery_out_wh,
            violations=self.check.v,
            duration_s=self.n_rec * self.config.tick_s,
            charger_starts=self.plant.rectifier.dc_starts,
        )


def run(
    controller: BenchController,
    params: PlantParams,
    profile: Profile,
    config: BenchConfig = BenchConfig(),
    progress: Callable[[float], None] | None = None,
) -> RunTrace:
    """Close the loop over the profile (or ``config.duration_s`` of it).

    Event driven: the plant is advanced to the next event (a meter value becoming visible,
    a bms or state publication, a frame, a control step or a trace sample); the plant
    sub-steps its physics at ``sim.max_step_s`` in between.
    """
    loop = _Loop(controller, params, profile, config)
    report_every = max(1, loop.n_rec // 200)
    while len(loop.grid) < loop.n_rec:
        loop.step(progress, report_every)
    return loop.trace()
