"""A random admin over the running system (issue 16): ``python -m gridzero_tools.faults.admin``.

Home Assistant (user ``homeassistant``) and the operator (user ``operator``) change every
runtime setting, press every button and send the legacy ``meterbox/chargeTarget`` at
random: valid values, edges, values out of range, non-finite, huge, negative, of the wrong
type, unknown names, and now and then a retained message. Meanwhile the simulator injects
random faults (the contract's ``SimFault`` kinds) and the plant model runs. The settings
are discovered from the running system (the retained echoes
``<base>/<service>[/<unit>]/settings/<name>`` and the Home Assistant discovery), so a new
setting is fuzzed without a change here.

What is judged is the simulator's truth (``SimTruth``), never what the services report:

- cells stay inside the chemistry's window: never above the bms's start-up over-voltage
  (at most 4.20 V) and never below its start-up under-voltage minus ``UNDER_MARGIN_V``;
- the charge current never exceeds the start-up CCL (``max_charge_current_a``), nor the CCL
  the bms published in the last ``CCL_LAG_S``, by more than ``CURRENT_MARGIN_A``;
- no charging below 0 °C or above 45 °C cell temperature (after ``REACTION_S``);
- charge and discharge never at once (charger DC > 0.5 A while the inverters give > 5 W).

A drift fault moves a cell's *measured* voltage and a temperature fault a module's
*measured* temperature, and the truth carries the measured values: such a cell or module is
left out of the judgement while its fault lasts (plus ``REACTION_S``). Cells and modules
are named as the simulator's fault targets: ``bus:module[:cell]``, numbers from 1.

The run has phases, each on a fresh system and plant: ``full`` (near full, charging on
PV), ``empty`` (near empty, discharging), ``cold`` (-5 °C) and ``hot`` (47 °C). The pack is
small (``CELL_CAPACITY_AH``), so a wrong current crosses a limit within a minute, and the
barriers in front of the bms (the controller's SoC band, the inverter's DC window) are
opened, so that the bms's own limits are what is tested. The plan (what is sent when) is a
pure function of the seed; only the system's answers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from gridzero import chemistry
from gridzero.contract import LEGACY_CHARGE_TARGET_TOPIC, SimFault, Topics
from gridzero.registry import SYSTEM_SERVICES
from gridzero.testing import Probe
from gridzero_tools.faults import report
from gridzero_tools.faults.rig import Rig, RigConfig, Truth, flat_profile
from gridzero_tools.faults.scenarios import STOPPED_A, STOPPED_W
from gridzero_tools.sim import faults as plant_faults
from gridzero_tools.sim.params import PackParams
from gridzero_tools.sim.service import MODULES_PER_BUS

T = Topics()

UNDER_MARGIN_V = 0.05  # below the start-up under-voltage by more than this: a violation
CURRENT_MARGIN_A = 2.0  # the R48 cannot go below ~5.2 A; the model's ramps and rounding
CCL_LAG_S = 3.0  # a lowered CCL must be obeyed within this (limits every 0.5 s, then the R48)
REACTION_S = 2.0  # temperature: a crossing while charging must stop the charge within this
EPISODE_GAP_S = 1.0  # violation samples closer than this form one episode
CHANGES_BEFORE_S = 120.0  # accepted changes this long before a violation are listed with it
ACK_WAIT_S = 2.0  # how long an attempt waits for its answer
PLAN_SLACK_S = 30.0  # a phase never runs longer than planned + this
CELL_CAPACITY_AH = 0.5  # a 4.5 Ah pack (the real one has 220 Ah): limits are a minute away
FAULT_SHARE = 0.08  # the share of steps that inject (or clear) a fault
# the share of steps that put every setting back to its start-up value at once: an admin
# undoing everything, so that a run does not spend the rest of its time switched off
RESET_SHARE = 0.03

Outcome = Literal["accepted", "refused", "unanswered"]
KnobKind = Literal["number", "select", "switch", "button", "text", "legacy", "unknown"]


# --------------------------------------------------------------------------- phases


@dataclass(frozen=True, slots=True)
class Phase:
    """One plant state the random admin meets: a fresh system each."""

    name: str
    doc: str
    soc_pct: float
    ambient_c: float
    load_w: float
    pv_w: float
    controller: Mapping[str, float] = field(default_factory=dict)
    inverter_dc_min_v: float | None = None  # pack volts; None: the rig's 43 V


PHASES: dict[str, Phase] = {
    p.name: p
    for p in (
        Phase(
            "full",
            "88 % (cells ~4.05 V), 2 kW PV surplus: charging towards full",
            88.0,
            20.0,
            400.0,
            2400.0,
            controller={"soc_max_pct": 100.0},
        ),
        Phase(
            "empty",
            "4 % (cells ~3.36 V), 1.5 kW load, no PV: discharging towards empty",
            4.0,
            20.0,
            1500.0,
            0.0,
            controller={"soc_min_pct": 0.0},
            # 2.83 V per cell: above the chemistry's 2.80 V, below the bms's 3.0 V
            inverter_dc_min_v=34.0,
        ),
        # 3 kW of surplus: more than a 30 A CCL takes, so a widened current limit shows
        Phase("cold", "50 %, cells at -5 °C, 3 kW PV surplus", 50.0, -5.0, 400.0, 3400.0),
        Phase("hot", "50 %, cells at 47 °C, 3 kW PV surplus", 50.0, 47.0, 400.0, 3400.0),
    )
}


def plant_yaml(phase: Phase) -> str:
    """The phase's plant file: the default plant, small, at the phase's charge and temperature."""
    plant: dict[str, Any] = {
        "name": f"admin-{phase.name}",
        "description": f"random-admin phase '{phase.name}': {phase.doc}",
        "pack": {
            "cell_capacity_ah": CELL_CAPACITY_AH,
            "initial_soc_pct": phase.soc_pct,
            "initial_soc_spread_pct": 0.2,
        },
        "thermal": {"ambient_c": phase.ambient_c, "initial_c": phase.ambient_c},
    }
    if phase.inverter_dc_min_v is not None:
        plant["inverters"] = [
            {
                "name": "gtn1",
                "dc_shutdown_v": phase.inverter_dc_min_v,
                "dc_start_v": phase.inverter_dc_min_v + 1.0,
            }
        ]
    return yaml.safe_dump(plant, sort_keys=False)


def build_rig(root: Path, phase: Phase) -> Rig:
    """The fault rig on the phase's plant (not started)."""
    root.mkdir(parents=True, exist_ok=True)
    plant = root / "plant.yaml"
    plant.write_text(plant_yaml(phase), encoding="utf-8")
    profile = flat_profile(root / "profile.csv", phase.load_w, phase.pv_w)
    pack = PackParams()
    # the controller learns the unit's DC window from the inverter service (inverter.yaml below)
    controller: dict[str, Any] = {"controller": dict(phase.controller)}
    settings = (
        ("shunt", (("capacity_ah", CELL_CAPACITY_AH * pack.strings),)),
        ("controller", tuple(controller.items())),
    )
    rig = Rig(root, RigConfig(profile=str(profile), plant=str(plant), settings=settings))
    if phase.inverter_dc_min_v is not None:
        # the unit's serial port is only known once the rig chose its ports
        path = rig.system.config_dir / "inverter.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        for unit in config["units"]:
            unit["dc_min_v"] = phase.inverter_dc_min_v
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return rig


