"""The simulator's over-temperature fault (plant `temperature_offset`, contract `over_temperature`)
and its refusal of faults it cannot read."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gridzero.contract import SimFault, Topics
from gridzero.runtime.fuzz import Harness, start_harness
from gridzero.runtime.mqtt import Message
from gridzero_bms import codec as bms_codec
from gridzero_tools.sim import faults
from gridzero_tools.sim.devices.bms import BmsBusEmulator
from gridzero_tools.sim.fuzz import harness_settings
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile
from gridzero_tools.sim.service import contract_fault

T = Topics()
LAYOUT = [list(range(1, 9)), [1]]


def _plant() -> Plant:
    return Plant(load_plant("default"), Profile.constant(500.0), seed=2)


def test_temperature_offset_moves_the_measured_temperature_only() -> None:
    plant = _plant()
    plant.step(1.0)
    true_before = list(plant.pack.temperature_c)
    plant.inject(faults.TemperatureOffset(module=4, offset_c=30.0, c_per_h=36.0), 1.0)
    plant.step(101.0)
    measured = plant.truth().temperatures_c
    assert measured[4] == pytest.approx(plant.pack.temperature_c[4] + 30.0 + 1.0, abs=1e-6)
    assert measured[3] == pytest.approx(plant.pack.temperature_c[3])
    # the physics did not get the heat
    assert plant.pack.temperature_c[4] == pytest.approx(true_before[4], abs=0.5)
    assert plant.clear_faults("temperature_offset", now_s=102.0) == 1
    assert plant.truth().temperatures_c[4] == pytest.approx(plant.pack.temperature_c[4])


def test_temperature_offset_on_the_wire() -> None:
    plant = _plant()
    plant.inject(faults.TemperatureOffset(module=1, offset_c=50.0), 0.0)
    emulator = BmsBusEmulator(0, list(range(1, 9)), 0)
    frames = emulator.report(plant, 1.0)
    decoder = bms_codec.FrameDecoder()
    temps = {}
    for frame in frames:
        decoded = decoder.decode(frame.arbitration_id, frame.data, frame.extended)
        if isinstance(decoded, bms_codec.TemperatureFrame):
            temps[decoded.module] = decoded.temperatures_c[0]
    assert temps[2] == pytest.approx(plant.pack.temperature_c[1] + 50.0, abs=0.5)
    assert temps[1] == pytest.approx(plant.pack.temperature_c[0], abs=0.5)


def test_temperature_offset_module_must_exist() -> None:
    with pytest.raises(ValueError, match="module 9"):
        _plant().inject(faults.TemperatureOffset(module=9, offset_c=1.0), 0.0)


def test_contract_over_temperature_maps_to_the_module() -> None:
    plant = _plant()
    fault = contract_fault(
        SimFault(kind="over_temperature", target="1:1", value=45.0, duration_s=30), plant, LAYOUT
    )
    assert fault == faults.TemperatureOffset(module=8, offset_c=45.0, duration_s=30.0)


@pytest.mark.parametrize("target", ["1", "", "0:1:2:3", "0:x", "2:1", "0:9"])
def test_contract_fault_with_a_bad_target_is_a_value_error(target: str) -> None:
    with pytest.raises(ValueError, match=r"target|invalid literal"):
        contract_fault(SimFault(kind="over_temperature", target=target), _plant(), LAYOUT)


@pytest.fixture
def sim() -> Iterator[Harness]:
    harness = start_harness("sim", harness_settings())  # own virtual buses, a free port
    yield harness
    harness.service.stop()
    assert harness.tmp is not None
    harness.tmp.cleanup()


def _acks(harness: Harness, sent: list[tuple[str, object]]) -> list[dict[str, object]]:
    return [
        json.loads(p.model_dump_json())  # type: ignore[attr-defined]
        for t, p in sent
        if t == T.ack("sim")
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind": "cell_drift", "targdrift", "target": "x"}',  # found by `gridzero fuzz`
        b'{"kind": "over_temperature", "target": "7"}',
        b'{"kind": "no_such_fault"}',
        b"not json",
    ],
)
def test_refused_fault_is_acked_and_changes_nothing(sim: Harness, payload: bytes) -> None:
    sent: list[tuple[str, object]] = []
    sim.ctx.publish = lambda topic, p, **_kw: sent.append((topic, p))
    plant = sim.service.plant
    with pytest.raises(ValueError, match=r"."):  # the runtime logs it as a rejected input
        sim.service.on_fault(Message(T.sim_fault_set, payload))
    assert plant.faults == []
    acks = _acks(sim, sent)
    assert len(acks) == 1
    assert acks[0]["ok"] is False
    assert acks[0]["reason"]


def test_over_temperature_over_mqtt_is_injected_and_acked(sim: Harness) -> None:
    sent: list[tuple[str, object]] = []
    sim.ctx.publish = lambda topic, p, **_kw: sent.append((topic, p))
    payload = json.dumps({"kind": "over_temperature", "target": "0:3", "value": 40}).encode()
    sim.service.on_fault(Message(T.sim_fault_set, payload))
    assert [f.kind for f in sim.service.plant.faults] == ["temperature_offset"]
    assert _acks(sim, sent)[0]["ok"] is True
