"""The runtime against a real mosquitto started from the project's own config."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gridzero.contract import Topics
from gridzero.runtime.broker import PROJECT_CONFIG_DIR
from gridzero.runtime.service import RESTART_EXIT_CODE, ServiceRunner
from gridzero.testing import Probe, TestBroker, wait_until

from .example_service import ExampleService, ExampleSettings

pytestmark = pytest.mark.broker
T = Topics()
EXAMPLE = Path(__file__).with_name("example_service.py")


def make_runner(broker: TestBroker, data_dir: Path, **extra: object) -> ServiceRunner:
    settings = ExampleSettings(
        mqtt=broker.mqtt_settings("controller"), data_dir=data_dir, store_flush_s=0.2, **extra
    )
    return ServiceRunner(ExampleService, settings)


@pytest.fixture
def running(broker: TestBroker, tmp_path: Path) -> Iterator[ServiceRunner]:
    runner = make_runner(broker, tmp_path)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    yield runner
    runner.stop()
    runner.join()


def test_status_online_then_stopped_on_clean_exit(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe()
    runner = make_runner(broker, tmp_path)
    runner.start_thread()
    probe.wait_for(T.status("controller"), lambda p: p == b"online", live_only=True)
    start = time.monotonic()
    runner.stop()
    runner.join(2.0)
    probe.wait_for(T.status("controller"), lambda p: p == b"stopped", after=start)
    probe.close()


def test_anonymous_client_is_refused(broker: TestBroker) -> None:
    probe = Probe.connect(broker.host, broker.port, subscribe=None, timeout_s=2)
    wait_until(lambda: probe.connect_rc is not None, 5, "CONNACK")
    assert probe.connect_rc != 0
    assert not probe.connected.is_set()
    probe.close()


def test_wrong_password_is_refused(broker: TestBroker) -> None:
    probe = Probe.connect(
        broker.host, broker.port, "bms", "not-the-password", subscribe=None, timeout_s=2
    )
    wait_until(lambda: probe.connect_rc is not None, 5, "CONNACK")
    assert probe.connect_rc != 0
    probe.close()


def _denied(broker: TestBroker, user: str, topic: str) -> bool:
    """Publish as ``user`` to ``topic`` then to a topic it may write; a denied first message never arrives.

    Mosquitto drops an unauthorised publish silently (MQTT 3.1.1), so the proof is
    ordering: the allowed marker sent after it arrives, the denied message does not.
    """
    watcher = broker.probe("operator")
    sender = broker.probe(user, subscribe=None)
    marker = T.status(user) if user not in ("homeassistant", "meter", "operator") else None
    token = f"probe-{time.monotonic_ns()}"
    sender.publish(topic, token)
    if marker is None:
        marker = "meterbox/grid" if user == "meter" else T.setting_set("controller", "marker")
    sender.publish(marker, token)
    watcher.wait_for(marker, lambda p: p == token.encode())
    seen = any(t == topic and p == token.encode() for _a, t, p, _r in watcher.messages)
    sender.close()
    watcher.close()
    return not seen


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("bms", "gridzero/charger/state"),
        ("bms", "gridzero/charger/set"),
        ("charger", "gridzero/charger/set"),
        ("charger", "gridzero/bms/limits"),
        ("inverter", "gridzero/inverter/u1/set"),
        ("shunt", "gridzero/controller/state"),
        ("homeassistant", "gridzero/charger/set"),
        ("homeassistant", "gridzero/bms/limits"),
        ("meter", "gridzero/inverter/u1/set"),
        ("telnet-console", "gridzero/charger/set"),
        ("sim", "gridzero/bms/limits"),
    ],
)
def test_acl_denies_writing_other_services_topics(
    broker: TestBroker, user: str, topic: str
) -> None:
    assert _denied(broker, user, topic)


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("controller", "gridzero/charger/set"),
        ("controller", "gridzero/inverter/u1/set"),
        ("bms", "gridzero/bms/limits"),
        ("homeassistant", "gridzero/controller/settings/target_w/set"),
    ],
)
def test_acl_allows_own_topics(broker: TestBroker, user: str, topic: str) -> None:
    assert not _denied(broker, user, topic)


def test_runtime_setting_accepted_echoed_persisted(broker: TestBroker, tmp_path: Path) -> None:
    runner = make_runner(broker, tmp_path)
    ha = broker.probe("homeassistant")
    runner.start_thread()
    # subscribed for sure (a retained echo of an earlier test could pass for its own)
    assert runner.ctx.conn.wait_connected(10)
    since = time.monotonic()
    ha.publish(T.setting_set("controller", "target_w"), "250")
    ha.wait_for(T.setting("controller", "target_w"), lambda p: p == b"250", after=since)
    ack = json.loads(ha.wait_for(T.ack("controller"), after=since))
    assert ack["ok"] is True
    runner.stop()
    runner.join()
    stored = json.loads((tmp_path / "controller.json").read_text())
    assert stored["settings"]["target_w"] == 250
    # a restart restores it
    again = make_runner(broker, tmp_path)
    assert again.service is not None
    again.service.start()
    assert again.service.runtime.value.target_w == 250  # type: ignore[attr-defined]
    ha.close()


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("target_w", "5000", "less than or equal to 1000"),
        ("target_w", "banana", "valid number"),
        ("target_w", "nan", "not a finite number"),
        ("mode", "turbo", "'auto' or 'hold'"),
        # a switch's ON/true sent to a number setting was taken as 1 (1 A, 1 W)
        ("target_w", "ON", "target_w is not a true/false setting: 'ON' refused"),
        ("target_w", "false", "not a true/false setting"),
        ("mode", "on", "not a true/false setting"),
        ("no_such", "1", "unknown setting 'no_such'"),
    ],
)
def test_runtime_setting_refused_changes_nothing(
    running: ServiceRunner, broker: TestBroker, name: str, payload: str, reason: str
) -> None:
    ha = broker.probe("homeassistant")
    before = running.service.runtime.value  # type: ignore[attr-defined]
    start = time.monotonic()
    ha.publish(T.setting_set("controller", name), payload)
    ack = json.loads(ha.wait_for(T.ack("controller"), after=start))
    assert ack["ok"] is False
    assert reason in ack["reason"]
    assert running.service.runtime.value == before  # type: ignore[attr-defined]
    ha.close()


def test_a_switch_value_still_sets_a_true_false_setting(
    running: ServiceRunner, broker: TestBroker
) -> None:
    ha = broker.probe("homeassistant")
    start = time.monotonic()
    ha.publish(T.setting_set("controller", "enabled"), "OFF")
    ack = json.loads(ha.wait_for(T.ack("controller"), after=start))
    assert ack["ok"] is True
    assert running.service.runtime.value.enabled is False  # type: ignore[attr-defined]
    ha.close()


def test_malformed_commands_do_not_kill_the_service(
    running: ServiceRunner, broker: TestBroker
) -> None:
    sender = broker.probe("controller", subscribe=None)
    for junk in (
        b"",
        b"\xff\xfe\x00",
        b"{",
        b'{"power_w": -5, "ts": 1}',
        b'{"power_w": "x"}',
        b"[]",
        b"1e999",
        b'{"power_w": 100, "ts": 1, "extra": 1}',
        b"x" * 70000,
    ):
        sender.publish(T.inverter_set("u1"), junk)
    sender.publish(
        T.inverter_set("u1"), json.dumps({"power_w": 300, "ts": time.time(), "boot": "t", "seq": 1})
    )
    wait_until(lambda: running.service.last_command_w == 300, 5, "valid command after junk")  # type: ignore[attr-defined]
    assert running.ctx.rejected_inputs >= 8
    assert running.ctx.handler_errors == 0
    sender.close()


def test_reconnects_and_resubscribes_after_broker_restart(
    own_broker: TestBroker, tmp_path: Path
) -> None:
    runner = make_runner(own_broker, tmp_path)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    own_broker.restart(down_s=1.0)
    # the count goes up at the CONNACK, before the filters are subscribed again; `connected`
    # (what `online` says) only once the broker confirmed them: a command sent in between
    # would be lost
    conn = runner.ctx.conn
    wait_until(lambda: conn.connect_count >= 2 and conn.connected, 15, "resubscribed")
    sender = own_broker.probe("controller", subscribe=None)
    sender.publish(
        T.inverter_set("u1"), json.dumps({"power_w": 123, "ts": time.time(), "boot": "t", "seq": 1})
    )
    wait_until(lambda: runner.service.last_command_w == 123, 5, "message after resubscribe")  # type: ignore[attr-defined]
    probe = own_broker.probe()
    probe.wait_for(T.status("controller"), lambda p: p == b"online")
    runner.stop()
    runner.join()
    sender.close()
    probe.close()


def _spawn(broker: TestBroker, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **broker.env("controller"), "GRIDZERO_DATA_DIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, cwd=EXAMPLE.parents[2])


def test_sigkill_leaves_offline_last_will(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe()
    proc = _spawn(broker, tmp_path)
    probe.wait_for(T.status("controller"), lambda p: p == b"online", live_only=True)
    start = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    probe.wait_for(T.status("controller"), lambda p: p == b"offline", timeout_s=20, after=start)
    probe.close()


# `docker stop` (and compose) sends SIGKILL this long after SIGTERM (Docker's default
# grace): a service must have taken its safe state and exited cleanly before then. A bound
# about safety, not speed: the time taken is printed.
DOCKER_STOP_GRACE_S = 10.0


def test_sigterm_exits_cleanly_with_status_stopped(broker: TestBroker, tmp_path: Path) -> None:
    probe = broker.probe()
    proc = _spawn(broker, tmp_path)
    probe.wait_for(T.status("controller"), lambda p: p == b"online", live_only=True)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DOCKER_STOP_GRACE_S) == 0
    print(f"exit {time.monotonic() - start:.2f} s after SIGTERM")
    probe.wait_for(T.status("controller"), lambda p: p == b"stopped", after=start)
    probe.close()


def test_discovery_republished_when_home_assistant_comes_online(
    running: ServiceRunner, broker: TestBroker
) -> None:
    ha = broker.probe("homeassistant")
    topic = "homeassistant/device/gridzero_controller/config"
    ha.wait_for(topic)
    start = time.monotonic()
    ha.publish("homeassistant/status", "online")
    payload = json.loads(ha.wait_for(topic, after=start))
    assert payload["cmps"]["target_w"]["p"] == "number"
    ha.close()


def test_mqtt_socket_has_nagle_off(running: ServiceRunner) -> None:
    # A small command must not wait for the broker's delayed ACK (~40 ms with Nagle on).
    sock = running.ctx.conn.client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _raw_client(broker: TestBroker, login: str, password: str, client_id: str) -> paho.Client:
    """A plain paho client with a chosen client id; returns once the broker answered."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(login, password)
    answered = threading.Event()
    client.on_connect = lambda *_a: answered.set()
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    assert answered.wait(5), f"no CONNACK for {login}"
    return client


