"""VW GTE (MQB PHEV) battery-module CAN frames: bytes <-> typed values.

Facts from Tom-evnut/VW-bms (BMSModule.cpp, BMSModuleManager.cpp, VWBMSV2.ino, VWtest.dbc),
its fork jamiejones85/VW-bms and anikrooz/housebatt (housebatt.ino), each cited where used
and summarised in services/bms/README.md. Every layout is a table of
`gridzero.codec.Field`; the hot path for cell frames is a hand-unrolled twin of
the table decoder, checked against it by a test.

Frames handled (both directions):

- cell voltages, standard IDs 0x1B0 + 4·(n−1) + k (n = 1..16, k = 0..3);
- temperatures / balance status, extended IDs 0x1A555400 + n (n = 1..8) and
  0x1A555420 + (n − 8) (n = 9..16, second pack behind an ID-shifting gateway);
- the 0x0BA poll / keep-alive pair;
- balancing commands, extended IDs 0x1A55540A + 2·(n−1) and +1.

Module numbers here are the bus-local CAN positions; the pack model adds the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from gridzero.codec import (
    DecodeError,
    EncodeError,
    Field,
    Layout,
    decode_field,
    decode_fields,
    encode_fields,
)

FRAME_BYTES = 8
POLL_ID = 0x0BA
CELL_ID_FIRST = 0x1B0
CELL_ID_LAST = 0x1EF
TEMP_ID_BASE = 0x1A555400
TEMP_ID_SECOND_PACK_BASE = 0x1A555420
BALANCE_ID_BASE = 0x1A55540A
BALANCE_ID_GEN1_MODULE3 = 0x1A55541E
BALANCE_ID_GATEWAY_BASE = 0x1A55542A
MAX_MODULE = 16
CELLS_PER_FRAME = 4
MAX_CELLS_PER_MODULE = 13
CELL_INVALID_RAW = 0xFFF
INITIALISING_BYTE = 0xFF
CELL_MV_OFFSET = 1000

# Tom-evnut/VW-bms VWBMSV2.ino sendcommand: sent back to back every 500 ms on every bus, no CRC, no counter.
POLL_FRAMES: tuple[bytes, bytes] = (bytes(8), bytes.fromhex("4501280000000030"))

# Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells: per-byte balancing command values.
BALANCE_OFF = 0x00
BALANCE_ON_DEFAULT = 0x08
BALANCE_UNUSED = 0xFE

_CELL_INVALID = frozenset({CELL_INVALID_RAW})


def _cell_field(name: str, bit: int) -> Field:
    return Field(name, bit, 12, offset=CELL_MV_OFFSET, unit="mV", invalid=_CELL_INVALID)


# Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc: 12-bit Intel fields at bits 12/24/36/48, mV = raw + 1000 (DBC CellVoltage_xx
# 12|12@1+ (1,1000)); byte 0 = CRC (never checked by anyone), byte 1 low nibble = counter.
CELL_LAYOUT: Layout = (
    Field("crc", 0, 8),
    Field("counter", 8, 4),
    _cell_field("cell_a_mv", 12),
    _cell_field("cell_b_mv", 24),
    _cell_field("cell_c_mv", 36),
    _cell_field("cell_d_mv", 48),
    Field("measure_time", 60, 4),
)
# Frame base+3 carries only cell 13 (13S modules), in the cell-A slot.
CELL13_LAYOUT: Layout = CELL_LAYOUT[:3]
CELL_NAMES = ("cell_a_mv", "cell_b_mv", "cell_c_mv", "cell_d_mv")

# DBC variant (Tom-evnut/VW-bms VWtest.dbc, jamiejones85/VWBatterySimulator): T1 byte 0, T2 byte 1,
# 0.5 °C/bit − 40 °C (range −40..86 °C, so raw 0xFD..0xFF are outside it and read as absent),
# balance bitmap in bytes 2–3, bit 0 = cell 1.
_TEMP_INVALID = frozenset({0xFD, 0xFE, 0xFF})
TEMP_DBC_LAYOUT: Layout = (
    Field("temperature_1_c", 0, 8, scale=0.5, offset=-40.0, unit="°C", invalid=_TEMP_INVALID),
    Field("temperature_2_c", 8, 8, scale=0.5, offset=-40.0, unit="°C", invalid=_TEMP_INVALID),
    Field("balance_bits", 16, 16),
)

# Tom-evnut/VW-bms BMSModule.cpp BMSModule::decodetemp: 0.5 °C/bit − 43 °C; T0 in byte 0 (byte 3 when
# byte 0 >= 0xDF, and then no balance word), T1 byte 4 and T2 byte 5 (absent when >= 0xF0);
# when byte 7 == 0xFD (13S variant) T0 is byte 2 with −40 °C.
_TOM_ABSENT = frozenset(range(0xF0, 0x100))
TOM_T0_LIMIT = 0xDF
TOM_ALT_MARKER = 0xFD
TEMP_TOM_T0 = Field(
    "temperature_1_c", 0, 8, scale=0.5, offset=-43.0, unit="°C",
    invalid=frozenset(range(TOM_T0_LIMIT, 0x100)),
)  # fmt: skip
TEMP_TOM_T0_BYTE3 = Field("temperature_1_c", 24, 8, scale=0.5, offset=-43.0, unit="°C")
TEMP_TOM_T1 = Field(
    "temperature_2_c", 32, 8, scale=0.5, offset=-43.0, unit="°C", invalid=_TOM_ABSENT
)
TEMP_TOM_T2 = Field(
    "temperature_3_c", 40, 8, scale=0.5, offset=-43.0, unit="°C", invalid=_TOM_ABSENT
)
TEMP_TOM_BALANCE = Field("balance_bits", 16, 16)
TEMP_TOM_ALT_T0 = Field(
    "temperature_1_c", 16, 8, scale=0.5, offset=-40.0, unit="°C", invalid=frozenset({0xFD})
)
TEMP_TOM_LAYOUT: Layout = (TEMP_TOM_T0, TEMP_TOM_BALANCE, TEMP_TOM_T1, TEMP_TOM_T2)

# Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells: one byte per cell slot.
BALANCE_LAYOUT: Layout = tuple(Field(f"slot_{i + 1}", 8 * i, 8) for i in range(8))

# Tom-evnut/VW-bms VWBMSV2.ino sendcommand ([uncertain] meaning): byte 1 may be a counter the modules check for change,
# byte 7 bit 4 may be the "send voltages" flag.
POLL_LAYOUT: Layout = (Field("counter", 8, 8), Field("send_voltages", 60, 1))


class TempVariant(Enum):
    """Which reading of the disputed temperature frame to use (Tom-evnut/VW-bms BMSModule.cpp decodetemp, VWtest.dbc)."""

    DBC = "dbc"
    TOM = "tom"


class ExtenderBalance(Enum):
    """Balancing IDs for modules 9..16 (second pack on the same bus); Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells, jamiejones85/ESP32VWMITM."""

    NONE = "none"  # no balancing for modules 9..16: the sources disagree
    GATEWAY = "gateway"  # 0x1A55542A + 2·(n−9): what the ESP32VWMITM gateway shifts back by 0x20
    TOM = "tom"  # Tom-evnut's table: 9 -> 1A/1B, 10..12 -> AB..B0 (origin undocumented)


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """Choices where the sources disagree; defaults and reasons are in services/bms/README.md."""

    temp_variant: TempVariant = TempVariant.DBC
    gen1_module3: bool = False
    extender_balance: ExtenderBalance = ExtenderBalance.NONE
    balance_on_value: int = BALANCE_ON_DEFAULT

    def __post_init__(self) -> None:
        if self.balance_on_value in (BALANCE_OFF, BALANCE_UNUSED) or not (
            0 < self.balance_on_value <= 0xFF
        ):
            raise ValueError(
                f"balance_on_value {self.balance_on_value!r} must be 0x01..0xFD "
                f"(0x00 is off, 0xFE unused)"
            )


@dataclass(frozen=True, slots=True)
class CellVoltageFrame:
    """Cells ``first_cell``.. of one module; a value is None when the module marks it invalid.

    ``initialising`` frames (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc: a 0xFF in byte 2/5/7) carry no usable data.
    """

    arbitration_id: int
    module: int
    index: int
    cells_mv: tuple[int | None, ...]
    counter: int
    crc: int
    initialising: bool

    @property
    def first_cell(self) -> int:
        return self.index * CELLS_PER_FRAME + 1

    def to_json(self) -> dict[str, object]:
        return {
            "type": "cells",
            "id": f"0x{self.arbitration_id:03X}",
            "module": self.module,
            "frame": self.index,
            "first_cell": self.first_cell,
            "cells_v": [None if mv is None else mv / 1000 for mv in self.cells_mv],
            "cells_mv": list(self.cells_mv),
            "counter": self.counter,
            "crc": self.crc,
            "initialising": self.initialising,
        }


@dataclass(frozen=True, slots=True)
class TemperatureFrame:
    """Temperatures (None = sensor absent) and the balance bitmap (bit 0 = cell 1)."""

    arbitration_id: int
    module: int
    temperatures_c: tuple[float | None, ...]
    balance_bits: int | None
    variant: TempVariant

    @property
    def balancing_cells(self) -> tuple[int, ...]:
        bits = self.balance_bits or 0
        return tuple(i + 1 for i in range(16) if bits >> i & 1)

    def to_json(self) -> dict[str, object]:
        return {
            "type": "temperatures",
            "id": f"0x{self.arbitration_id:08X}",
            "module": self.module,
            "temperatures_c": list(self.temperatures_c),
            "balance_bits": self.balance_bits,
            "balancing_cells": list(self.balancing_cells),
            "variant": self.variant.value,
        }


@dataclass(frozen=True, slots=True)
class BalanceCommandFrame:
    """One half of a module's balancing command: cells ``first_cell``..``first_cell + 7``."""

    arbitration_id: int
    module: int
    half: int
    slots: tuple[int, ...]
    scheme: str

    @property
    def first_cell(self) -> int:
        return self.half * 8 + 1

    @property
    def cells_on(self) -> tuple[int, ...]:
        return tuple(
            self.first_cell + i
            for i, raw in enumerate(self.slots)
            if raw not in (BALANCE_OFF, BALANCE_UNUSED)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "type": "balance",
            "id": f"0x{self.arbitration_id:08X}",
            "module": self.module,
            "scheme": self.scheme,
            "first_cell": self.first_cell,
            "cells_on": list(self.cells_on),
            "cells_unused": [
                self.first_cell + i for i, raw in enumerate(self.slots) if raw == BALANCE_UNUSED
            ],
            # DBC: factor 2, unit minute ([uncertain] interpretation, Tom-evnut/VW-bms BMSModuleManager.cpp balanceCells)
            "minutes": [2 * raw if raw != BALANCE_UNUSED else None for raw in self.slots],
            "slots": list(self.slots),
        }


