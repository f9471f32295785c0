"""The MQTT contract: every topic gridzero uses and every payload, as validated models.

One place, so that services, the console, the simulator, Home Assistant discovery,
the broker ACL and ``docs/mqtt.md`` all agree. Topics live under a configurable
base (default ``gridzero``); each service owns ``<base>/<service>/...``.

Conventions:
- State payloads are JSON objects validated by the models below, SI units in the
  key names (``voltage_v``, ``current_a``, ``power_w``, ``soc_pct``) and a
  ``ts`` (Unix time, seconds) of when the value was measured or decided.
- Commands go to ``.../set`` topics and are validated; a rejected command changes
  nothing and is answered on ``<base>/<service>/ack``.
- Runtime settings: ``<base>/<service>/settings/<name>/set`` (command, plain text
  value) and ``<base>/<service>/settings/<name>`` (retained echo, plain text), so
  Home Assistant number/select/switch entities can use them directly. Buttons:
  ``<base>/<service>/action/<name>/set``.
- One sign for the battery's current and power (``BATTERY_SIGN``): positive while
  charging (into the battery), negative while discharging, as the shunt in the
  battery negative reads it and as the bms and the charger trip on it. Grid power
  (``GRID_SIGN``): positive on import. A device's own current or power (the
  rectifier's output, an inverter's demand) is a size, never negative.
- The grid meter is an outside input: by default ``meterbox/grid``, a plain
  integer in W, positive = import (topic, JSON path and sign are settings).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from gridzero.registry import SERVICES

__all__ = ["SERVICES"]  # re-exported: the one table of parts lives in gridzero.registry

DEFAULT_BASE = "gridzero"
DEFAULT_METER_TOPIC = "meterbox/grid"
LEGACY_CHARGE_TARGET_TOPIC = "meterbox/chargeTarget"
# The original ESP32 project's topics (github.com/anikrooz/housebatt, housebatt.ino), published
# by the optional `housebatt-compat` service with the original's names, units and signs
# (services/housebatt-compat/README.md gives the source line of each).
HOUSEBATT_BATTERY_NAMES: tuple[str, ...] = (
    "amps",
    "soc",
    "amphour",
    "volt",
    "balancing",
    "highcell",
    "lowcell",
    "temp",
    "cells",
    "error",
)
HOUSEBATT_BATTERY_TOPICS: tuple[str, ...] = tuple(f"battery/{n}" for n in HOUSEBATT_BATTERY_NAMES)
HOUSEBATT_UPTIME_TOPIC = "goatshed/uptime"
HOUSEBATT_STATUS_TOPIC = "goatshed/status"
HOUSEBATT_TOPICS: tuple[str, ...] = (
    *HOUSEBATT_BATTERY_TOPICS,
    HOUSEBATT_UPTIME_TOPIC,
    HOUSEBATT_STATUS_TOPIC,
)
HA_STATUS_TOPIC = "homeassistant/status"
HA_DISCOVERY_PREFIX = "homeassistant"

BATTERY_SIGN = "+ charging (into the battery), - discharging"
"""The one sign of battery current and power; every such field's description states it."""
GRID_SIGN = "+ import, - export"
"""The sign of grid power at the meter."""

SocSource = Literal["unknown", "estimated", "ocv", "full_anchor", "empty_anchor", "set", "restored"]
"""Where the shunt's state of charge came from (services/shunt/README.md explains each)."""
SOC_SOURCES: tuple[SocSource, ...] = get_args(SocSource)


class ServiceStatus(StrEnum):
    """Payload of ``<base>/<service>/status`` (plain text, retained)."""

    ONLINE = "online"
    OFFLINE = "offline"  # the broker's last will: the process died or lost its connection
    STOPPED = "stopped"  # clean exit


# ----------------------------------------------------------------------- published numbers

# Decimals a published number keeps, by the unit its name ends in: what the number means, not
# what the float happens to hold (`"setpoint_w":118.61627647781577` says nothing 118.6 does
# not). Voltages to the mV, currents to 10 mA, power to 0.1 W, SoC to 0.1 %. A field states
# its own with `Field(json_schema_extra={"decimals": n})`; `"round": "down"` for a limit (a
# rounded limit must not allow more) and for a total that must never be ahead of its store.
DECIMALS_BY_UNIT: dict[str, int] = {
    "ts": 3,  # ms
    "v": 3,
    "a": 2,
    "w": 1,
    "pct": 1,
    "c": 1,
    "hz": 2,
    "s": 2,
    "ah": 3,
    "wh": 1,
    "kwh": 4,  # 0.1 Wh
    "counts": 2,
    "min": 2,
}
ROUND_DOWN: dict[str, Any] = {"round": "down"}


