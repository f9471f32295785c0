"""The mapping from gridzero's state to the original's topics: signs, formats, JSON shape.

Golden payloads, each with its source in github.com/anikrooz/housebatt (commit 1c279d5).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gridzero_housebatt_compat.mapping import (
    Ages,
    Inputs,
    Memory,
    amps_text,
    arduino_float,
    cells_json,
    cells_topic,
    controller_events,
    fast_topics,
    pack_events,
    shunt_events,
    soc_text,
)
from gridzero_housebatt_compat.service import HousebattCompat, HousebattCompatSettings

from gridzero.contract import (
    BmsLimits,
    CellRef,
    ControllerState,
    ModuleState,
    PackState,
    ShuntState,
)
from gridzero.runtime.freshness import FreshValue
from gridzero.testing import FakeClock, Offline, shunt_state

AGES = Ages(state_stale_s=5.0, module_stale_s=15.0)


def shunt(
    current_a: float | None = -12.345, soc: float | None = 57.8, **over: object
) -> ShuntState:
    fields: dict[str, object] = {
        "ts": 1.0,
        "current_a": current_a,
        "power_w": None if current_a is None else current_a * 50,
        "soc_pct": soc,
        "soc_source": "estimated",
        "remaining_ah": 101.234,
        "remaining_wh": 5000.0,
        "capacity_ah": 175.0,
    }
    return shunt_state(**{**fields, **over})


def pack(**over: object) -> PackState:
    doc: dict[str, object] = {
        "ts": 1.0,
        "pack_voltage_v": 49.456,
        "cell_min": CellRef(bus=0, module=3, cell=5, voltage_v=4.004),
        "cell_max": CellRef(bus=1, module=1, cell=2, voltage_v=4.137),
        "cell_avg_v": 4.1,
        "cell_delta_v": 0.133,
        "temperature_min_c": 18.0,
        "temperature_max_c": 22.0,
        "temperature_avg_c": 20.126,
        "modules_present": 2,
        "modules_expected": 2,
        "cells_counted": 24,
        "cells_expected": 24,
        "balancing": True,
        "balancing_cells": 1,
        "alarm_text": "",
        "frames_rx": 10,
        "frames_bad": 0,
    }
    doc.update(over)
    return PackState.model_validate(doc)


def module(bus: int, number: int, cells: list[float | None], present: bool = True) -> ModuleState:
    return ModuleState(
        ts=1.0,
        bus=bus,
        module=number,
        present=present,
        age_s=0.5,
        cells_v=cells,
        temperatures_c=[20.0, 21.0],
    )


def controller(state: str, setpoint_w: float) -> ControllerState:
    return ControllerState(
        ts=1.0,
        mode="auto",  # type: ignore[arg-type]
        grid_w=0.0,
        target_w=0.0,
        setpoint_w=setpoint_w,
        charge_w=max(0.0, setpoint_w),
        discharge_w=max(0.0, -setpoint_w),
        state=state,
        meter_age_s=0.1,
        grid_error_mean_w=0.0,
        grid_error_rms_w=0.0,
        reversals_per_min=0.0,
    )


def limits(reasons: list[str]) -> BmsLimits:
    return BmsLimits(
        ts=1.0,
        boot="b",
        seq=1,
        cvl_v=49.2,
        ccl_a=0.0,
        dcl_a=50.0,
        charge_allowed=False,
        discharge_allowed=True,
        pack_voltage_v=49.2,
        reasons=reasons,
    )


# ------------------------------------------------------------------ signs and formats


def test_amps_are_positive_out_of_the_battery() -> None:
    # housebatt.ino line 157 "bmAmps; //negavive is TO battery", line 480 "+ve is OUT of batt";
    # gridzero's shunt is + charging: a battery discharging at 12.345 A reads -12.345 there
    assert amps_text(-12.345) == "12.35"  # line 520 String(bmAmps/1000): two decimals
    assert amps_text(30.0) == "-30.00"  # charging at 30 A: negative, as the original
    assert amps_text(0.0) == "0.00"
    assert amps_text(-0.001) == "0.00"  # never "-0.00"


def test_soc_is_an_integer() -> None:
    # line 137 `int SOC`; line 740 assigns a float product, truncated
    assert soc_text(57.8) == "57"
    assert soc_text(100.0) == "100"
    assert soc_text(0.2) == "0"


def test_a_number_the_original_could_not_print_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="nan"):
        arduino_float(float("nan"))


# ------------------------------------------------------------------ battery/cells


GOLDEN_CELLS = (
    # the shape BMSModuleManager.cpp lines 1404-1425 build, joined as housebatt.ino line 651
    # does ("{" + bms A + ", " + bms2 B + "}"), for one module on each bus, 12 cells each
    '{"A1":{"cells":[3.91, 3.92, 3.93, 3.94, 3.95, 3.96, 3.97, 3.98, 3.99, 4.00, 4.01, 4.02]}, '
    '"B3":{"cells":[3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 3.80, 0.00]}}'
)


def test_cells_json_has_the_originals_shape() -> None:
    a1 = module(0, 1, [3.91 + i / 100 for i in range(12)])
    b3 = module(1, 3, [3.8] * 11 + [None])  # a cell without a value: 0.00, as the original
    gone = module(0, 2, [3.7] * 12, present=False)  # not present: left out (isExisting)
    text = cells_json([b3, gone, a1])
    assert text == GOLDEN_CELLS
    doc = json.loads(text)
    assert list(doc) == ["A1", "B3"]
    assert doc["A1"]["cells"][0] == pytest.approx(3.91)
    assert all(len(m["cells"]) == 12 for m in doc.values())


def test_cells_of_stale_modules_are_not_republished() -> None:
    a1 = module(0, 1, [3.9] * 12)
    inputs = Inputs(modules={(0, 1): FreshValue(a1, 100.0)})
    assert cells_topic(inputs, 110.0, AGES) is not None
    assert cells_topic(inputs, 116.0, AGES) is None  # heard 16 s ago, stale after 15 s


# ------------------------------------------------------------------ the 0.5 s topics


def test_fast_topics_from_fresh_inputs() -> None:
    inputs = Inputs(pack=FreshValue(pack(), 100.0), shunt=FreshValue(shunt(), 100.0))
    out = dict(fast_topics(inputs, 101.0, 42.7, AGES))
    assert out == {
        "goatshed/uptime": "42",  # line 521 String(millis()/1000): whole seconds
        "battery/amps": "12.35",
        "battery/soc": "57",
        "battery/amphour": "101.23",
        "battery/error": "",
        "battery/volt": "49.46",
        "battery/balancing": "1",
        "battery/highcell": "4.14",
        "battery/lowcell": "4.00",
        "battery/temp": "20.13",
    }


def test_stale_inputs_are_not_republished_and_the_error_says_so() -> None:
    inputs = Inputs(pack=FreshValue(pack(), 100.0), shunt=FreshValue(shunt(), 90.0))
    out = dict(fast_topics(inputs, 100.5, 10.0, AGES))  # shunt heard 10.5 s ago
    assert "battery/amps" not in out
    assert "battery/soc" not in out
    assert out["battery/volt"] == "49.46"
    assert out["battery/error"] == "no data from gridzero's shunt"
    out = dict(fast_topics(inputs, 106.0, 10.0, AGES))  # now the pack too
    assert set(out) == {"goatshed/uptime", "battery/error"}
    assert out["battery/error"] == "no data from gridzero's bms"


def test_an_unavailable_shunt_publishes_no_current() -> None:
    inputs = Inputs(shunt=FreshValue(shunt(None, None, sensor="unavailable"), 100.0))
    assert "battery/amps" not in dict(fast_topics(inputs, 100.0, 1.0, AGES))


def test_error_texts_are_the_originals_where_the_fact_is_the_same() -> None:
    def error(p: PackState) -> str:
        inputs = Inputs(pack=FreshValue(p, 0.0), shunt=FreshValue(shunt(), 0.0))
        return dict(fast_topics(inputs, 0.0, 0.0, AGES))["battery/error"]

    assert error(pack(modules_present=1)) == "module missing"  # line 688
    assert error(pack(cells_counted=23)) == "Counted cells: 23"  # line 735
    assert error(pack(alarm_text="cell 1-3-5 4.26 V above 4.25 V")) == (
        "cell 1-3-5 4.26 V above 4.25 V"
    )


# ------------------------------------------------------------------ goatshed/status events


def test_charging_events_and_demand() -> None:
    m = Memory()
    m, ev = controller_events(m, controller("idle", 0.0), None)
    assert ev == []  # no demand, nothing (line 327 publishes only demand != 0)
    m, ev = controller_events(m, controller("charging", 500.0), None)
    # gridzero + charging; the original's demand is - into the battery (line 226)
    assert ev == ["START CHARGING", "Demand: -500"]
    m, ev = controller_events(m, controller("charging", 480.0), None)
    assert ev == ["Demand: -480"]
    m, ev = controller_events(m, controller("discharging", -300.0), None)
    assert ev == ["STOP CHARGING -> invert", "Demand: 300"]  # line 253
    m, _ = controller_events(m, controller("charging", 400.0), None)
    m, ev = controller_events(m, controller("idle", 0.0), None)
    assert ev == ["STOP CHARGING too small"]  # line 316
    m, _ = controller_events(m, controller("charging", 400.0), None)
    full = limits(["full: highest cell reached 4.100 V; charging again below 3.900 V"])
    _m, ev = controller_events(m, controller("idle", 0.0), full)
    assert ev == ["STOP CHARGING, fully charged"]  # line 453


def test_soc_set_once_known_and_when_a_person_sets_it() -> None:
    m = Memory()
    m, ev = shunt_events(m, shunt(soc=None))
    assert ev == []
    m, ev = shunt_events(m, shunt(soc=57.8))
    assert ev == ["SOC SET: 57"]  # line 732
    m, ev = shunt_events(m, shunt(soc=57.7))
    assert ev == []
    _m, ev = shunt_events(m, shunt(soc=80.0, soc_source="set"))
    assert ev == ["SOC SET: 80"]


def test_fault_events() -> None:
    m = Memory()
    m, ev = pack_events(m, pack())
    assert ev == []
    m, ev = pack_events(m, pack(cells_counted=12))
    assert ev == ["Series Cells Fault: 12"]  # line 589
    m, ev = pack_events(m, pack(cells_counted=12))
    assert ev == []  # once per fault, not every message
    m, ev = pack_events(m, pack(alarm_text="module 1-2 silent for 20 s"))
    assert ev == ["FAULT: module 1-2 silent for 20 s"]
    _m, ev = pack_events(m, pack(alarm_text="module 1-2 silent for 20 s"))
    assert ev == []


def test_a_module_on_a_bus_with_no_letter_is_refused_and_the_others_still_publish(
    tmp_path: Path,
) -> None:
    """bus 26 has no letter: kept, it broke every battery/cells message until it went stale."""
    settings = HousebattCompatSettings(data_dir=str(tmp_path))
    h = Offline(HousebattCompat, settings, FakeClock()).start()
    topics = h.ctx.topics
    h.deliver(topics.bms_module(0, 1), module(0, 1, [3.9] * 12).model_dump_json())
    h.deliver(topics.bms_module(26, 1), module(26, 1, [3.9] * 12).model_dump_json())
    assert h.ctx.rejected_inputs == 1
    assert h.ctx.handler_errors == 0
    assert set(h.service.inputs.modules) == {(0, 1)}
    h.advance(11.0)
    assert h.ctx.handler_errors == 0
