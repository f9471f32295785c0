"""The shunt service against the real broker, with the ADS1115 model (i2c_bus = sim)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridzero.contract import ShuntState, SimTruth, Topics
from gridzero.errors import SettingsError
from gridzero.runtime.service import ServiceRunner
from gridzero.runtime.settings import load_settings
from gridzero.testing import Probe, TestBroker, pack_state, wait_until
from gridzero_shunt.service import Shunt, ShuntSettings
from gridzero_shunt.soc import soc_window_from_ocv

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
    probe.wait_for(T.setting("shunt", "capacity_ah"), after=begin, live_only=True)
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
    return pack_state(
        cell_v=voltage_v / 12,
        ts=time.time() + clock_offset_s,
        modules_present=9,
        modules_expected=9,
        cells_counted=108,
        cells_expected=108,
    ).model_dump_json()


def state_until(
    probe: Probe,
    predicate: Callable[[ShuntState], bool],
    feed: Callable[[], None] = lambda: None,
    timeout_s: float = 10.0,
) -> ShuntState:
    """Feed inputs until a shunt state published after now satisfies ``predicate``.

    Retained states do not count: the last test's 60 A state once arrived just after the
    probe subscribed and passed for a live one, before the service had seen any current.
    """
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
                live_only=True,
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
    assert disc["cmps"]["dead_band_a"]["max"] == 0.5
    assert disc["cmps"]["soc_full"]["p"] == "button"
    # the measurement's calibration is shown, not settable (issue 16)
    assert disc["cmps"]["zero_offset"]["p"] == "sensor"
    assert disc["cmps"]["current_gain"]["p"] == "sensor"
    for name in ("gain", "invert", "offset_counts"):
        assert name not in disc["cmps"]
    assert running.ctx.handler_errors == 0
    for p in (probe, sim, bms):
        p.close()


def test_a_saturated_adc_reads_at_least_full_scale_and_is_not_counted(
    running: ServiceRunner, broker: TestBroker
) -> None:
    # the saturated ADC published "unavailable", which the bms and the charger take as
    # no measurement: 400 A never tripped their over-current checks.
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe="")
    # 400 A x 0.75 mOhm = 0.3 V > 0.256 V full scale: the ADC clips.
    state = state_until(
        probe,
        lambda s: s.current_a is not None and s.current_a > 300.0,
        lambda: sim.publish(T.sim_truth, truth(400.0)),
    )
    assert state.sensor == "ok"
    assert state.current_a == pytest.approx(32767 / 96, abs=0.05)
    charged_ah = state.charge_in_ah
    # a state published a second later: more saturated blocks in between
    later = state_until(probe, lambda s: s.ts >= state.ts + 1.0)
    assert later.current_a == pytest.approx(32767 / 96, abs=0.05)
    assert later.charge_in_ah == pytest.approx(charged_ah, abs=0.01)  # a bound is not counted
    state = state_until(
        probe,
        lambda s: s.current_a is not None and s.current_a < 0,
        lambda: sim.publish(T.sim_truth, truth(-200.0)),
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
    # published to 10 mA (contract rounding): 0.104 A reads 0.10
    state_until(probe, lambda s: s.current_a is not None and abs(s.current_a - 10 / 96) < 0.006)
    start = time.monotonic()
    ha.publish(T.action_set("shunt", "calibrate_zero"), "press")
    ack = json.loads(
        probe.wait_for(T.ack("shunt"), lambda p: json.loads(p)["value"] == "result", after=start)
    )
    assert ack["ok"] is True, ack
    acks = [json.loads(p) for at, t, p, _r in probe.messages if t == T.ack("shunt") and at >= start]
    assert all(a["ok"] for a in acks)
    state = state_until(probe, lambda s: s.offset_counts == 10.0 and s.current_a == 0.0)
    # kept with the range it was measured at, not as a runtime setting
    assert shunt.ctx.store.get("zero_offset") == {"offset_counts": 10.0, "fsr_v": 0.256}
    assert T.setting("shunt", "offset_counts") not in probe.last
    ha.close()
    probe.close()


def test_refused_settings_and_actions(running: ServiceRunner, broker: TestBroker) -> None:
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe="")
    for topic, payload, reason in (
        (T.setting_set("shunt", "capacity_ah"), "0", "greater than or equal to 1"),
        (T.setting_set("shunt", "capacity_ah"), "-5", "greater than or equal to 1"),
        (T.setting_set("shunt", "gain"), "7", "unknown setting 'gain'"),
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
    assert charged.remaining_ah is not None
    # 0.01 Ah moves SoC by 0.005 %, below its published 0.1 %; the Ah show it
    assert charged.remaining_ah > 220.1 / 2
    runner.stop()
    runner.join()
    stored = json.loads((tmp_path / "shunt.json").read_text())["counter"]
    assert stored["ah_in"] >= charged.charge_in_ah

    again = make_runner(broker, tmp_path)
    again.start_thread()
    try:
        state = state_until(probe, lambda s: s.soc_source == "restored")
        # published rounded down to the mAh: never below what was published before the
        # restart, never above what is stored
        assert charged.charge_in_ah <= state.charge_in_ah <= stored["ah_in"]
        assert state.charge_in_ah == pytest.approx(stored["ah_in"], abs=0.001)
        # published to 0.1 % (contract rounding)
        assert state.soc_pct == pytest.approx(stored["remaining_ah"] / 220.1 * 100, abs=0.05)
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
        wait_until(lambda: "i2c-250" in shunt.adc_loop.open_error, 5, "open error recorded")
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
        assert not shunt.calibration.running
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


# --------------------------------------------------------------------------- issue 16: calibration


def truths_seen(probe: Probe, since: float) -> list[tuple[float, float, bool]]:
    """(arrival, current, retained) of every sim truth the probe saw since ``since``."""
    return [
        (round(at - since, 3), SimTruth.model_validate_json(p).current_a, r)
        for at, t, p, r in list(probe.messages)
        if t == T.sim_truth and at >= since - 2.0
    ]


def echoes_since(probe: Probe, topic: str, since: float) -> list[bytes]:
    return [p for at, t, p, _r in list(probe.messages) if t == topic and at >= since]


@pytest.mark.parametrize(
    ("name", "value"),
    [("gain", "0.5"), ("invert", "true"), ("offset_counts", "900"), ("offset_counts", "20")],
)
def test_home_assistant_cannot_change_the_measured_current(
    running: ServiceRunner, broker: TestBroker, name: str, value: str
) -> None:
    """The bms and the charger trip on this current: a gain of 0.5 would halve it (trips at
    twice the limit), invert would show charging as discharging, an offset would hide it.
    Before issue 16 all three were runtime settings Home Assistant could write."""
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe=None)
    ha = broker.probe("homeassistant", subscribe=None)
    try:
        feed = lambda: sim.publish(T.sim_truth, truth(60.0))  # noqa: E731
        state_until(probe, lambda s: s.current_a is not None and abs(s.current_a - 60) < 0.05, feed)
        topic = T.setting_set("shunt", name)
        since = time.monotonic()
        ha.publish(topic, value)
        ack = json.loads(
            probe.wait_for(T.ack("shunt"), lambda p: json.loads(p)["topic"] == topic, after=since)
        )
        assert ack["ok"] is False
        assert f"unknown setting {name!r}" in ack["reason"]
        # three states published after the refusal: still 60 A, never echoed
        after = time.monotonic()
        after_wall = time.time()  # a state retained by an earlier test must not count
        for _ in range(3):
            state = state_until(
                probe, lambda s: s.current_a is not None and s.ts >= after_wall, feed
            )
            assert state.current_a == pytest.approx(60.0, abs=0.05), truths_seen(probe, after)
            assert state.gain == 1.0
            assert state.offset_counts == 0.0
        assert after > since
        assert echoes_since(probe, T.setting("shunt", name), since) == []
    finally:
        for p in (probe, sim, ha):
            p.close()


def test_a_dead_band_that_could_hide_a_current_is_refused(
    running: ServiceRunner, broker: TestBroker
) -> None:
    """dead_band_a stays a runtime setting, bounded to 0.5 A (was 5 A: with a charge limit
    of 0 A, below 0 degC, 4.9 A of charging read as 0)."""
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe=None)
    try:
        since = time.monotonic()
        ha.publish(T.setting_set("shunt", "dead_band_a"), "4.9")
        ack = json.loads(probe.wait_for(T.ack("shunt"), after=since))
        assert ack["ok"] is False
        assert "less than or equal to 0.5" in ack["reason"]
        since = time.monotonic()
        ha.publish(T.setting_set("shunt", "dead_band_a"), "0.5")
        ack = json.loads(probe.wait_for(T.ack("shunt"), after=since))
        assert ack["ok"] is True, ack
        shunt = running.service
        assert isinstance(shunt, Shunt)
        wait_until(lambda: shunt.current_settings.dead_band_a == 0.5, 5, "dead band in force")
    finally:
        ha.close()
        probe.close()


@pytest.mark.parametrize(
    ("extra", "truth_a", "reads_a"),
    [({"invert": True}, 40.0, -40.0), ({"gain": 1.05}, 40.0, 42.0), ({"gain": 0.95}, -40, -38)],
    ids=["invert", "gain-1.05", "gain-0.95"],
)
def test_sign_and_gain_are_start_up_settings(
    broker: TestBroker, tmp_path: Path, extra: dict[str, object], truth_a: float, reads_a: float
) -> None:
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe=None)
    runner = make_runner(broker, tmp_path, **extra)
    start(runner, broker)
    try:
        state = state_until(
            probe,
            lambda s: s.current_a is not None and abs(s.current_a - reads_a) < 0.05,
            lambda: sim.publish(T.sim_truth, truth(truth_a)),
        )
        assert state.gain == extra.get("gain", 1.0)
    finally:
        runner.stop()
        runner.join()
        probe.close()
        sim.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gain": 0.5}, r"gain \(GRIDZERO_GAIN\) = 0\.5: Input should be greater than or equal to 0\.95"),
        ({"gain": 2.0}, r"gain \(GRIDZERO_GAIN\) = 2\.0: Input should be less than or equal to 1\.05"),
        ({"invert": "maybe"}, r"invert \(GRIDZERO_INVERT\) = 'maybe': Input should be a valid boolean"),
        ({"max_offset_uv": 400}, r"max_offset_uv \(GRIDZERO_MAX_OFFSET_UV\) = 400: .*less than or equal to 375"),
        ({"max_offset_uv": 0}, r"max_offset_uv \(GRIDZERO_MAX_OFFSET_UV\) = 0: .*greater than 0"),
    ],
)  # fmt: skip
def test_bad_calibration_start_settings(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(ShuntSettings, None, data_dir=tmp_path, **overrides)


def test_a_calibration_beyond_the_offset_bound_is_refused(
    broker: TestBroker, tmp_path: Path
) -> None:
    """max_offset_uv 100 uV = 12.8 counts: a 20-count 'offset' (0.21 A flowing) is refused."""
    probe = broker.probe("operator")
    ha = broker.probe("homeassistant", subscribe=None)
    runner = make_runner(broker, tmp_path, max_offset_uv=100)
    start(runner, broker)
    try:
        shunt = runner.service
        assert isinstance(shunt, Shunt)
        assert shunt.model is not None
        shunt.model.input_v = 20 * 0.256 / 32768
        state_until(probe, lambda s: s.current_a is not None and abs(s.current_a - 20 / 96) < 0.01)
        since = time.monotonic()
        ha.publish(T.action_set("shunt", "calibrate_zero"), "press")
        ack = json.loads(
            probe.wait_for(
                T.ack("shunt"), lambda p: json.loads(p)["value"] == "result", after=since
            )
        )
        assert ack["ok"] is False
        assert "exceeds +-12.8 counts" in ack["reason"]
        assert shunt.offset_counts == 0.0
        assert shunt.ctx.store.get("zero_offset") is None
    finally:
        runner.stop()
        runner.join()
        ha.close()
        probe.close()


def write_state(data_dir: Path, saved: dict[str, object]) -> None:
    (data_dir / "shunt.json").write_text(json.dumps({"settings": saved}))


def test_saved_sign_and_gain_of_an_older_version_are_ignored(
    broker: TestBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file from before issue 16 (gain 0.5, invert, a 900-count offset, a 3 A dead
    band) starts the service: the runtime values that remain are restored, the sign and gain
    are the start-up ones (logged as errors), the offset and dead band out of bounds are not."""
    write_state(
        tmp_path,
        {"capacity_ah": 100.0, "gain": 0.5, "invert": True, "offset_counts": 900, "dead_band_a": 3},
    )
    probe = broker.probe("operator")
    sim = broker.probe("sim", subscribe=None)
    caplog.set_level("INFO")
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    try:
        state = state_until(
            probe,
            lambda s: s.current_a is not None and abs(s.current_a - 50) < 0.05,
            lambda: sim.publish(T.sim_truth, truth(50.0)),
        )
        assert state.capacity_ah == 100.0
        assert (state.gain, state.offset_counts) == (1.0, 0.0)
        shunt = runner.service
        assert isinstance(shunt, Shunt)
        assert shunt.current_settings.invert is False
        assert shunt.runtime.value.dead_band_a == 0.05
        assert shunt.ctx.store.get("settings") == {"capacity_ah": 100.0, "dead_band_a": 3}
        text = caplog.text
        assert "saved runtime setting gain=0.5 ignored: gain is a start-up setting now" in text
        assert "saved runtime setting invert=True ignored" in text
        assert "GRIDZERO_INVERT" in text
        assert "saved runtime offset_counts 900 is not a number within +-48 counts" in text
    finally:
        runner.stop()
        runner.join()
        probe.close()
        sim.close()