@dataclass(frozen=True, slots=True)
class Rounding:
    """How one field's numbers are published."""

    decimals: int
    down: bool = False

    def apply(self, value: Any) -> Any:
        """``value`` rounded (numbers in lists too); anything else as it is."""
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        if not isinstance(value, float) or not math.isfinite(value):
            return value
        if self.down:
            scale = 10.0**self.decimals
            # the 1e-9 keeps 0.29 (28.999999999999996 hundredths) at 0.29
            return round(math.floor(value * scale + 1e-9) / scale, self.decimals)
        return round(value, self.decimals)


def field_rounding(name: str, extra: object) -> Rounding | None:
    """The rounding of a field: its own ``decimals``, else the unit its name ends in."""
    meta = extra if isinstance(extra, dict) else {}
    down = meta.get("round") == "down"
    if isinstance(meta.get("decimals"), int):
        return Rounding(meta["decimals"], down)
    unit = name.rsplit("_", 1)[-1]
    if unit in DECIMALS_BY_UNIT:
        return Rounding(DECIMALS_BY_UNIT[unit], down)
    return None


def _float_field(annotation: object) -> bool:
    return "float" in str(annotation)


class Payload(BaseModel):
    """Base of every JSON payload: strict keys, finite numbers; numbers published rounded to
    what they mean (`DECIMALS_BY_UNIT`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    topic_doc: ClassVar[str] = ""

    @classmethod
    def roundings(cls) -> dict[str, Rounding | None]:
        """Every float field and its rounding (None: published as it is)."""
        cached: dict[str, Rounding | None] | None = cls.__dict__.get("_roundings_cache")
        if cached is None:
            cached = {
                name: field_rounding(name, info.json_schema_extra)
                for name, info in cls.model_fields.items()
                if _float_field(info.annotation)
            }
            cls._roundings_cache = cached  # type: ignore[attr-defined]
        return cached

    @model_serializer(mode="wrap")
    def _rounded(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, rounding in type(self).roundings().items():
                if rounding is not None and name in data:
                    data[name] = rounding.apply(data[name])
        return data


class Stamped(Payload):
    """A payload with the time it describes."""

    ts: float = Field(ge=0, description="Unix time in seconds when the values were measured")


class Numbered(Stamped):
    """A safety-relevant payload its publisher numbers: consumers refuse repeats and replays.

    ``boot`` is a random id per publisher start, ``seq`` counts up from 1 within a boot
    (gridzero.runtime.freshness)."""

    boot: str = Field(min_length=1, max_length=32, description="publisher's random id per start")
    seq: int = Field(ge=1, description="counts up from 1 within one boot")


# --------------------------------------------------------------------------- bms


class CellRef(Payload):
    """Where a cell sits: module position (per bus) and cell number 1..12."""

    bus: int = Field(ge=0)
    module: int = Field(ge=1)
    cell: int = Field(ge=1)
    voltage_v: float


class Alarm(Payload):
    """One active protection alarm."""

    code: str = Field(description="machine name, e.g. cell_over_voltage, module_missing")
    message: str = Field(description="human text naming the value, the limit and the place")
    since_ts: float = Field(ge=0)


class BmsLimits(Numbered):
    """The battery's limits, owned by the bms; charger and inverters obey them on their own."""

    topic_doc: ClassVar[str] = "battery limits, about every 0.5 s"
    cvl_v: float = Field(
        ge=0, description="charge voltage limit, pack volts", json_schema_extra=ROUND_DOWN
    )
    ccl_a: float = Field(ge=0, description="charge current limit", json_schema_extra=ROUND_DOWN)
    dcl_a: float = Field(ge=0, description="discharge current limit", json_schema_extra=ROUND_DOWN)
    charge_allowed: bool
    discharge_allowed: bool
    pack_voltage_v: float = Field(ge=0)
    reasons: list[str] = Field(default_factory=list, description="why a limit is below its maximum")
    alarms: list[Alarm] = Field(default_factory=list)

    # Every consumer reads the limits through these: a denied side is a zero limit, any
    # alarm stops both sides (charger, inverter, controller alike).
    @property
    def charge_limit_a(self) -> float:
        """CCL, or 0 while the bms does not allow charging."""
        return self.ccl_a if self.charge_allowed else 0.0

    @property
    def discharge_limit_a(self) -> float:
        """DCL, or 0 while the bms does not allow discharging."""
        return self.dcl_a if self.discharge_allowed else 0.0

    @property
    def alarm(self) -> bool:
        """True while the bms reports any alarm."""
        return bool(self.alarms)


class PackState(Stamped):
    """Whole-pack view across all buses and modules."""

    topic_doc: ClassVar[str] = "pack voltage, cell extremes, temperatures, modules, about every 1 s"
    pack_voltage_v: float = Field(ge=0)
    cell_min: CellRef | None
    cell_max: CellRef | None
    cell_avg_v: float | None
    cell_delta_v: float | None = Field(ge=0)
    temperature_min_c: float | None
    temperature_max_c: float | None
    temperature_avg_c: float | None
    modules_present: int = Field(ge=0)
    modules_expected: int = Field(ge=0)
    cells_counted: int = Field(ge=0)
    cells_expected: int = Field(ge=0)
    cells_in_series: int | None = Field(
        default=None,
        ge=1,
        description="cells in series by the bms's layout settings (the charger checks its own)",
    )
    balancing: bool
    balancing_cells: int = Field(ge=0, description="how many cells bleed now")
    alarm_text: str = Field(description="empty when all is well")
    frames_rx: int = Field(ge=0)
    frames_bad: int = Field(ge=0)


