"""R48 codec: golden frames with provenance, round trips, range checks, fuzzing."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.codec import CodecError, DecodeError, EncodeError, parse_can_frame
from gridzero_charger import codec
from gridzero_charger.codec import (
    Control,
    ErrorReply,
    OtherReading,
    Quantity,
    ReadAllRequest,
    Reading,
    ReadRequest,
    Register,
    SetPoint,
    StatusReading,
    WriteAck,
)


def frame(text: str) -> tuple[int, bytes]:
    return parse_can_frame(text)


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


# (frame, expected message, provenance)
GOLDEN_DECODE: list[tuple[str, object, str]] = [
    (
        "0607FF83#03F0002142520000",
        SetPoint(Register.ONLINE_VOLTAGE, 52.5),
        "52.5 V as float32 big-endian (R48.h byte layout), write layout (PurpleAlien rectifier.py)",
    ),
    (
        "0607FF83#03F0002442400000",
        SetPoint(Register.OFFLINE_VOLTAGE, 48.0),
        "float32 big-endian (R48.h byte layout) (48.0 V), PurpleAlien rectifier.py, endless-sphere register 0x24",
    ),
    (
        "0607FF83#03F000223F9AE148",
        SetPoint(Register.ONLINE_CURRENT, f32(1.21)),
        "float32 big-endian (R48.h byte layout) (1.21), PurpleAlien rectifier.py, endless-sphere register 0x22",
    ),
    (
        "0607FF83#03F000193DCCCCCD",
        SetPoint(Register.OFFLINE_CURRENT, f32(0.10)),
        "float32 big-endian (R48.h byte layout) (0.10), PurpleAlien rectifier.py, endless-sphere register 0x19",
    ),
    (
        "0607FF83#03F0003200010000",
        SetPoint(Register.WALK_IN_ENABLE, 1.0),
        "PurpleAlien rectifier.py walk_in(enable=True)",
    ),
    (
        "0607FF83#03F0003200000000",
        SetPoint(Register.WALK_IN_ENABLE, 0.0),
        "PurpleAlien rectifier.py walk_in(enable=False)",
    ),
    (
        "0607FF83#03F0003900010000",
        SetPoint(Register.RESTART_AFTER_OVERVOLTAGE, 1.0),
        "PurpleAlien rectifier.py restart_overvoltage(True)",
    ),
    (
        "06080783#03F0002142520000",
        SetPoint(Register.ONLINE_VOLTAGE, 52.5),
        "R48.h ID layout: set-points also reported to work on 0x06080783 (endless-sphere)",
    ),
    (
        "06080783#00F0818000000000",
        Control(dc_off=True),
        "anikrooz VertivPsu.cpp sendControl, leodesigner set_control control byte, bit 7 DC off",
    ),
    (
        "06080783#00F0018000000000",
        Control(),
        "anikrooz VertivPsu.cpp sendControl, leodesigner set_control control byte, only bit 0",
    ),
    (
        "06080783#00F0058000000000",
        Control(ac_off=True),
        "anikrooz VertivPsu.cpp sendControl, leodesigner set_control: anikrooz starts with AC off (bit 2)",
    ),
    (
        "06000783#01F0000100000000",
        ReadRequest(Quantity.OUTPUT_VOLTAGE),
        "read request (PurpleAlien rectifier.py, leodesigner)",
    ),
    (
        "06000783#01F0004000000000",
        ReadRequest(Quantity.STATUS),
        "PurpleAlien rectifier.py, leodesigner status register 0x40 (R48.c)",
    ),
    (
        "06000783#00F0008046A53400",
        ReadAllRequest(),
        "PurpleAlien rectifier.py, leodesigner read-all as PurpleAlien sends it",
    ),
    (
        "06000783#00F000807A000000",
        ReadAllRequest(),
        "PurpleAlien rectifier.py, leodesigner read-all variant (R48.c)",
    ),
    (
        "060F8003#41F0000142560000",
        Reading(0, Quantity.OUTPUT_VOLTAGE, 53.5, more=False),
        "PurpleAlien rectifier.py, leodesigner reply layout, 53.5 V from float32 big-endian (R48.h byte layout)",
    ),
    (
        "060F8007#41F000033F000000",
        Reading(0, Quantity.CURRENT_LIMIT, 0.5, more=True),
        "R48.h ID layout 0x060F8007 (more frames follow), 0.50 from R48.h byte layout",
    ),
    (
        "060F8003#41F0000B41C80000",
        OtherReading(0, 0x0B, 0x41C80000),
        "PurpleAlien rectifier.py, leodesigner register 0x0B (ambient temperature, R48.c): kept raw",
    ),
    (
        "060F8003#43F0003500010000",
        WriteAck(0, 0x35, 0x00010000),
        "PurpleAlien rectifier.py, endless-sphere ack seen as 43 F0 00 35 (R48.c)",
    ),
    (
        "060F800B#41F0000242200000",
        Reading(1, Quantity.OUTPUT_CURRENT, 40.0),
        "R48.h ID layout: source address 1 in bits 10..3",
    ),
    (
        "060F8003#43F3002100000000",
        ErrorReply(0, 0x43, 0x21, 0xF3),
        "R48.h: error byte 0xF3 invalid data",
    ),
]


@pytest.mark.parametrize(("text", "expected", "source"), GOLDEN_DECODE)
def test_golden_decode(text: str, expected: object, source: str) -> None:
    assert codec.decode_frame(*frame(text)) == expected, source


@pytest.mark.parametrize(
    ("built", "text", "source"),
    [
        (
            codec.encode_voltage(52.5),
            "0607FF83#03F0002142520000",
            "issue 5 golden, R48.h byte layout",
        ),
        (codec.encode_voltage(41.0), "0607FF83#03F0002142240000", "R48.h byte layout (41.0 V)"),
        (codec.encode_voltage(58.5), "0607FF83#03F00021426A0000", "R48.h byte layout (58.5 V)"),
        (
            codec.encode_voltage(56.0, offline=True, cells_in_series=14),
            "0607FF83#03F0002442600000",
            "R48.h byte layout",
        ),
        (
            codec.encode_current_fraction(1.0),
            "0607FF83#03F000223F800000",
            "R48.h byte layout (1.00)",
        ),
        (
            codec.encode_current_fraction(0.10, offline=True),
            "0607FF83#03F000193DCCCCCD",
            "R48.h byte layout (0.10)",
        ),
        (
            codec.encode_control(Control(dc_off=True)),
            "06080783#00F0818000000000",
            "anikrooz VertivPsu.cpp sendControl, leodesigner set_control",
        ),
        (
            codec.encode_control(Control()),
            "06080783#00F0018000000000",
            "anikrooz VertivPsu.cpp sendControl, leodesigner set_control",
        ),
        (
            codec.encode_control(Control(fan_full=True, flash_led=True)),
            "06080783#00F0198000000000",
            "anikrooz VertivPsu.cpp sendControl, leodesigner set_control bits 4 and 3",
        ),
        (
            codec.encode_read_request(Quantity.OUTPUT_CURRENT),
            "06000783#01F0000200000000",
            "PurpleAlien rectifier.py, leodesigner",
        ),
        (
            codec.encode_read_all_request(),
            "06000783#00F0008000000000",
            "PurpleAlien rectifier.py, leodesigner (R48.c: zeros)",
        ),
        (
            codec.encode_ac_input_current(10.0),
            "0607FF83#03F0001A41200000",
            "PurpleAlien rectifier.py limit_input(10.0) layout",
        ),
        (
            codec.encode_reading(Quantity.OUTPUT_VOLTAGE, 53.5),
            "060F8003#41F0000142560000",
            "PurpleAlien rectifier.py, leodesigner",
        ),
    ],
)
def test_golden_encode(built: codec.CanFrame, text: str, source: str) -> None:
    assert (built.arbitration_id, built.data) == frame(text), source


def test_walk_in_is_two_frames_flag_then_time() -> None:
    # PurpleAlien rectifier.py, endless-sphere: the correct form is two frames (0x32 flag, then 0x29 time).
    on = codec.encode_walk_in(True, 10.0)
    assert [f.data.hex().upper() for f in on] == ["03F0003200010000", "03F0002941200000"]
    off = codec.encode_walk_in(False)
    assert [f.data.hex().upper() for f in off] == ["03F0003200000000"]
    with pytest.raises(EncodeError, match="time"):
        codec.encode_walk_in(True)


def test_status_bits_are_named() -> None:
    # byte 4 bit 7 = over-voltage, byte 5 bit 6 = module switch (R48.h, PurpleAlien rectifier.py, leodesigner)
    message = codec.decode_frame(*frame("060F8003#41F0004080400000"))
    assert isinstance(message, StatusReading)
    assert message.active == ("over_voltage", "module_off")
    assert message.flags["over_voltage"] is True
    assert message.flags["fan_failure"] is False
    assert len(message.flags) == 32


def test_error_reply_names_known_and_unknown_codes() -> None:
    known = codec.decode_frame(*frame("060F8003#41F2000100000000"))
    assert isinstance(known, ErrorReply)
    assert known.error_name == "invalid_command"
    unknown = codec.decode_frame(*frame("060F8003#4177000100000000"))
    assert isinstance(unknown, ErrorReply)
    assert (unknown.error_code, unknown.error_name) == (0x77, "unknown")


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.floats(41.0, 58.5), st.booleans())
def test_voltage_round_trip(voltage_v: float, offline: bool) -> None:
    if offline:
        voltage_v = min(voltage_v, 56.0)  # 14 cells x 4.0 V: the highest stored fallback
    built = codec.encode_voltage(
        voltage_v, offline=offline, cells_in_series=14 if offline else None
    )
    message = codec.decode_frame(built.arbitration_id, built.data)
    assert isinstance(message, SetPoint)
    assert message.value == f32(voltage_v)
    assert message.register == (Register.OFFLINE_VOLTAGE if offline else Register.ONLINE_VOLTAGE)


@settings(max_examples=100)
@given(st.floats(0.10, 1.21), st.booleans())
def test_fraction_round_trip(fraction: float, offline: bool) -> None:
    if offline:
        fraction = codec.FALLBACK_FRACTION_MAX  # the only stored current the encoder takes
    built = codec.encode_current_fraction(fraction, offline=offline)
    message = codec.decode_frame(built.arbitration_id, built.data)
    assert isinstance(message, SetPoint)
    assert message.value == f32(fraction)


@pytest.mark.parametrize("bits", range(16))
def test_control_round_trip(bits: int) -> None:
    control = Control(
        dc_off=bool(bits & 1),
        fan_full=bool(bits & 2),
        flash_led=bool(bits & 4),
        ac_off=bool(bits & 8),
    )
    built = codec.encode_control(control)
    assert codec.decode_frame(built.arbitration_id, built.data) == control


@settings(max_examples=100)
@given(st.sets(st.sampled_from(codec.STATUS_NAMES)), st.integers(0, 0x7F), st.booleans())
def test_status_round_trip(active: set[str], module: int, more: bool) -> None:
    built = codec.encode_status(dict.fromkeys(active, True), module=module, more=more)
    message = codec.decode_frame(built.arbitration_id, built.data)
    assert isinstance(message, StatusReading)
    assert set(message.active) == active
    assert (message.module, message.more) == (module, more)


@pytest.mark.parametrize("quantity", list(codec.QUANTITIES))
def test_reading_round_trip(quantity: int) -> None:
    q = Quantity(quantity)
    built = codec.encode_reading(q, 12.5, module=3)
    assert codec.decode_frame(built.arbitration_id, built.data) == Reading(3, q, 12.5)


@pytest.mark.parametrize("quantity", list(Quantity))
def test_read_request_round_trip(quantity: Quantity) -> None:
    built = codec.encode_read_request(quantity)
    assert codec.decode_frame(built.arbitration_id, built.data) == ReadRequest(quantity)


def test_write_ack_and_error_reply_round_trip() -> None:
    written = codec.encode_voltage(52.5)
    ack = codec.encode_write_ack(Register.ONLINE_VOLTAGE, written.data, module=2)
    assert codec.decode_frame(ack.arbitration_id, ack.data) == WriteAck(2, 0x21, 0x42520000)
    err = codec.encode_error_reply(0x43, 0x24, 0xF3)
    assert codec.decode_frame(err.arbitration_id, err.data) == ErrorReply(0, 0x43, 0x24, 0xF3)


def test_current_scaling_defaults() -> None:
    # PurpleAlien rectifier.py, endless-sphere: 62.5 A ≙ 1.21 on the R48-3000e3, so 1.00 ≈ 51.7 A
    assert codec.current_to_fraction(62.5) == pytest.approx(1.21)
    assert codec.fraction_to_current(1.0) == pytest.approx(51.65, abs=0.01)
    # R48.c's scaling, selectable: 1.00 ≙ 62.5 A
    assert codec.current_to_fraction(62.5, fraction_at_rated=1.0) == pytest.approx(1.0)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: codec.encode_voltage(58.6),
            r"online voltage \(register 0x21\): 58.6 V .*41..58.5 V",
        ),
        (
            lambda: codec.encode_voltage(40.9, offline=True, cells_in_series=12),
            r"offline voltage \(register 0x24\)",
        ),
        (lambda: codec.encode_voltage(math.nan), "not a finite number"),
        (lambda: codec.encode_voltage(math.inf), "not a finite number"),
        (lambda: codec.encode_voltage("52"), "not a number"),
        (lambda: codec.encode_voltage(True), "not a number"),
        (lambda: codec.encode_voltage(None), "not a number"),
        (
            lambda: codec.encode_current_fraction(1.22),
            r"register 0x22\): 1.22 is outside 0.1..1.21",
        ),
        (lambda: codec.encode_current_fraction(0.0, offline=True), r"register 0x19"),
        (lambda: codec.encode_current_fraction(-math.inf), "not a finite number"),
        (lambda: codec.encode_set_point(0x77, 1.0), "not writable"),
        (lambda: codec.encode_set_point(Register.WALK_IN_ENABLE, 2), "not a flag"),
        (lambda: codec.encode_ac_input_current(0.0), "register 0x1a"),
        (lambda: codec.encode_status({"bogus": True}), "unknown flag"),
        (lambda: codec.encode_reading(Quantity.OUTPUT_VOLTAGE, math.nan), "not a finite"),
        (lambda: codec.current_to_fraction(10.0, rated_current_a=0.0), "must be > 0"),
        (lambda: codec.reply_id(0x80), "outside 0..127"),
    ],
)
def test_encoder_refuses(call: object, match: str) -> None:
    assert callable(call)
    with pytest.raises(EncodeError, match=match):
        call()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0607FF83#03F00021425200", "7 data bytes, need 8"),
        ("060F8003#", "0 data bytes"),
        ("12345678#41F0000142520000", "not an R48 ID"),
        ("123#41F0000142520000", "not an R48 ID"),
        ("060F8003#41F000017FC00000", r"output_voltage: value nan"),
        ("060F8003#41F000017F800000", r"output_voltage: value inf"),
        ("060F8003#41F000017F7FFFFF", r"output_voltage: .* is outside -1..100 V"),
        ("0607FF83#03F00021426C0000", r"online_voltage: 59 V is outside 41..58.5 V"),
        ("0607FF83#03F000223FA00000", r"online_current_fraction: 1.25 is outside"),
        ("0607FF83#03F0007742520000", "unknown register 0x77"),
        ("0607FF83#03F0003200020000", "flag byte 0x02"),
        ("0607FF83#03F1002142520000", "error byte 0xf1"),
        ("0607FF83#03F0012142520000", "byte 2 is 0x01"),
        ("06080783#00F0808000000000", "bit 0 must be 1"),
        ("06080783#00F0438000000000", "unknown bits 0x42"),
        ("06080783#20F0008000000000", "message type 0x20"),
        ("06000783#01F0007700000000", "unknown register 0x77"),
        ("060F8003#45F0000100000000", "reply message type 0x45"),
    ],
)
def test_decoder_refuses(text: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode_frame(*frame(text))


def test_decoder_refuses_out_of_range_id() -> None:
    with pytest.raises(DecodeError, match=r"outside 0\.\.0x1FFFFFFF"):
        codec.decode_frame(0x20000000, bytes(8))


# --- the stored fallback: no code path writes a high voltage or current (issue 16) ----------


@pytest.mark.parametrize(
    "call",
    [
        # 58.5 V stored = 4.875 V per cell on a 12S pack: what the old runtime setting allowed
        lambda: codec.encode_set_point(Register.OFFLINE_VOLTAGE, 58.5),
        lambda: codec.encode_set_point(Register.OFFLINE_VOLTAGE, 58.5, cells_in_series=12),
        lambda: codec.encode_set_point(Register.OFFLINE_VOLTAGE, 48.1, cells_in_series=12),
        lambda: codec.encode_set_point(
            Register.OFFLINE_VOLTAGE, 48.0, arbitration_id=codec.CONTROL_ID
        ),
        lambda: codec.encode_voltage(48.1, offline=True, cells_in_series=12),
        lambda: codec.encode_voltage(48.0, offline=True),  # no cells: no bound, refused
        # 1.21 stored = 62.5 A whenever the service is dead
        lambda: codec.encode_set_point(Register.OFFLINE_CURRENT, 1.21),
        lambda: codec.encode_current_fraction(0.11, offline=True),
    ],
)
def test_stored_fallback_above_its_bound_is_refused(call: Callable[[], object]) -> None:
    with pytest.raises(EncodeError, match=r"register 0x(24|19)"):
        call()


def test_stored_fallback_bound_is_cells_x_4_0_v() -> None:
    assert codec.decode_frame(
        *_frame_of(codec.encode_voltage(48.0, offline=True, cells_in_series=12))
    ) == SetPoint(Register.OFFLINE_VOLTAGE, 48.0)
    with pytest.raises(EncodeError, match=r"48.1 V is outside 41..48 V \(12 cells x 4 V"):
        codec.encode_voltage(48.1, offline=True, cells_in_series=12)
    with pytest.raises(EncodeError, match="cells in series True is not a whole number"):
        codec.encode_voltage(46.0, offline=True, cells_in_series=True)  # type: ignore[arg-type]


def test_online_voltage_with_cells_is_bounded_by_the_pack() -> None:
    codec.encode_voltage(50.4, cells_in_series=12)
    with pytest.raises(EncodeError, match=r"50.5 V is outside 41..50.4 V \(12 cells x 4.2 V"):
        codec.encode_voltage(50.5, cells_in_series=12)
    codec.encode_voltage(58.5)  # without cells: the rectifier's own range (the CLI's use)


def _frame_of(frame: codec.CanFrame) -> tuple[int, bytes]:
    return frame.arbitration_id, frame.data


# --- fuzzing --------------------------------------------------------------------------------

KNOWN_IDS = [
    codec.SET_ID,
    codec.CONTROL_ID,
    codec.READ_REQUEST_ID,
    codec.REPLY_ID,
    codec.REPLY_MORE_ID,
    0x060F800B,
]
ids = st.one_of(st.sampled_from(KNOWN_IDS), st.integers(0, 0x1FFFFFFF), st.integers(-5, 2**32))
payloads = st.one_of(
    st.binary(min_size=0, max_size=12),
    st.tuples(
        st.sampled_from([0x00, 0x01, 0x03, 0x41, 0x43]),
        st.sampled_from([0xF0, 0xF3, 0x00]),
        st.sampled_from([0x00, 0x01, 0x81]),
        st.sampled_from([0x01, 0x03, 0x21, 0x22, 0x32, 0x40, 0x80]),
        st.binary(min_size=4, max_size=4),
    ).map(lambda t: bytes(t[:4]) + t[4]),
)


@settings(max_examples=200)
@given(ids, payloads)
def test_fuzz_decoder_gives_message_or_codec_error(arbitration_id: int, data: bytes) -> None:
    try:
        message = codec.decode_frame(arbitration_id, data)
    except CodecError:
        return
    out = codec.message_to_dict(message)
    assert out["type"] == type(message).__name__
    for value in out.values():
        assert not (isinstance(value, float) and not math.isfinite(value))
