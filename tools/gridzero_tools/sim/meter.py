"""The grid meter model (pure): samples the true grid power on a fixed period.

A sample taken at ``t_s`` (every ``period_s``, offset ``phase_s``) carries
the true grid power plus Gaussian noise (``noise_w``), rounded to
``resolution_w``, and becomes visible ``latency_s`` later. Positive = import.
While the meter is silent no sample is made; while it sends junk the payload
is garbage and ``value_w`` is NaN.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from gridzero_tools.sim.params import MeterParams

JUNK_PAYLOADS: tuple[str, ...] = (
    "",
    "nan",
    "NaN",
    "inf",
    "-",
    "12a",
    "{",
    '{"power":',
    "null",
    "1e999",
    "99999999999999999999",
    "\x00\xff",
    "ON",
)


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One published meter value: sampled at ``t_s``, visible from ``available_s``."""

    t_s: float
    available_s: float
    value_w: float
    payload: str


class Meter:
    """Sample queue with latency; ``reading(now_s)`` is what a subscriber has seen by now."""

    def __init__(self, params: MeterParams, rng: random.Random, start_s: float):
        self.p = params
        self._rng = rng
        k = math.ceil((start_s - params.phase_s) / params.period_s - 1e-9)
        self._k = k
        self.next_sample_s = params.phase_s + k * params.period_s
        self._queue: deque[MeterReading] = deque()
        self._latest: MeterReading | None = None
        self._new: deque[MeterReading] = deque(maxlen=10000)

    def sample(self, grid_w: float, *, silent: bool, junk: bool) -> None:
        """Take the sample due at ``next_sample_s`` (called by the plant at that time)."""
        p = self.p
        t = self.next_sample_s
        self._k += 1
        self.next_sample_s = p.phase_s + self._k * p.period_s
        if silent:
            return
        if junk:
            payload = self._rng.choice(JUNK_PAYLOADS)
            self._queue.append(MeterReading(t, t + p.latency_s, math.nan, payload))
            return
        value = grid_w + (self._rng.gauss(0.0, p.noise_w) if p.noise_w > 0.0 else 0.0)
        value = round(value / p.resolution_w) * p.resolution_w
        text = str(int(value)) if p.resolution_w >= 1.0 else f"{value:g}"
        self._queue.append(MeterReading(t, t + p.latency_s, float(value), text))

    def latest(self, now_s: float) -> MeterReading | None:
        """The newest reading visible at ``now_s`` (None before the first)."""
        queue = self._queue
        while queue and queue[0].available_s <= now_s:
            reading = queue.popleft()
            self._latest = reading
            self._new.append(reading)
        return self._latest

    def reading(self, now_s: float) -> float | None:
        """The newest value visible at ``now_s``: W, NaN for junk, None before the first."""
        latest = self.latest(now_s)
        return None if latest is None else latest.value_w

    def take_new(self, now_s: float) -> list[MeterReading]:
        """Readings that became visible since the last call, oldest first (for publishing)."""
        self.latest(now_s)
        out = list(self._new)
        self._new.clear()
        return out
