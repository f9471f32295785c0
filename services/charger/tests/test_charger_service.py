"""The charger service on python-can's virtual bus and a real mosquitto."""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import pytest
from pydantic import ValidationError

from gridzero.codec import CodecError
from gridzero.contract import Topics
from gridzero.runtime.freshness import Sequencer
from gridzero.runtime.service import ServiceRunner
from gridzero.testing import Probe, TestBroker, pack_state
from gridzero_charger import codec
from gridzero_charger import service as charger_service
from gridzero_charger.codec import Control, Quantity, Register, SetPoint
from gridzero_charger.domain import TAPER_STEP_V, TAPER_TOLERANCE_A
from gridzero_charger.service import (
    CanSettings,
    Charger,
    ChargerServiceSettings,
)

pytestmark = pytest.mark.broker
T = Topics()
STORED = (Register.OFFLINE_VOLTAGE, Register.OFFLINE_CURRENT)


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


class FakeRectifier:
    """Listens on the virtual bus like an R48: records every frame, answers reads and
    acknowledges writes (echo), or refuses stored writes while ``refuse_stored`` is set."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: list[tuple[float, codec.Message]] = []
        self.refuse_stored = False
        self.silent = False
        self.values = {
            Quantity.OUTPUT_VOLTAGE: 48.0,
            Quantity.OUTPUT_CURRENT: 10.0,
            Quantity.CURRENT_LIMIT: 0.2,
            Quantity.TEMPERATURE: 30.0,
            Quantity.INPUT_VOLTAGE: 230.0,
        }
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _answer(self, message: codec.Message, data: bytes) -> codec.CanFrame | None:
        if isinstance(message, codec.ReadRequest):
            q = message.quantity
            if q is Quantity.STATUS:
                return codec.encode_status({"walk_in_active": True})
            return codec.encode_reading(q, self.values[q])
        if isinstance(message, SetPoint):
            if self.refuse_stored and message.register in STORED:
                return codec.encode_error_reply(0x03, message.register, 0xF3)
            return codec.encode_write_ack(message.register, data)
        return None

    def _run(self) -> None:
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
            reply = self._answer(message, bytes(msg.data))
            if reply is not None and not self.silent:
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
    bms_seq: Sequencer = field(default_factory=Sequencer)
    controller_seq: Sequencer = field(default_factory=Sequencer)

    def limits(
        self,
        *,
        ccl_a: float = 20.0,
        cvl_v: float = 49.2,
        alarms: int = 0,
        clock_offset_s: float = 0.0,
        retain: bool = False,
        pack_voltage_v: float = 47.0,
    ) -> None:
        payload = {
            "ts": time.time() + clock_offset_s,
            "boot": self.bms_seq.boot,
            "seq": self.bms_seq.next(),
            "cvl_v": cvl_v,
            "ccl_a": ccl_a,
            "dcl_a": 50.0,
            "charge_allowed": True,
            "discharge_allowed": True,
            "pack_voltage_v": pack_voltage_v,
            "alarms": [
                {"code": "cell_over_voltage", "message": "cell 3 4.25 V > 4.2 V", "since_ts": 1.0}
            ]
            * alarms,
        }
        self.bms.publish(T.bms_limits, json.dumps(payload), retain=retain)

    def command(self, **fields: float) -> None:
        seq = self.controller_seq
        payload = {"ts": time.time(), "boot": seq.boot, "seq": seq.next(), **fields}
        self.controller.publish(T.charger_set, json.dumps(payload))

    def state(self, predicate: Callable[[dict[str, Any]], bool], **kw: Any) -> dict[str, Any]:
        raw = self.watcher.wait_for(T.charger_state, lambda p: predicate(json.loads(p)), **kw)
        return dict(json.loads(raw))

    def charge(self, *, ccl_a: float = 30.0, current_a: float = 25.0) -> float:
        """Limits and a command that switch DC on; the time DC-on went out."""
        self.limits(ccl_a=ccl_a)
        self.command(current_a=current_a)
        at, _ = self.rectifier.wait_for(is_control(False))
        return at


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

    def make(*, refuse_stored: bool = False, silent: bool = False, **extra: object) -> Rig:
        channel = f"charger-{uuid.uuid4().hex}"
        rectifier = FakeRectifier(channel)
        rectifier.refuse_stored = refuse_stored
        rectifier.silent = silent
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
    # the link is up on the first reply; the power needs its own register's reply too
    state = rig.state(
        lambda s: (
            s["link"] == "ok"
            and s.get("fallback", "confirmed") == "confirmed"
            and s["output_power_w"] is not None
        )
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


def test_a_ccl_falling_in_small_steps_reaches_the_rectifier_at_once(
    rig_factory: Callable[..., Rig],
) -> None:
    """Each decision was compared with the previous decision, not with what was sent: a CCL
    falling by less than ~0.026 A per message was never a change, and the rectifier kept the
    old current until the refresh period (15 s here)."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0, refresh_period_s=15.0)
    on_at = rig.charge(ccl_a=20.0, current_a=25.0)
    ccl_a = 20.0
    for _ in range(25):  # 0.02 A a message, down to 19.5 A
        ccl_a -= 0.02
        rig.limits(ccl_a=ccl_a)
        time.sleep(0.05)
    followed = f32(19.55 / 62.5 * 1.21)

    def follows(m: codec.Message) -> bool:
        return (
            isinstance(m, SetPoint)
            and m.register == Register.ONLINE_CURRENT
            and m.value <= followed
        )

    rig.rectifier.wait_for(follows, timeout_s=2.0, after=on_at)