# --------------------------------------------------------------------------- what can be set


@dataclass(frozen=True, slots=True)
class Knob:
    """A topic the admin can write: a setting, a button, the legacy command, or a made-up name."""

    topic: str
    kind: KnobKind
    minimum: float = 0.0
    maximum: float = 0.0
    step: float = 1.0
    options: tuple[str, ...] = ()
    current: str = ""


def _discovered(payload: bytes) -> list[Knob]:
    try:
        components = json.loads(payload).get("cmps", {})
    except (ValueError, AttributeError):
        return []
    knobs = []
    for comp in components.values() if isinstance(components, dict) else ():
        topic = comp.get("command_topic") if isinstance(comp, dict) else None
        if not isinstance(topic, str):
            continue
        platform = comp.get("p")
        if platform == "number":
            knobs.append(
                Knob(topic, "number", float(comp["min"]), float(comp["max"]), float(comp["step"]))
            )
        elif platform == "select":
            knobs.append(Knob(topic, "select", options=tuple(map(str, comp["options"]))))
        elif platform in ("switch", "button"):
            knobs.append(Knob(topic, platform))
        else:
            knobs.append(Knob(topic, "text"))
    return knobs


def catalogue(retained: Mapping[str, bytes], base: str = T.base) -> list[Knob]:
    """Every writable topic, from the discovery messages and the settings echoes (sorted).

    Each setting carries its first echo (``current``: what a "restore" step sends back). An
    echoed setting without a discovery entity is fuzzed as text; every service (and unit)
    also gets an unknown setting and an unknown button.
    """
    knobs: dict[str, Knob] = {}
    for topic, payload in retained.items():
        if topic.startswith("homeassistant/") and topic.endswith("/config"):
            for knob in _discovered(payload):
                knobs.setdefault(knob.topic, knob)
    prefixes: set[str] = set()
    for topic, payload in retained.items():
        parts = topic.split("/")
        if topic.startswith(base + "/") and len(parts) in (4, 5) and parts[-2] == "settings":
            prefixes.add("/".join(parts[:-2]))
            echo = payload.decode("utf-8", "replace")
            known = knobs.get(topic + "/set", Knob(topic + "/set", "text"))
            knobs[topic + "/set"] = replace(known, current=echo)
    for knob in list(knobs.values()):
        parts = knob.topic.split("/")
        if parts[-3] in ("settings", "action"):
            prefixes.add("/".join(parts[:-3]))
    for prefix in prefixes:
        for made_up in (f"{prefix}/settings/no_such_setting/set", f"{prefix}/action/no_such/set"):
            knobs[made_up] = Knob(made_up, "unknown")
    knobs[LEGACY_CHARGE_TARGET_TOPIC] = Knob(LEGACY_CHARGE_TARGET_TOPIC, "legacy", -3000, 6000, 1)
    return sorted(knobs.values(), key=lambda k: k.topic)