def _round_trip(runner: ServiceRunner) -> None:
    """A QoS 1 publish on the service's own connection, acknowledged by the broker.

    A connection the broker closed cannot carry the PUBACK: paho sees the close,
    reconnects (connect #2) and only then gets it; so after this, a takeover that
    happened before is visible in ``connect_count``."""
    info = runner.ctx.conn.publish(T.status("controller"), "online", qos=1, retain=True)
    try:
        info.wait_for_publish(10)
    except RuntimeError as exc:  # paho: "the client is not currently connected"
        raise AssertionError(f"the service's connection was closed: {exc}") from exc


@pytest.mark.parametrize("user", ["meter", "homeassistant", "bms"])
def test_another_user_with_a_services_client_id_does_not_disconnect_it(
    broker: TestBroker, tmp_path: Path, user: str
) -> None:
    # issue 22 item 5: as `meter` with the controller's client id, the broker used to
    # close the controller's session (and both then flapped about once a second)
    runner = make_runner(broker, tmp_path)
    runner.start_thread()
    conn = runner.ctx.conn
    assert conn.wait_connected(5)
    client_id = conn.client._client_id.decode()
    assert client_id.startswith("gridzero-controller-")
    login = broker.logins.take(user)
    try:
        for reused in (client_id, "controller"):
            attacker = _raw_client(broker, login, broker.passwords[user], reused)
            _round_trip(runner)
            assert conn.connect_count == 1, f"{user} as {reused!r} made the service reconnect"
            assert conn.connected
            assert attacker.is_connected()  # the attacker is in, as itself
            attacker.disconnect()
            attacker.loop_stop()
    finally:
        runner.stop()
        runner.join()


