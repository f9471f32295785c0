"""Tariffs for `gridzero bench --tariff`: import and export price by time of day, and the cost
of a run.

A tariff file is YAML or CSV. YAML::

    name: cheap-night
    unit: GBP/kWh
    import: {"00:00": 0.285, "00:30": 0.075, "04:30": 0.285}   # each price from its time on
    export: 0.15                                               # a number, or a table like import
    gridzero: {window_1: "daily 00:30-04:30 charge 90% 3000W"} # gridzero+schedule's settings

CSV: a header ``start,import,export`` and one row per period (``00:00,0.21,0.05``, ...); the
optional ``gridzero`` settings only in YAML. The profile's seconds count from local midnight.

Cost of a run: what crossed the meter, priced at the time it crossed (import x import price
- export x export price), plus the change of the energy stored in the battery valued at the
mean import price times the inverters' efficiency (what that energy saves when it is fed
into the house later). Without that term a controller that empties the battery would look
cheap. Reported per day (scaled from the run's length).
"""

from __future__ import annotations

import csv
import io
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gridzero.errors import UsageError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "tariffs"
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A price from each start time (seconds after midnight) until the next one."""

    starts_s: tuple[float, ...]
    prices: tuple[float, ...]

    def at(self, t_s: float) -> float:
        i = bisect_right(self.starts_s, t_s % DAY_S) - 1
        return self.prices[i]  # -1: before the first start is the day's last price

    def mean(self) -> float:
        """The time-weighted mean over a day."""
        ends = (*self.starts_s[1:], DAY_S)
        total = sum(p * (e - s) for p, s, e in zip(self.prices, self.starts_s, ends, strict=True))
        head = self.prices[-1] * self.starts_s[0]
        return (total + head) / DAY_S


@dataclass(frozen=True, slots=True)
class Tariff:
    """Import and export prices by time of day, and gridzero+schedule's settings for it."""

    name: str
    unit: str
    import_price: PriceTable
    export_price: PriceTable
    gridzero: dict[str, Any] = field(default_factory=dict)
    # The local time of day of the profile's second 0 (a generated household starts at its
    # drawn hour; a bundled profile at midnight).
    clock_offset_s: float = 0.0

    def time_of_day_s(self, profile_s: float) -> float:
        """Seconds after local midnight at the profile's second ``profile_s``."""
        return (profile_s + self.clock_offset_s) % DAY_S

    def import_at(self, profile_s: float) -> float:
        """The import price at the profile's second ``profile_s``."""
        return self.import_price.at(self.time_of_day_s(profile_s))

    def export_at(self, profile_s: float) -> float:
        """The export price at the profile's second ``profile_s``."""
        return self.export_price.at(self.time_of_day_s(profile_s))


def _seconds(text: object, where: str) -> float:
    parts = str(text).strip().split(":")
    try:
        hours, minutes = int(parts[0]), int(parts[1])
    except (ValueError, IndexError) as exc:
        raise UsageError(f"{where}: time {text!r} is not HH:MM") from exc
    if len(parts) != 2 or not (0 <= hours < 24 and 0 <= minutes < 60):
        raise UsageError(f"{where}: time {text!r} is not HH:MM within 00:00..23:59")
    return hours * 3600.0 + minutes * 60.0