def test_a_running_charge_tapers_at_constant_voltage_when_the_ccl_falls_below_the_minimum(
    rig_factory: Callable[..., Rig],
) -> None:
    """Near full the bms's CCL falls below the rectifier's ~5.2 A minimum: the output stays
    on at its own voltage of that moment with the least current limit (the pack takes what it
    accepts there), not switched off and on again. A current that stays above the CCL lowers
    the voltage a step; a full pack (CCL 0) ends it."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.rectifier.values[Quantity.OUTPUT_VOLTAGE] = 48.75
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 5.3
    on_at = rig.charge(ccl_a=30.0, current_a=25.0)
    rig.state(lambda s: s["output_voltage_v"] == pytest.approx(48.75))
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 3.9
    rig.limits(ccl_a=4.9, pack_voltage_v=48.6)  # the bms's taper just crossed the minimum
    at, _ = rig.rectifier.wait_for(is_setpoint(Register.ONLINE_VOLTAGE, 48.75), after=on_at)
    state = rig.state(lambda s: s["limit_reason"] == "taper")
    assert state["dc_on"] is True
    assert state["setpoint_voltage_v"] == pytest.approx(48.75)
    rig.rectifier.wait_for(is_setpoint(Register.ONLINE_CURRENT, codec.FRACTION_MIN), after=on_at)
    # the cells even out under the held voltage: the pack's voltage moves, the taper's does
    # not, and the CCL drifts down a little at a time
    for ccl_a in (4.5, 4.1, 3.7, 3.5):
        rig.limits(ccl_a=ccl_a, pack_voltage_v=48.7)
        rig.state(lambda s: s["limit_reason"] == "taper", after=time.monotonic())
    assert not [m for t, m in rig.rectifier.frames if t >= on_at and is_control(True)(m)]
    assert not [
        m
        for t, m in rig.rectifier.frames
        if t >= at
        and isinstance(m, SetPoint)
        and m.register == Register.ONLINE_VOLTAGE
        and m.value > f32(48.75)
    ]
    # more than the tolerance above the CCL (below the over-current trip): a step down
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 3.5 + TAPER_TOLERANCE_A + 0.3
    lower_v = 48.75 - TAPER_STEP_V
    rig.rectifier.wait_for(is_setpoint(Register.ONLINE_VOLTAGE, lower_v), after=at)
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 1.0
    rig.limits(ccl_a=0.0, pack_voltage_v=48.7)
    off_at, _ = rig.rectifier.wait_for(is_control(True), after=at)
    assert rig.state(lambda s: s["dc_on"] is False, after=off_at)["limit_reason"] == "ccl"


def test_a_ccl_that_drops_at_once_during_a_taper_turns_dc_off(
    rig_factory: Callable[..., Rig],
) -> None:
    """A bms derating mid-taper: at the held voltage the current would stay above the new CCL
    until the step-down caught up, and the over-current trip would latch first."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.rectifier.values[Quantity.OUTPUT_VOLTAGE] = 48.75
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 4.9
    on_at = rig.charge(ccl_a=30.0, current_a=25.0)
    rig.state(lambda s: s["output_voltage_v"] == pytest.approx(48.75))
    rig.limits(ccl_a=4.9, pack_voltage_v=48.6)
    rig.state(lambda s: s["limit_reason"] == "taper", after=on_at)
    rig.limits(ccl_a=2.0, pack_voltage_v=48.6)
    off_at, _ = rig.rectifier.wait_for(is_control(True), after=on_at)
    state = rig.state(lambda s: s["dc_on"] is False, after=off_at)
    assert state["limit_reason"] == "below_min_current"


