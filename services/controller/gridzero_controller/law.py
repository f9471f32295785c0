"""The grid-zero control law: one signed battery power set-point from the meter (pure).

Sign conventions: grid power + = import; battery power + = discharge (AC W at the meter).

The law does not integrate the grid error. On every fresh meter sample it estimates the
house's net load, ``load = grid + battery output (measured)``, and asks the battery for
``load - target``. The estimate does not move while the plant is still following an earlier
command (the grid falls exactly as much as the measured output rises), so reacting on every
sample cannot wind up or oscillate however slow the inverters are. services/controller/README.md has
the full design and the reasons for each part.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from gridzero.runtime.freshness import is_fresh
from gridzero_controller.settings import ControllerSettings

RANGE_NOISE_FACTOR = 2.5
QUIET_NOISE_W = 5.0
NOISY_NOISE_W = 15.0
SLOW_NOISY_NOISE_W = 50.0
LATE_METER_S = 0.5
# A change of the estimate this many times its scatter (the mean |difference| of two noisy
# samples, 1.13 sigma) is taken as a step, not smoothed: ~2.8 sigma of a difference, one
# sample in 200 from noise alone.
STEP_NOISE_FACTOR = 3.5
# However noisy the meter, a change this large is a load step and is taken at once (an oven
# switching off must be backed off promptly); the scatter learnt on a load that changes on
# every sample cannot grow the band past it.
MAX_STEP_BAND_W = 500.0
# Trust in the plant guess (class Trust): a move of at least REVERSAL_MIN_W reversing the
# previous one within REVERSAL_WINDOW_S cuts it by TRUST_CUT (not below TRUST_FLOOR); each
# other such move restores TRUST_RECOVERY of what is missing.
REVERSAL_WINDOW_S = 2.0
REVERSAL_MIN_W = 50.0  # smaller moves are flicker and noise, not a plant swinging
TRUST_CUT = 0.6
TRUST_FLOOR = 0.3
TRUST_RECOVERY = 0.1
# Large steps seen confirmed (`KnownSteps`): how many sizes are kept, and for how long.
KNOWN_STEPS = 4
KNOWN_STEP_MEMORY_S = 1800.0
# The smoothing gains (`smooth_gain`) are per sample of a meter sampling every
# SMOOTH_PERIOD_S (the bundled default plant's, housebatt's ~0.5 s); a slower meter's samples
# are smoothed less, as much per second (`LoadFilter.per_sample`), up to this interval.
SMOOTH_PERIOD_S = 0.5
# A settled device's measured output differs from what its command predicts by a steady
# ratio (the rectifier's current set-point is converted at the pack voltage, its draw is at
# its terminal voltage; an inverter's efficiency is a guess). The ratio is learnt while the
# command and the measurement both stood still for `CALIBRATION_SETTLE_S` (within
# `CALIBRATION_STILL` of the command), above `CALIBRATION_MIN_W`; a ratio beyond
# `CALIBRATION_BOUND` is a device that cannot follow (capped, limited), not a calibration.
CALIBRATION_SETTLE_S = 3.0
CALIBRATION_STILL = 0.005
CALIBRATION_MIN_W = 100.0
CALIBRATION_BOUND = 0.05
CALIBRATION_GAIN = 0.2
MAX_SMOOTH_PERIOD_S = 10.0
# An unconfirmed jump is followed this fraction of `spike_w` at most: an outlier then costs a
# bounded pulse for one meter period, a real step (a kettle) is not ignored for a whole one.
SPIKE_REACH = 0.5
# The step band's noise is measured on the second difference of the estimate, which a steady
# ramp (PV at a cloud's edge) does not raise. Mean |second difference| of white noise is
# 1.95 sigma; the scale puts it in the units of the first-difference noise (1.13 sigma).
JITTER_SCALE = 1.13 / 1.95
# A load that ramps (a heat pump or an EV charger winding up, PV at dawn) is fitted with a
# straight line over its last TREND_SAMPLES estimates since the last step (`Trend`); a slope
# TREND_SIGNIFICANCE standard errors from zero is a ramp, and the set-point leads it.
TREND_SAMPLES = 8
TREND_MIN_SAMPLES = 4
TREND_SIGNIFICANCE = 5.0


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
    """The law's result for one step.

    ``setpoint_w`` is the battery power the law wants; ``command_w`` what to ask the devices
    for now to get there soonest (the set-point plus a short, bounded overdrive while the
    inverters are still ramping; equal to the set-point otherwise).
    """

    setpoint_w: float
    reason: LawReason
    load_estimate_w: float | None
    command_w: float


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


def lag_ramp_after(y0_w: float, command_w: float, t_s: float, tau_s: float, rate: float) -> float:
    """Output of a first-order lag (``tau_s``) with a slew limit (``rate`` W/s) after ``t_s``
    of a constant command, from ``y0_w``: the plant guess of the inverters (sim/inverters.py).
    """
    gap = command_w - y0_w
    if t_s <= 0 or gap == 0:
        return y0_w
    sign = 1.0 if gap > 0 else -1.0
    gap = abs(gap)
    # The slew limit binds while gap / tau > rate, i.e. until the gap has shrunk to rate*tau.
    ramp_s = max(0.0, (gap - rate * tau_s) / rate)
    if t_s <= ramp_s:
        return y0_w + sign * rate * t_s
    left = min(gap, rate * tau_s) * math.exp(-(t_s - ramp_s) / tau_s)
    return command_w - sign * left


def shaped_command(
    model_w: float, setpoint_w: float, horizon_s: float, tau_s: float, rate: float, max_w: float
) -> float:
    """The command that brings the modelled output from ``model_w`` to ``setpoint_w`` in
    ``horizon_s`` (or as close as the slew limit allows), at most ``max_w`` beyond the set-point.

    Found by bisection: the output after the horizon rises monotonically with the command.
    """
    gap = setpoint_w - model_w
    if gap == 0 or max_w <= 0:
        return setpoint_w
    sign = 1.0 if gap > 0 else -1.0
    lo, hi = 0.0, max_w
    if (
        sign
        * (lag_ramp_after(model_w, setpoint_w + sign * hi, horizon_s, tau_s, rate) - setpoint_w)
        <= 0
    ):
        return setpoint_w + sign * hi
    for _ in range(30):
        mid = (lo + hi) / 2
        reached = lag_ramp_after(model_w, setpoint_w + sign * mid, horizon_s, tau_s, rate)
        if sign * (reached - setpoint_w) < 0:
            lo = mid
        else:
            hi = mid
    return setpoint_w + sign * hi


class Overdrive:
    """Asks the inverters for more (or less) than the set-point while the plant guess says
    they are still far from it, so a lagging output ramps at its full slew rate.

    Open loop on the plant guess: the modelled output is advanced from the commands given,
    never corrected from a measurement, so the overdrive cannot feed back on what it
    disturbs. Bounded by ``plant_ramp_w_per_s`` × ``plant_time_constant_s`` beyond the
    set-point (beyond that a faster command buys nothing), so a plant slower than its guess
    sees a short pulse, never a growing swing. Discharge only: the rectifier's current loop
    is fast already. The horizon is the interval between steps (the next chance to correct).
    """

    def __init__(self) -> None:
        self.model_w = 0.0
        self._at_s: float | None = None
        self._step_s = 0.5

    def advance(self, now_s: float, command_w: float, settings: ControllerSettings) -> None:
        """Move the modelled output to ``now_s`` under the command given since the last call."""
        if self._at_s is not None and now_s > self._at_s:
            dt = now_s - self._at_s
            self._step_s += 0.2 * (min(5.0, max(0.05, dt)) - self._step_s)
            self.model_w = lag_ramp_after(
                self.model_w,
                max(0.0, command_w),
                dt,
                settings.plant_time_constant_s,
                settings.plant_ramp_w_per_s,
            )
        self._at_s = now_s

    def command(
        self,
        setpoint_w: float,
        bounds: PowerBounds,
        settings: ControllerSettings,
        noise_w: float = 0.0,
    ) -> float:
        """The command for ``setpoint_w`` now (the set-point itself when charging or idle).

        A gap within ``noise_w`` (what the meter's noise alone can move the set-point by) is
        left to the plant: overdriving it would amplify the noise into the output.
        """
        gain = settings.overdrive_gain
        if setpoint_w <= 0 or gain <= 0 or abs(setpoint_w - self.model_w) <= noise_w:
            return setpoint_w
        shaped = shaped_command(
            self.model_w,
            setpoint_w,
            self._step_s,
            settings.plant_time_constant_s,
            settings.plant_ramp_w_per_s,
            settings.plant_ramp_w_per_s * settings.plant_time_constant_s,
        )
        command = setpoint_w + gain * (shaped - setpoint_w)
        return max(min(setpoint_w, 1.0), min(bounds.max_discharge_w, command))


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

    def covers(self, at_s: float) -> bool:
        """True if the history reaches back to ``at_s``."""
        return bool(self._points) and self._points[0][0] <= at_s

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


@dataclass(slots=True)
class Calibration:
    """Measured over commanded battery power of a settled device, per side (see
    `CALIBRATION_SETTLE_S`). Without it the guess after a measurement moves from the
    measurement towards the raw command: with a charger drawing 0.9 % more than commanded,
    every other meter sample (those newer than the last measurement) read 6 W lower, and
    that alternation, counted as meter noise, widened the deadband to 13 W."""

    charge: float = 1.0
    discharge: float = 1.0

    def ratio(self, command_w: float) -> float:
        """The ratio for a command of this sign."""
        return self.charge if command_w < 0 else self.discharge

    def learn(self, at_s: float, measured: BatteryHistory, commanded: BatteryHistory) -> None:
        """Learn from the measurement at ``at_s`` if both histories stood still before it."""
        since_s = at_s - CALIBRATION_SETTLE_S
        span = commanded.span(since_s, at_s)
        now_w, before_w = measured.at(at_s), measured.at(since_s)
        if span is None or now_w is None or before_w is None or not commanded.covers(since_s):
            return
        if not measured.covers(since_s):
            return
        command_w = (span[0] + span[1]) / 2
        still_w = CALIBRATION_STILL * abs(command_w)
        if abs(command_w) < CALIBRATION_MIN_W or span[1] - span[0] > still_w:
            return
        if abs(now_w - before_w) > still_w:
            return
        ratio = now_w / command_w
        if not 1.0 - CALIBRATION_BOUND <= ratio <= 1.0 + CALIBRATION_BOUND:
            return
        if command_w < 0:
            self.charge += CALIBRATION_GAIN * (ratio - self.charge)
        else:
            self.discharge += CALIBRATION_GAIN * (ratio - self.discharge)


class Trust:
    """How far to trust the plant guess when the set-point may already be right.

    A guess that is wrong (a dead time or lag the installer did not know) shows itself as
    large moves that reverse within seconds: the estimate overshoots one way, then the other.
    Each quick reversal cuts the trust; every other large move restores part of it, so a plant
    that matches its guess is followed at full gain and one that does not, cautiously.
    """

    def __init__(self) -> None:
        self.value = 1.0
        self._last_sign = 0.0
        self._last_at_s = -math.inf

    def gain(self, at_s: float, move_w: float) -> float:
        """The trust for a move of ``move_w`` at ``at_s`` (and learn from it)."""
        if abs(move_w) < REVERSAL_MIN_W:
            return self.value
        sign = math.copysign(1.0, move_w)
        if sign == -self._last_sign and at_s - self._last_at_s <= REVERSAL_WINDOW_S:
            self.value = max(TRUST_FLOOR, self.value * TRUST_CUT)
        else:
            self.value += TRUST_RECOVERY * (1.0 - self.value)
        self._last_sign = sign
        self._last_at_s = at_s
        return self.value


@dataclass(slots=True)
class SampleTimes:
    """When the law last stepped and which meter sample it last used."""

    last_step_s: float | None = None
    last_meter_at_s: float | None = None

    def advance(self, now_s: float) -> float:
        """Seconds since the previous step (0 on the first); remembers ``now_s``."""
        dt = 0.0 if self.last_step_s is None else max(0.0, now_s - self.last_step_s)
        self.last_step_s = now_s
        return dt


@dataclass(slots=True)
class Plant:
    """What the law knows of the devices: measured output, commands given, the guesses."""

    measured: BatteryHistory = field(default_factory=BatteryHistory)
    commanded: BatteryHistory = field(default_factory=BatteryHistory)
    calibration: Calibration = field(default_factory=Calibration)
    # The inverters' output as the plant guess predicts it from the commands alone (no
    # measurement: the overdrive must not feed back on a measurement it disturbs).
    overdrive: Overdrive = field(default_factory=Overdrive)
    trust: Trust = field(default_factory=Trust)
    last_command_w: float = 0.0


@dataclass(slots=True)
class LoadFilter:
    """The estimate of the house's net load, and what it learnt of its scatter.

    Small changes of the estimate are mostly noise (the meter and the output are not sampled
    at the same instant, loads flicker): they are smoothed. Large changes are real steps:
    taken at once. "Large" grows with a noisy meter's own scatter.
    """

    accepted_w: float | None = None
    noise_w: float = 0.0  # mean |change| of the estimate within the step band
    jitter_w: float = 0.0  # mean |second difference|, in units of the first difference
    last_raw_w: float | None = None
    before_last_raw_w: float | None = None
    period_s: float = SMOOTH_PERIOD_S  # the meter's sample interval, as seen
    stepped: bool = False  # the last sample was taken as a step

    @property
    def scatter_w(self) -> float:
        """The estimate's noise: its mean |change|, but no more than its scatter about a
        straight line (`jitter_w`). A load that ramps steadily (a heat pump winding down, an
        EV charger ramping) changes on every sample without any noise: counted as noise it
        widened the deadband to the ramp's step and smoothed it, and the set-point followed
        in a staircase, seconds behind."""
        return min(self.noise_w, self.jitter_w)

    def sampled(self, interval_s: float) -> None:
        """Learn the meter's sample interval from two successive fresh samples."""
        self.period_s += 0.2 * (min(MAX_SMOOTH_PERIOD_S, interval_s) - self.period_s)

    def per_sample(self, gain: float) -> float:
        """``gain`` is what to follow per `SMOOTH_PERIOD_S`; a slower meter follows as much per
        second, i.e. more per sample: smoothing a 5 s meter's samples at the 0.5 s gain would
        take 15 s to follow a small change the baselines follow in one sample."""
        periods = max(1.0, self.period_s / SMOOTH_PERIOD_S)
        return 1.0 - math.pow(1.0 - gain, periods)

    def push(self, raw_w: float) -> tuple[float | None, float | None]:
        """Record a raw estimate; returns the two before it (newest first)."""
        previous = (self.last_raw_w, self.before_last_raw_w)
        self.before_last_raw_w = self.last_raw_w
        self.last_raw_w = raw_w
        return previous

    def accept(
        self,
        raw_w: float,
        previous: tuple[float | None, float | None],
        settled: bool,
        settings: ControllerSettings,
    ) -> float:
        """Take ``raw_w`` at once if it is a step, else smooth towards it; the new estimate.
        ``settled``: the battery output is known (not ramping)."""
        step_band_w = self.step_band(raw_w, previous[0], previous[1], settings)
        accepted = self.accepted_w
        self.stepped = accepted is None or abs(raw_w - accepted) > step_band_w
        if accepted is None or self.stepped:
            self.accepted_w = raw_w
            return raw_w
        self.noise_w += 0.05 * (abs(raw_w - accepted) - self.noise_w)
        gain = self.smooth_gain(settings) if settled else self.slow_meter(settings.smooth_gain)
        self.accepted_w = accepted + gain * (raw_w - accepted)
        return self.accepted_w

    def smooth_gain(self, settings: ControllerSettings) -> float:
        """How much of a small change of the load estimate to follow at once.

        A quiet estimate (mean |change| up to `QUIET_NOISE_W`) of a battery whose output is
        known (not ramping) changes because the load does, and following it at once pays (a
        fridge, a flickering base load); a noisy one changes mostly because the meter is
        noisy, and one taken while the output ramps mostly because the plant guess is off:
        both are smoothed with `smooth_gain`. A late meter
        (more than `LATE_METER_S`) is always smoothed: its small changes are over by the
        time the battery could follow them.
        """
        if settings.meter_latency_s > LATE_METER_S:
            return self.slow_meter(settings.smooth_gain)
        quiet = max(
            0.0, min(1.0, (NOISY_NOISE_W - self.scatter_w) / (NOISY_NOISE_W - QUIET_NOISE_W))
        )
        gain = settings.smooth_gain + (1.0 - settings.smooth_gain) * quiet
        return self.slow_meter(gain)

    def slow_meter(self, gain: float) -> float:
        """A slow meter's samples are smoothed less (`per_sample`), the less noisy they are: a
        very noisy one as before (following its noise costs a whole period per sample)."""
        calm = (SLOW_NOISY_NOISE_W - self.scatter_w) / (SLOW_NOISY_NOISE_W - QUIET_NOISE_W)
        return gain + max(0.0, min(1.0, calm)) * (self.per_sample(gain) - gain)

    def step_band(
        self,
        raw_w: float,
        previous_w: float | None,
        before_previous_w: float | None,
        settings: ControllerSettings,
    ) -> float:
        """The change of the estimate above which it is a step, learning the scatter."""
        band_w = max(
            settings.smooth_band_w, min(MAX_STEP_BAND_W, STEP_NOISE_FACTOR * self.jitter_w)
        )
        if previous_w is not None and before_previous_w is not None:
            curvature = abs(raw_w - 2.0 * previous_w + before_previous_w)
            if curvature <= 2.0 * band_w:  # a step's own kink is not scatter
                self.jitter_w += 0.05 * (curvature * JITTER_SCALE - self.jitter_w)
        return band_w


class Trend:
    """A straight line through the load's recent estimates (least squares), to lead a ramp.

    Between two samples the load moves on; the set-point taken at one sample acts after the
    meter's latency and the dead time and stands until the next sample. For a load ramping
    at b W/s the set-point that cancels it on average over that stretch is the line's value
    now plus b × (latency + dead time + half the meter's period): following the last sample
    instead leaves the grid that far behind on every sample (a heat pump winding up at
    8 W/s under a 5 s meter: ~27 W of import, all the way up).
    """

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=TREND_SAMPLES)

    def restart(self) -> None:
        """The load stepped: the line before the step says nothing of the one after it."""
        self._points.clear()

    def add(self, at_s: float, load_w: float) -> None:
        """One estimate of the load at ``at_s``."""
        self._points.append((at_s, load_w))

    def ramp(self) -> tuple[float, float] | None:
        """(the line's value at the newest sample, its slope in W/s) if the slope is
        significant (`TREND_SIGNIFICANCE` standard errors), else None."""
        n = len(self._points)
        if n < TREND_MIN_SAMPLES:
            return None
        mean_t = sum(t for t, _ in self._points) / n
        mean_w = sum(w for _, w in self._points) / n
        sxx = sum((t - mean_t) ** 2 for t, _ in self._points)
        if sxx <= 0:
            return None
        slope = sum((t - mean_t) * (w - mean_w) for t, w in self._points) / sxx
        residual = sum((w - mean_w - slope * (t - mean_t)) ** 2 for t, w in self._points)
        error = math.sqrt(residual / (n - 2) / sxx)
        if abs(slope) <= TREND_SIGNIFICANCE * error:
            return None
        return mean_w + slope * (self._points[-1][0] - mean_t), slope


