"""The shunt service against the real broker, with the ADS1115 model (i2c_bus = sim)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridzero.contract import CellRef, PackState, ShuntState, SimTruth, Topics
from gridzero.errors import SettingsError
from gridzero.runtime.service import ServiceRunner
from gridzero.runtime.settings import load_settings
from gridzero.services.shunt.service import Shunt, ShuntSettings
from gridzero.services.shunt.soc import soc_window_from_ocv
from gridzero.testing import Probe, TestBroker, wait_until

pytestmark = pytest.mark.broker
T = Topics()


def make_runner(broker: TestBroker, data_dir: Path, **extra: object) -> ServiceRunner:
    settings = ShuntSettings(
        mqtt=broker.mqtt_settings("shunt"),
        data_dir=data_dir,
        store_flush_s=0.2,
        **{"publish_s": 0.25, "i2c_bus": "sim", **extra},  # type: ignore[arg-type]
    )
    return ServiceRunner(Shunt, settings)


def start(runner: ServiceRunner, broker: TestBroker) -> None:
    """Start and wait for the settings echo: the broker has then seen the subscriptions too."""
    probe = broker.probe("operator")
    begin = time.monotonic()
    runner.start_thread()
    probe.wait_for(T.setting("shunt", "capacity_ah"), after=begin)
    probe.close()


@pytest.fixture
def running(broker: TestBroker, tmp_path: Path) -> Iterator[ServiceRunner]:
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    yield runner
    runner.stop()
    runner.join()


def truth(current_a: float) -> str:
    return SimTruth(
        ts=time.time(),
        soc_pct=50,
        pack_voltage_v=48.0,
        current_a=current_a,
        cell_min_v=3.9,
        cell_max_v=4.0,
        cells_v=[[4.0] * 12],
        temperatures_c=[20.0],
        load_w=0,
        pv_w=0,
        grid_w=0,
        inverter_w=[0.0],
        charger_ac_w=0,
        charger_dc_a=0,
    ).model_dump_json()


def pack(voltage_v: float = 48.0, clock_offset_s: float = 0.0) -> str:
    cell = CellRef(bus=0, module=1, cell=1, voltage_v=voltage_v / 12)
    return PackState(
        ts=time.time() + clock_offset_s,
        pack_voltage_v=voltage_v,
        cell_min=cell,
        cell_max=cell,
        cell_avg_v=voltage_v / 12,
        cell_delta_v=0.0,
        temperature_min_c=20,
        temperature_max_c=20,
        temperature_avg_c=20,
        modules_present=9,
        modules_expected=9,
        cells_counted=108,
        cells_expected=108,
        balancing=False,
        balancing_cells=0,
        alarm_text="",
        frames_rx=1,
        frames_bad=0,
    ).model_dump_json()


def state_until(
    probe: Probe,
    predicate: Callable[[ShuntState], bool],
    feed: Callable[[], None] = lambda: None,
    timeout_s: float = 10.0,
) -> ShuntState:
    """Feed inputs until a shunt state (published after now) satisfies ``predicate``."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        feed()
        try:
            payload = probe.wait_for(
                T.shunt_state,
                lambda p: predicate(ShuntState.model_validate_json(p)),
                timeout_s=0.5,
                after=start,
            )
            return ShuntState.model_validate_json(payload)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_sim_current_power_and_discovery(running: ServiceRunner, broker: TestBroker) -> None:
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe="")
    bms = broker.probe("bms", subscribe="")

    def feed() -> None:
        sim.publish(T.sim_truth, truth(50.0))
        bms.publish(T.bms_pack, pack(48.0))

    state = state_until(
        probe,
        lambda s: (
            s.current_a is not None and abs(s.current_a - 50) < 0.05 and s.power_w is not None
        ),
        feed,
    )
    assert state.sensor == "ok"
    assert state.power_w == pytest.approx(2400, abs=5)
    disc = json.loads(probe.wait_for("homeassistant/device/gridzero_shunt/config"))
    assert disc["cmps"]["energy_in"]["state_class"] == "total_increasing"
    assert disc["cmps"]["energy_in"]["unit_of_measurement"] == "kWh"
    assert disc["cmps"]["capacity_ah"]["p"] == "number"
    assert disc["cmps"]["soc_full"]["p"] == "button"
    assert running.ctx.handler_errors == 0
    for p in (probe, sim, bms):
        p.close()


def test_saturated_adc_makes_the_sensor_unavailable(
    running: ServiceRunner, broker: TestBroker
) -> None:
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe="")
    # 400 A x 0.75 mOhm = 0.3 V > 0.256 V full scale: the ADC clips.
    state = state_until(
        probe, lambda s: s.sensor == "unavailable", lambda: sim.publish(T.sim_truth, truth(400.0))
    )
    assert state.current_a is None
    assert state.power_w is None
    state = state_until(
        probe, lambda s: s.sensor == "ok", lambda: sim.publish(T.sim_truth, truth(-200.0))
    )
    assert state.current_a == pytest.approx(-200.0, abs=0.05)
    probe.close()
    sim.close()


