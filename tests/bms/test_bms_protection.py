"""Protection: trip delays, release hysteresis, ramps, tapers, missing data. Time is explicit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gridzero.services.bms.pack import Pack
from gridzero.services.bms.protection import Limits, Protection, ProtectionSettings

from .bms_helpers import feed, feed_all, small_pack

MAX_A = 30.0


def _run(
    pack: Pack,
    prot: Protection,
    t_from: float,
    t_to: float,
    mv: int = 3700,
    overrides: dict[tuple[int, int, int], int] | None = None,
    temps_c: tuple[float | None, ...] = (20.0, 21.0),
    step_s: float = 0.1,
) -> Limits:
    """Frames every 0.5 s and protection every ``step_s`` from t_from to t_to inclusive."""
    limits = None
    ticks = round((t_to - t_from) / step_s)
    for i in range(ticks + 1):
        now = t_from + i * step_s
        if i % round(0.5 / step_s) == 0:
            feed_all(pack, now, mv, overrides, temps_c)
        limits = prot.update(pack.snapshot(now), now)
    assert limits is not None
    return limits


def _codes(limits: Limits) -> set[str]:
    return {a.code for a in limits.alarms}


def _ready(**settings: object) -> tuple[Pack, Protection, Limits]:
    """A pack at 3.7 V for 10 s; the cell-delta alarm is out of the way unless asked for."""
    if "cell_delta_trip_s" not in settings:
        settings = {"cell_delta_alarm_v": 1.0, "cell_delta_release_v": 0.9, **settings}
    pack = small_pack()
    prot = Protection(ProtectionSettings.model_validate(settings))
    limits = _run(pack, prot, 0.0, 10.0)
    return pack, prot, limits


def test_no_data_means_no_current() -> None:
    prot = Protection(ProtectionSettings())
    limits = prot.update(small_pack().snapshot(0.0), 0.0)
    assert limits.charge_current_a == limits.discharge_current_a == 0.0
    assert not limits.charge_allowed
    assert not limits.discharge_allowed
    assert "module_missing" in _codes(limits)
    assert "no module reports" in limits.alarms[0].message


def test_healthy_pack_ramps_up_to_the_maxima() -> None:
    pack = small_pack()
    prot = Protection(ProtectionSettings(ramp_a_per_s=5.0))
    first = _run(pack, prot, 0.0, 0.0)
    assert first.charge_current_a == 0.0
    after_2s = _run(pack, prot, 0.1, 2.0)
    assert after_2s.charge_current_a == pytest.approx(10.0)
    assert after_2s.charge_reason == "ramping up"
    done = _run(pack, prot, 2.1, 7.0)
    assert done.charge_current_a == done.discharge_current_a == MAX_A
    assert done.alarms == ()
    assert done.charge_voltage_v == pytest.approx(4.10 * 12)


def test_over_voltage_trips_within_one_second_and_releases_after_hysteresis() -> None:
    pack, prot, limits = _ready()
    assert limits.charge_current_a == MAX_A
    over = {(0, 2, 7): 4250}
    # The frame arrives at t=10.5; the trip delay is 0.5 s.
    feed_all(pack, 10.5, 3700, over)
    assert prot.update(pack.snapshot(10.5), 10.5).charge_current_a == 0.0  # full latch at once
    tripped = prot.update(pack.snapshot(11.0), 11.0)
    assert "over_voltage" in _codes(tripped)
    assert tripped.charge_current_a == 0.0
    assert tripped.discharge_current_a == MAX_A  # discharging an over-voltage cell is fine
    alarm = next(a for a in tripped.alarms if a.code == "over_voltage")
    assert "bus 0 module 2 cell 7 at 4.250 V > 4.200 V" in alarm.message
    assert alarm.since_s == 11.0
    # Back to 4.10 V: not past the 4.05 V release threshold, the alarm holds.
    held = _run(pack, prot, 11.0, 20.0, 3700, {(0, 2, 7): 4100})
    assert "over_voltage" in _codes(held)
    # Below the release threshold for release_delay_s (2 s): released, then charge-full holds
    # until below 4.10 - 0.20 V.
    cleared = _run(pack, prot, 20.1, 23.0, 3700, {(0, 2, 7): 4000})
    assert "over_voltage" not in _codes(cleared)
    assert cleared.charge_current_a == 0.0
    assert cleared.charge_reason.startswith("full")
    back = _run(pack, prot, 23.1, 25.5, 3700, {(0, 2, 7): 3850})
    assert 0.0 < back.charge_current_a < MAX_A  # ramping back, not a jump
    assert back.charge_reason == "ramping up"


def test_over_voltage_glitch_shorter_than_trip_delay_does_not_alarm() -> None:
    pack, prot, _ = _ready(over_voltage_trip_s=0.5)
    feed_all(pack, 10.1, 3700, {(0, 1, 1): 4250})
    prot.update(pack.snapshot(10.1), 10.1)
    feed_all(pack, 10.3, 3700)
    limits = prot.update(pack.snapshot(10.3), 10.3)
    limits = prot.update(pack.snapshot(10.7), 10.7)
    assert "over_voltage" not in _codes(limits)


def test_under_voltage_trips_after_its_delay_and_stops_discharge_only() -> None:
    pack, prot, _ = _ready(under_voltage_trip_s=5.0)
    limits = _run(pack, prot, 10.0, 14.5, 3700, {(0, 1, 3): 2950})
    assert "under_voltage" not in _codes(limits)
    assert limits.discharge_current_a == 0.0  # below the 3.2 V cut-off already
    limits = _run(pack, prot, 14.6, 15.5, 3700, {(0, 1, 3): 2950})
    assert "under_voltage" in _codes(limits)
    assert limits.charge_current_a == MAX_A


def test_discharge_taper_and_empty_latch() -> None:
    pack, prot, _ = _ready()
    tapered = _run(pack, prot, 10.0, 11.0, 3700, {(0, 1, 1): 3350})
    assert tapered.discharge_current_a == pytest.approx(MAX_A * 0.5)
    assert tapered.discharge_reason.startswith("taper: lowest cell bus 0 module 1 cell 1")
    empty = _run(pack, prot, 11.1, 12.0, 3700, {(0, 1, 1): 3200})
    assert empty.discharge_current_a == 0.0
    # 3.25 V: above the cut-off but not past cut-off + 0.10 V: stays at zero.
    still = _run(pack, prot, 12.1, 20.0, 3700, {(0, 1, 1): 3250})
    assert still.discharge_current_a == 0.0
    assert still.discharge_reason.startswith("empty")
    # 3.35 V for the release delay: comes back, ramping towards the taper value.
    back = _run(pack, prot, 20.1, 30.0, 3700, {(0, 1, 1): 3350})
    assert back.discharge_current_a == pytest.approx(MAX_A * 0.5)


def test_charge_taper_to_end_current() -> None:
    pack, prot, _ = _ready()
    limits = _run(pack, prot, 10.0, 11.0, 3700, {(0, 1, 1): 4000})
    # 0.1 V below the 4.10 V end over a 0.2 V taper: 5 A + (30 - 5) A * 0.5.
    assert limits.charge_current_a == pytest.approx(17.5)


def test_reductions_apply_at_once() -> None:
    pack, prot, _ = _ready()
    feed_all(pack, 10.5, 3700, {(0, 1, 1): 4050})
    limits = prot.update(pack.snapshot(10.5), 10.5)
    assert limits.charge_current_a == pytest.approx(5.0 + 25.0 * 0.25)


def test_missing_module_zeroes_both_limits_at_once() -> None:
    pack, prot, limits = _ready()
    assert limits.discharge_current_a == MAX_A
    feed_all(pack, 12.0)
    pack.forget_bus(0)
    limits = prot.update(pack.snapshot(12.0), 12.0)
    assert limits.charge_current_a == limits.discharge_current_a == 0.0
    _run(pack, prot, 12.1, 20.0)
    feed(pack, 0, 1, [3700] * 12, 20.5)
    limits = prot.update(pack.snapshot(23.1), 23.1)  # module 2 silent since t=20.0
    assert limits.charge_current_a == limits.discharge_current_a == 0.0
    assert "module_missing" in _codes(limits)
    assert limits.alarms[0].message == "missing: bus 0 module 2"


def test_wrong_cell_count_trips_after_fault_delay() -> None:
    pack, prot, _ = _ready(fault_trip_s=1.0)
    limits = _run(pack, prot, 10.0, 10.5, 3700, {(0, 2, 12): 5000})
    assert "cell_count" not in _codes(limits)
    limits = _run(pack, prot, 10.6, 11.5, 3700, {(0, 2, 12): 5000})
    assert "cell_count" in _codes(limits)
    assert limits.charge_current_a == limits.discharge_current_a == 0.0
    assert "23 valid cells, expected 24" in next(
        a.message for a in limits.alarms if a.code == "cell_count"
    )


def test_over_temperature_and_hot_derate() -> None:
    pack, prot, _ = _ready()
    warm = _run(pack, prot, 10.0, 11.0, temps_c=(52.5, 20.0))
    assert warm.discharge_current_a == pytest.approx(MAX_A * 0.5)
    assert warm.charge_current_a == MAX_A
    hot = _run(pack, prot, 11.1, 14.0, temps_c=(66.0, 20.0))
    assert "over_temperature" in _codes(hot)
    assert hot.charge_current_a == hot.discharge_current_a == 0.0
    cooling = _run(pack, prot, 14.1, 20.0, temps_c=(62.0, 20.0))
    assert "over_temperature" in _codes(cooling)  # not below the 60 °C release yet


def test_cold_charge_derate_and_under_temperature() -> None:
    pack, prot, _ = _ready()
    cool = _run(pack, prot, 10.0, 11.0, temps_c=(-5.0, 20.0))
    assert cool.charge_current_a == pytest.approx(MAX_A * 0.5)
    cold = _run(pack, prot, 11.1, 14.0, temps_c=(-12.0, 20.0))
    assert "under_temperature" in _codes(cold)
    assert cold.charge_current_a == 0.0
    assert cold.discharge_current_a == MAX_A


def test_module_without_temperature_is_unsafe() -> None:
    pack, prot, _ = _ready(fault_trip_s=1.0)
    limits = _run(pack, prot, 10.0, 12.0, temps_c=(None, None))
    assert "temperature_missing" in _codes(limits)
    assert limits.charge_current_a == limits.discharge_current_a == 0.0


def test_cell_delta_alarm() -> None:
    pack, prot, _ = _ready(cell_delta_trip_s=5.0)
    limits = _run(pack, prot, 10.0, 16.0, 3700, {(0, 1, 2): 3450})
    assert "cell_delta" in _codes(limits)
    assert limits.charge_current_a == limits.discharge_current_a == 0.0


def test_settings_name_the_bad_value_and_the_limit() -> None:
    with pytest.raises(ValidationError) as info:
        ProtectionSettings(over_voltage_release_v=4.25, over_voltage_v=4.2)
    assert "over_voltage_release_v = 4.25 must be < over_voltage_v = 4.2" in str(info.value)
