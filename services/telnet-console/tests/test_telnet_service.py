"""The telnet-console service on the runtime and a real broker; the test plays the controller."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from telnet_samples import TOPICS, ack, controller
from test_telnet_server import PASSWORD, read_until

from gridzero.errors import SettingsError
from gridzero.runtime.service import ServiceRunner
from gridzero.testing import TestBroker
from gridzero_telnet_console.auth import hash_password
from gridzero_telnet_console.service import TelnetConsole
from gridzero_telnet_console.settings import TelnetConsoleSettings

pytestmark = pytest.mark.broker
HASH = str(hash_password(PASSWORD, bytes(16), 1000))
HANG_GUARD_S = 20.0


@pytest.fixture
def console(broker: TestBroker, tmp_path: Path) -> Iterator[ServiceRunner]:
    settings = TelnetConsoleSettings(
        mqtt=broker.mqtt_settings("telnet-console"),
        data_dir=tmp_path,
        bind_host="127.0.0.1",
        port=0,
        password_hash=HASH,
        refresh_s=0.2,
    )
    runner = ServiceRunner(TelnetConsole, settings)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    yield runner
    runner.stop()
    runner.join()


def test_console_shows_state_and_sends_commands(broker: TestBroker, console: ServiceRunner) -> None:
    service = console.service
    assert isinstance(service, TelnetConsole)
    operator = broker.probe()
    plays_controller = broker.probe("controller", subscribe="")
    echo = TOPICS.setting("controller", "discharge_enabled")
    # the session broker may hold a real controller's retained echo from an earlier test
    plays_controller.publish(TOPICS.setting("controller", "charge_enabled"), b"", retain=True)
    plays_controller.publish(TOPICS.status("controller"), "online", retain=True)
    plays_controller.publish(TOPICS.setting("controller", "mode"), "auto", retain=True)
    plays_controller.publish(echo, "true", retain=True)
    plays_controller.publish(TOPICS.controller_state, controller().model_dump_json(), retain=True)
    set_topic = TOPICS.setting_set("controller", "discharge_enabled")

    async def session() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        await read_until(reader, b"password: ")
        writer.write(PASSWORD.encode() + b"\r\n")
        await read_until(reader, b"auto (charge ?, discharge on)")  # no charge_enabled echo
        writer.write(b"i")
        await writer.drain()
        await read_until(reader, b"discharge off (controller.discharge_enabled -> false)")
        operator.wait_for(set_topic, lambda p: p == b"false", 5)
        # the controller takes it and echoes the new value: the screen and the next key follow
        accepted = ack(set_topic, True, "false")
        plays_controller.publish(TOPICS.ack("controller"), accepted.model_dump_json())
        plays_controller.publish(echo, "false", retain=True)
        await read_until(reader, b"discharge off: done (controller accepted)")
        await read_until(reader, b"auto (charge ?, discharge off)")
        writer.write(b"i")
        await writer.drain()
        await read_until(reader, b"discharge on (controller.discharge_enabled -> true)")
        operator.wait_for(set_topic, lambda p: p == b"true", 5)
        refusal = ack(set_topic, False, "true", "discharge_enabled: not allowed now")
        plays_controller.publish(TOPICS.ack("controller"), refusal.model_dump_json())
        await read_until(
            reader, b"discharge on: REFUSED by controller: discharge_enabled: not allowed"
        )
        writer.write(b"c")  # never echoed: nothing is sent
        await writer.drain()
        await read_until(reader, b"controller.charge_enabled unknown")
        writer.write(b"q")
        await writer.drain()
        assert b"bye" in await reader.read()
        writer.close()

    try:
        asyncio.run(asyncio.wait_for(session(), HANG_GUARD_S))
    finally:
        plays_controller.publish(TOPICS.setting("controller", "mode"), b"", retain=True)
        plays_controller.publish(echo, b"", retain=True)
        plays_controller.publish(TOPICS.controller_state, b"", retain=True)
        plays_controller.close()
        operator.close()


def test_no_password_refuses_to_start(broker: TestBroker, tmp_path: Path) -> None:
    settings = TelnetConsoleSettings(mqtt=broker.mqtt_settings("telnet-console"), data_dir=tmp_path)
    runner = ServiceRunner(TelnetConsole, settings)
    with pytest.raises(SettingsError, match="password_hash"):
        runner.run()


def test_cli_exit_code_2_without_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDZERO_")} | {
        "GRIDZERO_DATA_DIR": str(tmp_path)
    }
    result = subprocess.run(
        [sys.executable, "-m", "gridzero.cli", "run", "telnet-console"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "password_hash" in result.stderr
