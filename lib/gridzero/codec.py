"""The one generic codec every device codec builds on.

A frame layout is a table: one `Field` row per value. `decode_fields` and
`encode_fields` turn bytes into named physical values and back, so adding a
field to a protocol is a one-line change and every device shares the same
range checks and error messages.

Nothing here does I/O; device codecs (``gridzero_<name>.codec``)
import only this module, ``struct`` and the standard library.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class CodecError(ValueError):
    """Root of every codec error: the message names the value, the limit and the place."""


class DecodeError(CodecError):
    """Bytes that do not form a valid frame."""


class EncodeError(CodecError):
    """A value that cannot be put on the wire (out of range, NaN, wrong type)."""


class Kind(Enum):
    """How a field's raw bits are read."""

    UINT = "uint"
    SINT = "sint"
    FLOAT32 = "float32"


class Order(Enum):
    """Bit/byte order of a field.

    LITTLE: Intel order; ``bit`` is the position of the least significant bit
    in the frame read as one little-endian integer (DBC ``start|len@1``).
    BIG: Motorola order, byte aligned; ``bit`` is the first byte times eight
    and the field's bytes are read most significant first.
    """

    LITTLE = "little"
    BIG = "big"


@dataclass(frozen=True, slots=True)
class Field:
    """One row of a frame layout.

    physical = raw * scale + offset; ``invalid`` lists raw values that mean
    "no data" (decoded to None, refused by the encoder).
    """

    name: str
    bit: int
    bits: int
    kind: Kind = Kind.UINT
    order: Order = Order.LITTLE
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    invalid: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.bits <= 0 or self.bit < 0:
            raise ValueError(
                f"field {self.name}: bit {self.bit} / bits {self.bits} must be >= 0 / > 0"
            )
        if self.kind is Kind.FLOAT32 and self.bits != 32:
            raise ValueError(f"field {self.name}: float32 needs 32 bits, got {self.bits}")
        if self.order is Order.BIG and (self.bit % 8 or self.bits % 8):
            raise ValueError(f"field {self.name}: big-endian fields must be byte aligned")

    @property
    def end_byte(self) -> int:
        """How many bytes a frame needs to hold this field."""
        return (self.bit + self.bits + 7) // 8

    def raw_range(self) -> tuple[int, int]:
        """The smallest and largest raw integer the field can carry."""
        if self.kind is Kind.SINT:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def physical_range(self) -> tuple[float, float]:
        """The physical values the field can carry (float fields: +-max float32)."""
        if self.kind is Kind.FLOAT32:
            big = 3.4028234663852886e38
            return -big, big
        lo, hi = (r * self.scale + self.offset for r in self.raw_range())
        return (lo, hi) if lo <= hi else (hi, lo)


Layout = tuple[Field, ...]
Value = float | int | None


def frame_length(layout: Layout) -> int:
    """The minimum number of bytes a frame of this layout has."""
    return max(f.end_byte for f in layout)


