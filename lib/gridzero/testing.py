"""Helpers for tests, benchmarks and the fault matrix: a broker with fresh
credentials, and a probe client that records what it sees and waits for it.

Waiting is always on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gridzero.contract import Alarm, BmsLimits, CellRef, PackState, ShuntState
from gridzero.registry import SERVICES
from gridzero.runtime.broker import PROJECT_CONFIG_DIR, BrokerProcess, free_port
from gridzero.runtime.credentials import USER_NAMES, init_credentials, login_name, read_env_file
from gridzero.runtime.freshness import FreshValue
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Context, Service
from gridzero.runtime.settings import MqttSettings, ServiceSettings

# Logins per broker user on test brokers and systems. The broker binds a connection to
# its user name, so two connections of one user replace each other; a probe takes the
# user's first login that no service and no open probe holds (`controller.2`, … with the
# same password and a copy of the user's ACL section).
LOGINS = 8
SERVICE_USERS = frozenset(SERVICES)


class Logins:
    """Which login of a user the next probe takes."""

    def __init__(self, count: int = LOGINS) -> None:
        self.count = count
        self.services: set[str] = set()  # users logged in by services under their own name
        self._probes: dict[str, Probe] = {}
        self._lock = threading.Lock()

    def take(self, user: str) -> str:
        """A free login of ``user`` (the user's own name when no service or probe has it)."""
        if user not in USER_NAMES:
            return user  # an unknown user: refused by the broker anyway
        with self._lock:
            for k in range(1, self.count + 1):
                name = login_name(user, k)
                if name in self.services:
                    continue
                held = self._probes.get(name)
                if held is None or held.closed:
                    self._probes.pop(name, None)
                    return name
        raise RuntimeError(
            f"all {self.count} logins of broker user {user} are held by open probes or "
            "services: close probes you no longer need (Probe.close)"
        )

    def hold(self, name: str, probe: Probe) -> None:
        with self._lock:
            self._probes[name] = probe


@dataclass
class TestBroker:
    """A mosquitto from the project's config, with its own users and passwords."""

    __test__ = False  # not a pytest test class

    root: Path
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    process: BrokerProcess | None = None
    logins: Logins = field(default_factory=Logins)

    @classmethod
    def create(
        cls, root: Path, tls_conf: str | None = None, conf_d: Mapping[str, str] | None = None
    ) -> TestBroker:
        """A broker from the committed mosquitto.conf and ACL (no local conf.d listeners);
        ``tls_conf``: the text of a conf.d/tls.conf to add, its listener on a free port;
        ``conf_d``: more conf.d files by name (e.g. a bridge)."""
        config = root / "mosquitto-config"
        (config / "conf.d").mkdir(parents=True, exist_ok=True)
        for name in ("mosquitto.conf", "acl"):
            shutil.copy(PROJECT_CONFIG_DIR / name, config / name)
        if tls_conf is not None:
            (config / "conf.d" / "tls.conf").write_text(tls_conf, encoding="utf-8")
        for name, text in (conf_d or {}).items():
            (config / "conf.d" / name).write_text(text, encoding="utf-8")
        passwords = init_credentials(config, root / "secrets")
        broker = cls(root, passwords)
        broker.process = BrokerProcess(
            root / "broker",
            free_port(),
            config_dir=config,
            tls_port=free_port() if tls_conf is not None else None,
            logins=broker.logins.count,
        )
        broker.process.prepare()
        broker.process.start()
        return broker

    @property
    def host(self) -> str:
        assert self.process is not None
        return self.process.host

    @property
    def port(self) -> int:
        assert self.process is not None
        return self.process.port

    @property
    def tls_port(self) -> int:
        assert self.process is not None
        assert self.process.tls_port is not None
        return self.process.tls_port

    def mqtt_settings(self, user: str) -> MqttSettings:
        """Settings for a service logging in as ``user`` (fast reconnect for tests)."""
        self.logins.services.add(user)
        return MqttSettings(
            host=self.host,
            port=self.port,
            username=user,
            password=self.passwords[user],
            reconnect_min_s=0.5,
            reconnect_max_s=2.0,
            keepalive_s=5,
        )

    def env(self, user: str) -> dict[str, str]:
        """Environment variables for a service process logging in as ``user``."""
        self.logins.services.add(user)
        return {
            "GRIDZERO_MQTT__HOST": self.host,
            "GRIDZERO_MQTT__PORT": str(self.port),
            "GRIDZERO_MQTT__USERNAME": user,
            "GRIDZERO_MQTT__PASSWORD": self.passwords[user],
            "GRIDZERO_MQTT__RECONNECT_MAX_S": "2",
        }

    def probe(self, user: str = "operator", subscribe: str | None = "#") -> Probe:
        """A probe logged in with ``user``'s rights (a free login of that user)."""
        login = self.logins.take(user)
        probe = Probe.connect(self.host, self.port, login, self.passwords.get(user, ""), subscribe)
        self.logins.hold(login, probe)
        return probe

    def restart(self, down_s: float = 0.0) -> None:
        assert self.process is not None
        self.process.kill()
        if down_s:
            time.sleep(down_s)  # the outage itself is what is being tested
        self.process.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Probe:
    """An MQTT client that records every message and can wait for a condition."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.last: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.connect_rc: int | None = None
        self.connected = threading.Event()
        self.closed = False
        self.login = ""  # the user name it logged in with (e.g. `controller.2`)
        self.disconnects = 0  # times the connection was lost (or closed by us)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        user: str = "",
        password: str = "",
        subscribe: str | None = "#",
        timeout_s: float = 5.0,
        client_id: str | None = None,
    ) -> Probe:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else f"probe-{user}-{time.monotonic_ns()}",
        )
        if user:
            client.username_pw_set(user, password)
        probe = cls(client)
        probe.login = user

        def on_connect(c: paho.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
            probe.connect_rc = rc.value
            if not rc.is_failure:
                if subscribe:
                    c.subscribe(subscribe, qos=1)
                else:
                    probe.connected.set()

        def on_subscribe(c: paho.Client, u: object, mid: int, rcs: object, p: object) -> None:
            probe.connected.set()  # only now can nothing published from here on be missed

        def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
            with probe._cond:
                probe.messages.append(
                    (time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain))
                )
                probe.last[msg.topic] = bytes(msg.payload)
                probe._cond.notify_all()

        def on_disconnect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
            probe.disconnects += 1

        client.on_connect = on_connect
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.connect(host, port, keepalive=10)
        client.loop_start()
        probe.connected.wait(timeout_s)
        return probe

    def publish(
        self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1
    ) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[bytes], bool] = lambda _p: True,
        timeout_s: float = 10.0,
        *,
        after: float = 0.0,
        live_only: bool = False,
    ) -> bytes:
        """The first message on ``topic`` (received after monotonic ``after``) that satisfies ``predicate``.

        ``live_only`` leaves out retained messages: the broker sends those after the
        subscription is confirmed, so one left by an earlier test can arrive after ``after``.
        """
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for at, t, payload, retain in self.messages[seen:]:
                    if live_only and retain:
                        continue
                    if t == topic and at >= after and predicate(payload):
                        return payload
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = self.last.get(topic)
                    raise TimeoutError(
                        f"no matching message on {topic} within {timeout_s} s; last: {last!r}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        self.closed = True
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float = 10.0,
    what: str = "condition",
    poll_s: float = 0.02,
) -> float:
    """Poll ``condition`` until true; returns the seconds it took, raises TimeoutError naming ``what``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        time.sleep(poll_s)
    return time.monotonic() - start


class System:
    """The whole system (`gridzero up`) in a private directory with free ports.

    The broker, the simulator and every service run as real processes, exactly
    as a user starts them; only the ports and directories differ, so several
    systems (and a developer's own `./run.sh up`) can run side by side.
    """

    def __init__(
        self,
        root: Path,
        *,
        services: str | None = None,
        with_services: str | None = None,
        sim: dict[str, object] | None = None,
        settings: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.hub_port = free_port()
        self.inverter_port = free_port()
        self.console_port = free_port()
        self.config_dir = root / "config"
        self.data_dir = root / "data"
        self.secrets_dir = root / "secrets"
        self._services = services
        self._with = with_services  # optional services to start too (`gridzero up --with`)
        self._write_config(sim or {}, settings or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "up.log"
        self.logins = Logins()
        self.logins.services |= SERVICE_USERS

    def _write_config(self, sim: dict[str, object], settings: dict[str, dict[str, object]]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        hub = {"host": "127.0.0.1", "port": self.hub_port}
        base: dict[str, dict[str, object]] = {
            "sim": {
                "plant": "default",
                "profile": "sunny-day",
                "can_hub": f"127.0.0.1:{self.hub_port}",
                "inverter_listen": [f"127.0.0.1:{self.inverter_port}"],
                "bms_buses": [
                    {"interface": "socketcand", "channel": c, "options": hub}
                    for c in ("bms0", "bms1")
                ],
                "charger_bus": {"interface": "socketcand", "channel": "r48", "options": hub},
                **sim,
            },
            "bms": {
                "buses": [
                    {
                        "interface": "socketcand",
                        "channel": "bms0",
                        "modules": list(range(1, 9)),
                        "options": hub,
                    },
                    {"interface": "socketcand", "channel": "bms1", "modules": [1], "options": hub},
                ]
            },
            "charger": {"can": {"interface": "socketcand", "channel": "r48", "options": hub}},
            "inverter": {
                "units": [
                    {
                        "id": "gtn1",
                        "port": f"socket://127.0.0.1:{self.inverter_port}",
                        "max_power_w": 900,
                        "dc_min_v": 43.0,
                        "dc_max_v": 60.0,
                    }
                ]
            },
            "shunt": {"i2c_bus": "sim"},
            "controller": {},
            "telnet-console": {"bind_host": "127.0.0.1", "port": self.console_port},
        }
        for name, extra in settings.items():
            base.setdefault(name, {}).update(extra)
        for name, values in base.items():
            (self.config_dir / f"{name}.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "gridzero.cli",
            "up",
            "--port",
            str(self.port),
            "--config-dir",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
            "--secrets-dir",
            str(self.secrets_dir),
            "--logins",
            str(self.logins.count),
            "--no-colour",
        ]
        if self._services:
            argv += ["--services", self._services]
        if self._with:
            argv += ["--with", self._with]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        wait_until((self.secrets_dir / "operator.env").exists, 30, "credentials")
        wait_until(self._broker_up, 30, "broker")

    def _broker_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def password(self, user: str) -> str:
        return read_env_file(self.secrets_dir / f"{user}.env")["GRIDZERO_MQTT__PASSWORD"]

    def probe(self, user: str = "operator", subscribe: str | None = "#") -> Probe:
        """A probe logged in with ``user``'s rights (a free login of that user)."""
        login = self.logins.take(user)
        probe = Probe.connect("127.0.0.1", self.port, login, self.password(user), subscribe)
        self.logins.hold(login, probe)
        return probe

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pid(self, name: str) -> int:
        """PID of a running child of `gridzero up` (a service name, or ``mosquitto``)."""
        return int((self.data_dir / "pids" / f"{name}.pid").read_text(encoding="utf-8"))

    def log(self) -> str:
        return (
            self.log_path.read_text(encoding="utf-8", errors="replace")
            if self.log_path.exists()
            else ""
        )


def bms_limits(
    *,
    cvl_v: float = 49.2,
    ccl_a: float = 50.0,
    dcl_a: float = 50.0,
    charge_allowed: bool = True,
    discharge_allowed: bool = True,
    pack_voltage_v: float = 50.0,
    alarms: tuple[str, ...] = (),
) -> BmsLimits:
    """The one bms limits model for domain tests. Not validated, so that a test can hand a
    domain what the contract refuses (NaN, negative) and see the domain's own defence."""
    return BmsLimits.model_construct(
        ts=0.0,
        boot="test",
        seq=1,
        cvl_v=cvl_v,
        ccl_a=ccl_a,
        dcl_a=dcl_a,
        charge_allowed=charge_allowed,
        discharge_allowed=discharge_allowed,
        pack_voltage_v=pack_voltage_v,
        reasons=[],
        alarms=[Alarm(code=code, message=code, since_ts=0.0) for code in alarms],
    )


def shunt_state(**fields: Any) -> ShuntState:
    """A valid shunt state (50 % of 100 Ah, no current), with ``fields`` changed."""
    values: dict[str, Any] = {
        "ts": 0.0,
        "sensor": "ok",
        "current_a": 0.0,
        "power_w": 0.0,
        "soc_pct": 50.0,
        "soc_source": "ocv",
        "remaining_ah": 50.0,
        "remaining_wh": 2500.0,
        "capacity_ah": 100.0,
        "charge_in_ah": 0.0,
        "charge_out_ah": 0.0,
        "energy_in_kwh": 0.0,
        "energy_out_kwh": 0.0,
        "offset_counts": 0.0,
        "gain": 1.0,
    }
    return ShuntState.model_validate({**values, **fields})


def pack_state(cell_v: float = 3.7, cells_in_series: int = 12, **fields: Any) -> PackState:
    """A valid pack state: one module of ``cells_in_series`` cells, each at ``cell_v``, with
    ``fields`` changed."""
    cell = CellRef(bus=0, module=1, cell=1, voltage_v=cell_v)
    values: dict[str, Any] = {
        "ts": 0.0,
        "pack_voltage_v": cell_v * cells_in_series,
        "cell_min": cell,
        "cell_max": cell,
        "cell_avg_v": cell_v,
        "cell_delta_v": 0.0,
        "temperature_min_c": 20.0,
        "temperature_max_c": 20.0,
        "temperature_avg_c": 20.0,
        "modules_present": 1,
        "modules_expected": 1,
        "cells_counted": cells_in_series,
        "cells_expected": cells_in_series,
        "cells_in_series": cells_in_series,
        "balancing": False,
        "balancing_cells": 0,
        "alarm_text": "",
        "frames_rx": 1,
        "frames_bad": 0,
    }
    return PackState.model_validate({**values, **fields})


def fresh_limits(at_s: float = 0.0, **fields: Any) -> FreshValue[BmsLimits]:
    """`bms_limits` as a consumer keeps them: arrived at ``at_s`` (its own clock)."""
    return FreshValue(bms_limits(**fields), at_s)


# ----------------------------------------------------------------------- broker-less harness


class FakeClock:
    """A clock the test moves: monotonic seconds (``now``) and a wall clock ``wall_offset_s``
    ahead of it. Pass ``clock`` and ``wall`` to `Context`."""

    def __init__(self, now_s: float = 1000.0, wall_offset_s: float = 1.7e9) -> None:
        self.now_s = now_s
        self.wall_offset_s = wall_offset_s

    def __call__(self) -> float:
        return self.now_s

    def wall(self) -> float:
        return self.now_s + self.wall_offset_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class Offline:
    """A service run without a broker, its loop stepped by the test on a `FakeClock`.

    What it publishes is captured (``published``: topic, payload, retain); messages are
    handed to its handlers as the runtime would (`deliver`); timers run when the test moves
    the clock (`advance`). Calls its I/O threads post (frames read from a port) wait in the
    inbox until `pump` runs them, so nothing races the test's own steps."""

    def __init__(
        self, service_cls: type[Service[Any]], settings: ServiceSettings, clock: FakeClock
    ) -> None:
        self.clock = clock
        self.ctx = Context(service_cls.name, settings, clock=clock, wall=clock.wall)
        self.published: list[tuple[str, object, bool]] = []
        self.ctx.publish = self._capture  # type: ignore[method-assign] # captured, not sent
        self.service = service_cls(settings, self.ctx)

    def _capture(self, topic: str, payload: object, *, retain: bool = False, qos: int = 0) -> None:
        del qos
        self.published.append((topic, payload, retain))

    def start(self) -> Offline:
        self.service.start()
        self.pump()
        return self

    def stop(self) -> None:
        self.service.stop()

    def pump(self) -> None:
        """Run every posted call and queued message, then every timer that is due."""
        while True:
            try:
                msg = self.ctx._inbox.get_nowait()
            except queue.Empty:
                break
            if msg is not None:
                self.ctx._dispatch(msg)
        self.ctx._run_due_timers()

    def deliver(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """One MQTT message as the broker would hand it over, handled at once."""
        data = payload.encode() if isinstance(payload, str) else payload
        self.ctx._dispatch(Message(topic, data, retain))

    def advance(self, seconds: float, step_s: float = 0.05) -> None:
        """Move the clock by ``seconds`` in steps, running due timers and posted calls."""
        end = self.clock.now_s + seconds
        while self.clock.now_s < end - 1e-9:
            self.clock.advance(min(step_s, end - self.clock.now_s))
            self.pump()

    def wait_posted(
        self, condition: Callable[[], bool], what: str, timeout_s: float = 30.0
    ) -> None:
        """Pump until ``condition`` holds: for what an I/O thread delivers (a port opening, a
        reply read). The bound is a hang guard, never a verdict on speed; the clock stands."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            if condition():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met within {timeout_s} s (a hang guard)")
            time.sleep(0.01)

    def payloads(self, topic: str) -> list[object]:
        """Everything published on ``topic``, oldest first."""
        return [p for t, p, _r in self.published if t == topic]