# --------------------------------------------------------------------------- values

WRONG_TYPE = (
    "",
    " ",
    "abc",
    "null",
    "[1]",
    '{"value": 1}',
    "0x10",
    "1,5",
    "5 V",
    "ünïcödé ☃",
    "9" * 300,
    "\x00",
)
NON_FINITE = ("NaN", "nan", "inf", "-inf", "Infinity", "1e999", "-1e999")
HUGE = ("1e308", "-1e308", "1e30", "99999999999999999999", str(10**40))
Weights = tuple[tuple[str, int], ...]
LEGACY_MIX: Weights = (
    ("valid", 40),
    ("edge", 12),
    ("out_of_range", 12),
    ("non_finite", 10),
    ("huge", 8),
    ("negative", 6),
    ("wrong_type", 12),
)
# "restore": back to the start-up value, as an admin undoes a change; it keeps the
# system from settling in "off" for the rest of a run
NUMBER_MIX: Weights = (*LEGACY_MIX, ("restore", 15))
MIXES: dict[str, Weights] = {
    "number": NUMBER_MIX,
    "legacy": LEGACY_MIX,
    "select": (("valid", 45), ("case", 10), ("unknown_option", 15), ("wrong_type", 20)),
    "switch": (("valid", 55), ("variant", 15), ("wrong_type", 20), ("restore", 15)),
    "button": (("valid", 70), ("wrong_type", 30)),
    "text": (("valid", 40), ("wrong_type", 60)),
    "unknown": (("unknown_name", 1),),
}


def _number(value: float) -> str:
    return format(round(value, 6), ".6g")


def _in_range(knob: Knob, rng: random.Random) -> float:
    steps = max(0, math.floor((knob.maximum - knob.minimum) / knob.step))
    return min(knob.maximum, knob.minimum + rng.randint(0, steps) * knob.step)


def _beyond(knob: Knob, rng: random.Random) -> str:
    beyond = knob.step * rng.choice((1, 10, 1000))
    return _number(rng.choice((knob.maximum + beyond, knob.minimum - beyond)))


Maker = Callable[[Knob, random.Random], str]
NUMBER_VALUES: dict[str, Maker] = {
    "valid": lambda k, rng: _number(_in_range(k, rng)),
    "edge": lambda k, rng: _number(rng.choice((k.minimum, k.maximum))),
    "out_of_range": _beyond,
    "non_finite": lambda _k, rng: rng.choice(NON_FINITE),
    "huge": lambda _k, rng: rng.choice(HUGE),
    "negative": lambda k, rng: _number(-abs(_in_range(k, rng)) - k.step),
    "restore": lambda k, _rng: k.current,
}
OTHER_VALUES: dict[tuple[str, str], Maker] = {
    ("select", "valid"): lambda k, rng: rng.choice(k.options or ("auto",)),
    ("select", "case"): lambda k, rng: rng.choice(k.options or ("auto",)).upper(),
    ("select", "unknown_option"): lambda k, rng: rng.choice(k.options or ("auto",)) + "_x",
    ("switch", "valid"): lambda _k, rng: rng.choice(("true", "false")),
    ("switch", "variant"): lambda _k, rng: rng.choice(("on", "0", "1", "TRUE")),
    ("switch", "restore"): lambda k, _rng: k.current,
    ("button", "valid"): lambda _k, _rng: "press",
    ("text", "valid"): lambda k, _rng: k.current,
    ("unknown", "unknown_name"): lambda _k, rng: rng.choice(("1", "true", "press")),
}


def _wrong_type(_knob: Knob, rng: random.Random) -> str:
    return rng.choice((*WRONG_TYPE, "1", "-1", "true"))


def value_for(knob: Knob, rng: random.Random) -> tuple[str, str]:
    """(class, payload) of one random value for ``knob``."""
    mix = MIXES[knob.kind]
    cls = rng.choices([c for c, _ in mix], [w for _, w in mix])[0]
    if knob.kind in ("number", "legacy"):
        make = NUMBER_VALUES.get(cls, _wrong_type)
    else:
        make = OTHER_VALUES.get((knob.kind, cls), _wrong_type)
    return cls, make(knob, rng)


# --------------------------------------------------------------------------- faults

FAULT_KINDS: tuple[str, ...] = tuple(
    k for k in get_args(SimFault.model_fields["kind"].annotation) if k != "clear"
)


def _module_target(module: int) -> str:
    return f"{module // MODULES_PER_BUS}:{module % MODULES_PER_BUS + 1}"


