"""Emerson/Vertiv R48 rectifier CAN frames, both directions (pure: no I/O, no clock).

Facts: PurpleAlien/R48_Rectifier rectifier.py, anikrooz/Emerson-Vertiv-R48 src/VertivPsu.cpp,
leodesigner/esphome-emerson-vertiv-r48, the endless-sphere thread "Emerson/Vertiv R48-series
CAN programming" and the R48.h / R48.c driver posted there (services/charger/README.md). Every frame is 8 bytes on a 29-bit ID:

    byte 0 message type, byte 1 error (0xF0 = none), byte 2 0x00 (control bits in the
    control frame), byte 3 register ("value type"), bytes 4..7 float32 big-endian or a flag
    in byte 5.

Layouts are `gridzero.codec.Field` tables; `decode_frame` turns any (ID, bytes) into one of
the message classes below or raises `DecodeError`; the ``encode_*`` functions build frames
and refuse anything outside the rectifier's documented ranges with an `EncodeError`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from gridzero import chemistry
from gridzero.codec import (
    DecodeError,
    EncodeError,
    Field,
    Kind,
    Layout,
    Order,
    decode_fields,
    encode_fields,
)

# --- identifiers (R48.h ID layout) --------------------------------------------------------------------

SET_ID = 0x0607FF83
"""Set-point writes, broadcast from controller 0xF0."""
CONTROL_ID = 0x06080783
"""Control frame (DC off, fan, LED, AC off); set-points are also reported to work here."""
READ_REQUEST_ID = 0x06000783
"""Read requests from controller 0xF0."""
REPLY_ID = 0x060F8003
"""Reply from module 0, last (or only) frame."""
REPLY_MORE_ID = 0x060F8007
"""Reply from module 0, more frames follow (read-all)."""

FRAME_BYTES = 8
NO_ERROR = 0xF0
CONTROLLER_ADDRESS = 0xF0

ERROR_NAMES: dict[int, str] = {
    0xF1: "invalid_address",
    0xF2: "invalid_command",
    0xF3: "invalid_data",
    0xF4: "address_identification_running",
}
"""Error byte values per R48.h (R48.h byte layout); other values decode as ``unknown``."""


class MsgType(IntEnum):
    """Byte 0 (R48.h byte layout)."""

    READ_ALL = 0x00
    READ = 0x01
    WRITE = 0x03
    READ_REPLY = 0x41
    WRITE_ACK = 0x43


# --- value ranges (PurpleAlien rectifier.py, endless-sphere) -------------------------------------------------------------------

VOLTAGE_MIN_V = 41.0
VOLTAGE_MAX_V = 58.5
FRACTION_MIN = 0.10
FRACTION_MAX = 1.21
DEFAULT_RATED_CURRENT_A = 62.5
DEFAULT_FRACTION_AT_RATED = 1.21

# The stored (EEPROM) fallback is what the rectifier runs on when nothing refreshes it (a dead
# service, a cut bus): it must be harmless on its own. Its current is therefore always the
# least the rectifier accepts, and its voltage at most cells x chemistry.FALLBACK_CELL_MAX_V;
# the encoder refuses anything else, whatever code path asks (services/charger/README.md).
FALLBACK_FRACTION_MAX = FRACTION_MIN


class ValueKind(Enum):
    """How bytes 4..7 carry a register's value."""

    FLOAT = "float"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One writable register: its name, unit and the range the encoder accepts."""

    register: int
    name: str
    unit: str
    low: float
    high: float
    kind: ValueKind = ValueKind.FLOAT


class Register(IntEnum):
    """Writable registers (value types) on `SET_ID` (PurpleAlien rectifier.py, endless-sphere)."""

    OFFLINE_CURRENT = 0x19
    AC_INPUT_CURRENT = 0x1A
    ONLINE_VOLTAGE = 0x21
    ONLINE_CURRENT = 0x22
    OFFLINE_VOLTAGE = 0x24
    WALK_IN_TIME = 0x29
    REMOTE_OFF = 0x30
    WALK_IN_ENABLE = 0x32
    FAN_FULL = 0x33
    MODULE_OFF = 0x35
    RESTART_AFTER_OVERVOLTAGE = 0x39


# The AC input current and walk-in time ranges are not documented by any source [U]; these
# bounds only keep nonsense off the bus.
REGISTERS: dict[int, RegisterSpec] = {
    spec.register: spec
    for spec in (
        RegisterSpec(Register.ONLINE_VOLTAGE, "online_voltage", "V", VOLTAGE_MIN_V, VOLTAGE_MAX_V),
        RegisterSpec(
            Register.OFFLINE_VOLTAGE, "offline_voltage", "V", VOLTAGE_MIN_V, VOLTAGE_MAX_V
        ),
        RegisterSpec(
            Register.ONLINE_CURRENT, "online_current_fraction", "", FRACTION_MIN, FRACTION_MAX
        ),
        RegisterSpec(
            Register.OFFLINE_CURRENT, "offline_current_fraction", "", FRACTION_MIN, FRACTION_MAX
        ),
        RegisterSpec(Register.AC_INPUT_CURRENT, "ac_input_current_limit", "A", 1.0, 20.0),
        RegisterSpec(Register.WALK_IN_TIME, "walk_in_time", "s", 1.0, 200.0),
        RegisterSpec(Register.WALK_IN_ENABLE, "walk_in_enable", "", 0, 1, ValueKind.FLAG),
        RegisterSpec(Register.REMOTE_OFF, "remote_off", "", 0, 1, ValueKind.FLAG),
        RegisterSpec(Register.FAN_FULL, "fan_full", "", 0, 1, ValueKind.FLAG),
        RegisterSpec(Register.MODULE_OFF, "module_off", "", 0, 1, ValueKind.FLAG),
        RegisterSpec(
            Register.RESTART_AFTER_OVERVOLTAGE,
            "restart_after_overvoltage",
            "",
            0,
            1,
            ValueKind.FLAG,
        ),
    )
}


class Quantity(IntEnum):
    """Readable registers (PurpleAlien rectifier.py, leodesigner)."""

    OUTPUT_VOLTAGE = 0x01
    OUTPUT_CURRENT = 0x02
    CURRENT_LIMIT = 0x03
    TEMPERATURE = 0x04
    INPUT_VOLTAGE = 0x05
    STATUS = 0x40


@dataclass(frozen=True, slots=True)
class QuantitySpec:
    """A readable quantity: name, unit and the range a plausible reply stays within."""

    quantity: Quantity
    name: str
    unit: str
    low: float
    high: float


# Plausibility bounds for replies: a value outside is a corrupt frame, not a measurement.
# The current limit is a fraction per ESPHome but amps per luckylinux [U], so its bound
# admits both readings.
QUANTITIES: dict[int, QuantitySpec] = {
    spec.quantity: spec
    for spec in (
        QuantitySpec(Quantity.OUTPUT_VOLTAGE, "output_voltage", "V", -1.0, 100.0),
        QuantitySpec(Quantity.OUTPUT_CURRENT, "output_current", "A", -10.0, 200.0),
        QuantitySpec(Quantity.CURRENT_LIMIT, "current_limit", "fraction", 0.0, 200.0),
        QuantitySpec(Quantity.TEMPERATURE, "temperature", "C", -60.0, 200.0),
        QuantitySpec(Quantity.INPUT_VOLTAGE, "input_voltage", "V", -1.0, 500.0),
    )
}
QUANTITY_BY_NAME: dict[str, Quantity] = {
    **{spec.name: spec.quantity for spec in QUANTITIES.values()},
    "status": Quantity.STATUS,
}

# --- layouts --------------------------------------------------------------------------------

HEADER: Layout = (
    Field("msgtype", 0, 8),
    Field("error", 8, 8),
    Field("register_high", 16, 8),
    Field("register", 24, 8),
)
FLOAT_VALUE: Layout = (Field("value", 32, 32, Kind.FLOAT32, Order.BIG),)
RAW_VALUE: Layout = (Field("raw", 32, 32, Kind.UINT, Order.BIG),)
FLAG_VALUE: Layout = (Field("flag", 40, 8),)

# Control byte CC is byte 2 (anikrooz VertivPsu.cpp sendControl, leodesigner set_control); bit k of CC is frame bit 16 + k.
CONTROL_BITS: Layout = (
    Field("dc_off", 23, 1),
    Field("fan_full", 20, 1),
    Field("flash_led", 19, 1),
    Field("ac_off", 18, 1),
    Field("always_one", 16, 1),
)
CONTROL_REGISTER = 0x80
_CONTROL_KNOWN_MASK = 0b1001_1101

# Status bits (register 0x40), bytes 4..7, LSB first within a byte as R48.h assumes [S/U].
STATUS_NAMES: tuple[str, ...] = (
    # byte 4
    "temperature_power_limit",
    "ac_power_limit",
    "eeprom_error",
    "fan_failure",
    "module_protection",
    "module_fault",
    "over_temperature",
    "over_voltage",
    # byte 5
    "can_error",
    "power_balance_error",
    "module_identification",
    "ov_shutdown_relay",
    "walk_in_active",
    "fan_full_speed",
    "module_off",
    "module_power_limit",
    # byte 6
    "pfc_error",
    "ac_over_voltage",
    "duplicate_module_id",
    "severe_current_imbalance",
    "phase_loss",
    "imbalance",
    "ac_under_voltage",
    "sequential_start",
    # byte 7
    "reserved_7_0",
    "reserved_7_1",
    "output_fuse_fault",
    "internal_comm_error",
    "output_under_voltage",
    "overload",
    "pnp_alarm",
    "slight_current_imbalance",
)
STATUS_BITS: Layout = tuple(
    Field(name, 32 + 8 * (i // 8) + i % 8, 1) for i, name in enumerate(STATUS_NAMES)
)


# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanFrame:
    """One extended CAN frame."""

    arbitration_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SetPoint:
    """A write (msgtype 0x03) of one register; flags carry 0.0 or 1.0."""

    register: int
    value: float

    @property
    def spec(self) -> RegisterSpec:
        return REGISTERS[self.register]


@dataclass(frozen=True, slots=True)
class Control:
    """The control frame's bits (anikrooz VertivPsu.cpp sendControl, leodesigner set_control)."""

    dc_off: bool = False
    fan_full: bool = False
    flash_led: bool = False
    ac_off: bool = False


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A read of one quantity (msgtype 0x01)."""

    quantity: Quantity


@dataclass(frozen=True, slots=True)
class ReadAllRequest:
    """A read-all request (msgtype 0x00, register 0x80)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A reply with one measured quantity."""

    module: int
    quantity: Quantity
    value: float
    more: bool = False


@dataclass(frozen=True, slots=True)
class OtherReading:
    """A reply for a register we do not interpret (read-all sends several); raw bits kept."""

    module: int
    register: int
    raw: int
    more: bool = False


@dataclass(frozen=True, slots=True)
class StatusReading:
    """The 32 status bits (register 0x40)."""

    module: int
    raw: int
    more: bool = False

    @property
    def flags(self) -> dict[str, bool]:
        data = bytes(4) + self.raw.to_bytes(4, "big")
        return {name: bool(v) for name, v in decode_fields(STATUS_BITS, data).items()}

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(name for name, on in self.flags.items() if on)


@dataclass(frozen=True, slots=True)
class WriteAck:
    """A write acknowledgement (msgtype 0x43); raw bits of the value as echoed."""

    module: int
    register: int
    raw: int


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A reply whose error byte is not 0xF0."""

    module: int
    msgtype: int
    register: int
    error_code: int

    @property
    def error_name(self) -> str:
        return ERROR_NAMES.get(self.error_code, "unknown")


