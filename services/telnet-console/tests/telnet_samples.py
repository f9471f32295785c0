"""Contract payloads for console tests: a plausible running system (8 modules, one inverter)."""

from __future__ import annotations

from gridzero.contract import (
    Ack,
    Alarm,
    BmsLimits,
    CellRef,
    ChargerState,
    ControllerMode,
    ControllerState,
    InverterState,
    LogRecord,
    ModuleState,
    PackState,
    Payload,
    RawFrame,
    ShuntState,
    Topics,
)
from gridzero_telnet_console.snapshot import Snapshot, ingest

TOPICS = Topics()
TS = 1_700_000_000.0


def controller(mode: ControllerMode = ControllerMode.AUTO) -> ControllerState:
    return ControllerState(
        ts=TS,
        mode=mode,
        grid_w=123.0,
        target_w=0.0,
        setpoint_w=850.0,
        charge_w=850.0,
        discharge_w=0.0,
        state="charging",
        meter_age_s=0.4,
        grid_error_mean_w=3.0,
        grid_error_rms_w=35.0,
        reversals_per_min=0.5,
        rule="window_1",
        rule_why="window 1 00:30-04:30 charge to 80 % at up to 2000 W",
    )


def limits(alarm: bool = False) -> BmsLimits:
    alarms = (
        [Alarm(code="cell_over_voltage", message="cell 0-3-7 4.21 V > 4.20 V", since_ts=TS)]
        if alarm
        else []
    )
    return BmsLimits(
        ts=TS,
        boot="sample",
        seq=1,
        cvl_v=57.6,
        ccl_a=32.0,
        dcl_a=60.0,
        charge_allowed=not alarm,
        discharge_allowed=True,
        pack_voltage_v=52.8,
        reasons=["cell_high"] if alarm else [],
        alarms=alarms,
    )


def pack() -> PackState:
    return PackState(
        ts=TS,
        pack_voltage_v=52.8,
        cell_min=CellRef(bus=0, module=2, cell=7, voltage_v=3.912),
        cell_max=CellRef(bus=1, module=3, cell=1, voltage_v=3.968),
        cell_avg_v=3.94,
        cell_delta_v=0.056,
        temperature_min_c=18.0,
        temperature_max_c=22.5,
        temperature_avg_c=20.1,
        modules_present=8,
        modules_expected=8,
        cells_counted=96,
        cells_expected=96,
        balancing=True,
        balancing_cells=2,
        alarm_text="",
        frames_rx=1000,
        frames_bad=0,
    )


def module(bus: int, number: int) -> ModuleState:
    cells = [3.93 + 0.001 * i for i in range(12)]
    if (bus, number) == (0, 2):
        cells[6] = 3.912
    if (bus, number) == (1, 3):
        cells[0] = 3.968
    return ModuleState(
        ts=TS,
        bus=bus,
        module=number,
        present=True,
        age_s=0.2,
        cells_v=cells,
        temperatures_c=[20.0, 21.0],
        balancing_cells=[3] if number == 1 else [],
    )


def charger() -> ChargerState:
    return ChargerState(
        ts=TS,
        link="ok",
        dc_on=True,
        output_voltage_v=53.1,
        output_current_a=16.0,
        output_power_w=850.0,
        temperature_c=30.0,
        input_voltage_v=230.0,
        setpoint_voltage_v=57.6,
        setpoint_current_a=16.0,
        limit_reason="controller",
    )


def inverter(unit: str = "gti1") -> InverterState:
    return InverterState(
        ts=TS,
        unit=unit,
        demand_w=0.0,
        requested_w=0.0,
        cap_w=900.0,
        cap_reason="dcl",
        link="ok",
        sending=True,
    )


def shunt() -> ShuntState:
    return ShuntState(
        ts=TS,
        sensor="ok",
        current_a=16.0,
        power_w=845.0,
        soc_pct=64.2,
        soc_source="ocv",
        remaining_ah=62.4,
        remaining_wh=3000.0,
        capacity_ah=97.0,
        charge_in_ah=1.0,
        charge_out_ah=2.0,
        energy_in_kwh=10.0,
        energy_out_kwh=9.0,
        offset_counts=0.0,
        gain=1.0,
    )


def log_record(message: str, level: str = "INFO") -> LogRecord:
    return LogRecord(ts=TS, level=level, logger="gridzero.bms", message=message)


def raw_frame() -> RawFrame:
    return RawFrame(ts=TS, link="can0", direction="rx", data_hex="1b0 00 11 22 33 44 55 66 77")


def ack(topic: str, ok: bool, value: str, reason: str = "") -> Ack:
    return Ack(ts=TS, ok=ok, topic=topic, value=value, reason=reason)


def put(snap: Snapshot, topic: str, payload: Payload | str, now_s: float = 100.0) -> bool:
    data = payload.encode() if isinstance(payload, str) else payload.model_dump_json().encode()
    return ingest(snap, TOPICS, topic, data, now_s)


def full_snapshot(now_s: float = 100.0, *, alarm: bool = False) -> Snapshot:
    snap = Snapshot()
    for service in ("bms", "charger", "inverter", "shunt", "controller", "telnet-console"):
        put(snap, TOPICS.status(service), "online", now_s)
    put(snap, TOPICS.controller_state, controller(), now_s)
    put(snap, TOPICS.bms_limits, limits(alarm), now_s)
    put(snap, TOPICS.bms_pack, pack(), now_s)
    for bus in (0, 1):
        for number in (1, 2, 3, 4):
            put(snap, TOPICS.bms_module(bus, number), module(bus, number), now_s)
    put(snap, TOPICS.charger_state, charger(), now_s)
    put(snap, TOPICS.inverter_state("gti1"), inverter(), now_s)
    put(snap, TOPICS.shunt_state, shunt(), now_s)
    put(snap, TOPICS.setting("controller", "mode"), "auto", now_s)
    put(snap, TOPICS.setting("controller", "charge_enabled"), "true", now_s)
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "true", now_s)
    put(snap, TOPICS.setting("controller", "target_grid_w"), "0", now_s)
    put(snap, TOPICS.setting("bms", "mqtt_log_level"), "INFO", now_s)
    put(snap, TOPICS.setting("inverter", "max_power_w", unit="gti1"), "900", now_s)
    return snap