def test_a_plausible_saved_offset_of_an_older_version_is_kept(
    broker: TestBroker, tmp_path: Path
) -> None:
    write_state(tmp_path, {"offset_counts": 10.0})
    probe = broker.probe("operator")
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    try:
        shunt = runner.service
        assert isinstance(shunt, Shunt)
        assert shunt.model is not None
        shunt.model.input_v = 10 * 0.256 / 32768
        state = state_until(probe, lambda s: s.current_a == 0.0 and s.offset_counts == 10.0)
        assert state.sensor == "ok"
        assert shunt.ctx.store.get("zero_offset") == {"offset_counts": 10.0, "fsr_v": 0.256}
        assert shunt.ctx.store.get("settings") == {}
    finally:
        runner.stop()
        runner.join()
        probe.close()


def test_a_saved_offset_from_another_adc_range_is_not_used(
    broker: TestBroker, tmp_path: Path
) -> None:
    (tmp_path / "shunt.json").write_text(
        json.dumps({"zero_offset": {"offset_counts": 10.0, "fsr_v": 0.512}})
    )
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    try:
        shunt = runner.service
        assert isinstance(shunt, Shunt)
        assert shunt.offset_counts == 0.0
    finally:
        runner.stop()
        runner.join()


def test_retained_echoes_of_the_former_settings_are_cleared(
    broker: TestBroker, tmp_path: Path
) -> None:
    """An older version left gridzero/shunt/settings/gain = 0.5 retained: it is cleared, so
    Home Assistant and the console no longer show a gain that is not in force."""
    old = broker.probe("shunt", subscribe=None)
    for name, value in (("gain", "0.5"), ("invert", "true"), ("offset_counts", "900")):
        old.publish(T.setting("shunt", name), value, retain=True)
    old.close()
    runner = make_runner(broker, tmp_path)
    start(runner, broker)
    try:
        for name in ("gain", "invert", "offset_counts"):
            topic = T.setting("shunt", name)

            def cleared(topic: str = topic) -> bool:
                late = broker.probe("operator", subscribe=topic)
                try:
                    time.sleep(0.3)
                    return not any(p for _at, t, p, _r in list(late.messages) if t == topic)
                finally:
                    late.close()

            wait_until(cleared, 10, f"{topic} cleared")
    finally:
        runner.stop()
        runner.join()
        cleanup = broker.probe("shunt", subscribe=None)
        for name in ("gain", "invert", "offset_counts"):
            cleanup.publish(T.setting("shunt", name), b"", retain=True)
        cleanup.close()
