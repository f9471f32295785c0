"""The bms service against python-can's virtual interface and the real broker."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest

from gridzero.contract import Topics
from gridzero.runtime.service import ServiceRunner
from gridzero.testing import Probe, TestBroker, shunt_state, wait_until
from gridzero_bms.balancing import BalanceSettings
from gridzero_bms.codec import (
    BalanceCommandFrame,
    FrameDecoder,
    PollFrame,
    encode_module_cells,
    encode_temperature_frame,
)
from gridzero_bms.pack import ModuleKey, SuspectCell
from gridzero_bms.protection import ProtectionSettings
from gridzero_bms.service import Bms, BmsSettings, BusSettings

pytestmark = pytest.mark.broker
T = Topics()


class FakeModules:
    """Modules on a virtual bus: each answers every 0x0BA request with its cell frames (the
    message counter counting up) and its temperature frame, as the simulator's boards do.

    ``twins`` adds a second board with the same number and its own cells, answering just
    before the real one; a module in ``frozen`` repeats the frames it sent last."""

    def __init__(self, channel: str, modules: list[int]) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.cells = {m: [3700] * 12 for m in modules}
        self.twins: dict[int, list[int]] = {}
        self.frozen: set[int] = set()
        self.polls = 0
        self.balance_frames: list[can.Message] = []
        self._counter = 0
        self._last: dict[int, list[tuple[int, bytes]]] = {}
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
        while not self._stop.is_set():
            msg = self.bus.recv(0.02)
            if msg is None:
                continue
            frame = self._decoder.decode(msg.arbitration_id, bytes(msg.data), msg.is_extended_id)
            if isinstance(frame, PollFrame):
                self.polls += 1
                if frame.send_voltages:
                    self._answer()
            else:
                self.balance_frames.append(msg)

    def _answer(self) -> None:
        self._counter = (self._counter + 1) & 0x0F
        for module, cells in list(self.cells.items()):
            twin = self.twins.get(module)
            if twin is not None:
                self._send(encode_module_cells(module, twin, counter=(self._counter + 7) & 0x0F))
            if module in self.frozen and module in self._last:
                self._send(self._last[module])
                continue
            frames = [
                *encode_module_cells(module, cells, counter=self._counter),
                encode_temperature_frame(module, [20.0, 21.0]),
            ]
            self._last[module] = frames
            self._send(frames)

    def _send(self, frames: list[tuple[int, bytes]]) -> None:
        for arbitration_id, data in frames:
            self.bus.send(
                can.Message(
                    arbitration_id=arbitration_id, data=data, is_extended_id=arbitration_id > 0x7FF
                )
            )


def _settings(broker: TestBroker, data_dir: Path, buses: list[BusSettings]) -> BmsSettings:
    return BmsSettings(
        mqtt=broker.mqtt_settings("bms"),
        data_dir=data_dir,
        store_flush_s=0.2,
        buses=buses,
        current_per_string_a=15.0,  # two modules: 30 A
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
        # live only: an earlier test's retained limits and pack would pass before any poll
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["ccl_a"] == 30.0, 10, live_only=True)
        pack = json.loads(
            probe.wait_for(
                T.bms_pack, lambda p: json.loads(p)["modules_present"] == 2, live_only=True
            )
        )
        assert pack["cells_counted"] == 24
        # two 12 S modules in parallel (the default layout): what the charger checks its own by
        assert pack["cells_in_series"] == 12
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
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 10, live_only=True)
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
    bus = BusSettings(interface="no-such-interface", channel="x", modules=[1, 2])
    runner = ServiceRunner(Bms, _settings(broker, tmp_path, [bus]))
    runner.start_thread()
    limits = _limits(probe.wait_for(T.bms_limits, timeout_s=10, live_only=True))
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
    # live only: the tightening test's retained 4.15 V echo could arrive after ``start``
    probe.wait_for(
        T.setting("bms", "over_voltage_v"), lambda p: p == b"4.15", after=start, live_only=True
    )
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


def _alarm_codes(payload: bytes) -> set[str]:
    return {a["code"] for a in json.loads(payload)["alarms"]}


def _has_alarm(code: str) -> Callable[[bytes], bool]:
    return lambda p: code in _alarm_codes(p)


def _press(probe: Probe, action: str) -> dict[str, object]:
    """Press a bms button and return its answer on the ack topic."""
    start = time.monotonic()
    probe.publish(T.action_set("bms", action), "press")
    answer: dict[str, object] = json.loads(
        probe.wait_for(T.ack("bms"), lambda p: action in json.loads(p)["topic"], 10, after=start)
    )
    return answer


def test_two_boards_with_one_number_block_both_directions(
    broker: TestBroker, running: ServiceRunner, channel: str
) -> None:
    probe = broker.probe()
    with FakeModules(channel, [1, 2]) as fake:
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 10, live_only=True)
        start = time.monotonic()
        fake.twins[2] = [4300] * 12  # answers just before the real module 2 at 3.70 V
        tripped = probe.wait_for(T.bms_limits, _has_alarm("frame_sanity"), 10, after=start)
        limits = _limits(tripped)
        assert limits["ccl_a"] == limits["dcl_a"] == 0.0
        assert "bus 0 module 2 frame 0x1B4" in json.dumps(limits["alarms"])
        fake.twins.clear()
        start = time.monotonic()
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 20, after=start)
    probe.close()


def test_a_frozen_board_repeating_its_frames_blocks_both_directions(
    broker: TestBroker, running: ServiceRunner, channel: str
) -> None:
    probe = broker.probe()
    with FakeModules(channel, [1, 2]) as fake:
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 10, live_only=True)
        start = time.monotonic()
        fake.frozen.add(1)
        tripped = _limits(probe.wait_for(T.bms_limits, _has_alarm("frame_sanity"), 10, after=start))
        assert tripped["ccl_a"] == tripped["dcl_a"] == 0.0
        assert "a frozen board" in json.dumps(tripped["alarms"])
        assert "module_missing" not in json.dumps(tripped["alarms"])  # it still looks present
    probe.close()


def test_deep_discharge_latch_survives_a_restart_and_only_a_person_releases_it(
    broker: TestBroker, tmp_path: Path, channel: str
) -> None:
    probe = broker.probe()
    bus = BusSettings(interface="virtual", channel=channel, modules=[1, 2])
    settings = _settings(broker, tmp_path, [bus])
    with FakeModules(channel, [1, 2]) as fake:
        fake.cells[1] = [2000] * 12
        runner = ServiceRunner(Bms, settings)
        runner.start_thread()
        # subscribed before the button is pressed: the limits below come from a timer and
        # may be published before the broker has the bms's subscriptions
        assert runner.ctx.conn.wait_connected(5)
        latched = _limits(
            probe.wait_for(T.bms_limits, _has_alarm("deep_discharge"), 10, live_only=True)
        )
        assert latched["ccl_a"] == latched["dcl_a"] == 0.0  # was: CCL 30 A
        refused = _press(probe, "release_deep_discharge")
        assert refused["ok"] is False
        assert "cell 1 at 2.000 V is still below deep_discharge_v 2.500 V" in str(refused["reason"])
        runner.stop()
        runner.join()
        fake.cells[1] = [3700] * 12  # charged by other means while the bms was down
        runner = ServiceRunner(Bms, settings)
        runner.start_thread()
        assert runner.ctx.conn.wait_connected(5)
        start = time.monotonic()
        probe.wait_for(T.bms_pack, lambda p: json.loads(p)["modules_present"] == 2, 10, after=start)
        start = time.monotonic()
        held = _limits(probe.wait_for(T.bms_limits, after=start))
        assert "deep_discharge" in json.dumps(held["alarms"])
        assert "restored after a restart" in json.dumps(held["alarms"])
        assert held["ccl_a"] == held["dcl_a"] == 0.0
        released = _press(probe, "release_deep_discharge")
        assert released["ok"] is True, released
        start = time.monotonic()
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["ccl_a"] == 30.0, 10, after=start)
        runner.stop()
        runner.join()
    probe.close()


def test_runtime_settings_may_only_tighten_the_start_up_limits(
    broker: TestBroker, tmp_path: Path, channel: str
) -> None:
    probe = broker.probe()
    bus = BusSettings(interface="virtual", channel=channel, modules=[1, 2])
    settings = _settings(broker, tmp_path, [bus])
    settings = settings.model_copy(
        update={
            "protection": settings.protection.model_copy(
                update={"over_voltage_v": 4.15, "max_charge_current_a": 20.0}
            )
        }
    )
    runner = ServiceRunner(Bms, settings)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)

    def change(name: str, value: str) -> dict[str, object]:
        start = time.monotonic()
        probe.publish(T.setting_set("bms", name), value)
        ack: dict[str, object] = json.loads(
            probe.wait_for(T.ack("bms"), lambda p: name in json.loads(p)["topic"], after=start)
        )
        return ack

    wider = change("over_voltage_v", "4.18")  # was accepted: up to 4.25 V over MQTT
    assert wider["ok"] is False
    assert "over_voltage_v = 4.18 is above its start-up limit protection.over_voltage_v = 4.15" in (
        str(wider["reason"])
    )
    beyond = change("over_voltage_v", "4.25")
    assert beyond["ok"] is False
    assert "over_voltage_v=4.25" in str(beyond["reason"])
    assert "4.2" in str(beyond["reason"])
    current = change("max_charge_current_a", "25")
    assert current["ok"] is False
    assert "protection.max_charge_current_a = 20" in str(current["reason"])
    tighter = change("max_charge_current_a", "10")
    assert tighter["ok"] is True
    service = runner.service
    assert isinstance(service, Bms)
    assert service.protection.settings.over_voltage_v == 4.15
    wait_until(lambda: service.protection.settings.max_charge_current_a == 10.0, 5, "applied")
    runner.stop()
    runner.join()
    probe.close()


def _shunt_state(current_a: float) -> str:
    return shunt_state(
        ts=time.time(), current_a=current_a, power_w=current_a * 48.0
    ).model_dump_json()


def test_measured_over_current_from_the_shunt_blocks_its_direction(
    broker: TestBroker, running: ServiceRunner, channel: str
) -> None:
    probe = broker.probe()
    shunt = broker.probe("shunt", subscribe=None)
    with FakeModules(channel, [1, 2]):
        probe.wait_for(T.bms_limits, lambda p: _limits(p)["ccl_a"] == 30.0, 10, live_only=True)
        start = time.monotonic()
        deadline = start + 20.0
        tripped = None
        while tripped is None and time.monotonic() < deadline:
            shunt.publish(T.shunt_state, _shunt_state(45.0))  # 45 A into a 30 A limit
            with contextlib.suppress(TimeoutError):
                tripped = probe.wait_for(
                    T.bms_limits, _has_alarm("over_current_charge"), 0.3, after=start
                )
        assert tripped is not None, "no over-current alarm"
        limits = _limits(tripped)
        assert limits["ccl_a"] == 0.0
        assert limits["dcl_a"] == 30.0
        assert "measured 45.0 A > limit 30.0 A" in json.dumps(limits["alarms"])
    shunt.close()
    probe.close()


def test_a_suspect_cell_is_published_and_shown_to_home_assistant(
    broker: TestBroker, tmp_path: Path, channel: str
) -> None:
    """The module topic names the suspect cell and the module sensor's attributes carry it;
    its low reading does not hold the cell-delta alarm."""
    bus = BusSettings(interface="virtual", channel=channel, modules=[1, 2])
    settings = _settings(broker, tmp_path, [bus]).model_copy(
        update={
            "suspect_cells": [SuspectCell(bus=0, module=2, cell=11)],
            "protection": ProtectionSettings(ramp_a_per_s=1000.0, release_delay_s=0.2),
        }
    )
    runner = ServiceRunner(Bms, settings)
    runner.start_thread()
    probe = broker.probe()
    try:
        with FakeModules(channel, [1, 2]) as fake:
            fake.cells[2][10] = 3300  # 0.4 V below the others: the delta alarm's 0.2 V
            # (the probe also gets the retained module state of earlier tests: wait for ours)
            module = json.loads(
                probe.wait_for(
                    T.bms_module(0, 2), lambda p: bool(json.loads(p).get("suspect_cells")), 10
                )
            )
            assert module["suspect_cells"] == [11]
            probe.wait_for(T.bms_limits, lambda p: _limits(p)["dcl_a"] == 30.0, 10, live_only=True)
            time.sleep(6.0)  # longer than the delta alarm's trip delay (5 s)
            limits = _limits(probe.wait_for(T.bms_limits, after=time.monotonic()))
            assert limits["alarms"] == []
        discovery = json.loads(
            probe.wait_for(
                "homeassistant/device/gridzero_bms/config", lambda p: b"suspect_cells" in p
            )
        )
        attributes = discovery["cmps"]["module_0_2"]["json_attributes_template"]
        assert "suspect_cells" in attributes
    finally:
        runner.stop()
        runner.join()
        probe.close()
