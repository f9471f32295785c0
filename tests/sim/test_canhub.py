"""The loopback CAN hub speaks socketcand to python-can's own socketcand interface."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import can
import pytest

from gridzero_tools.sim.canhub import CanHub, format_frame, parse_send


@pytest.fixture
def hub() -> Iterator[CanHub]:
    h = CanHub().start()
    yield h
    h.stop()


def open_bus(hub: CanHub, channel: str) -> can.BusABC:
    return can.Bus(interface="socketcand", host=hub.host, port=hub.port, channel=channel)


def test_frames_reach_other_nodes_on_the_same_channel_only(hub: CanHub) -> None:
    a, b, other = open_bus(hub, "bms0"), open_bus(hub, "bms0"), open_bus(hub, "r48")
    try:
        a.send(can.Message(arbitration_id=0x1B0, data=bytes(range(8)), is_extended_id=False))
        a.send(can.Message(arbitration_id=0x1A555401, data=b"\x50\x51", is_extended_id=True))
        first = b.recv(2.0)
        second = b.recv(2.0)
        assert first is not None
        assert second is not None
        assert (first.arbitration_id, bytes(first.data), first.is_extended_id) == (
            0x1B0,
            bytes(range(8)),
            False,
        )
        assert (second.arbitration_id, bytes(second.data), second.is_extended_id) == (
            0x1A555401,
            b"\x50\x51",
            True,
        )
        assert other.recv(0.2) is None
        assert a.recv(0.2) is None  # a node does not hear its own frames
    finally:
        for bus in (a, b, other):
            bus.shutdown()


def test_parse_and_format() -> None:
    assert parse_send("< send 1B0 3 1 2 ff >") == ("1B0", b"\x01\x02\xff")
    assert format_frame("0607FF83", b"\x03\xf0", 1.5) == "< frame 0607FF83 1.500000 03F0 >"
    for bad in (
        "< send 1B0 9 1 2 3 4 5 6 7 8 9 >",
        "< send xyz 1 1 >",
        "< send 1B0 2 1 >",
        "< nope >",
    ):
        with pytest.raises(ValueError, match=r"send|hex|literal"):
            parse_send(bad)


def test_garbage_from_a_client_does_not_stop_the_hub(hub: CanHub) -> None:
    # The listener opens first so that both valid frames are owed to it; opening it after the
    # garbage raced the hub and the 0x123 frame arrived or not depending on scheduling.
    listener = open_bus(hub, "bms0")
    raw = socket.create_connection((hub.host, hub.port))
    try:
        raw.sendall(
            b"< open bms0 >< rawmode >\xff\xfe<<< send zz 1 1 >< send 123 1 7 >" + b"x" * 5000
        )
        raw.sendall(b"< send 124 1 8 >")
        first = listener.recv(2.0)
        second = listener.recv(2.0)
        assert first is not None
        assert second is not None
        assert (first.arbitration_id, bytes(first.data)) == (0x123, b"\x07")
        assert (second.arbitration_id, bytes(second.data)) == (0x124, b"\x08")
    finally:
        listener.shutdown()
        raw.close()
