"""The asyncio server on a real loopback socket (ephemeral port): log in, read the screen, quit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from telnet_samples import TOPICS, controller

from gridzero_telnet_console.auth import hash_password, parse_networks
from gridzero_telnet_console.protocol import (
    DO,
    IAC,
    OPT_ECHO,
    OPT_NAWS,
    OPT_SGA,
    SB,
    SE,
    WILL,
)
from gridzero_telnet_console.server import ConsoleServer, ServerConfig

PASSWORD = "a long password"
STORED = hash_password(PASSWORD, bytes(16), 1000)
HANG_GUARD_S = 20.0  # only stops a broken test from hanging; never a pass/fail timing


def config(**changes: object) -> ServerConfig:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "password": STORED,
        "topics": TOPICS,
        "refresh_s": 0.2,
    }
    base.update(changes)
    return ServerConfig(**base)  # type: ignore[arg-type]


def run(
    test: Callable[[ConsoleServer, list[tuple[str, str]]], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
    **changes: object,
) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []

    async def main() -> None:
        server = ConsoleServer(config(**changes), lambda t, p: sent.append((t, p)), clock=clock)
        await server.start()
        try:
            await asyncio.wait_for(test(server, sent), HANG_GUARD_S)
        finally:
            await server.close()

    asyncio.run(main())
    return sent


async def connect(
    server: ConsoleServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` (Linux routes all of 127.0.0.0/8 to loopback)."""
    return await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))