class ModuleState(Stamped):
    """One module's cells and temperatures."""

    topic_doc: ClassVar[str] = "one module's cells, temperatures and bleed state"
    bus: int = Field(ge=0)
    module: int = Field(ge=1)
    present: bool
    age_s: float | None = Field(ge=0, description="seconds since the last frame")
    cells_v: list[float | None]
    temperatures_c: list[float | None]
    balancing_cells: list[int] = Field(default_factory=list, description="cell numbers bleeding")
    suspect_cells: list[int] = Field(
        default_factory=list,
        description="cell numbers configured as suspect (read wrong; not judged low)",
    )


# --------------------------------------------------------------------------- charger


class ChargeCommand(Numbered):
    """Controller -> charger. Exactly one of current_a / power_w; voltage defaults to CVL."""

    topic_doc: ClassVar[str] = "charge command from the controller (the only writer)"
    current_a: float | None = Field(default=None, ge=0, le=200)
    power_w: float | None = Field(default=None, ge=0, le=20000)
    voltage_v: float | None = Field(default=None, ge=0, le=60)
    enable: bool = True

    @field_validator("power_w")
    @classmethod
    def _one_target(cls, v: float | None, info: Any) -> float | None:
        if v is not None and info.data.get("current_a") is not None:
            raise ValueError("give current_a or power_w, not both")
        return v


class ChargerState(Stamped):
    """What the rectifier reports and what the charger service decided."""

    topic_doc: ClassVar[str] = "rectifier readings, link and the effective limit, about every 1 s"
    link: Literal["ok", "lost", "unknown"]
    dc_on: bool
    output_voltage_v: float | None
    output_current_a: float | None = Field(description="the rectifier's DC output (a size)")
    output_power_w: float | None = Field(description="the rectifier's DC output (a size)")
    temperature_c: float | None
    input_voltage_v: float | None
    setpoint_voltage_v: float | None
    setpoint_current_a: float | None = Field(description="the current limit sent (a size)")
    limit_reason: str = Field(description="controller, cvl, ccl, max_power, alarm, stale_bms, ...")
    status_flags: list[str] = Field(default_factory=list)
    alarms: list[Alarm] = Field(
        default_factory=list,
        description="the charger's own: over_current_trip (latched), fallback_unconfirmed, "
        "cvl_above_pack_max",
    )
    fallback: Literal["pending", "confirmed", "refused", "unanswered"] = Field(
        default="pending", description="the stored fallback write: DC stays off unless confirmed"
    )


# --------------------------------------------------------------------------- inverter


class InverterCommand(Numbered):
    """Controller -> one inverter line: the AC power all its units together should feed."""

    topic_doc: ClassVar[str] = (
        "power demand for one line (an RS485 port and its units) from the controller (the only "
        "writer)"
    )
    power_w: float = Field(ge=0, le=10000)


class InverterState(Stamped):
    """One unit: demand sent, what it reports, link and cap."""

    topic_doc: ClassVar[str] = "one unit's demand, status, link and cap, about every 1 s"
    unit: str
    line: str | None = Field(default=None, description="the line (RS485 port) the unit is on")
    demand_w: float = Field(ge=0, description="the demand on the wire now (the line's frame)")
    requested_w: float = Field(ge=0, description="what the controller asked of the unit's line")
    cap_w: float = Field(ge=0)
    cap_reason: str
    link: Literal["ok", "no_status", "port_error", "stopped"]
    sending: bool
    battery_voltage_v: float | None = None
    battery_current_a: float | None = Field(
        default=None, description="the DC current the unit draws from the battery (a size)"
    )
    ac_voltage_v: float | None = None
    frequency_hz: float | None = None
    temperature_c: float | None = None
    operation_status: int | None = None


GTN_MAX_POWER_W = 2000
"""The largest SoyoSource GTN limiter model's rating (GTN-2000LIM48W); no unit feeds more."""

MAX_LINES = 8
"""Lines (RS485 ports) one inverter service drives; the simulator's plant has at most 8 units."""

MAX_UNITS_PER_LINE = 6
"""Inverters that hear one line's frames (the OEM clamp and ESPHome divide by 1..6)."""

_ID = r"^[a-z0-9_-]+$"


class InverterUnitInfo(Payload):
    """One SoyoSource unit on a line: its rating and its DC window."""

    id: str = Field(min_length=1, max_length=32, pattern=_ID)
    max_power_w: int = Field(
        ge=0, le=GTN_MAX_POWER_W, description="the most this unit feeds (its runtime cap)"
    )
    parallel: int = Field(default=1, ge=1, le=MAX_UNITS_PER_LINE, description="identical units")
    dc_min_v: float = Field(gt=0, le=200, description="below this pack voltage the unit is at 0 W")
    dc_max_v: float = Field(gt=0, le=200, description="above this pack voltage the unit is at 0 W")
    enabled: bool = True


