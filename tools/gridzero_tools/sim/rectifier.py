"""The Vertiv/Emerson R48 rectifier model (pure; the R48 CAN protocol as in PurpleAlien/R48_Rectifier rectifier.py and anikrooz/Emerson-Vertiv-R48 src/VertivPsu.cpp).

- Online set-points (voltage, current-limit fraction) each hold for
  ``online_timeout_s`` (~30 s) after the last write, then that register falls
  back to its offline (EEPROM) value. Offline values persist.
- The current limit is a fraction of rated current (0.10..1.21; 1.21 ≙ 62.5 A
  on an R48-3000e3); below ``min_fraction`` the module still gives
  ``min_fraction`` (~5.2 A): a 0 A limit does not switch it off, DC-off does.
- CC/CV: it regulates its terminal voltage to the (ramped) voltage set-point
  and caps its current at the limit, at ``max_power_w`` and at the AC input
  current limit.
- Output current rises at most ``current_ramp_a_per_s`` and, after DC on,
  within a walk-in ramp from 0 to full over ``walk_in_s``; it falls at once.
- Fault ``rectifier_over_current``: the regulation fails and it delivers ``extra_a``
  above its current limit and power cap (still no more than the voltage drives). The
  model sees the plant's faults through `bind_faults` (the CAN emulator binds them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from gridzero_tools.sim.faults import RectifierOverCurrent
from gridzero_tools.sim.params import ChargerParams

FaultSource = Callable[[float], Sequence[object]]


def _no_faults(_now_s: float) -> Sequence[object]:
    return ()


class Rectifier:
    """State of one R48 module on the pack's DC bus."""

    def __init__(self, params: ChargerParams, now_s: float):
        self.p = params
        self.offline_voltage_v = params.offline_voltage_v
        self.offline_fraction = params.offline_current_fraction
        self.online_voltage_v = params.offline_voltage_v
        self.online_fraction = params.offline_current_fraction
        self.online_voltage_at_s = -math.inf
        self.online_fraction_at_s = -math.inf
        self.dc_on = params.initial_dc_on
        self.dc_on_since_s = now_s - params.walk_in_s
        # Off-to-on switchings of the DC output: each one is a walk-in, the wear a controller
        # that toggles the charger at the bms's limit causes (the bench reports it).
        self.dc_starts = 0
        self.ac_limit_a: float | None = None
        self.voltage_ramped_v = params.offline_voltage_v
        self.current_a = 0.0
        self.terminal_v = 0.0
        self._faults: FaultSource = _no_faults

    def bind_faults(self, source: FaultSource) -> None:
        """Where the model finds the faults active at a time (the plant's ``active_faults``)."""
        self._faults = source

    def over_current_a(self, now_s: float) -> float:
        """Current delivered above every limit by a ``rectifier_over_current`` fault."""
        return sum(f.extra_a for f in self._faults(now_s) if isinstance(f, RectifierOverCurrent))

    # --- commands ------------------------------------------------------------------------

    def write_online(self, voltage_v: float | None, fraction: float | None, now_s: float) -> bool:
        """Online set-points; None leaves that register alone. False (ignored) if out of range."""
        if not self._valid(voltage_v, fraction):
            return False
        if voltage_v is not None:
            self.online_voltage_v = voltage_v
            self.online_voltage_at_s = now_s
        if fraction is not None:
            self.online_fraction = fraction
            self.online_fraction_at_s = now_s
        return True

    def write_offline(self, voltage_v: float | None, fraction: float | None) -> bool:
        """Offline (EEPROM) defaults; False (ignored) if out of range."""
        if not self._valid(voltage_v, fraction):
            return False
        if voltage_v is not None:
            self.offline_voltage_v = voltage_v
        if fraction is not None:
            self.offline_fraction = fraction
        return True

    def set_dc(self, on: bool, now_s: float) -> None:
        """DC output on/off; switching on starts the walk-in."""
        if on and not self.dc_on:
            self.dc_on_since_s = now_s
            self.dc_starts += 1
        self.dc_on = on

    def set_ac_limit(self, current_a: float | None) -> bool:
        """AC input current limit (register 0x1A), None = none."""
        if current_a is not None and not (math.isfinite(current_a) and current_a > 0):
            return False
        self.ac_limit_a = current_a
        return True

    def _valid(self, voltage_v: float | None, fraction: float | None) -> bool:
        p = self.p
        if voltage_v is not None and not (
            math.isfinite(voltage_v) and p.voltage_min_v <= voltage_v <= p.voltage_max_v
        ):
            return False
        return fraction is None or (math.isfinite(fraction) and 0.0 <= fraction <= p.max_fraction)

    # --- state ---------------------------------------------------------------------------

    def voltage_setpoint_v(self, now_s: float) -> float:
        """The voltage set-point in force (online if fresh, else offline)."""
        if now_s - self.online_voltage_at_s <= self.p.online_timeout_s:
            return self.online_voltage_v
        return self.offline_voltage_v

    def current_fraction(self, now_s: float) -> float:
        """The current-limit fraction in force (online if fresh, else offline)."""
        if now_s - self.online_fraction_at_s <= self.p.online_timeout_s:
            return self.online_fraction
        return self.offline_fraction

    def online(self, now_s: float) -> bool:
        """True while either online set-point is fresh."""
        timeout = self.p.online_timeout_s
        return (
            now_s - self.online_voltage_at_s <= timeout
            or now_s - self.online_fraction_at_s <= timeout
        )

    def current_limit_a(self, now_s: float) -> float:
        """The current limit in force, from the fraction (at least min_fraction)."""
        return max(self.current_fraction(now_s), self.p.min_fraction) * self.p.amps_per_fraction

    def step(
        self, now_s: float, dt_s: float, e_th_v: float, r_th_ohm: float, i_load_a: float
    ) -> float:
        """Advance by ``dt_s``; returns the output current (A) into the bus.

        The bus is the pack (Thevenin ``e_th_v``, ``r_th_ohm``) with ``i_load_a``
        drawn by the inverters.
        """
        p = self.p
        target_v = self.voltage_setpoint_v(now_s)
        ramp_v = p.voltage_ramp_v_per_s * dt_s
        v = self.voltage_ramped_v
        v += max(-ramp_v, min(ramp_v, target_v - v))
        self.voltage_ramped_v = v
        r_cable = p.cable_resistance_mohm / 1000.0
        if not self.dc_on:
            self.current_a = 0.0
            self.terminal_v = e_th_v - i_load_a * r_th_ohm
            return 0.0
        limit = self.current_limit_a(now_s)
        limit = min(limit, p.max_power_w / max(v, 1.0))
        if self.ac_limit_a is not None:
            limit = min(limit, self.ac_limit_a * p.ac_voltage_v * p.efficiency / max(v, 1.0))
        if p.walk_in_s > 0.0:
            walk = (now_s - self.dc_on_since_s) / p.walk_in_s
            if walk < 1.0:
                limit = min(limit, max(0.0, walk) * p.max_fraction * p.amps_per_fraction)
        limit += self.over_current_a(now_s)
        cv_current = (v - e_th_v + i_load_a * r_th_ohm) / (r_th_ohm + r_cable)
        target = max(0.0, min(limit, cv_current))
        current = self.current_a
        rise = p.current_ramp_a_per_s * dt_s
        current = min(target, current + rise)
        self.current_a = current
        self.terminal_v = e_th_v + (current - i_load_a) * r_th_ohm + current * r_cable
        return current

    def ac_input_w(self) -> float:
        """AC power drawn from the grid."""
        return self.terminal_v * self.current_a / self.p.efficiency + self.p.standby_w
