"""Baseline controllers for the bench: the published rules of the systems we compare with.

Each baseline sees exactly what gridzero's controller sees (an `Observation`, i.e. what
arrives over MQTT) and returns the same `Commands`. The device services modelled by the bench
clamp every command to the bms limits for all controllers alike.

- `HousebattController`: the original ESP32 system's law (anikrooz/housebatt housebatt.ino, mqttCallback).
- `SoyosourceMeterController`: syssi's virtual meter, NEGATIVE_MEASUREMENTS_REQUIRED
  (syssi/esphome-soyosource-gtn-virtual-meter, components/soyosource_virtual_meter); it has no charger, so it only discharges.
- `OpenDtuController`: OpenDTU-OnBattery's DPL with its waits, backoff and hysteresis, plus
  its Huawei-style charger auto mode (hoylabs/OpenDTU-OnBattery, src/gridcharger/huawei).
- `GridzeroBench`: gridzero's own controller (`gridzero_controller.core`).
- `ScheduledGridzero`: the same with its schedule windows and price rules (`--tariff`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol
from zoneinfo import ZoneInfo

from gridzero_controller.core import Controller, ControllerOutput, Observation
from gridzero_controller.dispatch import (
    CHARGER_OFF,
    ChargerCommand,
    Commands,
    InverterUnit,
    Side,
    split_discharge,
)
from gridzero_controller.schedule import decide, local_time
from gridzero_controller.settings import ControllerSettings


class BenchController(Protocol):
    """Anything the bench can close the loop with."""

    name: str

    def step(self, obs: Observation) -> Commands:
        """Commands for ``obs.now_s``."""
        ...


def _equal_split(total_w: float, n: int) -> tuple[float, ...]:
    return tuple(max(0.0, total_w) / n for _ in range(n))


class GridzeroBench:
    """gridzero's controller as a bench participant."""

    name = "gridzero"

    def __init__(self, settings: ControllerSettings, units: tuple[InverterUnit, ...]) -> None:
        self.controller = Controller(settings, units)

    def step(self, obs: Observation) -> Commands:
        """Run the controller's whole domain."""
        return self.controller.step(obs).commands


class ScheduledGridzero:
    """gridzero with its schedule and price rules: the rule in force comes from the local
    time (the profile's seconds after the local midnight of ``day_start_wall_s``) and the
    price at that time, as the service computes it from the wall clock and the price topic."""

    name = "gridzero+schedule"

    def __init__(
        self,
        settings: ControllerSettings,
        units: tuple[InverterUnit, ...],
        *,
        day_start_wall_s: float,
        zone: ZoneInfo,
        price_at: Callable[[float], float | None] | None = None,
    ) -> None:
        self.controller = Controller(settings, units)
        self.day_start_wall_s = day_start_wall_s
        self.zone = zone
        self.price_at = price_at
        self.last: ControllerOutput | None = None

    def step(self, obs: Observation) -> Commands:
        """The rule for ``obs.now_s``, then the controller's whole domain."""
        s = self.controller.settings
        price = None if self.price_at is None else self.price_at(obs.now_s)
        local = local_time(self.day_start_wall_s + obs.now_s, self.zone)
        rule = decide(s.windows(), local, price, s.price_rules())
        self.last = self.controller.step(replace(obs, rule=rule))
        return self.last.commands


