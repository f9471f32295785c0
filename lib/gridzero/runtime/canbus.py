"""Opening a python-can bus from settings, the same way in every service.

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
