"""Pack model: presence, staleness, statistics, layouts, several buses, trust."""

from __future__ import annotations

import pytest
from bms_helpers import DECODER, feed, feed_all, small_pack
from pydantic import ValidationError

from gridzero_bms.codec import encode_cell_frame
from gridzero_bms.pack import CellRef, ModuleKey, Pack, PackLayout, PackSettings


def test_empty_pack_reports_everything_missing() -> None:
    pack = small_pack()
    snap = pack.snapshot(0.0)
    assert snap.missing == (ModuleKey(0, 1), ModuleKey(0, 2))
    assert snap.present_modules == 0
    assert snap.cell_count == 0
    assert snap.max_cell is None
    assert not snap.complete


def test_statistics_name_module_and_cell() -> None:
    pack = small_pack()
    feed_all(pack, 10.0, 3700, {(0, 1, 4): 3650, (0, 2, 11): 3790})
    snap = pack.snapshot(10.5)
    assert snap.complete
    assert snap.cell_count == snap.expected_cell_count == 24
    assert snap.min_cell == CellRef(0, 1, 4, 3.65)
    assert snap.max_cell == CellRef(0, 2, 11, 3.79)
    assert snap.delta_v == pytest.approx(0.14)
    assert snap.avg_cell_v == pytest.approx((22 * 3.7 + 3.65 + 3.79) / 24)
    module2 = snap.modules[1]
    assert module2.cells_v[10] == 3.79
    assert module2.age_s == pytest.approx(0.5)


def test_pack_voltage_parallel_is_the_mean_module_voltage() -> None:
    pack = small_pack(layout=PackLayout.PARALLEL)
    feed(pack, 0, 1, [3700] * 12, 1.0)
    feed(pack, 0, 2, [3800] * 12, 1.0)
    snap = pack.snapshot(1.0)
    assert snap.pack_voltage_v == pytest.approx((44.4 + 45.6) / 2)
    assert snap.series_cells == 12


def test_pack_voltage_series_is_the_sum_of_cells() -> None:
    pack = small_pack(layout=PackLayout.SERIES)
    feed(pack, 0, 1, [3700] * 12, 1.0)
    feed(pack, 0, 2, [3800] * 12, 1.0)
    snap = pack.snapshot(1.0)
    assert snap.pack_voltage_v == pytest.approx(44.4 + 45.6)
    assert snap.series_cells == 24


def test_module_silent_longer_than_stale_after_is_missing() -> None:
    pack = small_pack(stale_after_s=3.0)
    feed_all(pack, 0.0)
    feed(pack, 0, 1, [3700] * 12, 2.5)
    assert pack.snapshot(3.0).missing == ()
    snap = pack.snapshot(3.1)
    assert snap.missing == (ModuleKey(0, 2),)
    assert snap.cell_count == 12  # the stale module's cells leave the statistics


def test_one_frame_of_a_module_going_silent_makes_it_missing() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    for arbitration_id, data in [
        encode_cell_frame(2, 0, [3700] * 4),
        encode_cell_frame(2, 1, [3700] * 4),
    ]:
        pack.apply(0, DECODER.decode(arbitration_id, data), 3.5)
    feed(pack, 0, 1, [3700] * 12, 3.5)
    assert pack.snapshot(3.5).missing == (ModuleKey(0, 2),)


def test_initialising_frames_do_not_keep_a_module_present() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    initialising = bytes.fromhex("00C3FF8D7AC1D007")
    for t in (1.0, 2.0, 3.0, 4.0):
        feed(pack, 0, 1, [3700] * 12, t)
        for index in range(3):
            pack.apply(0, DECODER.decode(0x1B4 + index, initialising), t)
    assert pack.snapshot(4.0).missing == (ModuleKey(0, 2),)


