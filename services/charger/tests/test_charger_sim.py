"""The simulator's R48 faults the charger's barriers are tested against (issue 16)."""

from __future__ import annotations

import json

import pytest

from gridzero.contract import SimFault
from gridzero_charger import codec as r48
from gridzero_tools.sim import faults
from gridzero_tools.sim.devices.rectifier import RectifierEmulator
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile
from gridzero_tools.sim.service import contract_fault


def _plant() -> Plant:
    return Plant(load_plant("default"), Profile.constant(400.0), seed=4)


def _send(emu: RectifierEmulator, plant: Plant, frame: r48.CanFrame, now_s: float) -> list[object]:
    replies = emu.on_frame(plant, frame.arbitration_id, frame.data, now_s)
    return [r48.decode_frame(r.arbitration_id, r.data) for r in replies]


def _stored(voltage_v: float) -> tuple[r48.CanFrame, r48.CanFrame]:
    return (
        r48.encode_voltage(voltage_v, offline=True, cells_in_series=12),
        r48.encode_current_fraction(0.10, offline=True),
    )


def test_refuses_stored_fault_answers_stored_writes_with_an_error() -> None:
    plant, emu = _plant(), RectifierEmulator()
    plant.inject(faults.RectifierRefusesStored(), 0.0)
    for frame in _stored(46.8):
        (reply,) = _send(emu, plant, frame, 1.0)
        assert isinstance(reply, r48.ErrorReply)
        assert reply.error_name == "invalid_data"
    assert plant.rectifier.offline_voltage_v == 53.5  # unchanged
    (ack,) = _send(emu, plant, r48.encode_voltage(46.8), 1.0)  # online writes still work
    assert isinstance(ack, r48.WriteAck)
    plant.clear_faults("rectifier_refuses_stored", now_s=2.0)
    assert all(
        isinstance(r, r48.WriteAck) for f in _stored(46.8) for r in _send(emu, plant, f, 3.0)
    )
    assert plant.rectifier.offline_voltage_v == pytest.approx(46.8)


def test_refuses_stored_below_48_v_is_the_older_r48_variant() -> None:
    plant, emu = _plant(), RectifierEmulator()
    plant.inject(faults.RectifierRefusesStored(below_v=48.0), 0.0)
    voltage, current = _stored(46.8)
    assert isinstance(_send(emu, plant, voltage, 1.0)[0], r48.ErrorReply)
    assert isinstance(_send(emu, plant, current, 1.0)[0], r48.WriteAck)
    assert isinstance(_send(emu, plant, _stored(48.0)[0], 1.0)[0], r48.WriteAck)


def test_over_current_fault_delivers_above_the_limit_and_reports_it() -> None:
    plant, emu = _plant(), RectifierEmulator()
    fraction = 10.0 / 62.5 * 1.21  # 10 A
    for frame in (
        r48.encode_voltage(50.0),
        r48.encode_current_fraction(fraction),
        r48.encode_control(r48.Control(dc_off=False)),
    ):
        _send(emu, plant, frame, 0.0)
    plant.step(20.0)
    assert plant.charger_current_a == pytest.approx(10.0, abs=0.3)
    plant.inject(faults.RectifierOverCurrent(extra_a=15.0), 20.0)
    _send(emu, plant, r48.encode_current_fraction(fraction), 20.0)  # refresh keeps it online
    plant.step(25.0)
    assert plant.charger_current_a > 20.0
    (reading,) = _send(emu, plant, r48.encode_read_request(r48.Quantity.OUTPUT_CURRENT), 25.0)
    assert isinstance(reading, r48.Reading)
    assert reading.value == pytest.approx(plant.charger_current_a)
    plant.clear_faults("rectifier_over_current", now_s=25.0)
    plant.step(27.0)
    assert plant.charger_current_a == pytest.approx(10.0, abs=0.3)


def test_contract_faults_map_to_the_plant_faults() -> None:
    plant = _plant()

    def spec(**fields: object) -> SimFault:
        return SimFault.model_validate_json(json.dumps(fields))

    over = contract_fault(spec(kind="rectifier_over_current", value=25), plant, [[1]])
    assert over == faults.RectifierOverCurrent(extra_a=25.0)
    assert contract_fault(spec(kind="rectifier_over_current"), plant, [[1]]) == (
        faults.RectifierOverCurrent(extra_a=20.0)
    )
    every = contract_fault(spec(kind="rectifier_refuses_stored"), plant, [[1]])
    assert every == faults.RectifierRefusesStored()
    low = contract_fault(spec(kind="rectifier_refuses_stored", value=48), plant, [[1]])
    assert low == faults.RectifierRefusesStored(below_v=48.0)
    assert faults.parse_fault(b'{"kind": "rectifier_refuses_stored", "below_v": 48}') == low
