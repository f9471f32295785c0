"""Protection: trip delays, release hysteresis, ramps, tapers, missing data. Time is explicit."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from bms_helpers import feed, feed_all, small_pack
from pydantic import ValidationError

from gridzero_bms.pack import Pack
from gridzero_bms.protection import (
    ALARM_CODES,
    CHECKS,
    DEEP_DISCHARGE,
    Condition,
    Inputs,
    Limits,
    Protection,
    ProtectionSettings,
)

MAX_A = 30.0
PRECHARGE_A = 1.0


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
    assert limits.ccl_a == limits.dcl_a == 0.0
    assert not limits.charge_allowed
    assert not limits.discharge_allowed
    assert "module_missing" in _codes(limits)
    assert "no module reports" in limits.alarms[0].message


def test_healthy_pack_ramps_up_to_the_maxima() -> None:
    pack = small_pack()
    prot = Protection(ProtectionSettings(ramp_a_per_s=5.0))
    first = _run(pack, prot, 0.0, 0.0)
    assert first.ccl_a == 0.0
    after_2s = _run(pack, prot, 0.1, 2.0)
    assert after_2s.ccl_a == pytest.approx(10.0)
    assert after_2s.charge_reason == "ramping up"
    done = _run(pack, prot, 2.1, 7.0)
    assert done.ccl_a == done.dcl_a == MAX_A
    assert done.alarms == ()
    assert done.cvl_v == pytest.approx(4.10 * 12)


def test_over_voltage_trips_within_one_second_and_releases_after_hysteresis() -> None:
    pack, prot, limits = _ready()
    assert limits.ccl_a == MAX_A
    over = {(0, 2, 7): 4250}
    # The frame arrives at t=10.5; the trip delay is 0.5 s.
    feed_all(pack, 10.5, 3700, over)
    assert prot.update(pack.snapshot(10.5), 10.5).ccl_a == 0.0  # full latch at once
    tripped = prot.update(pack.snapshot(11.0), 11.0)
    assert "over_voltage" in _codes(tripped)
    assert tripped.ccl_a == 0.0
    assert tripped.dcl_a == MAX_A  # discharging an over-voltage cell is fine
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
    assert cleared.ccl_a == 0.0
    assert cleared.charge_reason.startswith("full")
    back = _run(pack, prot, 23.1, 25.5, 3700, {(0, 2, 7): 3850})
    assert 0.0 < back.ccl_a < MAX_A  # ramping back, not a jump
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
    assert limits.dcl_a == 0.0  # below the 3.2 V cut-off already
    limits = _run(pack, prot, 14.6, 15.5, 3700, {(0, 1, 3): 2950})
    assert "under_voltage" in _codes(limits)
    assert limits.ccl_a == PRECHARGE_A  # charging goes on, gently


def test_discharge_taper_and_empty_latch() -> None:
    pack, prot, _ = _ready()
    tapered = _run(pack, prot, 10.0, 11.0, 3700, {(0, 1, 1): 3350})
    assert tapered.dcl_a == pytest.approx(MAX_A * 0.5)
    assert tapered.discharge_reason.startswith("taper: lowest cell bus 0 module 1 cell 1")
    empty = _run(pack, prot, 11.1, 12.0, 3700, {(0, 1, 1): 3200})
    assert empty.dcl_a == 0.0
    # 3.25 V: above the cut-off but not past cut-off + 0.10 V: stays at zero.
    still = _run(pack, prot, 12.1, 20.0, 3700, {(0, 1, 1): 3250})
    assert still.dcl_a == 0.0
    assert still.discharge_reason.startswith("empty")
    # 3.35 V for the release delay: comes back, ramping towards the taper value.
    back = _run(pack, prot, 20.1, 30.0, 3700, {(0, 1, 1): 3350})
    assert back.dcl_a == pytest.approx(MAX_A * 0.5)


def test_charge_taper_to_end_current() -> None:
    pack, prot, _ = _ready()
    limits = _run(pack, prot, 10.0, 11.0, 3700, {(0, 1, 1): 4000})
    # 0.1 V below the 4.10 V end over a 0.2 V taper: 5 A + (30 - 5) A * 0.5.
    assert limits.ccl_a == pytest.approx(17.5)


def test_reductions_apply_at_once() -> None:
    pack, prot, _ = _ready()
    feed_all(pack, 10.5, 3700, {(0, 1, 1): 4050})
    limits = prot.update(pack.snapshot(10.5), 10.5)
    assert limits.ccl_a == pytest.approx(5.0 + 25.0 * 0.25)


def test_missing_module_zeroes_both_limits_at_once() -> None:
    pack, prot, limits = _ready()
    assert limits.dcl_a == MAX_A
    feed_all(pack, 12.0)
    pack.forget_bus(0)
    limits = prot.update(pack.snapshot(12.0), 12.0)
    assert limits.ccl_a == limits.dcl_a == 0.0
    _run(pack, prot, 12.1, 20.0)
    feed(pack, 0, 1, [3700] * 12, 20.5)
    limits = prot.update(pack.snapshot(23.1), 23.1)  # module 2 silent since t=20.0
    assert limits.ccl_a == limits.dcl_a == 0.0
    assert "module_missing" in _codes(limits)
    assert limits.alarms[0].message == "missing: bus 0 module 2"


def test_wrong_cell_count_trips_after_fault_delay() -> None:
    pack, prot, _ = _ready(fault_trip_s=1.0)
    limits = _run(pack, prot, 10.0, 10.5, 3700, {(0, 2, 12): 5000})
    assert "cell_count" not in _codes(limits)
    limits = _run(pack, prot, 10.6, 11.5, 3700, {(0, 2, 12): 5000})
    assert "cell_count" in _codes(limits)
    assert limits.ccl_a == limits.dcl_a == 0.0
    assert "23 valid cells, expected 24" in next(
        a.message for a in limits.alarms if a.code == "cell_count"
    )


def test_over_temperature_and_hot_derate() -> None:
    pack, prot, _ = _ready()
    warm = _run(pack, prot, 10.0, 11.0, temps_c=(50.0, 20.0))
    # DCL derates from 40 °C to 0 at 60 °C
    assert warm.dcl_a == pytest.approx(MAX_A * 0.5)
    hot = _run(pack, prot, 11.1, 14.0, temps_c=(61.0, 20.0))
    assert "over_temperature" in _codes(hot)
    assert hot.ccl_a == hot.dcl_a == 0.0
    cooling = _run(pack, prot, 14.1, 20.0, temps_c=(57.0, 20.0))
    assert "over_temperature" in _codes(cooling)  # not below the 55 °C release yet


@pytest.mark.parametrize(
    ("temp_c", "ccl_a"),
    [
        (-5.0, 0.0),  # below 0 °C: no charging at all (was 15 A)
        (0.0, 0.0),
        (5.0, MAX_A * 0.5),  # cold derate from 10 °C down to 0 °C
        (10.0, MAX_A),
        (35.0, MAX_A),
        (40.0, MAX_A * 0.5),  # hot derate from 35 °C up to 45 °C
        (45.0, 0.0),
        (50.0, 0.0),
        (60.0, 0.0),  # was 30 A: only the 65 °C alarm stopped charging
    ],
)
def test_charge_only_between_0_and_45_c_with_derates_at_both_ends(
    temp_c: float, ccl_a: float
) -> None:
    pack, prot, _ = _ready()
    limits = _run(pack, prot, 10.0, 20.0, temps_c=(temp_c, 20.0))
    assert limits.ccl_a == pytest.approx(ccl_a)
    if ccl_a == 0.0:
        assert limits.charge_reason.startswith(("too cold to charge", "too hot to charge", "alarm"))


def test_cold_and_hot_charge_alarms() -> None:
    pack, prot, _ = _ready()
    cold = _run(pack, prot, 10.0, 13.0, temps_c=(-1.0, 20.0))
    assert "under_temperature" in _codes(cold)
    assert cold.ccl_a == 0.0
    assert cold.dcl_a == MAX_A
    assert "too cold to charge: -1.0 °C at bus 0 module 1 < 0.0 °C" in cold.alarms[0].message
    pack, prot, _ = _ready()
    hot = _run(pack, prot, 10.0, 13.0, temps_c=(47.0, 20.0))
    assert "too_hot_to_charge" in _codes(hot)
    assert hot.ccl_a == 0.0
    assert hot.dcl_a > 0.0  # 47 °C: discharging derated, not stopped


@pytest.mark.parametrize(("temp_c", "dcl_a"), [(-25.0, 0.0), (-20.0, MAX_A), (60.0, 0.0)])
def test_discharge_only_between_minus_20_and_60_c(temp_c: float, dcl_a: float) -> None:
    pack, prot, _ = _ready()
    feed_all(pack, 10.5, temps_c=(temp_c, 20.0))
    limits = prot.update(pack.snapshot(10.5), 10.5)  # at once, before any alarm trips
    assert limits.dcl_a == pytest.approx(dcl_a)


def test_module_without_temperature_is_unsafe() -> None:
    pack, prot, _ = _ready(fault_trip_s=1.0)
    limits = _run(pack, prot, 10.0, 12.0, temps_c=(None, None))
    assert "temperature_missing" in _codes(limits)
    assert limits.ccl_a == limits.dcl_a == 0.0


def test_without_require_temperature_one_reading_in_the_pack_is_enough() -> None:
    pack = small_pack()
    prot = Protection(
        ProtectionSettings(
            fault_trip_s=1.0,
            require_temperature=False,
            cell_delta_alarm_v=1.0,
            cell_delta_release_v=0.9,
        )
    )
    for k in range(121):  # module 2 never had a sensor; module 1 reads for the pack
        now = k * 0.1
        if k % 5 == 0:
            feed(pack, 0, 1, [3700] * 12, now, (20.0, 21.0))
            feed(pack, 0, 2, [3700] * 12, now, (None, None))
        limits = prot.update(pack.snapshot(now), now)
    assert "temperature_missing" not in _codes(limits)
    assert limits.ccl_a == MAX_A


def test_without_require_temperature_a_pack_with_no_reading_at_all_is_unsafe() -> None:
    # require_temperature false on a pack with no sensor at all charged at full
    # current whatever its temperature
    pack, prot, _ = _ready(fault_trip_s=1.0, require_temperature=False)
    limits = _run(pack, prot, 10.0, 12.0, temps_c=(None, None))
    assert "temperature_missing" in _codes(limits)
    assert limits.ccl_a == limits.dcl_a == 0.0


def _temps_run(
    pack: Pack, prot: Protection, t_from: float, t_to: float, sensor_2: list[float | None]
) -> list[Limits]:
    """Frames every 0.5 s, sensor 1 at 20 °C and sensor 2 taking ``sensor_2`` in turn."""
    out = []
    for i in range(round((t_to - t_from) / 0.1) + 1):
        now = t_from + i * 0.1
        if i % 5 == 0:
            feed_all(pack, now, temps_c=(20.0, sensor_2[i // 5 % len(sensor_2)]))
        out.append(prot.update(pack.snapshot(now), now))
    return out


def test_a_sensor_that_read_and_then_reads_out_of_range_stops_both_sides() -> None:
    # a sensor read 50 °C, then a code outside the frame's range (0xFD..0xFF just above
    # the DBC's 86 °C: saturated hot, or broken). It was taken as "absent" while sensor 1
    # read 20 °C: no alarm, and flickering 70 °C / out of range never tripped
    # over-temperature (each absent frame restarted its delay).
    for sensor_2, required in (([None], True), ([70.0, None], True), ([None], False)):
        pack, prot, _ = _ready(require_temperature=required)
        history = _temps_run(pack, prot, 10.0, 20.0, sensor_2)
        after_trip = history[15:]  # the first out-of-range frame at 10.0 or 10.5 s
        assert all("temperature_missing" in _codes(lim) for lim in after_trip), sensor_2
        assert all(lim.ccl_a == lim.dcl_a == 0.0 for lim in after_trip)
        alarm = next(a for a in history[-1].alarms if a.code == "temperature_missing")
        assert "bus 0 module 1 sensor 2 read no valid temperature" in alarm.message
        assert "last valid 21.0 °C" in alarm.message or "last valid 70.0 °C" in alarm.message


def test_a_sensor_that_never_read_or_read_once_is_not_fitted() -> None:
    pack = small_pack()
    prot = Protection(ProtectionSettings(cell_delta_alarm_v=1.0, cell_delta_release_v=0.9))
    # sensor 2 absent from the start (not fitted), then one garbage frame, then absent again
    history = _temps_run(pack, prot, 0.0, 20.0, [*[None] * 20, 30.0, *[None] * 30])
    assert all(lim.alarms == () for lim in history[60:])
    assert history[-1].ccl_a == MAX_A


def test_cell_delta_alarm() -> None:
    pack, prot, _ = _ready(cell_delta_trip_s=5.0)
    limits = _run(pack, prot, 10.0, 16.0, 3700, {(0, 1, 2): 3450})
    assert "cell_delta" in _codes(limits)
    assert limits.ccl_a == limits.dcl_a == 0.0


def test_settings_name_the_bad_value_and_the_limit() -> None:
    with pytest.raises(ValidationError) as info:
        ProtectionSettings(over_voltage_release_v=4.2, over_voltage_v=4.15)
    assert "over_voltage_release_v = 4.2 must be < over_voltage_v = 4.15" in str(info.value)


# --------------------------------------------------------------------------- deep discharge


@pytest.mark.parametrize("mv", [2000, 1000])
def test_deeply_discharged_cells_are_never_charged_until_a_person_releases(mv: int) -> None:
    pack = small_pack()
    prot = Protection(ProtectionSettings(ramp_a_per_s=1000.0))
    low = _run(pack, prot, 0.0, 10.0, mv)
    # was: CCL 30 A (DCL 0) with every cell at 2.0 V or 1.0 V
    assert low.ccl_a == low.dcl_a == 0.0
    deep = next(a for a in low.alarms if a.code == "deep_discharge")
    assert deep.blocks_charge
    assert deep.blocks_discharge
    assert f"at {mv / 1000:.3f} V < 2.500 V" in deep.message
    assert "release_deep_discharge" in deep.message
    # the cells read healthy again (a person charged them by other means): still latched
    healthy = _run(pack, prot, 10.1, 60.0)
    assert "deep_discharge" in _codes(healthy)
    assert healthy.ccl_a == healthy.dcl_a == 0.0
    prot.release_deep_discharge(pack.snapshot(60.0), 60.0)
    back = _run(pack, prot, 60.1, 65.0)
    assert back.alarms == ()
    assert back.ccl_a == MAX_A


def test_a_short_dip_below_the_deep_discharge_threshold_does_not_latch() -> None:
    pack, prot, _ = _ready(deep_discharge_trip_s=1.0)
    feed_all(pack, 10.5, 3700, {(0, 1, 1): 2400})
    prot.update(pack.snapshot(10.5), 10.5)
    feed_all(pack, 11.0)
    limits = prot.update(pack.snapshot(11.2), 11.2)
    assert not prot.deep_discharge.latched
    assert "deep_discharge" not in _codes(limits)


def _flicker(
    pack: Pack, prot: Protection, t_from: float, t_to: float, readings: list[int | None]
) -> list[Limits]:
    """Frames every 0.5 s, bus 0 module 1 cell 2 taking ``readings`` in turn; every 0.1 s
    the limits."""
    out = []
    for i in range(round((t_to - t_from) / 0.1) + 1):
        now = t_from + i * 0.1
        if i % 5 == 0:
            feed_all(pack, now)
            cells: list[int | None] = [3700] * 12
            cells[1] = readings[i // 5 % len(readings)]
            feed(pack, 0, 1, cells, now)
        out.append(prot.update(pack.snapshot(now), now))
    return out


def test_a_deep_cell_flickering_to_the_invalid_marker_stops_both_sides() -> None:
    # Every other frame of a cell at 2.40 V carried the invalid marker 0xFFF (a loose sense
    # lead): each valid frame restarted the cell-count delay and each invalid one the
    # deep-discharge delay, so nothing tripped and the cell was pre-charged at 1 A for good.
    pack, prot, _ = _ready()
    history = _flicker(pack, prot, 10.0, 20.0, [2400, None])
    after_trip = history[15:]  # the first invalid frame came at 10.5 s; fault_trip_s is 1 s
    assert all(lim.ccl_a == lim.dcl_a == 0.0 for lim in after_trip)
    assert all("cell_count" in _codes(lim) for lim in after_trip)
    alarm = next(a for a in history[-1].alarms if a.code == "cell_count")
    assert "bus 0 module 1 cell 2 read the invalid marker 0xFFF" in alarm.message
    # a reading at or above cell_valid_max_mv is no cell either, and says so
    pack, prot, _ = _ready()
    history = _flicker(pack, prot, 10.0, 20.0, [2400, 5050])
    assert all("cell_count" in _codes(lim) for lim in history[15:])
    alarm = next(a for a in history[-1].alarms if a.code == "cell_count")
    assert "bus 0 module 1 cell 2 read 5.050 V" in alarm.message
    assert "valid below 5.000 V" in alarm.message


def test_one_invalid_frame_stops_both_sides_briefly_and_latches_nothing() -> None:
    pack, prot, _ = _ready()
    history = _flicker(pack, prot, 10.0, 20.0, [None, *[3700] * 100])
    assert any("cell_count" in _codes(lim) for lim in history)
    assert not prot.deep_discharge.latched
    assert history[-1].alarms == ()


def test_one_garbage_frame_before_a_bleed_does_not_latch_deep_discharge() -> None:
    # The last trusted frame of module 1 before its bleed read cell 2 at 1.000 V (raw 0):
    # the pack keeps the last trusted value while the module bleeds (25 s), so that one
    # frame stood for the cell all that time and latched deep discharge after 1 s.
    pack, prot, _ = _ready()
    cells = [3700] * 12
    cells[1] = 1000
    feed(pack, 0, 1, cells, 10.5)
    limits = prot.update(pack.snapshot(10.5), 10.5)
    for i in range(1, 60):
        now = 10.5 + i * 0.1
        if i % 5 == 0:
            feed(pack, 0, 1, [3700] * 12, now, trusted=False)  # bleeding
            feed(pack, 0, 2, [3700] * 12, now)
        limits = prot.update(pack.snapshot(now), now)
    assert not prot.deep_discharge.latched
    assert "deep_discharge" not in _codes(limits)


def test_release_is_refused_with_a_reason_while_not_safe() -> None:
    pack, prot, _ = _ready()
    with pytest.raises(ValueError, match="no deep-discharge latch is set"):
        prot.release_deep_discharge(pack.snapshot(10.0), 10.0)
    _run(pack, prot, 10.1, 12.0, 3700, {(0, 2, 5): 2300})
    assert prot.deep_discharge.latched
    with pytest.raises(ValueError, match="still below") as info:
        prot.release_deep_discharge(pack.snapshot(12.0), 12.0)
    assert "bus 0 module 2 cell 5 at 2.300 V is still below deep_discharge_v 2.500 V" in str(
        info.value
    )
    # above the threshold, but a module is missing: refused
    feed(pack, 0, 1, [3700] * 12, 20.0)
    with pytest.raises(ValueError, match="the pack is not complete"):
        prot.release_deep_discharge(pack.snapshot(24.0), 24.0)
    # complete but another alarm (over-temperature) is active: refused, naming it
    _run(pack, prot, 24.1, 30.0, 3700, temps_c=(62.0, 20.0))
    with pytest.raises(ValueError, match="not otherwise healthy: over_temperature"):
        prot.release_deep_discharge(pack.snapshot(30.0), 30.0)
    assert prot.deep_discharge.latched


def test_precharge_between_deep_discharge_and_under_voltage() -> None:
    pack, prot, _ = _ready(cell_delta_alarm_v=1.0, cell_delta_release_v=0.9)
    # 2.70 V: deep discharge is 2.50 V, under-voltage 3.00 V
    low = _run(pack, prot, 10.0, 20.0, 3700, {(0, 1, 4): 2700})
    assert not prot.deep_discharge.latched
    assert low.ccl_a == PRECHARGE_A  # was 30 A
    assert low.charge_reason.startswith("pre-charge: lowest cell bus 0 module 1 cell 4")
    # above under-voltage but not past its release (3.10 V): still pre-charging
    still = _run(pack, prot, 20.1, 30.0, 3700, {(0, 1, 4): 3050})
    assert still.ccl_a == PRECHARGE_A
    recovered = _run(pack, prot, 30.1, 40.0, 3700, {(0, 1, 4): 3200})
    assert recovered.ccl_a == MAX_A


# --------------------------------------------------------------------------- over-current


def _run_measured(
    pack: Pack, prot: Protection, t_from: float, t_to: float, current_a: float | None
) -> Limits:
    limits = None
    for i in range(round((t_to - t_from) / 0.1) + 1):
        now = t_from + i * 0.1
        if i % 5 == 0:
            feed_all(pack, now)
        limits = prot.update(pack.snapshot(now), now, current_a=current_a)
    assert limits is not None
    return limits


@pytest.mark.parametrize(
    ("current_a", "code", "blocked"),
    [(40.0, "over_current_charge", "charge"), (-40.0, "over_current_discharge", "discharge")],
)
def test_measured_over_current_trips_in_its_direction_and_holds(
    current_a: float, code: str, blocked: str
) -> None:
    pack, prot, _ = _ready(over_current_trip_s=2.0, over_current_release_s=30.0)
    # 35 A against 30 A: inside the 5 A margin
    ok = _run_measured(pack, prot, 10.0, 15.0, 35.0 if current_a > 0 else -35.0)
    assert ok.alarms == ()
    under_delay = _run_measured(pack, prot, 15.1, 16.9, current_a)
    assert under_delay.alarms == ()
    tripped = _run_measured(pack, prot, 17.0, 17.2, current_a)
    alarm = next(a for a in tripped.alarms if a.code == code)
    assert "measured 40.0 A > limit 30.0 A + margin 5.0 A" in alarm.message
    assert (tripped.ccl_a == 0.0) is (blocked == "charge")
    assert (tripped.dcl_a == 0.0) is (blocked == "discharge")
    # the current falls back to 0: held for over_current_release_s, then released
    held = _run_measured(pack, prot, 17.3, 40.0, 0.0)
    assert code in _codes(held)
    released = _run_measured(pack, prot, 40.1, 60.0, 0.0)
    assert code not in _codes(released)


def test_a_lowered_limit_leaves_devices_time_to_follow() -> None:
    pack, prot, _ = _ready(over_current_grace_s=3.0, over_current_trip_s=2.0)
    _run_measured(pack, prot, 10.0, 12.0, 30.0)
    # CCL drops to 17.5 A (taper) while the charger still delivers 30 A for 2.5 s
    limits = None
    for i in range(26):
        now = 12.1 + i * 0.1
        if i % 5 == 0:
            feed_all(pack, now, 3700, {(0, 1, 1): 4000})
        limits = prot.update(pack.snapshot(now), now, current_a=30.0)
    assert limits is not None
    assert limits.ccl_a == pytest.approx(17.5)
    assert limits.alarms == ()


def test_no_measurement_neither_trips_nor_releases_over_current() -> None:
    pack, prot, _ = _ready(over_current_release_s=5.0)
    _run_measured(pack, prot, 10.0, 13.0, 45.0)
    stale = _run_measured(pack, prot, 13.1, 30.0, None)
    assert "over_current_charge" in _codes(stale)


def test_frame_problems_block_both_directions() -> None:
    pack, prot, _ = _ready()
    feed_all(pack, 10.5)
    problem = "bus 0 module 2 frame 0x1B4: 4 repeated and 0 out-of-order counters"
    limits = prot.update(pack.snapshot(10.5), 10.5, frame_problems=(problem,))
    assert limits.ccl_a == limits.dcl_a == 0.0
    alarm = next(a for a in limits.alarms if a.code == "frame_sanity")
    assert problem in alarm.message


# --------------------------------------------------------------------------- start-up bounds


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("over_voltage_v", 4.25),
        ("charge_end_v", 4.21),
        ("under_voltage_v", 2.7),
        ("discharge_cutoff_v", 2.75),
        ("deep_discharge_v", 2.4),
        ("charge_max_temperature_c", 50.0),
        ("under_temperature_c", -5.0),
        ("over_temperature_c", 65.0),
        ("discharge_min_temperature_c", -25.0),
    ],
)
def test_start_up_limits_cannot_leave_the_chemistry(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        ProtectionSettings.model_validate({field: value})
    assert field in str(info.value)


def test_the_alarm_set_is_the_declared_checks_and_the_doc_table() -> None:
    """Each alarm is one declared Check (code, what it blocks, condition, message): the alarms
    Protection can raise, its latches and the alarm table of services/bms/README.md are all that one list,
    so none can be added, renamed or dropped in one place alone."""
    assert len(set(ALARM_CODES)) == len(ALARM_CODES)
    protection = Protection(ProtectionSettings())
    assert list(protection._latches) == list(CHECKS)
    pack, _protection, _limits = _ready()
    inputs = Inputs(ProtectionSettings(), pack.snapshot(0.0), ("frame 0x1B0 two sources",))
    for check in (*CHECKS, DEEP_DISCHARGE):
        assert isinstance(check.condition(inputs), Condition)
        assert check.message(inputs)
    doc = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = {(True, True): "both", (True, False): "charge", (False, True): "discharge"}
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| (both|charge|discharge) \|", doc, re.M))
    assert rows == {
        c.code: blocks[c.blocks_charge, c.blocks_discharge] for c in (*CHECKS, DEEP_DISCHARGE)
    }


def test_every_check_can_raise_its_own_alarm_and_nothing_else() -> None:
    """Tripping a check's condition raises exactly that check's code (no name to mistype)."""
    pack, _protection, _limits = _ready()
    snap = pack.snapshot(0.0)
    for check in CHECKS:
        forced = replace(check, condition=lambda _i: Condition(True, False, 0.0))
        protection = Protection(ProtectionSettings())
        protection._latches = {
            (forced if c is check else c): latch for c, latch in protection._latches.items()
        }
        limits = protection.update(snap, 0.0)
        assert check.code in _codes(limits)
        assert _codes(limits) <= set(ALARM_CODES)
