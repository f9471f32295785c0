"""The plant: pack, rectifier, inverters, house and grid meter in one pure model.

Time is always a parameter (``now_s``, seconds, monotonic); nothing here
reads the clock or does I/O, so the bench can run a day in seconds and the
wire simulator (``gridzero sim``) can drive it in real time. Randomness
(cell spreads, meter noise, junk) comes from ``seed`` only: the same
parameters, profile, seed and call sequence give the same results.

API (used by ``gridzero/bench`` in closed loop and by ``gridzero_tools.sim.devices``)::

    plant = Plant(params, profile, seed=1, start_s=0.0)   # start_s: profile time to start at
    plant.step(now_s)                          # advance physics (sub-steps <= sim.max_step_s)
    plant.command_inverter(unit, demand_w, now_s)              # one demand frame (W for that unit)
    plant.command_charger_online(voltage_v, current_fraction, now_s) -> bool   # None = not sent
    plant.command_charger_offline(voltage_v, current_fraction, now_s) -> bool
    plant.charger_dc(on, now_s)
    plant.charger_ac_limit(current_a | None, now_s) -> bool
    plant.set_balancing(module, cells, now_s, duration_s=None)  # 0-based module and cell indices
    plant.meter.reading(now_s) -> float | None  # newest meter W visible now (NaN = junk payload)
    plant.meter.latest(now_s) -> MeterReading | None            # with sample time and payload
    plant.truth() -> PlantTruth                # full snapshot (cheap enough for ~10 Hz)
    plant.grid_w, plant.pack_voltage_v, plant.battery_current_a, plant.soc_pct   # fast reads
    plant.energy -> EnergyCounters             # exact integrals since start (Wh)
    plant.inject(fault, now_s) / plant.clear_faults(kind=None, now_s=...)        # faults.py

Commands given at a time later than the plant's clock first advance the
physics to that time, so calling ``step`` before commands is optional.
Signs: battery current + = charging; grid W + = import.
Energy balance (exact at every step): grid = load - pv - Σ inverter AC + charger AC input.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gridzero_tools.sim.faults import (
    BusGarbage,
    CellDrift,
    CellLeak,
    ChargerSilent,
    Fault,
    GatewayRestart,
    InverterSilent,
    LoadStep,
    MeterJunk,
    MeterSilent,
    ModuleSilent,
    TemperatureOffset,
)
from gridzero_tools.sim.inverters import Inverter
from gridzero_tools.sim.meter import Meter
from gridzero_tools.sim.pack import Pack
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.profile import Profile
from gridzero_tools.sim.rectifier import Rectifier

_EPS_S = 1e-9


@dataclass(slots=True)
class EnergyCounters:
    """Integrals since the start, in Wh (import/export split at the true grid point)."""

    grid_import_wh: float = 0.0
    grid_export_wh: float = 0.0
    load_wh: float = 0.0
    pv_wh: float = 0.0
    inverter_ac_wh: float = 0.0
    inverter_dc_wh: float = 0.0
    charger_ac_wh: float = 0.0
    charger_dc_wh: float = 0.0
    battery_in_wh: float = 0.0
    battery_out_wh: float = 0.0
    abs_grid_wh: float = 0.0


@dataclass(frozen=True, slots=True)
class PlantTruth:
    """Everything the plant knows at ``t_s`` (indices are 0-based)."""

    t_s: float
    soc_pct: float
    pack_voltage_v: float
    battery_current_a: float
    cell_voltages_v: tuple[tuple[float, ...], ...]
    cell_soc_pct: tuple[tuple[float, ...], ...]
    temperatures_c: tuple[float, ...]
    balancing: tuple[frozenset[int], ...]
    inverter_ac_w: tuple[float, ...]
    inverter_dc_w: tuple[float, ...]
    inverter_running: tuple[bool, ...]
    inverter_fed: tuple[bool, ...]
    charger_dc_on: bool
    charger_online: bool
    charger_voltage_setpoint_v: float
    charger_current_limit_a: float
    charger_voltage_v: float
    charger_current_a: float
    charger_ac_w: float
    load_w: float
    pv_w: float
    grid_w: float

    @property
    def cell_min_v(self) -> float:
        """Lowest cell voltage."""
        return min(min(row) for row in self.cell_voltages_v)

    @property
    def cell_max_v(self) -> float:
        """Highest cell voltage."""
        return max(max(row) for row in self.cell_voltages_v)


def _sub_rng(seed: int, name: str) -> random.Random:
    # one stream per component, so adding draws in one part never shifts another
    return random.Random(f"gridzero-sim:{seed}:{name}")


class Plant:
    """The closed-loop plant; see the module docstring for the API."""

    def __init__(self, params: PlantParams, profile: Profile, seed: int = 0, start_s: float = 0.0):
        self.params = params
        self.profile = profile
        self.seed = seed
        self.now_s = start_s
        self.pack = Pack(params.pack, params.thermal, _sub_rng(seed, "pack"), start_s)
        self.rectifier = Rectifier(params.charger, start_s)
        v0 = self.pack.e_th_v
        self.inverters = [Inverter(p, start_s, v0) for p in params.inverters]
        self.meter = Meter(params.meter, _sub_rng(seed, "meter"), start_s)
        self.energy = EnergyCounters()
        self.faults: list[Fault] = []
        self._load_steps: list[LoadStep] = []
        self._leaks: list[CellLeak] = []
        self._hold = params.house.interpolation == "hold"
        self._load_scale = params.house.load_scale
        self._pv_scale = params.house.pv_scale
        self._max_dt = params.sim.max_step_s
        self._cell_dt = params.pack.cell_update_s
        self.pack_voltage_v = v0
        self.battery_current_a = 0.0
        self.charger_current_a = 0.0
        self.inverter_ac_w = 0.0
        self.charger_ac_w = params.charger.standby_w
        load, pv = self._house(start_s)
        self.load_w = load
        self.pv_w = pv
        self.grid_w = load - pv + self.charger_ac_w

    # --- time ----------------------------------------------------------------------------

    @property
    def soc_pct(self) -> float:
        """True state of charge of the whole pack (charge / capacity, %)."""
        return self.pack.soc_pct

    def step(self, now_s: float) -> None:
        """Advance the physics to ``now_s`` (no-op if ``now_s`` is not later)."""
        t = self.now_s
        meter = self.meter
        pack = self.pack
        while now_s - t > _EPS_S:
            t_next = min(now_s, t + self._max_dt, meter.next_sample_s)
            self._substep(t_next, t_next - t)
            t = t_next
            self.now_s = t
            if t >= meter.next_sample_s - _EPS_S:
                meter.sample(
                    self.grid_w,
                    silent=self._fault_active(MeterSilent, t),
                    junk=self._fault_active(MeterJunk, t),
                )
            if t - pack.updated_s >= self._cell_dt - _EPS_S:
                if self._leaks:
                    self._apply_leaks(t)
                self._flush_cells(t)

    def _flush_cells(self, now_s: float) -> None:
        self.pack.update(now_s)
        self.pack_voltage_v = self.pack.voltage_v(self.battery_current_a)

    def _house(self, t: float) -> tuple[float, float]:
        load, pv = self.profile.at(t, hold=self._hold)
        load *= self._load_scale
        pv *= self._pv_scale
        for fault in self._load_steps:
            if fault.active(t):
                load += fault.extra_w
        return max(0.0, load), pv

    def _substep(self, t: float, dt: float) -> None:
        pack = self.pack
        v_prev = self.pack_voltage_v
        ac_w = 0.0
        dc_w = 0.0
        for inv in self.inverters:
            out = inv.step(t, dt, v_prev)
            ac_w += out
            dc_w += out / inv.p.efficiency
        i_inv = dc_w / v_prev if v_prev > 1.0 else 0.0
        i_chg = self.rectifier.step(t, dt, pack.e_th_v, pack.r_th_ohm, i_inv)
        i_bat = i_chg - i_inv
        v = pack.e_th_v + i_bat * pack.r_th_ohm
        pack.accumulate(v, dt)
        chg_ac = self.rectifier.ac_input_w()
        load, pv = self._house(t)
        grid = load - pv - ac_w + chg_ac
        self.pack_voltage_v = v
        self.battery_current_a = i_bat
        self.charger_current_a = i_chg
        self.inverter_ac_w = ac_w
        self.charger_ac_w = chg_ac
        self.load_w = load
        self.pv_w = pv
        self.grid_w = grid
        h = dt / 3600.0
        e = self.energy
        if grid > 0.0:
            e.grid_import_wh += grid * h
            e.abs_grid_wh += grid * h
        else:
            e.grid_export_wh -= grid * h
            e.abs_grid_wh -= grid * h
        e.load_wh += load * h
        e.pv_wh += pv * h
        e.inverter_ac_wh += ac_w * h
        e.inverter_dc_wh += dc_w * h
        e.charger_ac_wh += chg_ac * h
        e.charger_dc_wh += self.rectifier.terminal_v * i_chg * h
        p_bat = v * i_bat
        if p_bat > 0.0:
            e.battery_in_wh += p_bat * h
        else:
            e.battery_out_wh -= p_bat * h

    # --- commands ------------------------------------------------------------------------

    def _catch_up(self, now_s: float) -> float:
        if now_s > self.now_s:
            self.step(now_s)
        return self.now_s

    def command_inverter(self, unit: int, demand_w: float, now_s: float) -> bool:
        """A demand frame for inverter ``unit``; False if the link is down (fault)."""
        now = self._catch_up(now_s)
        self._check_unit(unit)
        if self.inverter_link_down(unit, now):
            return False
        self.inverters[unit].command(demand_w, now)
        return True

    def command_charger_online(
        self, voltage_v: float | None, current_fraction: float | None, now_s: float
    ) -> bool:
        """Online set-points (held ~30 s); False if rejected or the link is down."""
        now = self._catch_up(now_s)
        if self._fault_active(ChargerSilent, now):
            return False
        return self.rectifier.write_online(voltage_v, current_fraction, now)

    def command_charger_offline(
        self, voltage_v: float | None, current_fraction: float | None, now_s: float
    ) -> bool:
        """Offline (EEPROM) defaults; False if rejected or the link is down."""
        now = self._catch_up(now_s)
        if self._fault_active(ChargerSilent, now):
            return False
        return self.rectifier.write_offline(voltage_v, current_fraction)

    def charger_dc(self, on: bool, now_s: float) -> bool:
        """DC output on/off (control frame); False if the link is down."""
        now = self._catch_up(now_s)
        if self._fault_active(ChargerSilent, now):
            return False
        self.rectifier.set_dc(on, now)
        return True

    def charger_ac_limit(self, current_a: float | None, now_s: float) -> bool:
        """AC input current limit (A), None for none; False if rejected or the link is down."""
        now = self._catch_up(now_s)
        if self._fault_active(ChargerSilent, now):
            return False
        return self.rectifier.set_ac_limit(current_a)

    def set_balancing(
        self, module: int, cells: frozenset[int], now_s: float, duration_s: float | None = None
    ) -> None:
        """Bleed exactly ``cells`` (0-based) of ``module``; others stop. None = until changed."""
        now = self._catch_up(now_s)
        n_cells = self.params.pack.cells_per_module
        if not 0 <= module < self.params.pack.modules:
            raise ValueError(
                f"balancing: module {module} outside 0..{self.params.pack.modules - 1}"
            )
        bad = sorted(c for c in cells if not 0 <= c < n_cells)
        if bad:
            raise ValueError(
                f"balancing: cell(s) {bad} outside 0..{n_cells - 1} of module {module}"
            )
        self._flush_cells(now)
        until = math.inf if duration_s is None else now + duration_s
        self.pack.set_bleed(module, cells, now, until)

    def _check_unit(self, unit: int) -> None:
        if not 0 <= unit < len(self.inverters):
            raise ValueError(f"inverter unit {unit} outside 0..{len(self.inverters) - 1}")

    # --- faults --------------------------------------------------------------------------

    def inject(self, fault: Fault, now_s: float) -> Fault:
        """Start a fault (at ``fault.start_s``, default ``now_s``); returns it with start_s set."""
        now = self._catch_up(now_s)
        self._validate_fault(fault)
        if fault.start_s is None:
            fault = fault.model_copy(update={"start_s": now})
        self._flush_cells(now)
        self.faults.append(fault)
        self._sync_faults()
        return fault

    def clear_faults(self, kind: str | None = None, *, now_s: float) -> int:
        """End faults of ``kind`` (all if None) at ``now_s``; returns how many were active."""
        now = self._catch_up(now_s)
        self._flush_cells(now)
        keep: list[Fault] = []
        cleared = 0
        for fault in self.faults:
            if kind is None or fault.kind == kind:
                cleared += fault.active(now)
            else:
                keep.append(fault)
        self.faults = keep
        self._sync_faults()
        return cleared

    def active_faults(self, now_s: float) -> list[Fault]:
        """Faults whose window includes ``now_s``."""
        return [f for f in self.faults if f.active(now_s)]

    def _validate_fault(self, fault: Fault) -> None:
        n_mod, n_cell = self.params.pack.modules, self.params.pack.cells_per_module
        if (
            isinstance(fault, CellDrift | CellLeak | ModuleSilent | TemperatureOffset)
            and fault.module >= n_mod
        ):
            raise ValueError(f"fault {fault.kind}: module {fault.module} outside 0..{n_mod - 1}")
        if isinstance(fault, CellDrift | CellLeak) and fault.cell >= n_cell:
            raise ValueError(f"fault {fault.kind}: cell {fault.cell} outside 0..{n_cell - 1}")
        if isinstance(fault, InverterSilent | GatewayRestart):
            self._check_unit(fault.unit)
        if isinstance(fault, BusGarbage) and isinstance(fault.bus, int) and fault.bus < 0:
            raise ValueError(f"fault bus_garbage: bus {fault.bus} is negative")

    def _sync_faults(self) -> None:
        # Leak currents are set on the pack's cells at every cell update from the faults
        # active then, so a leak's window edges are honoured to within cell_update_s.
        self._load_steps = [f for f in self.faults if isinstance(f, LoadStep)]
        self._leaks = [f for f in self.faults if isinstance(f, CellLeak)]
        self._apply_leaks(self.now_s)

    def _apply_leaks(self, now_s: float) -> None:
        leak = self.pack.leak_a
        for row in leak:
            row[:] = [0.0] * len(row)
        for fault in self._leaks:
            if fault.active(now_s):
                leak[fault.module][fault.cell] += fault.current_a

    def _fault_active(self, kind: type[object], now_s: float) -> bool:
        if not self.faults:
            return False
        return any(isinstance(f, kind) and f.active(now_s) for f in self.faults)

    def inverter_link_down(self, unit: int, now_s: float) -> bool:
        """True while demand frames for ``unit`` are lost (silent or gateway restarting)."""
        return any(
            isinstance(f, InverterSilent | GatewayRestart) and f.unit == unit and f.active(now_s)
            for f in self.faults
        )

    def gateway_down(self, unit: int, now_s: float) -> bool:
        """True while the serial gateway of ``unit`` is restarting (wire layer drops TCP)."""
        return any(
            isinstance(f, GatewayRestart) and f.unit == unit and f.active(now_s)
            for f in self.faults
        )

    def module_silent(self, module: int, now_s: float) -> bool:
        """True while ``module`` sends no frames."""
        return any(
            isinstance(f, ModuleSilent) and f.module == module and f.active(now_s)
            for f in self.faults
        )

    def charger_silent(self, now_s: float) -> bool:
        """True while the rectifier's link is dead."""
        return self._fault_active(ChargerSilent, now_s)

    def bus_garbage_hz(self, bus: int | str, now_s: float) -> float:
        """Rate of garbage frames on ``bus`` (a BMS bus index or "charger"), 0 if none."""
        return sum(
            f.rate_hz
            for f in self.faults
            if isinstance(f, BusGarbage) and f.bus == bus and f.active(now_s)
        )

    def measured_cell_voltages_v(self, now_s: float) -> list[list[float]]:
        """Cell voltages as the modules measure them (true voltage + drift faults)."""
        cells = self.pack.cell_voltages_v(self.pack_voltage_v, now_s)
        for fault in self.faults:
            if isinstance(fault, CellDrift) and fault.active(now_s):
                start = fault.start_s if fault.start_s is not None else now_s
                hours = (now_s - start) / 3600.0
                cells[fault.module][fault.cell] += fault.offset_v + fault.v_per_h * hours
        return cells

    def measured_temperatures_c(self, now_s: float) -> list[float]:
        """Module temperatures as the sensors report them (true + temperature_offset faults)."""
        temps = list(self.pack.temperature_c)
        for fault in self.faults:
            if isinstance(fault, TemperatureOffset) and fault.active(now_s):
                start = fault.start_s if fault.start_s is not None else now_s
                hours = (now_s - start) / 3600.0
                temps[fault.module] += fault.offset_c + fault.c_per_h * hours
        return temps

    # --- views ---------------------------------------------------------------------------

    def balancing_cells(self, module: int, now_s: float) -> frozenset[int]:
        """Cells (0-based) of ``module`` bleeding at ``now_s``."""
        n_cells = self.params.pack.cells_per_module
        return frozenset(c for c in range(n_cells) if self.pack.bleeding(module, c, now_s))

    def truth(self) -> PlantTruth:
        """A full snapshot at the plant's current time."""
        now = self.now_s
        pack = self.pack
        cells = self.measured_cell_voltages_v(now)
        balancing = tuple(self.balancing_cells(m, now) for m in range(self.params.pack.modules))
        rect = self.rectifier
        return PlantTruth(
            t_s=now,
            soc_pct=pack.soc_pct,
            pack_voltage_v=self.pack_voltage_v,
            battery_current_a=self.battery_current_a,
            cell_voltages_v=tuple(tuple(row) for row in cells),
            cell_soc_pct=tuple(tuple(100.0 * s for s in row) for row in pack.soc),
            temperatures_c=tuple(self.measured_temperatures_c(now)),
            balancing=balancing,
            inverter_ac_w=tuple(inv.output_w for inv in self.inverters),
            inverter_dc_w=tuple(inv.dc_power_w for inv in self.inverters),
            inverter_running=tuple(inv.running for inv in self.inverters),
            inverter_fed=tuple(inv.fed(now) for inv in self.inverters),
            charger_dc_on=rect.dc_on,
            charger_online=rect.online(now),
            charger_voltage_setpoint_v=rect.voltage_setpoint_v(now),
            charger_current_limit_a=rect.current_limit_a(now),
            charger_voltage_v=rect.terminal_v if rect.dc_on else self.pack_voltage_v,
            charger_current_a=self.charger_current_a,
            charger_ac_w=self.charger_ac_w,
            load_w=self.load_w,
            pv_w=self.pv_w,
            grid_w=self.grid_w,
        )
