"""Supervision (pure): devices that do not follow their command, and loop quality."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FollowFault:
    """A device whose measurement has stayed away from its command."""

    device: str
    commanded: float
    measured: float
    unit: str
    since_s: float

    def message(self, now_s: float) -> str:
        """Plain text for logs and the state topic."""
        return (
            f"{self.device} does not follow its command: "
            f"commanded {self.commanded:.1f} {self.unit}, "
            f"measured {self.measured:.1f} {self.unit} for {now_s - self.since_s:.0f} s"
        )


class FollowMonitor:
    """Flags a device once |measured − commanded| > tolerance for longer than a timeout.

    The timeout restarts whenever the command changes by more than the tolerance, so a
    device still ramping towards a new command is not blamed.
    """

    def __init__(self, device: str, unit: str) -> None:
        self.device = device
        self.unit = unit
        self._command: float | None = None
        self._deviating_since: float | None = None
        self.fault: FollowFault | None = None

    def update(
        self,
        now_s: float,
        commanded: float,
        measured: float | None,
        tolerance: float,
        timeout_s: float,
    ) -> FollowFault | None:
        """Feed one command/measurement pair; returns the active fault, if any."""
        if self._command is None or abs(commanded - self._command) > tolerance:
            self._command = commanded
            self._deviating_since = None
            self.fault = None
        if measured is None:
            return self.fault
        if abs(measured - commanded) <= tolerance:
            self._deviating_since = None
            self.fault = None
            return None
        if self._deviating_since is None:
            self._deviating_since = now_s
        if now_s - self._deviating_since >= timeout_s:
            self.fault = FollowFault(
                self.device, commanded, measured, self.unit, self._deviating_since
            )
        return self.fault


@dataclass(frozen=True, slots=True)
class LoopQuality:
    """Loop quality over the recent window."""

    mean_error_w: float
    rms_error_w: float
    reversals_per_min: float
    meter_age_s: float | None
    samples: int


class QualityMonitor:
    """Rolling mean and RMS grid error, and set-point reversals per minute."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._errors: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._reversals: deque[float] = deque()
        self._last_setpoint: float | None = None
        self._last_direction = 0
        self._last_meter_at_s: float | None = None

    def add_meter(self, at_s: float, error_w: float) -> None:
        """One fresh meter sample: grid − target."""
        if self._last_meter_at_s is not None and at_s <= self._last_meter_at_s:
            return
        self._last_meter_at_s = at_s
        self._errors.append((at_s, error_w))
        self._sum += error_w
        self._sum_sq += error_w * error_w

    def add_setpoint(self, now_s: float, setpoint_w: float, min_step_w: float) -> None:
        """A set-point; a change of direction larger than ``min_step_w`` counts as a reversal."""
        if self._last_setpoint is None:
            self._last_setpoint = setpoint_w
            return
        delta = setpoint_w - self._last_setpoint
        if abs(delta) <= min_step_w:
            return
        direction = 1 if delta > 0 else -1
        if self._last_direction and direction != self._last_direction:
            self._reversals.append(now_s)
        self._last_direction = direction
        self._last_setpoint = setpoint_w

    def report(self, now_s: float) -> LoopQuality:
        """Quality over the window ending at ``now_s``."""
        start = now_s - self.window_s
        while self._errors and self._errors[0][0] < start:
            _, old = self._errors.popleft()
            self._sum -= old
            self._sum_sq -= old * old
        if not self._errors:
            self._sum = self._sum_sq = 0.0
        while self._reversals and self._reversals[0] < start:
            self._reversals.popleft()
        n = len(self._errors)
        mean = self._sum / n if n else 0.0
        rms = math.sqrt(max(0.0, self._sum_sq) / n) if n else 0.0
        age = None if self._last_meter_at_s is None else now_s - self._last_meter_at_s
        return LoopQuality(mean, rms, len(self._reversals) * 60.0 / self.window_s, age, n)
