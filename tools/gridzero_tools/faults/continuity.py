"""Nothing lost: SIGKILL every service in turn during a simulated day, then check continuity.

The plant runs the ``sunny-day`` profile ``speed`` times faster than real time.
Before the kills, runtime settings are changed over MQTT as Home Assistant
would; one setting is changed and its service killed at once, before any
debounce could have written it. After the run:

- the shunt's Ah and kWh counters never went down;
- what the shunt counted is compared with the current it was fed (the truth's
  ``current_a``, integrated over real time: the shunt counts in real time, so at
  ``speed`` > 1 its SoC cannot follow the plant's faster SoC, but its counting
  can be checked against what it measured); the difference, divided by the mean
  current, is the counting lost, in seconds;
- the SoC across each shunt restart (last value before, first after);
- every changed setting is what the restarted service echoes;
- the cells stayed within 3.0..4.2 V and every service came back.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gridzero.contract import Topics
from gridzero.registry import SYSTEM_SERVICES
from gridzero_tools.faults import report
from gridzero_tools.faults.rig import Rig, RigConfig
from gridzero_tools.faults.scenarios import CELL_MAX_V, CELL_MIN_V

T = Topics()
KILL_ORDER = ("bms", "shunt", "charger", "inverter", "controller", "telnet-console", "shunt")
# (service, unit, setting, new value): changed as Home Assistant, then checked after a SIGKILL
SETTINGS: tuple[tuple[str, str | None, str, str], ...] = (
    ("controller", None, "target_grid_w", "10"),
    ("bms", None, "balance_start_v", "3.95"),
    ("shunt", None, "dead_band_a", "0.1"),
    ("charger", None, "max_charge_power_w", "2500"),
    ("inverter", "gtn1", "max_power_w", "850"),
)
IMMEDIATE = ("controller", None, "deadband_w", "7")  # killed right after its ack
COUNTERS = ("charge_in_ah", "charge_out_ah", "energy_in_kwh", "energy_out_kwh")


@dataclass(frozen=True, slots=True)
class ContinuityTiming:
    name: str
    speed: float
    start_s: float
    gap_s: float  # between one service's return and the next kill


QUICK = ContinuityTiming("quick", speed=60.0, start_s=9 * 3600.0, gap_s=6.0)
THOROUGH = ContinuityTiming("thorough", speed=30.0, start_s=7 * 3600.0, gap_s=20.0)


@dataclass(slots=True)
class ContinuityResult:
    """What the run measured."""

    timing: ContinuityTiming
    sim_hours: float = 0.0
    restarts_s: dict[str, list[float]] = field(default_factory=dict)
    counters_monotonic: bool = True
    counter_drops: list[str] = field(default_factory=list)
    fed_ah: float = 0.0
    counted_ah: float = 0.0
    mean_current_a: float = 0.0
    soc_jumps_pct: list[float] = field(default_factory=list)
    settings_kept: dict[str, bool] = field(default_factory=dict)
    cell_min_v: float | None = None
    cell_max_v: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def lost_s(self) -> float:
        if self.mean_current_a <= 0:
            return 0.0
        return (self.fed_ah - self.counted_ah) * 3600.0 / self.mean_current_a

    @property
    def passed(self) -> bool:
        return (
            self.counters_monotonic
            and all(self.settings_kept.values())
            and self.cell_min_v is not None
            and self.cell_max_v is not None
            and self.cell_min_v >= CELL_MIN_V
            and self.cell_max_v <= CELL_MAX_V
            and all(self.restarts_s.get(s) for s in KILL_ORDER)
            and not self.problems
        )


def _setting_key(service: str, unit: str | None, name: str) -> str:
    return f"{service}{'/' + unit if unit else ''}.{name}"


def change_setting(
    rig: Rig, service: str, unit: str | None, name: str, value: str, timeout_s: float = 10.0
) -> bool:
    """Publish a setting change as user homeassistant; True when the service acked it."""
    ha = rig.system.probe("homeassistant", subscribe="")
    try:
        topic = T.setting_set(service, name, unit=unit)
        since = time.time()
        ha.publish(topic, value)
        ack = rig.wait_message(
            T.ack(service), lambda p: json.loads(p)["topic"] == topic, timeout_s, since=since
        )
    finally:
        ha.close()
    return ack is not None and bool(json.loads(ack)["ok"])


def wait_online(rig: Rig, service: str, since: float, timeout_s: float = 60.0) -> float | None:
    """Wall time of the first ``online`` of ``service`` after ``since``."""
    payload = rig.wait_message(T.status(service), lambda p: p == b"online", timeout_s, since=since)
    if payload is None:
        return None
    online = [
        a for a, _t, p in rig.messages(lambda t: t == T.status(service), since) if p == b"online"
    ]
    return online[0] if online else None


def echoed_after(rig: Rig, service: str, unit: str | None, name: str, since: float) -> bytes | None:
    """The first echo of a setting published after ``since`` (by the restarted service)."""
    topic = T.setting(service, name, unit=unit)
    return rig.wait_message(topic, lambda _p: True, 15.0, since=since)


def run(rig: Rig, timing: ContinuityTiming, say: Callable[[str], None] = print) -> ContinuityResult:
    result = ContinuityResult(timing)
    t_start = time.time()
    for service in (*SYSTEM_SERVICES, "sim"):
        if wait_online(rig, service, 0.0) is None:
            result.problems.append(f"{service} never came online")
    rig.publish(T.action_set("shunt", "set_soc"), "50")
    for service, unit, name, value in SETTINGS:
        if not change_setting(rig, service, unit, name, value):
            result.problems.append(f"setting {_setting_key(service, unit, name)}={value} refused")
    # one change killed at once: nothing but an immediate write can keep it
    service, unit, name, value = IMMEDIATE
    if not change_setting(rig, service, unit, name, value):
        result.problems.append(f"setting {_setting_key(service, unit, name)}={value} refused")
    kill_at = time.time()
    rig.kill(service)
    back = wait_online(rig, service, kill_at)
    if back is not None:
        echo = echoed_after(rig, service, unit, name, back)
        result.settings_kept[_setting_key(service, unit, name) + " (killed at once)"] = (
            echo is not None and echo.decode() == value
        )
    say("settings changed; killing every service in turn")
    for victim in KILL_ORDER:
        time.sleep(timing.gap_s)  # the system runs undisturbed between kills: part of the test
        kill_at = time.time()
        rig.kill(victim)
        back = wait_online(rig, victim, kill_at)
        if back is None:
            result.problems.append(f"{victim} did not come back within 60 s of its SIGKILL")
            continue
        result.restarts_s.setdefault(victim, []).append(back - kill_at)
        say(f"  {victim} killed, back online after {back - kill_at:.1f} s")
        for service, unit, name, value in SETTINGS:
            if service == victim:
                echo = echoed_after(rig, service, unit, name, back)
                result.settings_kept[_setting_key(service, unit, name)] = (
                    echo is not None and echo.decode() == value
                )
    time.sleep(timing.gap_s)
    _analyse(result, rig, t_start, time.time())
    return result


def _analyse(result: ContinuityResult, rig: Rig, since: float, until: float) -> None:
    truths = rig.truths(since, until)
    if truths:
        result.cell_min_v = min(t["cell_min_v"] for t in truths)
        result.cell_max_v = max(t["cell_max_v"] for t in truths)
        result.sim_hours = (truths[-1]["ts"] - truths[0]["ts"]) * result.timing.speed / 3600.0
    states = [
        (at, json.loads(p))
        for at, _t, p in rig.messages(lambda t: t == T.shunt_state, since, until)
    ]
    states = [(at, s) for at, s in states if s["soc_source"] != "unknown" or s["charge_in_ah"]]
    for key in COUNTERS:
        values = [s[key] for _at, s in states]
        for a, b in itertools.pairwise(values):
            if b < a - 1e-9:
                result.counters_monotonic = False
                result.counter_drops.append(f"{key} {a} -> {b}")
    if len(states) >= 2:
        first, last = states[0], states[-1]
        result.counted_ah = (last[1]["charge_in_ah"] - first[1]["charge_in_ah"]) + (
            last[1]["charge_out_ah"] - first[1]["charge_out_ah"]
        )
        fed = [t for t in truths if first[0] <= t["ts"] <= last[0]]
        amp_s = sum(abs(a["current_a"]) * (b["ts"] - a["ts"]) for a, b in itertools.pairwise(fed))
        result.fed_ah = amp_s / 3600.0
        span = fed[-1]["ts"] - fed[0]["ts"] if len(fed) > 1 else 0.0
        result.mean_current_a = amp_s / span if span > 0 else 0.0
    # SoC across each shunt restart: last before the gap, first after it
    for (a_at, a), (b_at, b) in itertools.pairwise(states):
        if b_at - a_at > 1.8 and a["soc_pct"] is not None and b["soc_pct"] is not None:
            result.soc_jumps_pct.append(b["soc_pct"] - a["soc_pct"])


def table(result: ContinuityResult, command: str) -> str:
    r = result
    restarts = ", ".join(
        f"{s} {', '.join(f'{x:.1f}' for x in xs)} s" for s, xs in sorted(r.restarts_s.items())
    )
    kept = ", ".join(f"`{k}` {'kept' if v else '**lost**'}" for k, v in r.settings_kept.items())
    jumps = ", ".join(f"{j:+.3f}" for j in r.soc_jumps_pct) or "—"
    cells = (
        "—"
        if r.cell_min_v is None or r.cell_max_v is None
        else f"{r.cell_min_v:.3f}..{r.cell_max_v:.3f} V"
    )
    lines = [
        f"`{command}`: `sunny-day` at speed {r.timing.speed:g} from "
        f"{r.timing.start_s / 3600:.0f}:00, {r.sim_hours:.1f} simulated hours; "
        f"every service SIGKILLed in turn ({', '.join(KILL_ORDER)}). {report.stamp()}",
        "",
        "| measure | result |",
        "|---|---|",
        f"| services back online after SIGKILL | {restarts} |",
        f"| shunt Ah/kWh counters never decreased | {'yes' if r.counters_monotonic else '**no**: ' + '; '.join(r.counter_drops[:3])} |",
        f"| charge fed to the shunt (∫\\|I\\| dt, real time) | {r.fed_ah:.3f} Ah (mean {r.mean_current_a:.1f} A) |",
        f"| charge the shunt counted (Ah in + Ah out) | {r.counted_ah:.3f} Ah |",
        f"| counting lost over the run | {r.fed_ah - r.counted_ah:.3f} Ah ≈ {r.lost_s:.1f} s at the mean current |",
        f"| SoC change across each gap in the shunt's reports (%) | {jumps} |",
        f"| settings changed over MQTT, after SIGKILL | {kept} |",
        f"| cells (truth) | {cells} |",
        f"| result | {'pass' if r.passed else '**FAIL**'} |",
    ]
    if r.problems:
        lines += ["", "Problems:", "", *[f"- {p}" for p in r.problems]]
    return "\n".join(lines)


def main(quick: bool, report_path: Path | None, keep: bool) -> int:
    timing = QUICK if quick else THOROUGH
    work = Path(tempfile.mkdtemp(prefix="gridzero-continuity-"))
    print(f"work directory {work} ({timing.name}: speed {timing.speed:g})", flush=True)
    rig = Rig(
        work,
        RigConfig(
            profile="sunny-day", speed=timing.speed, start_s=timing.start_s, truth_period_s=0.5
        ),
    )
    try:
        rig.start()
        result = run(rig, timing, lambda line: print(line, flush=True))
    finally:
        rig.stop()
    command = "python -m gridzero_tools.faults --continuity" + (" --quick" if quick else "")
    text = table(result, command)
    print(text)
    if report_path is not None:
        report.replace_section(report_path, "continuity", text)
        print(f"written to {report_path}")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result.passed else 1