Message = (
    SetPoint
    | Control
    | ReadRequest
    | ReadAllRequest
    | Reading
    | OtherReading
    | StatusReading
    | WriteAck
    | ErrorReply
)


# --- identifier helpers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameId:
    """The fields of a 29-bit identifier (R48.h ID layout)."""

    protocol: int
    point_to_point: bool
    destination: int
    source: int
    more: bool

    @classmethod
    def parse(cls, arbitration_id: int) -> FrameId:
        return cls(
            protocol=(arbitration_id >> 20) & 0x1FF,
            point_to_point=bool((arbitration_id >> 19) & 1),
            destination=(arbitration_id >> 11) & 0xFF,
            source=(arbitration_id >> 3) & 0xFF,
            more=bool((arbitration_id >> 2) & 1),
        )


def reply_id(module: int = 0, *, more: bool = False) -> int:
    """The ID a module uses to reply to the controller."""
    if not 0 <= module <= 0x7F:
        raise EncodeError(f"r48 reply ID: module address {module} is outside 0..127")
    return 0x060F8003 | (module << 3) | (int(more) << 2)


def _is_reply_id(arbitration_id: int) -> bool:
    fid = FrameId.parse(arbitration_id)
    return (
        arbitration_id <= 0x1FFFFFFF
        and fid.protocol == 0x060
        and fid.point_to_point
        and fid.destination == CONTROLLER_ADDRESS
        and fid.source <= 0x7F
        and arbitration_id & 0b11 == 0b11
    )


