"""Battery current from ADC counts (pure): calibration, sign, dead band, averaging.

I[A] = (counts - offset_counts) x gain x LSB / R_shunt, sign flipped by ``invert``
(TI SBAS444; 75 mV / 100 A = 0.75 mΩ). Positive current = charging. With the default
+-0.256 V range and a 100 A / 75 mV shunt, one count is 7.8125 uV = 1/96 A.

A saturated ADC (a full-scale code) means the true current is unknown but at least full
scale (341 A with the defaults, far above any CCL or DCL): the SoC counter gets no number,
and the published current is that bound, so the over-current trips fire.

The bms and the charger trip on this measured current, so every correction is bounded to
what real hardware needs (services/shunt/README.md "Calibration bounds"): a gain within 0.95..1.05, a
zero offset of at most 375 uV at the ADC input (48 counts = 0.5 A with the defaults) and a
dead band of at most 0.5 A. A larger correction would hide an over-current.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from gridzero.errors import GridzeroError
from gridzero_shunt.codec import (
    COUNTS_MAX,
    COUNTS_MIN,
    FSR_CHOICES_V,
    is_saturated,
    lsb_v,
)

MIN_CALIBRATION_SAMPLES = 20  # Tom-evnut/BMWI3BMS calcur() averages ~20 readings at rest

# A class-0.5 shunt (+-0.5 %) and the ADS1115's gain error (0.15 % max) need far less than
# +-5 %; a shunt off by more is a different shunt: set shunt_rated_a / shunt_rated_mv.
GAIN_MIN = 0.95
GAIN_MAX = 1.05
# ADS1115 offset (+-3 LSB max at +-2.048 V = 187.5 uV, plus 1 LSB long-term drift, 0.005
# LSB/degC over 85 degC and 1 LSB/V of supply change: ~340 uV) plus a few tens of uV of
# thermal EMF at the shunt's terminals: at most 375 uV, 48 counts at +-0.256 V (0.5 A on a
# 100 A / 75 mV shunt). Anything larger is current flowing or a wiring fault, not an offset.
MAX_OFFSET_V = 375e-6
# Dead band: dbus-serialbattery and Tom-evnut/BMWI3BMS zero up to 0.5 A. More would hide a real current (with a
# limit of 0 A, e.g. charging below 0 degC, every charge current is an over-current).
DEAD_BAND_MAX_A = 0.5


class CalibrationError(GridzeroError):
    """A calibration could not be made (current not at rest, saturated input, bad reference)."""


def _finite(place: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{place}: {value!r} is not a finite number")
    return float(value)


@dataclass(frozen=True, slots=True)
class CurrentSettings:
    """Shunt, ADC range and calibration. Defaults: 100 A / 75 mV shunt at +-0.256 V."""

    shunt_rated_a: float = 100.0
    shunt_rated_mv: float = 75.0
    fsr_v: float = 0.256
    offset_counts: float = 0.0
    gain: float = 1.0
    # False: AIN0 on the battery-negative shunt terminal, so charging gives positive counts.
    invert: bool = False
    dead_band_a: float = 0.05

    def __post_init__(self) -> None:
        if _finite("shunt rated current", self.shunt_rated_a) <= 0:
            raise ValueError(f"shunt rated current {self.shunt_rated_a!r} A must be > 0")
        if _finite("shunt rated voltage", self.shunt_rated_mv) <= 0:
            raise ValueError(f"shunt rated voltage {self.shunt_rated_mv!r} mV must be > 0")
        if not any(abs(self.fsr_v - v) < 1e-9 for v in FSR_CHOICES_V):
            allowed = ", ".join(f"{v:g}" for v in FSR_CHOICES_V)
            raise ValueError(f"ADC full-scale range {self.fsr_v!r} V is not one of {allowed} V")
        limit = max_offset_counts(self.fsr_v)
        if abs(_finite("offset", self.offset_counts)) > limit:
            raise ValueError(
                f"current offset {self.offset_counts!r} counts is outside +-{limit:g} counts"
                f" (+-{MAX_OFFSET_V * 1e6:g} uV at the ADC input)"
            )
        if not GAIN_MIN <= _finite("gain", self.gain) <= GAIN_MAX:
            raise ValueError(f"current gain {self.gain!r} is outside {GAIN_MIN}..{GAIN_MAX}")
        if not 0 <= _finite("dead band", self.dead_band_a) <= DEAD_BAND_MAX_A:
            raise ValueError(
                f"current dead band {self.dead_band_a!r} A is outside 0..{DEAD_BAND_MAX_A} A"
            )

    @property
    def shunt_ohm(self) -> float:
        return self.shunt_rated_mv / 1000.0 / self.shunt_rated_a

    @property
    def amps_per_count(self) -> float:
        """Uncalibrated amperes per ADC count (1/96 A with the defaults)."""
        return lsb_v(self.fsr_v) / self.shunt_ohm

    @property
    def full_scale_a(self) -> float:
        """The largest current the ADC range can show before it clips."""
        return COUNTS_MAX * self.amps_per_count * self.gain


def max_offset_counts(fsr_v: float, max_offset_v: float = MAX_OFFSET_V) -> float:
    """The largest zero offset in counts that real hardware can have at this ADC range."""
    return max_offset_v / lsb_v(fsr_v)


def current_from_counts(counts: float, settings: CurrentSettings) -> float:
    """Calibrated current in A (positive = charging), without the dead band."""
    sign = -1.0 if settings.invert else 1.0
    return sign * (counts - settings.offset_counts) * settings.gain * settings.amps_per_count


def apply_dead_band(current_a: float, dead_band_a: float) -> float:
    """Zero for currents inside +-dead band (noise and offset drift are not integrated)."""
    return 0.0 if abs(current_a) < dead_band_a else current_a


Status = Literal["ok", "saturated", "no_data"]


@dataclass(frozen=True, slots=True)
class CurrentReading:
    """The mean current over one averaging block, or why there is none."""

    current_a: float | None
    status: Status
    samples: int
    errors: int
    saturated: int
    mean_counts: float | None
    # A saturated block: full scale in the direction of its saturated samples; the true
    # current is at least that.
    at_least_a: float | None = None

    @property
    def available(self) -> bool:
        """A current the SoC counter may integrate."""
        return self.current_a is not None

    @property
    def published_a(self) -> float | None:
        """What consumers see: the current, or the bound of a saturated block (a reading at
        the end of the scale is an extreme current, not a missing one)."""
        return self.at_least_a if self.current_a is None else self.current_a


class CurrentAverager:
    """Averages the samples of one block (e.g. 8 samples over 1 s).

    Failed reads are left out; if fewer than ``min_good_fraction`` of the expected
    samples are good the block has no value. One saturated sample invalidates the
    block: its mean would be wrong.
    """

    def __init__(self, settings: CurrentSettings, min_good_fraction: float = 0.5) -> None:
        if not 0 < min_good_fraction <= 1:
            raise ValueError(f"min_good_fraction {min_good_fraction!r} is outside (0, 1]")
        self.settings = settings
        self.min_good_fraction = min_good_fraction
        self._sum = 0
        self._good = 0
        self._errors = 0
        self._saturated = 0
        self._saturated_high = 0  # of those, at the positive end

    def add(self, counts: int | None) -> None:
        """One sample: signed counts, or None for a failed read."""
        if counts is None:
            self._errors += 1
        elif is_saturated(counts):
            self._saturated += 1
            self._saturated_high += counts > 0
        else:
            self._sum += counts
            self._good += 1

    def take(self, expected_samples: int = 1) -> CurrentReading:
        """The block's reading; starts a new block."""
        good, errors, saturated, total = self._good, self._errors, self._saturated, self._sum
        high = self._saturated_high
        self._sum = self._good = self._errors = self._saturated = self._saturated_high = 0
        needed = max(1, math.ceil(expected_samples * self.min_good_fraction))
        if saturated:
            # Saturated both ways in one block is a broken input: either bound trips an
            # alarm, and any alarm stops both sides; the majority picks the direction.
            end = COUNTS_MAX if 2 * high >= saturated else COUNTS_MIN
            bound = current_from_counts(end, self.settings)
            return CurrentReading(None, "saturated", good, errors, saturated, None, bound)
        if good < needed:
            return CurrentReading(None, "no_data", good, errors, saturated, None)
        mean = total / good
        current = apply_dead_band(
            current_from_counts(mean, self.settings), self.settings.dead_band_a
        )
        return CurrentReading(current, "ok", good, errors, saturated, mean)


