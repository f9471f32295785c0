"""The asyncio server on a real loopback socket (ephemeral port): log in, read the screen, quit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from gridzero.services.telnet_console.auth import hash_password
from gridzero.services.telnet_console.protocol import (
    DO,
    IAC,
    OPT_ECHO,
    OPT_NAWS,
    OPT_SGA,
    SB,
    SE,
    WILL,
)
from gridzero.services.telnet_console.server import ConsoleServer, ServerConfig
from tests.telnet_console.telnet_samples import TOPICS, controller

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
    test: Callable[[ConsoleServer, list[tuple[str, str]]], Awaitable[None]], **changes: object
) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []

    async def main() -> None:
        server = ConsoleServer(config(**changes), lambda t, p: sent.append((t, p)))
        await server.start()
        try:
            await asyncio.wait_for(test(server, sent), HANG_GUARD_S)
        finally:
            await server.close()

    asyncio.run(main())
    return sent


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await reader.read(4096)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data[-300:]!r}")
        data += chunk
    return data


async def login(server: ConsoleServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
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
        screen = await read_until(reader, b"set-point -850 W")
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