# --- float helpers ------------------------------------------------------------------------


def _f32(value: float) -> float:
    """The value as a float32 would carry it (so decoded limits compare fairly)."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def _with_unit(value: float, unit: str) -> str:
    return f"{value:g} {unit}" if unit else f"{value:g}"


def _check_finite(value: object, place: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"{place}: {value!r} is not a number")
    if not math.isfinite(value):
        raise EncodeError(f"{place}: {value!r} is not a finite number")
    return float(value)


# --- encoders -----------------------------------------------------------------------------


def _frame(
    arbitration_id: int, header: dict[str, int], value: Layout, values: dict[str, Any]
) -> CanFrame:
    data = encode_fields(HEADER + value, header | values, template=bytes(FRAME_BYTES))
    return CanFrame(arbitration_id, data)


def _place(spec: RegisterSpec) -> str:
    return f"r48 {spec.name.replace('_', ' ')} (register {spec.register:#04x})"


def _check_cells(cells_in_series: object, place: str) -> int:
    if isinstance(cells_in_series, bool) or not isinstance(cells_in_series, int):
        raise EncodeError(f"{place}: cells in series {cells_in_series!r} is not a whole number")
    if cells_in_series < 1:
        raise EncodeError(f"{place}: cells in series {cells_in_series} must be at least 1")
    return cells_in_series


def _write_range(spec: RegisterSpec, cells_in_series: int | None) -> tuple[float, float, str]:
    """The range a write to ``spec`` may carry: the register's, narrowed for the pack.

    The stored fallback is bounded by the chemistry whatever the caller asks: its voltage
    needs the pack's cell count (there is no safe default for it) and its current is the
    least the rectifier accepts. An online voltage is bounded by cells x CELL_MAX_V when
    the caller names the cells (the charger service always does)."""
    place = _place(spec)
    if spec.register == Register.OFFLINE_VOLTAGE:
        if cells_in_series is None:
            raise EncodeError(
                f"{place}: the stored fallback voltage needs the pack's cells in series, "
                "which bound it"
            )
        cells = _check_cells(cells_in_series, place)
        high = chemistry.fallback_max_v(cells)
        why = f" ({cells} cells x {chemistry.FALLBACK_CELL_MAX_V:g} V: the stored fallback)"
        return spec.low, min(spec.high, high), why if high < spec.high else ""
    if spec.register == Register.OFFLINE_CURRENT:
        why = " (the stored fallback current is the least the rectifier accepts)"
        return spec.low, FALLBACK_FRACTION_MAX, why
    if spec.register == Register.ONLINE_VOLTAGE and cells_in_series is not None:
        cells = _check_cells(cells_in_series, place)
        high = chemistry.pack_max_v(cells)
        why = f" ({cells} cells x {chemistry.CELL_MAX_V:g} V: the pack's ceiling)"
        return spec.low, min(spec.high, high), why if high < spec.high else ""
    return spec.low, spec.high, ""


def encode_set_point(
    register: int,
    value: object,
    *,
    arbitration_id: int = SET_ID,
    cells_in_series: int | None = None,
) -> CanFrame:
    """A write of ``value`` to ``register``, refused outside the register's range.

    ``cells_in_series`` narrows voltage writes to what the pack may see (required for the
    stored fallback voltage, register 0x24); see `_write_range`."""
    spec = REGISTERS.get(register)
    if spec is None:
        known = ", ".join(f"{r:#04x}" for r in REGISTERS)
        raise EncodeError(f"r48 write: register {register!r} is not writable; known: {known}")
    header = {"msgtype": MsgType.WRITE, "error": NO_ERROR, "register_high": 0, "register": register}
    if spec.kind is ValueKind.FLAG:
        if value not in (0, 1) or not isinstance(value, int | float):
            raise EncodeError(f"{_place(spec)}: {value!r} is not a flag (0/1 or False/True)")
        return _frame(arbitration_id, header, FLAG_VALUE, {"flag": int(value)})
    number = _check_finite(value, _place(spec))
    low, high, why = _write_range(spec, cells_in_series)
    if not low <= number <= high:
        raise EncodeError(
            f"{_place(spec)}: {_with_unit(number, spec.unit)} is outside "
            f"{low:g}..{_with_unit(high, spec.unit)}{why}"
        )
    return _frame(arbitration_id, header, FLOAT_VALUE, {"value": number})


def encode_voltage(
    voltage_v: object, *, offline: bool = False, cells_in_series: int | None = None
) -> CanFrame:
    """Output voltage set-point, online (RAM, ~30 s) or offline (the stored fallback).

    The stored fallback needs ``cells_in_series`` and stays at or below cells x 4.0 V; an
    online set-point with ``cells_in_series`` stays at or below cells x 4.2 V."""
    register = Register.OFFLINE_VOLTAGE if offline else Register.ONLINE_VOLTAGE
    return encode_set_point(register, voltage_v, cells_in_series=cells_in_series)


def encode_current_fraction(fraction: object, *, offline: bool = False) -> CanFrame:
    """Output current limit as a fraction of the rectifier's reference current (the stored
    fallback: only the least the rectifier accepts, `FALLBACK_FRACTION_MAX`)."""
    register = Register.OFFLINE_CURRENT if offline else Register.ONLINE_CURRENT
    return encode_set_point(register, fraction)


def encode_ac_input_current(current_a: object) -> CanFrame:
    """AC input current limit ("diesel power limit")."""
    return encode_set_point(Register.AC_INPUT_CURRENT, current_a)


def encode_walk_in(enabled: bool, time_s: float | None = None) -> tuple[CanFrame, ...]:
    """Walk-in (soft start): the 0x32 flag frame, then the 0x29 time frame when enabling."""
    flag = encode_set_point(Register.WALK_IN_ENABLE, int(enabled))
    if not enabled:
        return (flag,)
    if time_s is None:
        raise EncodeError("r48 walk-in: enabling needs a time in seconds")
    return flag, encode_set_point(Register.WALK_IN_TIME, time_s)


def encode_control(control: Control) -> CanFrame:
    """The control frame ``00 F0 CC 80 00 00 00 00`` (anikrooz VertivPsu.cpp sendControl, leodesigner set_control)."""
    header = {"msgtype": MsgType.READ_ALL, "error": NO_ERROR, "register": CONTROL_REGISTER}
    bits = {
        "dc_off": int(control.dc_off),
        "fan_full": int(control.fan_full),
        "flash_led": int(control.flash_led),
        "ac_off": int(control.ac_off),
        "always_one": 1,
    }
    layout = tuple(f for f in HEADER if f.name != "register_high") + CONTROL_BITS
    return CanFrame(CONTROL_ID, encode_fields(layout, header | bits, template=bytes(FRAME_BYTES)))


def encode_read_request(quantity: Quantity) -> CanFrame:
    """A read request ``01 F0 00 vt 00 00 00 00``."""
    header = {"msgtype": MsgType.READ, "error": NO_ERROR, "register_high": 0, "register": quantity}
    return CanFrame(READ_REQUEST_ID, encode_fields(HEADER, header, template=bytes(FRAME_BYTES)))


def encode_read_all_request() -> CanFrame:
    """A read-all request ``00 F0 00 80 00 00 00 00`` (zeros in bytes 4..7 also work, PurpleAlien rectifier.py, leodesigner)."""
    header = {"msgtype": MsgType.READ_ALL, "error": NO_ERROR, "register_high": 0, "register": 0x80}
    return CanFrame(READ_REQUEST_ID, encode_fields(HEADER, header, template=bytes(FRAME_BYTES)))


def encode_reading(
    quantity: Quantity, value: float, *, module: int = 0, more: bool = False
) -> CanFrame:
    """A module's reply ``41 F0 00 vt <float>`` (what the simulator sends)."""
    spec = QUANTITIES.get(quantity)
    if spec is None:
        raise EncodeError(f"r48 reading: register {quantity!r} is not a float quantity")
    number = _check_finite(value, f"r48 reading {spec.name}")
    if not spec.low <= number <= spec.high:
        raise EncodeError(
            f"r48 reading {spec.name}: {number:g} is outside "
            f"{spec.low:g}..{_with_unit(spec.high, spec.unit)}"
        )
    header = {
        "msgtype": MsgType.READ_REPLY,
        "error": NO_ERROR,
        "register_high": 0,
        "register": quantity,
    }
    return _frame(reply_id(module, more=more), header, FLOAT_VALUE, {"value": number})


