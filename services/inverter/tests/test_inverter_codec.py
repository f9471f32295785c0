"""SoyoSource limiter frames: golden bytes with provenance, round trips, fuzz."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.codec import CodecError, DecodeError, EncodeError
from gridzero_inverter.codec import (
    DemandFrame,
    StatusQuery,
    StatusReply,
    decode_demand,
    decode_frame,
    decode_query,
    decode_status_reply,
    encode_demand,
    encode_query,
    encode_status_reply,
    placeholder_reply_checksum,
)

# syssi soyosource_modbus.cpp (captured examples, arithmetic checked), the same bytes as the
# captures in syssi soyosource_modbus.cpp SoyosourceModbus::send comments.
GOLDEN_DEMANDS = [
    (0, "24 56 00 21 00 00 80 08"),
    (40, "24 56 00 21 00 28 80 E0"),
    (600, "24 56 00 21 02 58 80 AE"),
    # syssi soyosource_modbus.cpp: 40 W split over 2, 3, 4 and 5 units.
    (20, "24 56 00 21 00 14 80 F4"),
    (13, "24 56 00 21 00 0D 80 FB"),
    (10, "24 56 00 21 00 0A 80 FE"),
    (8, "24 56 00 21 00 08 80 00"),
]

# Status replies captured in syssi's sources (syssi soyosource_modbus.cpp, README).
GOLDEN_REPLIES = [
    # syssi components/soyosource_modbus/soyosource_modbus.cpp, "Soyosource info frame" comment
    (
        "23 01 01 00 00 02 3E 00 17 00 EF 64 02 9E B5",
        StatusReply(0, 57.4, 2.3, 239.0, 50.0, 37.0, 0xB5),
    ),
    # syssi soyosource_inverter.cpp, frame quoted from secondlifestorage thread 7631
    (
        "23 01 01 00 00 01 DB 00 A1 00 DD 64 02 CA 01",
        StatusReply(0, 47.5, 16.1, 221.0, 50.0, 41.4, 0x01),
    ),
    # syssi soyosource_inverter.cpp, "Response of my broken soyosource" (status 4)
    (
        "23 01 01 00 04 02 BD 00 46 00 EF 64 02 43 20",
        StatusReply(4, 70.1, 7.0, 239.0, 50.0, 27.9, 0x20),
    ),
]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(("power_w", "frame"), GOLDEN_DEMANDS)
def test_golden_demand(power_w: int, frame: str) -> None:
    assert encode_demand(power_w) == h(frame)
    assert decode_demand(h(frame)) == DemandFrame(power_w)


def test_golden_query() -> None:
    # syssi soyosource_modbus.cpp query_status() and README
    assert encode_query() == h("24 00 00 00 00 00 00 00")
    assert decode_query(h("24 00 00 00 00 00 00 00")) == StatusQuery()


@pytest.mark.parametrize(("frame", "reply"), GOLDEN_REPLIES)
def test_golden_reply(frame: str, reply: StatusReply) -> None:
    decoded = decode_status_reply(h(frame))
    assert decoded == reply
    assert encode_status_reply(decoded) == h(frame)  # checksum kept as received


def test_reply_derived_values() -> None:
    reply = decode_status_reply(h(GOLDEN_REPLIES[0][0]))
    assert reply.battery_power_w == pytest.approx(57.4 * 2.3)
    assert reply.operation_status_text == "normal"
    assert decode_status_reply(h(GOLDEN_REPLIES[2][0])).operation_status_text == (
        "error or battery mode"
    )


def test_address_is_configurable() -> None:
    frame = encode_demand(600, address=0x25)
    assert frame == h("25 56 00 21 02 58 80 AE")
    assert decode_demand(frame) == DemandFrame(600, 0x25)
    assert encode_query(0x30) == h("30 00 00 00 00 00 00 00")


def test_placeholder_checksum_used_when_none() -> None:
    reply = StatusReply(0, 52.0, 10.0, 230.0, 50.0, 35.0)
    frame = encode_status_reply(reply)
    assert frame[14] == placeholder_reply_checksum(frame)
    assert frame[:4] == h("23 01 01 00")


@pytest.mark.parametrize("value", [-1, 65536, 1.5, math.nan, math.inf, "600", None, True])
def test_encode_demand_refuses(value: object) -> None:
    with pytest.raises(EncodeError):
        encode_demand(value)


@pytest.mark.parametrize("address", [-1, 256, "0x24", True])
def test_encode_refuses_bad_address(address: object) -> None:
    with pytest.raises(EncodeError, match="address"):
        encode_demand(0, address)
    with pytest.raises(EncodeError, match="address"):
        encode_query(address)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("24 56 00 21 02 58 80", "7 bytes, need 8"),
        ("24 56 00 21 02 58 80 AF", "checksum 0xaf, expected 0xae"),
        ("24 57 00 21 02 58 80 AE", "byte 1 is 0x57, expected 0x56"),
        ("24 56 00 21 02 58 81 AE", "byte 6 is 0x81, expected 0x80"),
    ],
)
def test_decode_demand_refuses(frame: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_demand(h(frame))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({12: 0x0C, 13: 0x1C}, "temperature 280 °C is above the plausible 200"),  # raw 3100
        ({9: 0x01, 10: 0x2D}, "AC voltage 301 V"),
        ({11: 0xCA}, "AC frequency 101 Hz"),
        ({7: 0x03, 8: 0xE8}, "battery power"),  # 57.4 V x 100 A
        ({5: 0x07, 6: 0xD1}, "battery voltage 200.1 V"),
    ],
)
def test_implausible_reply_refused(patch: dict[int, int], message: str) -> None:
    data = bytearray(h(GOLDEN_REPLIES[0][0]))
    if "battery voltage" in message:
        data[7:9] = b"\x00\x00"  # keep the power plausible
    for index, value in patch.items():
        data[index] = value
    with pytest.raises(DecodeError, match=message):
        decode_status_reply(bytes(data))
    assert decode_status_reply(bytes(data), plausibility=None).checksum == 0xB5


def test_reply_bad_header_and_length() -> None:
    with pytest.raises(DecodeError, match="byte 1 is 0x02"):
        decode_status_reply(h("23 02 01 00 00 02 3E 00 17 00 EF 64 02 9E B5"))
    with pytest.raises(DecodeError, match="14 bytes, need 15"):
        decode_status_reply(h("23 01 01 00 00 02 3E 00 17 00 EF 64 02 9E"))


def test_decode_frame_dispatches() -> None:
    assert decode_frame(h("24 56 00 21 02 58 80 AE")) == DemandFrame(600)
    assert decode_frame(h("24 00 00 00 00 00 00 00")) == StatusQuery()
    assert isinstance(decode_frame(h(GOLDEN_REPLIES[0][0])), StatusReply)
    with pytest.raises(DecodeError, match="3 bytes, need 8"):
        decode_frame(b"\x24\x56\x00")


# ------------------------------------------------------------------ round trips and fuzz


@settings(max_examples=200)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF))
def test_demand_round_trip(power_w: int, address: int) -> None:
    frame = encode_demand(power_w, address)
    assert decode_demand(frame) == DemandFrame(power_w, address)
    assert sum(frame[1:]) % 256 == 0xFF  # syssi soyosource_modbus.cpp: bytes 1..7 sum to 0xFF


@settings(max_examples=200)
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
)
def test_reply_round_trip(status: int, v: int, i: int, ac: int, f: int, t: int, cs: int) -> None:
    raw = h("23 01 01 00") + bytes([status, *v.to_bytes(2, "big"), *i.to_bytes(2, "big")])
    raw += bytes([*ac.to_bytes(2, "big"), f, *t.to_bytes(2, "big"), cs])
    reply = decode_status_reply(raw, plausibility=None)
    assert encode_status_reply(reply) == raw


@settings(max_examples=200)
@given(st.binary(max_size=24))
def test_any_bytes_decode_or_codec_error(data: bytes) -> None:
    for decoder in (decode_demand, decode_query, decode_status_reply, decode_frame):
        with contextlib.suppress(CodecError):
            decoder(data)
