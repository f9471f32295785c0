"""The grid-zero control law: one signed battery power set-point from the meter (pure).

Sign conventions: grid power + = import; battery power + = discharge (AC W at the meter).

The law does not integrate the grid error. On every fresh meter sample it estimates the
house's net load, ``load = grid + battery output (measured)``, and asks the battery for
``load - target``. The estimate does not move while the plant is still following an earlier
command (the grid falls exactly as much as the measured output rises), so reacting on every
sample cannot wind up or oscillate however slow the inverters are. docs/controller.md has
the full design and the reasons for each part.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from gridzero.services.controller.settings import ControllerSettings


@dataclass(frozen=True, slots=True)
class MeterSample:
    """One grid meter reading: W, + = import; ``at_s`` when it was received (monotonic)."""

    grid_w: float
    at_s: float


class LawReason(StrEnum):
    """Why the set-point has its current value."""

    TRACKING = "tracking"
    DEADBAND = "deadband"
    SPIKE_HELD = "spike_held"
    NO_METER = "no_meter"
    METER_STALE = "meter_stale"
    FORCED_ZERO = "forced_zero"
    CONSTANT = "constant"


@dataclass(frozen=True, slots=True)
class LawOutput:
    """The law's result for one step."""

    setpoint_w: float
    reason: LawReason
    load_estimate_w: float | None


@dataclass(frozen=True, slots=True)
class BatteryEstimate:
    """Battery output at one instant: surely within [low_w, high_w], most likely guess_w."""

    low_w: float
    guess_w: float
    high_w: float


@dataclass(frozen=True, slots=True)
class PowerBounds:
    """How far the set-point may go: max discharge (>= 0) and max charge (>= 0), AC W."""

    max_discharge_w: float
    max_charge_w: float

    def clamp(self, power_w: float) -> float:
        """``power_w`` limited to [-max_charge_w, +max_discharge_w]."""
        return max(-self.max_charge_w, min(self.max_discharge_w, power_w))


def _toward_zero(value: float, step: float) -> float:
    if value > 0:
        return max(0.0, value - step)
    return min(0.0, value + step)


class BatteryHistory:
    """Recent measured battery output, to pair a meter sample with the output at its time."""

    def __init__(self, keep_s: float = 15.0) -> None:
        self._keep_s = keep_s
        self._points: deque[tuple[float, float]] = deque()

    def add(self, at_s: float, battery_w: float) -> None:
        """Record a measurement (ignored if older than the newest one)."""
        if self._points and at_s <= self._points[-1][0]:
            if at_s == self._points[-1][0]:
                self._points[-1] = (at_s, battery_w)
            return
        self._points.append((at_s, battery_w))
        while len(self._points) > 2 and self._points[1][0] < at_s - self._keep_s:
            self._points.popleft()

    def span(self, t0_s: float, t1_s: float) -> tuple[float, float] | None:
        """(min, max) of the values in effect during [t0_s, t1_s] (step-held)."""
        if not self._points:
            return None
        lo = hi = self.at(t0_s, hold=True)
        assert lo is not None
        assert hi is not None
        for t, w in self._points:
            if t0_s < t <= t1_s:
                lo = min(lo, w)
                hi = max(hi, w)
        return lo, hi

    def last(self) -> tuple[float, float] | None:
        """The newest (time, value), if any."""
        return self._points[-1] if self._points else None

    def at(self, at_s: float, *, hold: bool = False) -> float | None:
        """The value at ``at_s``: interpolated (or held from the previous point) inside the
        history, held outside it."""
        if not self._points:
            return None
        if hold:
            value = self._points[0][1]
            for t, w in self._points:
                if t > at_s:
                    break
                value = w
            return value
        if at_s >= self._points[-1][0]:
            return self._points[-1][1]
        if at_s <= self._points[0][0]:
            return self._points[0][1]
        prev_t, prev_w = self._points[0]
        for t, w in self._points:
            if t >= at_s:
                frac = (at_s - prev_t) / (t - prev_t) if t > prev_t else 1.0
                return prev_w + frac * (w - prev_w)
            prev_t, prev_w = t, w
        return self._points[-1][1]