def encode_status(flags: dict[str, bool], *, module: int = 0, more: bool = False) -> CanFrame:
    """A status reply (register 0x40) with the named flags set."""
    unknown = set(flags) - set(STATUS_NAMES)
    if unknown:
        raise EncodeError(f"r48 status: unknown flag(s) {sorted(unknown)}")
    header = {
        "msgtype": MsgType.READ_REPLY,
        "error": NO_ERROR,
        "register_high": 0,
        "register": Quantity.STATUS,
    }
    values = {name: int(on) for name, on in flags.items()}
    data = encode_fields(HEADER + STATUS_BITS, header | values, template=bytes(FRAME_BYTES))
    return CanFrame(reply_id(module, more=more), data)


def encode_write_ack(register: int, data: bytes, *, module: int = 0) -> CanFrame:
    """The acknowledgement of a write frame: msgtype 0x43, the written bytes echoed."""
    if len(data) != FRAME_BYTES:
        raise EncodeError(f"r48 write ack: {len(data)} data bytes, need {FRAME_BYTES}")
    header = {
        "msgtype": MsgType.WRITE_ACK,
        "error": NO_ERROR,
        "register_high": 0,
        "register": register,
    }
    return CanFrame(reply_id(module), encode_fields(HEADER, header, template=data))


