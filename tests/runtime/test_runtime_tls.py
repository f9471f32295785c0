"""TLS between the services and the broker, with certificates made here by `openssl`.

The broker runs the committed mosquitto.conf plus the committed
conf.d/tls.conf.example (only the certificate directory changed), so the listener a user
switches on is the one tested. Issue 22 item 11: the client could not be given a CA and
the broker launcher moved every listener to one loopback port.
"""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from gridzero.contract import Topics
from gridzero.runtime.broker import PROJECT_CONFIG_DIR, render_config
from gridzero.runtime.mqtt import Connection
from gridzero.runtime.service import ServiceRunner
from gridzero.runtime.settings import MqttSettings
from gridzero.testing import TestBroker, wait_until

from .example_service import ExampleService, ExampleSettings

pytestmark = pytest.mark.broker
T = Topics()
EXAMPLE_TLS = PROJECT_CONFIG_DIR / "conf.d" / "tls.conf.example"


@dataclass(frozen=True)
class Certs:
    ca: Path
    wrong_ca: Path  # a CA that signed nothing of ours
    client_cert: Path
    client_key: Path
    folder: Path  # holds server.crt, server.key and ca.crt as the example names them


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=gridzero test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def _signed(folder: Path, name: str, subject: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("certs")
    _ca(folder, "ca")
    _ca(folder, "wrong-ca")
    _signed(
        folder,
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    _signed(folder, "client", "/CN=controller", "extendedKeyUsage=clientAuth")
    return Certs(
        folder / "ca.crt",
        folder / "wrong-ca.crt",
        folder / "client.crt",
        folder / "client.key",
        folder,
    )


def _tls_conf(certs: Certs, *, require_certificate: bool = False) -> str:
    text = EXAMPLE_TLS.read_text(encoding="utf-8").replace(
        "/mosquitto/config/certs/", f"{certs.folder}/"
    )
    if require_certificate:
        text = text.replace("require_certificate false", "require_certificate true")
    return text


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TestBroker]:
    broker = TestBroker.create(tmp_path_factory.mktemp("tls-broker"), tls_conf=_tls_conf(certs))
    yield broker
    broker.stop()


def _tls_settings(broker: TestBroker, user: str, **tls: object) -> MqttSettings:
    plain = broker.mqtt_settings(user).model_dump()
    return MqttSettings(**{**plain, "port": broker.tls_port, "tls": True, **tls})


def _connection(settings: MqttSettings) -> Connection:
    conn = Connection(settings, T.status("controller"), lambda _m: None, "controller")
    conn.start()
    return conn


def test_a_service_works_over_tls(tls_broker: TestBroker, certs: Certs, tmp_path: Path) -> None:
    mqtt = _tls_settings(tls_broker, "controller", tls_ca_file=certs.ca)
    runner = ServiceRunner(ExampleService, ExampleSettings(mqtt=mqtt, data_dir=tmp_path))
    probe = tls_broker.probe()  # on the plain listener: one broker, two listeners
    runner.start_thread()
    try:
        conn = runner.ctx.conn
        assert conn.wait_connected(10)
        assert isinstance(conn.client.socket(), ssl.SSLSocket)
        probe.wait_for(T.status("controller"), lambda p: p == b"online")
        sender = tls_broker.probe("controller", subscribe=None)
        sender.publish(
            T.inverter_set("u1"),
            json.dumps({"power_w": 321, "ts": time.time(), "boot": "tls", "seq": 1}),
        )
        sender.close()
        wait_until(lambda: runner.service.last_command_w == 321, 5, "command over TLS")  # type: ignore[attr-defined]
        # the TLS listener binds the client id to the user too (the example says so)
        thief = _tls_settings(tls_broker, "meter", tls_ca_file=certs.ca)
        other = Connection(thief, "meterbox/none", lambda _m: None, "controller")
        other.client._client_id = conn.client._client_id
        other.start()
        assert other.wait_connected(10)
        conn.publish(T.status("controller"), "online", qos=1, retain=True).wait_for_publish(10)
        assert conn.connect_count == 1
        other.stop()
    finally:
        runner.stop()
        runner.join()
        probe.close()


def test_a_broker_certificate_from_another_ca_is_refused(
    tls_broker: TestBroker, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gridzero.runtime.mqtt")
    conn = _connection(_tls_settings(tls_broker, "controller", tls_ca_file=certs.wrong_ca))
    try:
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, 10, "the refusal logged")
        assert not conn.connected
        assert "cannot connect to broker" in caplog.text
    finally:
        conn.stop()


def test_the_system_cas_do_not_trust_a_private_ca(
    tls_broker: TestBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # tls: true without tls_ca_file uses the system's CAs: our test CA is not among them
    caplog.set_level(logging.WARNING, logger="gridzero.runtime.mqtt")
    conn = _connection(_tls_settings(tls_broker, "controller"))
    try:
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, 10, "the refusal logged")
        assert not conn.connected
    finally:
        conn.stop()


def test_client_certificate_when_the_listener_requires_one(tmp_path: Path, certs: Certs) -> None:
    broker = TestBroker.create(tmp_path, tls_conf=_tls_conf(certs, require_certificate=True))
    with_cert = _connection(
        _tls_settings(
            broker,
            "controller",
            tls_ca_file=certs.ca,
            tls_cert_file=certs.client_cert,
            tls_key_file=certs.client_key,
        )
    )
    without = Connection(
        _tls_settings(broker, "shunt", tls_ca_file=certs.ca),
        T.status("shunt"),
        lambda _m: None,
        "shunt",
    )
    without.start()
    try:
        assert with_cert.wait_connected(10)
        with pytest.raises(TimeoutError):
            wait_until(lambda: without.connected, 3, "a connection without certificate")
    finally:
        with_cert.stop()
        without.stop()
        broker.stop()


@pytest.mark.parametrize(
    ("fields", "name", "reason"),
    [
        ({"tls_ca_file": "CA"}, "tls_ca_file", "needs mqtt.tls: true"),
        ({"tls": True, "tls_ca_file": "/no/such/ca.crt"}, "tls_ca_file", "no such file"),
        ({"tls": True, "tls_cert_file": "CERT"}, "tls_key_file", "set both or neither"),
        ({"tls": True, "tls_key_file": "KEY"}, "tls_key_file", "set both or neither"),
    ],
)
def test_tls_settings_are_checked(
    certs: Certs, fields: dict[str, object], name: str, reason: str
) -> None:
    files = {"CA": certs.ca, "CERT": certs.client_cert, "KEY": certs.client_key}
    values = {k: files.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(ValidationError) as caught:
        MqttSettings(**values)  # type: ignore[arg-type]
    errors = caught.value.errors(include_url=False)
    assert [e["loc"] for e in errors] == [(name,)]
    assert reason in errors[0]["msg"]


def test_launcher_keeps_the_tls_listener_and_moves_the_plain_one(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "conf.d").mkdir(parents=True)
    shutil.copy(PROJECT_CONFIG_DIR / "mosquitto.conf", config / "mosquitto.conf")
    shutil.copy(EXAMPLE_TLS, config / "conf.d" / "tls.conf")
    (config / "conf.d" / "B.conf").write_text("# B\n")
    (config / "conf.d" / "a.conf").write_text("# a\n")
    (config / "conf.d" / "A.conf").write_text("# A\n")
    text = render_config(config / "mosquitto.conf", tmp_path / "work", 18830)
    listeners = [line for line in text.splitlines() if line.startswith("listener")]
    assert listeners == ["listener 18830 127.0.0.1", "listener 8883"]
    assert f"certfile {tmp_path}/work/config/certs/server.crt" in text
    # Mosquitto's include order: an upper-case letter before its lower case
    order = [line for line in text.splitlines() if line in ("# A", "# a", "# B")]
    assert order == ["# A", "# a", "# B"]
    # every listener binds the client id to the user
    after = text.split("listener 8883", 1)[1]
    assert "use_username_as_clientid true" in after
    moved = render_config(config / "mosquitto.conf", tmp_path / "work", 18830, tls_port=18831)
    assert "listener 18831 127.0.0.1" in moved