@dataclass(frozen=True, slots=True)
class PollFrame:
    """One frame of the 0x0BA keep-alive pair."""

    data: bytes
    counter: int
    send_voltages: bool

    @property
    def kind(self) -> str:
        if self.data == POLL_FRAMES[0]:
            return "zero"
        if self.data == POLL_FRAMES[1]:
            return "request"
        return "other"

    def to_json(self) -> dict[str, object]:
        return {
            "type": "poll",
            "id": f"0x{POLL_ID:03X}",
            "kind": self.kind,
            "counter": self.counter,
            "send_voltages": self.send_voltages,
            "data": self.data.hex(),
        }


Frame = CellVoltageFrame | TemperatureFrame | BalanceCommandFrame | PollFrame
_EXT = 1 << 31  # key flag: extended ID


# --- cell voltages --------------------------------------------------------------------------


def cell_frame_id(module: int, index: int) -> int:
    """The standard ID of frame ``index`` (0..3) of ``module`` (1..16)."""
    _check_module(module, MAX_MODULE, "cell voltage frame")
    if not 0 <= index <= 3:
        raise EncodeError(f"cell voltage frame: index {index} is outside 0..3")
    return CELL_ID_FIRST + CELLS_PER_FRAME * (module - 1) + index


def _is_initialising(data: bytes, index: int) -> bool:
    # Tom/housebatt: "module is not initializing OR a spoof module"; housebatt's stricter
    # three-byte check for frames 0..2 only drops frames whose cells would read >= 4840 mV.
    if data[2] == INITIALISING_BYTE:
        return True
    return index < 3 and (data[5] == INITIALISING_BYTE or data[7] == INITIALISING_BYTE)