class InverterLineInfo(Payload):
    """One RS485 line: every unit on it hears the same demand frame."""

    id: str = Field(min_length=1, max_length=32, pattern=_ID)
    units: list[InverterUnitInfo] = Field(min_length=1, max_length=MAX_UNITS_PER_LINE)

    @field_validator("units")
    @classmethod
    def _bounded(cls, units: list[InverterUnitInfo]) -> list[InverterUnitInfo]:
        count = sum(u.parallel for u in units)
        if count > MAX_UNITS_PER_LINE:
            raise ValueError(f"{count} units on one line, more than {MAX_UNITS_PER_LINE}")
        return units

    def capacity_w(self) -> int:
        """What the line feeds at most: each unit up to its own rating (0 if one is off)."""
        if not all(u.enabled for u in self.units):
            return 0
        return sum(u.max_power_w * u.parallel for u in self.units)

    def dc_window_v(self) -> tuple[float, float]:
        """Pack voltages at which every unit of the line may feed (the narrowest window)."""
        return max(u.dc_min_v for u in self.units), min(u.dc_max_v for u in self.units)


class InverterUnits(Numbered):
    """The inverter service's lines and units: what the controller splits its demand over."""

    topic_doc: ClassVar[str] = (
        "the inverter lines and their units (ratings, DC windows), retained; at start and on "
        "every change; the controller learns its units from it"
    )
    lines: list[InverterLineInfo] = Field(min_length=1, max_length=MAX_LINES)

    @field_validator("lines")
    @classmethod
    def _unique(cls, lines: list[InverterLineInfo]) -> list[InverterLineInfo]:
        line_ids = [line.id for line in lines]
        unit_ids = [u.id for line in lines for u in line.units]
        for kind, ids in (("line", line_ids), ("unit", unit_ids)):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            if twice:
                raise ValueError(f"{kind} id(s) {twice} used twice")
        for line in lines:
            low, high = line.dc_window_v()
            if low >= high:
                raise ValueError(
                    f"line {line.id!r}: its units' DC windows do not overlap "
                    f"({low:g} V .. {high:g} V)"
                )
        return lines


# --------------------------------------------------------------------------- shunt


class ShuntState(Stamped):
    """Battery current, state of charge and energy counters."""

    topic_doc: ClassVar[str] = "current, SoC and energy counters, about every 1 s"
    sensor: Literal["ok", "unavailable"]
    current_a: float | None = Field(description=f"battery current: {BATTERY_SIGN}")
    power_w: float | None = Field(description=f"battery power: {BATTERY_SIGN}")
    soc_pct: float | None = Field(ge=0, le=100)
    # A str, not SocSource: a consumer (the bms, the charger) must not drop the current
    # because a newer shunt names a source it does not know yet.
    soc_source: str = Field(
        description="where soc_pct came from: "
        + ", ".join(SOC_SOURCES)
        + " (services/shunt/README.md)."
        " estimated: from the pack voltage under load; ocv: from a rest; full_anchor /"
        " empty_anchor: at a full charge / the empty cut-off; set: by a person; restored: from"
        " the state file. Counting continues from each."
    )
    soc_uncertain_pct: float | None = Field(
        default=None, ge=0, le=100, description="+- % of an estimated SoC; null otherwise"
    )
    remaining_ah: float | None = Field(ge=0)
    remaining_wh: float | None = Field(ge=0)
    capacity_ah: float = Field(gt=0)
    # totals: rounded down, so a published total is never ahead of the one on disk
    charge_in_ah: float = Field(ge=0, json_schema_extra=ROUND_DOWN)
    charge_out_ah: float = Field(ge=0, json_schema_extra=ROUND_DOWN)
    energy_in_kwh: float = Field(
        ge=0, description="total_increasing, Energy dashboard", json_schema_extra=ROUND_DOWN
    )
    energy_out_kwh: float = Field(
        ge=0, description="total_increasing, Energy dashboard", json_schema_extra=ROUND_DOWN
    )
    offset_counts: float
    gain: float = Field(json_schema_extra={"decimals": 6})


# --------------------------------------------------------------------------- controller


class ControllerMode(StrEnum):
    """What the controller is allowed to do."""

    AUTO = "auto"
    CHARGE_ONLY = "charge_only"
    DISCHARGE_ONLY = "discharge_only"
    HOLD = "hold"
    CONSTANT_POWER = "constant_power"
    OFF = "off"