def encode_error_reply(
    msgtype: int, register: int, error_code: int, *, module: int = 0
) -> CanFrame:
    """A reply carrying an error byte (e.g. 0xF3 invalid data)."""
    if error_code == NO_ERROR:
        raise EncodeError("r48 error reply: error code 0xF0 means no error")
    header = {"msgtype": msgtype, "error": error_code, "register_high": 0, "register": register}
    return CanFrame(reply_id(module), encode_fields(HEADER, header, template=bytes(FRAME_BYTES)))


# --- current scaling (PurpleAlien rectifier.py, endless-sphere, uncertain: both scalings are settings) ---------------------------


def current_to_fraction(
    current_a: object,
    *,
    rated_current_a: float = DEFAULT_RATED_CURRENT_A,
    fraction_at_rated: float = DEFAULT_FRACTION_AT_RATED,
) -> float:
    """The current-limit fraction for ``current_a``: fraction_at_rated ≙ rated_current_a."""
    amps = _check_finite(current_a, "r48 current")
    rated = _check_finite(rated_current_a, "r48 rated current")
    at_rated = _check_finite(fraction_at_rated, "r48 fraction at rated current")
    if rated <= 0 or at_rated <= 0:
        raise EncodeError(
            f"r48 current scaling: rated current {rated:g} A and fraction {at_rated:g} must be > 0"
        )
    return amps / rated * at_rated