def test_soc_full_and_zero_calibration(running: ServiceRunner, broker: TestBroker) -> None:
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe="")
    state = state_until(
        probe,
        lambda s: s.soc_pct == 100.0,
        lambda: ha.publish(T.action_set("shunt", "soc_full"), "press"),
    )
    assert state.soc_source == "set"
    # A 10-count offset in the "hardware" (0.1 A, outside the 0.05 A dead band);
    # no truth messages in this test, so nothing overwrites it.
    shunt = running.service
    assert isinstance(shunt, Shunt)
    assert shunt.model is not None
    shunt.model.input_v = 10 * 0.256 / 32768
    state_until(probe, lambda s: s.current_a is not None and abs(s.current_a - 10 / 96) < 0.002)
    start = time.monotonic()
    ha.publish(T.action_set("shunt", "calibrate_zero"), "press")
    probe.wait_for(T.setting("shunt", "offset_counts"), lambda p: p == b"10", after=start)
    acks = [json.loads(p) for at, t, p, _r in probe.messages if t == T.ack("shunt") and at >= start]
    assert acks
    assert all(a["ok"] for a in acks)
    state = state_until(probe, lambda s: s.offset_counts == 10.0 and s.current_a == 0.0)
    ha.close()
    probe.close()


def test_refused_settings_and_actions(running: ServiceRunner, broker: TestBroker) -> None:
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe="")
    for topic, payload, reason in (
        (T.setting_set("shunt", "capacity_ah"), "0", "greater than or equal to 1"),
        (T.setting_set("shunt", "capacity_ah"), "-5", "greater than or equal to 1"),
        (T.setting_set("shunt", "gain"), "7", "less than or equal to 2"),
        (T.action_set("shunt", "set_soc"), "150", "outside 0..100"),
        (T.action_set("shunt", "set_soc"), "full", "takes a number"),
    ):
        start = time.monotonic()
        ha.publish(topic, payload)
        ack = json.loads(probe.wait_for(T.ack("shunt"), after=start))
        assert ack["ok"] is False, topic
        assert reason in ack["reason"]
    shunt = running.service
    assert isinstance(shunt, Shunt)
    assert shunt.runtime.value.capacity_ah == pytest.approx(220.1)
    ha.close()
    probe.close()


def test_counters_continue_after_restart(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe="")
    ha = broker.probe("homeassistant", subscribe="")
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    state_until(
        probe,
        lambda s: s.soc_pct == 50.0,
        lambda: ha.publish(T.action_set("shunt", "set_soc"), "50"),
    )
    charged = state_until(
        probe, lambda s: s.charge_in_ah > 0.01, lambda: sim.publish(T.sim_truth, truth(100.0))
    )
    assert charged.soc_pct is not None
    assert charged.soc_pct > 50.0
    runner.stop()
    runner.join()
    stored = json.loads((tmp_path / "shunt.json").read_text())["counter"]
    assert stored["ah_in"] >= charged.charge_in_ah

    again = make_runner(broker, tmp_path)
    again.start_thread()
    try:
        state = state_until(probe, lambda s: s.soc_source == "restored")
        assert state.charge_in_ah >= stored["ah_in"]
        assert state.soc_pct == pytest.approx(stored["remaining_ah"] / 220.1 * 100, abs=0.01)
    finally:
        again.stop()
        again.join()
    for p in (probe, sim, ha):
        p.close()