def _price(value: object, where: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: price {value!r} is not a number") from exc


def _table(raw: object, where: str) -> PriceTable:
    if isinstance(raw, int | float):
        return PriceTable((0.0,), (float(raw),))
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{where}: a number or a table of 'HH:MM: price', got {raw!r}")
    rows = sorted((_seconds(k, where), _price(v, f"{where} {k}")) for k, v in raw.items())
    starts = tuple(r[0] for r in rows)
    if len(set(starts)) != len(starts):
        raise UsageError(f"{where}: a start time appears twice")
    return PriceTable(starts, tuple(r[1] for r in rows))


def _from_csv(text: str, where: str) -> tuple[dict[str, float], dict[str, float]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"start", "import"} <= set(reader.fieldnames):
        raise UsageError(f"{where}: CSV needs the columns start,import[,export]")
    imports: dict[str, float] = {}
    exports: dict[str, float] = {}
    for n, row in enumerate(reader, start=2):
        imports[row["start"]] = _price(row["import"], f"{where} line {n}")
        exports[row["start"]] = _price(row.get("export") or 0.0, f"{where} line {n}")
    return imports, exports


def load_tariff(name_or_path: str) -> Tariff:
    """A tariff file by path, or a bundled one by name (``cheap-night``, ``half-hourly``)."""
    path = Path(name_or_path)
    if not path.exists():
        bundled = [
            p for p in BUNDLED_DIR.glob(f"{name_or_path}.*") if p.suffix in {".yaml", ".csv"}
        ]
        if not bundled:
            known = ", ".join(sorted(p.stem for p in BUNDLED_DIR.iterdir()))
            raise UsageError(f"--tariff {name_or_path!r}: no such file or bundled tariff ({known})")
        path = bundled[0]
    text = path.read_text()
    where = f"tariff {path.name}"
    if path.suffix == ".csv":
        imports, exports = _from_csv(text, where)
        return Tariff(path.stem, "", _table(imports, where), _table(exports, where))
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or "import" not in doc:
        raise UsageError(f"{where}: needs an 'import' price table")
    settings = doc.get("gridzero") or {}
    if not isinstance(settings, dict):
        raise UsageError(f"{where}: 'gridzero' must be a table of controller settings")
    return Tariff(
        str(doc.get("name", path.stem)),
        str(doc.get("unit", "")),
        _table(doc["import"], f"{where} import"),
        _table(doc.get("export", 0.0), f"{where} export"),
        dict(settings),
    )


@dataclass(frozen=True, slots=True)
class Cost:
    """One run's cost, per day."""

    controller: str
    import_cost: float
    export_credit: float
    stored_value: float  # the change of stored energy, valued (see the module docstring)
    per_day: float


def run_cost(
    controller: str,
    grid_w: array[float],
    soc_pct: array[float],
    start_s: float,
    tick_s: float,
    tariff: Tariff,
    *,
    capacity_kwh: float,
    inverter_efficiency: float,
    start_soc_pct: float,
) -> Cost:
    """The cost of one trace (grid power every ``tick_s`` from ``start_s``)."""
    imp = exp = 0.0
    for k, g in enumerate(grid_w):
        t = start_s + (k + 1) * tick_s
        kwh = g * tick_s / 3.6e6
        if kwh > 0:
            imp += kwh * tariff.import_at(t)
        else:
            exp += -kwh * tariff.export_at(t)
    end_soc = soc_pct[-1] if len(soc_pct) else start_soc_pct
    stored_kwh = (end_soc - start_soc_pct) / 100.0 * capacity_kwh
    stored = stored_kwh * tariff.import_price.mean() * inverter_efficiency
    duration = max(tick_s, len(grid_w) * tick_s)
    per_day = (imp - exp - stored) * DAY_S / duration
    return Cost(controller, imp, exp, stored, per_day)


# The hours in which PV may be exported (the bench's households have sun from 04:48 in summer
# to 16:00 in winter; these are the hours in which it usually is).
DAYTIME_S = (8 * 3600.0, 18 * 3600.0)
# Grid-charge target when the bought energy may displace PV that is then exported for less
# (room left for the day's PV), and when it cannot.
PARTIAL_SOC_PCT = 50.0
FULL_SOC_PCT = 90.0


def _daytime(table: PriceTable) -> list[float]:
    """The prices in force during DAYTIME_S (sampled every 30 min)."""
    start, end = DAYTIME_S
    return [table.at(start + k * 1800.0) for k in range(int((end - start) / 1800.0))]


def schedule_settings(tariff: Tariff, max_charge_w: float) -> dict[str, Any]:
    """gridzero+schedule's runtime settings for ``tariff``: its own ``gridzero`` section, or
    price rules from its prices.

    - Grid-charge below the cheapest quarter of the day's prices, and only below every daytime
      price: at midday a grid charge only fills the battery ahead of the sun, and the PV it
      displaces is exported.
    - Charge to 90 % if the cheapest import is below every daytime export price (bought
      energy that pushes PV out to the grid still gains), else to 50 %: room for the day's
      PV. Without a forecast a full battery from the grid loses on a sunny day when export
      pays less than the night's import (half-hourly tariffs: about half).
    - No discharging below the median price (the energy is kept for dearer periods)."""
    if tariff.gridzero:
        return dict(tariff.gridzero)
    prices = sorted(tariff.import_price.prices)
    quarter = prices[len(prices) // 4]
    median = prices[len(prices) // 2]
    day_min = min(_daytime(tariff.import_price))
    cheap = [p for p in prices if p <= quarter and p < day_min]
    dearer = [p for p in prices if cheap and p > cheap[-1]]
    full = prices[0] < min(_daytime(tariff.export_price))
    return {
        "price_charge_enabled": bool(cheap and dearer),
        # "below" is strict: the limit lies between the dearest cheap price and the next one
        "charge_below_price": (cheap[-1] + dearer[0]) / 2.0 if cheap and dearer else 0.0,
        "price_charge_soc_pct": FULL_SOC_PCT if full else PARTIAL_SOC_PCT,
        "price_charge_w": max_charge_w,
        "price_hold_enabled": True,
        "hold_below_price": median,
    }


def cost_table(costs: list[Cost], unit: str) -> str:
    """The cost lines printed under a case's table."""
    ref = next((c.per_day for c in costs if c.controller == "gridzero"), None)
    head = f"{'controller':<18}{'import':>9}{'export':>9}{'stored':>9}{'cost/day':>10}{'saving':>9}"
    lines = [
        f"cost ({unit or 'price unit'}; stored: battery energy change at the mean import "
        "price x inverter efficiency)",
        head,
    ]
    for c in costs:
        saving = "" if ref is None else f"{ref - c.per_day:9.3f}"
        lines.append(
            f"{c.controller:<18}{c.import_cost:9.3f}{c.export_credit:9.3f}"
            f"{c.stored_value:9.3f}{c.per_day:10.3f}{saving}"
        )
    return "\n".join(lines)
