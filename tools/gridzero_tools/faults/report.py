"""Tables for docs/reliability.md, written between marker comments by the commands.

A generated section sits between ``<!-- <name>:begin -->`` and
``<!-- <name>:end -->``; everything else in the file is prose kept by hand.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from pathlib import Path

from gridzero_tools.faults.scenarios import Result, Timing


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the section's markers (appended at the end if they are missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _list(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "—"


def stamp(extra: str = "") -> str:
    """When and where the figures were measured."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return f"Measured {when} on {platform.node() or 'this machine'} ({platform.machine()}){extra}."


def matrix_table(results: list[Result], timing: Timing, command: str) -> str:
    """The fault matrix as Markdown: one row per fault, then the details."""
    lines = [
        f"`{command}` ({timing.name} timing: broker down {timing.broker_down_s:g} s, "
        f"system down {timing.system_down_s:g} s, gateway restart {timing.gateway_s:g} s, "
        f"controller hung {timing.hang_s:g} s). {stamp()}",
        "",
        "| fault | while | stopped after | bound | cells (others) | cell at stop | resumed after | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stopped = _s(r.stopped_after_s)
        if r.reference_doc and r.stopped_after_s is not None:
            stopped += f" from {r.reference_doc} ({_s(r.stopped_from_injection_s)} from injection)"
        elif r.stopped_after_s is None and not r.stop_required:
            stopped = "did not stop (not required)"
        if r.restarted_after_s is not None:
            stopped += f"; back online after {_s(r.restarted_after_s)}"
        cells = (
            "—"
            if r.cell_min_v is None or r.cell_max_v is None
            else f"{r.cell_min_v:.3f}..{r.cell_max_v:.3f} V"
        )
        drifted = "—" if r.drifted_cell_at_stop_v is None else f"{r.drifted_cell_at_stop_v:.3f} V"
        verdict = "pass" if r.passed else "**FAIL**"
        lines.append(
            f"| {r.title} | {r.mode} | {stopped} | {_s(r.bound_s)} | {cells} | {drifted} | "
            f"{_s(r.resumed_after_s) if r.resumed_after_s is not None else '**never**'} | {verdict} |"
        )
    lines += ["", "What was published during each fault (from injection until it resumed):", ""]
    lines += [
        "| fault | bms alarms | bms limit reasons | inverter cap reasons | charger limit reasons | controller states | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r.key}` | {_list(r.alarms)} | {_list(r.bms_reasons)} | {_list(r.inverter_reasons)} | "
            f"{_list(r.charger_reasons)} | {_list(r.controller_states)} | {_list(r.status_changes)} |"
        )
    lines += [
        "",
        "Bounds (what the documented settings promise, plus the device's own response):",
        "",
    ]
    lines += [f"- `{r.key}`: {r.bound_doc}" for r in results if r.bound_doc]
    notes = [f"- `{r.key}`: {n}" for r in results for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines)
