"""SoyoSource GTN grid-tie inverter model (pure; syssi/esphome-soyosource-gtn-virtual-meter, components/soyosource_modbus and its README).

- Each demand frame sets the wanted AC output (W, per unit) ``dead_time_s``
  after it arrives; the output follows it through a first-order lag (``lag_s``) and a ramp limit
  (``ramp_w_per_s``), capped at ``max_power_w`` (no plausibility check: a
  huge demand gives full power).
- No frame for ``frame_timeout_s`` (~3 s): output stops at once.
- DC window: below ``dc_shutdown_v`` or above ``dc_max_v`` the unit goes to
  standby (output 0 at once); it restarts once the DC voltage has been in
  ``dc_start_v``..``dc_max_v`` for ``start_delay_s``.
- DC draw = AC output / ``efficiency``.
"""

from __future__ import annotations

import math
from collections import deque

from gridzero_tools.sim.params import InverterParams


class Inverter:
    """State of one inverter unit."""

    def __init__(self, params: InverterParams, now_s: float, dc_v: float):
        self.p = params
        self.demand_w = 0.0
        self._pending: deque[tuple[float, float]] = deque()  # (applies at, demand) in order
        self.last_frame_s = -math.inf
        self.output_w = 0.0
        self.running = params.dc_start_v <= dc_v <= params.dc_max_v
        self.dc_ok_since_s = now_s - params.start_delay_s if self.running else math.inf

    def command(self, demand_w: float, now_s: float) -> None:
        """A demand frame arrived (W for this unit; negative or NaN counts as 0)."""
        demand = demand_w if demand_w > 0.0 else 0.0
        self.last_frame_s = now_s
        if self.p.dead_time_s <= 0.0:
            self.demand_w = demand
        else:
            self._pending.append((now_s + self.p.dead_time_s, demand))

    def fed(self, now_s: float) -> bool:
        """True while the last frame is younger than the timeout."""
        return now_s - self.last_frame_s <= self.p.frame_timeout_s

    def step(self, now_s: float, dt_s: float, dc_v: float) -> float:
        """Advance by ``dt_s`` at DC bus voltage ``dc_v``; returns AC output W."""
        p = self.p
        while self._pending and self._pending[0][0] <= now_s:
            self.demand_w = self._pending.popleft()[1]
        if self.running:
            if dc_v < p.dc_shutdown_v or dc_v > p.dc_max_v:
                self.running = False
                self.dc_ok_since_s = math.inf
        elif p.dc_start_v <= dc_v <= p.dc_max_v:
            if self.dc_ok_since_s == math.inf:
                self.dc_ok_since_s = now_s
            if now_s - self.dc_ok_since_s >= p.start_delay_s:
                self.running = True
        else:
            self.dc_ok_since_s = math.inf
        if not self.running or now_s - self.last_frame_s > p.frame_timeout_s:
            self.output_w = 0.0
            return 0.0
        target = min(self.demand_w, p.max_power_w)
        out = self.output_w
        step = (target - out) * dt_s / (p.lag_s + dt_s) if p.lag_s > 0.0 else target - out
        ramp = p.ramp_w_per_s * dt_s
        out += max(-ramp, min(ramp, step))
        self.output_w = out
        return out

    @property
    def dc_power_w(self) -> float:
        """Power drawn from the battery."""
        return self.output_w / self.p.efficiency