class KnownSteps:
    """Sizes of large load steps seen confirmed (two samples in a row), to believe the same
    appliance switching again at its first sample.

    An oven, a hob or an immersion heater on a thermostat switches the same element again
    and again; with a 5 s meter holding each of its rises for a sample cost a whole period
    at the element's power (issue 18, a seed-1 household with a hob pulsing 1.9 kW). A junk
    reading is unlikely to have the size of the house's own last steps.
    """

    def __init__(self) -> None:
        self._sizes: deque[tuple[float, float]] = deque(maxlen=KNOWN_STEPS)  # (at_s, W)

    def learn(self, jump_w: float, at_s: float) -> None:
        """A jump of ``jump_w`` (W, > 0) was confirmed at ``at_s``."""
        self._sizes.append((at_s, jump_w))

    def known(self, jump_w: float, at_s: float, tolerance_w: float) -> bool:
        """Whether a step of this size was confirmed within `KNOWN_STEP_MEMORY_S`."""
        return any(
            at_s - seen_s <= KNOWN_STEP_MEMORY_S and abs(jump_w - size_w) <= tolerance_w
            for seen_s, size_w in self._sizes
        )


@dataclass(frozen=True, slots=True)
class Window:
    """Where the set-point may be right: [low_w, high_w], and the deadband within it."""

    low_w: float
    high_w: float
    deadband_w: float


