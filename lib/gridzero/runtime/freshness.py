"""Whether a message from another process may be trusted as fresh: one rule for every consumer.

No other host's clock decides freshness. A message counts from when it *arrived here* (our
own monotonic clock), never from the time stamp its publisher wrote:

- A **retained** message is history the broker kept, possibly from a publisher that died
  long ago: it is never fresh (the next live message is).
- A message stamped more than ``FUTURE_TOLERANCE_S`` ahead of our wall clock comes from a
  host whose clock is wrong (or from a forger): it is refused. Our own clock being wrong
  also ends here, on the safe side: the consumer stops, and says why.
- A message stamped in the past is *not* refused for its stamp: a publisher whose clock is
  10 s behind would otherwise be a silent, permanent outage.
- A publisher that numbers its messages (``boot``, ``seq``) must count up: a repeated or older
  number from the same boot is a replay, a loop in a bridge, or a board that froze and
  repeats itself, and is refused. A new ``boot`` (the publisher restarted) starts a new count,
  and each boot seen lately keeps its own, so a message of an earlier start that was already
  seen is refused too. Whoever holds a publisher's password can still send fresh messages in
  its name: that is what the broker's ACL and passwords are for (docs/security.md).

`Freshness.admit` raises `NotFreshError` (a ValueError, so the service runtime logs it as a
rejected input and the consumer's state does not change) or returns the arrival time that
the consumer then ages with its own clock; `Freshness.take` does the same and keeps the value
with its arrival time (`FreshValue`). Whether a value is still fresh is `is_fresh`, the one
staleness rule every consumer (limits, commands, states, meter readings) uses.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

FUTURE_TOLERANCE_S = 1.0
MAX_BOOTS = 64


def is_fresh(at_s: float, now_s: float, max_age_s: float) -> bool:
    """True while a value that arrived at ``at_s`` (our monotonic clock) is at most
    ``max_age_s`` old at ``now_s``. An arrival after ``now_s`` cannot come from our own
    monotonic clock: distrust it (not fresh)."""
    age = now_s - at_s
    return math.isfinite(age) and 0.0 <= age <= max_age_s


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FreshValue(Generic[T]):
    """A value from another process and when it arrived here (``at_s``, our monotonic clock)."""

    value: T
    at_s: float

    def age(self, now_s: float) -> float:
        """Seconds since it arrived."""
        return now_s - self.at_s

    def fresh(self, now_s: float, max_age_s: float) -> bool:
        """`is_fresh` for this value."""
        return is_fresh(self.at_s, now_s, max_age_s)


@dataclass(frozen=True, slots=True)
class LimitHistory:
    """A current limit's values of the last few seconds, by arrival here (our own clock).

    A device follows a lowered limit over seconds, and what it reports can be that old, so a
    measured current is judged against the highest limit it may still be following: a
    lowered limit must not look like the device disobeying it (a charger over-current trip,
    an inverter DC trip)."""

    points: tuple[tuple[float, float], ...] = ()

    def add(self, now_s: float, limit_a: float, window_s: float) -> LimitHistory:
        """With ``limit_a`` arrived at ``now_s``; values older than ``window_s`` dropped."""
        kept = tuple((t, a) for t, a in self.points if 0.0 <= now_s - t <= window_s)
        return LimitHistory((*kept, (now_s, limit_a)))

    def highest(self) -> float:
        """The highest kept value (0 if none)."""
        return max((a for _t, a in self.points), default=0.0)


class Stamped(Protocol):
    """Anything with a publisher's time stamp ``ts`` (a contract payload)."""

    @property
    def ts(self) -> float: ...


P = TypeVar("P", bound=Stamped)


class NotFreshError(ValueError):
    """A message that must not be used as fresh; the text says which rule refused it."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a consumer needs of a message to judge it: retained flag, stamp, numbering."""

    retained: bool
    ts: float
    boot: str | None = None
    seq: int | None = None


class Freshness:
    """The freshness gate of one stream (one topic from one publisher)."""

    def __init__(self, what: str, *, future_tolerance_s: float = FUTURE_TOLERANCE_S) -> None:
        self.what = what
        self.future_tolerance_s = future_tolerance_s
        self._last_seq: dict[str, int] = {}  # per boot seen lately, least recent first
        self.refused = 0
        self.last_reason = ""

    def admit(self, stamp: Stamp, *, now_s: float, wall_s: float) -> float:
        """The arrival time (``now_s``) if the message may be used, else raise NotFreshError."""
        reason = self._problem(stamp, wall_s)
        if reason:
            self.refused += 1
            self.last_reason = reason
            raise NotFreshError(f"{self.what}: {reason}")
        if stamp.seq is not None and stamp.boot is not None:
            # each boot counts on its own: a stray message under another boot (a second
            # process, a test, a forger) neither resets nor locks out the real publisher
            self._last_seq.pop(stamp.boot, None)
            self._last_seq[stamp.boot] = stamp.seq
            while len(self._last_seq) > MAX_BOOTS:
                del self._last_seq[next(iter(self._last_seq))]
        return now_s

    def take(self, payload: P, *, retained: bool, now_s: float, wall_s: float) -> FreshValue[P]:
        """`admit` a payload (its ``ts`` and, if it has them, ``boot`` and ``seq``) and keep it
        with its arrival time; NotFreshError if it must not be used."""
        stamp = Stamp(
            retained, payload.ts, getattr(payload, "boot", None), getattr(payload, "seq", None)
        )
        return FreshValue(payload, self.admit(stamp, now_s=now_s, wall_s=wall_s))

    def _problem(self, stamp: Stamp, wall_s: float) -> str:
        if stamp.retained:
            return "retained message (kept by the broker, maybe from a dead publisher); waiting for a live one"
        ahead_s = stamp.ts - wall_s
        if not math.isfinite(ahead_s) or ahead_s > self.future_tolerance_s:
            return (
                f"stamped {ahead_s:.1f} s ahead of this host's clock (more than "
                f"{self.future_tolerance_s:g} s): a clock is wrong; not trusted"
            )
        if stamp.boot is None or stamp.seq is None:
            return ""
        last = self._last_seq.get(stamp.boot)
        if last is not None and stamp.seq <= last:
            return (
                f"sequence {stamp.seq} is not after {last} (boot {stamp.boot}): "
                "a repeated, replayed or reordered message"
            )
        return ""


class Sequencer:
    """A publisher's numbering: a random boot id per process start and a counter."""

    def __init__(self, boot: str | None = None) -> None:
        self.boot = boot or secrets.token_hex(4)
        self._seq = 0

    def next(self) -> int:
        self._seq += 1
        return self._seq
