"""Credentials: rotating one user's password, leaving users out, numbered logins.

Issue 22 item 9: deleting the `sim` user (as docs/security.md advised for hardware) did
not stick, the only rotation was `--force` (every password, the console's too), and
rotation was documented nowhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from gridzero.errors import UsageError
from gridzero.runtime.broker import PROJECT_CONFIG_DIR
from gridzero.runtime.credentials import (
    CONSOLE_PASSWORD_FILE,
    LEFT_OUT_FILE,
    USER_NAMES,
    WITHOUT_ENV,
    add_logins_to_acl,
    add_logins_to_passwd,
    init_credentials,
    main,
    read_env_file,
    rotate_credentials,
)
from gridzero.testing import Probe, TestBroker, wait_until
from gridzero_tools import up


def _password(secrets: Path, user: str) -> str:
    return read_env_file(secrets / f"{user}.env")["GRIDZERO_MQTT__PASSWORD"]


def _hashes(config: Path) -> dict[str, str]:
    lines = (config / "passwd").read_text(encoding="utf-8").splitlines()
    return dict(line.split(":", 1) for line in lines if line)


def _matches(digest: str, password: str) -> bool:
    """Whether a Mosquitto ``$7$`` hash is of ``password``."""
    _, kind, iterations, salt, expected = digest.split("$")
    assert kind == "7"
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return base64.b64encode(got).decode() == expected


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    init_credentials(config, secrets)
    return config, secrets


def test_rotate_renews_only_the_named_user(dirs: tuple[Path, Path]) -> None:
    config, secrets = dirs
    before = {u: _password(secrets, u) for u in USER_NAMES}
    console = (secrets / CONSOLE_PASSWORD_FILE).read_text(encoding="utf-8")
    console_env = (secrets / "telnet-console.env").read_text(encoding="utf-8")
    assert rotate_credentials(config, secrets, ["bms"]) == ["bms"]
    after = {u: _password(secrets, u) for u in USER_NAMES}
    assert after["bms"] != before["bms"]
    assert {u: p for u, p in after.items() if u != "bms"} == {
        u: p for u, p in before.items() if u != "bms"
    }
    hashes = _hashes(config)
    assert set(hashes) == set(USER_NAMES)
    assert _matches(hashes["bms"], after["bms"])
    assert not _matches(hashes["bms"], before["bms"])
    assert all(_matches(hashes[u], before[u]) for u in USER_NAMES if u != "bms")
    # the console keeps its login
    assert (secrets / CONSOLE_PASSWORD_FILE).read_text(encoding="utf-8") == console
    assert (secrets / "telnet-console.env").read_text(encoding="utf-8") == console_env


def test_rotate_console_login_keeps_its_broker_password(dirs: tuple[Path, Path]) -> None:
    config, secrets = dirs
    mqtt = _password(secrets, "telnet-console")
    console = (secrets / CONSOLE_PASSWORD_FILE).read_text(encoding="utf-8")
    old_hash = read_env_file(secrets / "telnet-console.env")["GRIDZERO_PASSWORD_HASH"]
    rotate_credentials(config, secrets, [], console_login=True)
    assert _password(secrets, "telnet-console") == mqtt
    assert (secrets / CONSOLE_PASSWORD_FILE).read_text(encoding="utf-8") != console
    assert read_env_file(secrets / "telnet-console.env")["GRIDZERO_PASSWORD_HASH"] != old_hash


def test_rotate_keeps_owner_and_mode_of_the_broker_and_container_files(tmp_path: Path) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    init_credentials(config, secrets, per_service_dirs=True)
    os.chmod(config / "passwd", 0o600)  # as Docker's credentials step leaves it
    rotate_credentials(config, secrets, ["controller"])
    assert stat.S_IMODE((config / "passwd").stat().st_mode) == 0o600
    service_file = secrets / "controller" / "mqtt.env"
    assert stat.S_IMODE(service_file.stat().st_mode) == 0o600
    assert read_env_file(service_file) == read_env_file(secrets / "controller.env")


@pytest.mark.parametrize(
    ("users", "reason"),
    [([], "name the user"), (["nobody"], "unknown user"), (["sim"], "left out")],
)
def test_rotate_refuses_what_it_cannot_do(tmp_path: Path, users: list[str], reason: str) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    init_credentials(config, secrets, without=["sim"])
    before = (config / "passwd").read_text(encoding="utf-8")
    with pytest.raises(UsageError, match=reason):
        rotate_credentials(config, secrets, users)
    assert (config / "passwd").read_text(encoding="utf-8") == before


def test_rotation_against_the_broker(tmp_path: Path) -> None:
    broker = TestBroker.create(tmp_path)
    assert broker.process is not None
    config, secrets = tmp_path / "mosquitto-config", tmp_path / "secrets"
    old = broker.passwords["bms"]
    controller = broker.probe("controller", subscribe=None)  # a user not rotated
    try:
        rotate_credentials(config, secrets, ["bms"])
        new = _password(secrets, "bms")
        broker.process.reload()
        wait_until(lambda: not _logs_in(broker, "bms", old), 10, "the old bms password refused")
        assert _logs_in(broker, "bms", new)
        assert controller.client.is_connected()  # the others are not touched
    finally:
        controller.close()
        broker.stop()


def _logs_in(broker: TestBroker, user: str, password: str) -> bool:
    probe = Probe.connect(broker.host, broker.port, user, password, subscribe=None, timeout_s=3)
    wait_until(lambda: probe.connect_rc is not None, 5, "CONNACK")
    ok = probe.connect_rc == 0
    probe.close()
    return ok


def test_a_left_out_user_stays_out_until_taken_back(tmp_path: Path) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    init_credentials(config, secrets, per_service_dirs=True)
    assert (secrets / "sim" / "mqtt.env").exists()
    passwords = init_credentials(config, secrets, without=["sim"], per_service_dirs=True)
    assert "sim" not in passwords
    assert not (secrets / "sim.env").exists()
    assert not (secrets / "sim").exists()
    assert "sim" not in _hashes(config)
    assert "sim" in (secrets / LEFT_OUT_FILE).read_text(encoding="utf-8")
    # the next `docker compose up` / `gridzero up` runs a plain init: sim stays out
    assert "sim" not in init_credentials(config, secrets, per_service_dirs=True)
    assert "sim" not in _hashes(config)
    assert "sim" in init_credentials(config, secrets, with_=["sim"])
    assert "sim" in _hashes(config)
    assert not (secrets / LEFT_OUT_FILE).exists()


def test_without_from_the_environment_is_for_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the hardware compose profile sets it on every run; going back to the simulator,
    # the sim user comes back without anyone having to remember --with
    args = ["init", "--config-dir", str(tmp_path / "c"), "--secrets-dir", str(tmp_path / "s")]
    monkeypatch.setenv(WITHOUT_ENV, "sim")
    assert main(args) == 0
    assert "left out: sim" in capsys.readouterr().out
    assert "sim" not in _hashes(tmp_path / "c")
    monkeypatch.delenv(WITHOUT_ENV)
    assert main(args) == 0
    assert "sim" in _hashes(tmp_path / "c")


def test_a_left_out_user_cannot_log_in(tmp_path: Path) -> None:
    broker = TestBroker.create(tmp_path)
    assert broker.process is not None
    sim = broker.passwords["sim"]
    try:
        init_credentials(tmp_path / "mosquitto-config", tmp_path / "secrets", without=["sim"])
        broker.process.reload()
        wait_until(lambda: not _logs_in(broker, "sim", sim), 10, "the sim user refused")
        assert _logs_in(broker, "bms", broker.passwords["bms"])
    finally:
        broker.stop()


def test_up_names_a_left_out_service_instead_of_starting(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    init_credentials(tmp_path / "c", secrets, without=["sim"])
    argv = ["--secrets-dir", str(secrets), "--data-dir", str(tmp_path / "data")]
    with pytest.raises(UsageError, match=r"no broker user for sim.*--no-sim"):
        up.main(argv)
    assert not (tmp_path / "data" / "broker").exists()  # nothing was started


def test_cli_rotate_says_what_to_restart(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, secrets = dirs
    old = _password(secrets, "meter")
    argv = ["rotate", "meter", "--config-dir", str(config), "--secrets-dir", str(secrets)]
    assert main(argv) == 0
    assert _password(secrets, "meter") != old
    out = capsys.readouterr().out
    assert "SIGHUP" in out
    assert "restart meter" in out


def test_numbered_logins_copy_their_users_rights_line_for_line() -> None:
    acl = (PROJECT_CONFIG_DIR / "acl").read_text(encoding="utf-8")
    extended = add_logins_to_acl(acl, 3)
    assert extended.startswith(acl.rstrip("\n"))

    def section(text: str, user: str) -> list[str]:
        lines = text.splitlines()
        start = lines.index(f"user {user}") + 1
        end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
        return lines[start:end]

    for user in USER_NAMES:
        rights = section(acl, user)
        assert rights
        assert section(extended, f"{user}.2") == rights
        assert section(extended, f"{user}.3") == rights
    passwd = add_logins_to_passwd("bms:$7$1$a$b\nsim:$7$1$c$d\n", 2)
    assert passwd.splitlines() == [
        "bms:$7$1$a$b",
        "sim:$7$1$c$d",
        "bms.2:$7$1$a$b",
        "sim.2:$7$1$c$d",
    ]
