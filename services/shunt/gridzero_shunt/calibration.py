"""The shunt's zero offset: kept in the state file, measured by ``calibrate_zero`` only.

``ZeroOffset`` restores and saves the offset (and removes the runtime settings of older
versions, services/shunt/README.md "Upgrading a state file"); ``CalibrationRun`` collects the samples
of one ``calibrate_zero`` run and judges them (``current.zero_offset``).
"""

from __future__ import annotations

import logging

from gridzero.runtime.store import Store
from gridzero_shunt.current import (
    MIN_CALIBRATION_SAMPLES,
    CalibrationError,
    ZeroCalibration,
    zero_offset,
)
from gridzero_shunt.settings import (
    FORMER_RUNTIME_SETTINGS,
    RUNTIME_SETTINGS_KEY,
    ZERO_OFFSET_KEY,
    ShuntSettings,
)


class ZeroOffset:
    """The zero offset in the state file, with the ADC range it was measured at."""

    def __init__(self, settings: ShuntSettings, store: Store, log: logging.Logger) -> None:
        self.settings = settings
        self.store = store
        self.log = log

    def restore(self) -> float:
        """The saved offset if plausible, else 0; older versions' runtime settings removed."""
        return self._restore(self._drop_former_runtime_settings())

    def save(self, offset_counts: float) -> None:
        self.store.set(
            ZERO_OFFSET_KEY, {"offset_counts": offset_counts, "fsr_v": self.settings.fsr_v}
        )

    def _drop_former_runtime_settings(self) -> object:
        """Remove the saved values of former runtime settings; return a saved offset.

        A saved ``invert`` or ``gain`` is ignored (logged; an error if it differs from the
        start-up value in force): it may have been set by anyone with Home Assistant access,
        so it is not migrated. The operator sets the start-up setting if it was right."""
        saved = self.store.get(RUNTIME_SETTINGS_KEY)
        if not isinstance(saved, dict) or not any(n in saved for n in FORMER_RUNTIME_SETTINGS):
            return None
        kept = dict(saved)
        for name in ("invert", "gain"):
            if name not in kept:
                continue
            value, in_force = kept.pop(name), getattr(self.settings, name)
            log = self.log.info if value == in_force else self.log.error
            log(
                "saved runtime setting %s=%r ignored: %s is a start-up setting now"
                " (GRIDZERO_%s or the settings file), in force: %r",
                name,
                value,
                name,
                name.upper(),
                in_force,
            )
        offset = kept.pop("offset_counts", None)
        self.store.set(RUNTIME_SETTINGS_KEY, kept)
        return offset

    def _restore(self, former: object) -> float:
        """The zero offset saved by calibrate_zero (or a former runtime value), if plausible."""
        stored = self.store.get(ZERO_OFFSET_KEY)
        fsr_v = self.settings.fsr_v
        if isinstance(stored, dict):
            value, what = stored.get("offset_counts"), "saved zero offset"
            if stored.get("fsr_v") != fsr_v:
                self.log.error(
                    "%s %r counts was measured at a %r V range, not %g V: ignored,"
                    " run calibrate_zero",
                    what,
                    value,
                    stored.get("fsr_v"),
                    fsr_v,
                )
                return 0.0
        elif former is not None:
            value, what = former, "saved runtime offset_counts"
        else:
            return 0.0
        limit = self.settings.max_offset_counts
        if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > limit:
            self.log.error(
                "%s %r is not a number within +-%g counts (max_offset_uv %g uV): ignored,"
                " using 0; run calibrate_zero",
                what,
                value,
                limit,
                self.settings.max_offset_uv,
            )
            return 0.0
        if what != "saved zero offset":
            self.log.info("%s %r kept as the zero offset", what, value)
            self.save(float(value))
        return float(value)


class CalibrationRun:
    """One ``calibrate_zero`` run: collect samples, then judge them."""

    def __init__(self, settings: ShuntSettings) -> None:
        self.settings = settings
        self.samples: list[int] | None = None
        self.topic = ""

    @property
    def running(self) -> bool:
        return self.samples is not None

    @property
    def wanted(self) -> int:
        """Samples to average: 4 s of sampling, at least MIN_CALIBRATION_SAMPLES."""
        return max(MIN_CALIBRATION_SAMPLES, round(4 * self.settings.sample_rate_hz))

    def start(self, topic: str) -> None:
        if self.samples is not None:
            raise ValueError("calibrate_zero: a calibration is already running")
        self.samples = []
        self.topic = topic

    def add(self, counts: int) -> ZeroCalibration | CalibrationError | None:
        """Take a sample; at the last one, the result (or why it was refused)."""
        if self.samples is None:
            return None
        self.samples.append(counts)
        if len(self.samples) < self.wanted:
            return None
        samples, self.samples = self.samples, None
        try:
            # an offset beyond what the hardware can have is current flowing, not an offset
            return zero_offset(samples, max_offset_counts=self.settings.max_offset_counts)
        except CalibrationError as exc:
            return exc
