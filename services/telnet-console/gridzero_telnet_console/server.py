"""The thin asyncio telnet server: sockets, timers and the password check thread.

Everything it decides is in `Session` (pure); this module only moves bytes,
keeps time and enforces the connection limits. Logged-in sessions and
connections still at the password prompt have separate limits, so strangers
who never log in cannot take the owner's place: at most
``max_unauthenticated`` of them at once and ``max_unauthenticated_per_address``
from one client, and when either is reached the oldest waiting one is dropped
to make room (a logged-in session is never dropped for a newcomer).

It owns the `Snapshot` and touches it only on its own event loop: MQTT
messages arrive from another thread through `ConsoleServer.deliver`, which
hands them over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gridzero.contract import Topics
from gridzero_telnet_console.auth import (
    IPNetwork,
    LoginGuard,
    PasswordHash,
    client_key,
    verify_password,
)
from gridzero_telnet_console.session import Output, Phase, Session, SessionConfig
from gridzero_telnet_console.snapshot import Snapshot, ingest

log = logging.getLogger("gridzero.telnet-console")

READ_BYTES = 4096
DRAIN_TIMEOUT_S = 10.0  # a client that stops reading is dropped after this


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the server needs; built from `TelnetConsoleSettings` by the service."""

    host: str
    port: int
    password: PasswordHash | None  # None only in the insecure loopback mode
    topics: Topics
    max_sessions: int = 4  # logged in
    max_unauthenticated: int = 8  # at the password prompt, from anywhere
    max_unauthenticated_per_address: int = 2  # ... from one client (not for shared addresses)
    max_failed_logins: int = 3
    lockout_s: float = 300.0
    shared: tuple[IPNetwork, ...] = ()  # addresses that stand for many clients
    shared_lockout_s: float = 30.0
    idle_timeout_s: float = 600.0
    login_timeout_s: float = 30.0
    refresh_s: float = 1.0
    max_line_chars: int = 200
    ack_timeout_s: float = 5.0