def cells_from_table(data: bytes, index: int) -> tuple[int | None, ...]:
    """Cell values with the generic table decoder (the reference for the fast path)."""
    if index == 3:
        value = decode_field(CELL13_LAYOUT[2], data)
        return (None if value is None else int(value),)
    values = decode_fields(CELL_LAYOUT, data)
    return tuple(None if values[n] is None else int(values[n] or 0) for n in CELL_NAMES)


def cells_fast(data: bytes, index: int) -> tuple[int | None, ...]:
    """The same as `cells_from_table`, unrolled for the receive hot path."""
    word = int.from_bytes(data, "little")
    a = (word >> 12) & 0xFFF
    if index == 3:
        return (None if a == CELL_INVALID_RAW else a + CELL_MV_OFFSET,)
    b = (word >> 24) & 0xFFF
    c = (word >> 36) & 0xFFF
    d = (word >> 48) & 0xFFF
    return (
        None if a == CELL_INVALID_RAW else a + CELL_MV_OFFSET,
        None if b == CELL_INVALID_RAW else b + CELL_MV_OFFSET,
        None if c == CELL_INVALID_RAW else c + CELL_MV_OFFSET,
        None if d == CELL_INVALID_RAW else d + CELL_MV_OFFSET,
    )


def _cell_decoder(arbitration_id: int) -> Callable[[bytes], CellVoltageFrame]:
    offset = arbitration_id - CELL_ID_FIRST
    module, index = offset // CELLS_PER_FRAME + 1, offset % CELLS_PER_FRAME

    def decode(data: bytes) -> CellVoltageFrame:
        _check_length(data, "cell voltage", arbitration_id)
        crc, counter = data[0], data[1] & 0x0F
        if _is_initialising(data, index):
            return CellVoltageFrame(arbitration_id, module, index, (), counter, crc, True)
        return CellVoltageFrame(
            arbitration_id, module, index, cells_fast(data, index), counter, crc, False
        )

    return decode