def random_fault(rng: random.Random, modules: int, cells: int) -> dict[str, Any]:
    """One contract ``SimFault`` with random parameters; a few clear faults instead."""
    if rng.random() < 0.15:
        return {"kind": "clear", "target": rng.choice(("", *plant_faults.FAULT_KINDS))}
    kind = rng.choice(FAULT_KINDS)
    fault: dict[str, Any] = {"kind": kind, "duration_s": round(rng.uniform(3.0, 40.0), 1)}
    module = rng.randrange(modules)
    if kind == "cell_drift":
        fault["target"] = f"{_module_target(module)}:{rng.randrange(cells) + 1}"
        fault["value"] = round(rng.uniform(-50.0, 50.0), 1)
    elif kind in ("module_silent", "over_temperature"):
        fault["target"] = _module_target(module)
        if kind == "over_temperature":
            fault["value"] = round(rng.uniform(-40.0, 50.0), 1)
    elif kind in ("inverter_silent", "gateway_restart"):
        fault["target"] = rng.choice(("gtn1", "0"))
    elif kind == "bus_garbage":
        fault["target"] = rng.choice(("0", "1", "charger"))
        fault["value"] = round(rng.uniform(10.0, 300.0))
    elif kind == "load_step":
        fault["value"] = round(rng.uniform(-2500.0, 3500.0))
    elif kind == "rectifier_silent":
        # long enough, at times, for the R48's online set-points (30 s) to expire
        fault["duration_s"] = round(rng.uniform(10.0, 60.0), 1)
    return fault


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Step:
    """One planned input, ``at_s`` after the phase's start."""

    at_s: float
    topic: str = ""
    payload: str = ""
    user: str = ""
    kind: str = ""  # the knob's kind, or "fault"
    value_class: str = ""
    retain: bool = False
    fault: tuple[tuple[str, Any], ...] = ()


def plan(seed: int, phase: str, knobs: Sequence[Knob], duration_s: float) -> list[Step]:
    """What the admin and the simulator send, and when: a function of the seed alone."""
    rng = random.Random(f"gridzero-admin:{seed}:{phase}")
    pack = PackParams()
    steps: list[Step] = []
    at = rng.uniform(0.5, 2.0)
    for _ in range(int(duration_s / 0.3) + 1):  # bounded: the shortest gap is 0.3 s
        if at >= duration_s:
            break
        draw = rng.random()
        if draw < FAULT_SHARE or not steps:  # every run injects at least one fault
            fault = random_fault(rng, pack.modules, pack.cells_per_module)
            steps.append(Step(at, user="operator", kind="fault", fault=tuple(fault.items())))
        elif draw < FAULT_SHARE + RESET_SHARE:
            steps += [
                Step(at, k.topic, k.current, "operator", k.kind, "restore")
                for k in knobs
                if k.current and k.kind != "text"
            ]
        else:
            knob = rng.choice(knobs)
            cls, payload = value_for(knob, rng)
            user = (
                "operator" if knob.kind == "legacy" else rng.choice(("homeassistant", "operator"))
            )
            retain = rng.random() < 0.03
            steps.append(Step(at, knob.topic, payload, user, knob.kind, cls, retain))
        at += rng.uniform(0.3, 1.5)
    return steps


