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
from typing import Protocol, runtime_checkable
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


@runtime_checkable
class FramesItself(Protocol):
    """A controller that writes its own inverter frames (the original housebatt on RS485):
    the bench sends exactly these, when they are written, instead of the inverter service's
    periodic frames."""

    def take_frames(self) -> tuple[float, ...] | None:
        """Frames written since the last call, one per unit (None: none)."""
        ...


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
    """anikrooz/housebatt ``housebatt.ino`` at HEAD 1c279d5 (``mqttCallback``, L198-323, and the
    MQTT timeout in ``loop``, L657-667). Line numbers below are of that file.

    What it does, as the source does it:

    - Only a meter message acts (L207-218); ``demand`` integrates it: ``demand += 0.85 ×
      (import ∓ 20 W)`` with the buffer's sign from the sign of the last demand (L216-218), in
      int arithmetic (``importingnow`` is ``toInt()`` of the payload, L209); ``demand`` is reset
      to 0 when the shunt reads no current (|I| < 35 mA, L214 and L485).
    - It writes an inverter frame only in the discharge branch, at that meter message (L263-267).
      Every other branch (stop, switch to charging, too small, no ``canInvert``) writes nothing:
      the inverter keeps its last demand until its own frame timeout. A silent meter therefore
      means no more frames at all (the source's comment at L665: "inverter will die itself").
    - Starting the charger: ``setCAmps(cAmps*0.8)`` and a ramp window of 8.5 s (L295-297,
      ``chargerRamptime`` L71); within that window every meter message only does
      ``return charger.setCAmps(cAmps)`` (L203), i.e. the *full* current computed at the start,
      and does not refresh ``lastMQTT`` (L203 returns before L208). From inverting to charging it
      first stops inverting and waits 1 s (L276-280), the same early return applying.
    - Switching from charging to discharging takes one message with demand 0 (L250-258).
    - Every 15 s without a meter message (``timeout`` L70, L659-664) it switches the charger
      off and leaves ``demand`` and ``inverting`` as they are.

    Deviations, both in the baseline's favour: the discharge cap uses DCL × V (the original's
    ``maxedDiscurrent * bVolts`` at L262 is in 0.1 A, a cap 10× too loose), and ``canInvert`` /
    ``canCharge`` come from the bms limits (the original checks cells itself, L448 and L466).
    The bench's device model clamps its frames to the bms limits as it does every controller's.
    """

    name = "housebatt"
    gain = 0.85  # L218
    import_buffer_w = 20  # importbuffer L60
    min_output_w = 50  # minOutput L64
    min_charger_w = -120  # minChargerpower L62
    start_charger_w = -270  # startChargerPower L63
    max_charger_w = 2800  # maxChargerpower L61 (as a magnitude)
    charger_ramp_s = 8.5  # chargerRamptime L71
    stop_invert_wait_s = 1.0  # L278
    mqtt_timeout_s = 15.0  # timeout L70
    zero_current_a = 0.035  # L485: |bmAmps| < 35 mA reads as 0

    def __init__(self, units: tuple[InverterUnit, ...], max_output_w: float | None = None) -> None:
        self.units = units
        # maxOutput = 1300 W × chainedInverters (L58-59).
        self.max_output_w = max_output_w if max_output_w is not None else 1300.0 * len(units)
        self.demand_w = 0
        self.charging = False
        self.inverting = False
        self.c_amps = 0.0  # the global cAmps: the full current of the last computation (L282)
        self.sent_amps = 0.0  # what the charger was last told (setCAmps)
        self.ramp_until_s = -math.inf
        self.last_mqtt_s: float | None = None
        self._last_meter_at_s: float | None = None
        self._frame_w: float | None = None  # a frame written at this message, per unit
        self._last_frame_w = 0.0

    def take_frames(self) -> tuple[float, ...] | None:
        """The inverter frames written since the last call (None: no frame on the bus)."""
        frame = self._frame_w
        self._frame_w = None
        return None if frame is None else tuple(frame for _ in self.units)

    def _commands(self) -> Commands:
        # voltage 0 = "the charger service uses CVL"
        charger = ChargerCommand(True, 0.0, self.sent_amps) if self.charging else CHARGER_OFF
        side = Side.CHARGE if self.charging else (Side.DISCHARGE if self.inverting else Side.IDLE)
        shown = self._last_frame_w if self.inverting else 0.0
        return Commands(tuple(shown for _ in self.units), charger, side)

    def step(self, obs: Observation) -> Commands:
        """The loop's MQTT timeout, then the callback on a fresh meter message."""
        now = obs.now_s
        if self.last_mqtt_s is None:
            self.last_mqtt_s = now  # lastMQTT starts at boot
        if now > self.last_mqtt_s + self.mqtt_timeout_s:  # L659-664
            self.last_mqtt_s += self.mqtt_timeout_s
            self.charging = False
            self.sent_amps = 1.0
        meter = obs.meter
        if meter is None or (
            self._last_meter_at_s is not None and meter.at_s <= self._last_meter_at_s
        ):
            return self._commands()
        self._last_meter_at_s = meter.at_s
        if obs.limits is None or obs.pack_voltage_v is None or obs.pack_voltage_v <= 0:
            return self._commands()  # L202: nothing until the battery is read
        if now < self.ramp_until_s:
            self.sent_amps = self.c_amps  # L203: the full current, no lastMQTT refresh
            return self._commands()
        self.last_mqtt_s = now  # L208
        self._callback(obs, int(meter.grid_w), obs.pack_voltage_v)
        return self._commands()

    def _battery_current_zero(self, obs: Observation) -> bool:
        inv = sum(r.output_w for r in obs.inverters if r is not None)
        chg = obs.charger.current_a if obs.charger is not None else 0.0
        return inv < 1.0 and chg < self.zero_current_a

    def _callback(self, obs: Observation, importing_w: int, volts: float) -> None:
        limits = obs.limits
        assert limits is not None
        if self._battery_current_zero(obs):  # L214
            self.demand_w = 0
        if self.demand_w > 0:  # L216
            importing_w -= self.import_buffer_w
        if self.demand_w < 0:  # L217
            importing_w += self.import_buffer_w
        self.demand_w = int(self.demand_w + importing_w * self.gain)  # L218, int demand
        self.demand_w = int(max(-self.max_charger_w, min(self.max_output_w, self.demand_w)))
        can_invert = limits.value.discharge_limit_a > 0 and not limits.value.alarm
        can_charge = limits.value.charge_limit_a > 0 and not limits.value.alarm
        if self.demand_w > self.min_output_w:  # L246
            self._discharge_branch(can_invert, limits.value.discharge_limit_a * volts)
        elif self.demand_w < self.min_charger_w and can_charge:  # L275
            self._charge_branch(obs.now_s, volts, limits.value.charge_limit_a)
        else:  # L311-322: no frame; the charger off
            self.demand_w = 0
            self.charging = False
            self.inverting = False
            self.sent_amps = 1.0

    def _discharge_branch(self, can_invert: bool, cap_w: float) -> None:
        if not can_invert:  # L247-249
            self.demand_w = 0
            self.inverting = False
        elif self.charging:  # L250-258: one message to stop the charger
            self.charging = False
            self.demand_w = 0
            self.sent_amps = 1.0
        else:  # L262-269
            self.demand_w = int(min(self.demand_w, cap_w))
            self._last_frame_w = float(self.demand_w // len(self.units))
            self._frame_w = self._last_frame_w
            self.inverting = True

    def _charge_branch(self, now_s: float, volts: float, ccl_a: float) -> None:
        if self.inverting:  # L276-280: no frame; the inverter runs on until its timeout
            self.ramp_until_s = now_s + self.stop_invert_wait_s
            self.inverting = False
            self.demand_w = 0
            return
        self.c_amps = min(-self.demand_w / volts, ccl_a)  # L282-286
        self.inverting = False
        if not self.charging and self.demand_w < self.start_charger_w:  # L288-299
            self.ramp_until_s = now_s + self.charger_ramp_s
            self.sent_amps = 0.8 * self.c_amps
            self.charging = True
        elif self.charging:  # L301-303
            self.sent_amps = self.c_amps
        else:  # L306-308
            self.demand_w = 0


class SoyosourceMeterController:
    """syssi/esphome-soyosource-gtn-virtual-meter, NEGATIVE_MEASUREMENTS_REQUIRED, checked at
    HEAD 832e962 in components/soyosource_virtual_meter/soyosource_virtual_meter.cpp:

    - each meter value (L13-21): demand = ``ceilf(meter)`` − buffer + last demand *sent*
      (L17, L111-112), capped at max_power_demand (L114-115), 0 below min_power_demand with
      zero_output_on_min_power_demand (L118-119);
    - ``update()`` every ``update_interval_s`` (3 s in the README's examples) sends it
      (L35-80): 0 after the inactivity timeout (L48-50), ``ceilf(demand / divider)`` per
      device (L73), and only then "last demand" advances (L78).

    Defaults from __init__.py: buffer 0 (L25), min 0 (L27), max 900 W (L28; here 900 W per
    unit, the divider being the number of units, L30), inactivity 20 s (L79), zero output on
    min demand true (L96). No charger.
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
    """hoylabs/OpenDTU-OnBattery (checked at HEAD 1bfc0cc6): the DPL of src/PowerLimiter.cpp and
    the Huawei charger's auto mode of src/gridcharger/huawei/Provider.cpp; defaults from
    include/defaults.h.

    DPL (PowerLimiter.cpp ``loop``): waits while a command is pending (L160-162) and until
    every inverter has stats newer than its last command (L183-196); then until the meter is
    more than 2 s newer than those stats (L211-213); backoff 128 ms (PowerLimiter.h L70),
    doubled up to 1024 ms while nothing changes, reset on a change (L402-411). Target = Σ
    measured inverter output + meter − target (calcTargetOutput L555-600; target 0 and
    hysteresis 0, defaults.h L135-136); lower limit 10 W per inverter (L137, below: standby);
    discharge limited to DCL × V × 0.95 × (1 − 3 %) (dcPowerBusToInverterAc L485-493,
    conduction losses 3 %, defaults.h L129). Blocked while the charger produces. SoC
    stop/start come from the common SoC settings.

    Charger auto mode: see `_charger`.
    """

    name = "opendtu"
    lower_limit_w = 10.0
    conduction_losses = 0.03
    backoff_min_s = 0.128
    backoff_max_s = 1.024
    meter_after_stats_s = 2.0
    charger_block_s = 5.0  # 2 × DataRequestIntervalMillis (2500, huawei/HardwareInterface.h L38)
    charger_interlock_block_s = 1.0  # Provider.cpp L235
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
        """src/gridcharger/huawei/Provider.cpp (HEAD 1bfc0cc6) ``loop``, auto mode, L213-309."""
        now = obs.now_s
        if now < self._charger_block_until_s:  # L217-219
            return
        # An inverter reports whole watts: a decaying lag tail below 5 W reads as 0.
        if any(r is not None and r.output_w >= 5.0 for r in obs.inverters):
            # L232-237: on every pass while a battery inverter produces: 0 A, blocked 1 s.
            self._charger_w = 0.0
            self._charger_block_until_s = now + self.charger_interlock_block_s
            return
        meter = obs.meter
        if meter is None or (
            self._charger_meter_at_s is not None and meter.at_s <= self._charger_meter_at_s
        ):
            return  # L240: only a new power meter value computes
        self._charger_meter_at_s = meter.at_s
        v = obs.pack_voltage_v
        lim = obs.limits
        current_w = (
            obs.charger.voltage_v * obs.charger.current_a if obs.charger is not None else 0.0
        )
        # L249-253: output + (−round(meter) + target) × the PSU's efficiency.
        new_w = current_w + (-round(meter.grid_w) + self.target_w) * self.psu_efficiency
        soc_full = obs.soc_pct is not None and obs.soc_pct >= self.charge_stop_soc_pct
        if v is None or lim is None or soc_full:  # L257-265
            new_w = 0.0
        if v is not None and lim is not None and new_w > self.charger_min_current_a * v:
            # L269-302: capped at the upper limit and the BMS's current, then blocked 5 s.
            new_w = min(new_w, self.charger_max_power_w, lim.value.charge_limit_a * v)
            self._charger_w = max(0.0, new_w)
            self._charger_block_until_s = now + self.charger_block_s
        else:
            self._charger_w = 0.0  # L304-308: below the lower limit: 0 A, no block

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
