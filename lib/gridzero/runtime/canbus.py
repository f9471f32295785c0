"""The CAN settings model and opening a python-can bus from it, the same way in every service.

A ``socketcand`` endpoint that is not listening yet (the simulator still
starting, a socketcand daemon restarting) is reported at once as a
``CanInitializationError`` instead of python-can's own 10 s connect loop, so
the service's retry logic decides what happens next.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import can
from pydantic import BaseModel, Field

BITRATE_MIN = 10_000
BITRATE_MAX = 1_000_000


def bitrate_field(default: int, description: str = "") -> Any:
    """The bitrate field with its one range (a subclass changes only the default)."""
    return Field(default, ge=BITRATE_MIN, le=BITRATE_MAX, description=description)


class CanSettings(BaseModel):
    """One CAN bus as python-can names it. socketcand's host and port go in ``options``
    (``{"host": "gw", "port": 29536}``), like any other python-can Bus() keyword."""

    interface: str = Field(
        default="socketcan",
        description="python-can interface: socketcan on hardware; udp_multicast, virtual or "
        "socketcand in simulation",
    )
    channel: str = Field(default="can0", min_length=1, description="python-can channel")
    bitrate: int = bitrate_field(125_000)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="extra python-can Bus() keyword arguments (e.g. host/port for socketcand)",
    )

    def open(self) -> can.BusABC:
        """The bus (`open_bus`); python-can's errors as they come."""
        return open_bus(self.interface, self.channel, self.bitrate, self.options)


def open_bus(
    interface: str,
    channel: str,
    bitrate: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> can.BusABC:
    """A python-can Bus; ``options`` are passed through (host/port for socketcand, ...)."""
    kwargs: dict[str, Any] = {"interface": interface, "channel": channel, **(options or {})}
    if bitrate is not None and interface in (
        "socketcan",
        "virtual",
        "pcan",
        "kvaser",
        "slcan",
        "gs_usb",
    ):
        kwargs["bitrate"] = bitrate
    if interface == "virtual":
        kwargs.setdefault("receive_own_messages", False)
    if interface == "socketcand":
        _check_reachable(str(kwargs.get("host", "")), int(kwargs.get("port", 29536)))
    return can.Bus(**kwargs)


def _check_reachable(host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError as exc:
        raise can.CanInitializationError(
            f"socketcand at {host}:{port} is not reachable: {exc}"
        ) from exc