class ControlLaw:
    """Stateful, pure: call `step` with the newest data; time is a parameter."""

    def __init__(self) -> None:
        self.setpoint_w = 0.0
        # The set-point the last sample asked for before the bounds clamped it: held until
        # the next sample, a bound that widens meanwhile (the bms's limit ramping up, the DC
        # derating lifting) lets it through at once instead of a meter period later.
        self._wanted_w = 0.0
        self._reason = LawReason.NO_METER
        self._times = SampleTimes()
        self._load = LoadFilter()
        self._plant = Plant()
        self._steps = KnownSteps()
        self._trend = Trend()

    @property
    def load_estimate_w(self) -> float | None:
        """The last accepted estimate of the house's net load (W, + = consumption)."""
        return self._load.accepted_w

    def record_battery(self, at_s: float, battery_w: float) -> None:
        """A measured battery output (inverters' AC output − charger AC input) at ``at_s``."""
        plant = self._plant
        plant.measured.add(at_s, battery_w)
        plant.calibration.learn(at_s, plant.measured, plant.commanded)

    def calibrated(self, battery_w: float) -> float:
        """What to command for ``battery_w`` to be delivered (`Calibration`): a charger that
        draws 0.9 % more than its set-point predicts otherwise held the grid at 20 W import
        while the law's estimate, from the measurement, was right."""
        return battery_w / self._plant.calibration.ratio(battery_w)

    def record_command(self, at_s: float, battery_w: float) -> None:
        """The battery power actually commanded (after dispatch) at ``at_s``."""
        self._plant.commanded.add(at_s, battery_w)

    def battery_estimate(self, at_s: float, settings: ControllerSettings) -> BatteryEstimate | None:
        """What the battery output was at ``at_s``: a range that surely holds it, and a guess.

        Inside the measured history the value is interpolated and exact. After the newest
        measurement the output can only have moved from that measurement towards the commands
        given since (every real device approaches its command monotonically, or stays put if
        it does not follow): the range spans the measurement and those commands. The guess
        inside it moves from the measurement towards the command then in effect with time
        constant `plant_time_constant_s`, no faster than `plant_ramp_w_per_s`.
        """
        measured, commanded = self._plant.measured, self._plant.commanded
        last = measured.last()
        if last is None:
            return None
        t_meas, y_meas = last
        if at_s <= t_meas:
            y = measured.at(at_s)
            assert y is not None
            return BatteryEstimate(y, y, y)
        newest = commanded.last()
        if newest is not None and newest[1] <= 0 and y_meas <= 0:
            # Charging: the rectifier's current loop, not the inverters' lag.
            dead = settings.charger_dead_time_s
            tau, rate = settings.charger_time_constant_s, settings.charger_ramp_w_per_s
        else:
            dead = settings.plant_dead_time_s
            tau, rate = settings.plant_time_constant_s, settings.plant_ramp_w_per_s
        span = commanded.span(t_meas - dead, at_s)
        command = commanded.at(at_s - dead / 2, hold=True)
        if span is None or command is None:
            return BatteryEstimate(y_meas, y_meas, y_meas)
        cal = self._plant.calibration
        command *= cal.ratio(command)
        lo = min(y_meas, span[0] * cal.ratio(span[0]))
        hi = max(y_meas, span[1] * cal.ratio(span[1]))
        dt = at_s - t_meas
        gap = command - y_meas
        move = abs(gap) * (1.0 - math.exp(-dt / tau))
        move = min(move, rate * dt)
        guess = max(lo, min(hi, y_meas + math.copysign(move, gap)))
        return BatteryEstimate(lo, guess, hi)

    def force_zero(self, now_s: float, settings: ControllerSettings) -> LawOutput:
        """Set-point 0 at once (stale or alarmed bms limits, mode hold/off)."""
        self.setpoint_w = self._wanted_w = 0.0
        self._times.last_step_s = now_s
        self._reason = LawReason.FORCED_ZERO
        return self._output(now_s, settings, None)

    def set_constant(
        self, now_s: float, power_w: float, bounds: PowerBounds, settings: ControllerSettings
    ) -> LawOutput:
        """Constant-power mode: the set-point is given, only bounded."""
        self.setpoint_w = self._wanted_w = bounds.clamp(power_w)
        self._times.last_step_s = now_s
        self._reason = LawReason.CONSTANT
        return self._output(now_s, settings, None)

    def step(
        self,
        now_s: float,
        meter: MeterSample | None,
        bounds: PowerBounds,
        settings: ControllerSettings,
    ) -> LawOutput:
        """Advance the law to ``now_s`` with the newest meter sample."""
        dt = self._times.advance(now_s)
        if meter is None:
            self.setpoint_w = self._wanted_w = bounds.clamp(
                _toward_zero(self.setpoint_w, settings.stale_ramp_w_per_s * dt)
            )
            self._reason = LawReason.NO_METER
            return self._output(now_s, settings, None)
        if not is_fresh(meter.at_s, now_s, settings.meter_stale_s):
            ramp = settings.stale_ramp_w_per_s * dt
            self.setpoint_w = self._wanted_w = bounds.clamp(_toward_zero(self.setpoint_w, ramp))
            self._reason = LawReason.METER_STALE
            return self._output(now_s, settings, None)
        last_at_s = self._times.last_meter_at_s
        if last_at_s is not None and meter.at_s <= last_at_s:
            # No fresh sample: hold (a bound may have tightened or widened meanwhile).
            self.setpoint_w = bounds.clamp(self._wanted_w)
            return self._output(now_s, settings, bounds)
        # the meter's period is learnt only from a sample whose predecessor was still fresh
        if last_at_s is not None and is_fresh(last_at_s, meter.at_s, settings.meter_stale_s):
            self._load.sampled(meter.at_s - last_at_s)
        self._times.last_meter_at_s = meter.at_s
        self._on_sample(meter, bounds, settings)
        return self._output(now_s, settings, bounds)

    def _output(
        self, now_s: float, settings: ControllerSettings, shaping: PowerBounds | None
    ) -> LawOutput:
        """The output; ``shaping`` (the bounds) when the set-point may be overdriven."""
        # What the devices were last asked for: as dispatched if known, else as output here.
        plant = self._plant
        last = plant.commanded.last()
        plant.overdrive.advance(now_s, plant.last_command_w if last is None else last[1], settings)
        command_w = self.setpoint_w
        if shaping is not None:
            noise_w = 0.0
            if self._load.scatter_w >= NOISY_NOISE_W:
                noise_w = RANGE_NOISE_FACTOR * settings.noise_deadband * self._load.scatter_w
            command_w = plant.overdrive.command(self.setpoint_w, shaping, settings, noise_w)
        plant.last_command_w = command_w
        return LawOutput(self.setpoint_w, self._reason, self._load.accepted_w, command_w)

    def _on_sample(
        self, meter: MeterSample, bounds: PowerBounds, settings: ControllerSettings
    ) -> None:
        """A fresh meter sample: estimate the load, then hold, follow or track it."""
        estimate = self.battery_estimate(meter.at_s - settings.meter_latency_s, settings)
        if estimate is None:
            estimate = BatteryEstimate(self.setpoint_w, self.setpoint_w, self.setpoint_w)
        raw_load_w = meter.grid_w + estimate.guess_w
        previous = self._load.push(raw_load_w)
        current_w = bounds.clamp(self.setpoint_w)
        if self._hold_spike(raw_load_w, previous[0], current_w, bounds, settings, meter.at_s):
            return
        settled = estimate.high_w - estimate.low_w <= settings.smooth_band_w
        accepted_w = self._load.accept(raw_load_w, previous, settled, settings)
        load_w = self._lead_ramp(meter.at_s, raw_load_w, accepted_w, settled, settings)
        window = self._window(meter, estimate, settings)
        self._track(
            load_w - settings.target_grid_w, current_w, window, meter.at_s, bounds, settings
        )

    def _lead_ramp(
        self,
        at_s: float,
        raw_w: float,
        accepted_w: float,
        settled: bool,
        settings: ControllerSettings,
    ) -> float:
        """The load to cancel: the accepted estimate, or on a ramp (`Trend`) the line ahead.
        The set-point stays within the window of what the sample can prove (`_window`): a
        lead beyond it is taken only as far as the meter's noise and the battery's ramping
        leave room, so a wrong slope cannot run away. The line is fitted only through samples
        taken while the battery's output was known (``settled``): while it is ramping, the
        estimate's error follows the law's own commands, and leading that error fed it back
        (a bundled evening with a 1 s inverter delay: 11 oscillating minutes instead of 1)."""
        if self._load.stepped or not settled:
            self._trend.restart()
        self._trend.add(at_s, raw_w)
        ramp = self._trend.ramp()
        if ramp is None:
            return accepted_w
        line_w, slope = ramp
        lead_s = self._load.period_s / 2 + settings.meter_latency_s + settings.plant_dead_time_s
        return line_w + slope * lead_s

    def _hold_spike(
        self,
        raw_load_w: float,
        previous_w: float | None,
        current_w: float,
        bounds: PowerBounds,
        settings: ControllerSettings,
        at_s: float,
    ) -> bool:
        """An unconfirmed jump of the estimate (not a back-off, not the size of a step seen
        confirmed recently) is followed only a bounded part of the way (`SPIKE_REACH`); True
        when it was one."""
        accepted = self._load.accepted_w
        if accepted is None or abs(raw_load_w - accepted) <= settings.spike_w:
            return False
        target = settings.target_grid_w
        jump_w = abs(raw_load_w - accepted)
        confirmed = (
            previous_w is not None and abs(raw_load_w - previous_w) <= settings.spike_confirm_w
        )
        if confirmed:
            self._steps.learn(jump_w, at_s)
            return False
        backs_off = abs(bounds.clamp(raw_load_w - target)) < abs(current_w)
        if backs_off or self._steps.known(jump_w, at_s, settings.spike_confirm_w):
            return False
        self._reason = LawReason.SPIKE_HELD
        wanted_w = raw_load_w - target
        # A jump across zero (charging, then a large load) first stops the other side: that
        # part is a back-off and is taken at once; only the rise beyond zero is held.
        base_w = 0.0 if current_w * (wanted_w - current_w) < 0 else current_w
        reach = SPIKE_REACH * settings.spike_w
        self._wanted_w = base_w + max(-reach, min(reach, wanted_w - base_w))
        self.setpoint_w = bounds.clamp(self._wanted_w)
        return True

    def _window(
        self, meter: MeterSample, estimate: BatteryEstimate, settings: ControllerSettings
    ) -> Window:
        """The set-points that would cancel the load for the lowest and highest battery output
        the plant can have had, widened by the noise; and the deadband."""
        noise_w = self._load.scatter_w
        # A noisy meter widens the deadband to the noise it shows (`LoadFilter.scatter_w`:
        # a ramp's steady change is not noise), so the set-point does not chase the noise.
        deadband_w = max(settings.deadband_w, settings.noise_deadband * noise_w)
        # The certain range rests on one raw sample: widen it to ~3 sigma of the noise seen
        # (mean |difference| of two samples is 1.13 sigma), or a noisy sample alone would count
        # as proof that the set-point is wrong and the battery would chase the meter's noise.
        margin_w = max(deadband_w, RANGE_NOISE_FACTOR * settings.noise_deadband * noise_w)
        target = settings.target_grid_w
        return Window(
            meter.grid_w + estimate.low_w - target - margin_w,
            meter.grid_w + estimate.high_w - target + margin_w,
            deadband_w,
        )

    def _track(
        self,
        guess_w: float,
        current_w: float,
        window: Window,
        at_s: float,
        bounds: PowerBounds,
        settings: ControllerSettings,
    ) -> None:
        """Move the set-point towards ``guess_w`` (the set-point that cancels the estimated
        load), within the window; rises are taken at `rise_gain`."""
        if window.low_w <= current_w <= window.high_w:
            # The set-point may already be right; the guess says how likely it is wrong.
            # Move only part of the way: a wrong plant guess then cannot sustain a swing.
            if abs(guess_w - current_w) <= window.deadband_w:
                self.setpoint_w = self._wanted_w = current_w
                self._reason = LawReason.DEADBAND
                return
            gain = settings.uncertain_gain * self._plant.trust.gain(at_s, guess_w - current_w)
            guess_w = current_w + gain * (guess_w - current_w)
        unclamped_w = max(window.low_w, min(window.high_w, guess_w))
        desired_w = bounds.clamp(unclamped_w)
        rising = abs(desired_w) > abs(current_w) and desired_w * current_w >= 0
        if rising:
            desired_w = current_w + settings.rise_gain * (desired_w - current_w)
        self.setpoint_w = desired_w
        self._wanted_w = unclamped_w if settings.rise_gain >= 1.0 else desired_w
        self._reason = LawReason.TRACKING