class ControllerState(Stamped):
    """The loop's inputs, decision and quality."""

    topic_doc: ClassVar[str] = "loop inputs, set-point and quality, on every meter value"
    mode: ControllerMode
    grid_w: float | None = Field(description=f"grid power at the meter: {GRID_SIGN}")
    target_w: float = Field(description=f"the grid power the loop aims at: {GRID_SIGN}")
    setpoint_w: float = Field(description=f"battery power asked for: {BATTERY_SIGN}")
    charge_w: float = Field(ge=0)
    discharge_w: float = Field(ge=0)
    state: str = Field(
        description="idle, charging, discharging, switching, stale_meter, stale_bms, ..."
    )
    meter_age_s: float | None = Field(ge=0)
    grid_error_mean_w: float = Field(description="mean of grid_w - target_w")
    grid_error_rms_w: float = Field(ge=0)
    reversals_per_min: float = Field(ge=0)
    charge_target_w: float | None = Field(
        default=None,
        ge=0,
        description="the power `meterbox/chargeTarget` charges at while it is active (the meter "
        "is ignored meanwhile); null when none",
    )
    charge_target_left_s: float | None = Field(
        default=None, ge=0, description="seconds until the charge target lapses unless refreshed"
    )
    charge_target_until_ts: float | None = Field(
        default=None, ge=0, description="Unix time when the charge target lapses unless refreshed"
    )
    faults: list[str] = Field(default_factory=list)
    rule: str = Field(
        default="none",
        description="the schedule or price rule in force: none, window_1..window_6, "
        "charge_below_price, hold_below_price (mode auto only)",
    )
    rule_why: str = Field(default="", description="what the rule does now and why, in words")
    price: float | None = Field(
        default=None,
        description="the import price in force (None: no price topic, or stale)",
        # the price topic's own unit (EUR/kWh, ct/kWh): 5 decimals keep every tariff's figures
        json_schema_extra={"decimals": 5},
    )


# --------------------------------------------------------------------------- common


class Ack(Stamped):
    """The answer to a command or setting change on ``<base>/<service>/ack``."""

    topic_doc: ClassVar[str] = "accepted/refused answer to every command and setting change"
    ok: bool
    topic: str
    value: str = Field(description="the value as received (truncated)")
    reason: str = ""


class LogRecord(Stamped):
    """A log line a service publishes for the console (rate-limited)."""

    topic_doc: ClassVar[str] = "log records at or above the service's MQTT log level"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    logger: str
    message: str


class RawFrame(Stamped):
    """One raw frame seen or sent on a device link, for debugging."""

    topic_doc: ClassVar[str] = "raw CAN/serial traffic while traffic debugging is on"
    link: str
    direction: Literal["rx", "tx"]
    data_hex: str


class SimTruth(Stamped):
    """The plant's true state, published by the simulator for tests and plots."""

    topic_doc: ClassVar[str] = "true plant state (simulation only)"
    soc_pct: float
    pack_voltage_v: float
    current_a: float = Field(description=f"battery current: {BATTERY_SIGN}")
    cell_min_v: float
    cell_max_v: float
    cells_v: list[list[float]]
    temperatures_c: list[float]
    load_w: float = Field(description="the house's consumption (a size)")
    pv_w: float = Field(description="PV production (a size)")
    grid_w: float = Field(description=f"grid power at the meter: {GRID_SIGN}")
    inverter_w: list[float] = Field(description="each unit's AC output (a size)")
    charger_ac_w: float = Field(description="the rectifier's AC input (a size)")
    charger_dc_a: float = Field(description="the rectifier's DC output (a size)")


class SimFault(Payload):
    """A fault to inject into the simulated plant."""

    topic_doc: ClassVar[str] = "inject or clear a simulated fault"
    kind: Literal[
        "cell_drift",
        "module_silent",
        "rectifier_silent",
        "inverter_silent",
        "gateway_restart",
        "bus_garbage",
        "meter_silent",
        "meter_junk",
        "load_step",
        "over_temperature",
        "duplicate_module",
        "frozen_module",
        "rectifier_over_current",
        "rectifier_refuses_stored",
        "clear",
    ]
    target: str = Field(default="", description="module 'bus:module[:cell]', inverter unit, ...")
    value: float = Field(default=0.0, description="V/h drift, W step, °C, seconds, ...")
    duration_s: float = Field(default=0.0, ge=0, description="0 = until cleared")


# --------------------------------------------------------------------------- topics


SETTING_WRITERS: tuple[str, ...] = ("homeassistant", "telnet-console", "operator")
"""The broker users that may change runtime settings and press buttons (user interfaces)."""

EACH_SERVICE = "{service}"
"""A writer meaning: every service, each under its own name (``{service}`` in the pattern)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One kind of topic: written once here, it gives ``Topics``, docs/mqtt.md and the ACL.

    ``pattern`` has placeholders: ``{base}`` (the base topic), ``{service}``, ``{meter}``
    (the controller's meter topic) and names such as ``{unit}``; ``[/{unit}]`` is an
    optional level (the inverter's units). ``writers`` are broker users
    (mosquitto/config/acl); ``EACH_SERVICE`` means every service under its own name. A
    placeholder becomes ``+`` in the ACL."""

    name: str
    pattern: str
    writers: tuple[str, ...]
    payload: type[Payload] | str
    retained: bool
    doc: str
    note: str = ""
    """Shown after the writers in the docs, e.g. who else uses that broker user."""