def test_two_buses_keep_modules_with_the_same_number_apart() -> None:
    pack = Pack(PackSettings(modules=((3,), (3, 5))))
    feed(pack, 0, 3, [3700] * 12, 1.0)
    feed(pack, 1, 3, [3900] * 12, 1.0)
    feed(pack, 1, 5, [3800] * 11 + [3600], 1.0)
    snap = pack.snapshot(1.0)
    assert snap.complete
    assert snap.max_cell is not None
    assert (snap.max_cell.bus, snap.max_cell.module) == (1, 3)
    assert snap.min_cell == CellRef(1, 5, 12, 3.6)


def test_invalid_cell_lowers_the_cell_count_at_once() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    feed(pack, 0, 2, [3700] * 11 + [None], 0.5)
    snap = pack.snapshot(0.5)
    assert snap.cell_count == 23
    assert not snap.cell_count_ok
    assert snap.modules[1].voltage_v is None


def test_unexpected_module_is_reported_and_counted() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    feed(pack, 0, 7, [4300] * 12, 0.0)
    snap = pack.snapshot(0.0)
    assert snap.unexpected == (ModuleKey(0, 7),)
    assert snap.cell_count == 36
    assert not snap.complete
    assert snap.max_cell is not None
    assert snap.max_cell.module == 7  # its cells are still watched


def test_untrusted_frames_do_not_move_statistics_but_count_as_worst_case() -> None:
    pack = small_pack()
    feed_all(pack, 0.0, 3950)
    cells = [3950] * 12
    cells[4] = 3990  # neighbour of a bleeding cell reads high
    cells[5] = 3900  # the bleeding cell reads low
    feed(pack, 0, 1, cells, 1.0, trusted=False)
    snap = pack.snapshot(1.0)
    assert snap.max_cell is not None
    assert snap.max_cell.voltage_v == 3.95
    assert snap.worst_high == CellRef(0, 1, 5, 3.99)
    assert snap.worst_low == CellRef(0, 1, 6, 3.9)
    assert snap.modules[0].untrusted_frames == 3
    assert snap.modules[0].present  # untrusted frames still show the module is alive


def test_temperatures_min_max_avg_and_absent_sensors() -> None:
    pack = small_pack()
    feed(pack, 0, 1, [3700] * 12, 0.0, temps_c=(20.0, None))
    feed(pack, 0, 2, [3700] * 12, 0.0, temps_c=(30.0, 25.0))
    snap = pack.snapshot(0.0)
    assert (snap.temp_min_c, snap.temp_max_c) == (20.0, 30.0)
    assert snap.temp_avg_c == pytest.approx(25.0)
    assert snap.temp_min_at == ModuleKey(0, 1)
    assert snap.temp_max_at == ModuleKey(0, 2)
    assert (snap.temp_sensors, snap.temp_sensors_absent) == (3, 1)


def test_stale_temperatures_are_absent() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    feed_all(pack, 3.5, temps_c=None)
    snap = pack.snapshot(3.5)
    assert snap.temp_sensors == 0
    assert snap.modules[0].temperatures_c == ()


def test_forget_bus_makes_its_modules_missing() -> None:
    pack = Pack(PackSettings(modules=((1,), (1,))))
    feed(pack, 0, 1, [3700] * 12, 0.0)
    feed(pack, 1, 1, [3700] * 12, 0.0)
    pack.forget_bus(1)
    assert pack.snapshot(0.0).missing == (ModuleKey(1, 1),)


def test_cell13_frame_is_ignored_in_a_12_cell_pack() -> None:
    pack = small_pack()
    feed_all(pack, 0.0)
    pack.apply(0, DECODER.decode(*encode_cell_frame(1, 3, [4500])), 0.0)
    assert pack.snapshot(0.0).cell_count == 24


def test_settings_refuse_duplicate_module_on_one_bus() -> None:
    with pytest.raises(ValidationError, match="bus 0 lists module \\[3\\] twice"):
        PackSettings(modules=((3, 3),))
    with pytest.raises(ValidationError, match=r"module numbers are 1\.\.16"):
        PackSettings(modules=((0, 17),))
