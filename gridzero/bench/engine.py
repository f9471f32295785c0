"""Closed loop: one controller, the simulator's plant and models of the device services.

The controller under test only sees what it would see over MQTT: meter values as they are
published (every ``meter.period_s``, after ``meter.latency_s``), bms limits every 0.5 s,
inverter and charger states every 1 s, SoC every 1 s. Its commands reach the plant the way the
device services send them: frames every ``frame_period_s``, clamped to the bms limits, the
charger never below its minimum current (research/devices.md A.5, B.3).

bms limits: the bms service's protection module was not available when the bench was written,
so `SimpleBms` computes limits from the plant's true cell voltages with the housebatt rules
(vw-bms-can.md 6.2: CVL 4.10 V/cell, charge taper over the 0.2 V below it, discharge taper over
the 0.3 V above 3.20 V, 50 A maximum each way, alarms at 4.20 V and 3.00 V).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from gridzero.bench.baselines import BenchController
from gridzero.services.controller.core import ChargerReading, InverterReading, Observation
from gridzero.services.controller.dispatch import BmsLimits, Commands, InverterUnit
from gridzero.services.controller.law import MeterSample
from gridzero.sim.params import PlantParams
from gridzero.sim.plant import Plant, PlantTruth
from gridzero.sim.profile import Profile


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


class SimpleBms:
    """bms limits from the plant's true cell voltages (see the module docstring)."""

    def __init__(self, params: PlantParams, rules: BmsRules = BmsRules()) -> None:
        self.rules = rules
        self.series_cells = params.pack.cells_per_module * params.pack.modules_per_string

    def limits(self, truth: PlantTruth, now_s: float) -> BmsLimits:
        """Limits for the present cell voltages."""
        r = self.rules
        high = truth.cell_max_v
        low = truth.cell_min_v
        charge_frac = min(1.0, max(0.0, (r.charge_end_v - high) / r.charge_taper_v))
        discharge_frac = min(1.0, max(0.0, (low - r.discharge_cutoff_v) / r.discharge_taper_v))
        alarm = high >= r.over_voltage_v or low <= r.under_voltage_v
        return BmsLimits(
            charge_voltage_v=r.charge_end_v * self.series_cells,
            charge_current_a=0.0 if alarm else r.max_charge_a * charge_frac,
            discharge_current_a=0.0 if alarm else r.max_discharge_a * discharge_frac,
            alarm=alarm,
            at_s=now_s,
        )


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Timing of the modelled services."""

    tick_s: float = 0.25
    frame_period_s: float = 1.0
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
        InverterUnit(name=p.name, max_w=p.max_power_w, dc_min_v=p.dc_start_v, dc_max_v=p.dc_max_v)
        for p in params.inverters
    )


class DeviceServices:
    """What the inverter and charger services do with a command (clamp, frames)."""

    def __init__(self, params: PlantParams, config: BenchConfig) -> None:
        self.params = params
        self.config = config
        self.commands: Commands | None = None
        self.limits: BmsLimits | None = None

    def _limits_ok(self, now_s: float) -> bool:
        lim = self.limits
        return lim is not None and not lim.alarm and now_s - lim.at_s <= self.config.limits_stale_s

    def send_frames(self, plant: Plant, now_s: float) -> None:
        """One frame period: inverter demand frames and charger set-points."""
        cmd = self.commands
        ok = self._limits_ok(now_s)
        lim = self.limits
        v = plant.pack_voltage_v
        n = len(self.params.inverters)
        demands = [0.0] * n
        if ok and cmd is not None and lim is not None:
            eff = min(p.efficiency for p in self.params.inverters)
            cap_w = lim.discharge_current_a * v * eff
            total = sum(max(0.0, w) for w in cmd.inverter_w)
            scale = min(1.0, cap_w / total) if total > 0 else 0.0
            demands = [max(0.0, w) * scale for w in cmd.inverter_w[:n]]
        for i, w in enumerate(demands):
            plant.command_inverter(i, w, now_s)
        self._charger(plant, now_s, ok)

    def _charger(self, plant: Plant, now_s: float, ok: bool) -> None:
        cmd = self.commands
        lim = self.limits
        cp = self.params.charger
        min_a = self.config.charger_min_current_a
        if (
            not ok
            or cmd is None
            or lim is None
            or not cmd.charger.on
            or lim.charge_current_a < min_a
        ):
            plant.charger_dc(False, now_s)
            return
        top_a = min(lim.charge_current_a, cp.max_fraction * cp.amps_per_fraction)
        current_a = max(min_a, min(top_a, cmd.charger.current_a))
        voltage_v = lim.charge_voltage_v
        if cmd.charger.voltage_v > 0:
            voltage_v = min(voltage_v, cmd.charger.voltage_v)
        voltage_v = max(cp.voltage_min_v, min(cp.voltage_max_v, voltage_v))
        plant.command_charger_online(voltage_v, current_a / cp.amps_per_fraction, now_s)
        plant.charger_dc(True, now_s)


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
    import_wh: float
    export_wh: float
    abs_grid_wh: float
    battery_throughput_wh: float
    violations: Violations
    duration_s: float


class ViolationCheck:
    """Checks the plant's truth against hard cell limits and the bms's own current limits."""

    def __init__(
        self, bms: SimpleBms, current_tolerance_a: float = 1.0, grace_s: float = 5.0
    ) -> None:
        self.bms = bms
        self.tol = current_tolerance_a
        self.grace_s = grace_s
        self.v = Violations()
        self._limits: BmsLimits | None = None

    def check(self, plant: Plant, truth: PlantTruth, now_s: float) -> None:
        """Cell voltages (from a fresh truth snapshot) and the limits they imply."""
        r = self.bms.rules
        v = self.v
        self._limits = self.bms.limits(truth, now_s)
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
            "charge_over_current", current > lim.charge_current_a + self.tol, now_s, self.grace_s
        )
        v.note(
            "discharge_over_current",
            -current > lim.discharge_current_a + self.tol,
            now_s,
            self.grace_s,
        )
        both = plant.inverter_ac_w > 5.0 and plant.charger_current_a > 0.5
        v.note("charge_and_discharge", both, now_s)


def _battery_cmd_w(cmd: Commands, pack_v: float, charger_efficiency: float) -> float:
    charge_w = cmd.charger.current_a * pack_v / charger_efficiency if cmd.charger.on else 0.0
    return sum(cmd.inverter_w) - charge_w


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
    start = profile.start_s if config.start_s is None else config.start_s
    end = profile.end_s if config.duration_s is None else start + config.duration_s
    plant = Plant(params, profile, seed=config.seed, start_s=start)
    bms = SimpleBms(params)
    services = DeviceServices(params, config)
    check = ViolationCheck(bms)
    n_inv = len(params.inverters)
    rec = config.tick_s
    n_rec = max(1, round((end - start) / rec))
    grid = array("f")
    bat_cmd = array("f")
    meter: MeterSample | None = None
    limits: BmsLimits | None = None
    pack_v: float | None = None
    soc: float | None = None
    inverters: tuple[InverterReading | None, ...] = tuple(None for _ in range(n_inv))
    charger: ChargerReading | None = None
    mp = params.meter
    k_meter = math.ceil((start - mp.phase_s) / mp.period_s - 1e-9)
    next_meter = mp.phase_s + k_meter * mp.period_s + mp.latency_s
    next_bms = next_state = next_frame = next_ctrl = start
    next_truth = start
    next_rec = start + rec
    cmd_w = 0.0
    eff = params.charger.efficiency
    truth: PlantTruth | None = None
    report_every = max(1, n_rec // 200)
    eps = 1e-9
    while len(grid) < n_rec:
        now = min(next_meter, next_bms, next_state, next_frame, next_ctrl, next_rec)
        plant.step(now)
        fresh_meter = False
        if now >= next_meter - eps:
            k_meter += 1
            next_meter = mp.phase_s + k_meter * mp.period_s + mp.latency_s
            latest = plant.meter.latest(now + eps)
            usable = latest is not None and not math.isnan(latest.value_w)
            if usable and latest is not None and (meter is None or latest.available_s > meter.at_s):
                meter = MeterSample(latest.value_w, now)
                fresh_meter = True
        if now >= next_bms - eps:
            next_bms += config.bms_period_s
            if truth is None or now >= next_truth - eps:
                # The cell model is read once a second (cells change slowly; it is the
                # costly part of the plant), limits are published every bms period.
                next_truth = now + 1.0
                truth = plant.truth()
                check.check(plant, truth, now)
            limits = bms.limits(truth, now)
            services.limits = limits
            pack_v = plant.pack_voltage_v
        if now >= next_state - eps:
            next_state += config.state_period_s
            inverters = tuple(InverterReading(inv.output_w, now) for inv in plant.inverters)
            charger = ChargerReading(plant.rectifier.terminal_v, plant.charger_current_a, now)
            soc = plant.soc_pct
        if fresh_meter or now >= next_ctrl - eps:
            next_ctrl = now + config.control_period_s
            obs = Observation(now, meter, limits, pack_v, soc, inverters, charger)
            services.commands = controller.step(obs)
            cmd_w = _battery_cmd_w(services.commands, pack_v or 48.0, eff)
        if now >= next_frame - eps:
            next_frame += config.frame_period_s
            services.send_frames(plant, now)
        if now >= next_rec - eps:
            next_rec += rec
            grid.append(plant.grid_w)
            bat_cmd.append(cmd_w)
            check.check_fast(plant, now)
            if progress is not None and len(grid) % report_every == 0:
                progress(len(grid) / n_rec)
    e = plant.energy
    return RunTrace(
        controller=controller.name,
        start_s=start,
        tick_s=rec,
        grid_w=grid,
        battery_cmd_w=bat_cmd,
        import_wh=e.grid_import_wh,
        export_wh=e.grid_export_wh,
        abs_grid_wh=e.abs_grid_wh,
        battery_throughput_wh=e.battery_in_wh + e.battery_out_wh,
        violations=check.v,
        duration_s=n_rec * rec,
    )