_OWN = (EACH_SERVICE,)

TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "status",
        "{base}/{service}/status",
        _OWN,
        "`online`, `offline` or `stopped`",
        True,
        "liveness: `online` after connect, `offline` as the broker's last will, `stopped` on a clean exit",
    ),
    TopicSpec("log", "{base}/{service}/log", _OWN, LogRecord, False, LogRecord.topic_doc),
    TopicSpec("ack", "{base}/{service}/ack", _OWN, Ack, False, Ack.topic_doc),
    TopicSpec("raw", "{base}/{service}/raw", _OWN, RawFrame, False, RawFrame.topic_doc),
    TopicSpec(
        "setting",
        "{base}/{service}[/{unit}]/settings/{name}",
        _OWN,
        "plain text value",
        True,
        "current value of a runtime setting (echo after every change, and at start)",
    ),
    TopicSpec(
        "setting_set",
        "{base}/{service}[/{unit}]/settings/{name}/set",
        SETTING_WRITERS,
        "plain text value",
        False,
        "change a runtime setting; validated, persisted, answered on ack",
    ),
    TopicSpec(
        "action_set",
        "{base}/{service}[/{unit}]/action/{name}/set",
        SETTING_WRITERS,
        "plain text (ignored) or JSON",
        False,
        "press a button, e.g. shunt `soc_full`, bms `force_balance`",
    ),
    TopicSpec("bms_limits", "{base}/bms/limits", ("bms",), BmsLimits, True, BmsLimits.topic_doc),
    TopicSpec("bms_pack", "{base}/bms/pack", ("bms",), PackState, True, PackState.topic_doc),
    TopicSpec(
        "bms_module",
        "{base}/bms/module/{bus}-{module}",
        ("bms",),
        ModuleState,
        True,
        ModuleState.topic_doc,
    ),
    TopicSpec(
        "charger_state",
        "{base}/charger/state",
        ("charger",),
        ChargerState,
        True,
        ChargerState.topic_doc,
    ),
    TopicSpec(
        "charger_set",
        "{base}/charger/set",
        ("controller",),
        ChargeCommand,
        False,
        ChargeCommand.topic_doc,
    ),
    TopicSpec(
        "inverter_state",
        "{base}/inverter/{unit}/state",
        ("inverter",),
        InverterState,
        True,
        InverterState.topic_doc,
    ),
    TopicSpec(
        "inverter_units",
        "{base}/inverter/units",
        ("inverter",),
        InverterUnits,
        True,
        InverterUnits.topic_doc,
    ),
    TopicSpec(
        "inverter_set",
        "{base}/inverter/{line}/set",
        ("controller",),
        InverterCommand,
        False,
        InverterCommand.topic_doc,
    ),
    TopicSpec(
        "shunt_state", "{base}/shunt/state", ("shunt",), ShuntState, True, ShuntState.topic_doc
    ),
    TopicSpec(
        "controller_state",
        "{base}/controller/state",
        ("controller",),
        ControllerState,
        True,
        ControllerState.topic_doc,
    ),
    TopicSpec("sim_truth", "{base}/sim/truth", ("sim",), SimTruth, False, SimTruth.topic_doc),
    TopicSpec(
        "sim_fault_set",
        "{base}/sim/fault/set",
        ("operator",),
        SimFault,
        False,
        SimFault.topic_doc,
        note="tests log in as operator",
    ),
    TopicSpec(
        "meter",
        "{meter}",
        ("meter", "homeassistant"),
        "plain integer W, + import",
        False,
        f"grid power at the meter, `{DEFAULT_METER_TOPIC}` by default; the controller settings "
        "`meter_preset`, `meter_topic`, `meter_json_path`, `meter_sign` and `meter_unit` "
        "choose another topic and shape ([Meter topic](#meter-topic), docs/meter.md)",
        note="the outside meter, or a Home Assistant automation forwarding a sensor",
    ),
    TopicSpec(
        "price",
        "{base}/price",
        ("homeassistant", "operator"),
        'a plain number, or JSON `{"import": x, "export": y, "forecast": [...]}`',
        False,
        "the current import price (optional: the controller's start-up setting `price_input`); "
        "never retained (a retained price is never fresh); stale after `price_stale_s`",
        note="a Home Assistant automation forwarding a tariff sensor",
    ),
    TopicSpec(
        "sim_meter",
        DEFAULT_METER_TOPIC,
        ("sim",),
        "plain integer W, + import",
        False,
        "the simulated grid meter (simulation only), on the default meter topic",
    ),
    TopicSpec(
        "legacy_charge_target",
        LEGACY_CHARGE_TARGET_TOPIC,
        ("homeassistant", "operator"),
        "plain integer W",
        False,
        "the original system's charge command: > 0 charge at that power, ignoring the meter, "
        "until no refresh came for `charge_target_timeout_s` (15 s); <= 0 back to the loop "
        "and discharging enabled again; never retained, never persisted",
        note="legacy; for an owner's automations, issue 19",
    ),
    TopicSpec(
        "housebatt_battery",
        "battery/{name}",
        ("housebatt-compat",),
        "plain text, the original's format",
        False,
        "the original system's battery topics (amps + out of the battery, "
        + ", ".join(HOUSEBATT_BATTERY_NAMES[1:])
        + "), every 0.5 s, cells every 10 s (services/housebatt-compat/README.md)",
        note="optional service",
    ),
    TopicSpec(
        "housebatt_uptime",
        HOUSEBATT_UPTIME_TOPIC,
        ("housebatt-compat",),
        "plain integer s",
        False,
        "seconds since the compat service started, every 0.5 s",
        note="optional service",
    ),
    TopicSpec(
        "housebatt_status",
        HOUSEBATT_STATUS_TOPIC,
        ("housebatt-compat",),
        "plain text",
        False,
        "the original's event texts: ` --- BOOT ---`, `START CHARGING`, `STOP CHARGING ...`, "
        "`Demand: N`, `SOC SET: N`, faults",
        note="optional service",
    ),
    TopicSpec(
        "ha_device",
        HA_DISCOVERY_PREFIX + "/device/gridzero_{service}[/{unit}]/config",
        _OWN,
        "HA device discovery JSON",
        True,
        "Home Assistant device-based discovery (an inverter unit is a device of its own); "
        "re-published when HA sends `online`",
    ),
    TopicSpec(
        "ha_hub",
        HA_DISCOVERY_PREFIX + "/device/gridzero_hub/config",
        ("controller",),
        "HA device discovery JSON",
        True,
        "the gridzero hub device (one running sensor per service) every service device links to",
    ),
    TopicSpec(
        "ha_status",
        HA_STATUS_TOPIC,
        ("homeassistant",),
        "`online` or `offline`",
        True,
        "Home Assistant's birth/last will; `online` makes every service re-publish discovery",
    ),
    TopicSpec(
        "ha_config",
        HA_DISCOVERY_PREFIX + "/{component}[/{node_id}]/{object_id}/config",
        ("homeassistant",),
        "HA discovery JSON",
        True,
        "any discovery config: Home Assistant may remove or replace a retained one",
    ),
)