# --------------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class Attempt:
    """One setting, button or legacy command sent, and what became of it."""

    at: float  # wall time
    topic: str
    payload: str
    user: str
    kind: str
    value_class: str
    retain: bool
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One fault sent to the simulator (``at``) and answered (``acked``)."""

    at: float
    acked: float
    fault: dict[str, Any]
    ok: bool
    reason: str = ""

    def lasts(self, at: float) -> bool:
        """True if the fault was in force at wall time ``at``."""
        if not self.ok or self.fault["kind"] == "clear":
            return False
        return self.at - 0.5 <= at <= self.acked + float(self.fault["duration_s"])


def _service_of(topic: str) -> str:
    return topic.split("/")[1] if topic.startswith(T.base + "/") else "controller"


def _answer(probe: Probe, step: Step, sent_mono: float) -> tuple[Outcome, str]:
    """The service's ack of ``step`` (for the legacy command: the controller's mode echo)."""
    if step.kind == "legacy":
        topic = T.setting("controller", "mode")
        try:
            probe.wait_for(topic, timeout_s=ACK_WAIT_S, after=sent_mono)
        except TimeoutError:
            return "unanswered", ""
        return "accepted", ""
    value = step.payload.encode()[:200].decode("utf-8", "replace")

    def ours(raw: bytes) -> bool:
        ack = json.loads(raw)
        return bool(ack.get("topic") == step.topic and ack.get("value") == value)

    try:
        raw = probe.wait_for(T.ack(_service_of(step.topic)), ours, ACK_WAIT_S, after=sent_mono)
    except TimeoutError:
        return "unanswered", ""
    ack = json.loads(raw)
    return ("accepted" if ack["ok"] else "refused"), str(ack.get("reason", ""))


def _send(probes: Mapping[str, Probe], step: Step) -> Attempt:
    listener = probes["operator"]
    sent_mono, at = time.monotonic(), time.time()
    probes[step.user].publish(step.topic, step.payload, retain=step.retain)
    outcome, reason = _answer(listener, step, sent_mono)
    if step.retain:  # take it off the broker again, so no restart replays it
        probes[step.user].publish(step.topic, b"", retain=True)
    return Attempt(
        at,
        step.topic,
        step.payload,
        step.user,
        step.kind,
        step.value_class,
        step.retain,
        outcome,
        reason,
    )


def _inject(rig: Rig, step: Step) -> FaultRecord:
    fault = dict(step.fault)
    at = time.time()
    try:
        rig.inject(fault, timeout_s=10.0)
    except RuntimeError as exc:
        return FaultRecord(at, time.time(), fault, False, str(exc))
    return FaultRecord(at, time.time(), fault, True)


def execute(
    rig: Rig,
    probes: Mapping[str, Probe],
    steps: Sequence[Step],
    progress: Callable[[str], None] = lambda _s: None,
) -> tuple[list[Attempt], list[FaultRecord]]:
    """Send the plan on time (or at once when behind); bounded by the plan plus a slack."""
    start = time.monotonic()
    end = start + (steps[-1].at_s if steps else 0.0) + PLAN_SLACK_S
    attempts: list[Attempt] = []
    faults: list[FaultRecord] = []
    for index, step in enumerate(steps):
        delay = start + step.at_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the plan's timing is the test input, not a synchronisation
        if time.monotonic() > end:
            progress(f"  stopped after {index} of {len(steps)} steps: over time")
            break
        if step.kind == "fault":
            faults.append(_inject(rig, step))
        else:
            attempts.append(_send(probes, step))
    return attempts, faults


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True, slots=True)
class Window:
    """The start-up limits the truth is judged against."""

    cell_max_v: float
    cell_min_v: float
    ccl_a: float
    charge_min_c: float = chemistry.CHARGE_MIN_C
    charge_max_c: float = chemistry.CHARGE_MAX_C

    @classmethod
    def from_echoes(cls, echoes: Mapping[str, bytes]) -> Window:
        """From the bms's start-up settings (its first echoes), capped by the chemistry."""

        def echo(name: str) -> float:
            return float(echoes[T.setting("bms", name)])

        return cls(
            cell_max_v=min(chemistry.CELL_MAX_V, echo("over_voltage_v")),
            cell_min_v=max(chemistry.CELL_MIN_V, echo("under_voltage_v")) - UNDER_MARGIN_V,
            ccl_a=echo("max_charge_current_a"),
        )


@dataclass(frozen=True, slots=True)
class Masked:
    """What a fault hides from the judgement, while it lasts (wall times).

    ``module``/``cell``: a cell (``cell`` None: a module's temperature) whose truth is a
    measurement the fault moves. ``module`` None: the rectifier's CAN link is dead, so no
    software can reach it and the published CCL is not judged (its stored fallback and the
    cells still are).
    """

    module: int | None
    cell: int | None
    since: float
    until: float


def masks(faults: Iterable[FaultRecord]) -> list[Masked]:
    """The cells, modules and the rectifier link that the injected faults take away."""
    out = []
    for record in faults:
        kind, target = record.fault["kind"], str(record.fault.get("target", ""))
        if not record.ok or kind not in ("cell_drift", "over_temperature", "rectifier_silent"):
            continue
        until = record.acked + float(record.fault["duration_s"])
        if kind == "rectifier_silent":
            out.append(Masked(None, None, record.at - 0.5, until + CCL_LAG_S))
            continue
        parts = [int(p) for p in target.split(":")]
        module = parts[0] * MODULES_PER_BUS + parts[1] - 1
        cell = parts[2] - 1 if kind == "cell_drift" else None
        out.append(Masked(module, cell, record.at - 0.5, until + REACTION_S))
    return out


@dataclass(slots=True)
class Violation:
    """One episode of one rule broken (times in wall seconds)."""

    check: str
    start: float
    end: float
    worst: float
    unit: str
    where: str
    context: list[str] = field(default_factory=list)

    def line(self, t0: float) -> str:
        text = (
            f"{self.check}: {self.worst:.3f} {self.unit} ({self.where}) at "
            f"{self.start - t0:.1f} s for {self.end - self.start:.1f} s"
        )
        return text + (f"; {'; '.join(self.context)}" if self.context else "")


@dataclass(slots=True)
class Judgement:
    """What the truth showed: the worst values, the overlap and the broken rules."""

    samples: int = 0
    cell_max: tuple[float, str] = (-math.inf, "")
    cell_min: tuple[float, str] = (math.inf, "")
    charge_a_max: float = 0.0
    discharge_a_max: float = 0.0
    over_ccl_a: float = -math.inf  # the largest excess over the published CCL
    charging_temp_c: tuple[float, float] = (math.inf, -math.inf)
    overlap_s: float = 0.0
    hits: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    def hit(self, check: str, ts: float, value: float, where: str) -> None:
        self.hits.setdefault(check, []).append((ts, value, where))


CHECKS: dict[str, tuple[str, bool]] = {  # check -> (unit, a larger value is worse)
    "cell over-voltage": ("V", True),
    "cell under-voltage": ("V", False),
    "charge current over the start-up CCL": ("A", True),
    "charge current over the published CCL": ("A", True),
    "charging below 0 °C": ("°C", False),
    "charging above 45 °C": ("°C", True),
    "charge and discharge at once": ("W", True),
}


