"""Device emulators: the plant seen through the services' own codecs."""

from __future__ import annotations

import pytest

from gridzero_bms import codec as bms_codec
from gridzero_charger import codec as r48
from gridzero_inverter import codec as soyo
from gridzero_tools.sim.devices.bms import BmsBusEmulator
from gridzero_tools.sim.devices.inverter import InverterEmulator
from gridzero_tools.sim.devices.rectifier import RectifierEmulator
from gridzero_tools.sim.faults import ChargerSilent, ModuleSilent
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile


def _plant() -> Plant:
    return Plant(load_plant("default"), Profile.constant(400.0), seed=4)


def _poll(emu: BmsBusEmulator, plant: Plant, now_s: float) -> list[bms_codec.Frame]:
    out = []
    for arb, data in bms_codec.encode_poll():
        out += emu.on_frame(plant, arb, data, False, now_s)
    decoder = bms_codec.FrameDecoder()
    return [decoder.decode(f.arbitration_id, f.data, f.extended) for f in out]


def test_modules_answer_the_poll_with_plant_cells() -> None:
    plant = _plant()
    plant.step(1.0)
    emu = BmsBusEmulator(bus=1, numbers=(1, 3), first_index=7)
    frames = _poll(emu, plant, 1.0)
    cells = [f for f in frames if isinstance(f, bms_codec.CellVoltageFrame)]
    temps = [f for f in frames if isinstance(f, bms_codec.TemperatureFrame)]
    assert len(cells) == 6
    assert [t.module for t in temps] == [1, 3]
    truth = plant.truth()
    module3 = [mv for f in cells if f.module == 3 for mv in f.cells_mv]
    assert module3 == [round(v * 1000) for v in truth.cell_voltages_v[8]]
    assert temps[0].temperatures_c[0] == pytest.approx(truth.temperatures_c[7], abs=0.5)


def test_silent_module_sends_nothing() -> None:
    plant = _plant()
    plant.inject(ModuleSilent(module=0), 0.0)
    emu = BmsBusEmulator(bus=0, numbers=(1, 2), first_index=0)
    frames = _poll(emu, plant, 0.5)
    assert {f.module for f in frames if isinstance(f, bms_codec.CellVoltageFrame)} == {2}


def test_balance_command_bleeds_cells() -> None:
    plant = _plant()
    emu = BmsBusEmulator(bus=0, numbers=tuple(range(1, 9)), first_index=0)
    for arb, data in bms_codec.encode_balance(2, [1, 10]):
        emu.on_frame(plant, arb, data, True, 1.0)
    assert plant.balancing_cells(1, 1.0) == frozenset({0, 9})
    # 0x08 = 16 minutes (DBC reading of the byte)
    assert plant.balancing_cells(1, 16 * 60 + 0.5) == frozenset({0, 9})
    assert plant.balancing_cells(1, 16 * 60 + 1.5) == frozenset()
    temps = [f for f in _poll(emu, plant, 2.0) if isinstance(f, bms_codec.TemperatureFrame)]
    assert temps[1].balancing_cells == (1, 10)
    for arb, data in bms_codec.encode_balance(2, []):
        emu.on_frame(plant, arb, data, True, 3.0)
    assert plant.balancing_cells(1, 3.0) == frozenset()


def test_rectifier_writes_controls_and_reads() -> None:
    plant = _plant()
    emu = RectifierEmulator()
    frame = r48.encode_voltage(50.5)
    (ack,) = emu.on_frame(plant, frame.arbitration_id, frame.data, 1.0)
    assert isinstance(r48.decode_frame(ack.arbitration_id, ack.data), r48.WriteAck)
    assert plant.rectifier.voltage_setpoint_v(1.0) == 50.5
    # a stored fraction of 0.5, built by hand: the charger's encoder stores only 0.10
    frame = r48.CanFrame(r48.SET_ID, bytes.fromhex("03F000193F000000"))
    emu.on_frame(plant, frame.arbitration_id, frame.data, 1.0)
    assert plant.rectifier.offline_fraction == 0.5
    frame = r48.encode_control(r48.Control(dc_off=False))
    assert emu.on_frame(plant, frame.arbitration_id, frame.data, 1.0) == []
    assert plant.rectifier.dc_on
    frame = r48.encode_read_request(r48.Quantity.CURRENT_LIMIT)
    (reply,) = emu.on_frame(plant, frame.arbitration_id, frame.data, 2.0)
    reading = r48.decode_frame(reply.arbitration_id, reply.data)
    assert isinstance(reading, r48.Reading)
    assert reading.value == pytest.approx(0.5)  # no online current written: offline in force
    frame = r48.encode_read_all_request()
    replies = emu.on_frame(plant, frame.arbitration_id, frame.data, 2.0)
    assert len(replies) == 5


def test_rectifier_silent_hears_nothing() -> None:
    plant = _plant()
    plant.inject(ChargerSilent(), 0.0)
    frame = r48.encode_voltage(50.5)
    assert RectifierEmulator().on_frame(plant, frame.arbitration_id, frame.data, 1.0) == []
    assert plant.rectifier.voltage_setpoint_v(1.0) == 53.5


def test_rectifier_garbage_is_counted() -> None:
    emu = RectifierEmulator()
    assert emu.on_frame(_plant(), 0x123, b"\x01", 0.0) == []
    assert emu.bad_frames == 1


def test_inverter_demand_frames_split_anyhow() -> None:
    plant = _plant()
    emu = InverterEmulator(0, answer_queries=True)
    data = b"\x00\xff" + soyo.encode_demand(600) + soyo.encode_demand(650)
    for i in range(0, len(data), 3):
        emu.on_bytes(plant, data[i : i + 3], 1.0)
    assert emu.demands == 2
    assert plant.inverters[0].demand_w == 650.0
    reply = emu.on_bytes(plant, soyo.encode_query(), 1.5)
    status = soyo.decode_frame(reply)
    assert isinstance(status, soyo.StatusReply)
    assert status.battery_voltage_v == pytest.approx(plant.pack_voltage_v, abs=0.1)
