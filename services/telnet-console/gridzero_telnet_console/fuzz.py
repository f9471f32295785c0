"""Fuzz targets of the telnet console: its telnet parser (buffers and window size must stay
bounded) and its handlers (groups telnet-protocol, telnet-console-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target
from gridzero_telnet_console import protocol


def protocol_targets() -> list[Target]:
    corpus = (
        b"hello\r\n",
        bytes((255, 251, 1, 255, 253, 3, 255, 250, 31, 0, 120, 0, 40, 255, 240)),
        b"\x1b[A\x1b[B\x1b[1;5C\x1bOP",
        b":set controller.target_grid_w 20\r\x00",
        bytes((255, 255, 255, 244, 255, 246, 255, 254, 24, 255, 252, 34)),
        "äöü€\r\n".encode(),
    )
    holder: dict[str, protocol.TelnetParser] = {"p": protocol.TelnetParser()}
    fed = [0]

    def feed(data: bytes) -> object:
        fed[0] += 1
        if fed[0] % 1000 == 0:
            holder["p"] = protocol.TelnetParser()
            holder["p"].opening()
        parser = holder["p"]
        events = parser.feed(data)
        if fed[0] % 5 == 0:
            events += parser.flush_escape()
        return events

    def bounded() -> str | None:
        p = holder["p"]
        if len(p._sb) > 4096 or len(p._esc_buf) > 64:
            return f"telnet parser buffers grew: sb {len(p._sb)}, esc {len(p._esc_buf)}"
        if not (0 < p.width <= 10000 and 0 < p.height <= 10000):
            return f"telnet window size {p.width}x{p.height} out of range"
        return None

    return [Target("telnet TelnetParser", feed, (), corpus, check=bounded)]


def harness_settings() -> dict[str, Any]:
    """What a telnet-console service needs, beyond a data directory, to start without its hardware."""
    settings: dict[str, Any] = {"insecure_loopback_no_password": True, "port": 0}
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of a telnet-console service started without its hardware."""
    return service_targets("telnet-console", harness_settings())
