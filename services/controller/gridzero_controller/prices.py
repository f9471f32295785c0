"""The price topic: the current import price, and optionally the export price and the next
hours' prices, as Home Assistant tariff integrations publish them (pure).

Accepted payloads (the unit is whatever the owner's tariff uses, e.g. EUR/kWh or ct/kWh; the
price rules' limits are in the same unit):

- a plain number: ``0.2315`` (an automation publishing ``{{ states('sensor.price') }}``);
- a JSON object: ``{"import": 0.23, "export": 0.08, "forecast": [0.21, 0.19, ...]}``;
  ``price``, ``value`` or ``state`` may stand for ``import``; ``next`` or ``prices`` for
  ``forecast``. A forecast item is a number or an object with a price under ``value``,
  ``value_inc_vat`` (Octopus Energy's ``rates``), ``total`` (Tibber's ``today``) or ``price``
  (Nord Pool's ``raw_today`` uses ``value``).

A price counts from when it arrived here (`gridzero.runtime.freshness`): a retained one is
history and never fresh, and one older than ``price_stale_s`` is no price at all, so a
missing or stale price never starts grid charging and stops it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from gridzero.runtime.freshness import FreshValue

IMPORT_KEYS = ("import", "price", "value", "state")
FORECAST_KEYS = ("forecast", "next", "prices")
ITEM_KEYS = ("value", "value_inc_vat", "total", "price")
MAX_FORECAST = 96  # two days of hours, one of quarter hours
PRICE_LIMIT = 1e6  # anything beyond is a unit mistake, not a price


@dataclass(frozen=True, slots=True)
class Price:
    """One price message."""

    import_price: float
    export_price: float | None = None
    forecast: tuple[float, ...] = ()


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"price topic: {where} {value!r} is not a number")
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError(f"price topic: {where} {value!r} is not a number") from exc
    if not math.isfinite(number) or abs(number) > PRICE_LIMIT:
        raise ValueError(
            f"price topic: {where} {number!r} outside -{PRICE_LIMIT:g}..{PRICE_LIMIT:g}"
        )
    return number


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((obj[k] for k in keys if k in obj), None)


def _forecast(items: Any) -> tuple[float, ...]:
    if not isinstance(items, list):
        raise ValueError(f"price topic: forecast {str(items)[:60]!r} is not a list")
    if len(items) > MAX_FORECAST:
        raise ValueError(f"price topic: forecast of {len(items)} prices, at most {MAX_FORECAST}")
    out = []
    for i, item in enumerate(items):
        raw = _first(item, ITEM_KEYS) if isinstance(item, dict) else item
        out.append(_number(raw, f"forecast[{i}]"))
    return tuple(out)


def parse_price(payload: bytes) -> Price:
    """A price message; ValueError naming the bad part (the previous price stays)."""
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        raise ValueError("price topic: empty message")
    try:
        data = json.loads(text)
    except ValueError as exc:
        # e.g. "unavailable" from a Home Assistant sensor without a value
        raise ValueError(f"price topic: {text[:40]!r} is neither a number nor JSON") from exc
    if not isinstance(data, dict):
        return Price(_number(data, "price"))
    current = _first(data, IMPORT_KEYS)
    if current is None:
        raise ValueError(f"price topic: no import price (keys {', '.join(IMPORT_KEYS)})")
    export = data.get("export")
    items = _first(data, FORECAST_KEYS)
    return Price(
        _number(current, "import price"),
        None if export is None else _number(export, "export price"),
        () if items is None else _forecast(items),
    )


def fresh_price(value: FreshValue[Price] | None, now_s: float, stale_s: float) -> Price | None:
    """The price if one arrived within ``stale_s``, else None."""
    if value is None or not value.fresh(now_s, stale_s):
        return None
    return value.value