class ConsoleServer:
    """Serves telnet sessions on one address; `publish` sends commands to MQTT."""

    def __init__(
        self,
        config: ServerConfig,
        publish: Callable[[str, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        title: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
    ) -> None:
        self.config = config
        self.publish = publish
        self.clock = clock
        self.title = title
        self.snapshot = Snapshot()
        self.guard = LoginGuard(
            config.max_failed_logins,
            config.lockout_s,
            shared=config.shared,
            shared_lockout_s=config.shared_lockout_s,
        )
        self.sessions: set[Session] = set()  # logged in (or no password needed)
        # not logged in yet, oldest first, with the task serving each
        self.waiting: dict[Session, asyncio.Task[None]] = {}
        self._dropped: set[Session] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_config = SessionConfig(
            topics=config.topics,
            need_password=config.password is not None,
            idle_timeout_s=config.idle_timeout_s,
            login_timeout_s=config.login_timeout_s,
            max_line_chars=config.max_line_chars,
            ack_timeout_s=config.ack_timeout_s,
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.config.port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._on_client, self.config.host, self.config.port, reuse_address=True
        )
        log.info("telnet console listening on %s:%d", self.config.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def deliver(self, topic: str, payload: bytes) -> None:
        """Hand over an MQTT message from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.ingest, topic, payload)

    def ingest(self, topic: str, payload: bytes) -> None:
        """Store a message (on the server's loop)."""
        ingest(self.snapshot, self.config.topics, topic, payload, self.clock())

    # --- one connection -------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        try:
            refusal = self._refusal(address)
            if refusal:
                log.warning("telnet from %s refused: %s", address, refusal)
                writer.write(f"gridzero console: {refusal}\r\n".encode())
                await self._drain(writer)
                return
            await self._run_session(reader, writer, address, task)
        except (ConnectionError, TimeoutError) as exc:
            log.info("telnet %s: connection ended: %s", address, exc)
        except asyncio.CancelledError:
            # only `close` cancels a connection's task here; end it as asked, but normally:
            # asyncio's stream server logs a handler task that ends cancelled as an error
            if task is not None:
                task.uncancel()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), DRAIN_TIMEOUT_S)
            if task is not None:
                self._tasks.discard(task)

    def _refusal(self, address: str) -> str:
        """Why a new connection is turned away at once ('' to let it in)."""
        locked = self.guard.locked_for_s(address, self.clock())
        if locked > 0:
            return f"too many failed logins; try again in {locked:.0f} s"
        if len(self.sessions) >= self.config.max_sessions:
            # only the password fills these, so a stranger cannot
            return f"{len(self.sessions)} sessions open, the limit; try again later"
        return ""

    def _make_room(self, address: str) -> None:
        """Drop the oldest waiting connections so one more from ``address`` fits the limits."""
        if not self.guard.is_shared(address):
            key = client_key(address)
            mine = [s for s in self.waiting if client_key(s.address) == key]
            while len(mine) >= self.config.max_unauthenticated_per_address:
                self._drop(self._oldest(mine), f"already {len(mine)} waiting from {key}")
                mine = [s for s in self.waiting if client_key(s.address) == key]
        while len(self.waiting) >= self.config.max_unauthenticated:
            self._drop(self._oldest(list(self.waiting)), f"{len(self.waiting)} waiting")

    @staticmethod
    def _oldest(candidates: list[Session]) -> Session:
        # one still typing before one whose password is being checked (about to finish)
        typing = [s for s in candidates if s.phase is not Phase.CHECKING]
        return (typing or candidates)[0]

    def _drop(self, session: Session, why: str) -> None:
        task = self.waiting.pop(session)
        log.warning("telnet %s: not logged in, dropped to make room (%s)", session.address, why)
        self._dropped.add(session)
        task.cancel()

    async def _run_session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        task: asyncio.Task[None] | None,
    ) -> None:
        session = Session(self._session_config, self.guard, address, self.clock())
        if session.phase is Phase.LOGIN and task is not None:
            self._make_room(address)
            self.waiting[session] = task
        else:
            self.sessions.add(session)
        log.info(
            "telnet connection from %s (%d logged in, %d waiting)",
            address,
            len(self.sessions),
            len(self.waiting),
        )
        try:
            await self._serve(session, reader, writer)
        except asyncio.CancelledError:
            if session not in self._dropped or task is None:
                raise  # the server is closing
            task.uncancel()  # dropped by _make_room: end this connection normally
            # say why (no drain: a client that never reads must not hold us up)
            writer.write(b"\r\ngridzero console: too many connections waiting to log in\r\n")
        finally:
            self._dropped.discard(session)
            for command in session.end():
                log.info("telnet %s: %s -> %s", session.address, command.what, command.topic)
                self.publish(command.topic, command.payload)
            self.sessions.discard(session)
            self.waiting.pop(session, None)
            log.info("telnet connection from %s closed (%d logged in)", address, len(self.sessions))

    async def _serve(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read keys and tick until the session or the client ends it."""
        out = session.start(self.clock(), self.snapshot, self.title())
        if not await self._apply(session, writer, out):
            return
        next_tick_s = self.clock() + self.config.refresh_s
        while True:
            timeout = max(0.0, next_tick_s - self.clock())
            try:
                data = await asyncio.wait_for(reader.read(READ_BYTES), timeout)
            except TimeoutError:
                data = None
            if data == b"":
                return  # the client closed the connection
            if data:
                out = session.feed(data, self.clock(), self.snapshot, self.title())
                if not await self._apply(session, writer, out):
                    return
            if self.clock() >= next_tick_s:
                next_tick_s = self.clock() + self.config.refresh_s
                out = session.tick(self.clock(), self.snapshot, self.title())
                if not await self._apply(session, writer, out):
                    return

    async def _apply(self, session: Session, writer: asyncio.StreamWriter, out: Output) -> bool:
        """Do what the session asked; False when the connection must end."""
        while True:
            for command in out.publish:
                log.info("telnet %s: %s -> %s", session.address, command.what, command.topic)
                self.publish(command.topic, command.payload)
            if out.data:
                writer.write(out.data)
                await self._drain(writer)
            if out.close:
                return False
            if out.check_password is None:
                return True
            out = await self._check(session, out.check_password)

    async def _check(self, session: Session, password: str) -> Output:
        stored = self.config.password
        ok = stored is not None and await asyncio.to_thread(verify_password, password, stored)
        if ok:
            log.info("telnet login from %s", session.address)
        else:
            log.warning("telnet login from %s failed", session.address)
        if session not in self.waiting:
            return Output(close=True)  # dropped while the password was checked
        if ok and len(self.sessions) >= self.config.max_sessions:
            return session.refuse(f"{len(self.sessions)} sessions open, the limit; try again later")
        out = session.login_result(ok, self.clock(), self.snapshot, self.title())
        if session.phase is Phase.RUNNING:
            del self.waiting[session]
            self.sessions.add(session)
        return out

    @staticmethod
    async def _drain(writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