def fraction_to_current(
    fraction: float,
    *,
    rated_current_a: float = DEFAULT_RATED_CURRENT_A,
    fraction_at_rated: float = DEFAULT_FRACTION_AT_RATED,
) -> float:
    """The current in A that a current-limit fraction stands for."""
    return fraction / fraction_at_rated * rated_current_a


# --- decoder ------------------------------------------------------------------------------


def _fail(arbitration_id: int, message: str) -> DecodeError:
    return DecodeError(f"r48 frame {arbitration_id:08X}: {message}")


def _header(arbitration_id: int, data: bytes) -> dict[str, int]:
    if len(data) != FRAME_BYTES:
        raise _fail(arbitration_id, f"{len(data)} data bytes, need {FRAME_BYTES}")
    return {k: int(v or 0) for k, v in decode_fields(HEADER, data).items()}


def _float_value(arbitration_id: int, data: bytes, spec: RegisterSpec | QuantitySpec) -> float:
    name, low, high, unit = spec.name, spec.low, spec.high, spec.unit
    value = decode_fields(FLOAT_VALUE, data)["value"]
    assert isinstance(value, float)
    if not math.isfinite(value):
        raise _fail(arbitration_id, f"{name}: value {value!r} is not a finite number")
    if not _f32(low) <= value <= _f32(high):
        raise _fail(
            arbitration_id,
            f"{name}: {_with_unit(value, unit)} is outside {low:g}..{_with_unit(high, unit)}",
        )
    return value


