"""The controller service against the real broker: meter in, commands out, settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridzero.contract import Topics
from gridzero.runtime.service import ServiceRunner
from gridzero.services.controller.service import ControllerService, ControllerServiceSettings
from gridzero.services.controller.settings import ControllerSettings
from gridzero.testing import TestBroker

pytestmark = pytest.mark.broker
T = Topics()


def limits_payload(**over: object) -> str:
    doc = {
        "ts": time.time(),
        "cvl_v": 49.2,
        "ccl_a": 50.0,
        "dcl_a": 50.0,
        "charge_allowed": True,
        "discharge_allowed": True,
        "pack_voltage_v": 48.0,
        "reasons": [],
        "alarms": [],
    }
    doc.update(over)
    return json.dumps(doc)


def charger_payload() -> str:
    return json.dumps(
        {
            "ts": time.time(),
            "link": "ok",
            "dc_on": False,
            "output_voltage_v": 48.0,
            "output_current_a": 0.0,
            "output_power_w": 0.0,
            "temperature_c": 25.0,
            "input_voltage_v": 230.0,
            "setpoint_voltage_v": None,
            "setpoint_current_a": None,
            "limit_reason": "controller",
            "status_flags": [],
        }
    )


class Feeder:
    """Publishes meter, bms limits and charger state every 0.2 s, like the real devices."""

    def __init__(self, broker: TestBroker) -> None:
        self.meter = broker.probe("meter", subscribe=None)
        self.bms = broker.probe("bms", subscribe=None)
        self.charger = broker.probe("charger", subscribe=None)
        self.grid_w = 500
        self.limits: dict[str, object] = {}
        self.bms_alive = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.meter.publish("meterbox/grid", str(self.grid_w), qos=0)
            if self.bms_alive:
                self.bms.publish(T.bms_limits, limits_payload(**self.limits), qos=0)
            self.charger.publish(T.charger_state, charger_payload(), qos=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for p in (self.meter, self.bms, self.charger):
            p.close()


@pytest.fixture
def system(broker: TestBroker, tmp_path: Path) -> Iterator[tuple[ServiceRunner, Feeder]]:
    settings = ControllerServiceSettings(
        mqtt=broker.mqtt_settings("controller"),
        data_dir=tmp_path,
        store_flush_s=0.2,
        controller=ControllerSettings(min_dwell_s=0.5),
    )
    runner = ServiceRunner(ControllerService, settings)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    feeder = Feeder(broker)
    yield runner, feeder
    feeder.close()
    runner.stop()
    runner.join()


def power_of(payload: bytes) -> float:
    return float(json.loads(payload)["power_w"])


def test_import_gives_discharge_and_stale_bms_gives_zero(broker: TestBroker, system) -> None:
    _runner, feeder = system
    probe = broker.probe()
    # No inverter measurements: the law assumes the unit follows, so the demand settles
    # at the load the meter showed first (grid stays at 500 in this open loop).
    probe.wait_for(T.inverter_set("gtn1"), lambda p: power_of(p) >= 400.0, 10)
    state = json.loads(probe.wait_for(T.controller_state, lambda p: b"discharging" in p, 5))
    assert state["mode"] == "auto"
    disc = json.loads(
        probe.wait_for("homeassistant/device/gridzero_controller/config", timeout_s=5)
    )
    assert {"grid", "setpoint", "mode", "target_grid_w"} <= set(disc["cmps"])
    feeder.bms_alive = False
    start = time.monotonic()
    probe.wait_for(T.inverter_set("gtn1"), lambda p: power_of(p) == 0.0, 10, after=start + 3.0)
    probe.wait_for(T.controller_state, lambda p: b"stale_bms" in p, 5, after=start)
    probe.close()


def test_runtime_settings_mode_hold_and_refusal(broker: TestBroker, system) -> None:
    _runner, _feeder = system
    probe = broker.probe()
    op = broker.probe("homeassistant", subscribe=None)
    probe.wait_for(T.inverter_set("gtn1"), lambda p: power_of(p) >= 400.0, 10)
    start = time.monotonic()
    op.publish(T.setting_set("controller", "mode"), "hold")
    probe.wait_for(T.setting("controller", "mode"), lambda p: p == b"hold", 5, after=start)
    probe.wait_for(T.inverter_set("gtn1"), lambda p: power_of(p) == 0.0, 5, after=start)
    # Out of range: refused with a reason, value unchanged.
    op.publish(T.setting_set("controller", "target_grid_w"), "9999")
    ack = json.loads(
        probe.wait_for(T.ack("controller"), lambda p: b"target_grid_w" in p, 5, after=start)
    )
    assert ack["ok"] is False
    probe.close()
    op.close()


def test_limits_with_an_old_time_stamp_count_as_stale(broker: TestBroker, system) -> None:
    _runner, feeder = system
    probe = broker.probe()
    probe.wait_for(T.controller_state, lambda p: b"discharging" in p, 10)
    # still arriving, but stamped 10 s ago (a retained message of a dead bms looks like this)
    feeder.limits = {"ts": time.time() - 10.0}
    start = time.monotonic()
    probe.wait_for(T.controller_state, lambda p: b"stale_bms" in p, 5, after=start)
    probe.wait_for(T.inverter_set("gtn1"), lambda p: power_of(p) == 0.0, 10, after=start)
    probe.close()