def test_one_connection_per_login_and_numbered_logins_beside_it(broker: TestBroker) -> None:
    # the price of binding the client id to the user: a second connection of the same
    # user replaces the first; `<user>.2` (same password, same rights) is for tools
    password = broker.passwords["shunt"]
    first = _raw_client(broker, "shunt", password, "one")
    beside = _raw_client(broker, "shunt.2", password, "two")
    try:
        second = _raw_client(broker, "shunt", password, "three")
        wait_until(lambda: not first.is_connected(), 5, "the first shunt connection replaced")
        assert second.is_connected()
        assert beside.is_connected()
        second.disconnect()
        second.loop_stop()
    finally:
        for client in (first, beside):
            client.disconnect()
            client.loop_stop()


def _retained(broker: TestBroker, topic: str, marker: str) -> bytes | None:
    """The retained message on ``topic`` (None if there is none), read by subscribing to
    it and then to ``marker`` (retained): the broker answers subscriptions in order, so
    once the marker is in, a retained message on ``topic`` would be too."""
    probe = broker.probe("operator", subscribe=None)
    try:
        probe.client.subscribe(topic, qos=1)
        probe.client.subscribe(marker, qos=1)
        probe.wait_for(marker)
        return probe.last.get(topic)
    finally:
        probe.close()


