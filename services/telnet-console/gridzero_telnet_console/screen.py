"""Screen renderer: a snapshot in, lines of text out, and the ANSI frame around them.

Pure: time is ``now_s`` (the same monotonic clock as the snapshot's receive
times). The screen is plain ASCII so the Windows console's code pages show it
as well as a UTF-8 xterm. Text that came over MQTT (log lines, alarm texts)
is cleaned of control characters, so a payload cannot move the operator's
cursor or change their terminal.

`frame` redraws in place: cursor home, each line followed by "clear to end of
line", then "clear to end of screen". No full clear per refresh, so no flicker.
Lines are cut to the window width minus one column, because writing the last
column makes some terminals (the Windows console) wrap at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gridzero.contract import SERVICES, Ack, CellRef, ControllerState, LogRecord, RawFrame
from gridzero.registry import OPTIONAL_SERVICES
from gridzero.runtime.freshness import FreshValue
from gridzero_telnet_console.commands import (
    ENABLE_KEYS,
    KEY_HELP,
    LINE_HELP,
    LOG_LEVELS,
    ConsoleState,
    View,
    current_mode,
    enabled,
    mode_allows,
)
from gridzero_telnet_console.snapshot import Entry, Snapshot

HOME = "\x1b[H"
CLEAR_EOL = "\x1b[K"
CLEAR_EOS = "\x1b[J"
CLEAR_ALL = "\x1b[2J"
STALE_S = 5.0
LABEL = 10  # width of the label column


def clean(text: str) -> str:
    """Text from the bus made safe to print: control characters become '?'."""
    return "".join(
        "?" if (c < " " or "\x7f" <= c < "\xa0") else c for c in text.replace("\n", " | ")
    )


def fit(line: str, width: int) -> str:
    """Cut a line to ``width - 1`` characters (see the module docstring)."""
    usable = max(1, width - 1)
    return line if len(line) <= usable else line[: usable - 1] + ">"


def fit_tail(line: str, width: int) -> str:
    """Keep the end of a line that is too long (the text being typed)."""
    usable = max(1, width - 1)
    return line if len(line) <= usable else "<" + line[-(usable - 1) :]


def wrap_items(items: Sequence[str], width: int, sep: str = " | ", indent: str = "") -> list[str]:
    """Join items with ``sep`` into as few lines of at most ``width - 1`` as possible."""
    usable = max(1, width - 1)
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = item if not current else current + sep + item
        if current and len(candidate) > usable:
            lines.append(current)
            current = indent + item
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def frame(
    body: Sequence[str],
    prompt: str,
    width: int,
    height: int,
    *,
    full: bool = False,
    typing: bool = False,
) -> str:
    """One screen: body lines from the top, the prompt on the last used line.

    The cursor ends after the prompt, where a typed ``:`` command appears; while
    ``typing``, a prompt too long for the width keeps its end visible.
    """
    rows = max(1, height - 1)
    lines = list(body)
    if len(lines) > rows:
        hidden = len(lines) - rows + 1
        lines = [*lines[: rows - 1], f"... {hidden} more line(s): make the window taller"]
    out = [CLEAR_ALL if full else "", HOME]
    out.extend(fit(line, width) + CLEAR_EOL + "\r\n" for line in lines)
    shown = fit_tail(prompt, width) if typing else fit(prompt, width)
    out.append(shown + CLEAR_EOL + CLEAR_EOS)
    return "".join(out)


# --- formatting helpers -------------------------------------------------------------


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "--"
    return f"{value:{fmt}}{' ' + unit if unit else ''}"


def _flow(value: float | None, decimals: int, unit: str) -> str:
    """A battery current or power with its direction in words: ``3.22 A discharging``.

    The contract's sign is + charging (``contract.BATTERY_SIGN``); a bare ``-3.22 A``
    made operators guess, so the screen prints the size and the word instead.
    """
    if value is None:
        return "--"
    size = f"{abs(value):.{decimals}f} {unit}"
    if float(f"{abs(value):.{decimals}f}") == 0.0:
        return size  # rounds to zero: no direction to name
    return f"{size} {'charging' if value > 0 else 'discharging'}"


def _age(seen_at_s: float | None, now_s: float) -> str:
    if seen_at_s is None:
        return "never"
    age = max(0.0, now_s - seen_at_s)
    return f"{age:.1f}s" if age < 60 else f"{age / 60:.0f}min"


def _stale(seen: FreshValue[Any] | None, now_s: float) -> str:
    if seen is None or seen.fresh(now_s, STALE_S):
        return ""
    return f"  [STALE {_age(seen.at_s, now_s)}]"


def _row(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def _cell(ref: CellRef | None) -> str:
    if ref is None:
        return "--"
    return f"{ref.voltage_v:.3f} V (bus {ref.bus} mod {ref.module} cell {ref.cell})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# --- the status screen --------------------------------------------------------------


def header(width: int, state: ConsoleState, title_right: str = "") -> list[str]:
    """Title and the key line (wrapped to the width, like the original's header)."""
    mode = "PAUSED (space resumes)" if state.paused else "live"
    title = f"gridzero console  {mode}  view {state.view.value}"
    if title_right:
        title += "  " + title_right
    return [title, *wrap_items([k.label for k in KEY_HELP], width)]


def status_lines(snap: Snapshot, now_s: float, width: int = 80) -> list[str]:
    """Every value of the status screen, one topic per row."""
    lines = [*_grid_lines(snap, now_s), *_charger_lines(snap, now_s)]
    lines += _inverter_lines(snap, now_s)
    lines += _pack_lines(snap, now_s)
    lines += _limit_lines(snap, now_s)
    lines += _service_lines(snap, now_s, width)
    return lines


def _grid_lines(snap: Snapshot, now_s: float) -> list[str]:
    seen = snap.controller
    if seen is None:
        return [_row("Grid", "-- (no controller state)")]
    c = seen.value
    mode = current_mode(snap) or c.mode.value
    allowed = ", ".join(
        f"{what} {_allowed(snap, mode, name, what)}" for name, what in ENABLE_KEYS.values()
    )
    grid = _row(
        "Grid",
        f"{_num(c.grid_w, '+.0f', 'W')}  target {c.target_w:+.0f} W  "
        f"meter age {_num(c.meter_age_s, '.1f', 's')}  rms error {c.grid_error_rms_w:.0f} W",
    )
    control = _row(
        "Control",
        f"{mode} ({allowed})  {clean(c.state)}  set-point {_flow(c.setpoint_w, 0, 'W')}"
        + _stale(seen, now_s),
    )
    lines = [grid, control, *_rule_lines(c)]
    if c.faults:
        lines.append(_row("", "faults: " + clean(", ".join(c.faults))))
    return lines


def _rule_lines(c: ControllerState) -> list[str]:
    """The schedule window or price rule in force and why (the controller's state says it);
    nothing when no window, price rule or price is set up."""
    if c.rule == "none" and not c.rule_why and c.price is None:
        return []
    text = clean(c.rule) + (f": {clean(c.rule_why)}" if c.rule_why else "")
    if c.price is not None:
        text += f"  price {c.price:g}"
    return [_row("Rule", text)]


def _allowed(snap: Snapshot, mode: str, name: str, what: str) -> str:
    """``on`` if both the mode and the enable setting allow it, ``off``, or ``?`` if unknown."""
    if not mode_allows(mode, what):
        return "off"
    flag = enabled(snap, name)
    return "?" if flag is None else "on" if flag else "off"


def _charger_lines(snap: Snapshot, now_s: float) -> list[str]:
    seen = snap.charger
    if seen is None:
        return [_row("Charger", "-- (no charger state)")]
    c = seen.value
    text = (
        f"link {c.link}  DC {'on' if c.dc_on else 'off'}  "
        f"{_num(c.output_voltage_v, '.2f', 'V')}  {_num(c.output_current_a, '.1f', 'A')}  "
        f"{_num(c.output_power_w, '.0f', 'W')}  limit {clean(c.limit_reason)}"
    )
    lines = [_row("Charger", text + _stale(seen, now_s))]
    if c.alarms:  # the charger's own alarms (over-current trip, unconfirmed fallback, ...)
        lines.append(_row("", "ALARM " + clean("; ".join(a.message for a in c.alarms))))
    return lines


def _inverter_lines(snap: Snapshot, now_s: float) -> list[str]:
    if not snap.inverters:
        return [_row("Inverter", "-- (no inverter state)")]
    lines: list[str] = []
    for unit in sorted(snap.inverters):
        seen = snap.inverters[unit]
        i = seen.value
        text = (
            f"{clean(unit)}  demand {i.demand_w:.0f} W (asked {i.requested_w:.0f}, "
            f"cap {i.cap_w:.0f} {clean(i.cap_reason)})  link {i.link}"
            f"{'  sending' if i.sending else ''}"
        )
        lines.append(_row("Inverter" if not lines else "", text + _stale(seen, now_s)))
    return lines


def _pack_lines(snap: Snapshot, now_s: float) -> list[str]:
    lines: list[str] = []
    shunt = snap.shunt
    pack = snap.pack
    volts = pack.value.pack_voltage_v if pack else None
    if shunt is not None:
        s = shunt.value
        text = (
            f"{_num(volts, '.2f', 'V')}  {_flow(s.current_a, 2, 'A')}  "
            f"SoC {_num(s.soc_pct, '.1f', '%')} ({clean(s.soc_source)})  "
            f"{_num(s.remaining_ah, '.1f', 'Ah')}"
        )
        lines.append(_row("Pack", text + _stale(shunt, now_s)))
    else:
        lines.append(_row("Pack", f"{_num(volts, '.2f', 'V')}  (no shunt state)"))
    if pack is None:
        lines.append(_row("Cells", "-- (no bms pack state)"))
        return lines
    p = pack.value
    lines.append(_row("Cells", f"min {_cell(p.cell_min)}  max {_cell(p.cell_max)}"))
    delta = _num(p.cell_delta_v * 1000 if p.cell_delta_v is not None else None, ".0f", "mV")
    lines.append(
        _row(
            "",
            f"delta {delta}  avg {_num(p.cell_avg_v, '.3f', 'V')}  "
            f"modules {p.modules_present}/{p.modules_expected}  "
            f"cells {p.cells_counted}/{p.cells_expected}" + _stale(pack, now_s),
        )
    )
    lines.append(
        _row(
            "Temp",
            f"min {_num(p.temperature_min_c, '.1f', 'C')}  "
            f"max {_num(p.temperature_max_c, '.1f', 'C')}  "
            f"avg {_num(p.temperature_avg_c, '.1f', 'C')}",
        )
    )
    balance = f"on, {p.balancing_cells} cell(s) bleeding" if p.balancing else "off"
    lines.append(_row("Balancing", balance))
    return lines


def _limit_lines(snap: Snapshot, now_s: float) -> list[str]:
    seen = snap.limits
    if seen is None:
        return [_row("Limits", "-- (no bms limits)"), _row("Alarms", "unknown")]
    lim = seen.value
    lines = [
        _row(
            "Limits",
            f"CVL {lim.cvl_v:.2f} V  CCL {lim.ccl_a:.1f} A  DCL {lim.dcl_a:.1f} A  "
            f"charge {_yes(lim.charge_allowed)}  discharge {_yes(lim.discharge_allowed)}"
            + _stale(seen, now_s),
        )
    ]
    if lim.reasons:
        lines.append(_row("", "why: " + clean(", ".join(lim.reasons))))
    if not lim.alarms:
        alarm_text = snap.pack.value.alarm_text if snap.pack else ""
        lines.append(_row("Alarms", clean(alarm_text) if alarm_text else "none"))
    for n, alarm in enumerate(lim.alarms):
        text = f"ALARM {clean(alarm.code)}: {clean(alarm.message)}"
        lines.append(_row("Alarms" if n == 0 else "", text))
    return lines


def _service_lines(snap: Snapshot, now_s: float, width: int) -> list[str]:
    items = []
    for service in SERVICES:
        status = snap.status.get(service)
        if status is None and (service == "sim" or service in OPTIONAL_SERVICES):
            continue  # the simulator and optional services: shown only once they have spoken
        shown = status or "--"
        age = snap.last_seen_s.get(service)
        items.append(f"{service} {shown}" + (f" {_age(age, now_s)}" if age is not None else ""))
    lines = wrap_items(items, width - LABEL, sep="  ")
    out = [_row("Services" if n == 0 else "", line) for n, line in enumerate(lines)]
    if snap.bad_payloads:
        bad = f"{snap.bad_payloads} invalid message(s); last: {clean(snap.last_error)}"
        out.append(_row("", bad))
    return out


# --- other views --------------------------------------------------------------------


CELL_COLUMN = 6  # "  3912v": a space, the value in mV, then its mark


def cell_lines(snap: Snapshot, now_s: float, width: int = 80) -> list[str]:
    """The cell table: one row per module, cells numbered, each value followed by its mark.

    The mark (``?`` suspect, ``v`` lowest, ``^`` highest, ``*`` bleeding) comes after the value and a
    space before the next one, so ``3912v`` never runs into its neighbour. Temperatures
    and missing or old modules follow in a section of their own, which keeps a module's
    row within 80 columns.
    """
    if not snap.modules:
        return ["no module data yet (bms offline?)"]
    # lowest and highest as the bms judges them: a suspect cell (bms setting suspect_cells)
    # is marked ``?`` and takes no part
    cells = [
        v
        for seen in snap.modules.values()
        for n, v in enumerate(seen.value.cells_v, start=1)
        if v is not None and n not in seen.value.suspect_cells
    ]
    low, high = (min(cells), max(cells)) if cells else (None, None)
    count = max(len(seen.value.cells_v) for seen in snap.modules.values())
    numbers = "".join(f"{n:>{CELL_COLUMN - 1}} " for n in range(1, count + 1))
    lines = [
        "cells in mV: v lowest, ^ highest, * bleeding, ? suspect (not judged low)",
        "",
        _cell_label("module") + numbers.rstrip(),
    ]
    notes: list[str] = []
    for key in sorted(snap.modules):
        seen = snap.modules[key]
        m = seen.value
        row = [_cell_label(f"{m.bus}-{m.module}")]
        for number, volts in enumerate(m.cells_v, start=1):
            mark = " "
            if number in m.suspect_cells:
                mark = "?"
            elif volts is not None and volts == low:
                mark = "v"
            elif volts is not None and volts == high:
                mark = "^"
            elif number in m.balancing_cells:
                mark = "*"
            value = f"{volts * 1000:.0f}" if volts is not None else "--"
            row.append(f"{value:>{CELL_COLUMN - 1}}{mark}")
        lines.append("".join(row).rstrip())
        temps = " ".join(_num(t, ".0f") for t in m.temperatures_c) or "--"
        old = f" ({_age(seen.at_s, now_s)} old)" if not seen.fresh(now_s, STALE_S) else ""
        notes.append(f"{m.bus}-{m.module} {temps}{old}{'' if m.present else ' MISSING'}")
    lines.append("")
    lines += wrap_items(["T in C: " + notes[0], *notes[1:]], width, indent="        ")
    return lines


def _cell_label(text: str) -> str:
    return f"{text:<7}"


def help_lines() -> list[str]:
    lines = ["keys:"]
    lines += [f"  {k.keys:<7} {k.help}" for k in KEY_HELP]
    lines += ["  Esc     back to the status screen", "", "command line (type ':' first):"]
    lines += [f"  {text}" for text in LINE_HELP]
    return lines


def log_lines(snap: Snapshot, state: ConsoleState, rows: int) -> list[str]:
    """The newest log records that match the session's service and level filter."""
    level = LOG_LEVELS.index(state.log_level)
    picked = [
        e
        for e in snap.logs
        if isinstance(e.item, LogRecord)
        and (state.log_service in ("all", e.service))
        and _level_index(e.item.level) >= level
    ]
    title = (
        f"log of {state.log_service} at {state.log_level} and above  "
        "(< > service, + - level, d back)"
    )
    hint = "services send records at or above their mqtt_log_level setting"
    shown = [_format_log(e) for e in picked[-max(1, rows - 2) :]]
    return [title, hint, *shown] if shown else [title, hint, "(nothing yet)"]


def raw_lines(snap: Snapshot, state: ConsoleState, rows: int) -> list[str]:
    picked = [e for e in snap.raw if e.service == state.raw_service]
    title = f"raw traffic of {state.raw_service}  (< > device, same key again or Esc: back)"
    shown = [_format_raw(e) for e in picked[-max(1, rows - 1) :]]
    return [title, *shown] if shown else [title, "(nothing yet: debugging asked for, waiting)"]


def _level_index(level: str) -> int:
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else len(LOG_LEVELS)


def _clock(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "??:??:??"


def _format_log(entry: Entry) -> str:
    record = entry.item
    assert isinstance(record, LogRecord)
    return f"{_clock(record.ts)} {entry.service:<10} {record.level:<7} {clean(record.message)}"


def _format_raw(entry: Entry) -> str:
    frame_ = entry.item
    assert isinstance(frame_, RawFrame)
    return f"{_clock(frame_.ts)} {clean(frame_.link)} {frame_.direction} {clean(frame_.data_hex)}"


def format_ack(said: str, service: str, ack: Ack) -> str:
    """The answer in the operator's words: ``discharge off: done (controller accepted)``."""
    if ack.ok:
        return f"{said}: done ({service} accepted)"
    return f"{said}: REFUSED by {service}: {clean(ack.reason) or 'no reason given'}"


def format_no_answer(said: str, timeout_s: float) -> str:
    """No ack within the timeout: the service is probably not running."""
    return f"{said}: no answer within {timeout_s:.0f} s (service offline?)"


def body(
    snap: Snapshot,
    state: ConsoleState,
    now_s: float,
    *,
    width: int = 80,
    height: int = 24,
    title_right: str = "",
) -> list[str]:
    """The lines of the session's current view, header included."""
    lines = header(width, state, title_right)
    rows = max(1, height - 1 - len(lines))
    if state.view is View.CELLS:
        return lines + cell_lines(snap, now_s, width)
    if state.view is View.HELP:
        return lines + help_lines()
    if state.view is View.LOG:
        return lines + log_lines(snap, state, rows)
    if state.view is View.RAW:
        return lines + raw_lines(snap, state, rows)
    return lines + status_lines(snap, now_s, width)
