"""Telnet protocol state machine: bytes from the client in, events out.

Pure: no sockets, no clock. One `TelnetParser` per connection turns whatever
the client sends (any bytes, split anywhere) into `Key`, `WindowSize` and
`Reply` events. Option negotiation follows RFC 854 with the loop-free
"Q method" of RFC 1143 reduced to the states we need.

What we ask for (see `TelnetParser.opening`):

- WILL ECHO (RFC 857) and WILL SUPPRESS-GO-AHEAD (RFC 858): together they put
  Windows telnet, Linux/busybox telnet and PuTTY into character mode, so a
  single key press reaches us at once and we do the echoing.
- DO NAWS (RFC 1073): the client reports its window size in a subnegotiation,
  and again whenever the window is resized.

Every other option is refused (WONT/DONT), once per request. Clients that
ignore all of this (netcat, a line-mode telnet) still work: their keys arrive
followed by CR LF, which becomes an ``enter`` key.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from enum import Enum

# RFC 854 commands
IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
GA = 249
EL = 248
EC = 247
AYT = 246
AO = 245
IP = 244
BRK = 243
DM = 242
NOP = 241
SE = 240

# options
OPT_ECHO = 1  # RFC 857
OPT_SGA = 3  # RFC 858
OPT_TM = 6  # RFC 860, timing mark
OPT_TTYPE = 24  # RFC 1091
OPT_NAWS = 31  # RFC 1073
OPT_TSPEED = 32  # RFC 1079
OPT_LINEMODE = 34  # RFC 1184
OPT_NEW_ENVIRON = 39  # RFC 1572

# Options we perform ourselves (answer DO with WILL) and options we want the
# client to perform (answer WILL with DO).
LOCAL_OPTIONS: frozenset[int] = frozenset({OPT_ECHO, OPT_SGA})
REMOTE_OPTIONS: frozenset[int] = frozenset({OPT_NAWS, OPT_SGA})

# A subnegotiation longer than this is garbage; NAWS needs 4 bytes (8 when
# every byte is an escaped 255).
MAX_SUBNEG_BYTES = 64
# An ANSI escape sequence longer than this is abandoned.
MAX_ESCAPE_CHARS = 16

DEFAULT_WIDTH = 80
DEFAULT_HEIGHT = 24
# Window sizes are clamped to what a renderer can sensibly handle.
MIN_WIDTH, MAX_WIDTH = 20, 500
MIN_HEIGHT, MAX_HEIGHT = 5, 200


class Named(Enum):
    """Keys that are not a printable character."""

    ENTER = "enter"
    BACKSPACE = "backspace"
    ESCAPE = "escape"
    INTERRUPT = "interrupt"  # Ctrl-C or IAC IP
    EOF = "eof"  # Ctrl-D
    ERASE_LINE = "erase_line"  # Ctrl-U or IAC EL
    TAB = "tab"
    UP = "up"
    DOWN = "down"
    LEFT = "left"
    RIGHT = "right"
    OTHER = "other"  # any other control character or escape sequence


@dataclass(frozen=True, slots=True)
class Key:
    """One key: a printable character (``char``) or a `Named` key."""

    char: str = ""
    named: Named | None = None

    @property
    def is_char(self) -> bool:
        return self.named is None


@dataclass(frozen=True, slots=True)
class WindowSize:
    """The client's window, from NAWS, clamped to sane bounds."""

    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes the server must send back (negotiation answers)."""

    data: bytes


Event = Key | WindowSize | Reply


class _State(Enum):
    DATA = 0
    IAC = 1
    OPTION = 2  # after IAC WILL/WONT/DO/DONT
    SB = 3  # inside a subnegotiation
    SB_IAC = 4  # IAC seen inside a subnegotiation
    CR = 5  # CR seen, waiting to swallow LF or NUL


class _Esc(Enum):
    NONE = 0
    ESC = 1  # ESC seen
    CSI = 2  # ESC [ or ESC O seen, collecting parameters


_CSI_KEYS: dict[str, Named] = {"A": Named.UP, "B": Named.DOWN, "C": Named.RIGHT, "D": Named.LEFT}
_CONTROL_KEYS: dict[str, Named] = {
    "\x03": Named.INTERRUPT,
    "\x04": Named.EOF,
    "\x08": Named.BACKSPACE,
    "\x7f": Named.BACKSPACE,
    "\x15": Named.ERASE_LINE,
    "\t": Named.TAB,
}


def command(verb: int, option: int) -> bytes:
    """``IAC <verb> <option>``."""
    return bytes((IAC, verb, option))


@dataclass(slots=True)
class TelnetParser:
    """Incremental telnet decoder for one connection.

    ``local`` / ``remote`` hold, per option, True (enabled), False (disabled)
    or None (we asked and wait for the answer: RFC 1143 WANTYES).
    """

    local: dict[int, bool | None] = field(default_factory=dict)
    remote: dict[int, bool | None] = field(default_factory=dict)
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    _state: _State = _State.DATA
    _verb: int = 0
    _sb: bytearray = field(default_factory=bytearray)
    _sb_overflow: bool = False
    _esc: _Esc = _Esc.NONE
    _esc_buf: str = ""
    _decoder: codecs.BufferedIncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def opening(self) -> bytes:
        """What the server sends first: WILL ECHO, WILL SGA, DO NAWS (each asked once)."""
        out = bytearray()
        for option in (OPT_ECHO, OPT_SGA):
            if self.local.get(option) is not True:
                self.local[option] = None
                out += command(WILL, option)
        if self.remote.get(OPT_NAWS) is not True:
            self.remote[OPT_NAWS] = None
            out += command(DO, OPT_NAWS)
        return bytes(out)

    @property
    def character_mode(self) -> bool:
        """True once the client agreed that we echo (it then sends each key at once)."""
        return self.local.get(OPT_ECHO) is True

    def feed(self, data: bytes) -> list[Event]:
        """Decode ``data`` (any bytes, any split) into events."""
        events: list[Event] = []
        text = bytearray()
        for byte in data:
            self._byte(byte, text, events)
        self._flush_text(text, events)
        return events

    def flush_escape(self) -> list[Event]:
        """A lone ESC waits for a possible ``[``; call this when input pauses to emit it."""
        if self._esc is _Esc.NONE:
            return []
        named = Named.ESCAPE if self._esc is _Esc.ESC else Named.OTHER
        self._esc = _Esc.NONE
        return [Key(named=named)]

    # --- byte level -------------------------------------------------------

    def _byte(self, byte: int, text: bytearray, events: list[Event]) -> None:
        state = self._state
        if state is _State.CR:
            self._state = _State.DATA
            if byte in (0, 10):  # CR NUL and CR LF are one Enter (RFC 854)
                return
            state = _State.DATA
        if state is _State.DATA:
            self._data_byte(byte, text, events)
        elif state is _State.IAC:
            self._iac_byte(byte, text, events)
        elif state is _State.OPTION:
            self._state = _State.DATA
            self._flush_text(text, events)
            self._negotiate(self._verb, byte, events)
        elif state is _State.SB:
            if byte == IAC:
                self._state = _State.SB_IAC
            else:
                self._sb_append(byte)
        else:
            self._sb_iac_byte(byte, text, events)

    def _sb_iac_byte(self, byte: int, text: bytearray, events: list[Event]) -> None:
        if byte == IAC:
            self._sb_append(IAC)
            self._state = _State.SB
        elif byte == SE:
            self._state = _State.DATA
            self._flush_text(text, events)
            self._subnegotiation(events)
        else:
            # RFC 854 allows nothing else here; abandon the subnegotiation
            # and treat the byte as a command so a broken client recovers.
            self._sb.clear()
            self._state = _State.IAC
            self._iac_byte(byte, text, events)

    def _data_byte(self, byte: int, text: bytearray, events: list[Event]) -> None:
        if byte == IAC:
            self._state = _State.IAC
        elif byte == 13:
            self._flush_text(text, events)
            self._emit_key(Key(named=Named.ENTER), events)
            self._state = _State.CR
        elif byte == 10:  # a bare LF (netcat, some line-mode clients) is Enter too
            self._flush_text(text, events)
            self._emit_key(Key(named=Named.ENTER), events)
        elif byte == 0:
            pass  # NUL carries nothing
        else:
            text.append(byte)

    def _iac_byte(self, byte: int, text: bytearray, events: list[Event]) -> None:
        self._state = _State.DATA
        if byte == IAC:
            text.append(IAC)  # IAC IAC is a literal 255
            return
        self._flush_text(text, events)
        if byte in (WILL, WONT, DO, DONT):
            self._verb = byte
            self._state = _State.OPTION
        elif byte == SB:
            self._sb.clear()
            self._sb_overflow = False
            self._state = _State.SB
        elif byte == IP:
            self._emit_key(Key(named=Named.INTERRUPT), events)
        elif byte == EC:
            self._emit_key(Key(named=Named.BACKSPACE), events)
        elif byte == EL:
            self._emit_key(Key(named=Named.ERASE_LINE), events)
        elif byte == AYT:
            events.append(Reply(b"\r\n[gridzero console: yes]\r\n"))
        # NOP, DM, BRK, AO, GA, SE outside SB and unknown commands carry nothing for us.

    def _sb_append(self, byte: int) -> None:
        if len(self._sb) < MAX_SUBNEG_BYTES:
            self._sb.append(byte)
        else:
            self._sb_overflow = True

    # --- negotiation (RFC 1143, simplified: no queue, we never change our mind) ---

    def _negotiate(self, verb: int, option: int, events: list[Event]) -> None:
        if verb in (DO, DONT):
            self._negotiate_local(verb == DO, option, events)
        else:
            self._negotiate_remote(verb == WILL, option, events)

    def _negotiate_local(self, enable: bool, option: int, events: list[Event]) -> None:
        state = self.local.get(option, False)
        if enable:
            if state is None:
                self.local[option] = True  # the answer to our WILL
            elif state is False:
                if option in LOCAL_OPTIONS:
                    self.local[option] = True
                    events.append(Reply(command(WILL, option)))
                else:
                    events.append(Reply(command(WONT, option)))
        elif state is None:
            self.local[option] = False  # our WILL was refused
        elif state is True:
            self.local[option] = False
            events.append(Reply(command(WONT, option)))

    def _negotiate_remote(self, enable: bool, option: int, events: list[Event]) -> None:
        state = self.remote.get(option, False)
        if enable:
            if state is None:
                self.remote[option] = True
            elif state is False:
                if option in REMOTE_OPTIONS:
                    self.remote[option] = True
                    events.append(Reply(command(DO, option)))
                else:
                    events.append(Reply(command(DONT, option)))
        elif state is None:
            self.remote[option] = False
        elif state is True:
            self.remote[option] = False
            events.append(Reply(command(DONT, option)))

    def _subnegotiation(self, events: list[Event]) -> None:
        data = bytes(self._sb)
        self._sb.clear()
        if self._sb_overflow or len(data) != 5 or data[0] != OPT_NAWS:
            return  # not NAWS, or malformed: ignore
        width = int.from_bytes(data[1:3], "big")
        height = int.from_bytes(data[3:5], "big")
        # RFC 1073: 0 means "unknown"; keep what we had.
        self.width = min(max(width, MIN_WIDTH), MAX_WIDTH) if width else self.width
        self.height = min(max(height, MIN_HEIGHT), MAX_HEIGHT) if height else self.height
        events.append(WindowSize(self.width, self.height))

    # --- text and keys ------------------------------------------------------

    def _flush_text(self, text: bytearray, events: list[Event]) -> None:
        if not text:
            return
        for char in self._decoder.decode(bytes(text)):
            self._char(char, events)
        text.clear()

    def _char(self, char: str, events: list[Event]) -> None:
        if self._esc is _Esc.ESC:
            if char in "[O":
                self._esc = _Esc.CSI
                self._esc_buf = ""
                return
            self._esc = _Esc.NONE
            events.append(Key(named=Named.ESCAPE))
        elif self._esc is _Esc.CSI:
            if "\x40" <= char <= "\x7e" and char != "[":
                self._esc = _Esc.NONE
                named = _CSI_KEYS.get(char, Named.OTHER) if not self._esc_buf else Named.OTHER
                events.append(Key(named=named))
            elif len(self._esc_buf) >= MAX_ESCAPE_CHARS or not ("\x20" <= char <= "\x3f"):
                self._esc = _Esc.NONE
                events.append(Key(named=Named.OTHER))
            else:
                self._esc_buf += char
            return
        if char == "\x1b":
            self._esc = _Esc.ESC
            return
        events.append(_char_key(char))

    def _emit_key(self, key: Key, events: list[Event]) -> None:
        # A pending lone ESC is a real Escape key once something else arrives.
        if self._esc is _Esc.ESC:
            events.append(Key(named=Named.ESCAPE))
        elif self._esc is _Esc.CSI:
            events.append(Key(named=Named.OTHER))
        self._esc = _Esc.NONE
        events.append(key)


def _char_key(char: str) -> Key:
    named = _CONTROL_KEYS.get(char)
    if named is not None:
        return Key(named=named)
    if char < " " or "\x7f" <= char < "\xa0" or char == "\ufffd":
        return Key(named=Named.OTHER)
    return Key(char=char)


def encode_output(text: str) -> bytes:
    """Text for the client: UTF-8, LF as CR LF (RFC 854 NVT), IAC doubled."""
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", errors="replace")
    return data.replace(bytes((IAC,)), bytes((IAC, IAC)))
