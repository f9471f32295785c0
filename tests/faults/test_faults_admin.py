"""A random admin over the running system (issue 16): the cells stay in their window.

`gridzero_tools.faults.admin` changes settings, presses buttons and sends the legacy charge command
at random as Home Assistant and the operator (valid, out of range, NaN, huge, negative,
wrong types, unknown names), injects random simulator faults, and judges the simulator's
truth: cells inside the bms's start-up window, charge current within the CCL, no charging
outside 0..45 °C, never charge and discharge at once. The CI run is one short phase per
plant state (near full, near empty, cold, hot); `python -m gridzero_tools.faults.admin --seed N
--minutes M` runs longer ones. The first tests check the planner and the judge on their own,
so that the judge is known to catch each rule.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from gridzero import ha
from gridzero.contract import LEGACY_CHARGE_TARGET_TOPIC, Topics
from gridzero_tools.faults import admin
from gridzero_tools.faults.admin import CclHistory, FaultRecord, Knob, Window

T = Topics()
CI_MINUTES = 2.0  # over the four phases: about 40 s each with start and stop


class _Settings(BaseModel):
    limit_v: float = Field(4.1, ge=3.8, le=4.2, json_schema_extra={"unit": "V", "step": 0.01})
    enabled: bool = True


def _retained() -> dict[str, bytes]:
    device = ha.service_device("bms", "test")
    components = [
        *ha.settings_components(_Settings, T, "bms"),
        ha.button("press_me", "Press", T.action_set("bms", "press_me")),
    ]
    topic, payload = ha.device_discovery(device, components, T.status("bms"))
    return {
        topic: json.dumps(payload).encode(),
        T.setting("bms", "limit_v"): b"4.1",
        T.setting("bms", "enabled"): b"true",
        T.setting("shunt", "echo_only"): b"abc",  # no discovery entity: fuzzed as text
    }


def test_catalogue_reads_the_discovery_and_the_echoes() -> None:
    knobs = {k.topic: k for k in admin.catalogue(_retained())}
    limit = knobs[T.setting_set("bms", "limit_v")]
    assert (limit.kind, limit.minimum, limit.maximum, limit.step) == ("number", 3.8, 4.2, 0.01)
    assert knobs[T.setting_set("bms", "enabled")].kind == "switch"
    assert knobs[T.action_set("bms", "press_me")].kind == "button"
    assert knobs[T.setting_set("shunt", "echo_only")].kind == "text"
    assert knobs[T.setting_set("shunt", "echo_only")].current == "abc"
    assert knobs[T.setting_set("bms", "no_such_setting")].kind == "unknown"
    assert knobs[T.action_set("shunt", "no_such")].kind == "unknown"
    assert knobs[LEGACY_CHARGE_TARGET_TOPIC].kind == "legacy"


def test_the_plan_is_a_function_of_the_seed_and_covers_every_kind_of_input() -> None:
    knobs = admin.catalogue(_retained())
    first = admin.plan(7, "full", knobs, 600.0)
    assert first == admin.plan(7, "full", knobs, 600.0)
    assert first != admin.plan(8, "full", knobs, 600.0)
    assert first != admin.plan(7, "empty", knobs, 600.0)
    assert all(b.at_s >= a.at_s for a, b in itertools.pairwise(first))
    assert first[-1].at_s < 600.0
    kinds = {s.kind for s in first}
    assert {"number", "switch", "button", "text", "unknown", "legacy", "fault"} <= kinds
    classes = {s.value_class for s in first if s.kind == "number"}
    assert set(dict(admin.NUMBER_MIX)) <= classes
    # a reset: every setting back to its start-up echo at one instant
    resets = [s for s in first if s.value_class == "restore"]
    times = {s.at_s for s in resets}
    assert any(sum(1 for s in resets if s.at_s == t) >= 2 for t in times)
    assert all(s.payload in ("4.1", "true") for s in resets)
    assert {s.user for s in first} == {"homeassistant", "operator"}
    assert any(s.retain for s in first)
    faults = {dict(s.fault)["kind"] for s in first if s.kind == "fault"}
    assert "clear" in faults
    assert len(faults) >= 6


def test_number_values_include_every_bad_kind() -> None:
    knob = Knob("t/set", "number", 3.8, 4.2, 0.01)
    rng = random.Random(1)
    values = [admin.value_for(knob, rng)[1] for _ in range(400)]
    numbers = [float(v) for v in values if admin._is_number(v)]
    assert any(v.lower() == "nan" for v in values)
    assert any(n > 4.2 for n in numbers)
    assert any(n < 0 for n in numbers)
    assert any(3.8 <= n <= 4.2 for n in numbers)
    assert any(not admin._is_number(v) and v.lower() != "nan" for v in values)


# --------------------------------------------------------------------------- the judge

WINDOW = Window(cell_max_v=4.2, cell_min_v=2.95, ccl_a=30.0)


def _truth(ts: float, **over: Any) -> dict[str, Any]:
    truth: dict[str, Any] = {
        "ts": ts,
        "cells_v": [[3.7] * 12 for _ in range(9)],
        "temperatures_c": [20.0] * 9,
        "charger_dc_a": 0.0,
        "inverter_w": [0.0],
        "current_a": 0.0,
    }
    truth.update(over)
    return truth


def _run(
    truths: list[dict[str, Any]], ccl: float = 30.0, faults: tuple[FaultRecord, ...] = ()
) -> set[str]:
    history = CclHistory([(0.0, ccl)])
    judgement = admin.judge(truths, WINDOW, history, admin.masks(faults))
    return {v.check for v in judgement.violations}


def _with_cell(v: float, module: int = 2, cell: int = 4) -> list[list[float]]:
    cells = [[3.7] * 12 for _ in range(9)]
    cells[module][cell] = v
    return cells


def test_the_judge_passes_a_clean_run() -> None:
    assert _run([_truth(10.0 + i * 0.2, charger_dc_a=20.0) for i in range(50)]) == set()


@pytest.mark.parametrize(
    ("over", "check"),
    [
        ({"cells_v": _with_cell(4.201)}, "cell over-voltage"),
        ({"cells_v": _with_cell(2.94)}, "cell under-voltage"),
        ({"charger_dc_a": 33.0}, "charge current over the start-up CCL"),
        ({"charger_dc_a": 0.6, "inverter_w": [6.0]}, "charge and discharge at once"),
        ({"charger_dc_a": 5.0, "temperatures_c": [20.0] * 8 + [-0.5]}, "charging below 0 °C"),
        ({"charger_dc_a": 5.0, "temperatures_c": [45.5] + [20.0] * 8}, "charging above 45 °C"),
    ],
)
def test_the_judge_catches_each_rule(over: dict[str, Any], check: str) -> None:
    truths = [_truth(10.0 + i * 0.2, **over) for i in range(20)]
    assert check in _run(truths)


def test_the_judge_gives_the_ccl_time_and_the_temperature_a_reaction() -> None:
    # CCL 30 A until 10 s, then 0: a current after the lag is too much, not before
    history = CclHistory([(0.0, 30.0), (10.0, 0.0)])
    early = [_truth(10.0 + i * 0.2, charger_dc_a=20.0) for i in range(10)]  # 10..11.8 s
    late = [_truth(14.0, charger_dc_a=20.0)]
    assert not admin.judge(early, WINDOW, history, []).violations
    checks = {v.check for v in admin.judge(late, WINDOW, history, []).violations}
    assert checks == {"charge current over the published CCL"}
    # charging on while a module has been above 45 °C for 1 s is not yet a violation
    hot = [_truth(10.0 + i * 0.2, charger_dc_a=5.0, temperatures_c=[46.0] * 9) for i in range(6)]
    assert _run(hot) == set()


def test_the_judge_leaves_out_what_a_fault_only_pretends() -> None:
    drift = FaultRecord(
        9.0, 9.1, {"kind": "cell_drift", "target": "0:3:5", "value": 50, "duration_s": 5.0}, True
    )
    hot = FaultRecord(
        9.0,
        9.1,
        {"kind": "over_temperature", "target": "1:1", "value": 40, "duration_s": 5.0},
        True,
    )
    dead = FaultRecord(9.0, 9.1, {"kind": "rectifier_silent", "duration_s": 20.0}, True)
    cells = _with_cell(4.3, module=2, cell=4)  # bus 0, module 3, cell 5
    temps = [20.0] * 8 + [60.0]  # bus 1, module 1
    truths = [
        _truth(10.0 + i * 0.2, cells_v=cells, temperatures_c=temps, charger_dc_a=5.0)
        for i in range(20)
    ]
    assert _run(truths, faults=(drift, hot)) == set()
    assert _run(truths, faults=(drift,)) == {"charging above 45 °C"}
    # a dead rectifier link: the published CCL is not judged, the start-up CCL is
    over = [_truth(10.0 + i * 0.2, charger_dc_a=40.0) for i in range(20)]
    assert _run(over, ccl=0.0, faults=(dead,)) == {"charge current over the start-up CCL"}


# --------------------------------------------------------------------------- the system


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("phase", list(admin.PHASES))
def test_random_admin_keeps_the_cells_in_their_window(tmp_path: Path, phase: str) -> None:
    seconds = CI_MINUTES * 60.0 / len(admin.PHASES)
    rig = admin.build_rig(tmp_path, admin.PHASES[phase])
    try:
        rig.start()
        result = admin.run_phase(rig, admin.PHASES[phase], 1, seconds, print)
    finally:
        rig.stop()
    print("\n".join(admin.summary(result)))
    assert result.judgement.samples > 0
    assert result.count("accepted") > 0
    assert result.count("refused") > 0
    assert any(f.ok for f in result.faults)
    assert not result.offline, result.offline
    assert not result.tracebacks, "a service logged a traceback"
    violations = [v.line(result.t0) for v in result.judgement.violations]
    assert not violations, "\n".join(violations)