OPTIONAL_LEVEL = re.compile(r"\[/\{(\w+)\}\]")
"""An optional topic level in a pattern: ``[/{unit}]``."""
PLACEHOLDER = re.compile(r"\{(\w+)\}")
"""A placeholder in a pattern: ``{base}``, ``{unit}``..."""


def fill_topic(pattern: str, fields: Mapping[str, object]) -> str:
    """A pattern with its placeholders filled; an optional level without a value is left out.

    A missing placeholder raises ValueError naming it and the pattern."""

    def optional(m: re.Match[str]) -> str:
        value = fields.get(m.group(1))
        return "" if value is None or value == "" else f"/{value}"

    def required(m: re.Match[str]) -> str:
        value = fields.get(m.group(1))
        if value is None:
            raise ValueError(f"topic {pattern!r} needs {{{m.group(1)}}}; given {sorted(fields)}")
        return str(value)

    return PLACEHOLDER.sub(required, OPTIONAL_LEVEL.sub(optional, pattern))


def topic_spec(name: str, specs: tuple[TopicSpec, ...] = TOPIC_SPECS) -> TopicSpec:
    """The spec called ``name``; KeyError naming the known ones."""
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown topic kind {name!r}; known: {', '.join(s.name for s in specs)}")


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic under one base, built from ``TOPIC_SPECS``. Build once from the base-topic
    setting."""

    base: str = DEFAULT_BASE
    specs: tuple[TopicSpec, ...] = field(default=TOPIC_SPECS, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.base or any(c in self.base for c in "#+") or self.base.startswith("/"):
            raise ValueError(
                f"base topic {self.base!r} must be non-empty, without '#', '+' or a leading '/'"
            )

    def topic(self, kind: str, /, **fields: object) -> str:
        """The concrete topic of the kind ``kind`` (a ``TopicSpec.name``)."""
        return fill_topic(topic_spec(kind, self.specs).pattern, {"base": self.base, **fields})

    def svc(self, service: str, *parts: str) -> str:
        """``<base>/<service>/<parts...>``."""
        return "/".join((self.base, service, *parts))

    def status(self, service: str) -> str:
        return self.topic("status", service=service)

    def log(self, service: str) -> str:
        return self.topic("log", service=service)

    def ack(self, service: str) -> str:
        return self.topic("ack", service=service)

    def raw(self, service: str) -> str:
        return self.topic("raw", service=service)

    def setting(self, service: str, name: str, *, unit: str | None = None) -> str:
        return self.topic("setting", service=service, name=name, unit=unit)

    def setting_set(self, service: str, name: str, *, unit: str | None = None) -> str:
        return self.topic("setting_set", service=service, name=name, unit=unit)

    def action_set(self, service: str, name: str, *, unit: str | None = None) -> str:
        return self.topic("action_set", service=service, name=name, unit=unit)

    # bms
    @property
    def bms_limits(self) -> str:
        return self.topic("bms_limits")

    @property
    def bms_pack(self) -> str:
        return self.topic("bms_pack")

    def bms_module(self, bus: int, module: int) -> str:
        return self.topic("bms_module", bus=bus, module=module)

    # charger
    @property
    def charger_state(self) -> str:
        return self.topic("charger_state")

    @property
    def charger_set(self) -> str:
        return self.topic("charger_set")

    # inverter
    def inverter_state(self, unit: str) -> str:
        return self.topic("inverter_state", unit=unit)

    def inverter_set(self, line: str) -> str:
        return self.topic("inverter_set", line=line)

    @property
    def inverter_units(self) -> str:
        return self.topic("inverter_units")

    # shunt / controller / sim
    @property
    def shunt_state(self) -> str:
        return self.topic("shunt_state")

    @property
    def controller_state(self) -> str:
        return self.topic("controller_state")

    @property
    def price(self) -> str:
        return self.topic("price")

    @property
    def sim_truth(self) -> str:
        return self.topic("sim_truth")

    @property
    def sim_fault_set(self) -> str:
        return self.topic("sim_fault_set")


# --------------------------------------------------------------------------- decoding helpers


class PayloadError(ValueError):
    """A message that does not match the contract; the text names topic, value and rule."""


MAX_PAYLOAD_BYTES = 65536


M = TypeVar("M", bound=Payload)


def parse_payload(model: type[M], topic: str, payload: bytes) -> M:
    """Validate a JSON payload against its model, or raise PayloadError naming what is wrong."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{topic}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(
            f"{topic}: {describe_validation_error(exc)}; payload {_preview(payload)}"
        ) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """Every problem of a pydantic error on one line: field, value, rule."""
    parts = []
    for err in exc.errors(include_url=False):
        if not err["loc"] and err["type"] == "value_error":
            # a rule across fields names its fields and values itself; the whole payload
            # in front of it would push the reason out of a one-line message
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        given = err.get("input")
        shown = (
            _preview(json.dumps(given, default=str).encode())
            if err["type"] != "missing"
            else "missing"
        )
        parts.append(f"{where}={shown}: {err['msg']}")
    return "; ".join(parts)


