"""Model -> driver -> averager -> coulomb counter, in simulated time."""

from __future__ import annotations

import errno

import pytest

from gridzero_shunt.ads1115 import Ads1115, Ads1115Error, Ads1115Settings
from gridzero_shunt.ads1115_model import Ads1115Model
from gridzero_shunt.current import CurrentAverager, CurrentSettings, zero_offset
from gridzero_shunt.soc import CoulombCounter, SocSettings


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.mark.parametrize("single", [True, False])
def test_ten_minutes_at_minus_50_amps_with_errors_and_saturation(single: bool) -> None:
    clock = Clock()
    model = Ads1115Model(clock=clock)
    adc = Ads1115(model, Ads1115Settings(single_shot=single, data_rate_sps=8), sleep=clock.sleep)
    adc.start()
    shunt = CurrentSettings()
    # Zero calibration at rest, with a 3-count offset in the "hardware".
    model.input_v = 3 * shunt.amps_per_count * shunt.shunt_ohm
    shunt = CurrentSettings(
        offset_counts=zero_offset(adc.read_counts() for _ in range(24)).offset_counts
    )
    averager = CurrentAverager(shunt)
    counter = CoulombCounter(SocSettings(capacity_ah=200.0))
    counter.set_soc(50.0)
    minus_50_a_v = (3 - 4800) * shunt.amps_per_count * shunt.shunt_ohm  # offset + -50 A
    model.input_v = minus_50_a_v
    start = clock.now_s
    counter.update(start, 0.0)
    unavailable = 0
    for second in range(1, 601):
        if second == 300:
            model.fail_next(3, errno.EAGAIN)
        if second == 400:
            model.input_v = 0.3  # a short that saturates the ADC
        if second == 401:
            model.input_v = minus_50_a_v
        while clock.now_s < start + second - 0.125:
            tick = clock.now_s
            try:
                averager.add(adc.read_counts())
            except Ads1115Error:
                averager.add(None)
            clock.now_s = max(clock.now_s, tick + 0.125)
        reading = averager.take(expected_samples=8)
        unavailable += not reading.available
        counter.update(clock.now_s, reading.current_a)
    assert unavailable <= 2  # the saturated second(s); the 3 failed reads are left out
    elapsed_h = (clock.now_s - start) / 3600
    lost_h = unavailable * 1.0 / 3600
    assert counter.ah_out == pytest.approx(50.0 * (elapsed_h - lost_h), rel=0.01)