def test_missing_device_is_unavailable_and_retried(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe("operator")
    runner = make_runner(broker, tmp_path, i2c_bus=250, retry_s=0.5)
    runner.start_thread()
    try:
        state = state_until(probe, lambda s: s.sensor == "unavailable")
        assert state.current_a is None
        shunt = runner.service
        assert isinstance(shunt, Shunt)
        wait_until(lambda: "i2c-250" in shunt.open_error, 5, "open error recorded")
        assert runner.ctx.handler_errors == 0
    finally:
        runner.stop()
        runner.join()
    probe.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"capacity_ah": 0}, "capacity_ah"),
        ({"capacity_ah": -20}, "capacity_ah"),
        ({"fsr_v": 0.3}, "must be one of 6.144"),
        ({"data_rate_sps": 100}, "must be one of 8, 16"),
        ({"address": 0x50}, "address"),
        ({"single_shot": True, "data_rate_sps": 8}, "block too long"),
        ({"i2c_bus": "simulator"}, "i2c_bus"),
        ({"empty_cell_v": 3.6, "full_cell_v": 3.5}, "must be below full_cell_v"),
    ],
)
def test_bad_start_settings(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(ShuntSettings, None, data_dir=tmp_path, **overrides)


def test_soc_from_voltage_uses_the_lowest_cell(running: ServiceRunner, broker: TestBroker) -> None:
    probe = broker.probe("operator")
    bms = broker.probe("bms", subscribe=None)
    ha = broker.probe("homeassistant", subscribe=None)
    shunt = running.service
    assert isinstance(shunt, Shunt)
    expected = soc_window_from_ocv(3.8, shunt.counter.settings) * 100.0
    state = state_until(
        probe,
        lambda s: (
            s.soc_source == "ocv" and s.soc_pct is not None and abs(s.soc_pct - expected) < 0.2
        ),
        lambda: (
            bms.publish(T.bms_pack, pack(45.6)),
            ha.publish(T.action_set("shunt", "soc_from_voltage"), "press"),
        ),
    )
    assert 5 < (state.soc_pct or 0) < 95
    for p in (probe, bms, ha):
        p.close()


def test_soc_from_voltage_without_cells_is_refused(broker: TestBroker, tmp_path: Path) -> None:
    bms = broker.probe("bms", subscribe=None)
    bms.publish(T.bms_pack, b"", retain=True)  # no retained pack left by other tests
    bms.close()
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe=None)
    since = time.monotonic()
    ha.publish(T.action_set("shunt", "soc_from_voltage"), "press")
    ack = json.loads(probe.wait_for(T.ack("shunt"), after=since))
    assert ack["ok"] is False
    assert "no fresh cell voltages" in ack["reason"]
    for p in (probe, ha):
        p.close()
    runner.stop()
    runner.join()


# --------------------------------------------------------------------------- issue 22 item 1


def test_a_retained_button_press_does_not_reapply_after_restart(
    broker: TestBroker, tmp_path: Path
) -> None:
    """A retained ``set_soc 20`` (and ``calibrate_zero``) is refused when the broker replays
    it to the restarted service: the SoC stays where it was set since."""
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe="")
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    again: ServiceRunner | None = None
    try:
        # a live subscriber gets a retained publication as a live one: applied once
        state_until(
            probe,
            lambda s: s.soc_pct == 20.0,
            lambda: ha.publish(T.action_set("shunt", "set_soc"), "20", retain=True),
        )
        state_until(
            probe,
            lambda s: s.soc_pct == 60.0,
            lambda: ha.publish(T.action_set("shunt", "set_soc"), "60"),
        )
        runner.stop()
        runner.join()
        ha.publish(T.action_set("shunt", "calibrate_zero"), "press", retain=True)
        since = time.monotonic()
        again = make_runner(broker, tmp_path)
        start(again, broker)
        for name in ("set_soc", "calibrate_zero"):
            ack = json.loads(
                probe.wait_for(
                    T.ack("shunt"),
                    lambda p, n=name: json.loads(p)["topic"] == T.action_set("shunt", n),
                    after=since,
                )
            )
            assert ack["ok"] is False
            assert "retained" in ack["reason"]
        state = state_until(probe, lambda s: s.soc_source == "restored")
        assert state.soc_pct == pytest.approx(60.0, abs=0.1)
        shunt = again.service
        assert isinstance(shunt, Shunt)
        assert shunt.calibration is None
    finally:
        for name in ("set_soc", "calibrate_zero"):
            ha.publish(T.action_set("shunt", name), b"", retain=True)
        if again is not None:
            again.stop()
            again.join()
        ha.close()
        probe.close()


# --------------------------------------------------------------------------- issue 16 item 10


@pytest.mark.parametrize(
    ("retain", "clock_offset_s", "fresh"),
    [(True, 0.0, False), (False, 3600.0, False), (False, -10.0, True)],
    ids=["retained", "bms-clock-1h-ahead", "bms-clock-10s-behind"],
)
def test_pack_data_fresh_by_arrival(
    broker: TestBroker, tmp_path: Path, retain: bool, clock_offset_s: float, fresh: bool
) -> None:
    """Pack data counts from its arrival: a retained pack (of a dead bms) is not fresh, one
    stamped in the future is refused, one stamped 10 s ago (a slow clock) is used."""
    bms = broker.probe("bms", subscribe=None)
    if retain:
        bms.publish(T.bms_pack, pack(45.6), retain=True)
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe=None)
    try:
        if not retain:
            bms.publish(T.bms_pack, pack(45.6, clock_offset_s))
            shunt = runner.service
            assert isinstance(shunt, Shunt)
            wait_until(
                lambda: shunt.pack is not None or shunt.pack_gate.refused > 0, 5, "pack handled"
            )
        since = time.monotonic()
        ha.publish(T.action_set("shunt", "soc_from_voltage"), "press")
        ack = json.loads(probe.wait_for(T.ack("shunt"), after=since))
        assert ack["ok"] is fresh, ack
    finally:
        bms.publish(T.bms_pack, b"", retain=True)
        for p in (bms, probe, ha):
            p.close()
        runner.stop()
        runner.join()