def _preview(payload: bytes, limit: int = 80) -> str:
    text = payload[:limit].decode("utf-8", "replace")
    return text + ("…" if len(payload) > limit else "")


def parse_meter(
    payload: bytes,
    *,
    json_path: str = "",
    sign: Literal[1, -1] = 1,
    topic: str = DEFAULT_METER_TOPIC,
) -> float:
    """Grid power in W (+ import) from a meter message.

    With no JSON path the payload is a plain number (the original ``meterbox/grid``
    integer). With a dotted path (``ENERGY.Power``, ``total_power``) the payload is
    JSON and the value is found by walking the path.
    """
    text = payload.decode("utf-8", "replace").strip()
    value: Any
    if json_path:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, > 4300 digits, nesting
            raise PayloadError(
                f"{topic}: {_preview(payload)!s} is not JSON (json path {json_path!r})"
            ) from exc
        for key in json_path.split("."):
            if not isinstance(value, Mapping) or key not in value:
                raise PayloadError(
                    f"{topic}: json path {json_path!r} not found at {key!r} in {_preview(payload)}"
                )
            value = value[key]
    else:
        value = text
    if isinstance(value, bool):  # JSON true/false is no number of watts (float() would take it)
        raise PayloadError(f"{topic}: {_preview(payload)} is not a number of watts")
    try:
        watts = float(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: a 400-digit integer
        raise PayloadError(f"{topic}: {_preview(payload)} is not a number of watts") from exc
    if not math.isfinite(watts) or abs(watts) > 1_000_000:
        raise PayloadError(f"{topic}: {watts!r} W is outside -1e6..1e6 W")
    return sign * watts


def format_setting(value: object) -> str:
    """A runtime setting's value as the plain text published on its state topic."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def parse_setting_text(payload: bytes) -> object:
    """A setting command's plain-text payload as a Python value for validation.

    Numbers become numbers, ``true/false/on/off`` booleans, anything else a string
    (pydantic then validates it against the setting's type and range).
    """
    text = payload.decode("utf-8", "replace").strip()
    if len(text) > 256:
        raise PayloadError(f"setting value of {len(text)} characters exceeds 256")
    lowered = text.lower()
    if lowered in ("true", "on"):
        return True
    if lowered in ("false", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise PayloadError(f"setting value {text!r} is not a finite number")
    return number


PAYLOAD_MODELS: tuple[type[Payload], ...] = tuple(
    spec.payload for spec in TOPIC_SPECS if not isinstance(spec.payload, str)
)
