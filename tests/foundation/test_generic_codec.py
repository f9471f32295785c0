"""The generic table codec every device codec builds on."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.codec import (
    CodecError,
    DecodeError,
    EncodeError,
    Field,
    Kind,
    Order,
    decode_fields,
    encode_fields,
    format_can_frame,
    parse_can_frame,
    parse_hex,
)

# Layout shaped like a VW cell-voltage frame (Tom-evnut/VW-bms BMSModule.cpp).
CELLS = tuple(
    Field(f"cell{k}", 12 + 12 * k, 12, offset=1000, unit="mV", invalid=frozenset({0xFFF}))
    for k in range(4)
)
FLOATS = (Field("value", 32, 32, Kind.FLOAT32, Order.BIG),)
MIXED = (
    Field("u16", 0, 16, order=Order.BIG),
    Field("s8", 16, 8, Kind.SINT, scale=0.5, offset=-10),
    Field("nib", 24, 4),
)


def test_little_endian_bit_fields_match_hand_computed_bytes() -> None:
    # cell 1 = (b1 >> 4) + (b2 << 4) + 1000; cell 2 = b3 + ((b4 & 0x0F) << 8) + 1000
    # (Tom-evnut/VW-bms BMSModule.cpp, VWtest.dbc)
    data = bytes([0x00, 0x40, 0xB6, 0x2C, 0x0B, 0x00, 0x00, 0x00])
    values = decode_fields(CELLS, data)
    assert values["cell0"] == (0x40 >> 4) + (0xB6 << 4) + 1000
    assert values["cell1"] == 0x2C + ((0x0B & 0x0F) << 8) + 1000


def test_invalid_marker_decodes_to_none_and_is_refused_by_encoder() -> None:
    data = encode_fields(CELLS, {"cell0": 3700, "cell1": 3701, "cell2": 3702, "cell3": 3703})
    patched = int.from_bytes(data, "little") | (0xFFF << 48)
    assert decode_fields(CELLS, patched.to_bytes(8, "little"))["cell3"] is None
    with pytest.raises(EncodeError, match="invalid marker"):
        encode_fields(CELLS, {"cell3": 1000 + 0xFFF})


def test_float32_big_endian_matches_published_encodings() -> None:
    # R48 set-points are IEEE-754 big-endian floats (PurpleAlien/R48_Rectifier rectifier.py):
    # 52.5 V = 42 52 00 00, 1.21 = 3F 9A E1 48
    assert encode_fields(FLOATS, {"value": 52.5})[4:] == bytes.fromhex("42520000")
    assert encode_fields(FLOATS, {"value": 1.21})[4:] == bytes.fromhex("3F9AE148")
    assert decode_fields(FLOATS, bytes.fromhex("0000000042520000"))["value"] == 52.5


def test_signed_scaled_and_big_endian_fields_round_trip() -> None:
    values = {"u16": 0x1234, "s8": -20.0, "nib": 9}
    data = encode_fields(MIXED, values)
    assert data[:2] == b"\x12\x34"
    assert decode_fields(MIXED, data) == values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"u16": 70000}, r"'u16': 70000 is outside 0\.\.65535"),
        ({"u16": -1}, "outside"),
        ({"s8": math.nan}, "not a finite number"),
        ({"s8": "3"}, "not a number"),
        ({"s8": True}, "not a number"),
        ({"nope": 1}, "unknown field"),
    ],
)
def test_encoder_names_field_value_and_limit(values: dict[str, object], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_fields(MIXED, values)


def test_short_frame_is_a_decode_error_naming_the_length() -> None:
    with pytest.raises(DecodeError, match="needs 8 bytes, frame has 3"):
        decode_fields(CELLS, b"\x00\x01\x02")


@settings(max_examples=300)
@given(st.binary(max_size=12))
def test_fuzz_any_bytes_give_values_or_codec_error(data: bytes) -> None:
    for layout in (CELLS, FLOATS, MIXED):
        with contextlib.suppress(CodecError):
            decode_fields(layout, data)


@settings(max_examples=200)
@given(st.lists(st.integers(1000, 1000 + 0xFFE), min_size=4, max_size=4))
def test_round_trip_cells(mv: list[int]) -> None:
    values = {f"cell{k}": v for k, v in enumerate(mv)}
    assert decode_fields(CELLS, encode_fields(CELLS, values)) == values


def test_can_frame_text_forms() -> None:
    assert parse_can_frame("1B0#0011223344556677") == (0x1B0, bytes.fromhex("0011223344556677"))
    assert (
        format_can_frame(0x0607FF83, bytes.fromhex("03F0002142520000"))
        == "0607FF83#03F0002142520000"
    )
    assert format_can_frame(0x0BA, b"\x00") == "0BA#00"
    for bad, msg in [
        ("1B0", "<ID>#<hexdata>"),
        ("XYZ#00", "not hex"),
        ("1B0#0", "odd number"),
        ("1B0#001122334455667788", "at most 8"),
        ("FFFFFFFFF#00", "outside"),
    ]:
        with pytest.raises(DecodeError, match=msg):
            parse_can_frame(bad)
    assert parse_hex("24 56 00 21") == bytes.fromhex("24560021")