async def waiting(
    server: ConsoleServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that reaches the password prompt and then types nothing."""
    reader, writer = await connect(server, source)
    await read_until(reader, b"password: ")
    return reader, writer


async def dropped(reader: asyncio.StreamReader) -> bool:
    rest = await reader.read()  # until the server closes
    return b"too many connections waiting to log in" in rest


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await reader.read(4096)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data[-300:]!r}")
        data += chunk
    return data


async def login(
    server: ConsoleServer, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await connect(server, source)
    opening = await read_until(reader, b"password: ")
    assert opening.startswith(bytes((IAC, WILL, OPT_ECHO, IAC, WILL, OPT_SGA, IAC, DO, OPT_NAWS)))
    # answer like Linux telnet: agree, report a 100x30 window, then type the password
    writer.write(bytes((IAC, DO, OPT_ECHO, IAC, DO, OPT_SGA, IAC, WILL, OPT_NAWS)))
    writer.write(bytes((IAC, SB, OPT_NAWS, 0, 100, 0, 30, IAC, SE)))
    writer.write(PASSWORD.encode() + b"\r\x00")
    await writer.drain()
    screen = await read_until(reader, b"q quit")
    assert b"gridzero console" in screen
    return reader, writer


def test_login_read_screen_send_command_quit() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        # an MQTT message arrives from another thread, as from the runtime's loop
        payload = controller().model_dump_json().encode()
        thread = threading.Thread(target=server.deliver, args=(TOPICS.controller_state, payload))
        thread.start()
        thread.join()
        server.deliver(TOPICS.setting("controller", "mode"), b"auto")
        server.deliver(TOPICS.setting("controller", "charge_enabled"), b"false")
        server.deliver(TOPICS.setting("controller", "discharge_enabled"), b"true")
        reader, writer = await login(server)
        writer.write(b"h")  # any key redraws with the latest snapshot
        await writer.drain()
        await read_until(reader, b"cell table per module")
        writer.write(b"h")
        await writer.drain()
        screen = await read_until(reader, b"set-point 850 W charging")
        assert b"+123 W" in screen
        assert b"auto (charge off, discharge on)" in screen
        writer.write(b"c")
        await writer.drain()
        await read_until(reader, b"charge on (controller.charge_enabled -> true)")
        writer.write(b"i")
        await writer.drain()
        await read_until(reader, b"discharge off (controller.discharge_enabled -> false)")
        writer.write(b"q")
        await writer.drain()
        rest = await reader.read()  # until the server closes
        assert b"bye" in rest
        writer.close()

    sent = run(scenario)
    assert sent == [
        ("gridzero/controller/settings/charge_enabled/set", "true"),
        ("gridzero/controller/settings/discharge_enabled/set", "false"),
    ]


def test_wrong_passwords_lock_out_then_refuse_at_once() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_until(reader, b"password: ")
        writer.write(b"nope\r\n")
        await read_until(reader, b"wrong password")
        writer.write(b"nope\r\n")
        rest = await reader.read()
        assert b"locked for" in rest
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        rest = await reader.read()
        assert b"too many failed logins" in rest
        writer.close()

    run(scenario, max_failed_logins=2)


def test_session_limit() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        _first_reader, first_writer = await login(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        rest = await reader.read()
        assert b"1 sessions open, the limit" in rest
        writer.close()
        first_writer.close()

    run(scenario, max_sessions=1)


def test_client_vanishing_mid_negotiation_leaves_the_server_working() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_until(reader, b"password: ")
        writer.write(bytes((IAC, SB, OPT_NAWS, 0)))  # cut off inside a subnegotiation
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        reader2, writer2 = await login(server)  # the next client is served normally
        writer2.write(bytes(range(256)) * 4)  # binary garbage after login
        writer2.write(b"q")
        await writer2.drain()
        await reader2.read()
        writer2.close()

    run(scenario)


def test_insecure_mode_needs_no_password() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        screen = await read_until(reader, b"q quit")
        assert b"password" not in screen
        writer.close()

    run(scenario, password=None)


def test_connections_that_never_log_in_cannot_keep_the_owner_out() -> None:
    # before: 4 connections sitting at the password prompt took all 4 session slots for the
    # whole login timeout, and the owner was refused ("4 sessions open, the limit")
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        strangers = [await waiting(server) for _ in range(4)]
        owner_reader, owner_writer = await login(server)
        assert len(server.sessions) == 1
        # the oldest ones made room (two from one address at most, the newest kept)
        assert [await dropped(r) for r, _ in strangers[:3]] == [True, True, True]
        # more strangers never push a logged-in session out
        more = [await waiting(server) for _ in range(6)]
        owner_writer.write(b"h")
        await owner_writer.drain()
        await read_until(owner_reader, b"cell table per module")
        for _, writer in [*strangers, *more]:
            writer.close()
        owner_writer.close()

    run(scenario, max_sessions=4)


def test_one_address_holds_at_most_its_share_of_the_waiting_slots() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        # keep every connection referenced: a collected one is closed by the client side
        first = await waiting(server, "127.0.0.2")
        second = await waiting(server, "127.0.0.2")
        other_reader, other_writer = await waiting(server, "127.0.0.3")
        third = await waiting(server, "127.0.0.2")  # a third from .2: .2's oldest goes
        assert await dropped(first[0])
        assert sorted(s.address for s in server.waiting) == ["127.0.0.2", "127.0.0.2", "127.0.0.3"]
        other_writer.write(PASSWORD.encode() + b"\r\n")  # .3 was left alone
        await other_writer.drain()
        await read_until(other_reader, b"q quit")
        for _, writer in (second, third):
            writer.close()

    run(scenario)  # defaults: 2 waiting per address, 8 in all


def test_when_every_waiting_slot_is_taken_the_oldest_goes() -> None:
    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        connections = [await waiting(server, f"127.0.0.{n}") for n in (2, 3, 4)]
        _, owner_writer = await login(server, "127.0.0.5")
        assert await dropped(connections[0][0])
        assert sorted(s.address for s in server.waiting) == ["127.0.0.3", "127.0.0.4"]
        for _, writer in [*connections, (None, owner_writer)]:
            writer.close()

    run(scenario, max_unauthenticated=3)


def test_a_stranger_behind_the_proxy_locks_the_owner_out_briefly_only() -> None:
    # Docker's userland proxy shows every client as the bridge gateway; here loopback plays it
    now = [1000.0]

    async def scenario(server: ConsoleServer, sent: list[tuple[str, str]]) -> None:
        reader, writer = await waiting(server)
        writer.write(b"nope\r\n")
        await read_until(reader, b"wrong password")
        writer.write(b"nope\r\n")
        assert b"locked for 30 s" in await reader.read()
        reader, writer = await connect(server)  # the owner, through the same proxy
        assert b"try again in 30 s" in await reader.read()
        _, other = await login(server, "127.0.0.2")  # a real address shows: not affected
        now[0] += 31.0
        _, owner = await login(server)  # after the short lockout, not 300 s
        other.close()
        owner.close()

    run(
        scenario,
        clock=lambda: now[0],
        max_failed_logins=2,
        lockout_s=300.0,
        shared=parse_networks(["127.0.0.1"]),
        shared_lockout_s=30.0,
    )