def test_a_stopped_charger_does_not_start_below_the_minimum(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=4.9, pack_voltage_v=48.6)
    rig.command(current_a=25.0)
    state = rig.state(lambda s: s["limit_reason"] == "below_min_current")
    assert state["dc_on"] is False
    assert not [m for _t, m in rig.rectifier.frames if is_control(False)(m)]


def test_bms_silent_turns_dc_off_within_seconds(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=1.0, command_stale_s=60.0, control_period_s=0.2)
    rig.limits(ccl_a=30.0)
    rig.command(current_a=25.0)
    on_at, _ = rig.rectifier.wait_for(is_control(False))
    last_limits_at = time.monotonic()  # the bms says nothing from here on
    off_at, _ = rig.rectifier.wait_for(is_control(True), timeout_s=10.0, after=on_at)
    time_to_safe_s = off_at - last_limits_at
    print(f"bms silent -> DC off after {time_to_safe_s:.2f} s (bms_stale_s=1.0)")
    state = rig.state(lambda s: s["dc_on"] is False, after=off_at)
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


def test_runtime_setting_max_power_clamps(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    ha = own_broker.probe("homeassistant")
    ha.publish(T.setting_set("charger", "max_charge_power_w"), "500")
    ha.wait_for(T.setting("charger", "max_charge_power_w"), lambda p: p == b"500")
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
    assert cmps["power"]["unit_of_measurement"] == "W"
    assert cmps["dc_on"]["p"] == "binary_sensor"
    # the charger's own alarms, the stored fallback's state and the trip's reset button
    assert cmps["alarm"]["p"] == "binary_sensor"
    assert cmps["alarm"]["device_class"] == "problem"
    assert cmps["fallback_problem"]["device_class"] == "problem"
    assert cmps["fallback"]["p"] == "sensor"
    assert cmps["reset_over_current"]["p"] == "button"
    # hardware and chemistry limits are never writable from Home Assistant
    for name in ("offline_voltage_v", "offline_current_fraction", "rated_current_a"):
        assert name not in cmps
    assert "fraction_at_rated" not in cmps


def test_bus_that_is_not_there_yet_is_retried_then_gets_the_safe_defaults(
    own_broker: TestBroker, tmp_path: Path
) -> None:
    from gridzero.runtime.broker import free_port
    from gridzero.runtime.service import ServiceRunner
    from gridzero_charger.service import CanSettings, Charger, ChargerServiceSettings
    from gridzero_tools.sim.canhub import CanHub

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


# --- issue 16: no setting, message, clock or fault may push a cell outside its chemistry --------


def _stream(rig: Rig, seconds: float, *, limits: bool = True) -> None:
    """Fresh limits (unless not wanted) and charge commands for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if limits:
            rig.limits(ccl_a=30.0)
        rig.command(current_a=25.0)
        time.sleep(0.5)  # a command stream, as the controller sends it


def _sent(rig: Rig, register: int) -> list[float]:
    return [
        m.value
        for _, m in rig.rectifier.frames
        if isinstance(m, SetPoint) and m.register == register
    ]


def test_hardware_limits_are_not_writable_over_mqtt(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    """The stored fallback and the current scaling were runtime settings: 58.5 V stored is
    4.875 V per cell, and rated 20 A made CCL 10 A a fraction of 0.605 (~31 A)."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    ha = own_broker.probe("homeassistant")
    for name, value in (
        ("offline_voltage_v", "58.5"),
        ("offline_current_fraction", "1.21"),
        ("fallback_voltage_v", "58.5"),
        ("rated_current_a", "20"),
        ("fraction_at_rated", "0.5"),
        ("cells_in_series", "24"),
    ):
        since = time.monotonic()
        ha.publish(T.setting_set("charger", name), value)
        ack = json.loads(
            ha.wait_for(T.ack("charger"), lambda p, n=name: n.encode() in p, after=since)
        )
        assert ack["ok"] is False, name
        assert "unknown setting" in ack["reason"], name
    rig.limits(ccl_a=10.0)
    rig.command(current_a=50.0)
    rig.rectifier.wait_for(is_control(False))
    assert max(_sent(rig, Register.ONLINE_CURRENT)) <= f32(10.0 / 62.5 * 1.21)
    assert max(_sent(rig, Register.OFFLINE_VOLTAGE)) <= f32(48.0)
    assert max(_sent(rig, Register.OFFLINE_CURRENT)) <= f32(0.10)
    ha.close()


def test_start_up_settings_bound_the_fallback_and_the_scaling(own_broker: TestBroker) -> None:
    mqtt = own_broker.mqtt_settings("charger")
    with pytest.raises(
        ValidationError, match=r"fallback_voltage_v=48.1 V is above 48 V \(12 cells"
    ):
        ChargerServiceSettings(mqtt=mqtt, fallback_voltage_v=48.1)
    ChargerServiceSettings(mqtt=mqtt, fallback_voltage_v=52.0, cells_in_series=13)
    with pytest.raises(ValidationError, match="cells_in_series"):
        ChargerServiceSettings(mqtt=mqtt, cells_in_series=24)
    with pytest.raises(ValidationError, match="fraction_at_rated"):
        ChargerServiceSettings(mqtt=mqtt, fraction_at_rated=0.5)
    with pytest.raises(ValidationError, match="rectifier_model"):
        ChargerServiceSettings(mqtt=mqtt, rectifier_model="R48-1000e3")
    with pytest.raises(ValidationError, match="above the R48-2000e3's rating 2000 W"):
        ChargerServiceSettings(mqtt=mqtt, rectifier_model="R48-2000e3", max_charge_power_w=3000)


def test_runtime_power_may_only_tighten_the_start_up_cap(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    rig_factory(max_charge_power_w=2000.0)
    ha = own_broker.probe("homeassistant")
    ha.wait_for(T.setting("charger", "max_charge_power_w"), lambda p: p == b"2000")
    since = time.monotonic()
    ha.publish(T.setting_set("charger", "max_charge_power_w"), "2500")
    ack = json.loads(ha.wait_for(T.ack("charger"), after=since))
    assert ack["ok"] is False
    assert "above the start-up limit 2000 W" in ack["reason"]
    since = time.monotonic()
    ha.publish(T.setting_set("charger", "max_charge_power_w"), "1500")
    assert json.loads(ha.wait_for(T.ack("charger"), after=since))["ok"] is True
    ha.close()


def test_refused_fallback_write_keeps_dc_off_and_is_retried(
    rig_factory: Callable[..., Rig],
) -> None:
    """Some R48s refuse a stored voltage below 48 V: the charger used to log it and charge."""
    rig = rig_factory(refuse_stored=True, bms_stale_s=10.0, command_stale_s=60.0)
    # fresh inputs for a while: DC stays off (the old code logged the refusal and charged)
    _stream(rig, 2.0)
    assert not any(is_control(False)(m) for _, m in rig.rectifier.frames)
    state = rig.state(lambda s: s.get("fallback") == "refused" and bool(s["alarms"]))
    assert state["dc_on"] is False
    assert state["limit_reason"] == "fallback_unconfirmed"
    assert state["alarms"][0]["code"] == "fallback_unconfirmed"
    assert "refused the stored fallback voltage 46.8" in state["alarms"][0]["message"]
    # the rectifier accepts again: the retry (5 s after the first write) confirms it
    rig.rectifier.refuse_stored = False
    retried_from = time.monotonic()
    while True:
        rig.limits(ccl_a=30.0)
        rig.command(current_a=25.0)
        try:
            rig.rectifier.wait_for(is_control(False), timeout_s=0.5, after=retried_from)
            break
        except TimeoutError:
            assert time.monotonic() - retried_from < 15.0, "no retry confirmed the fallback"
    state = rig.state(lambda s: s["dc_on"] is True)
    assert (state["fallback"], state["alarms"]) == ("confirmed", [])


def test_unanswered_fallback_write_keeps_dc_off(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(silent=True, bms_stale_s=10.0, command_stale_s=60.0)  # no answers
    _stream(rig, 3.0)
    assert not any(is_control(False)(m) for _, m in rig.rectifier.frames)
    state = rig.state(lambda s: s.get("fallback") == "unanswered" and bool(s["alarms"]))
    assert state["dc_on"] is False
    assert "no acknowledgement of the stored fallback" in state["alarms"][0]["message"]


class FlakyRead:
    """The service's CAN read, failing ``failures`` more times, each 0.5 s after the bus
    (re)opened (an adapter whose recv fails while its bus still opens): each failure makes
    the link close and reopen the bus. The 0.5 s let the service act on each open."""

    def __init__(self, read: Callable[[can.BusABC], tuple[int, bytes] | None]) -> None:
        self._read = read
        self._open_s: float | None = None
        self.failures = 0

    def __call__(self, bus: can.BusABC) -> tuple[int, bytes] | None:
        now_s = time.monotonic()
        if self._open_s is None:
            self._open_s = now_s
        if self.failures > 0 and now_s - self._open_s >= 0.5:
            self.failures -= 1
            self._open_s = None
            raise can.CanError("recv failed (test)")
        return self._read(bus)


def test_a_reopened_bus_does_not_write_the_stored_fallback_again(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open used to write the stored fallback (EEPROM, which wears with every write);
    a link that opens but whose reads fail reopens about once a second."""
    flaky = FlakyRead(charger_service._read_frame)
    monkeypatch.setattr(charger_service, "_read_frame", flaky)
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0, refresh_period_s=15.0)
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 0.0  # no trip against the CCL 0 of no limits
    rig.state(lambda s: s.get("fallback") == "confirmed")
    opens_before = sum(is_control(True)(m) for _, m in rig.rectifier.frames)
    flaky.failures = 3
    deadline = time.monotonic() + 10.0
    while sum(is_control(True)(m) for _, m in rig.rectifier.frames) < opens_before + 3:
        assert time.monotonic() < deadline, "the link did not reopen three times"
        time.sleep(0.1)
    # each open still turns DC off; the stored values went out once, at the first open
    assert _sent(rig, Register.OFFLINE_VOLTAGE) == pytest.approx([46.8])
    assert _sent(rig, Register.OFFLINE_CURRENT) == pytest.approx([0.10])
    # the first write's confirmation holds: charging goes on after the reopens
    rig.charge(ccl_a=30.0, current_a=25.0)
    assert rig.state(lambda s: s["dc_on"] is True)["fallback"] == "confirmed"
    assert len(_sent(rig, Register.OFFLINE_VOLTAGE)) == 1


class FailingSend:
    """The service's CAN send, failing the next ``dc_off_failures`` DC-off frames (a full
    transmit queue, an adapter hiccup): the frame never reaches the bus."""

    def __init__(self, send: Callable[[can.Message, can.BusABC], None]) -> None:
        self._send = send
        self.dc_off_failures = 0

    def __call__(self, message: can.Message, bus: can.BusABC) -> None:
        frame = codec.decode_frame(message.arbitration_id, bytes(message.data))
        if self.dc_off_failures > 0 and is_control(True)(frame):
            self.dc_off_failures -= 1
            raise can.CanError("send failed (test)")
        self._send(message, bus)


@pytest.mark.parametrize("stop", ["alarm", "ccl_0", "stale_bms"])
def test_a_failed_dc_off_send_is_retried_at_the_next_tick(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """A failed send was recorded as sent: the DC-off frame went out again only after the
    refresh period (15 s here; 5 s by default)."""
    failing = FailingSend(charger_service._send_message)
    monkeypatch.setattr(charger_service, "_send_message", failing)
    rig = rig_factory(
        bms_stale_s=1.0 if stop == "stale_bms" else 10.0,
        command_stale_s=60.0,
        refresh_period_s=15.0,
    )
    on_at = rig.charge(ccl_a=30.0, current_a=25.0)
    failing.dc_off_failures = 1
    if stop == "alarm":
        rig.limits(ccl_a=30.0, alarms=1)
    elif stop == "ccl_0":
        rig.limits(ccl_a=0.0)
    # stale_bms: no more limits; they go stale 1 s after the last
    off_at, _ = rig.rectifier.wait_for(is_control(True), timeout_s=3.0, after=on_at)
    assert failing.dc_off_failures == 0, "the first DC-off send did not fail"
    print(f"{stop}: DC off on the bus {off_at - on_at:.2f} s after DC on, first send failed")


def test_an_over_current_trip_sends_dc_off_again(rig_factory: Callable[..., Rig]) -> None:
    """Current flowing with DC already off: the trip must say DC off again at once, not at
    the next refresh (15 s here)."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0, refresh_period_s=15.0)
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 0.0
    rig.limits(ccl_a=30.0)
    rig.state(lambda s: s.get("fallback") == "confirmed" and s["limit_reason"] == "stale_command")
    quiet_from = time.monotonic()
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 45.0  # DC is off, yet 45 A flow
    rig.state(lambda s: s["limit_reason"] == "over_current", timeout_s=6.0, after=quiet_from)
    rig.rectifier.wait_for(is_control(True), timeout_s=1.0, after=quiet_from)


def test_rectifier_over_current_trips_latches_and_a_person_resets_it(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0, poll_period_s=0.2)
    on_at = rig.charge(ccl_a=30.0, current_a=25.0)
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 45.0  # 15 A above a 30 A CCL
    over_at = time.monotonic()
    off_at, _ = rig.rectifier.wait_for(is_control(True), after=on_at)
    print(f"rectifier over-current -> DC off after {off_at - over_at:.2f} s (trip after 2 s)")
    state = rig.state(lambda s: s["limit_reason"] == "over_current")
    assert state["dc_on"] is False
    assert state["alarms"][0]["code"] == "over_current_trip"
    assert "rectifier measured 45.0 A, above CCL 30.0 A" in state["alarms"][0]["message"]
    # latched: the current is back to normal and the inputs fresh, DC stays off
    rig.rectifier.values[Quantity.OUTPUT_CURRENT] = 0.0
    rig.limits(ccl_a=30.0)
    rig.command(current_a=25.0)
    rig.state(lambda s: s["output_current_a"] == 0.0 and s["limit_reason"] == "over_current")
    assert not any(is_control(False)(m) for at, m in rig.rectifier.frames if at > off_at)
    # a person resets it (Home Assistant button); charging resumes
    ha = own_broker.probe("homeassistant")
    since = time.monotonic()
    ha.publish(T.action_set("charger", "reset_over_current"), "press")
    assert json.loads(ha.wait_for(T.ack("charger"), after=since))["ok"] is True
    rig.limits(ccl_a=30.0)
    rig.command(current_a=25.0)
    rig.rectifier.wait_for(is_control(False), after=off_at)
    since = time.monotonic()
    ha.publish(T.action_set("charger", "reset_over_current"), "press")
    ack = json.loads(ha.wait_for(T.ack("charger"), after=since))
    assert (ack["ok"], "no over-current trip" in ack["reason"]) == (False, True)
    ha.close()


def test_shunt_over_current_trips_and_survives_a_restart(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    on_at = rig.charge(ccl_a=20.0, current_a=20.0)
    shunt = own_broker.probe("shunt", subscribe=None)
    state = {
        "sensor": "ok", "current_a": 30.0, "power_w": 1440.0, "soc_pct": 50.0,
        "soc_source": "ocv", "remaining_ah": 10.0, "remaining_wh": 480.0,
        "capacity_ah": 20.0, "charge_in_ah": 0.0, "charge_out_ah": 0.0,
        "energy_in_kwh": 0.0, "energy_out_kwh": 0.0, "offset_counts": 0.0, "gain": 1.0,
    }  # fmt: skip
    deadline = time.monotonic() + 10.0
    while not any(is_control(True)(m) for at, m in rig.rectifier.frames if at > on_at):
        shunt.publish(T.shunt_state, json.dumps({**state, "ts": time.time()}))
        rig.limits(ccl_a=20.0)
        time.sleep(0.3)  # the shunt publishes about every second; faster here
        assert time.monotonic() < deadline, "the shunt's 30 A against CCL 20 A did not trip"
    tripped = rig.state(lambda s: s["limit_reason"] == "over_current")
    assert "shunt measured 30.0 A" in tripped["alarms"][0]["message"]
    # a restart is not a person's reset: the trip is saved and still holds DC off
    rig.runner.stop()
    rig.runner.join()
    again = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    again.limits(ccl_a=20.0)
    again.command(current_a=20.0)
    # live only: the first charger's retained state (the trip, confirmed) is on the broker
    restored = again.state(
        lambda s: s.get("fallback") == "confirmed" and bool(s["alarms"]), live_only=True
    )
    assert restored["limit_reason"] == "over_current"
    assert not any(is_control(False)(m) for _, m in again.rectifier.frames)
    shunt.close()


def test_cvl_above_the_pack_ceiling_is_clamped_and_flagged(rig_factory: Callable[..., Rig]) -> None:
    """`layout: series` on a parallel pack: the bms publishes CVL 98.4 V for 12 cells."""
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=20.0, cvl_v=98.4)
    rig.command(current_a=10.0)
    rig.rectifier.wait_for(is_control(False))
    assert max(_sent(rig, Register.ONLINE_VOLTAGE)) <= f32(50.4)
    state = rig.state(lambda s: s["dc_on"] is True and bool(s["alarms"]))
    assert state["setpoint_voltage_v"] == pytest.approx(50.4)
    assert state["alarms"][0]["code"] == "cvl_above_pack_max"


def _pack(cells_in_series: int) -> str:
    return pack_state(cells_in_series=cells_in_series, ts=time.time()).model_dump_json()


def test_a_bms_counting_other_cells_in_series_holds_dc_off(rig_factory: Callable[..., Rig]) -> None:
    """cells_in_series 14 on a 12 S pack stores a 54.6 V fallback, 4.55 V a cell; the
    bms's CVL bounded the charge while this service ran, nothing checked the fallback."""
    rig = rig_factory(
        bms_stale_s=10.0, command_stale_s=60.0, cells_in_series=14, fallback_voltage_v=54.6
    )
    on_at = rig.charge()
    rig.bms.publish(T.bms_pack, _pack(12))
    rig.rectifier.wait_for(is_control(True), after=on_at)
    state = rig.state(lambda s: s["dc_on"] is False and bool(s["alarms"]))
    assert state["limit_reason"] == "cells_mismatch"
    assert state["alarms"][0]["code"] == "cells_mismatch"
    assert "bms counts 12 cells in series" in state["alarms"][0]["message"]
    assert "4.55 V a cell" in state["alarms"][0]["message"]
    # an agreeing pack state releases it
    rig.bms.publish(T.bms_pack, _pack(14))
    rig.limits(ccl_a=30.0, cvl_v=57.4)
    rig.command(current_a=25.0)
    rig.state(lambda s: s["dc_on"] is True and not s["alarms"])


def test_bms_clock_an_hour_ahead_turns_dc_off(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=1.0, command_stale_s=60.0, control_period_s=0.2)
    on_at = rig.charge()
    last_good = time.monotonic()
    deadline = last_good + 10.0
    while not any(is_control(True)(m) for at, m in rig.rectifier.frames if at > on_at):
        rig.limits(ccl_a=30.0, clock_offset_s=3600.0)  # refused: the bms clock is wrong
        time.sleep(0.2)
        assert time.monotonic() < deadline, "limits stamped 1 h ahead kept DC on"
    assert rig.state(lambda s: s["dc_on"] is False, after=on_at)["limit_reason"] == "stale_bms"


def test_bms_clock_ten_seconds_behind_still_charges(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=3.0, command_stale_s=60.0)
    rig.limits(ccl_a=30.0, clock_offset_s=-10.0)
    rig.command(current_a=25.0)
    rig.rectifier.wait_for(is_control(False))
    assert rig.state(lambda s: s["dc_on"] is True)["limit_reason"] == "controller"


def test_retained_limits_after_a_restart_are_not_fresh(
    rig_factory: Callable[..., Rig], own_broker: TestBroker
) -> None:
    bms = own_broker.probe("bms", subscribe=None)
    seq = Sequencer()
    payload = {
        "ts": time.time(), "boot": seq.boot, "seq": seq.next(), "cvl_v": 49.2, "ccl_a": 30.0,
        "dcl_a": 30.0, "charge_allowed": True, "discharge_allowed": True,
        "pack_voltage_v": 47.0, "alarms": [],
    }  # fmt: skip
    bms.publish(T.bms_limits, json.dumps(payload), retain=True)  # from a bms that then died
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    _stream(rig, 3.0, limits=False)
    assert not any(is_control(False)(m) for _, m in rig.rectifier.frames)
    state = rig.state(lambda s: s.get("fallback") == "confirmed")
    assert (state["dc_on"], state["limit_reason"]) == (False, "stale_bms")
    bms.publish(T.bms_limits, b"", retain=True)
    bms.close()


def test_command_stamped_in_the_future_is_refused(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(bms_stale_s=10.0, command_stale_s=60.0)
    rig.limits(ccl_a=30.0)
    seq = rig.controller_seq
    since = time.monotonic()
    future = {"ts": time.time() + 3600, "boot": seq.boot, "seq": seq.next(), "current_a": 20.0}
    rig.controller.publish(T.charger_set, json.dumps(future))
    ack = json.loads(rig.watcher.wait_for(T.ack("charger"), after=since))
    assert ack["ok"] is False
    assert "ahead of this host's clock" in ack["reason"]
    assert rig.state(lambda s: s.get("fallback") == "confirmed")["limit_reason"] == "stale_command"