class HousebattController:
    """anikrooz/housebatt `mqttCallback` at HEAD 1c279d5 (housebatt.ino).

    Deviations, both in the baseline's favour: the discharge cap uses DCL × V (the original's
    cap is 10× too loose), and `canInvert`/`canCharge` come from the bms limits (the original
    checks cells itself). Its 15 s MQTT timeout switches the charger off.
    """

    name = "housebatt"
    gain = 0.85
    import_buffer_w = 20.0
    min_output_w = 50.0
    min_charger_w = -120.0
    start_charger_w = -270.0
    max_charger_w = 2800.0
    charger_ramp_s = 8.5
    stop_invert_wait_s = 1.0
    mqtt_timeout_s = 15.0

    def __init__(self, units: tuple[InverterUnit, ...], max_output_w: float | None = None) -> None:
        self.units = units
        self.max_output_w = max_output_w if max_output_w is not None else 1300.0 * len(units)
        self.demand_w = 0.0
        self.charging = False
        self.inverting = False
        self.c_amps = 0.0
        self.ramp_until_s = -math.inf
        self._last_meter_at_s: float | None = None
        self._inverter_w = 0.0

    def _commands(self) -> Commands:
        charger = (
            ChargerCommand(True, 0.0, self.c_amps) if self.charging else CHARGER_OFF
        )  # voltage 0 = "the charger service uses CVL"
        side = Side.CHARGE if self.charging else (Side.DISCHARGE if self.inverting else Side.IDLE)
        return Commands(_equal_split(self._inverter_w, len(self.units)), charger, side)

    def step(self, obs: Observation) -> Commands:
        """One call per observation; acts only on a fresh meter message."""
        now = obs.now_s
        meter = obs.meter
        if meter is None or now - meter.at_s > self.mqtt_timeout_s:
            self.charging = False
            self._inverter_w = 0.0
            self.inverting = False
            return self._commands()
        if self._last_meter_at_s is not None and meter.at_s <= self._last_meter_at_s:
            return self._commands()
        self._last_meter_at_s = meter.at_s
        if obs.limits is None or obs.pack_voltage_v is None or obs.pack_voltage_v <= 0:
            return self._commands()
        if now < self.ramp_until_s:
            return self._commands()
        self._callback(obs, meter.grid_w, obs.pack_voltage_v)
        return self._commands()

    def _battery_current_zero(self, obs: Observation) -> bool:
        inv = sum(r.output_w for r in obs.inverters if r is not None)
        chg = obs.charger.current_a if obs.charger is not None else 0.0
        return inv < 1.0 and chg < 0.035

    def _callback(self, obs: Observation, importing_w: float, volts: float) -> None:
        limits = obs.limits
        assert limits is not None
        if self._battery_current_zero(obs):
            self.demand_w = 0.0
        if self.inverting:
            importing_w -= self.import_buffer_w
        if self.charging:
            importing_w += self.import_buffer_w
        self.demand_w += self.gain * importing_w
        self.demand_w = max(-self.max_charger_w, min(self.max_output_w, self.demand_w))
        can_invert = limits.value.discharge_limit_a > 0 and not limits.value.alarm
        can_charge = limits.value.charge_limit_a > 0 and not limits.value.alarm
        if self.demand_w > self.min_output_w:
            self._discharge_branch(can_invert, limits.value.discharge_limit_a * volts)
        elif self.demand_w < self.min_charger_w and can_charge:
            self._charge_branch(obs.now_s, volts, limits.value.charge_limit_a)
        else:
            self.demand_w = 0.0
            self.charging = False
            self.inverting = False
            self._inverter_w = 0.0

    def _discharge_branch(self, can_invert: bool, cap_w: float) -> None:
        if not can_invert:
            self.demand_w = 0.0
            self._inverter_w = 0.0
        elif self.charging:
            self.charging = False
            self.demand_w = 0.0
        else:
            self.demand_w = min(self.demand_w, cap_w)
            self._inverter_w = self.demand_w
            self.inverting = True

    def _charge_branch(self, now_s: float, volts: float, ccl_a: float) -> None:
        if self.inverting:
            self.inverting = False
            self._inverter_w = 0.0
            self.ramp_until_s = now_s + self.stop_invert_wait_s
            self.demand_w = 0.0
            return
        amps = min(-self.demand_w / volts, ccl_a)
        if self.charging:
            self.c_amps = amps
        elif self.demand_w < self.start_charger_w:
            self.ramp_until_s = now_s + self.charger_ramp_s
            self.c_amps = 0.8 * amps
            self.charging = True


