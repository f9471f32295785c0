"""SoyoSource GTN limiter port (RS485, 4800 8N1): frames both ways, and a stream framer.

Facts from syssi/esphome-soyosource-gtn-virtual-meter (components/soyosource_modbus/
soyosource_modbus.cpp: demand frame, status query and reply; README) and the secondlifestorage
thread 7631 "Limiter inverter with RS485 load setting". Three frames travel on the limiter bus:

* power demand, 8 bytes: ``A 56 00 21 Ph Pl 80 CS``, P in W (u16 big-endian),
  CS = (264 - Ph - Pl) mod 256, A the address byte (0x24 by default);
* status query, 8 bytes: ``A 00 00 00 00 00 00 00``;
* status reply, 15 bytes: ``23 01 01 00`` + 10 data bytes + 1 checksum byte.
  The reply checksum's algorithm is unknown (syssi soyosource_modbus.cpp, README), so a reply is accepted on
  its header and on plausible values (syssi's limits plus ours), never on CS.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from gridzero.codec import (
    DecodeError,
    EncodeError,
    Field,
    Layout,
    Order,
    decode_fields,
    encode_fields,
    frame_length,
)

DEFAULT_ADDRESS = 0x24
"""The limiter's start/address byte (syssi soyosource_modbus.cpp; ESPHome's default, every capture uses it)."""

REPLY_HEADER = bytes((0x23, 0x01, 0x01, 0x00))
"""First four bytes of every status reply (syssi soyosource_modbus.cpp)."""

DEMAND_LAYOUT: Layout = (
    Field("address", 0, 8, order=Order.BIG),
    Field("power_w", 32, 16, order=Order.BIG, unit="W"),
    Field("checksum", 56, 8, order=Order.BIG),
)
# Byte index -> constant value of the demand frame (syssi soyosource_modbus.cpp).
DEMAND_CONSTANTS: Mapping[int, int] = MappingProxyType({1: 0x56, 2: 0x00, 3: 0x21, 6: 0x80})
DEMAND_LENGTH = 8

QUERY_LAYOUT: Layout = (Field("address", 0, 8, order=Order.BIG),)
QUERY_CONSTANTS: Mapping[int, int] = MappingProxyType(dict.fromkeys(range(1, 8), 0))
QUERY_LENGTH = 8

REPLY_LAYOUT: Layout = (
    Field("operation_status", 32, 8, order=Order.BIG),
    Field("battery_voltage_v", 40, 16, order=Order.BIG, scale=0.1, unit="V"),
    Field("battery_current_a", 56, 16, order=Order.BIG, scale=0.1, unit="A"),
    Field("ac_voltage_v", 72, 16, order=Order.BIG, unit="V"),
    Field("ac_frequency_hz", 88, 8, order=Order.BIG, scale=0.5, unit="Hz"),
    Field("temperature_c", 96, 16, order=Order.BIG, scale=0.1, offset=-30.0, unit="°C"),
    Field("checksum", 112, 8, order=Order.BIG),
)
REPLY_CONSTANTS: Mapping[int, int] = MappingProxyType(dict(enumerate(REPLY_HEADER)))
REPLY_LENGTH = 15

# Operation status codes (syssi soyosource_inverter.cpp; 10 is "AC voltage too low").
OPERATION_STATUS_TEXT: Mapping[int, str] = MappingProxyType(
    {
        0: "normal",
        1: "startup",
        2: "standby",
        3: "startup aborted",
        4: "error or battery mode",
        10: "ac voltage too low",
    }
)

assert frame_length(DEMAND_LAYOUT) == DEMAND_LENGTH
assert frame_length(REPLY_LAYOUT) == REPLY_LENGTH


def demand_checksum(power_hi: int, power_lo: int) -> int:
    """syssi soyosource_modbus.cpp: (264 - Ph - Pl) mod 256, i.e. bytes 1..7 sum to 0xFF."""
    return (264 - power_hi - power_lo) % 256


def placeholder_reply_checksum(frame14: bytes) -> int:
    """The checksum our encoder (the simulator) puts on a status reply.

    PLACEHOLDER: the real algorithm is unknown (syssi soyosource_modbus.cpp, README: not a plain sum/xor/CRC-8
    of the captured samples). We use the display protocol's rule (syssi soyosource_display.cpp),
    0xFF - sum(bytes 1..13) mod 256; it does not match real captures, and no
    decoder here checks it.
    """
    return (0xFF - sum(frame14[1:14])) % 256


@dataclass(frozen=True, slots=True)
class DemandFrame:
    """A power demand: the inverter feeds ``power_w`` into the house."""

    power_w: int
    address: int = DEFAULT_ADDRESS


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """The status query a master sends; some inverters answer with a StatusReply."""

    address: int = DEFAULT_ADDRESS


@dataclass(frozen=True, slots=True)
class StatusReply:
    """An inverter's status reply (syssi soyosource_modbus.cpp, README); ``checksum`` is kept as received, unverified."""

    operation_status: int
    battery_voltage_v: float
    battery_current_a: float
    ac_voltage_v: float
    ac_frequency_hz: float
    temperature_c: float
    checksum: int | None = None

    @property
    def battery_power_w(self) -> float:
        """V x I: the reply has no power field (syssi soyosource_modbus.cpp, README)."""
        return round(self.battery_voltage_v * self.battery_current_a, 2)

    @property
    def operation_status_text(self) -> str:
        return OPERATION_STATUS_TEXT.get(self.operation_status, "unknown")


