"""Counts -> amperes: calibration, sign, dead band, averaging, saturation, zero calibration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero_shunt.current import (
    CalibrationError,
    CurrentAverager,
    CurrentSettings,
    apply_dead_band,
    current_from_counts,
    gain_from_reference,
    zero_offset,
)


def test_one_count_is_one_96th_amp() -> None:
    # 100 A / 75 mV shunt at +-0.256 V (TI SBAS444 LSB table): 7.8125 uV / 0.75 mOhm = 1/96 A; 9600 counts = 100 A.
    s = CurrentSettings()
    assert s.amps_per_count == pytest.approx(1 / 96)
    assert current_from_counts(9600, s) == pytest.approx(100.0)
    assert current_from_counts(-9600, s) == pytest.approx(-100.0)
    assert s.full_scale_a == pytest.approx(32767 / 96)  # ~341 A before the ADC clips


def test_offset_gain_and_sign() -> None:
    s = CurrentSettings(offset_counts=12.0, gain=1.02, invert=True)
    assert current_from_counts(12, s) == 0.0
    assert current_from_counts(9612, s) == pytest.approx(-102.0)


def test_dead_band() -> None:
    assert apply_dead_band(0.049, 0.05) == 0.0
    assert apply_dead_band(-0.049, 0.05) == 0.0
    assert apply_dead_band(0.05, 0.05) == 0.05
    assert apply_dead_band(-3.0, 0.05) == -3.0


def test_averager_mean_and_dead_band() -> None:
    avg = CurrentAverager(CurrentSettings())
    for counts in (9600, 9602, 9598, 9600):
        avg.add(counts)
    reading = avg.take(expected_samples=4)
    assert reading.status == "ok"
    assert reading.current_a == pytest.approx(100.0)
    for counts in (3, 4, 5, 4):  # ~0.04 A: inside the 0.05 A dead band
        avg.add(counts)
    assert avg.take(4).current_a == 0.0


def test_a_saturated_block_is_not_counted_but_reads_at_least_full_scale() -> None:
    # a saturated ADC means the current is at least full scale (341 A, far above any
    # CCL or DCL); it read as no current, so the over-current trips of the bms and the
    # charger never fired. The SoC counter still gets no clipped number.
    avg = CurrentAverager(CurrentSettings())
    for counts in (30000, 32767, 31000, 30000):
        avg.add(counts)
    reading = avg.take(4)
    assert reading.current_a is None
    assert reading.status == "saturated"
    assert not reading.available
    assert reading.at_least_a == pytest.approx(32767 / 96)
    assert reading.published_a == reading.at_least_a
    avg.add(-32768)
    discharging = avg.take(1)
    assert discharging.status == "saturated"
    assert discharging.published_a == pytest.approx(-32768 / 96)
    inverted = CurrentAverager(CurrentSettings(invert=True))
    inverted.add(32767)
    assert inverted.take(1).published_a == pytest.approx(-32767 / 96)


def test_failed_reads_are_left_out_until_too_many() -> None:
    avg = CurrentAverager(CurrentSettings())
    for counts in (960, None, 960, None, 960, 960, None, 960):
        avg.add(counts)
    reading = avg.take(8)
    assert reading.current_a == pytest.approx(10.0)
    assert (reading.samples, reading.errors) == (5, 3)
    for counts in (960, None, None, None, None, None, None, 960):
        avg.add(counts)
    assert avg.take(8).status == "no_data"
    assert avg.take(8).status == "no_data"  # empty block


@settings(max_examples=200)
@given(st.lists(st.one_of(st.none(), st.integers(-32768, 32767)), max_size=20))
def test_averager_never_reports_a_clipped_current(samples: list[int | None]) -> None:
    avg = CurrentAverager(CurrentSettings())
    for s in samples:
        avg.add(s)
    reading = avg.take(len(samples))
    if any(s in (32767, -32768) for s in samples):
        assert reading.current_a is None
        assert reading.published_a is not None
        assert abs(reading.published_a) == pytest.approx(32767 / 96, abs=1.0)
    if reading.current_a is not None:
        assert abs(reading.current_a) < 32767 / 96


def test_zero_calibration_is_the_mean_of_20_or_more() -> None:
    samples = [3, 4, 5, 4] * 8
    cal = zero_offset(samples)
    assert cal.offset_counts == pytest.approx(4.0)
    assert cal.samples == 32
    s = CurrentSettings(offset_counts=cal.offset_counts)
    assert current_from_counts(4, s) == 0.0


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        ([4] * 19, "19 good samples, need 20"),
        ([200] * 30, "current is flowing"),
        ([0, 60] * 15, "current is changing"),
        ([0] * 29 + [32767], "saturated"),
    ],
)
def test_zero_calibration_refuses(samples: list[int], match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        zero_offset(samples)


def test_zero_calibration_needs_at_least_20() -> None:
    with pytest.raises(ValueError, match=">= 20 samples"):
        zero_offset([0] * 30, min_samples=10)


def test_gain_from_reference() -> None:
    assert gain_from_reference(50.0, 51.0) == pytest.approx(1.02)
    assert gain_from_reference(-50.0, -49.0, 1.02) == pytest.approx(1.02 * 0.98)
    with pytest.raises(CalibrationError, match="at least 5 A"):
        gain_from_reference(1.0, 1.0)
    with pytest.raises(CalibrationError, match="opposite signs"):
        gain_from_reference(50.0, -50.0)
    with pytest.raises(CalibrationError, match=r"gain 1\.500 is outside 0\.95\.\.1\.05"):
        gain_from_reference(50.0, 75.0)
    # a 10 % correction was allowed before (0.8..1.25): it is a wrong shunt rating, not a
    # tolerance, and a gain of 0.9 lets 10 % more current through every over-current trip
    with pytest.raises(CalibrationError, match=r"gain 0\.900 is outside 0\.95\.\.1\.05"):
        gain_from_reference(50.0, 45.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"shunt_rated_a": 0.0}, "rated current 0.0 A must be > 0"),
        ({"shunt_rated_mv": -75.0}, "rated voltage -75.0 mV"),
        ({"fsr_v": 0.3}, "full-scale range 0.3 V"),
        ({"gain": 0.0}, "gain 0.0 is outside"),
        ({"gain": float("nan")}, "not a finite number"),
        ({"offset_counts": 5000.0}, "offset 5000.0 counts"),
        ({"dead_band_a": -0.1}, "dead band -0.1 A"),
        # issue 16: bounds that keep the measurement able to see an over-current
        ({"gain": 0.5}, r"gain 0\.5 is outside 0\.95\.\.1\.05"),
        ({"gain": 1.06}, r"gain 1\.06 is outside 0\.95\.\.1\.05"),
        ({"offset_counts": 48.5}, r"offset 48\.5 counts is outside \+-48 counts \(\+-375 uV"),
        ({"offset_counts": -25.0, "fsr_v": 0.512}, r"outside \+-24 counts"),
        ({"dead_band_a": 0.6}, r"dead band 0\.6 A is outside 0\.\.0\.5 A"),
    ],
)
def test_bad_current_settings(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CurrentSettings(**kw)  # type: ignore[arg-type]


def test_the_largest_plausible_corrections_are_accepted() -> None:
    """375 uV of offset is 48 counts at +-0.256 V (0.5 A) and 24 counts at +-0.512 V."""
    s = CurrentSettings(offset_counts=-48.0, gain=0.95, dead_band_a=0.5)
    assert current_from_counts(-48, s) == 0.0
    assert current_from_counts(9552, s) == pytest.approx(95.0)
    assert CurrentSettings(offset_counts=24.0, fsr_v=0.512, gain=1.05).offset_counts == 24.0
