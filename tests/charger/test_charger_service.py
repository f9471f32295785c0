"""The charger service on python-can's virtual bus and a real mosquitto."""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import can
import pytest

from gridzero.codec import CodecError
from gridzero.contract import Topics
from gridzero.runtime.service import ServiceRunner
from gridzero.services.charger import codec
from gridzero.services.charger.codec import Control, Quantity, Register, SetPoint
from gridzero.services.charger.service import (
    CanSettings,
    Charger,
    ChargerServiceSettings,
)
from gridzero.testing import Probe, TestBroker

pytestmark = pytest.mark.broker
T = Topics()


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


class FakeRectifier:
    """Listens on the virtual bus like an R48: records every frame, answers reads."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: list[tuple[float, codec.Message]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        values = {
            Quantity.OUTPUT_VOLTAGE: 48.0,
            Quantity.OUTPUT_CURRENT: 10.0,
            Quantity.CURRENT_LIMIT: 0.2,
            Quantity.TEMPERATURE: 30.0,
            Quantity.INPUT_VOLTAGE: 230.0,
        }
        while not self._stop.is_set():
            msg = self.bus.recv(timeout=0.1)
            if msg is None:
                continue
            try:
                message = codec.decode_frame(msg.arbitration_id, bytes(msg.data))
            except CodecError:
                continue
            with self._cond:
                self.frames.append((time.monotonic(), message))
                self._cond.notify_all()
            if isinstance(message, codec.ReadRequest):
                q = message.quantity
                reply = (
                    codec.encode_status({"walk_in_active": True})
                    if q is Quantity.STATUS
                    else codec.encode_reading(q, values[q])
                )
                self.bus.send(
                    can.Message(
                        arbitration_id=reply.arbitration_id, data=reply.data, is_extended_id=True
                    )
                )

    def wait_for(
        self,
        predicate: Callable[[codec.Message], bool],
        timeout_s: float = 10.0,
        after: float = 0.0,
    ) -> tuple[float, codec.Message]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for at, message in self.frames:
                    if at >= after and predicate(message):
                        return at, message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching frame in {timeout_s} s; saw {self.frames[-8:]}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


@dataclass
class Rig:
    runner: ServiceRunner
    rectifier: FakeRectifier
    bms: Probe
    controller: Probe
    watcher: Probe

    def limits(self, *, ccl_a: float = 20.0, cvl_v: float = 49.2, alarms: int = 0) -> None:
        payload = {
            "ts": time.time(),
            "cvl_v": cvl_v,
            "ccl_a": ccl_a,
            "dcl_a": 50.0,
            "charge_allowed": True,
            "discharge_allowed": True,
            "pack_voltage_v": 47.0,
            "alarms": [
                {"code": "cell_over_voltage", "message": "cell 3 4.25 V > 4.2 V", "since_ts": 1.0}
            ]
            * alarms,
        }
        self.bms.publish(T.bms_limits, json.dumps(payload))

    def command(self, **fields: float) -> None:
        self.controller.publish(T.charger_set, json.dumps({"ts": time.time(), **fields}))


def is_control(dc_off: bool) -> Callable[[codec.Message], bool]:
    return lambda m: isinstance(m, Control) and m.dc_off is dc_off


def is_setpoint(register: int, value: float | None = None) -> Callable[[codec.Message], bool]:
    def check(m: codec.Message) -> bool:
        return (
            isinstance(m, SetPoint)
            and m.register == register
            and (value is None or m.value == pytest.approx(f32(value), rel=1e-6))
        )

    return check


@pytest.fixture
def rig_factory(own_broker: TestBroker, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**extra: object) -> Rig:
        channel = f"charger-{uuid.uuid4().hex}"
        rectifier = FakeRectifier(channel)
        settings = ChargerServiceSettings(
            mqtt=own_broker.mqtt_settings("charger"),
            data_dir=tmp_path,
            can=CanSettings(interface="virtual", channel=channel),
            **extra,  # type: ignore[arg-type]
        )
        runner = ServiceRunner(Charger, settings)
        watcher = own_broker.probe()
        runner.start_thread()
        assert runner.ctx.conn.wait_connected(10)
        watcher.wait_for(T.status("charger"), lambda p: p == b"online")
        rig = Rig(
            runner,
            rectifier,
            own_broker.probe("bms", subscribe="gridzero/charger/ack"),
            own_broker.probe("controller", subscribe="gridzero/charger/ack"),
            watcher,
        )
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.runner.stop()
        rig.runner.join()
        rig.rectifier.close()
        for probe in (rig.bms, rig.controller, rig.watcher):
            probe.close()


def test_startup_writes_dc_off_and_safe_offline_defaults(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    rig.rectifier.wait_for(is_control(True))
    rig.rectifier.wait_for(is_setpoint(Register.OFFLINE_VOLTAGE, 46.8))
    rig.rectifier.wait_for(is_setpoint(Register.OFFLINE_CURRENT, 0.10))
    # no command, no limits: the state says why it is off, and the rectifier answers polls
    state = json.loads(
        rig.watcher.wait_for(T.charger_state, lambda p: json.loads(p)["link"] == "ok")
    )
    assert state["dc_on"] is False
    assert state["limit_reason"] == "stale_bms"
    assert state["output_power_w"] == pytest.approx(480.0)
    assert state["status_flags"] == ["walk_in_active"]


def test_command_above_ccl_is_clamped(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=20.0)
    rig.command(current_a=50.0)
    rig.rectifier.wait_for(is_setpoint(Register.ONLINE_CURRENT, 20.0 / 62.5 * 1.21))
    rig.rectifier.wait_for(is_control(False))
    state = json.loads(
        rig.watcher.wait_for(T.charger_state, lambda p: json.loads(p)["dc_on"] is True)
    )
    assert state["limit_reason"] == "ccl"
    assert state["setpoint_current_a"] == pytest.approx(20.0)
    assert state["setpoint_voltage_v"] == pytest.approx(49.2)
    # never anything above CCL on the wire
    fractions = [
        m.value
        for _, m in rig.rectifier.frames
        if isinstance(m, SetPoint) and m.register == Register.ONLINE_CURRENT
    ]
    assert max(fractions) <= f32(20.0 / 62.5 * 1.21)


def test_bms_silent_turns_dc_off_within_seconds(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=1.0, command_stale_s=60.0, control_period_s=0.2)
    rig.limits(ccl_a=30.0)
    rig.command(current_a=25.0)
    on_at, _ = rig.rectifier.wait_for(is_control(False))
    last_limits_at = time.monotonic()  # the bms says nothing from here on
    off_at, _ = rig.rectifier.wait_for(is_control(True), timeout_s=10.0, after=on_at)
    time_to_safe_s = off_at - last_limits_at
    print(f"bms silent -> DC off after {time_to_safe_s:.2f} s (bms_stale_s=1.0)")
    state = json.loads(
        rig.watcher.wait_for(T.charger_state, lambda p: json.loads(p)["dc_on"] is False)
    )
    assert state["limit_reason"] == "stale_bms"


def test_alarm_turns_dc_off_at_once(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=30.0)
    rig.command(current_a=25.0)
    on_at, _ = rig.rectifier.wait_for(is_control(False))
    rig.limits(ccl_a=30.0, alarms=1)
    rig.rectifier.wait_for(is_control(True), after=on_at)
    state = json.loads(
        rig.watcher.wait_for(T.charger_state, lambda p: json.loads(p)["limit_reason"] == "alarm")
    )
    assert state["dc_on"] is False


def test_bad_command_is_refused_and_changes_nothing(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=30.0)
    for junk in (b"{", b'{"ts": 1, "current_a": -5}', b'{"ts": 1, "current_a": "x"}', b"1e999"):
        rig.controller.publish(T.charger_set, junk)
    ack = json.loads(rig.watcher.wait_for(T.ack("charger"), lambda p: b'"ok":false' in p))
    assert ack["ok"] is False
    rig.command(current_a=10.0)
    rig.rectifier.wait_for(is_setpoint(Register.ONLINE_CURRENT, 10.0 / 62.5 * 1.21))
    assert rig.runner.ctx.handler_errors == 0
    assert rig.runner.ctx.rejected_inputs >= 4


def test_runtime_setting_max_power_clamps_and_offline_rewritten(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    ha = own_broker.probe("homeassistant")
    ha.publish(T.setting_set("charger", "max_charge_power_w"), "500")
    ha.wait_for(T.setting("charger", "max_charge_power_w"), lambda p: p == b"500")
    ha.publish(T.setting_set("charger", "offline_voltage_v"), "48")
    rig.rectifier.wait_for(is_setpoint(Register.OFFLINE_VOLTAGE, 48.0))
    ha.publish(T.setting_set("charger", "offline_voltage_v"), "60")
    ack = json.loads(ha.wait_for(T.ack("charger"), lambda p: b'"ok":false' in p))
    assert "58.5" in ack["reason"]
    rig.limits(ccl_a=30.0, cvl_v=50.0)
    rig.command(current_a=25.0)
    rig.rectifier.wait_for(is_setpoint(Register.ONLINE_CURRENT, 10.0 / 62.5 * 1.21))
    state = json.loads(
        rig.watcher.wait_for(T.charger_state, lambda p: json.loads(p)["dc_on"] is True)
    )
    assert state["limit_reason"] == "max_power"
    ha.close()


def test_discovery_has_settings_and_sensors(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    payload = json.loads(rig.watcher.wait_for("homeassistant/device/gridzero_charger/config"))
    cmps = payload["cmps"]
    assert cmps["max_charge_power_w"]["p"] == "number"
    assert cmps["offline_voltage_v"]["max"] == 58.5
    assert cmps["power"]["unit_of_measurement"] == "W"
    assert cmps["dc_on"]["p"] == "binary_sensor"


def test_bus_that_is_not_there_yet_is_retried_then_gets_the_safe_defaults(
    own_broker: TestBroker, tmp_path: Path
) -> None:
    from gridzero.runtime.broker import free_port
    from gridzero.runtime.service import ServiceRunner
    from gridzero.services.charger.service import CanSettings, Charger, ChargerServiceSettings
    from gridzero.sim.canhub import CanHub

    port = free_port()
    settings = ChargerServiceSettings(
        mqtt=own_broker.mqtt_settings("charger"),
        data_dir=tmp_path,
        bus_retry_s=0.5,
        can=CanSettings(
            interface="socketcand", channel="r48", options={"host": "127.0.0.1", "port": port}
        ),
    )
    runner = ServiceRunner(Charger, settings)
    runner.start_thread()
    probe = own_broker.probe()
    probe.wait_for("gridzero/charger/status", lambda p: p == b"online")
    hub = CanHub("127.0.0.1", port).start()
    listener = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="r48")
    try:
        deadline = time.monotonic() + 10
        seen: list[codec.Message] = []
        while time.monotonic() < deadline and not any(is_control(dc_off=True)(m) for m in seen):
            msg = listener.recv(0.5)
            if msg is not None:
                seen.append(codec.decode_frame(msg.arbitration_id, bytes(msg.data)))
        assert any(is_control(dc_off=True)(m) for m in seen), (
            "no DC-off frame after the bus appeared"
        )
        assert runner.error is None
    finally:
        runner.stop()
        runner.join()
        listener.shutdown()
        hub.stop()
        probe.close()
