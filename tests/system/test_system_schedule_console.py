"""Issue 20 on the running system (`gridzero up`, simulated hardware): the schedule's settings
are visible and editable in the telnet console like every other setting, and the console's
status screen shows which window is in force and why, as the controller's state says it."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gridzero.contract import ControllerState, Topics
from gridzero.runtime.credentials import CONSOLE_PASSWORD_FILE
from gridzero.testing import Probe, System

pytestmark = [pytest.mark.broker, pytest.mark.slow]
T = Topics()
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
IAC, SB, SE, NAWS = 255, 250, 240, 31


class Console:
    """A telnet client in character mode, 200 columns wide, reading the screen as text."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
        self.seen = b""
        self.sock.sendall(bytes([IAC, SB, NAWS, 0, 200, 0, 50, IAC, SE]))

    def type(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def wait_for(self, text: str, timeout_s: float = 15.0) -> str:
        """Read until ``text`` appears (ANSI codes taken out); everything read so far."""
        deadline = time.monotonic() + timeout_s
        start = len(self.seen)
        while time.monotonic() < deadline:
            shown = ANSI.sub(b"", self.seen[start:]).decode("utf-8", "replace")
            if text in shown:
                return shown
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.seen += chunk
        tail = ANSI.sub(b"", self.seen[-3000:]).decode("utf-8", "replace")
        raise AssertionError(f"{text!r} not shown within {timeout_s} s; last:\n{tail}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, Probe]]:
    sut = System(tmp_path_factory.mktemp("schedule"))
    sut.start()
    probe = sut.probe("operator", subscribe=T.controller_state)
    try:
        yield sut, probe
    finally:
        probe.close()
        sut.stop()


def _state(
    probe: Probe, predicate: object, after: float, timeout_s: float = 15.0
) -> ControllerState:
    def ok(payload: bytes) -> bool:
        return bool(predicate(ControllerState.model_validate_json(payload)))  # type: ignore[operator]

    return ControllerState.model_validate_json(
        probe.wait_for(T.controller_state, ok, timeout_s, after=after)
    )


def _window_around_now() -> tuple[str, str]:
    """An hour either side of now, in UTC (the controller's default time zone)."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return start.strftime("%H:%M"), end.strftime("%H:%M")


def test_a_window_set_in_the_console_is_in_force_and_shown_with_its_reason(
    system: tuple[System, Probe],
) -> None:
    sut, probe = system
    _state(probe, lambda s: s.state != "no_units", 0.0, timeout_s=60.0)
    console = Console(sut.console_port)
    try:
        console.wait_for("password: ")
        console.type((sut.secrets_dir / CONSOLE_PASSWORD_FILE).read_text(encoding="utf-8").strip())
        # every window is a setting the console knows, unused ones too ("none")
        console.wait_for("Control")
        console.type(":get controller.window_6")
        console.wait_for("controller.window_6 = none")
        start, end = _window_around_now()
        window = f"daily {start}-{end} hold"
        sent = time.monotonic()
        console.type(f":set controller.window_1 {window}")
        console.wait_for(f"controller.window_1 = {window}: done (controller accepted)")
        state = _state(probe, lambda s: s.rule == "window_1", sent)
        assert state.rule_why == f"window 1 {start}-{end} hold: no discharging"
        assert state.discharge_w == 0.0
        # the status screen shows the rule and why, in the controller's words
        console.wait_for(f"Rule      window_1: window 1 {start}-{end} hold: no discharging")
        console.type(":get controller.window_1")
        console.wait_for(f"controller.window_1 = {window}")
        # a bad window is refused by the controller, by name, and nothing changes
        console.type(":set controller.window_2 daily 25:00-04:30 hold")
        console.wait_for("REFUSED by controller: window_2")
        # the reserve and the price rules are settings like the others
        console.type(":set controller.reserve_soc_pct 20")
        console.wait_for("controller.reserve_soc_pct = 20: done (controller accepted)")
        console.type(":set controller.charge_below_price 0.1")
        console.wait_for("controller.charge_below_price = 0.1: done (controller accepted)")
        console.type(":get controller.price_charge_enabled")
        console.wait_for("controller.price_charge_enabled = false")
        # `none` clears the window: the plain loop again
        sent = time.monotonic()
        console.type(":set controller.window_1 none")
        console.wait_for("controller.window_1 = none: done (controller accepted)")
        state = _state(probe, lambda s: s.rule == "none", sent)
        assert state.rule_why == "no window or price rule active"
        console.wait_for("Rule      none: no window or price rule active")
        console.type(":set controller.reserve_soc_pct 0")
        console.wait_for("controller.reserve_soc_pct = 0: done (controller accepted)")
    finally:
        console.close()
    assert "Traceback" not in sut.log()
