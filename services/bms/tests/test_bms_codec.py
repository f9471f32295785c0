"""VW module codec: golden frames built by hand from the sources' bit tables, round trips, fuzz.

Provenance (public repositories and files). Cell frames: Tom-evnut/VW-bms VWtest.dbc byte table and
"cell 1 = (byte1 >> 4) + (byte2 << 4) + 1000 mV" (Tom BMSModule.cpp, VWtest.dbc). Temperatures:
Tom-evnut/VW-bms VWtest.dbc (DBC layout) and BMSModule.cpp decodetemp. Balancing: Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells, anikrooz/housebatt BMSModuleManager.cpp (12S padding).
Poll: Tom-evnut/VW-bms VWBMSV2.ino sendcommand.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.codec import CodecError, DecodeError, EncodeError
from gridzero_bms.codec import (
    BalanceCommandFrame,
    CellVoltageFrame,
    CodecOptions,
    ExtenderBalance,
    FrameDecoder,
    PollFrame,
    TemperatureFrame,
    TempVariant,
    balance_ids,
    balanceable_modules,
    cells_fast,
    cells_from_table,
    encode_balance,
    encode_cell_frame,
    encode_module_cells,
    encode_poll,
    encode_temperature_frame,
)

DEC = FrameDecoder()
TOM = FrameDecoder(CodecOptions(temp_variant=TempVariant.TOM))


def _cell1(data: bytes) -> int:
    """Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc: cell 1 = (byte1 >> 4) + (byte2 << 4) + 1000 mV."""
    return (data[1] >> 4) + (data[2] << 4) + 1000


def _cell2(data: bytes) -> int:
    """Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc: cell 2 = byte3 + ((byte4 & 0x0F) << 8) + 1000."""
    return data[3] + ((data[4] & 0x0F) << 8) + 1000


# Cells 3700, 3701, 4095, 3000 mV -> raw 0xA8C, 0xA8D, 0xC17, 0x7D0, placed by the Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc byte
# table; byte 0 (CRC) 0x5A, counter 3 in byte 1's low nibble.
GOLDEN_CELLS = bytes.fromhex("5AC3A88D7AC1D007")


def test_golden_cell_frame_by_hand() -> None:
    assert _cell1(GOLDEN_CELLS) == 3700
    assert _cell2(GOLDEN_CELLS) == 3701
    frame = DEC.decode(0x1B0, GOLDEN_CELLS)
    assert isinstance(frame, CellVoltageFrame)
    assert (frame.module, frame.index, frame.first_cell) == (1, 0, 1)
    assert frame.cells_mv == (3700, 3701, 4095, 3000)
    assert (frame.counter, frame.crc, frame.initialising) == (3, 0x5A, False)


def test_golden_cell_frame_encodes_to_the_same_bytes() -> None:
    assert encode_cell_frame(1, 0, [3700, 3701, 4095, 3000], counter=3, crc=0x5A) == (
        0x1B0,
        GOLDEN_CELLS,
    )


@pytest.mark.parametrize(
    ("arbitration_id", "module", "index", "first_cell"),
    [
        (0x1B0, 1, 0, 1),
        (0x1B1, 1, 1, 5),
        (0x1B2, 1, 2, 9),
        (0x1B3, 1, 3, 13),
        (0x1B4, 2, 0, 1),
        (0x1CE, 8, 2, 9),
        (
            0x1D0,
            9,
            0,
            1,
        ),  # jamiejones85/VW-bms VWBMSV2.ino (secondary pack, id += 32): second pack / extender, one increment
        (0x1EE, 16, 2, 9),
    ],
)
def test_cell_ids_map_to_module_and_cells(
    arbitration_id: int, module: int, index: int, first_cell: int
) -> None:
    frame = DEC.decode(arbitration_id, bytes.fromhex("00C3A88D7AC1D007"))
    assert isinstance(frame, CellVoltageFrame)
    assert (frame.module, frame.index, frame.first_cell) == (module, index, first_cell)
    assert len(frame.cells_mv) == (1 if index == 3 else 4)


def test_invalid_marker_0xfff_reads_none() -> None:
    # cell D raw 0xFFF: byte 6 = 0xFF, byte 7 low nibble 0xF.
    frame = DEC.decode(0x1B0, bytes.fromhex("00C3A88D7AC1FF0F"))
    assert isinstance(frame, CellVoltageFrame)
    assert frame.cells_mv == (3700, 3701, 4095, None)


@pytest.mark.parametrize(
    ("arbitration_id", "hexdata"),
    [
        (0x1B0, "00C3FF8D7AC1D007"),  # byte 2 = 0xFF
        (0x1B1, "00C3A88D7AFFD007"),  # byte 5 = 0xFF
        (0x1B2, "00C3A88D7AC1D0FF"),  # byte 7 = 0xFF
        (0x1B3, "00C3FF0000000000"),  # cell-13 frame: byte 2 only
    ],
)
def test_initialising_frames_carry_no_data(arbitration_id: int, hexdata: str) -> None:
    frame = DEC.decode(arbitration_id, bytes.fromhex(hexdata))
    assert isinstance(frame, CellVoltageFrame)
    assert frame.initialising
    assert frame.cells_mv == ()


def test_cell13_frame_ignores_bytes_5_and_7() -> None:
    frame = DEC.decode(0x1B3, bytes.fromhex("00C3A800FFFF00FF"))
    assert isinstance(frame, CellVoltageFrame)
    assert frame.cells_mv == (3700,)
    assert not frame.initialising


def test_golden_temperature_frame_dbc() -> None:
    # Tom-evnut/VW-bms VWtest.dbc: T1 byte 0, T2 byte 1, 0.5 °C/bit −40; balance bitmap bytes 2-3.
    # 25.0 °C -> (25 + 40) * 2 = 0x82, 21.5 °C -> 0x7B, cells 1, 9, 12 -> 0x0901.
    data = bytes.fromhex("827B010900000000")
    frame = DEC.decode(0x1A555403, data)
    assert isinstance(frame, TemperatureFrame)
    assert frame.module == 3
    assert frame.temperatures_c == (25.0, 21.5)
    assert frame.balance_bits == 0x0901
    assert frame.balancing_cells == (1, 9, 12)
    assert encode_temperature_frame(3, [25.0, 21.5], [1, 9, 12]) == (0x1A555403, data)


def test_dbc_temperature_absent_marker() -> None:
    frame = DEC.decode(0x1A555401, bytes.fromhex("82FF000000000000"))
    assert isinstance(frame, TemperatureFrame)
    assert frame.temperatures_c == (25.0, None)


@pytest.mark.parametrize(
    ("hexdata", "temps", "bits"),
    [
        # Tom-evnut/VW-bms BMSModule.cpp decodetemp: T0 byte 0 (−43), bits bytes 2-3, T1 byte 4, T2 byte 5 (absent >= 0xF0).
        ("8200010986F00000", (22.0, 24.0, None), 0x0901),
        # byte 0 >= 0xDF: T0 from byte 3, no balance word.
        ("E000018686868600", (24.0, 24.0, 24.0), None),
        # byte 7 == 0xFD (13S variant): T0 = byte 2 * 0.5 − 40.
        ("00008200000000FD", (25.0,), None),
    ],
)
def test_golden_temperature_frame_tom(
    hexdata: str, temps: tuple[float | None, ...], bits: int | None
) -> None:
    frame = TOM.decode(0x1A555402, bytes.fromhex(hexdata))
    assert isinstance(frame, TemperatureFrame)
    assert frame.temperatures_c == temps
    assert frame.balance_bits == bits


def test_temperature_second_pack_ids() -> None:
    frame = DEC.decode(0x1A555421, bytes.fromhex("827B000000000000"))
    assert isinstance(frame, TemperatureFrame)
    assert frame.module == 9


def test_golden_balance_module1() -> None:
    # Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells: ID_A 0x1A55540A cells 1-8, ID_B +1 cells 9-16; 0x08 on, 0x00 off, 0xFE unused
    # (housebatt 12S: bytes 4-7 of ID_B = 0xFE).
    assert encode_balance(1, [1, 5, 9]) == [
        (0x1A55540A, bytes.fromhex("0800000008000000")),
        (0x1A55540B, bytes.fromhex("08000000FEFEFEFE")),
    ]


@pytest.mark.parametrize(
    ("module", "options", "ids"),
    [
        (2, CodecOptions(), (0x1A55540C, 0x1A55540D)),
        (3, CodecOptions(), (0x1A55540E, 0x1A55540F)),
        (
            3,
            CodecOptions(gen1_module3=True),
            (0x1A55541E, 0x1A55541F),
        ),  # Tom-evnut/VW-bms pull request #2
        (8, CodecOptions(), (0x1A555418, 0x1A555419)),
        (9, CodecOptions(), None),
        (9, CodecOptions(extender_balance=ExtenderBalance.GATEWAY), (0x1A55542A, 0x1A55542B)),
        (9, CodecOptions(extender_balance=ExtenderBalance.TOM), (0x1A55541A, 0x1A55541B)),
        (12, CodecOptions(extender_balance=ExtenderBalance.TOM), (0x1A5554AF, 0x1A5554B0)),
        (13, CodecOptions(extender_balance=ExtenderBalance.TOM), None),
    ],
)
def test_balance_ids(module: int, options: CodecOptions, ids: tuple[int, int] | None) -> None:
    assert balance_ids(module, options) == ids


def test_balanceable_modules_default() -> None:
    assert balanceable_modules(CodecOptions()) == frozenset(range(1, 9))


def test_balance_decode_and_13s_padding() -> None:
    frames = encode_balance(4, [10, 13], cells_per_module=13)
    assert frames[1] == (0x1A555411, bytes.fromhex("0008000008FEFEFE"))
    first = DEC.decode(*frames[0])
    second = DEC.decode(*frames[1])
    assert isinstance(first, BalanceCommandFrame)
    assert isinstance(second, BalanceCommandFrame)
    assert first.module == second.module == 4
    assert first.cells_on == ()
    assert second.cells_on == (10, 13)
    assert second.to_json()["cells_unused"] == [14, 15, 16]


def test_balance_refuses_bad_cells_and_modules() -> None:
    with pytest.raises(EncodeError, match=r"cells \[13\] are outside 1..12"):
        encode_balance(1, [13])
    with pytest.raises(EncodeError, match="module 9 has no balancing ID"):
        encode_balance(9, [1])


def test_golden_poll() -> None:
    # Tom-evnut/VW-bms VWBMSV2.ino sendcommand: 00×8 then 45 01 28 00 00 00 00 30.
    assert encode_poll() == [
        (0x0BA, bytes(8)),
        (0x0BA, bytes.fromhex("4501280000000030")),
    ]
    zero, request = (DEC.decode(i, d) for i, d in encode_poll())
    assert isinstance(zero, PollFrame)
    assert isinstance(request, PollFrame)
    assert (zero.kind, zero.counter, zero.send_voltages) == ("zero", 0, False)
    assert (request.kind, request.counter, request.send_voltages) == ("request", 1, True)


def test_extended_0x0ba_is_not_the_poll() -> None:
    with pytest.raises(DecodeError, match="unknown extended CAN ID 0xBA"):
        DEC.decode(0x0BA, bytes(8), is_extended=True)


@pytest.mark.parametrize("length", [0, 1, 7, 9])
def test_wrong_length_is_a_clear_decode_error(length: int) -> None:
    with pytest.raises(DecodeError, match=f"cell voltage frame 0x1B4: {length} data bytes, need 8"):
        DEC.decode(0x1B4, bytes(length))


def test_unknown_id() -> None:
    with pytest.raises(DecodeError, match="unknown standard CAN ID 0x123"):
        DEC.decode(0x123, bytes(8))


_CELL_MV = st.integers(min_value=1000, max_value=4839)  # >= 4840 would look "initialising"


@settings(max_examples=200)
@given(
    module=st.integers(1, 16),
    index=st.integers(0, 2),
    cells=st.lists(st.one_of(st.none(), _CELL_MV), min_size=4, max_size=4),
    counter=st.integers(0, 15),
)
def test_cell_round_trip(module: int, index: int, cells: list[int | None], counter: int) -> None:
    # A None in cell C/A slot writes 0xFF into byte 5/2, which reads as initialising (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc).
    if cells[0] is None or cells[2] is None:
        cells[0] = cells[2] = 3000
    arbitration_id, data = encode_cell_frame(module, index, cells, counter=counter)
    frame = DEC.decode(arbitration_id, data)
    assert isinstance(frame, CellVoltageFrame)
    assert (frame.module, frame.index, frame.counter) == (module, index, counter)
    assert frame.cells_mv == tuple(cells)


@settings(max_examples=200)
@given(cells=st.lists(_CELL_MV, min_size=1, max_size=13))
def test_module_round_trip(cells: list[int]) -> None:
    frames = encode_module_cells(5, cells)
    decoded: list[int | None] = []
    for arbitration_id, data in frames:
        frame = DEC.decode(arbitration_id, data)
        assert isinstance(frame, CellVoltageFrame)
        decoded.extend(frame.cells_mv)
    assert decoded[: len(cells)] == cells
    # padding: 0xFFF (None) in slots B/D, raw 0 (1000 mV) in slots A/C
    assert all(v in (None, 1000) for v in decoded[len(cells) :])


_HALF_DEGREES = st.integers(0, 252).map(lambda raw: raw * 0.5 - 40.0)


@settings(max_examples=200)
@given(
    module=st.integers(1, 16),
    temps=st.lists(st.one_of(st.none(), _HALF_DEGREES), min_size=1, max_size=2),
    cells=st.sets(st.integers(1, 16)),
)
def test_temperature_round_trip_dbc(
    module: int, temps: list[float | None], cells: set[int]
) -> None:
    arbitration_id, data = encode_temperature_frame(module, temps, cells)
    frame = DEC.decode(arbitration_id, data)
    assert isinstance(frame, TemperatureFrame)
    assert frame.module == module
    assert frame.temperatures_c == tuple(temps) + (None,) * (2 - len(temps))
    assert set(frame.balancing_cells) == cells


@settings(max_examples=200)
@given(
    t0=st.integers(0, 0xDE).map(lambda raw: raw * 0.5 - 43.0),
    rest=st.lists(
        st.one_of(st.none(), st.integers(0, 0xEF).map(lambda r: r * 0.5 - 43.0)), max_size=2
    ),
    cells=st.sets(st.integers(1, 16)),
)
def test_temperature_round_trip_tom(t0: float, rest: list[float | None], cells: set[int]) -> None:
    arbitration_id, data = encode_temperature_frame(2, [t0, *rest], cells, variant=TempVariant.TOM)
    frame = TOM.decode(arbitration_id, data)
    assert isinstance(frame, TemperatureFrame)
    if data[7] == 0xFD:  # cannot happen: byte 7 is always 0 from the encoder
        pytest.fail("encoder wrote the 13S marker")
    assert frame.temperatures_c == (t0, *rest, *(None,) * (2 - len(rest)))
    assert set(frame.balancing_cells) == cells


@settings(max_examples=200)
@given(module=st.integers(1, 8), cells=st.sets(st.integers(1, 12)), gen1=st.booleans())
def test_balance_round_trip(module: int, cells: set[int], gen1: bool) -> None:
    frames = encode_balance(module, cells, CodecOptions(gen1_module3=gen1))
    on: list[int] = []
    for arbitration_id, data in frames:
        frame = DEC.decode(arbitration_id, data)
        assert isinstance(frame, BalanceCommandFrame)
        assert frame.module == module
        on.extend(frame.cells_on)
    assert set(on) == cells


@settings(max_examples=300)
@given(data=st.binary(min_size=8, max_size=8), index=st.integers(0, 3))
def test_fast_path_matches_table_decoder(data: bytes, index: int) -> None:
    assert cells_fast(data, index) == cells_from_table(data, index)


_KNOWN_IDS = st.sampled_from(
    [0x0BA, 0x1B0, 0x1B3, 0x1CF, 0x1EF, 0x1A555401, 0x1A555428, 0x1A55540A, 0x1A55541F, 0x1A5554B0]
)


@settings(max_examples=300)
@given(
    arbitration_id=st.one_of(_KNOWN_IDS, st.integers(-5, 0x2000_0005)),
    extended=st.one_of(st.none(), st.booleans()),
    data=st.binary(max_size=10),
    variant=st.sampled_from(list(TempVariant)),
)
def test_fuzz_every_decoder(
    arbitration_id: int, extended: bool | None, data: bytes, variant: TempVariant
) -> None:
    decoder = DEC if variant is TempVariant.DBC else TOM
    try:
        frame = decoder.decode(arbitration_id, data, extended)
    except CodecError:
        return
    assert frame.to_json()["type"] in {"cells", "temperatures", "balance", "poll"}
