"""Fuzz targets of the controller: its MQTT handlers (group controller-handlers); it has no
codec of its own."""

from __future__ import annotations

from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target


def handler_targets() -> list[Target]:
    """Every MQTT handler of a controller started with its default settings."""
    return service_targets("controller", {})