def _decode_write(arbitration_id: int, data: bytes, register: int) -> SetPoint:
    spec = REGISTERS.get(register)
    if spec is None:
        raise _fail(arbitration_id, f"write to unknown register {register:#04x}")
    if spec.kind is ValueKind.FLAG:
        flag = int(decode_fields(FLAG_VALUE, data)["flag"] or 0)
        if flag not in (0, 1):
            raise _fail(arbitration_id, f"{spec.name}: flag byte {flag:#04x} is not 0 or 1")
        return SetPoint(register, float(flag))
    value = _float_value(arbitration_id, data, spec)
    return SetPoint(register, value)


def _decode_control(arbitration_id: int, data: bytes) -> Control:
    cc = data[2]
    unknown = cc & ~_CONTROL_KNOWN_MASK & 0xFF
    if unknown:
        raise _fail(arbitration_id, f"control byte {cc:#04x} has unknown bits {unknown:#04x}")
    bits = decode_fields(CONTROL_BITS, data)
    if not bits["always_one"]:
        raise _fail(arbitration_id, f"control byte {cc:#04x}: bit 0 must be 1")
    return Control(
        dc_off=bool(bits["dc_off"]),
        fan_full=bool(bits["fan_full"]),
        flash_led=bool(bits["flash_led"]),
        ac_off=bool(bits["ac_off"]),
    )


def _decode_controller_frame(arbitration_id: int, data: bytes, head: dict[str, int]) -> Message:
    msgtype, register = head["msgtype"], head["register"]
    if head["error"] != NO_ERROR:
        raise _fail(arbitration_id, f"controller frame with error byte {head['error']:#04x}")
    if (
        arbitration_id == CONTROL_ID
        and msgtype == MsgType.READ_ALL
        and register == CONTROL_REGISTER
    ):
        return _decode_control(arbitration_id, data)
    if head["register_high"] != 0:
        raise _fail(arbitration_id, f"byte 2 is {head['register_high']:#04x}, need 0x00")
    if arbitration_id in (SET_ID, CONTROL_ID) and msgtype == MsgType.WRITE:
        return _decode_write(arbitration_id, data, register)
    if arbitration_id == READ_REQUEST_ID:
        if msgtype == MsgType.READ_ALL and register == 0x80:
            return ReadAllRequest()
        if msgtype == MsgType.READ and register in Quantity._value2member_map_:
            return ReadRequest(Quantity(register))
        if msgtype == MsgType.READ:
            raise _fail(arbitration_id, f"read request for unknown register {register:#04x}")
    raise _fail(arbitration_id, f"message type {msgtype:#04x} is not valid on this ID")