def encode_cell_frame(
    module: int, index: int, cells_mv: Sequence[int | None], *, counter: int = 0, crc: int = 0
) -> tuple[int, bytes]:
    """(ID, data) of one cell-voltage frame; None encodes the invalid marker 0xFFF.

    A None in slot A or C puts 0xFF into byte 2 or 5, so the whole frame then reads as
    "initialising" (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc): that is how the receivers treat it, not an encoder quirk.

    CRC and counter are written as given: nobody knows how the modules compute the CRC
    (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc), and no receiver checks it.
    """
    arbitration_id = cell_frame_id(module, index)
    layout = CELL13_LAYOUT if index == 3 else CELL_LAYOUT
    slots = 1 if index == 3 else CELLS_PER_FRAME
    if not 1 <= len(cells_mv) <= slots:
        raise EncodeError(
            f"cell voltage frame 0x{arbitration_id:03X}: {len(cells_mv)} cells, need 1..{slots}"
        )
    values: dict[str, object] = {"crc": crc, "counter": counter}
    data = bytes(FRAME_BYTES)
    for i, name in enumerate(CELL_NAMES[:slots]):
        if i >= len(cells_mv):
            # Slots after the last cell: 0xFFF where it cannot look "initialising" (B, D);
            # raw 0 in slots A and C, where 0xFFF would put 0xFF into byte 2 or 5.
            pad_raw = CELL_INVALID_RAW if name in ("cell_b_mv", "cell_d_mv") else 0
            data = _write_invalid(layout, name, pad_raw, data)
        elif cells_mv[i] is None:
            data = _write_invalid(layout, name, CELL_INVALID_RAW, data)
        else:
            values[name] = cells_mv[i]
    return arbitration_id, encode_fields(layout, values, data)


