"""Telnet state machine: client openings, line endings, escaping, NAWS, garbage.

The client byte sequences are constructed, not captured: from RFC 854 (commands,
CR LF / CR NUL), RFC 857 (ECHO), RFC 858 (SUPPRESS-GO-AHEAD), RFC 1073 (NAWS),
RFC 1143 (no negotiation loops), and each client's documented behaviour:
- PuTTY (telnet.c): on connect it actively asks WILL NAWS, WILL TSPEED, WILL TTYPE,
  WILL NEW-ENVIRON, DO ECHO, WILL SGA, DO SGA (its `opts[]` table, in that order),
  answers DO NAWS with the size subnegotiation, and sends CR LF for Enter.
- Linux netkit telnet / busybox telnet: on a non-23 port they wait for the server,
  answer WILL ECHO/WILL SGA with DO, DO NAWS with WILL NAWS + SB NAWS, and in
  character mode send CR NUL for Enter.
- Windows telnet.exe: answers DO/WILL like netkit, sends CR LF for Enter.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero_telnet_console.protocol import (
    DO,
    DONT,
    IAC,
    OPT_ECHO,
    OPT_LINEMODE,
    OPT_NAWS,
    OPT_NEW_ENVIRON,
    OPT_SGA,
    OPT_TSPEED,
    OPT_TTYPE,
    SB,
    SE,
    WILL,
    WONT,
    Key,
    Named,
    Reply,
    TelnetParser,
    WindowSize,
    command,
    encode_output,
)

OPENING = command(WILL, OPT_ECHO) + command(WILL, OPT_SGA) + command(DO, OPT_NAWS)


def naws(width: int, height: int) -> bytes:
    return bytes(
        (IAC, SB, OPT_NAWS, *width.to_bytes(2, "big"), *height.to_bytes(2, "big"), IAC, SE)
    )


def keys(events: Sequence[object]) -> list[Key]:
    return [e for e in events if isinstance(e, Key)]


def replies(events: Sequence[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Reply))


def chars(events: Sequence[object]) -> str:
    return "".join(k.char if k.named is None else f"<{k.named.value}>" for k in keys(events))


def started() -> TelnetParser:
    parser = TelnetParser()
    assert parser.opening() == OPENING
    return parser


def test_opening_asks_once() -> None:
    parser = TelnetParser()
    assert parser.opening() == OPENING
    assert parser.opening() == OPENING  # still pending: asking again is harmless
    parser.feed(command(DO, OPT_ECHO) + command(DO, OPT_SGA) + command(WILL, OPT_NAWS))
    assert parser.opening() == b""  # all agreed: nothing more to ask


def test_linux_telnet_answers_then_types_with_cr_nul() -> None:
    parser = started()
    events = parser.feed(
        command(DO, OPT_ECHO) + command(DO, OPT_SGA) + command(WILL, OPT_NAWS) + naws(120, 40)
    )
    assert replies(events) == b""  # answers to our own requests need no reply (RFC 1143)
    assert WindowSize(120, 40) in events
    assert parser.character_mode
    assert chars(parser.feed(b"d")) == "d"
    assert chars(parser.feed(b":set x 1\r\x00")) == ":set x 1<enter>"


def test_putty_opening_gets_each_option_answered_once() -> None:
    parser = started()
    putty = (
        command(WILL, OPT_NAWS)
        + command(WILL, OPT_TSPEED)
        + command(WILL, OPT_TTYPE)
        + command(WILL, OPT_NEW_ENVIRON)
        + command(DO, OPT_ECHO)
        + command(WILL, OPT_SGA)
        + command(DO, OPT_SGA)
    )
    events = parser.feed(putty)
    assert replies(events) == (
        command(DONT, OPT_TSPEED)
        + command(DONT, OPT_TTYPE)
        + command(DONT, OPT_NEW_ENVIRON)
        + command(DO, OPT_SGA)
    )
    # PuTTY then answers our opening; nothing loops
    events = parser.feed(command(DO, OPT_ECHO) + command(DO, OPT_SGA) + naws(80, 24))
    assert replies(events) == b""
    assert parser.character_mode
    assert chars(parser.feed(b"q\r\n")) == "q<enter>"


def test_windows_telnet_cr_lf_is_one_enter() -> None:
    parser = started()
    parser.feed(command(DO, OPT_ECHO) + command(DO, OPT_SGA) + command(WILL, OPT_NAWS))
    assert chars(parser.feed(b"p\r\nh\r\n")) == "p<enter>h<enter>"


def test_cr_lf_split_across_reads() -> None:
    parser = started()
    assert chars(parser.feed(b"x\r")) == "x<enter>"
    assert chars(parser.feed(b"\ny")) == "y"


def test_bare_lf_and_bare_cr_are_enter() -> None:
    parser = started()
    assert chars(parser.feed(b"a\nb\rc")) == "a<enter>b<enter>c"


def test_line_mode_client_refusing_echo() -> None:
    parser = started()
    events = parser.feed(command(DONT, OPT_ECHO) + command(DONT, OPT_SGA) + command(WONT, OPT_NAWS))
    assert replies(events) == b""
    assert not parser.character_mode
    assert chars(parser.feed(b"c\r\n")) == "c<enter>"


def test_client_turning_an_agreed_option_off_gets_one_confirmation() -> None:
    parser = started()
    parser.feed(command(DO, OPT_ECHO))
    events = parser.feed(command(DONT, OPT_ECHO))
    assert replies(events) == command(WONT, OPT_ECHO)
    assert replies(parser.feed(command(DONT, OPT_ECHO))) == b""  # no loop
    # asked again later: we agree again
    assert replies(parser.feed(command(DO, OPT_ECHO))) == command(WILL, OPT_ECHO)


def test_unsupported_options_are_refused() -> None:
    parser = started()
    events = parser.feed(command(DO, OPT_LINEMODE) + command(WILL, OPT_LINEMODE))
    assert replies(events) == command(WONT, OPT_LINEMODE) + command(DONT, OPT_LINEMODE)
    # a WONT/DONT for something never enabled needs no answer
    assert replies(parser.feed(command(WONT, 99) + command(DONT, 99))) == b""


def test_iac_iac_is_a_literal_255_byte() -> None:
    parser = started()
    # 0xFF alone is not valid UTF-8, so it becomes an "other" key, not a crash
    events = parser.feed(bytes((IAC, IAC)) + b"a")
    assert [k.named for k in keys(events)] == [Named.OTHER, None]


def test_naws_with_escaped_255_and_resize() -> None:
    parser = started()
    events = parser.feed(bytes((IAC, SB, OPT_NAWS, 0, IAC, IAC, 0, 50, IAC, SE)))
    assert events == [WindowSize(255, 50)]
    assert parser.feed(naws(10, 2)) == [WindowSize(20, 5)]  # clamped to the minimum
    assert parser.feed(naws(0, 0)) == [WindowSize(20, 5)]  # 0 = unknown: keep
    assert parser.feed(naws(60000, 60000)) == [WindowSize(500, 200)]


def test_naws_split_byte_by_byte() -> None:
    parser = started()
    events = []
    for byte in naws(100, 30):
        events += parser.feed(bytes((byte,)))
    assert events == [WindowSize(100, 30)]


def test_over_long_subnegotiation_is_dropped() -> None:
    parser = started()
    data = bytes((IAC, SB, OPT_NAWS)) + bytes(1000) + bytes((IAC, SE)) + b"k"
    assert chars(parser.feed(data)) == "k"
    assert parser.width == 80


def test_commands_ip_ec_el_ayt() -> None:
    parser = started()
    events = parser.feed(bytes((IAC, 244, IAC, 247, IAC, 248, IAC, 246, IAC, 241)))
    assert [k.named for k in keys(events)] == [Named.INTERRUPT, Named.BACKSPACE, Named.ERASE_LINE]
    assert b"yes" in replies(events)


def test_control_keys() -> None:
    parser = started()
    events = parser.feed(b"\x03\x04\x7f\x08\x15\t\x01")
    assert [k.named for k in keys(events)] == [
        Named.INTERRUPT,
        Named.EOF,
        Named.BACKSPACE,
        Named.BACKSPACE,
        Named.ERASE_LINE,
        Named.TAB,
        Named.OTHER,
    ]


def test_arrow_keys_and_escape() -> None:
    parser = started()
    events = parser.feed(b"\x1b[A\x1b[B\x1bOC\x1b[1;5D\x1b[15~")
    assert [k.named for k in keys(events)] == [
        Named.UP,
        Named.DOWN,
        Named.RIGHT,
        Named.OTHER,  # ctrl-left: parameters, not a plain arrow
        Named.OTHER,  # F5
    ]
    assert parser.feed(b"\x1b") == []  # could start a sequence: wait
    assert [k.named for k in keys(parser.flush_escape())] == [Named.ESCAPE]
    assert chars(parser.feed(b"\x1bq")) == "<escape>q"
    assert chars(parser.feed(b"\x1b\r\n")) == "<escape><enter>"


def test_utf8_split_across_reads() -> None:
    parser = started()
    euro = "€".encode()
    assert parser.feed(euro[:1]) == []
    assert chars(parser.feed(euro[1:])) == "€"


def test_encode_output() -> None:
    assert encode_output("a\nb\r\nc") == b"a\r\nb\r\nc"
    assert b"\xff" not in encode_output("ÿ")  # UTF-8 never contains 0xFF; escaping is a guard


@settings(max_examples=200)
@given(st.binary(max_size=512))
def test_any_bytes_never_crash(data: bytes) -> None:
    parser = started()
    events = parser.feed(data) + parser.flush_escape()
    for event in events:
        assert isinstance(event, Key | WindowSize | Reply)
        if isinstance(event, WindowSize):
            assert 20 <= event.width <= 500
            assert 5 <= event.height <= 200
        if isinstance(event, Reply):
            assert len(event.data) <= 64


@settings(max_examples=200)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_split_anywhere_gives_the_same_keys(data: bytes, cuts: list[int]) -> None:
    whole = started()
    expected = whole.feed(data) + whole.flush_escape()
    pieces = sorted({min(c, len(data)) for c in cuts})
    split = started()
    events: list[object] = []
    start = 0
    for cut in [*pieces, len(data)]:
        events += split.feed(data[start:cut])
        start = cut
    events += split.flush_escape()
    assert keys(events) == keys(expected)
    assert replies(events) == replies(expected)