def _decode_reply(arbitration_id: int, data: bytes, head: dict[str, int]) -> Message:
    fid = FrameId.parse(arbitration_id)
    module, more = fid.source, fid.more
    msgtype, register = head["msgtype"], head["register"]
    if head["error"] != NO_ERROR:
        return ErrorReply(module, msgtype, register, head["error"])
    if head["register_high"] != 0:
        raise _fail(arbitration_id, f"byte 2 is {head['register_high']:#04x}, need 0x00")
    raw = int(decode_fields(RAW_VALUE, data)["raw"] or 0)
    if msgtype == MsgType.WRITE_ACK:
        return WriteAck(module, register, raw)
    if msgtype != MsgType.READ_REPLY:
        raise _fail(arbitration_id, f"reply message type {msgtype:#04x} is not 0x41 or 0x43")
    if register == Quantity.STATUS:
        return StatusReading(module, raw, more)
    spec = QUANTITIES.get(register)
    if spec is None:
        return OtherReading(module, register, raw, more)
    value = _float_value(arbitration_id, data, spec)
    return Reading(module, spec.quantity, value, more)


def decode_frame(arbitration_id: int, data: bytes) -> Message:
    """The message an R48 frame carries, or `DecodeError` naming the frame and the problem."""
    if not 0 <= arbitration_id <= 0x1FFFFFFF:
        raise DecodeError(f"r48 frame: ID {arbitration_id:#x} is outside 0..0x1FFFFFFF")
    if arbitration_id in (SET_ID, CONTROL_ID, READ_REQUEST_ID):
        return _decode_controller_frame(arbitration_id, data, _header(arbitration_id, data))
    if _is_reply_id(arbitration_id):
        return _decode_reply(arbitration_id, data, _header(arbitration_id, data))
    known = ", ".join(f"{i:08X}" for i in (SET_ID, CONTROL_ID, READ_REQUEST_ID, REPLY_ID))
    raise _fail(arbitration_id, f"not an R48 ID (known: {known} and module replies)")


def message_to_dict(message: Message) -> dict[str, Any]:
    """A JSON-ready description of a decoded message."""
    kind = type(message).__name__
    out: dict[str, Any] = {"type": kind}
    if isinstance(message, SetPoint):
        spec = message.spec
        value: float | bool = bool(message.value) if spec.kind is ValueKind.FLAG else message.value
        out |= {"register": f"{message.register:#04x}", "name": spec.name, "value": value}
        if spec.unit:
            out["unit"] = spec.unit
    elif isinstance(message, Control):
        out |= {
            "dc_off": message.dc_off,
            "fan_full": message.fan_full,
            "flash_led": message.flash_led,
            "ac_off": message.ac_off,
        }
    elif isinstance(message, ReadRequest):
        out |= {
            "register": f"{int(message.quantity):#04x}",
            "quantity": _quantity_name(message.quantity),
        }
    elif isinstance(message, Reading):
        qspec = QUANTITIES[message.quantity]
        out |= {
            "module": message.module,
            "register": f"{int(message.quantity):#04x}",
            "quantity": qspec.name,
            "value": message.value,
            "unit": qspec.unit,
            "more": message.more,
        }
    elif isinstance(message, StatusReading):
        out |= {
            "module": message.module,
            "raw": f"{message.raw:08X}",
            "active": list(message.active),
            "more": message.more,
        }
    elif isinstance(message, OtherReading | WriteAck):
        out |= {
            "module": message.module,
            "register": f"{message.register:#04x}",
            "raw": f"{message.raw:08X}",
        }
    elif isinstance(message, ErrorReply):
        out |= {
            "module": message.module,
            "msgtype": f"{message.msgtype:#04x}",
            "register": f"{message.register:#04x}",
            "error_code": f"{message.error_code:#04x}",
            "error": message.error_name,
        }
    return out


def _quantity_name(quantity: Quantity) -> str:
    spec = QUANTITIES.get(quantity)
    return spec.name if spec else "status"
