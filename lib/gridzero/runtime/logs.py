"""Logging for services: level from settings, a ring of raw frames for error reports,
and a rate-limited handler that sends records to ``<base>/<service>/log``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gridzero.contract import LogRecord

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str, service: str) -> logging.Logger:
    """Configure the root logger once for a service process and return its logger."""
    root = logging.getLogger()
    if not any(getattr(h, "_gridzero", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._gridzero = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # paho and python-can are chatty at DEBUG; our own level governs what matters
    for noisy in ("paho", "can"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # python-can's socketcand client warns on every TCP read that splits a frame
    logging.getLogger("can.interfaces.socketcand").setLevel(logging.ERROR)
    return logging.getLogger(f"gridzero.{service}")


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One raw frame or message, as it was on the link."""

    at_s: float
    link: str
    direction: str
    data: bytes

    def __str__(self) -> str:
        return f"{self.at_s:.3f} {self.link} {self.direction} {self.data.hex(' ')}"


class RawRing:
    """The last N raw frames/messages, attached to error logs so a bad frame has context."""

    def __init__(self, size: int = 32, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: deque[RawEntry] = deque(maxlen=size)
        self._clock = clock
        self._lock = threading.Lock()
        self.listeners: list[Callable[[RawEntry], None]] = []

    def add(self, link: str, direction: str, data: bytes) -> None:
        entry = RawEntry(self._clock(), link, direction, bytes(data))
        with self._lock:
            self._entries.append(entry)
        for listener in self.listeners:
            listener(entry)

    def snapshot(self) -> list[RawEntry]:
        with self._lock:
            return list(self._entries)

    def dump(self) -> str:
        """The ring as text lines, oldest first (for a log record)."""
        return "\n".join(f"  {e}" for e in self.snapshot()) or "  (no raw frames yet)"


def log_with_ring(logger: logging.Logger, ring: RawRing, message: str, *args: object) -> None:
    """Log an error together with the frames that led to it."""
    logger.error("%s\nlast raw frames:\n%s", message % args if args else message, ring.dump())


class MqttLogHandler(logging.Handler):
    """Hands records to a publish function, at most ``rate_per_s`` a second.

    Dropped records are counted and reported in the next record that passes, so
    a flood of errors cannot saturate the bus.
    """

    def __init__(
        self,
        publish: Callable[[LogRecord], None],
        level: str,
        rate_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(level)
        self._publish = publish
        self._interval = 1.0 / rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._tokens = self._burst
        self._last = clock()
        self._clock = clock
        self._wall = wall
        self.dropped = 0
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):
            return  # a record raised while publishing a record: never recurse
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens < 1.0:
            self.dropped += 1
            return
        self._tokens -= 1.0
        message = record.getMessage()
        if self.dropped:
            message = f"{message} [{self.dropped} earlier record(s) dropped by rate limit]"
            self.dropped = 0
        level = record.levelname if record.levelname in _LEVELS else "INFO"
        self._local.busy = True
        try:
            self._publish(
                LogRecord(ts=self._wall(), level=level, logger=record.name, message=message[:2000])
            )
        finally:
            self._local.busy = False


_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