# retained changes a second in the running simulated system (bms limits, pack and modules,
# shunt, charger, inverter and controller state; docs/security.md "Broker persistence")
RETAINED_CHANGES_PER_S = 11


def _autosave_changes() -> int:
    """The committed config's save rule: a save after this many changes (not seconds)."""
    conf = (PROJECT_CONFIG_DIR / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    words = dict(line.split(None, 1) for line in conf if line.strip() and line[0] != "#")
    assert words.get("autosave_on_changes") == "true", "the broker saves on a timer"
    return int(words["autosave_interval"])


def test_retained_changes_survive_a_broker_crash_right_after_them(own_broker: TestBroker) -> None:
    # issue 22 item 7: with `autosave_interval 30` (seconds) a broker killed within 30 s
    # of a change came back with the retained messages as they were before it
    interval = _autosave_changes()
    assert 1 <= interval <= RETAINED_CHANGES_PER_S, "a change must be on disk within ~1 s"
    cleared = T.setting_set("test", "cleared")
    replaced = T.setting_set("test", "replaced")
    marker = T.setting_set("test", "marker")
    probe = own_broker.probe("operator", subscribe=None)
    for topic in (cleared, replaced, marker):
        probe.publish(topic, "old", retain=True)
    probe.close()
    assert own_broker.process is not None
    own_broker.process.stop()  # a clean stop saves the database
    own_broker.process.start()
    assert _retained(own_broker, cleared, marker) == b"old"
    probe = own_broker.probe("operator", subscribe=None)
    probe.publish(cleared, b"", retain=True)  # an empty retained message clears it
    probe.publish(replaced, "new", retain=True)
    # what the running system publishes retained in (at most) the next second
    for i in range(interval):
        probe.publish(T.setting_set("test", "state"), str(i), retain=True)
    # one more acknowledged publish: the broker has finished with those above
    probe.publish(T.setting_set("test", "not-retained"), "x")
    probe.close()
    own_broker.restart()  # SIGKILL: no save on the way out
    assert _retained(own_broker, cleared, marker) is None
    assert _retained(own_broker, replaced, marker) == b"new"


def test_the_restart_button_exits_for_the_supervisor_to_start_it_again(
    broker: TestBroker, tmp_path: Path
) -> None:
    """The console's `R` (and Home Assistant) press `<service>/action/restart/set`: the
    process shuts down as on SIGTERM and exits RESTART_EXIT_CODE; Docker's restart policy
    and `gridzero up` start it again. Before, no service could be restarted over MQTT."""
    probe = broker.probe()
    console = broker.probe("telnet-console", subscribe=None)
    proc = _spawn(broker, tmp_path)
    try:
        probe.wait_for(T.status("controller"), lambda p: p == b"online", live_only=True)
        start = time.monotonic()
        console.publish(T.action_set("controller", "restart"), "restart please")
        ack = json.loads(probe.wait_for(T.ack("controller"), after=start))
        assert ack["ok"] is False
        assert "restart wants the payload 'PRESS'" in ack["reason"]
        assert proc.poll() is None  # a wrong payload changes nothing
        start = time.monotonic()
        console.publish(T.action_set("controller", "restart"), "PRESS")
        assert json.loads(probe.wait_for(T.ack("controller"), after=start))["ok"] is True
        assert proc.wait(timeout=DOCKER_STOP_GRACE_S) == RESTART_EXIT_CODE
        probe.wait_for(T.status("controller"), lambda p: p == b"stopped", after=start)
    finally:
        if proc.poll() is None:
            proc.kill()
        probe.close()
        console.close()
