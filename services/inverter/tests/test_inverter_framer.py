"""The SoyoSource stream framer: frames survive garbage, truncation and any split."""

from __future__ import annotations

import itertools

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gridzero_inverter.codec import (
    DEFAULT_PLAUSIBILITY,
    DemandFrame,
    Frame,
    Framer,
    StatusQuery,
    StatusReply,
    decode_status_reply,
    encode_demand,
    encode_frame,
    encode_query,
)

DEMAND_600 = bytes.fromhex("2456002102588 0AE".replace(" ", ""))
REPLY_SYSSI = bytes.fromhex("23010100 00023E001700EF64029EB5".replace(" ", ""))


def _run(chunks: list[bytes], framer: Framer | None = None) -> list[Frame]:
    framer = framer or Framer()
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk).frames)
    out.extend(framer.flush().frames)
    return out


def test_frames_back_to_back() -> None:
    stream = DEMAND_600 + REPLY_SYSSI + encode_query() + encode_demand(0)
    frames = _run([stream])
    assert frames == [
        DemandFrame(600),
        decode_status_reply(REPLY_SYSSI),
        StatusQuery(),
        DemandFrame(0),
    ]


def test_garbage_before_between_and_after_is_counted() -> None:
    framer = Framer()
    frames = _run([b"\xff\x00\x13" + DEMAND_600 + b"\x55\xaa" + REPLY_SYSSI + b"\x01"], framer)
    assert frames == [DemandFrame(600), decode_status_reply(REPLY_SYSSI)]
    assert framer.counters.skipped_bytes == 6
    assert framer.counters.frames == 2


def test_byte_by_byte() -> None:
    stream = DEMAND_600 + REPLY_SYSSI
    assert _run([bytes([b]) for b in stream]) == [
        DemandFrame(600),
        decode_status_reply(REPLY_SYSSI),
    ]


def test_bad_checksum_is_skipped_and_counted() -> None:
    framer = Framer()
    bad = DEMAND_600[:7] + b"\xaf"
    assert _run([bad + DEMAND_600], framer) == [DemandFrame(600)]
    assert framer.counters.bad_checksums == 1


def test_implausible_reply_is_skipped_and_counted() -> None:
    framer = Framer()
    hot = bytearray(REPLY_SYSSI)
    hot[12:14] = (3000).to_bytes(2, "big")  # 270 °C
    assert _run([bytes(hot) + DEMAND_600], framer) == [DemandFrame(600)]
    assert framer.counters.implausible_replies == 1


def test_truncated_reply_does_not_swallow_the_next_frame() -> None:
    # A reply cut after 10 bytes followed by a demand frame: the 15 bytes from the
    # reply header look like a plausible reply, but the whole demand frame inside wins.
    assert _run([REPLY_SYSSI[:10] + DEMAND_600]) == [DemandFrame(600)]


def test_truncated_demand_whose_next_byte_completes_it() -> None:
    # 228 W has checksum 0x24, the address byte: 7 bytes of a 228 W frame followed
    # by a 600 W frame read as a whole 228 W frame; the later frame must win.
    d228 = encode_demand(228)
    assert d228[7] == 0x24
    assert _run([d228[:7] + DEMAND_600]) == [DemandFrame(600)]


def test_frame_held_back_until_flush_when_it_could_be_overlapped() -> None:
    framer = Framer()
    d228 = encode_demand(228)  # ends in 0x24: could be the start of another frame
    assert framer.feed(d228).frames == ()
    assert framer.pending == 8
    assert framer.flush().frames == (DemandFrame(228),)
    assert framer.pending == 0


def test_other_address_is_garbage_unless_configured() -> None:
    d = encode_demand(100, address=0x25)
    assert _run([d]) == []
    assert _run([d], Framer(addresses=frozenset({0x24, 0x25}))) == [DemandFrame(100, 0x25)]


def test_incomplete_frame_stays_pending_over_flush() -> None:
    framer = Framer()
    assert framer.feed(DEMAND_600[:5]).frames == ()
    assert framer.flush().frames == ()
    assert framer.feed(DEMAND_600[5:]).frames == (DemandFrame(600),)


# ------------------------------------------------------------------ property tests

demands = st.builds(DemandFrame, st.integers(0, 0xFFFF))
queries = st.just(StatusQuery())


@st.composite
def replies(draw: st.DrawFn) -> StatusReply:
    data = bytes.fromhex("23010100") + bytes(
        [
            draw(st.integers(0, 255)),
            *draw(st.integers(0, 1500)).to_bytes(2, "big"),
            *draw(st.integers(0, 600)).to_bytes(2, "big"),
            *draw(st.integers(0, 300)).to_bytes(2, "big"),
            draw(st.integers(0, 200)),
            *draw(st.integers(0, 2300)).to_bytes(2, "big"),
            draw(st.integers(0, 255)),
        ]
    )
    reply = decode_status_reply(data, plausibility=None)
    assume(DEFAULT_PLAUSIBILITY.problem(reply) is None)
    return reply


frames = st.one_of(demands, queries, replies())


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Random bytes, or a frame cut short (what a glitch or a reset sender leaves)."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=1, max_size=20))
    whole = encode_frame(draw(frames))
    return whole[: draw(st.integers(1, len(whole) - 1))]


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Frame], bytes]:
    parts = draw(st.lists(st.tuples(garbage(), frames), max_size=8))
    tail = draw(st.one_of(st.just(b""), garbage()))
    valid = [frame for _, frame in parts]
    data = b"".join(g + encode_frame(f) for g, f in parts) + tail
    return valid, data


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _is_subsequence(needles: list[Frame], haystack: list[Frame]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@settings(max_examples=200)
@given(streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_every_valid_frame_is_recovered(stream: tuple[list[Frame], bytes], cuts: list[int]) -> None:
    valid, data = stream
    found = _run(_split(data, cuts))
    assert _is_subsequence(valid, found), (valid, found, data.hex(" "))


@settings(max_examples=200)
@given(streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_gives_the_same_frames(
    stream: tuple[list[Frame], bytes], cuts: list[int]
) -> None:
    _, data = stream
    assert _run(_split(data, cuts)) == _run([data])


@settings(max_examples=200)
@given(st.binary(max_size=200), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_bytes_never_crash_and_buffer_stays_small(data: bytes, cuts: list[int]) -> None:
    framer = Framer()
    for chunk in _split(data, cuts):
        framer.feed(chunk)
        assert framer.pending <= 2 * 15
