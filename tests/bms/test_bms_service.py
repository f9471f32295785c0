"""The bms service against python-can's virtual interface and the real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from gridzero.contract import Topics
from gridzero.runtime.service import ServiceRunner
from gridzero.services.bms.balancing import BalanceSettings
from gridzero.services.bms.codec import (
    BalanceCommandFrame,
    FrameDecoder,
    PollFrame,
    encode_module_cells,
    encode_temperature_frame,
)
from gridzero.services.bms.pack import ModuleKey
from gridzero.services.bms.protection import ProtectionSettings
from gridzero.services.bms.service import Bms, BmsSettings, BusSettings
from gridzero.testing import TestBroker, wait_until

pytestmark = pytest.mark.broker
T = Topics()


class FakeModules:
    """Modules on a virtual bus: answer with cell and temperature frames every 0.1 s."""

    def __init__(self, channel: str, modules: list[int]) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.cells = {m: [3700] * 12 for m in modules}
        self.polls = 0
        self.balance_frames: list[can.Message] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._decoder = FrameDecoder()

    def __enter__(self) -> FakeModules:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()

    def _run(self) -> None:
        next_send = 0.0
        while not self._stop.is_set():
            msg = self.bus.recv(0.02)
            if msg is not None:
                frame = self._decoder.decode(
                    msg.arbitration_id, bytes(msg.data), msg.is_extended_id
                )
                if isinstance(frame, PollFrame):
                    self.polls += 1
                else:
                    self.balance_frames.append(msg)
            if time.monotonic() >= next_send:
                next_send = time.monotonic() + 0.1
                for module, cells in self.cells.items():
                    frames = [
                        *encode_module_cells(module, cells),
                        encode_temperature_frame(module, [20.0, 21.0]),
                    ]
                    for arbitration_id, data in frames:
                        self.bus.send(
                            can.Message(
                                arbitration_id=arbitration_id,
                                data=data,
                                is_extended_id=arbitration_id > 0x7FF,
                            )
                        )


def _settings(broker: TestBroker, data_dir: Path, buses: list[BusSettings]) -> BmsSettings:
    return BmsSettings(
        mqtt=broker.mqtt_settings("bms"),
        data_dir=data_dir,
        store_flush_s=0.2,
        buses=buses,
        protection=ProtectionSettings(
            ramp_a_per_s=1000.0,
            release_delay_s=0.2,
            cell_delta_alarm_v=1.0,
            cell_delta_release_v=0.9,
        ),
    )


@pytest.fixture
def channel() -> str:
    return f"bms-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def running(broker: TestBroker, tmp_path: Path, channel: str) -> Iterator[ServiceRunner]:
    bus = BusSettings(interface="virtual", channel=channel, modules=[1, 2])
    runner = ServiceRunner(Bms, _settings(broker, tmp_path, [bus]))
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    yield runner
    runner.stop()
    runner.join()


def _limits(payload: bytes) -> dict[str, object]:
    value: dict[str, object] = json.loads(payload)
    return value


def test_limits_come_up_and_over_voltage_trips(
    broker: TestBroker, running: ServiceRunner, channel: str
) -> None:
    probe = broker.probe()
    with FakeModules(channel, [1, 2]) as fake:
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["ccl_a"] == 30.0, 10)
        pack = json.loads(
            probe.wait_for(T.bms_pack, lambda p: json.loads(p)["modules_present"] == 2)
        )
        assert pack["cells_counted"] == 24
        assert fake.polls >= 2
        start = time.monotonic()
        fake.cells[2][6] = 4250
        tripped = _limits(
            probe.wait_for(
                T.bms_limits,
                lambda p: any(a["code"] == "over_voltage" for a in _limits(p)["alarms"]),  # type: ignore[attr-defined]
                5,
                after=start,
            )
        )
        assert tripped["ccl_a"] == 0.0
        assert tripped["charge_allowed"] is False
        assert "module 2 cell 7" in json.dumps(tripped["alarms"])
    probe.close()


def test_modules_going_silent_zero_both_limits(
    broker: TestBroker, running: ServiceRunner, channel: str
) -> None:
    probe = broker.probe()
    with FakeModules(channel, [1, 2]):
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 10)
    start = time.monotonic()
    silent = _limits(
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 0.0, 10, after=start)
    )
    assert silent["ccl_a"] == 0.0
    assert "module_missing" in json.dumps(silent["alarms"])
    assert running.ctx.handler_errors == 0
    probe.close()


def test_bus_that_cannot_open_does_not_stop_the_service(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe()
    bus = BusSettings(interface="no-such-interface", channel="x", modules=[1])
    runner = ServiceRunner(Bms, _settings(broker, tmp_path, [bus]))
    runner.start_thread()
    limits = _limits(probe.wait_for(T.bms_limits, timeout_s=10))
    assert limits["ccl_a"] == limits["dcl_a"] == 0.0
    assert "module_missing" in json.dumps(limits["alarms"])
    runner.stop()
    runner.join()
    assert runner.error is None
    probe.close()


def test_runtime_setting_is_validated_and_echoed(
    broker: TestBroker, running: ServiceRunner
) -> None:
    probe = broker.probe()
    start = time.monotonic()
    probe.publish(T.setting_set("bms", "over_voltage_v"), "4.5")
    ack = json.loads(probe.wait_for(T.ack("bms"), after=start))
    assert ack["ok"] is False
    assert "over_voltage_v" in ack["reason"]
    start = time.monotonic()
    probe.publish(T.setting_set("bms", "over_voltage_v"), "4.15")
    probe.wait_for(T.setting("bms", "over_voltage_v"), lambda p: p == b"4.15", after=start)
    service = running.service
    assert isinstance(service, Bms)
    wait_until(lambda: service.protection.settings.over_voltage_v == 4.15, 15, "applied")
    probe.close()


def test_discovery_is_published(broker: TestBroker, running: ServiceRunner) -> None:
    probe = broker.probe()
    payload = json.loads(probe.wait_for("homeassistant/device/gridzero_bms/config"))
    assert {"ccl", "dcl", "cvl", "cell_max", "over_voltage_v"} <= set(payload["cmps"])
    probe.close()


def test_balancing_commands_reach_the_bus(broker: TestBroker, tmp_path: Path, channel: str) -> None:
    bus = BusSettings(interface="virtual", channel=channel, modules=[1, 2])
    settings = _settings(broker, tmp_path, [bus]).model_copy(
        update={"balance": BalanceSettings(measure_s=1.1, settle_s=0.1, cycle_s=5.0)}
    )
    runner = ServiceRunner(Bms, settings)
    runner.start_thread()
    decoder = FrameDecoder()
    with FakeModules(channel, [1, 2]) as fake:
        fake.cells[1] = [3950] * 12
        fake.cells[2] = [3950] * 4 + [4000] + [3950] * 7

        def bleeding() -> bool:
            for msg in list(fake.balance_frames):
                frame = decoder.decode(msg.arbitration_id, bytes(msg.data), msg.is_extended_id)
                if isinstance(frame, BalanceCommandFrame) and frame.module == 2 and frame.cells_on:
                    return frame.cells_on == (5,)
            return False

        wait_until(bleeding, 15, "a balance command for module 2 cell 5")
        service = runner.service
        assert isinstance(service, Bms)
        assert service.balancer.bleeding == {ModuleKey(0, 2): frozenset({5})}
    runner.stop()
    runner.join()


def test_force_balance_button_toggles_the_setting(
    broker: TestBroker, running: ServiceRunner
) -> None:
    probe = broker.probe()
    ha = broker.probe("homeassistant", subscribe=None)
    start = time.monotonic()
    ha.publish(T.action_set("bms", "force_balance"), "press")
    probe.wait_for(T.setting("bms", "balance_force"), lambda p: p == b"true", after=start)
    start = time.monotonic()
    ha.publish(T.action_set("bms", "force_balance"), "press")
    probe.wait_for(T.setting("bms", "balance_force"), lambda p: p == b"false", after=start)
    probe.close()
    ha.close()