@dataclass(frozen=True, slots=True)
class ZeroCalibration:
    """The measured zero offset."""

    offset_counts: float
    samples: int
    stdev_counts: float


def zero_offset(
    samples: Iterable[int],
    *,
    min_samples: int = MIN_CALIBRATION_SAMPLES,
    max_offset_counts: float = 48.0,
    max_stdev_counts: float = 10.0,
) -> ZeroCalibration:
    """The zero offset: mean of N >= 20 readings with no current flowing (Tom-evnut/BMWI3BMS calcur()).

    Refuses when the readings show current (|mean| > ``max_offset_counts``,
    default 48 counts = 0.5 A) or a moving current (stdev > ``max_stdev_counts``),
    or when any reading is saturated.
    """
    values = list(samples)
    if min_samples < MIN_CALIBRATION_SAMPLES:
        raise ValueError(
            f"calibration needs >= {MIN_CALIBRATION_SAMPLES} samples, not {min_samples}"
        )
    if len(values) < min_samples:
        raise CalibrationError(f"zero calibration: {len(values)} good samples, need {min_samples}")
    if any(is_saturated(v) for v in values):
        raise CalibrationError("zero calibration: the ADC is saturated, a large current flows")
    mean = sum(values) / len(values)
    stdev = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if abs(mean) > max_offset_counts:
        raise CalibrationError(
            f"zero calibration: mean {mean:.1f} counts exceeds +-{max_offset_counts:g} counts;"
            " current is flowing - stop the charger and the inverters first"
        )
    if stdev > max_stdev_counts:
        raise CalibrationError(
            f"zero calibration: readings vary by {stdev:.1f} counts (limit {max_stdev_counts:g});"
            " current is changing - stop the charger and the inverters first"
        )
    return ZeroCalibration(offset_counts=mean, samples=len(values), stdev_counts=stdev)


def gain_from_reference(measured_a: float, reference_a: float, current_gain: float = 1.0) -> float:
    """A new gain so that ``measured_a`` (read with ``current_gain``) would read ``reference_a``.

    The reference is a clamp meter or the charger's own current; use a large
    current (>= 5 A) so that the offset does not dominate.
    """
    measured = _finite("measured current", measured_a)
    reference = _finite("reference current", reference_a)
    if abs(measured) < 5.0 or abs(reference) < 5.0:
        raise CalibrationError(
            f"gain calibration: measured {measured:g} A / reference {reference:g} A;"
            " both must be at least 5 A"
        )
    if (measured > 0) != (reference > 0):
        raise CalibrationError(
            f"gain calibration: measured {measured:g} A and reference {reference:g} A have"
            " opposite signs; fix the sign setting first"
        )
    gain = current_gain * reference / measured
    if not GAIN_MIN <= gain <= GAIN_MAX:
        raise CalibrationError(
            f"gain calibration: gain {gain:.3f} is outside {GAIN_MIN}..{GAIN_MAX};"
            " check the shunt rating settings (shunt_rated_a, shunt_rated_mv)"
        )
    return gain
