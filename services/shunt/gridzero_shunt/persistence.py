"""The coulomb counter in the state file: restored at start, saved on every change.

The energy totals published are those already on disk: after a crash the restored counters
are never below what Home Assistant saw (a decrease of a ``total_increasing`` sensor reads as
a meter reset, and the whole total would be counted again).
"""

from __future__ import annotations

import logging

from gridzero.runtime.store import Store
from gridzero_shunt.settings import STORE_KEY
from gridzero_shunt.soc import CoulombCounter, SocSettings

Totals = tuple[float, float, float, float]


def totals(counter: CoulombCounter) -> Totals:
    """Ah in, Ah out, kWh in, kWh out of the counter now."""
    soc = counter.reading()
    return soc.ah_in, soc.ah_out, soc.wh_in / 1000.0, soc.wh_out / 1000.0


class CounterStore:
    """Keeps the counter in the runtime's store; ``saved`` are the totals on disk."""

    def __init__(self, store: Store, log: logging.Logger, flush_s: float) -> None:
        self.store = store
        self.log = log
        self.flush_s = flush_s
        self.next_write_s = 0.0
        self.saved: Totals = (0.0, 0.0, 0.0, 0.0)

    def restore(self, soc_settings: SocSettings) -> CoulombCounter:
        """The stored counter, or a fresh one (logged) if none or unusable."""
        counter = self._restore(soc_settings)
        self.saved = totals(counter)
        return counter

    def _restore(self, soc_settings: SocSettings) -> CoulombCounter:
        stored = self.store.get(STORE_KEY)
        if stored is None:
            return CoulombCounter(soc_settings)
        try:
            if not isinstance(stored, dict):
                raise ValueError(f"stored counter is a {type(stored).__name__}, not an object")
            counter = CoulombCounter.from_dict(stored, soc_settings)
        except ValueError as exc:
            self.log.error("stored SoC/energy counters unusable, starting afresh: %s", exc)
            return CoulombCounter(soc_settings)
        self.log.info("restored counters: %s", counter.reading())
        return counter

    def save(self, counter: CoulombCounter) -> None:
        """Into the store (written by the runtime, debounced)."""
        self.store.set(STORE_KEY, counter.to_dict())

    def write_if_due(self, counter: CoulombCounter, now_s: float) -> None:
        """Write the store now (at the runtime's own flush rate) and publish what is written."""
        if now_s < self.next_write_s:
            return
        self.next_write_s = now_s + self.flush_s
        try:
            self.store.flush()
        except OSError as exc:
            self.log.error("could not save the counters to %s: %s", self.store.path, exc)
            return
        self.saved = totals(counter)