class SoyosourceMeterController:
    """syssi virtual meter, NEGATIVE_MEASUREMENTS_REQUIRED (syssi components/soyosource_virtual_meter).

    Each meter value gives demand = ceil(meter) − buffer + last demand *sent*; the frame
    is sent every `update_interval_s` (3 s), which is when "last demand" advances. No charger.
    """

    name = "soyosource-meter"

    def __init__(
        self,
        units: tuple[InverterUnit, ...],
        max_power_demand_w: float | None = None,
        buffer_w: float = 0.0,
        update_interval_s: float = 3.0,
        inactivity_timeout_s: float = 20.0,
    ) -> None:
        self.units = units
        self.max_w = (
            max_power_demand_w if max_power_demand_w is not None else sum(u.max_w for u in units)
        )
        self.buffer_w = buffer_w
        self.update_interval_s = update_interval_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self.power_demand_w = 0.0
        self.last_power_demand_w = 0.0
        self._last_meter_at_s: float | None = None
        self._next_send_s: float | None = None
        self._sent_w = 0.0

    def calculate(self, consumption_w: float, last_w: float) -> float:
        """The mode's rule (min_power_demand 0, zero_output_on_min_power_demand true)."""
        demand = (math.ceil(consumption_w) - self.buffer_w) + last_w
        if demand >= self.max_w:
            return self.max_w
        if demand < 0:
            return 0.0
        return demand

    def step(self, obs: Observation) -> Commands:
        """Sensor callback on fresh meter values; frame on the update timer."""
        now = obs.now_s
        meter = obs.meter
        if meter is not None and (
            self._last_meter_at_s is None or meter.at_s > self._last_meter_at_s
        ):
            self._last_meter_at_s = meter.at_s
            self.power_demand_w = self.calculate(meter.grid_w, self.last_power_demand_w)
        if self._next_send_s is None:
            self._next_send_s = now
        if now >= self._next_send_s:
            self._next_send_s += self.update_interval_s * max(
                1, math.floor((now - self._next_send_s) / self.update_interval_s) + 1
            )
            stale = (
                self._last_meter_at_s is None
                or now - self._last_meter_at_s > self.inactivity_timeout_s
            )
            self._sent_w = 0.0 if stale else self.power_demand_w
            self.last_power_demand_w = self._sent_w
        per_unit = math.ceil(self._sent_w / len(self.units)) if self._sent_w > 0 else 0.0
        side = Side.DISCHARGE if self._sent_w > 0 else Side.IDLE
        return Commands(tuple(float(per_unit) for _ in self.units), CHARGER_OFF, side)


