"""One console session: login, keys, screen, acks and timeouts, without sockets.

Pure: the server hands in the bytes it read, ``now_s`` (monotonic seconds) and
the shared `Snapshot`; the session answers with an `Output`: bytes to send,
commands to publish, a password to check, whether to close. Checking a
password is slow on purpose (PBKDF2), so the server does it off its loop and
reports back through `Session.login_result`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gridzero.contract import Ack, Topics
from gridzero_telnet_console import screen
from gridzero_telnet_console.auth import MAX_PASSWORD_CHARS, IdleTimer, LoginGuard
from gridzero_telnet_console.commands import (
    Interpreter,
    Message,
    Publish,
    Quit,
    Redraw,
    View,
)
from gridzero_telnet_console.protocol import (
    Key,
    Named,
    Reply,
    TelnetParser,
    WindowSize,
    encode_output,
)
from gridzero_telnet_console.snapshot import Snapshot

MESSAGE_S = 20.0  # how long a message line stays


class Phase(Enum):
    LOGIN = "login"
    CHECKING = "checking"  # a password is being verified
    RUNNING = "running"
    CLOSED = "closed"


@dataclass(slots=True)
class Output:
    """What the server must do after a call into the session."""

    data: bytes = b""
    publish: list[Publish] = field(default_factory=list)
    check_password: str | None = None
    close: bool = False


@dataclass(frozen=True, slots=True)
class SessionConfig:
    topics: Topics
    need_password: bool = True
    idle_timeout_s: float = 600.0
    login_timeout_s: float = 30.0
    max_line_chars: int = 200
    ack_timeout_s: float = 5.0


@dataclass(slots=True)
class _Pending:
    said: str  # the operator's words for it, repeated in the answer
    sent_s: float


class Session:
    """State of one telnet connection."""

    def __init__(
        self, config: SessionConfig, guard: LoginGuard, address: str, now_s: float
    ) -> None:
        self.config = config
        self.guard = guard
        self.address = address
        self.parser = TelnetParser()
        self.interpreter = Interpreter(config.topics, config.max_line_chars)
        self.idle = IdleTimer(config.idle_timeout_s, now_s)
        self.started_s = now_s
        self.phase = Phase.LOGIN if config.need_password else Phase.RUNNING
        self.password = ""
        self.message = ""
        self.message_s = 0.0
        self.pending: dict[str, _Pending] = {}
        self.ack_cursor = 0
        self.full_redraw = True

    # --- entry points -----------------------------------------------------------------

    def start(self, now_s: float, snap: Snapshot, title_right: str = "") -> Output:
        """The first bytes: negotiation, then the password prompt or the first screen."""
        out = Output(self.parser.opening())
        locked = self.guard.locked_for_s(self.address, now_s)
        if locked > 0:
            self.phase = Phase.CLOSED
            out.data += encode_output(f"too many failed logins; try again in {locked:.0f} s\n")
            out.close = True
            return out
        self.ack_cursor = snap.seq
        out.data += encode_output("gridzero console\n")
        if self.phase is Phase.LOGIN:
            out.data += encode_output("password: ")
        else:
            out.data += self._draw(now_s, snap, title_right)
        return out

    def feed(self, data: bytes, now_s: float, snap: Snapshot, title_right: str = "") -> Output:
        """Bytes from the client."""
        out = Output()
        if self.phase is Phase.CLOSED:
            return out
        redraw = False
        for event in self.parser.feed(data):
            if isinstance(event, Reply):
                out.data += event.data
            elif isinstance(event, WindowSize):
                self.full_redraw = True
                redraw = True
            else:
                self.idle.touch(now_s)
                redraw |= self._key(event, now_s, snap, out)
            if out.close or out.check_password is not None:
                break  # whatever follows a quit or a password waits (or is dropped)
        if redraw and self.phase is Phase.RUNNING and not out.close:
            out.data += self._draw(now_s, snap, title_right)
        return out

    def tick(self, now_s: float, snap: Snapshot, title_right: str = "") -> Output:
        """Called about once a second: timeouts, acks, the periodic redraw."""
        out = Output()
        if self.phase is Phase.CLOSED:
            return out
        for event in self.parser.flush_escape():
            if isinstance(event, Key) and self.phase is Phase.RUNNING:
                self._key(event, now_s, snap, out)
        if self.phase in (Phase.LOGIN, Phase.CHECKING):
            if now_s - self.started_s >= self.config.login_timeout_s:
                return self._close(out, "login timed out")
            return out
        if self.idle.expired(now_s):
            return self._close(out, f"idle for {self.config.idle_timeout_s:.0f} s")
        self._collect_acks(now_s, snap)
        if not self.interpreter.state.paused or self.full_redraw:
            out.data += self._draw(now_s, snap, title_right)
        return out

    def login_result(self, ok: bool, now_s: float, snap: Snapshot, title_right: str = "") -> Output:
        """The answer to `Output.check_password`."""
        out = Output()
        if self.phase is not Phase.CHECKING:
            return out
        locked = self.guard.locked_for_s(self.address, now_s)
        if locked > 0:
            # another connection from this address tripped the lockout meanwhile
            return self._close(out, f"too many failed logins; locked for {locked:.0f} s")
        if ok:
            self.guard.success(self.address)
            self.phase = Phase.RUNNING
            self.idle.touch(now_s)
            self.ack_cursor = snap.seq
            self.full_redraw = True
            out.data += self._draw(now_s, snap, title_right)
            return out
        locked = self.guard.failure(self.address, now_s)
        if locked > 0:
            return self._close(out, f"too many failed logins; locked for {locked:.0f} s")
        self.phase = Phase.LOGIN
        out.data += encode_output("\nwrong password\npassword: ")
        return out

    def refuse(self, reason: str) -> Output:
        """Close the connection with a reason (the server's limits)."""
        return self._close(Output(), reason)

    def end(self) -> list[Publish]:
        """The connection is gone (quit, timeout or the client vanished): what to undo."""
        self.phase = Phase.CLOSED
        return self.interpreter.leave()

    # --- keys -------------------------------------------------------------------------

    def _key(self, key: Key, now_s: float, snap: Snapshot, out: Output) -> bool:
        if self.phase is Phase.LOGIN:
            self._login_key(key, out)
            return False
        if self.phase is not Phase.RUNNING:
            return False  # keys typed while the password is checked are dropped
        redraw = False
        for action in self.interpreter.key(key, snap):
            if isinstance(action, Publish):
                out.publish.append(action)
                self.pending[action.topic] = _Pending(action.words, now_s)
                # an older answer on the line would read as this key's answer
                self._say(f"sent {action.words}; waiting for the answer", now_s)
                redraw = True
            elif isinstance(action, Message):
                self._say(action.text, now_s)
                redraw = True
            elif isinstance(action, Redraw):
                self.full_redraw |= action.full
                redraw = True
            elif isinstance(action, Quit):
                self._close(out, action.reason)
                return False
        return redraw

    def _login_key(self, key: Key, out: Output) -> None:
        if key.named is Named.ENTER:
            if not self.password:
                return  # the Enter of a CR LF pair or an empty line: ask again silently
            out.check_password, self.password = self.password, ""
            self.phase = Phase.CHECKING
        elif key.named in (Named.INTERRUPT, Named.EOF):
            self._close(out, "bye")
        elif key.named is Named.BACKSPACE:
            self.password = self.password[:-1]
        elif key.named is Named.ERASE_LINE:
            self.password = ""
        elif key.is_char and len(self.password) < MAX_PASSWORD_CHARS + 1:
            self.password += key.char  # one over the limit, so an over-long one fails

    # --- acks -------------------------------------------------------------------------

    def _collect_acks(self, now_s: float, snap: Snapshot) -> None:
        for entry in snap.acks:
            if entry.seq <= self.ack_cursor:
                continue
            self.ack_cursor = entry.seq
            ack = entry.item
            if isinstance(ack, Ack) and ack.topic in self.pending:
                said = self.pending.pop(ack.topic).said
                self._say(screen.format_ack(said, entry.service, ack), now_s)
        for topic, pending in list(self.pending.items()):
            if now_s - pending.sent_s >= self.config.ack_timeout_s:
                del self.pending[topic]
                self._say(screen.format_no_answer(pending.said, self.config.ack_timeout_s), now_s)

    # --- output -----------------------------------------------------------------------

    def _say(self, text: str, now_s: float) -> None:
        self.message = text
        self.message_s = now_s

    def _prompt(self, now_s: float) -> str:
        state = self.interpreter.state
        if state.line is not None:
            return ":" + state.line
        if self.message and now_s - self.message_s < MESSAGE_S:
            return "> " + screen.clean(self.message)
        return ""

    def _draw(self, now_s: float, snap: Snapshot, title_right: str) -> bytes:
        width, height = self.parser.width, self.parser.height
        lines = screen.body(
            snap, self.interpreter.state, now_s, width=width, height=height, title_right=title_right
        )
        typing = self.interpreter.state.line is not None
        text = screen.frame(
            lines, self._prompt(now_s), width, height, full=self.full_redraw, typing=typing
        )
        self.full_redraw = False
        return encode_output(text)

    def _close(self, out: Output, reason: str) -> Output:
        self.phase = Phase.CLOSED
        out.data += encode_output(f"\n{reason}\n")
        out.close = True
        return out

    @property
    def view(self) -> View:
        return self.interpreter.state.view
