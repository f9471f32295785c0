"""`gridzero up`'s broker: its port across quick restarts, the watch command it prints,
and a listener beyond loopback (issue 21, item 5)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridzero.testing import Probe, wait_until
from gridzero_tools.up import PORT_FILE, choose_port, port_free

pytestmark = pytest.mark.broker


class Up:
    """One `gridzero up` (broker and controller only) in a directory of its own."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.log = root / f"up-{len(list(root.glob('up-*.log')))}.log"
        argv = [sys.executable, "-m", "gridzero.cli", "up", "--no-sim", "--services"]
        argv += ["controller", "--data-dir", "data", "--secrets-dir", "secrets", "--no-colour"]
        self.proc = subprocess.Popen(
            [*argv, *extra], cwd=root, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        wait_until(lambda: "watch it: " in self.text() or self.proc.poll() is not None, 30, "up")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def port(self) -> int:
        found = re.search(r"\[up\]\s+broker [\d.]+:(\d+)", self.text())
        assert found, self.text()
        return int(found.group(1))

    def watch_command(self) -> str:
        found = re.search(r"watch it: (.*)", self.text())
        assert found, self.text()
        return found.group(1).strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.stop()


def _time_wait(port: int) -> bool:
    """Whether a connection of local port ``port`` is in TIME_WAIT (the broker closed it)."""
    out = subprocess.run(
        ["ss", "-Htan", "state", "time-wait", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return bool(out.strip())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_quick_restart_keeps_the_port_and_the_printed_watch_command_works(
    tmp_path: Path, ups: list[Up]
) -> None:
    # an earlier start fell back to this port (1883 itself is left to the developer)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / PORT_FILE).write_text(f"{_free_port()}\n", encoding="utf-8")
    first = Up(tmp_path)
    ups.append(first)
    port = first.port()
    assert port == int((tmp_path / "data" / PORT_FILE).read_text(encoding="utf-8"))
    assert "earlier start fell back" in first.text()
    # a client connected when the broker stops leaves the port in TIME_WAIT
    probe = Probe.connect("127.0.0.1", port, "operator", _password(tmp_path), "gridzero/#")
    probe.wait_for("gridzero/controller/status")
    first.stop()
    probe.close()
    # without it the test would prove nothing
    wait_until(lambda: _time_wait(port), 10, "the broker's port in TIME_WAIT")

    second = Up(tmp_path)
    ups.append(second)
    assert second.port() == port, second.text()
    # the printed command, run as printed, from the directory `up` runs in
    command = second.watch_command()
    assert f"-p {port}" in command
    out = subprocess.run(
        ["bash", "-c", command.replace(" -v", " -v -C 1 -W 20")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"{command}: {out.stderr}"
    assert out.stdout.startswith("gridzero/"), out.stdout


def _password(root: Path) -> str:
    for line in (root / "secrets" / "operator.env").read_text(encoding="utf-8").splitlines():
        if line.startswith("GRIDZERO_MQTT__PASSWORD="):
            return line.split("=", 1)[1]
    raise AssertionError("no operator password")


def test_a_port_in_time_wait_is_free_for_mosquitto() -> None:
    port = _free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end waits in TIME_WAIT
    server.close()
    client.close()
    assert _time_wait(port)
    assert port_free(port)


def test_a_taken_port_falls_back_loudly_and_the_fallback_is_kept(tmp_path: Path) -> None:
    port_file = tmp_path / PORT_FILE
    with socket.socket() as other:  # another program listens on the default port
        other.bind(("127.0.0.1", 0))
        other.listen()
        default = int(other.getsockname()[1])
        port, warning = choose_port(port_file, default=default)
        assert port != default
        assert f"port {default} is taken" in warning
        assert f"listens on port {port} instead" in warning
        port_file.write_text(f"{port}\n", encoding="utf-8")  # as `up` does once it listens
        again, warning = choose_port(port_file, default=default)
        assert again == port
        assert "earlier start fell back" in warning
    # the default is free again, the remembered port still wins (clients point at it)
    assert choose_port(port_file, default=default)[0] == port


def test_bind_beyond_loopback_warns_and_listens_on_every_address(
    tmp_path: Path, ups: list[Up]
) -> None:
    up = Up(tmp_path, "--bind", "0.0.0.0", "--port", str(_free_port()))
    ups.append(up)
    assert "reachable from the network" in up.text()
    assert "docs/security.md" in up.text()
    out = subprocess.run(
        ["ss", "-Htln", f"sport = :{up.port()}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "0.0.0.0:" in out, out
    # the services still reach it on loopback
    assert "-h 127.0.0.1 " in up.watch_command()


def test_bind_refuses_a_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gridzero.cli", "up", "--bind", "lan", "--no-sim"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "--bind 'lan'" in result.stderr
