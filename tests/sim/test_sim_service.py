"""The simulator service against the real broker, with python-can's virtual buses."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from gridzero.contract import Topics
from gridzero.runtime.broker import free_port
from gridzero.runtime.service import ServiceRunner
from gridzero.testing import TestBroker, wait_until
from gridzero_bms import codec as bms_codec
from gridzero_charger import codec as r48
from gridzero_inverter import codec as soyo
from gridzero_tools.sim.service import CanBusSettings, Sim, SimSettings

pytestmark = pytest.mark.broker
T = Topics()


@pytest.fixture
def sim(broker: TestBroker, tmp_path: Path) -> Iterator[tuple[ServiceRunner, SimSettings]]:
    tag = tmp_path.name
    settings = SimSettings(
        mqtt=broker.mqtt_settings("sim"),
        data_dir=tmp_path,
        profile="load-steps",
        can_hub="",
        bms_buses=[
            CanBusSettings(interface="virtual", channel=f"{tag}-bms0"),
            CanBusSettings(interface="virtual", channel=f"{tag}-bms1"),
        ],
        charger_bus=CanBusSettings(interface="virtual", channel=f"{tag}-r48"),
        inverter_listen=[f"127.0.0.1:{free_port()}"],
        truth_period_s=0.2,
    )
    runner = ServiceRunner(Sim, settings)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    yield runner, settings
    runner.stop()
    runner.join()


def test_meter_truth_and_fault(broker: TestBroker, sim: tuple[ServiceRunner, SimSettings]) -> None:
    probe = broker.probe()
    assert int(probe.wait_for("meterbox/grid", timeout_s=5)) == 200
    truth = json.loads(probe.wait_for(T.sim_truth, timeout_s=5))
    assert len(truth["cells_v"]) == 9
    start = time.monotonic()
    probe.publish(T.sim_fault_set, json.dumps({"kind": "load_step", "value": 700}))
    probe.wait_for("meterbox/grid", lambda p: p == b"900", timeout_s=5, after=start)
    probe.close()


def test_modules_charger_and_inverter_on_the_wire(sim: tuple[ServiceRunner, SimSettings]) -> None:
    runner, settings = sim
    bus = can.Bus(interface="virtual", channel=settings.bms_buses[1].channel)
    try:
        for arb, data in bms_codec.encode_poll():
            bus.send(can.Message(arbitration_id=arb, data=data, is_extended_id=False))
        got = [bus.recv(2.0) for _ in range(4)]  # module 1 on bus 1: 3 cell frames + temps
        assert {m.arbitration_id for m in got if m is not None} == {0x1B0, 0x1B1, 0x1B2, 0x1A555401}
    finally:
        bus.shutdown()
    r48_bus = can.Bus(interface="virtual", channel=settings.charger_bus.channel)
    try:
        frame = r48.encode_voltage(50.0)
        r48_bus.send(can.Message(arbitration_id=frame.arbitration_id, data=frame.data))
        ack = r48_bus.recv(2.0)
        assert ack is not None
        assert isinstance(r48.decode_frame(ack.arbitration_id, bytes(ack.data)), r48.WriteAck)
    finally:
        r48_bus.shutdown()
    host, _, port = settings.inverter_listen[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        plant = runner.service.plant  # type: ignore[attr-defined]
        wait_until(lambda: runner.service._conns[0] is not None, 5, "inverter link")  # type: ignore[attr-defined]
        conn.sendall(soyo.encode_demand(300))
        wait_until(lambda: plant.inverters[0].demand_w == 300.0, 5, "demand frame")