class CclHistory:
    """The bms's CCL as published (0 when charging is not allowed), by arrival time."""

    def __init__(self, events: Iterable[tuple[float, float]]) -> None:
        ordered = sorted(events)
        self.times = [t for t, _ in ordered]
        self.values = [v for _, v in ordered]

    def allowed(self, ts: float) -> float:
        """The highest CCL in force at any time in ``[ts - CCL_LAG_S, ts]`` (0 if none)."""
        last = bisect_right(self.times, ts) - 1
        first = max(0, bisect_left(self.times, ts - CCL_LAG_S) - 1)
        if last < 0:
            return 0.0
        return max(self.values[first : last + 1])


def _visible(masked: Sequence[Masked], ts: float, module: int | None, cell: int | None) -> bool:
    return not any(
        m.module == module and m.cell == cell and m.since <= ts <= m.until for m in masked
    )


def _cells(truth: Truth, masked: Sequence[Masked]) -> list[tuple[float, str]]:
    ts = float(truth["ts"])
    return [
        (float(v), f"cell {_module_target(m)}:{c + 1}")
        for m, row in enumerate(truth["cells_v"])
        for c, v in enumerate(row)
        if _visible(masked, ts, m, c)
    ]


def _temperatures(truth: Truth, masked: Sequence[Masked]) -> list[tuple[float, str]]:
    ts = float(truth["ts"])
    return [
        (float(t), f"module {_module_target(m)}")
        for m, t in enumerate(truth["temperatures_c"])
        if _visible(masked, ts, m, None)
    ]


class _Judge:
    def __init__(self, window: Window, ccl: CclHistory, masked: Sequence[Masked]) -> None:
        self.window, self.ccl, self.masked = window, ccl, masked
        self.out = Judgement()
        self.cold_since: float | None = None
        self.hot_since: float | None = None

    def sample(self, truth: Truth, dt: float) -> None:
        w, out, ts = self.window, self.out, float(truth["ts"])
        out.samples += 1
        cells = _cells(truth, self.masked)
        if cells:
            high, low = max(cells), min(cells)
            out.cell_max, out.cell_min = max(out.cell_max, high), min(out.cell_min, low)
            if high[0] > w.cell_max_v:
                self.out.hit("cell over-voltage", ts, *high)
            if low[0] < w.cell_min_v:
                self.out.hit("cell under-voltage", ts, *low)
        charge_a = float(truth["charger_dc_a"])
        inverter_w = float(sum(truth["inverter_w"]))
        out.charge_a_max = max(out.charge_a_max, charge_a)
        out.discharge_a_max = max(out.discharge_a_max, -float(truth["current_a"]))
        if charge_a > w.ccl_a + CURRENT_MARGIN_A:
            out.hit("charge current over the start-up CCL", ts, charge_a, f"CCL {w.ccl_a:g} A")
        allowed = self.ccl.allowed(ts)
        if _visible(self.masked, ts, None, None):  # else nothing can reach the rectifier
            out.over_ccl_a = max(out.over_ccl_a, charge_a - allowed)
            if charge_a > allowed + CURRENT_MARGIN_A:
                where = f"CCL {allowed:g} A"
                out.hit("charge current over the published CCL", ts, charge_a, where)
        charging = charge_a > STOPPED_A  # the fault matrix's thresholds
        if charging and inverter_w > STOPPED_W:
            out.overlap_s += dt
            out.hit("charge and discharge at once", ts, inverter_w, f"charger {charge_a:.1f} A")
        self._temperature(truth, ts, charging)

    def _temperature(self, truth: Truth, ts: float, charging: bool) -> None:
        temps = _temperatures(truth, self.masked)
        if not temps:
            return
        cold, hot = min(temps), max(temps)
        w, out = self.window, self.out
        self.cold_since = _since(self.cold_since, ts, cold[0] < w.charge_min_c)
        self.hot_since = _since(self.hot_since, ts, hot[0] > w.charge_max_c)
        if not charging:
            return
        low, high = out.charging_temp_c
        out.charging_temp_c = (min(low, cold[0]), max(high, hot[0]))
        if self.cold_since is not None and ts - self.cold_since > REACTION_S:
            out.hit("charging below 0 °C", ts, *cold)
        if self.hot_since is not None and ts - self.hot_since > REACTION_S:
            out.hit("charging above 45 °C", ts, *hot)


def _since(since: float | None, ts: float, out: bool) -> float | None:
    """When a condition began (None while it does not hold)."""
    if not out:
        return None
    return ts if since is None else since


def episodes(check: str, hits: Sequence[tuple[float, float, str]]) -> list[Violation]:
    """Hits grouped into episodes (gaps under EPISODE_GAP_S), each with its worst value."""
    unit, larger_worse = CHECKS[check]
    out: list[Violation] = []
    for ts, value, where in sorted(hits):
        last = out[-1] if out else None
        if last is not None and ts - last.end <= EPISODE_GAP_S:
            last.end = ts
            if (value > last.worst) == larger_worse and value != last.worst:
                last.worst, last.where = value, where
        else:
            out.append(Violation(check, ts, ts, value, unit, where))
    return out


