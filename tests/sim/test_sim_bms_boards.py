"""Slave-board faults of the bms bus emulator: a duplicate module number and a frozen board."""

from __future__ import annotations

import pytest

from gridzero.contract import SimFault
from gridzero_bms import codec as bms_codec
from gridzero_tools.sim.devices.bms import BmsBusEmulator
from gridzero_tools.sim.faults import DuplicateModule, FrozenModule, parse_fault
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile
from gridzero_tools.sim.service import contract_fault

DECODER = bms_codec.FrameDecoder()


def _plant() -> Plant:
    return Plant(load_plant("default"), Profile.constant(400.0), seed=4)


def _poll(emu: BmsBusEmulator, plant: Plant, now_s: float) -> list[bms_codec.Frame]:
    out = []
    for arb, data in bms_codec.encode_poll():
        out += emu.on_frame(plant, arb, data, False, now_s)
    return [DECODER.decode(f.arbitration_id, f.data, f.extended) for f in out]


def _cells(frames: list[bms_codec.Frame], module: int) -> list[bms_codec.CellVoltageFrame]:
    return [f for f in frames if isinstance(f, bms_codec.CellVoltageFrame) and f.module == module]


def test_a_duplicate_board_answers_just_before_the_real_one_with_its_own_cells() -> None:
    plant = _plant()
    emu = BmsBusEmulator(bus=0, numbers=(1, 2, 3), first_index=0)
    plant.inject(DuplicateModule(bus=0, number=2, cell_v=4.30), 0.0)
    frames = _poll(emu, plant, 0.5)
    module2 = _cells(frames, 2)
    assert len(module2) == 6  # two boards, three cell frames each
    twin, real = module2[:3], module2[3:]
    assert [f.arbitration_id for f in twin] == [f.arbitration_id for f in real]
    assert all(mv == 4300 for f in twin for mv in f.cells_mv)
    assert all(mv < 4300 for f in real for mv in f.cells_mv)
    assert twin[0].counter != real[0].counter
    temps = [f.module for f in frames if isinstance(f, bms_codec.TemperatureFrame)]
    assert temps == [1, 2, 2, 3]
    # another bus does not see it
    other = BmsBusEmulator(bus=1, numbers=(1,), first_index=8)
    assert len(_cells(_poll(other, plant, 0.5), 1)) == 3


def test_a_frozen_board_repeats_its_last_frames() -> None:
    plant = _plant()
    emu = BmsBusEmulator(bus=0, numbers=(1, 2), first_index=0)
    first = _poll(emu, plant, 0.5)
    plant.inject(FrozenModule(module=1), 0.6)
    frozen = [_poll(emu, plant, 1.0 + 0.5 * i) for i in range(3)]
    for frames in frozen:
        assert _cells(frames, 2) == _cells(first, 2)  # counter and all
    assert _cells(frozen[0], 1)[0].counter != _cells(first, 1)[0].counter  # module 1 counts on
    plant.clear_faults("frozen_module", now_s=3.0)
    assert _cells(_poll(emu, plant, 3.5), 2)[0].counter != _cells(first, 2)[0].counter


def test_the_contract_names_the_board_faults() -> None:
    layout = [[1, 2, 3, 4, 5, 6, 7, 8], [1]]
    plant = _plant()
    twin = contract_fault(SimFault(kind="duplicate_module", target="0:3", value=4.3), plant, layout)
    assert twin == DuplicateModule(bus=0, number=3, cell_v=4.3)
    frozen = contract_fault(SimFault(kind="frozen_module", target="1:1"), plant, layout)
    assert frozen == FrozenModule(module=8)
    with pytest.raises(ValueError, match="no module 2 on bus 1"):
        contract_fault(SimFault(kind="frozen_module", target="1:2"), plant, layout)
    with pytest.raises(ValueError, match="expected 'bus:module'"):
        contract_fault(SimFault(kind="duplicate_module", target="3"), plant, layout)
    assert parse_fault('{"kind": "frozen_module", "module": 2}') == FrozenModule(module=2)


@pytest.mark.parametrize(
    ("variant", "top_c"), [(bms_codec.TempVariant.DBC, 86.0), (bms_codec.TempVariant.TOM, 68.0)]
)
def test_a_pack_hotter_than_the_frame_carries_reads_its_top_value(
    variant: bms_codec.TempVariant, top_c: float
) -> None:
    # the model clamped to 86.5 °C, which encodes to the DBC's invalid marker 0xFD: the
    # simulator raised instead of reporting a saturated sensor
    plant = _plant()
    plant.pack.temperature_c[:] = [120.0] * len(plant.pack.temperature_c)
    options = bms_codec.CodecOptions(temp_variant=variant)
    emu = BmsBusEmulator(bus=0, numbers=(1,), first_index=0, options=options)
    out = []
    for arb, data in bms_codec.encode_poll():
        out += emu.on_frame(plant, arb, data, False, 0.5)
    decoder = bms_codec.FrameDecoder(options)
    temps = [
        decoder.decode(f.arbitration_id, f.data, f.extended)
        for f in out
        if f.arbitration_id == bms_codec.temp_frame_id(1)
    ]
    assert len(temps) == 1
    assert isinstance(temps[0], bms_codec.TemperatureFrame)
    assert temps[0].temperatures_c[0] == top_c
