"""The housebatt-compat service against the real broker: gridzero's state in (published as the
services that own it), the original's topics out; retained history is not republished; the
broker lets the service write the original's topics and nothing of gridzero's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gridzero_housebatt_compat.service import HousebattCompat, HousebattCompatSettings

from gridzero.contract import Topics
from gridzero.runtime.service import ServiceRunner
from gridzero.testing import Probe, TestBroker, shunt_state, wait_until

pytestmark = pytest.mark.broker
T = Topics()


def pack_doc(**over: object) -> str:
    doc: dict[str, object] = {
        "ts": time.time(),
        "pack_voltage_v": 49.456,
        "cell_min": {"bus": 0, "module": 1, "cell": 5, "voltage_v": 4.004},
        "cell_max": {"bus": 0, "module": 1, "cell": 2, "voltage_v": 4.137},
        "cell_avg_v": 4.1,
        "cell_delta_v": 0.133,
        "temperature_min_c": 18.0,
        "temperature_max_c": 22.0,
        "temperature_avg_c": 20.0,
        "modules_present": 1,
        "modules_expected": 1,
        "cells_counted": 12,
        "cells_expected": 12,
        "balancing": False,
        "balancing_cells": 0,
        "alarm_text": "",
        "frames_rx": 10,
        "frames_bad": 0,
    }
    doc.update(over)
    return json.dumps(doc)


def module_doc() -> str:
    return json.dumps(
        {
            "ts": time.time(),
            "bus": 0,
            "module": 1,
            "present": True,
            "age_s": 0.2,
            "cells_v": [4.0 + i / 100 for i in range(12)],
            "temperatures_c": [20.0, 21.0],
        }
    )


def shunt_doc(current_a: float) -> str:
    return shunt_state(
        ts=time.time(),
        current_a=current_a,
        power_w=current_a * 49.4,
        soc_pct=63.9,
        soc_source="estimated",
        remaining_ah=110.5,
        remaining_wh=5400.0,
        capacity_ah=175.0,
    ).model_dump_json()


def controller_doc(state: str, setpoint_w: float) -> str:
    return json.dumps(
        {
            "ts": time.time(),
            "mode": "auto",
            "grid_w": 0.0,
            "target_w": 0.0,
            "setpoint_w": setpoint_w,
            "charge_w": max(0.0, setpoint_w),
            "discharge_w": max(0.0, -setpoint_w),
            "state": state,
            "meter_age_s": 0.1,
            "grid_error_mean_w": 0.0,
            "grid_error_rms_w": 0.0,
            "reversals_per_min": 0.0,
        }
    )


@pytest.fixture
def watcher(broker: TestBroker) -> Iterator[Probe]:
    """Subscribed before the service starts (its BOOT message comes at once)."""
    probe = broker.probe("operator")
    yield probe
    probe.close()


@pytest.fixture
def compat(broker: TestBroker, tmp_path: Path) -> Iterator[ServiceRunner]:
    settings = HousebattCompatSettings(
        mqtt=broker.mqtt_settings("housebatt-compat"), data_dir=tmp_path, state_stale_s=2.0
    )
    runner = ServiceRunner(HousebattCompat, settings)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    yield runner
    runner.stop()
    runner.join()


def _values(probe: Probe, topic: str, after: float) -> list[bytes]:
    return [p for at, t, p, _r in list(probe.messages) if t == topic and at >= after]


def test_the_originals_topics_from_live_state(
    broker: TestBroker, watcher: Probe, compat: ServiceRunner
) -> None:
    probe = watcher
    bms = broker.probe("bms", subscribe=None)
    shunt = broker.probe("shunt", subscribe=None)
    ctl = broker.probe("controller", subscribe=None)
    try:
        start = time.monotonic()
        probe.wait_for("goatshed/status", lambda p: p == b" --- BOOT ---", 10)
        bms.publish(T.bms_pack, pack_doc())
        bms.publish(T.bms_module(0, 1), module_doc())
        shunt.publish(T.shunt_state, shunt_doc(-20.5))  # discharging at 20.5 A
        ctl.publish(T.controller_state, controller_doc("discharging", -1000.0))
        assert probe.wait_for("battery/amps", lambda p: p == b"20.50", 5, after=start)
        assert probe.wait_for("battery/soc", timeout_s=5, after=start) == b"63"
        assert probe.wait_for("battery/volt", timeout_s=5, after=start) == b"49.46"
        assert probe.wait_for("battery/amphour", timeout_s=5, after=start) == b"110.50"
        assert probe.wait_for("battery/highcell", timeout_s=5, after=start) == b"4.14"
        cells = json.loads(probe.wait_for("battery/cells", timeout_s=5, after=start))
        assert list(cells) == ["A1"]
        assert cells["A1"]["cells"][11] == pytest.approx(4.11)
        probe.wait_for("goatshed/status", lambda p: p == b"Demand: 1000", 5, after=start)
        probe.wait_for("goatshed/status", lambda p: p == b"SOC SET: 63", 5, after=start)
        uptimes = [int(p) for p in _values(probe, "goatshed/uptime", start)]
        assert uptimes == sorted(uptimes)
        # charging: the original's sign is negative into the battery
        later = time.monotonic()
        shunt.publish(T.shunt_state, shunt_doc(10.0))
        ctl.publish(T.controller_state, controller_doc("charging", 500.0))
        probe.wait_for("battery/amps", lambda p: p == b"-10.00", 5, after=later)
        probe.wait_for("goatshed/status", lambda p: p == b"START CHARGING", 5, after=later)
        # bms and shunt go silent: after state_stale_s nothing of theirs is published
        wait_until(
            lambda: probe.last.get("battery/error") == b"no data from gridzero's bms", 6, "stale"
        )
        time.sleep(2.5)  # the shunt was heard after the pack: let it pass state_stale_s too
        quiet = time.monotonic()
        time.sleep(1.2)
        assert _values(probe, "battery/amps", quiet) == []
        assert _values(probe, "battery/volt", quiet) == []  # the pack is as old by now
    finally:
        for p in (bms, shunt, ctl):
            p.close()


def test_retained_state_is_not_republished(broker: TestBroker, tmp_path: Path) -> None:
    """A dead bms's and shunt's retained state (stamped now) is history, not a reading."""
    bms = broker.probe("bms", subscribe=None)
    shunt = broker.probe("shunt", subscribe=None)
    bms.publish(T.bms_pack, pack_doc(), retain=True)
    shunt.publish(T.shunt_state, shunt_doc(-5.0), retain=True)
    probe = broker.probe("operator")
    settings = HousebattCompatSettings(
        mqtt=broker.mqtt_settings("housebatt-compat"), data_dir=tmp_path
    )
    runner = ServiceRunner(HousebattCompat, settings)
    try:
        start = time.monotonic()
        runner.start_thread()
        assert runner.ctx.conn.wait_connected(5)
        probe.wait_for("battery/error", lambda p: b"no data" in p, 5, after=start)
        time.sleep(1.5)
        assert _values(probe, "battery/amps", start) == []
        assert _values(probe, "battery/volt", start) == []
        assert runner.ctx.rejected_inputs >= 2
    finally:
        bms.publish(T.bms_pack, b"", retain=True)
        shunt.publish(T.shunt_state, b"", retain=True)
        runner.stop()
        runner.join()
        for p in (bms, shunt, probe):
            p.close()


def test_the_broker_lets_it_write_only_the_originals_topics(broker: TestBroker) -> None:
    probe = broker.probe("operator")
    compat = broker.probe("housebatt-compat", subscribe=None)
    try:
        start = time.monotonic()
        compat.publish("meterbox/chargeTarget", "3000")
        compat.publish("meterbox/grid", "-3000")
        compat.publish(T.controller_state, controller_doc("charging", 3000.0))
        compat.publish("battery/soc", "42")  # the marker: written and delivered in order
        probe.wait_for("battery/soc", lambda p: p == b"42", 5, after=start)
        time.sleep(0.3)
        denied = [  # retained ones are other tests' history, delivered on subscribing
            t
            for at, t, _p, retained in list(probe.messages)
            if at >= start
            and not retained
            and t in ("meterbox/chargeTarget", "meterbox/grid", T.controller_state)
        ]
        assert denied == []
    finally:
        probe.close()
        compat.close()
