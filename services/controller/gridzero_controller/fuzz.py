"""Fuzz targets of the controller: its MQTT handlers (group controller-handlers); it has no
codec of its own."""

from __future__ import annotations

from typing import Any

from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target


def harness_settings() -> dict[str, Any]:
    """The controller starts on its defaults: it has no hardware."""
    return {}


def handler_targets() -> list[Target]:
    """Every MQTT handler of a controller started with its default settings."""
    return service_targets("controller", harness_settings())