Frame = DemandFrame | StatusQuery | StatusReply


@dataclass(frozen=True, slots=True)
class Plausibility:
    """Limits a status reply must respect to be believed (its checksum cannot be checked).

    The first four are syssi's (soyosource_inverter.cpp drops the frame above
    them); the battery voltage limit is ours: the largest GTN model is a 96 V
    unit, and 200 V leaves room for its charge voltage.
    """

    max_battery_power_w: float = 2500.0
    max_ac_voltage_v: float = 300.0
    max_frequency_hz: float = 100.0
    max_temperature_c: float = 200.0
    max_battery_voltage_v: float = 200.0

    def problem(self, reply: StatusReply) -> str | None:
        """Why the reply is implausible, or None."""
        checks = (
            ("battery power", reply.battery_power_w, self.max_battery_power_w, "W"),
            ("AC voltage", reply.ac_voltage_v, self.max_ac_voltage_v, "V"),
            ("AC frequency", reply.ac_frequency_hz, self.max_frequency_hz, "Hz"),
            ("temperature", reply.temperature_c, self.max_temperature_c, "°C"),
            ("battery voltage", reply.battery_voltage_v, self.max_battery_voltage_v, "V"),
        )
        for name, value, limit, unit in checks:
            if value > limit:
                return (
                    f"status reply: {name} {value:g} {unit} is above the plausible {limit:g} {unit}"
                )
        return None


DEFAULT_PLAUSIBILITY = Plausibility()


# ---------------------------------------------------------------- encoders


def _check_address(address: object) -> int:
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFF:
        raise EncodeError(f"soyosource address {address!r} is not a byte 0x00..0xFF")
    return address


def encode_demand(power_w: object, address: object = DEFAULT_ADDRESS) -> bytes:
    """The 8-byte demand frame for a whole number of watts 0..65535."""
    addr = _check_address(address)
    if isinstance(power_w, float) and math.isfinite(power_w) and power_w.is_integer():
        power_w = int(power_w)
    if isinstance(power_w, bool) or not isinstance(power_w, int):
        raise EncodeError(f"soyosource demand {power_w!r} is not a whole number of watts")
    if not 0 <= power_w <= 0xFFFF:
        raise EncodeError(f"soyosource demand {power_w} W is outside 0..65535 W")
    template = bytearray(DEMAND_LENGTH)
    for index, value in DEMAND_CONSTANTS.items():
        template[index] = value
    checksum = demand_checksum(power_w >> 8, power_w & 0xFF)
    values = {"address": addr, "power_w": power_w, "checksum": checksum}
    return encode_fields(DEMAND_LAYOUT, values, bytes(template))