def judge(
    truths: Sequence[Truth], window: Window, ccl: CclHistory, masked: Sequence[Masked]
) -> Judgement:
    """Every truth sample against the window; hits grouped into violation episodes."""
    judge_ = _Judge(window, ccl, masked)
    previous: float | None = None
    for truth in truths:
        ts = float(truth["ts"])
        dt = 0.0 if previous is None else min(max(ts - previous, 0.0), 1.0)
        previous = ts
        judge_.sample(truth, dt)
    out = judge_.out
    for check in CHECKS:
        out.violations += episodes(check, out.hits.get(check, []))
    out.violations.sort(key=lambda v: v.start)
    return out


def explain(
    violations: Iterable[Violation], attempts: Sequence[Attempt], faults: Sequence[FaultRecord]
) -> None:
    """Add to each violation the faults active at its start and the changes accepted before."""
    for v in violations:
        active = [json.dumps(f.fault, separators=(",", ":")) for f in faults if f.lasts(v.start)]
        accepted = [
            f"{a.topic.removesuffix('/set')}={a.payload!r} ({v.start - a.at:.0f} s before)"
            for a in attempts
            if a.outcome == "accepted" and v.start - CHANGES_BEFORE_S <= a.at <= v.start
        ]
        if active:
            v.context.append("faults: " + ", ".join(active))
        if accepted:
            v.context.append("accepted before: " + ", ".join(accepted[-8:]))


# --------------------------------------------------------------------------- a phase


@dataclass(slots=True)
class PhaseResult:
    phase: Phase
    seed: int
    t0: float = 0.0
    knobs: int = 0
    planned: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    judgement: Judgement = field(default_factory=Judgement)
    window: Window | None = None
    offline: list[str] = field(default_factory=list)
    tracebacks: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome)

    @property
    def passed(self) -> bool:
        return (
            self.judgement.samples > 0
            and not self.judgement.violations
            and not self.offline
            and not self.tracebacks
        )


