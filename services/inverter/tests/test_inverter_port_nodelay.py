"""A socket:// port sends each frame at once: Nagle's algorithm is off on it."""

from __future__ import annotations

import socket

import serial

from gridzero_inverter.service import _no_delay


def test_socket_port_has_nagle_off() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=0.05)
    try:
        sock = port._socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # pyserial's default
        _no_delay(port)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        port.close()
        server.close()


def test_a_port_without_a_socket_is_left_alone() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    try:
        _no_delay(port)  # no socket inside: nothing to do, no error
        port.write(b"\x24")
        assert port.read(1) == b"\x24"
    finally:
        port.close()