def encode_query(address: object = DEFAULT_ADDRESS) -> bytes:
    """The 8-byte status query."""
    return encode_fields(QUERY_LAYOUT, {"address": _check_address(address)}, bytes(QUERY_LENGTH))


def encode_status_reply(reply: StatusReply) -> bytes:
    """A 15-byte status reply (for the simulator).

    With ``reply.checksum`` None the placeholder checksum is used
    (see placeholder_reply_checksum).
    """
    values: dict[str, object] = {
        "operation_status": reply.operation_status,
        "battery_voltage_v": reply.battery_voltage_v,
        "battery_current_a": reply.battery_current_a,
        "ac_voltage_v": reply.ac_voltage_v,
        "ac_frequency_hz": reply.ac_frequency_hz,
        "temperature_c": reply.temperature_c,
        "checksum": 0 if reply.checksum is None else reply.checksum,
    }
    frame = bytearray(encode_fields(REPLY_LAYOUT, values, REPLY_HEADER + bytes(11)))
    if reply.checksum is None:
        frame[14] = placeholder_reply_checksum(bytes(frame))
    return bytes(frame)


def encode_frame(frame: Frame) -> bytes:
    """Any frame's bytes."""
    if isinstance(frame, DemandFrame):
        return encode_demand(frame.power_w, frame.address)
    if isinstance(frame, StatusQuery):
        return encode_query(frame.address)
    return encode_status_reply(frame)


# ---------------------------------------------------------------- decoders


def _check_constants(data: bytes, constants: Mapping[int, int], what: str) -> None:
    for index, expected in constants.items():
        if data[index] != expected:
            raise DecodeError(
                f"{what}: byte {index} is {data[index]:#04x}, expected {expected:#04x}"
            )


