"""Typed settings: environment, YAML file, every error at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridzero.errors import SettingsError
from gridzero.runtime.settings import ServiceSettings, load_settings


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
