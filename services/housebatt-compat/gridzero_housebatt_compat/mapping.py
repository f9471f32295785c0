"""gridzero's state as the original ESP32 project's topics: pure (no I/O, time is a parameter).

The original is github.com/anikrooz/housebatt (housebatt.ino and BMSModuleManager.cpp at
commit 1c279d5, "Balancing fixes"); the line of each topic is in the service's README.md.
Its numbers were Arduino ``String(float)``, which prints two decimals (Arduino core,
WString.cpp: ``String(float value, unsigned char decimalPlaces = 2)``), its flags
``String(bool)``, i.e. ``1`` or ``0``, and its state of charge an ``int``.

Signs: the original's ``battery/amps`` is + out of the battery ("bmAmps; //negavive is TO
battery", housebatt.ino line 157); gridzero's shunt is + into the battery
(``contract.BATTERY_SIGN``), so the current is negated here. Its ``Demand: N`` is + to the
house (inverter) and - into the battery (charger), the opposite of gridzero's set-point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from gridzero.contract import (
    BmsLimits,
    ControllerState,
    ModuleState,
    PackState,
    ShuntState,
)
from gridzero.runtime.freshness import FreshValue

CELLS_PER_MODULE = 12  # the original prints 12 cells per module (BMSModuleManager.cpp line 1416)
BOOT_TEXT = " --- BOOT ---"  # housebatt.ino line 420, spaces as published
START_CHARGING = "START CHARGING"  # line 292
STOP_TO_INVERT = "STOP CHARGING -> invert"  # line 253
STOP_TOO_SMALL = "STOP CHARGING too small"  # line 316
STOP_FULL = "STOP CHARGING, fully charged"  # line 453


def arduino_float(value: float) -> str:
    """What the original's ``String(float)`` printed: two decimals (never ``-0.00``)."""
    if not math.isfinite(value):
        raise ValueError(f"housebatt-compat: {value!r} is not a number the original could print")
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def arduino_bool(value: bool) -> str:
    """``String(bool)`` on Arduino: ``1`` or ``0`` (housebatt.ino line 626)."""
    return "1" if value else "0"


def amps_text(shunt_current_a: float) -> str:
    """``battery/amps``: A, + out of the battery (line 520: ``String(bmAmps/1000)``)."""
    return arduino_float(0.0 - shunt_current_a)


def soc_text(soc_pct: float) -> str:
    """``battery/soc``: an integer % (line 522; ``int SOC``, a float truncated on assignment,
    line 740), within 0..100."""
    if not math.isfinite(soc_pct):
        raise ValueError(f"housebatt-compat: soc {soc_pct!r} is not a number")
    return str(min(100, max(0, int(soc_pct))))


def amphour_text(remaining_ah: float) -> str:
    """``battery/amphour``: Ah left in the battery (line 523: ``ampsecond/3600``, A·s)."""
    return arduino_float(remaining_ah)


def module_name(bus: int, module: int) -> str:
    """``A1``, ``B3``: the original's bus letter (``bms`` "A", ``bms2`` "B", housebatt.ino line
    651) and the module number; gridzero's bus 0 is A, bus 1 is B, and so on."""
    if not 0 <= bus < 26:
        raise ValueError(f"housebatt-compat: bus {bus} has no letter (0..25 are A..Z)")
    return f"{chr(ord('A') + bus)}{module}"