class ControlLaw:
    """Stateful, pure: call `step` with the newest data; time is a parameter."""

    def __init__(self) -> None:
        self.setpoint_w = 0.0
        self._history = BatteryHistory()
        self._commands = BatteryHistory()
        self._last_meter_at_s: float | None = None
        self._last_step_s: float | None = None
        self._accepted_load_w: float | None = None
        self._noise_w = 0.0
        self._last_raw_load_w: float | None = None
        self._reason = LawReason.NO_METER

    @property
    def load_estimate_w(self) -> float | None:
        """The last accepted estimate of the house's net load (W, + = consumption)."""
        return self._accepted_load_w

    def record_battery(self, at_s: float, battery_w: float) -> None:
        """A measured battery output (inverters' AC output − charger AC input) at ``at_s``."""
        self._history.add(at_s, battery_w)

    def record_command(self, at_s: float, battery_w: float) -> None:
        """The battery power actually commanded (after dispatch) at ``at_s``."""
        self._commands.add(at_s, battery_w)

    def battery_estimate(self, at_s: float, settings: ControllerSettings) -> BatteryEstimate | None:
        """What the battery output was at ``at_s``: a range that surely holds it, and a guess.

        Inside the measured history the value is interpolated and exact. After the newest
        measurement the output can only have moved from that measurement towards the commands
        given since (every real device approaches its command monotonically, or stays put if
        it does not follow): the range spans the measurement and those commands. The guess
        inside it moves from the measurement towards the command then in effect with time
        constant `plant_time_constant_s`, no faster than `plant_ramp_w_per_s`.
        """
        last = self._history.last()
        if last is None:
            return None
        t_meas, y_meas = last
        if at_s <= t_meas:
            y = self._history.at(at_s)
            assert y is not None
            return BatteryEstimate(y, y, y)
        dead = settings.plant_dead_time_s
        span = self._commands.span(t_meas - dead, at_s)
        command = self._commands.at(at_s - dead / 2, hold=True)
        if span is None or command is None:
            return BatteryEstimate(y_meas, y_meas, y_meas)
        lo = min(y_meas, span[0])
        hi = max(y_meas, span[1])
        dt = at_s - t_meas
        gap = command - y_meas
        move = abs(gap) * (1.0 - math.exp(-dt / settings.plant_time_constant_s))
        move = min(move, settings.plant_ramp_w_per_s * dt)
        guess = max(lo, min(hi, y_meas + math.copysign(move, gap)))
        return BatteryEstimate(lo, guess, hi)

    def force_zero(self, now_s: float) -> LawOutput:
        """Set-point 0 at once (stale or alarmed bms limits, mode hold/off)."""
        self.setpoint_w = 0.0
        self._last_step_s = now_s
        self._reason = LawReason.FORCED_ZERO
        return LawOutput(0.0, self._reason, self._accepted_load_w)

    def set_constant(self, now_s: float, power_w: float, bounds: PowerBounds) -> LawOutput:
        """Constant-power mode: the set-point is given, only bounded."""
        self.setpoint_w = bounds.clamp(power_w)
        self._last_step_s = now_s
        self._reason = LawReason.CONSTANT
        return LawOutput(self.setpoint_w, self._reason, self._accepted_load_w)

    def step(
        self,
        now_s: float,
        meter: MeterSample | None,
        bounds: PowerBounds,
        settings: ControllerSettings,
    ) -> LawOutput:
        """Advance the law to ``now_s`` with the newest meter sample."""
        dt = 0.0 if self._last_step_s is None else max(0.0, now_s - self._last_step_s)
        self._last_step_s = now_s
        if meter is None:
            self.setpoint_w = bounds.clamp(
                _toward_zero(self.setpoint_w, settings.stale_ramp_w_per_s * dt)
            )
            self._reason = LawReason.NO_METER
            return LawOutput(self.setpoint_w, self._reason, self._accepted_load_w)
        if now_s - meter.at_s > settings.meter_stale_s:
            ramp = settings.stale_ramp_w_per_s * dt
            self.setpoint_w = bounds.clamp(_toward_zero(self.setpoint_w, ramp))
            self._reason = LawReason.METER_STALE
            return LawOutput(self.setpoint_w, self._reason, self._accepted_load_w)
        if self._last_meter_at_s is not None and meter.at_s <= self._last_meter_at_s:
            # No fresh sample: hold (a bound may have tightened meanwhile).
            self.setpoint_w = bounds.clamp(self.setpoint_w)
            return LawOutput(self.setpoint_w, self._reason, self._accepted_load_w)
        self._last_meter_at_s = meter.at_s
        self._on_sample(meter, bounds, settings)
        return LawOutput(self.setpoint_w, self._reason, self._accepted_load_w)

    def _on_sample(
        self, meter: MeterSample, bounds: PowerBounds, settings: ControllerSettings
    ) -> None:
        estimate = self.battery_estimate(meter.at_s - settings.meter_latency_s, settings)
        if estimate is None:
            estimate = BatteryEstimate(self.setpoint_w, self.setpoint_w, self.setpoint_w)
        target = settings.target_grid_w
        raw_load_w = meter.grid_w + estimate.guess_w
        previous_raw = self._last_raw_load_w
        self._last_raw_load_w = raw_load_w
        current_w = bounds.clamp(self.setpoint_w)
        accepted = self._accepted_load_w
        if accepted is not None and abs(raw_load_w - accepted) > settings.spike_w:
            confirmed = (
                previous_raw is not None
                and abs(raw_load_w - previous_raw) <= settings.spike_confirm_w
            )
            backs_off = abs(bounds.clamp(raw_load_w - target)) < abs(current_w)
            if not confirmed and not backs_off:
                self._reason = LawReason.SPIKE_HELD
                self.setpoint_w = current_w
                return
        # Small changes of the estimate are mostly noise (the meter and the output are not
        # sampled at the same instant, loads flicker): smooth them. Large changes are real
        # steps: take them at once.
        if accepted is None or abs(raw_load_w - accepted) > settings.smooth_band_w:
            self._accepted_load_w = raw_load_w
        else:
            self._noise_w += 0.05 * (abs(raw_load_w - accepted) - self._noise_w)
            self._accepted_load_w = accepted + settings.smooth_gain * (raw_load_w - accepted)
        raw_load_w = self._accepted_load_w
        # The set-point that would cancel the load, for the lowest and highest battery
        # output the plant can have had: hold while the current set-point is among them.
        guess_w = raw_load_w - target
        # A noisy meter widens the deadband to the noise it shows (mean |change| of the
        # estimate between samples), so the set-point does not chase the noise.
        deadband_w = max(settings.deadband_w, settings.noise_deadband * self._noise_w)
        low_w = meter.grid_w + estimate.low_w - target - deadband_w
        high_w = meter.grid_w + estimate.high_w - target + deadband_w
        if low_w <= current_w <= high_w:
            # The set-point may already be right; the guess says how likely it is wrong.
            # Move only part of the way: a wrong plant guess then cannot sustain a swing.
            if abs(guess_w - current_w) <= deadband_w:
                self.setpoint_w = current_w
                self._reason = LawReason.DEADBAND
                return
            guess_w = current_w + settings.uncertain_gain * (guess_w - current_w)
        desired_w = bounds.clamp(max(low_w, min(high_w, guess_w)))
        rising = abs(desired_w) > abs(current_w) and desired_w * current_w >= 0
        if rising:
            desired_w = current_w + settings.rise_gain * (desired_w - current_w)
        self.setpoint_w = desired_w
        self._reason = LawReason.TRACKING