def _read_raw(field: Field, data: bytes) -> int:
    if field.order is Order.BIG:
        start = field.bit // 8
        return int.from_bytes(data[start : start + field.bits // 8], "big")
    word = int.from_bytes(data, "little")
    return (word >> field.bit) & ((1 << field.bits) - 1)


def _to_signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def decode_field(field: Field, data: bytes) -> Value:
    """One field's physical value, or None for an invalid marker."""
    if len(data) < field.end_byte:
        raise DecodeError(
            f"field {field.name!r} needs {field.end_byte} bytes, frame has {len(data)}"
        )
    raw = _read_raw(field, data)
    if raw in field.invalid:
        return None
    if field.kind is Kind.FLOAT32:
        value = float(
            struct.unpack(
                ">f" if field.order is Order.BIG else "<f", raw.to_bytes(4, field.order.value)
            )[0]
        )
        return value * field.scale + field.offset
    if field.kind is Kind.SINT:
        raw = _to_signed(raw, field.bits)
    if field.scale == 1.0 and field.offset == int(field.offset):
        return raw + int(field.offset)
    return raw * field.scale + field.offset


def decode_fields(layout: Layout, data: bytes) -> dict[str, Value]:
    """Every field of a frame, by name."""
    need = frame_length(layout)
    if len(data) < need:
        raise DecodeError(f"layout needs {need} bytes, frame has {len(data)}")
    return {f.name: decode_field(f, data) for f in layout}


def _check_number(field: Field, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"field {field.name!r}: {value!r} is not a number")
    if math.isnan(value) or math.isinf(value):
        raise EncodeError(f"field {field.name!r}: {value!r} is not a finite number")
    return float(value)


def encode_raw(field: Field, value: object) -> int:
    """The raw integer (unsigned, as on the wire) for a physical value."""
    number = _check_number(field, value)
    if field.kind is Kind.FLOAT32:
        phys = (number - field.offset) / field.scale
        try:
            packed = struct.pack(">f", phys)
        except OverflowError as exc:
            raise EncodeError(f"field {field.name!r}: {value!r} does not fit a float32") from exc
        return int.from_bytes(packed, "big")
    raw = round((number - field.offset) / field.scale)
    lo, hi = field.raw_range()
    if not lo <= raw <= hi:
        plo, phi = field.physical_range()
        raise EncodeError(
            f"field {field.name!r}: {value!r}{field.unit} is outside {plo:g}..{phi:g}{field.unit}"
        )
    if raw in field.invalid:
        raise EncodeError(f"field {field.name!r}: {value!r} encodes to the invalid marker {raw:#x}")
    return raw & ((1 << field.bits) - 1)


def encode_fields(
    layout: Layout, values: Mapping[str, object], template: bytes | None = None
) -> bytes:
    """A frame with every field of ``layout`` set from ``values``.

    Bits no field covers come from ``template`` (default all zero). A field
    missing from ``values`` keeps the template's bits.
    """
    length = frame_length(layout)
    base = bytearray(template if template is not None else bytes(length))
    if len(base) < length:
        raise EncodeError(f"template has {len(base)} bytes, layout needs {length}")
    unknown = set(values) - {f.name for f in layout}
    if unknown:
        raise EncodeError(
            f"unknown field(s) {sorted(unknown)}; layout has {[f.name for f in layout]}"
        )
    for field in layout:
        if field.name in values:
            _write_raw(field, base, encode_raw(field, values[field.name]))
    return bytes(base)


def _write_raw(field: Field, buf: bytearray, raw: int) -> None:
    if field.order is Order.BIG:
        start = field.bit // 8
        buf[start : start + field.bits // 8] = raw.to_bytes(field.bits // 8, "big")
        return
    word = int.from_bytes(buf, "little")
    mask = ((1 << field.bits) - 1) << field.bit
    word = (word & ~mask) | (raw << field.bit)
    buf[:] = word.to_bytes(len(buf), "little")


def parse_hex(text: str) -> bytes:
    """Bytes from hex written with or without spaces, colons or a 0x prefix."""
    cleaned = text.strip().lower().removeprefix("0x")
    for sep in (" ", ":", "-", "_", "."):
        cleaned = cleaned.replace(sep, "")
    if len(cleaned) % 2:
        raise DecodeError(f"hex {text!r} has an odd number of digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise DecodeError(f"{text!r} is not hex") from exc


def parse_can_frame(text: str) -> tuple[int, bytes]:
    """``<ID>#<hexdata>`` (candump/cansend form) as (arbitration id, data)."""
    ident, sep, payload = text.strip().partition("#")
    if not sep:
        raise DecodeError(f"frame {text!r} is not in the form <ID>#<hexdata>")
    try:
        arbitration_id = int(ident, 16)
    except ValueError as exc:
        raise DecodeError(f"frame {text!r}: ID {ident!r} is not hex") from exc
    if not 0 <= arbitration_id <= 0x1FFFFFFF:
        raise DecodeError(f"frame {text!r}: ID {arbitration_id:#x} is outside 0..0x1FFFFFFF")
    data = parse_hex(payload) if payload else b""
    if len(data) > 8:
        raise DecodeError(f"frame {text!r}: {len(data)} data bytes, CAN carries at most 8")
    return arbitration_id, data


def format_can_frame(arbitration_id: int, data: bytes, *, extended: bool | None = None) -> str:
    """``<ID>#<HEX>`` with a 3-digit standard or 8-digit extended ID, as cansend writes it."""
    ext = arbitration_id > 0x7FF if extended is None else extended
    return (
        f"{arbitration_id:08X}#{data.hex().upper()}"
        if ext
        else f"{arbitration_id:03X}#{data.hex().upper()}"
    )