def _settled(probe: Probe, timeout_s: float = 60.0, quiet_s: float = 2.0) -> dict[str, bytes]:
    """Every service online, then the retained echoes and discovery until quiet for ``quiet_s``."""
    for service in (*SYSTEM_SERVICES, "sim"):
        probe.wait_for(T.status(service), lambda p: p == b"online", timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        count = sum(1 for t in list(probe.last) if "/settings/" in t or t.endswith("/config"))
        if count != seen:
            seen, since = count, time.monotonic()
        time.sleep(0.2)
    return dict(probe.last)


def run_phase(
    rig: Rig,
    phase: Phase,
    seed: int,
    duration_s: float,
    progress: Callable[[str], None] = lambda _s: None,
) -> PhaseResult:
    """One phase on a started rig: discover, plan, execute, judge."""
    result = PhaseResult(phase, seed, t0=time.time())
    probe = rig.probe
    if probe is None:
        raise RuntimeError("the rig is not started")
    retained = _settled(probe)
    result.window = Window.from_echoes(retained)
    knobs = catalogue(retained)
    steps = plan(seed, phase.name, knobs, duration_s)
    result.knobs, result.planned = len(knobs), len(steps)
    progress(
        f"{phase.name}: {len(knobs)} topics to write, {len(steps)} steps over {duration_s:.0f} s"
    )
    ha = rig.system.probe("homeassistant", subscribe="")
    try:
        result.attempts, result.faults = execute(
            rig, {"operator": probe, "homeassistant": ha}, steps, progress
        )
    finally:
        ha.close()
    t_end = time.time()
    ccl = CclHistory(
        (rig.wall(at), _ccl(payload))
        for at, topic, payload, _r in list(probe.messages)
        if topic == T.bms_limits
    )
    result.judgement = judge(rig.truths(0.0, t_end), result.window, ccl, masks(result.faults))
    explain(result.judgement.violations, result.attempts, result.faults)
    result.offline = [
        s for s in (*SYSTEM_SERVICES, "sim") if probe.last.get(T.status(s)) != b"online"
    ]
    logs = rig.log() + _read(rig.root / "sim.log")
    result.tracebacks = logs.count("Traceback")
    return result


def _ccl(payload: bytes) -> float:
    try:
        limits = json.loads(payload)
        return float(limits["ccl_a"]) if limits["charge_allowed"] else 0.0
    except (ValueError, KeyError, TypeError):
        return 0.0


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def run(
    seeds: Sequence[int],
    minutes: float,
    phases: Sequence[str],
    work: Path,
    progress: Callable[[str], None] = lambda _s: None,
) -> list[PhaseResult]:
    """For each seed every phase in turn, each on its own system; ``minutes`` per seed."""
    duration_s = minutes * 60.0 / max(1, len(phases))
    results = []
    for seed in seeds:
        for name in phases:
            rig = build_rig(work / f"seed{seed}" / name, PHASES[name])
            try:
                rig.start()
                result = run_phase(rig, PHASES[name], seed, duration_s, progress)
            finally:
                rig.stop()
            for line in summary(result):
                progress(line)
            results.append(result)
    return results


# --------------------------------------------------------------------------- figures


def _v(pair: tuple[float, str]) -> str:
    return "—" if not math.isfinite(pair[0]) else f"{pair[0]:.3f} V ({pair[1]})"


def summary(r: PhaseResult) -> list[str]:
    """The phase's figures, one per line."""
    j = r.judgement
    low_c, high_c = j.charging_temp_c
    temps = "—" if not math.isfinite(low_c) else f"{low_c:.1f}..{high_c:.1f} °C"
    faults_ok = sum(1 for f in r.faults if f.ok)
    window = r.window
    limits = (
        ""
        if window is None
        else f" (window {window.cell_min_v:.2f}..{window.cell_max_v:.2f} V, CCL {window.ccl_a:g} A)"
    )
    lines = [
        f"{r.phase.name} (seed {r.seed}): {r.phase.doc}",
        f"  changes tried {len(r.attempts)}: refused {r.count('refused')}, "
        f"accepted {r.count('accepted')}, unanswered {r.count('unanswered')} "
        f"({r.knobs} topics)",
        f"  faults injected {faults_ok} (refused by the simulator {len(r.faults) - faults_ok})",
        f"  truth samples {j.samples}{limits}",
        f"  worst cell high {_v(j.cell_max)}, low {_v(j.cell_min)}",
        f"  worst charge current {j.charge_a_max:.1f} A (largest excess over the published CCL "
        f"{j.over_ccl_a:+.1f} A), worst discharge current {j.discharge_a_max:.1f} A",
        f"  cell temperatures while charging {temps}; "
        f"charge and discharge at once {j.overlap_s:.1f} s",
        f"  services not online at the end: {', '.join(r.offline) or 'none'}; "
        f"tracebacks in the logs: {r.tracebacks}",
        f"  violations: {len(j.violations)} -> {'PASS' if r.passed else 'FAIL'}",
    ]
    lines += [f"    - {v.line(r.t0)}" for v in j.violations[:20]]
    if len(j.violations) > 20:
        lines.append(f"    ... and {len(j.violations) - 20} more")
    return lines


def totals(results: Sequence[PhaseResult]) -> str:
    """One line over every phase: the figures the issue asks for."""
    attempts = [a for r in results for a in r.attempts]
    judgements = [r.judgement for r in results]
    high = max((j.cell_max for j in judgements), default=(-math.inf, ""))
    low = min((j.cell_min for j in judgements), default=(math.inf, ""))

    def count(outcome: Outcome) -> int:
        return sum(1 for a in attempts if a.outcome == outcome)

    return (
        f"all phases: changes tried {len(attempts)}, refused {count('refused')}, accepted "
        f"{count('accepted')}, unanswered {count('unanswered')}; faults injected "
        f"{sum(1 for r in results for f in r.faults if f.ok)}; worst cell high {_v(high)}, "
        f"low {_v(low)}; worst charge current {max(j.charge_a_max for j in judgements):.1f} A; "
        f"charge and discharge at once {sum(j.overlap_s for j in judgements):.1f} s; "
        f"violations {sum(len(j.violations) for j in judgements)}"
    )


def accepted_extremes(results: Iterable[PhaseResult]) -> list[str]:
    """Per topic: how often a change was accepted, and the accepted numeric range."""
    found: dict[str, list[str]] = {}
    for r in results:
        for a in r.attempts:
            if a.outcome == "accepted":
                found.setdefault(a.topic, []).append(a.payload)
    lines = []
    for topic, values in sorted(found.items()):
        numbers = [float(v) for v in values if _is_number(v)]
        span = f", {min(numbers):g}..{max(numbers):g}" if numbers else ""
        lines.append(f"  {topic.removesuffix('/set')}: {len(values)} accepted{span}")
    return lines


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# --------------------------------------------------------------------------- the command


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridzero_tools.faults.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=1, help="the plan's seed (default 1)")
    parser.add_argument(
        "--minutes", type=float, default=4.0, help="per seed, over all phases (default 4)"
    )
    parser.add_argument("--runs", type=int, default=1, help="seeds seed, seed+1, ... (default 1)")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown or not phases or not 0 < args.minutes <= 600 or not 1 <= args.runs <= 100:
        parser.error(
            f"--phases {unknown or phases}, --minutes {args.minutes} (0 < minutes <= 600), "
            f"--runs {args.runs} (1..100)"
        )
    seeds = list(range(args.seed, args.seed + args.runs))
    work = Path(tempfile.mkdtemp(prefix="gridzero-admin-"))
    print(
        f"work directory {work}; seeds {seeds}, {args.minutes:g} min each over {phases}", flush=True
    )
    results = run(seeds, args.minutes, phases, work, lambda line: print(line, flush=True))
    print(totals(results))
    print(f"accepted changes by setting ({report.stamp()}):")
    print("\n".join(accepted_extremes(results)))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