def _check_length(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise DecodeError(f"{what}: {len(data)} bytes, need {length}")


def decode_demand(data: bytes) -> DemandFrame:
    """A demand frame; the checksum must match."""
    _check_length(data, DEMAND_LENGTH, "soyosource demand frame")
    _check_constants(data, DEMAND_CONSTANTS, "soyosource demand frame")
    values = decode_fields(DEMAND_LAYOUT, data)
    expected = demand_checksum(data[4], data[5])
    if values["checksum"] != expected:
        raise DecodeError(
            f"soyosource demand frame: checksum {data[7]:#04x}, expected {expected:#04x}"
        )
    return DemandFrame(power_w=int(data[4] << 8 | data[5]), address=data[0])


def decode_query(data: bytes) -> StatusQuery:
    """A status query."""
    _check_length(data, QUERY_LENGTH, "soyosource status query")
    _check_constants(data, QUERY_CONSTANTS, "soyosource status query")
    return StatusQuery(address=data[0])


def _number(values: Mapping[str, object], name: str) -> float:
    value = values[name]
    assert isinstance(value, int | float)
    return round(float(value), 2)


def decode_status_reply(
    data: bytes, plausibility: Plausibility | None = DEFAULT_PLAUSIBILITY
) -> StatusReply:
    """A status reply; refused if implausible (pass ``plausibility=None`` to skip that)."""
    _check_length(data, REPLY_LENGTH, "soyosource status reply")
    _check_constants(data, REPLY_CONSTANTS, "soyosource status reply")
    values = decode_fields(REPLY_LAYOUT, data)
    reply = StatusReply(
        operation_status=data[4],
        battery_voltage_v=_number(values, "battery_voltage_v"),
        battery_current_a=_number(values, "battery_current_a"),
        ac_voltage_v=_number(values, "ac_voltage_v"),
        ac_frequency_hz=_number(values, "ac_frequency_hz"),
        temperature_c=_number(values, "temperature_c"),
        checksum=data[14],
    )
    if plausibility is not None:
        problem = plausibility.problem(reply)
        if problem is not None:
            raise DecodeError(problem)
    return reply


def decode_frame(data: bytes, plausibility: Plausibility | None = DEFAULT_PLAUSIBILITY) -> Frame:
    """Whichever of the three frames ``data`` is (exactly one frame, no garbage)."""
    if len(data) == REPLY_LENGTH:
        return decode_status_reply(data, plausibility)
    if len(data) != DEMAND_LENGTH:
        raise DecodeError(
            f"soyosource frame: {len(data)} bytes, need 8 (demand, query) or 15 (status reply)"
        )
    if data[1] == 0x00:
        return decode_query(data)
    return decode_demand(data)


# ---------------------------------------------------------------- stream framer


class _Kind(Enum):
    DEMAND = "demand"
    QUERY = "query"
    REPLY = "reply"


_LENGTHS = {_Kind.DEMAND: DEMAND_LENGTH, _Kind.QUERY: QUERY_LENGTH, _Kind.REPLY: REPLY_LENGTH}
_CONSTANTS = {
    _Kind.DEMAND: DEMAND_CONSTANTS,
    _Kind.QUERY: QUERY_CONSTANTS,
    _Kind.REPLY: REPLY_CONSTANTS,
}


class _Verdict(Enum):
    VALID = "valid"  # a complete, valid frame starts here
    NO = "no"  # no frame starts here
    MORE = "more"  # a frame may start here: need more bytes to tell


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What one ``feed``/``flush`` produced: frames in stream order and bytes skipped."""

    frames: tuple[Frame, ...]
    skipped_bytes: int


@dataclass(slots=True)
class FramerCounters:
    """Running totals since the framer was made."""

    frames: int = 0
    skipped_bytes: int = 0
    bad_checksums: int = 0
    implausible_replies: int = 0


@dataclass(slots=True)
class _Candidate:
    verdict: _Verdict
    length: int  # the frame's length (VALID), the longest it may grow to (MORE)
    frame: Frame | None = None
    problem: str = ""  # "checksum" or "implausible" when a complete frame was refused


@dataclass(slots=True)
class Framer:
    """Finds demand frames, status queries and status replies in a byte stream.

    ``feed(data)`` may be called with any split of the stream. Bytes that start
    no valid frame are skipped one at a time (so a frame right after garbage is
    never swallowed by it). When two candidates overlap (a truncated frame
    followed by a whole one can look like a frame), the later one wins: a
    truncated frame cannot hide the frame that follows it. A frame that could
    still be overlapped by one not yet complete is held back until more bytes
    arrive or ``flush()`` says the line went idle.

    ``addresses`` are the address bytes accepted on demand frames and queries.
    """

    addresses: frozenset[int] = frozenset({DEFAULT_ADDRESS})
    plausibility: Plausibility = DEFAULT_PLAUSIBILITY
    counters: FramerCounters = field(default_factory=FramerCounters)
    _buffer: bytearray = field(default_factory=bytearray)

    @property
    def pending(self) -> int:
        """Bytes held back (a frame not yet complete, or one that may be overlapped)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> FeedResult:
        """Add received bytes; return the frames now certain."""
        self._buffer.extend(data)
        return self._drain(idle=False)

    def flush(self) -> FeedResult:
        """The line went idle: release frames held back for a possible overlap.

        Bytes of an incomplete frame at the end stay buffered.
        """
        return self._drain(idle=True)

    def _drain(self, *, idle: bool) -> FeedResult:
        buf = bytes(self._buffer)
        frames: list[Frame] = []
        skipped = 0
        pos = 0
        memo: dict[int, _Verdict] = {}
        while pos < len(buf):
            head = self._candidate(buf, pos)
            inner = (
                _Verdict.NO
                if head.verdict is _Verdict.NO
                else self._inner(buf, pos, head.length, idle, memo)
            )
            if head.verdict is _Verdict.VALID and inner is _Verdict.NO and head.frame is not None:
                frames.append(head.frame)
                pos += head.length
                continue
            if head.verdict is not _Verdict.NO and inner is not _Verdict.VALID:
                break  # a frame may be growing here, or one may yet overlap it
            # No frame starts here, or a later overlapping frame beats this one.
            if head.problem == "checksum":
                self.counters.bad_checksums += 1
            elif head.problem == "implausible":
                self.counters.implausible_replies += 1
            skipped += 1
            pos += 1
        del self._buffer[:pos]
        self.counters.frames += len(frames)
        self.counters.skipped_bytes += skipped
        return FeedResult(tuple(frames), skipped)

    def _inner(
        self, buf: bytes, pos: int, length: int, idle: bool, memo: dict[int, _Verdict]
    ) -> _Verdict:
        """VALID if a frame starting inside buf[pos:pos+length] survives; MORE if one may."""
        result = _Verdict.NO
        for inner in range(pos + 1, min(pos + length, len(buf))):
            verdict = self._survives(buf, inner, idle, memo)
            if verdict is _Verdict.VALID:
                return _Verdict.VALID
            if verdict is _Verdict.MORE:
                result = _Verdict.MORE
        return result

    def _survives(self, buf: bytes, pos: int, idle: bool, memo: dict[int, _Verdict]) -> _Verdict:
        """Whether a frame at ``pos`` is valid and no later overlapping frame beats it.

        When ``idle``, frames still incomplete count as absent.
        """
        if pos in memo:
            return memo[pos]
        head = self._candidate(buf, pos)
        result = _Verdict.NO
        if head.verdict is not _Verdict.NO:
            inner = self._inner(buf, pos, head.length, idle, memo)
            if inner is _Verdict.VALID:
                result = _Verdict.NO
            elif head.verdict is _Verdict.MORE:
                result = _Verdict.NO if idle else _Verdict.MORE
            else:
                result = inner if inner is _Verdict.MORE else _Verdict.VALID
        memo[pos] = result
        return result

    def _candidate(self, buf: bytes, pos: int) -> _Candidate:
        available = len(buf) - pos
        longest = 0
        refused = ""
        for kind in _Kind:
            if kind is not _Kind.REPLY and buf[pos] not in self.addresses:
                continue
            length = _LENGTHS[kind]
            constants = _CONSTANTS[kind]
            if any(i < available and buf[pos + i] != v for i, v in constants.items()):
                continue
            if available < length:
                longest = max(longest, length)
                continue
            frame, problem = self._validate(kind, buf[pos : pos + length])
            if frame is not None:
                return _Candidate(_Verdict.VALID, length, frame)
            refused = problem
        if longest:
            return _Candidate(_Verdict.MORE, longest)
        return _Candidate(_Verdict.NO, 1, problem=refused)

    def _validate(self, kind: _Kind, data: bytes) -> tuple[Frame | None, str]:
        if kind is _Kind.DEMAND:
            if data[7] != demand_checksum(data[4], data[5]):
                return None, "checksum"
            return DemandFrame(power_w=data[4] << 8 | data[5], address=data[0]), ""
        if kind is _Kind.QUERY:
            return StatusQuery(address=data[0]), ""
        try:
            return decode_status_reply(data, self.plausibility), ""
        except DecodeError:
            return None, "implausible"


def frame_to_json(frame: Frame) -> dict[str, object]:
    """A JSON-ready description of a frame (used by the CLI)."""
    if isinstance(frame, DemandFrame):
        return {"frame": "demand", "address": f"0x{frame.address:02X}", "power_w": frame.power_w}
    if isinstance(frame, StatusQuery):
        return {"frame": "status_query", "address": f"0x{frame.address:02X}"}
    return {
        "frame": "status_reply",
        "operation_status": frame.operation_status,
        "operation_status_text": frame.operation_status_text,
        "battery_voltage_v": frame.battery_voltage_v,
        "battery_current_a": frame.battery_current_a,
        "battery_power_w": frame.battery_power_w,
        "ac_voltage_v": frame.ac_voltage_v,
        "ac_frequency_hz": frame.ac_frequency_hz,
        "temperature_c": frame.temperature_c,
        "checksum": None if frame.checksum is None else f"0x{frame.checksum:02X}",
        "checksum_verified": False,
    }
