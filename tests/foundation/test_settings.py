"""Typed settings: environment, YAML file, every error at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import model_validator

from gridzero.cli import main
from gridzero.errors import SettingsError
from gridzero.runtime.settings import ServiceSettings, load_settings, redact
from gridzero_telnet_console.auth import hash_password


def test_defaults_env_and_yaml_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("log_level: DEBUG\nmqtt:\n  host: broker.lan\n  port: 1884\n")
    monkeypatch.setenv("GRIDZERO_MQTT__PORT", "1999")
    settings = load_settings(ServiceSettings, cfg)
    assert settings.log_level == "DEBUG"
    assert settings.mqtt.host == "broker.lan"
    assert settings.mqtt.port == 1999  # environment beats the file


def test_every_error_reported_at_once_with_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDZERO_MQTT__PORT", "70000")
    monkeypatch.setenv("GRIDZERO_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("GRIDZERO_STORE_FLUSH_S", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings(ServiceSettings)
    text = str(info.value)
    assert "3 invalid setting(s)" in text
    assert "mqtt.port (GRIDZERO_MQTT__PORT) = '70000'" in text
    assert "less than or equal to 65535" in text
    assert "log_level (GRIDZERO_LOG_LEVEL) = 'LOUD'" in text
    assert "store_flush_s (GRIDZERO_STORE_FLUSH_S)" in text


def test_unknown_key_in_yaml_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("mqtt:\n  hots: typo\n")
    with pytest.raises(SettingsError, match=r"mqtt\.hots \(GRIDZERO_MQTT__HOTS\): unknown setting"):
        load_settings(ServiceSettings, cfg)


@pytest.mark.parametrize(
    ("text", "message"), [("- a\n- b\n", "must be a mapping"), ("a: [\n", "not valid YAML")]
)
def test_bad_yaml_file(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(ServiceSettings, cfg)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(ServiceSettings, tmp_path / "nope.yaml")


def test_env_file_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "bms.env"
    creds.write_text(
        "GRIDZERO_MQTT__USERNAME=bms\nGRIDZERO_MQTT__PASSWORD=s3cret\nGRIDZERO_LOG_LEVEL=DEBUG\n"
    )
    monkeypatch.setenv("GRIDZERO_ENV_FILE", str(creds))
    monkeypatch.setenv("GRIDZERO_LOG_LEVEL", "WARNING")
    settings = load_settings(ServiceSettings)
    assert (settings.mqtt.username, settings.mqtt.password) == ("bms", "s3cret")
    assert settings.log_level == "WARNING"


def test_missing_env_file_is_a_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDZERO_ENV_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(ServiceSettings)


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("mqtt:\n  password: [hunter2]\n")
    with pytest.raises(SettingsError) as info:
        load_settings(ServiceSettings, cfg)
    assert "mqtt.password (GRIDZERO_MQTT__PASSWORD) = <hidden>" in str(info.value)
    assert "hunter2" not in str(info.value)


# --- no secret in any output (issue 22 item 3) ----------------------------------------------

MARKER_PASSWORD = "Marker-Pw-7f3qZ"  # a test marker, not a credential
# a valid console hash whose salt and digest are recognisable in any output
MARKER_HASH = str(hash_password("a long password", b"MARKERsaltMARKER", 1000))
MARKER_TOKEN = "Marker-Token-9x"
UNIT = '{"port": "socket://127.0.0.1:1", "dc_min_v": 44, "dc_max_v": 58, "max_power_w": 900'
TWO_UNITS_ALIKE = f'[{UNIT}, "id": "a"}}, {UNIT}, "id": "a"}}]'
# per service: variables for a valid start (for --check; the bms also gets a secret-named
# python-can option), then variables that make the settings fail and a fragment of the message
VALID: dict[str, dict[str, str]] = {
    "bms": {"GRIDZERO_BUSES": '[{"options": {"auth_token": "' + MARKER_TOKEN + '"}}]'},
    "charger": {},
    "inverter": {"GRIDZERO_UNITS": f"[{UNIT}, " + '"id": "a"}]'},
    "shunt": {},
    "controller": {},
    "telnet-console": {"GRIDZERO_PASSWORD_HASH": MARKER_HASH},
}
INVALID: dict[str, tuple[dict[str, str], str]] = {
    "bms": ({"GRIDZERO_STALE_AFTER_S": "999"}, "stale_after_s"),
    "charger": ({"GRIDZERO_BMS_STALE_S": "99"}, "bms_stale_s"),
    # whole-model checks: pydantic's input is every setting given, the password included
    "inverter": ({"GRIDZERO_UNITS": TWO_UNITS_ALIKE}, "id used twice"),
    "shunt": ({"GRIDZERO_EMPTY_CELL_V": "3.6", "GRIDZERO_FULL_CELL_V": "3.5"}, "must be below"),
    "controller": (
        {"GRIDZERO_CONTROLLER__SOC_MIN_PCT": "80", "GRIDZERO_CONTROLLER__SOC_MAX_PCT": "50"},
        "must stay below",
    ),
    "telnet-console": ({"GRIDZERO_PORT": "70000"}, "port (GRIDZERO_PORT)"),
}


def _secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, service: str) -> None:
    for key in list(os.environ):
        if key.startswith("GRIDZERO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GRIDZERO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GRIDZERO_MQTT__USERNAME", service)
    monkeypatch.setenv("GRIDZERO_MQTT__PASSWORD", MARKER_PASSWORD)
    for key, value in VALID[service].items():
        monkeypatch.setenv(key, value)


def _assert_no_marker(text: str) -> None:
    _, _, salt, digest = MARKER_HASH.split("$")
    for marker in (MARKER_PASSWORD, MARKER_HASH, salt, digest, MARKER_TOKEN):
        assert marker not in text, f"{marker!r} printed:\n{text}"


@pytest.mark.parametrize("service", list(VALID))
def test_settings_errors_print_no_secret(
    service: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _secret_env(monkeypatch, tmp_path, service)
    variables, fragment = INVALID[service]
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert main(["run", service, "--check"]) == 2
    out, err = capsys.readouterr()
    assert fragment in err  # the failure is the one meant, and it is still explained
    _assert_no_marker(out + err)


def test_whole_model_error_names_the_settings_not_the_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _secret_env(monkeypatch, tmp_path, "shunt")
    monkeypatch.setenv("GRIDZERO_EMPTY_CELL_V", "3.6")
    monkeypatch.setenv("GRIDZERO_FULL_CELL_V", "3.5")
    assert main(["run", "shunt"]) == 2
    err = capsys.readouterr().err
    assert "settings (as a whole): Value error, empty_cell_v 3.6 V must be below" in err
    assert "empty_cell_v (GRIDZERO_EMPTY_CELL_V)" in err
    assert "full_cell_v (GRIDZERO_FULL_CELL_V)" in err
    assert "'mqtt'" not in err  # the input mapping is not printed at all


@pytest.mark.parametrize("service", list(VALID))
def test_check_prints_no_secret(
    service: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _secret_env(monkeypatch, tmp_path, service)
    assert main(["run", service, "--check"]) == 0
    out, err = capsys.readouterr()
    _assert_no_marker(out + err)
    assert '"password": "<hidden>"' in out  # shown as set, not left out


def test_a_message_that_quotes_a_secret_is_scrubbed(tmp_path: Path) -> None:
    class Quoting(ServiceSettings):
        @model_validator(mode="after")
        def _quote(self) -> Quoting:
            raise ValueError(f"cannot log in as {self.mqtt.username}:{self.mqtt.password}")

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"mqtt:\n  username: bms\n  password: {MARKER_PASSWORD}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(Quoting, cfg)
    text = str(info.value)
    assert "cannot log in as bms:<hidden>" in text
    assert "settings given: mqtt" in text
    _assert_no_marker(text)


def test_redact_hides_every_secret_named_value_at_any_depth() -> None:
    data = {
        "mqtt": {"username": "u", "password": "p1"},
        "buses": [{"options": {"api_token": "t1", "nested": {"x": 1}}}],
        "password_hash": "",
        "insecure_loopback_no_password": True,
        "client_secret": {"a": ["s1", 5]},
    }
    assert redact(data) == {
        "mqtt": {"username": "u", "password": "<hidden>"},
        "buses": [{"options": {"api_token": "<hidden>", "nested": {"x": 1}}}],
        "password_hash": "",  # unset stays visible as unset
        "insecure_loopback_no_password": True,  # a flag is no secret
        "client_secret": {"a": ["<hidden>", "<hidden>"]},
    }