def cells_json(modules: Iterable[ModuleState]) -> str:
    """``battery/cells``: ``{"A1":{"cells":[3.91, ...]}, "B1":{...}}`` (housebatt.ino line 651,
    BMSModuleManager.cpp lines 1404-1425): present modules by bus and number, 12 cells each
    with two decimals, ``", "`` between items as the original wrote them. A cell gridzero has
    no value for prints ``0.00``, as the original's unread cell did (its ``cellVolt`` is 0)."""
    parts = []
    for m in sorted((m for m in modules if m.present), key=lambda m: (m.bus, m.module)):
        cells = [*m.cells_v[:CELLS_PER_MODULE]]
        cells += [None] * (CELLS_PER_MODULE - len(cells))
        shown = ", ".join(arduino_float(v if v is not None else 0.0) for v in cells)
        parts.append(f'"{module_name(m.bus, m.module)}":{{"cells":[{shown}]}}')
    return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class Inputs:
    """The latest fresh message of each kind with when it arrived (our monotonic clock)."""

    pack: FreshValue[PackState] | None = None
    shunt: FreshValue[ShuntState] | None = None
    limits: FreshValue[BmsLimits] | None = None
    controller: FreshValue[ControllerState] | None = None
    modules: dict[tuple[int, int], FreshValue[ModuleState]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ages:
    """How old an input may be and still be republished (s)."""

    state_stale_s: float = 5.0
    module_stale_s: float = 15.0


T = TypeVar("T")


def _recent(item: FreshValue[T] | None, now_s: float, stale_s: float) -> T | None:
    """The value if it arrived within ``stale_s`` (``FreshValue.fresh``), else None."""
    return item.value if item is not None and item.fresh(now_s, stale_s) else None


def error_text(inputs: Inputs, now_s: float, ages: Ages) -> str:
    """``battery/error`` (line 524): empty when all is well, as the original. Its texts where
    gridzero has the same fact ("module missing", line 688; "Counted cells: N", line 735), the
    bms's own alarm text otherwise, and a silent input named (the original had none)."""
    pack = _recent(inputs.pack, now_s, ages.state_stale_s)
    if pack is None:
        return "no data from gridzero's bms"
    if pack.modules_present < pack.modules_expected:
        return "module missing"
    if pack.cells_counted != pack.cells_expected:
        return f"Counted cells: {pack.cells_counted}"
    if pack.alarm_text:
        return pack.alarm_text
    if _recent(inputs.shunt, now_s, ages.state_stale_s) is None:
        return "no data from gridzero's shunt"
    return ""


def fast_topics(inputs: Inputs, now_s: float, uptime_s: float, ages: Ages) -> list[tuple[str, str]]:
    """The every-0.5 s topics (housebatt.ino lines 515-524 and 625-629) from fresh inputs
    only: a topic whose source is stale or unavailable is not published (the original
    published none while it had nothing either), and ``battery/error`` says why."""
    out = [("goatshed/uptime", str(int(uptime_s)))]
    shunt = _recent(inputs.shunt, now_s, ages.state_stale_s)
    if shunt is not None and shunt.sensor == "ok":
        if shunt.current_a is not None:
            out.append(("battery/amps", amps_text(shunt.current_a)))
        if shunt.soc_pct is not None:
            out.append(("battery/soc", soc_text(shunt.soc_pct)))
        if shunt.remaining_ah is not None:
            out.append(("battery/amphour", amphour_text(shunt.remaining_ah)))
    out.append(("battery/error", error_text(inputs, now_s, ages)))
    pack = _recent(inputs.pack, now_s, ages.state_stale_s)
    if pack is not None:
        if pack.pack_voltage_v > 0:
            out.append(("battery/volt", arduino_float(pack.pack_voltage_v)))
        out.append(("battery/balancing", arduino_bool(pack.balancing)))
        if pack.cell_max is not None:
            out.append(("battery/highcell", arduino_float(pack.cell_max.voltage_v)))
        if pack.cell_min is not None:
            out.append(("battery/lowcell", arduino_float(pack.cell_min.voltage_v)))
        if pack.temperature_avg_c is not None:
            out.append(("battery/temp", arduino_float(pack.temperature_avg_c)))
    return out


def cells_topic(inputs: Inputs, now_s: float, ages: Ages) -> str | None:
    """``battery/cells`` from the modules heard within ``module_stale_s``; None if none."""
    fresh = [m.value for m in inputs.modules.values() if m.fresh(now_s, ages.module_stale_s)]
    if not any(m.present for m in fresh):
        return None
    return cells_json(fresh)


@dataclass(frozen=True, slots=True)
class Memory:
    """What the status events compare against: the previous fresh values."""

    charging: bool = False
    soc_known: bool = False
    soc_source: str = ""
    cells_complete: bool = False
    alarms: frozenset[str] = frozenset()


def demand_w(state: ControllerState) -> int:
    """The original's ``demand``: W, + to the house (inverter), - into the battery (line 218)."""
    return round(0.0 - state.setpoint_w)


def controller_events(
    memory: Memory, state: ControllerState, limits: BmsLimits | None
) -> tuple[Memory, list[str]]:
    """START/STOP CHARGING on the controller's state changes, and ``Demand: N`` for every
    step with a demand (line 327: published on every meter value whose demand is not 0)."""
    events: list[str] = []
    charging = state.state == "charging"
    if charging and not memory.charging:
        events.append(START_CHARGING)
    elif memory.charging and not charging:
        full = limits is not None and any(r.startswith("full") for r in limits.reasons)
        if full:
            events.append(STOP_FULL)
        elif state.state in ("discharging", "switching"):
            events.append(STOP_TO_INVERT)
        else:
            events.append(STOP_TOO_SMALL)
    demand = demand_w(state)
    if demand != 0:
        events.append(f"Demand: {demand}")
    return replace(memory, charging=charging), events


def shunt_events(memory: Memory, shunt: ShuntState) -> tuple[Memory, list[str]]:
    """``SOC SET: N`` (line 732) when the state of charge first becomes known and whenever a
    person sets it (gridzero's ``soc_source`` ``set``)."""
    known = shunt.sensor == "ok" and shunt.soc_pct is not None
    events: list[str] = []
    if known and shunt.soc_pct is not None:
        newly_set = shunt.soc_source == "set" and memory.soc_source != "set"
        if not memory.soc_known or newly_set:
            events.append(f"SOC SET: {soc_text(shunt.soc_pct)}")
    source = shunt.soc_source if known else memory.soc_source
    return replace(memory, soc_known=memory.soc_known or known, soc_source=source), events


def pack_events(memory: Memory, pack: PackState) -> tuple[Memory, list[str]]:
    """Faults: ``Series Cells Fault: N`` (line 589) when cells go missing after all were
    counted, and each new bms alarm in gridzero's words (the original had no other)."""
    events: list[str] = []
    complete = pack.cells_expected > 0 and pack.cells_counted == pack.cells_expected
    if memory.cells_complete and not complete:
        events.append(f"Series Cells Fault: {pack.cells_counted}")
    alarms = frozenset(a.strip() for a in pack.alarm_text.split(";") if a.strip())
    events += [f"FAULT: {text}" for text in sorted(alarms - memory.alarms)]
    return replace(memory, cells_complete=complete, alarms=alarms), events