def encode_module_cells(
    module: int, cells_mv: Sequence[int | None], *, counter: int = 0
) -> list[tuple[int, bytes]]:
    """Every cell frame of one module (12 cells -> 3 frames, 13 -> 4)."""
    if not 1 <= len(cells_mv) <= MAX_CELLS_PER_MODULE:
        raise EncodeError(f"module {module}: {len(cells_mv)} cells, need 1..{MAX_CELLS_PER_MODULE}")
    return [
        encode_cell_frame(module, i, cells_mv[4 * i : 4 * i + 4], counter=counter)
        for i in range((len(cells_mv) + 3) // 4)
    ]


# --- temperatures ---------------------------------------------------------------------------


def temp_frame_id(module: int) -> int:
    """Extended ID of a module's temperature frame (modules 9..16: the +0x20 second pack)."""
    _check_module(module, MAX_MODULE, "temperature frame")
    if module <= 8:
        return TEMP_ID_BASE + module
    return TEMP_ID_SECOND_PACK_BASE + module - 8


def _temp_decoder(
    arbitration_id: int, module: int, variant: TempVariant
) -> Callable[[bytes], TemperatureFrame]:
    def decode(data: bytes) -> TemperatureFrame:
        _check_length(data, "temperature", arbitration_id)
        if variant is TempVariant.DBC:
            v = decode_fields(TEMP_DBC_LAYOUT, data)
            temps = (_opt_float(v["temperature_1_c"]), _opt_float(v["temperature_2_c"]))
            return TemperatureFrame(
                arbitration_id, module, temps, _opt_int(v["balance_bits"]), variant
            )
        return _decode_tom_temps(arbitration_id, module, data)

    return decode


def _decode_tom_temps(arbitration_id: int, module: int, data: bytes) -> TemperatureFrame:
    variant = TempVariant.TOM
    if data[7] == TOM_ALT_MARKER:
        t0 = _opt_float(decode_field(TEMP_TOM_ALT_T0, data))
        return TemperatureFrame(arbitration_id, module, (t0,), None, variant)
    t0 = _opt_float(decode_field(TEMP_TOM_T0, data))
    bits: int | None = _opt_int(decode_field(TEMP_TOM_BALANCE, data))
    if t0 is None:
        t0 = _opt_float(decode_field(TEMP_TOM_T0_BYTE3, data))
        bits = None
    t1 = _opt_float(decode_field(TEMP_TOM_T1, data))
    t2 = _opt_float(decode_field(TEMP_TOM_T2, data))
    return TemperatureFrame(arbitration_id, module, (t0, t1, t2), bits, variant)


def encode_temperature_frame(
    module: int,
    temperatures_c: Sequence[float | None],
    balance_cells: Iterable[int] = (),
    *,
    variant: TempVariant = TempVariant.DBC,
) -> tuple[int, bytes]:
    """(ID, data) of a temperature/balance-status frame; None = sensor absent."""
    arbitration_id = temp_frame_id(module)
    bits = _balance_bits(balance_cells, arbitration_id)
    names: tuple[str, ...]
    if variant is TempVariant.DBC:
        names = ("temperature_1_c", "temperature_2_c")
        layout, absent = TEMP_DBC_LAYOUT, 0xFF
    else:
        names = ("temperature_1_c", "temperature_2_c", "temperature_3_c")
        layout, absent = TEMP_TOM_LAYOUT, 0xF0
    if not 1 <= len(temperatures_c) <= len(names):
        raise EncodeError(
            f"temperature frame 0x{arbitration_id:08X}: {len(temperatures_c)} temperatures, "
            f"{variant.value} variant carries 1..{len(names)}"
        )
    padded = list(temperatures_c) + [None] * (len(names) - len(temperatures_c))
    values: dict[str, object] = {"balance_bits": bits}
    data = bytes(FRAME_BYTES)
    for name, temp in zip(names, padded, strict=True):
        if temp is not None:
            values[name] = temp
        elif variant is TempVariant.TOM and name == "temperature_1_c":
            raise EncodeError(
                f"temperature frame 0x{arbitration_id:08X}: the tom variant needs temperature 1"
            )
        else:
            data = _write_invalid(layout, name, absent, data)
    return arbitration_id, encode_fields(layout, values, data)


def _balance_bits(cells: Iterable[int], arbitration_id: int) -> int:
    bits = 0
    for cell in cells:
        if not 1 <= cell <= 16:
            raise EncodeError(f"frame 0x{arbitration_id:08X}: balance cell {cell} is outside 1..16")
        bits |= 1 << (cell - 1)
    return bits


# --- balancing commands ---------------------------------------------------------------------

_TOM_EXTENDER_IDS = {9: 0x1A55541A, 10: 0x1A5554AB, 11: 0x1A5554AD, 12: 0x1A5554AF}


def balance_ids(module: int, options: CodecOptions) -> tuple[int, int] | None:
    """(cells 1..8 ID, cells 9..16 ID) for ``module``, or None if no source gives one."""
    _check_module(module, MAX_MODULE, "balance command")
    if module == 3 and options.gen1_module3:
        first: int | None = BALANCE_ID_GEN1_MODULE3
    elif module <= 8:
        first = BALANCE_ID_BASE + 2 * (module - 1)
    elif options.extender_balance is ExtenderBalance.GATEWAY:
        first = BALANCE_ID_GATEWAY_BASE + 2 * (module - 9)
    elif options.extender_balance is ExtenderBalance.TOM:
        first = _TOM_EXTENDER_IDS.get(module)
    else:
        first = None
    return None if first is None else (first, first + 1)


def balanceable_modules(options: CodecOptions) -> frozenset[int]:
    """Module numbers that have balancing IDs under ``options``."""
    return frozenset(n for n in range(1, MAX_MODULE + 1) if balance_ids(n, options) is not None)


def encode_balance(
    module: int,
    cells_on: Iterable[int],
    options: CodecOptions = CodecOptions(),
    *,
    cells_per_module: int = 12,
) -> list[tuple[int, bytes]]:
    """Both command frames for ``module``: listed cells on, other real cells off, rest 0xFE."""
    ids = balance_ids(module, options)
    if ids is None:
        raise EncodeError(
            f"balance command: module {module} has no balancing ID "
            f"(extender_balance={options.extender_balance.value})"
        )
    if not 1 <= cells_per_module <= MAX_CELLS_PER_MODULE:
        raise EncodeError(f"balance command: cells_per_module {cells_per_module} is outside 1..13")
    wanted = set(cells_on)
    bad = sorted(c for c in wanted if not 1 <= c <= cells_per_module)
    if bad:
        raise EncodeError(
            f"balance command module {module}: cells {bad} are outside 1..{cells_per_module}"
        )
    frames = []
    for half, arbitration_id in enumerate(ids):
        values: dict[str, object] = {}
        for slot in range(8):
            cell = half * 8 + slot + 1
            if cell > cells_per_module:
                raw = BALANCE_UNUSED
            else:
                raw = options.balance_on_value if cell in wanted else BALANCE_OFF
            values[f"slot_{slot + 1}"] = raw
        frames.append((arbitration_id, encode_fields(BALANCE_LAYOUT, values)))
    return frames


def _balance_decoder(
    arbitration_id: int, module: int, half: int, scheme: str
) -> Callable[[bytes], BalanceCommandFrame]:
    def decode(data: bytes) -> BalanceCommandFrame:
        _check_length(data, "balance command", arbitration_id)
        values = decode_fields(BALANCE_LAYOUT, data)
        slots = tuple(int(values[f.name] or 0) for f in BALANCE_LAYOUT)
        return BalanceCommandFrame(arbitration_id, module, half, slots, scheme)

    return decode


# --- poll -----------------------------------------------------------------------------------


def encode_poll() -> list[tuple[int, bytes]]:
    """The two 0x0BA frames to send back to back every 500 ms on every bus."""
    return [(POLL_ID, frame) for frame in POLL_FRAMES]


def _decode_poll(data: bytes) -> PollFrame:
    _check_length(data, "poll", POLL_ID)
    values = decode_fields(POLL_LAYOUT, data)
    return PollFrame(bytes(data), int(values["counter"] or 0), bool(values["send_voltages"]))


# --- dispatch -------------------------------------------------------------------------------


def _table(options: CodecOptions) -> dict[int, Callable[[bytes], Frame]]:
    table: dict[int, Callable[[bytes], Frame]] = {POLL_ID: _decode_poll}
    for arbitration_id in range(CELL_ID_FIRST, CELL_ID_LAST + 1):
        table[arbitration_id] = _cell_decoder(arbitration_id)
    for module in range(1, MAX_MODULE + 1):
        arbitration_id = temp_frame_id(module)
        table[arbitration_id | _EXT] = _temp_decoder(arbitration_id, module, options.temp_variant)
    # Every balancing ID any source uses is decoded whatever the options: they do not collide.
    schemes: list[tuple[int, int, str]] = [
        (n, BALANCE_ID_BASE + 2 * (n - 1), "standard") for n in range(1, 9)
    ]
    schemes.append((3, BALANCE_ID_GEN1_MODULE3, "gen1-module3"))
    schemes += [(n, BALANCE_ID_GATEWAY_BASE + 2 * (n - 9), "gateway") for n in range(9, 17)]
    schemes += [(n, first, "tom") for n, first in _TOM_EXTENDER_IDS.items()]
    for module, first, scheme in schemes:
        for half in (0, 1):
            table[(first + half) | _EXT] = _balance_decoder(first + half, module, half, scheme)
    return table


class FrameDecoder:
    """Decodes any VW module frame by ID, with the lookups precomputed once."""

    __slots__ = ("_table", "options")

    def __init__(self, options: CodecOptions = CodecOptions()) -> None:
        self.options = options
        self._table = _table(options)

    def decode(self, arbitration_id: int, data: bytes, is_extended: bool | None = None) -> Frame:
        """The typed frame; DecodeError for unknown IDs, wrong lengths and bad input."""
        extended = arbitration_id > 0x7FF if is_extended is None else is_extended
        key = arbitration_id | _EXT if extended else arbitration_id
        handler = self._table.get(key)
        if handler is None:
            if not 0 <= arbitration_id <= (0x1FFFFFFF if extended else 0x7FF):
                raise DecodeError(
                    f"vw-module: CAN ID {arbitration_id:#x} is outside the "
                    f"{'extended' if extended else 'standard'} range"
                )
            kind = "extended" if extended else "standard"
            raise DecodeError(
                f"vw-module: unknown {kind} CAN ID 0x{arbitration_id:X}; known: 0x0BA poll, "
                f"0x1B0..0x1EF cells, 0x1A555401..08/21..28 temperatures, 0x1A55540A.. balancing"
            )
        return handler(data)

    def known(self, arbitration_id: int, is_extended: bool) -> bool:
        return (arbitration_id | _EXT if is_extended else arbitration_id) in self._table


# --- helpers --------------------------------------------------------------------------------


def _check_length(data: bytes, what: str, arbitration_id: int) -> None:
    if len(data) != FRAME_BYTES:
        raise DecodeError(
            f"{what} frame 0x{arbitration_id:X}: {len(data)} data bytes, need {FRAME_BYTES}"
        )


def _check_module(module: int, limit: int, what: str) -> None:
    if isinstance(module, bool) or not isinstance(module, int) or not 1 <= module <= limit:
        raise EncodeError(f"{what}: module {module!r} is outside 1..{limit}")


def _write_invalid(layout: Layout, name: str, raw: int, data: bytes) -> bytes:
    field = next(f for f in layout if f.name == name)
    word = int.from_bytes(data, "little")
    mask = ((1 << field.bits) - 1) << field.bit
    word = (word & ~mask) | (raw << field.bit)
    return word.to_bytes(len(data), "little")


def _opt_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


__all__ = [
    "BALANCE_OFF",
    "BALANCE_UNUSED",
    "POLL_FRAMES",
    "POLL_ID",
    "BalanceCommandFrame",
    "CellVoltageFrame",
    "CodecOptions",
    "ExtenderBalance",
    "Frame",
    "FrameDecoder",
    "PollFrame",
    "TempVariant",
    "TemperatureFrame",
    "balance_ids",
    "balanceable_modules",
    "cell_frame_id",
    "cells_fast",
    "cells_from_table",
    "encode_balance",
    "encode_cell_frame",
    "encode_module_cells",
    "encode_poll",
    "encode_temperature_frame",
    "temp_frame_id",
]
