"""Fuzz targets of housebatt-compat: its MQTT handlers (group housebatt-compat-handlers); it
has no codec of its own (the original's topics are only written, never read)."""

from __future__ import annotations

from typing import Any

from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target


def harness_settings() -> dict[str, Any]:
    """The adapter starts on its defaults: it has no hardware."""
    return {}


def handler_targets() -> list[Target]:
    """Every MQTT handler of a housebatt-compat started with its default settings."""
    return service_targets("housebatt-compat", harness_settings())