class OpenDtuController:
    """OpenDTU-OnBattery DPL + Huawei auto mode (hoylabs/OpenDTU-OnBattery
    src/PowerLimiter.cpp), defaults from its include/defaults.h.

    DPL: computes only when no command is pending, inverter stats are newer than the last
    command and the meter is > 2 s newer than those stats; backoff 128 → 1024 ms while
    nothing changes; target = Σ measured inverter output + meter − target, hysteresis 0,
    lower limit 10 W per inverter (below: standby), discharge limited to
    DCL × V × 0.95 × (1 − 3 %). Blocked while the charger produces.
    Charger auto mode on each new meter sample, blocked 5 s after each change:
    output += (−meter + target) × efficiency; current ≤ CCL; off below its minimum power;
    0 A while any inverter produces. SoC stop/start come from the common SoC settings.
    """

    name = "opendtu"
    lower_limit_w = 10.0
    conduction_losses = 0.03
    backoff_min_s = 0.128
    backoff_max_s = 1.024
    meter_after_stats_s = 2.0
    charger_block_s = 5.0
    psu_efficiency = 0.95

    def __init__(
        self,
        units: tuple[InverterUnit, ...],
        *,
        soc_stop_pct: float,
        soc_start_pct: float,
        charge_stop_soc_pct: float,
        charger_min_current_a: float,
        charger_max_power_w: float,
        target_w: float = 0.0,
    ) -> None:
        self.units = units
        self.target_w = target_w
        self.soc_stop_pct = soc_stop_pct
        self.soc_start_pct = soc_start_pct
        self.charge_stop_soc_pct = charge_stop_soc_pct
        self.charger_min_current_a = charger_min_current_a
        self.charger_max_power_w = charger_max_power_w
        self._limits_w = tuple(0.0 for _ in units)
        self._last_command_s = -math.inf
        self._stats_after_cmd_s: float | None = None
        self._backoff_s = self.backoff_min_s
        self._last_calc_s = -math.inf
        self._discharge_allowed = True
        self._charger_w = 0.0
        self._charger_block_until_s = -math.inf
        self._charger_meter_at_s: float | None = None

    def _stats_fresh(self, obs: Observation) -> float | None:
        """Time of the first complete set of inverter stats after the last command."""
        if self._stats_after_cmd_s is not None:
            return self._stats_after_cmd_s
        latest = -math.inf
        for r in obs.inverters:
            if r is None or r.at_s <= self._last_command_s:
                return None
            latest = max(latest, r.at_s)
        self._stats_after_cmd_s = latest
        return latest

    def _battery_state(self, obs: Observation) -> None:
        soc = obs.soc_pct
        if soc is None:
            return
        if soc <= self.soc_stop_pct:
            self._discharge_allowed = False
        elif soc >= self.soc_start_pct:
            self._discharge_allowed = True

    def _dpl(self, obs: Observation) -> None:
        now = obs.now_s
        stats_at = self._stats_fresh(obs)
        meter = obs.meter
        if stats_at is None or meter is None or meter.at_s <= stats_at + self.meter_after_stats_s:
            return
        if now - self._last_calc_s < self._backoff_s:
            return
        self._last_calc_s = now
        self._battery_state(obs)
        producing = sum(r.output_w for r in obs.inverters if r is not None)
        total = max(0.0, producing + meter.grid_w - self.target_w)
        total = min(total, sum(u.max_w for u in self.units))
        charger_on = obs.charger is not None and obs.charger.current_a > 0.5
        if (
            not self._discharge_allowed
            or charger_on
            or obs.limits is None
            or obs.pack_voltage_v is None
        ):
            total = 0.0
        else:
            allowance = (
                obs.limits.value.discharge_limit_a
                * obs.pack_voltage_v
                * 0.95
                * (1.0 - self.conduction_losses)
            )
            total = min(total, allowance)
        new = split_discharge(total, self.units, obs.pack_voltage_v)
        new = tuple(w if w >= self.lower_limit_w else 0.0 for w in new)
        if new != self._limits_w:
            self._limits_w = new
            self._last_command_s = now
            self._stats_after_cmd_s = None
            self._backoff_s = self.backoff_min_s
        else:
            self._backoff_s = min(self.backoff_max_s, self._backoff_s * 2)

    def _charger(self, obs: Observation) -> None:
        meter = obs.meter
        now = obs.now_s
        if meter is None or (
            self._charger_meter_at_s is not None and meter.at_s <= self._charger_meter_at_s
        ):
            return
        self._charger_meter_at_s = meter.at_s
        if now < self._charger_block_until_s:
            return
        v = obs.pack_voltage_v
        lim = obs.limits
        # An inverter reports whole watts: a decaying lag tail below 5 W reads as 0.
        producing = any(r is not None and r.output_w >= 5.0 for r in obs.inverters)
        current_w = (
            obs.charger.voltage_v * obs.charger.current_a if obs.charger is not None else 0.0
        )
        new_w = current_w + (-meter.grid_w + self.target_w) * self.psu_efficiency
        new_w = max(0.0, min(self.charger_max_power_w, new_w))
        soc_full = obs.soc_pct is not None and obs.soc_pct >= self.charge_stop_soc_pct
        if v is None or lim is None or producing or soc_full:
            new_w = 0.0
        elif new_w > 0:
            new_w = min(new_w, lim.value.charge_limit_a * v)
            if new_w < self.charger_min_current_a * v:
                new_w = 0.0
        if abs(new_w - self._charger_w) > 1e-6:
            self._charger_w = new_w
            self._charger_block_until_s = now + self.charger_block_s

    def step(self, obs: Observation) -> Commands:
        """DPL and charger auto mode, each with its own waits."""
        self._dpl(obs)
        self._charger(obs)
        v = obs.pack_voltage_v
        if self._charger_w > 0 and v:
            charger = ChargerCommand(True, 0.0, self._charger_w / v)
        else:
            charger = CHARGER_OFF
        side = (
            Side.CHARGE
            if charger.on
            else (Side.DISCHARGE if sum(self._limits_w) > 0 else Side.IDLE)
        )
        return Commands(self._limits_w, charger, side)
