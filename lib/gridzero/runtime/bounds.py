"""A setting's range, declared once: the pydantic field of the start-up settings and the
domain's own check (a domain object built without the service: tests, the bench) both come
from the same `Bound`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field


@dataclass(frozen=True, slots=True)
class Bound:
    """The allowed range of one setting, both ends included."""

    low: float
    high: float
    unit: str = ""

    def problem(self, name: str, value: object) -> str:
        """Why ``value`` is not allowed for ``name`` (value, unit and range), or ""."""
        unit = f" {self.unit}" if self.unit else ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name}={value!r} is not a number"
        if not (math.isfinite(value) and self.low <= value <= self.high):
            return f"{name}={value!r}{unit} is outside {self.low:g}..{self.high:g}{unit}"
        return ""

    def field(self, default: Any, description: str = "", **extra: Any) -> Any:
        """The pydantic field with this range (for a settings model)."""
        return Field(default, ge=self.low, le=self.high, description=description, **extra)


def bound_problems(values: object, bounds: Mapping[str, Bound], where: str = "") -> list[str]:
    """Every attribute of ``values`` named in ``bounds`` that is outside its range."""
    prefix = f"{where}: " if where else ""
    return [
        prefix + problem
        for name, bound in bounds.items()
        if (problem := bound.problem(name, getattr(values, name)))
    ]
