"""Debian's own `telnet` in a tmux pane against the server: what a user on a LAN box does.

tmux runs on a private socket (-L) so it never touches anyone else's sessions.
Skipped when telnet or tmux is not installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from telnet_samples import TOPICS, full_snapshot
from test_telnet_server import PASSWORD, STORED

from gridzero.testing import wait_until
from gridzero_telnet_console.server import ConsoleServer, ServerConfig

pytestmark = pytest.mark.skipif(
    shutil.which("telnet") is None or shutil.which("tmux") is None,
    reason="needs the telnet and tmux programs",
)
WAIT_S = 15.0


@dataclass
class Running:
    server: ConsoleServer
    sent: list[tuple[str, str]]


@pytest.fixture
def running() -> Iterator[Running]:
    sent: list[tuple[str, str]] = []
    config = ServerConfig(host="127.0.0.1", port=0, password=STORED, topics=TOPICS)
    server = ConsoleServer(config, lambda t, p: sent.append((t, p)), clock=lambda: 101.0)
    server.snapshot = full_snapshot()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(WAIT_S)
    yield Running(server, sent)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)


class Pane:
    """One tmux session on a private server socket."""

    def __init__(self, command: str, width: int, height: int) -> None:
        self.socket = f"gridzero-telnet-test-{os.getpid()}"
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), command)

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        return result.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-t", "t", "-p")

    def wait_for(self, text: str) -> str:
        try:
            wait_until(lambda: text in self.screen(), WAIT_S, f"{text!r} on the screen")
        except TimeoutError:
            raise AssertionError(f"{text!r} not shown; screen:\n{self.screen()}") from None
        return self.screen()

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def pane(running: Running) -> Iterator[Pane]:
    pane = Pane(f"telnet 127.0.0.1 {running.server.port}", 100, 40)
    yield pane
    pane.close()


def test_debian_telnet_character_mode(running: Running, pane: Pane) -> None:
    pane.wait_for("password:")
    pane.keys(PASSWORD, "Enter")
    screen = pane.wait_for("set-point 850 W charging")
    assert PASSWORD not in screen  # WILL ECHO accepted: the password was not echoed
    assert "space pause | d debug" in screen
    pane.keys("p")
    pane.wait_for("3935  3912v 3937")
    pane.keys("p")
    pane.wait_for("Grid ")
    pane.keys("c")  # one key, no Enter: character mode
    pane.wait_for("charge off (controller.charge_enabled -> false)")
    pane.tmux("resize-window", "-t", "t", "-x", "50", "-y", "20")  # NAWS tells the server
    screen = pane.wait_for("make the window taller")
    assert all(len(line.rstrip()) <= 49 for line in screen.splitlines())
    pane.keys("q")
    wait_until(lambda: not running.server.sessions, WAIT_S, "the session to close")
    assert running.sent == [("gridzero/controller/settings/charge_enabled/set", "false")]


def test_debian_telnet_line_mode(running: Running, pane: Pane) -> None:
    pane.wait_for("password:")
    pane.keys("C-]")
    pane.wait_for("telnet>")
    pane.keys("mode line", "Enter")
    pane.keys(PASSWORD, "Enter")
    pane.wait_for("set-point 850 W charging")
    pane.keys("p", "Enter")  # a line-mode client sends the key with CR LF
    pane.wait_for("3935  3912v 3937")
    pane.keys(":get controller.mode", "Enter")
    pane.wait_for("> controller.mode = auto")
    pane.keys("q", "Enter")
    wait_until(lambda: not running.server.sessions, WAIT_S, "the session to close")
