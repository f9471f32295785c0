"""Every service refuses each kind of bad start-up setting: exit 2, naming the setting.

`gridzero run <service>` with a bad environment variable (out of range, wrong type, unknown
key, top level or nested) or a bad YAML file. Runtime settings changed to an invalid value
over MQTT are refused with a reason and change nothing: tests/faults/test_faults_live.py
(against every running service) and tests/runtime/test_runtime_broker.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridzero.cli import main
from gridzero.runtime.launch import SERVICE_MODULES

SERVICES = tuple(SERVICE_MODULES)
# a service-specific setting out of its range: (variable, value, what the message says)
OUT_OF_RANGE = {
    "bms": ("GRIDZERO_STALE_AFTER_S", "999", "less than or equal to 60"),
    "charger": ("GRIDZERO_BMS_STALE_S", "99", "less than or equal to 10"),
    "inverter": ("GRIDZERO_SEND_PERIOD_S", "9", "less than or equal to 3"),
    "shunt": ("GRIDZERO_ADDRESS", "200", "less than or equal to 75"),
    "controller": ("GRIDZERO_CONTROL_PERIOD_S", "50", "less than or equal to 5"),
    "telnet-console": ("GRIDZERO_PORT", "70000", "less than or equal to 65535"),
    "housebatt-compat": ("GRIDZERO_STATE_STALE_S", "99", "less than or equal to 60"),
    "sim": ("GRIDZERO_SPEED", "5000", "less than or equal to 1000"),
}
WRONG_TYPE = {
    "bms": ("GRIDZERO_CELLS_PER_MODULE", "twelve", "valid integer"),
    "charger": ("GRIDZERO_POLL_PERIOD_S", "often", "valid number"),
    "inverter": ("GRIDZERO_ZERO_FRAMES", "3.5", "valid integer"),
    "shunt": ("GRIDZERO_SINGLE_SHOT", "perhaps", "valid boolean"),
    "controller": ("GRIDZERO_LEGACY_CHARGE_TARGET", "sometimes", "valid boolean"),
    "telnet-console": ("GRIDZERO_MAX_SESSIONS", "many", "valid integer"),
    "housebatt-compat": ("GRIDZERO_MODULE_STALE_S", "soon", "valid number"),
    "sim": ("GRIDZERO_SEED", "random", "valid integer"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("GRIDZERO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GRIDZERO_DATA_DIR", str(tmp_path))


def _run(service: str, *extra: str) -> int:
    return main(["run", service, *extra])


@pytest.mark.parametrize("service", SERVICES)
def test_common_setting_out_of_range(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDZERO_STORE_FLUSH_S", "1000")
    assert _run(service) == 2
    err = capsys.readouterr().err
    assert "store_flush_s (GRIDZERO_STORE_FLUSH_S) = '1000'" in err
    assert "less than or equal to 60" in err


@pytest.mark.parametrize("service", SERVICES)
def test_own_setting_out_of_range(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variable, value, message = OUT_OF_RANGE[service]
    monkeypatch.setenv(variable, value)
    assert _run(service) == 2
    err = capsys.readouterr().err
    assert f"({variable}) = '{value}'" in err
    assert message in err


@pytest.mark.parametrize("service", SERVICES)
def test_wrong_type(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variable, value, message = WRONG_TYPE[service]
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("GRIDZERO_MQTT__PORT", "mqtt")
    assert _run(service) == 2
    err = capsys.readouterr().err
    assert f"({variable}) = '{value}'" in err
    assert message in err
    assert "mqtt.port (GRIDZERO_MQTT__PORT) = 'mqtt'" in err  # every problem at once


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("variable", ["GRIDZERO_NO_SUCH_SETTING", "GRIDZERO_MQTT__HOTS"])
def test_unknown_key(
    service: str, variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "1")
    assert _run(service) == 2
    err = capsys.readouterr().err
    assert f"({variable}): unknown setting" in err


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("no_such_setting: 1\n", "no_such_setting (GRIDZERO_NO_SUCH_SETTING): unknown setting"),
        ("store_flush_s: fast\n", "store_flush_s (GRIDZERO_STORE_FLUSH_S) = 'fast'"),
    ],
    ids=["syntax", "not-a-mapping", "unknown-key", "wrong-type"],
)
def test_bad_yaml_file(
    service: str,
    text: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / f"{service}.yaml"
    config.write_text(text)
    assert _run(service, "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert str(config) in err


def test_unknown_variable_does_not_hide_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDZERO_STALE_AFTR_S", "1")  # a typo of stale_after_s
    monkeypatch.setenv("GRIDZERO_STALE_AFTER_S", "-1")
    assert _run("bms") == 2
    err = capsys.readouterr().err
    assert "2 invalid setting(s)" in err
    assert "stale_aftr_s (GRIDZERO_STALE_AFTR_S): unknown setting" in err
    assert "stale_after_s (GRIDZERO_STALE_AFTER_S) = '-1'" in err


def test_variables_that_are_not_settings_are_allowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # compose.yaml interpolates these on the host; GRIDZERO_CONFIG names the YAML file
    monkeypatch.setenv("GRIDZERO_TAG", "test")
    assert _run("shunt", "--check") == 0
    assert '"i2c_bus"' in capsys.readouterr().out


def test_a_real_process_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDZERO_")}
    env.update({"GRIDZERO_DATA_DIR": str(tmp_path), "GRIDZERO_PROTECTION__OVER_VOLTAGE_V": "9"})
    done = subprocess.run(
        [sys.executable, "-m", "gridzero.cli", "run", "bms"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "protection.over_voltage_v (GRIDZERO_PROTECTION__OVER_VOLTAGE_V) = '9'" in done.stderr
