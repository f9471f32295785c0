"""Static checks of the Docker files (fast; no Docker engine needed).

The compose files must give every service what docs/docker.md promises (its own
credentials, data volume, healthcheck, restart policy, the broker first), every variable
they use must be documented in .env.example, and every settings file compose mounts must
be valid for its service.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridzero.errors import UsageError
from gridzero.runtime.credentials import console_password_hash
from gridzero.runtime.launch import SERVICE_MODULES, service_class
from gridzero.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_DIR = ROOT / "gridzero" / "data" / "compose"
COMPOSE_FILES = ("compose.yaml", "compose.hardware.yaml")


def _compose(name: str = "compose.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return data


def _available(name: str) -> bool:
    try:
        service_class(name)
    except (UsageError, ImportError):  # a service being written may not import yet
        return False
    return True


@pytest.mark.parametrize("name", sorted(SERVICE_MODULES))
def test_every_service_is_in_compose_with_its_own_everything(name: str) -> None:
    svc = _compose()["services"][name]
    assert svc["command"][:2] == ["run", name]
    assert svc["restart"] == "unless-stopped"
    assert svc["healthcheck"]["test"] == ["CMD", "gridzero", "health", name]
    assert "start_interval" not in svc["healthcheck"], "engine 20.10 refuses start_interval"
    assert svc["depends_on"]["mosquitto"] == {"condition": "service_healthy"}
    assert svc["environment"]["GRIDZERO_ENV_FILE"] == "/secrets/mqtt.env"
    assert f"./secrets/{name}:/secrets:ro" in svc["volumes"]
    assert f"{name}-data:/data" in svc["volumes"]
    assert f"{name}-data" in _compose()["volumes"]
    config = svc["command"][svc["command"].index("--config") + 1]
    assert (SETTINGS_DIR / Path(config).relative_to("/config")).is_file()


def test_broker_and_credentials() -> None:
    services = _compose()["services"]
    broker = services["mosquitto"]
    assert broker["image"] == "${MOSQUITTO_IMAGE:-eclipse-mosquitto:2}"
    assert broker["depends_on"] == {"credentials": {"condition": "service_completed_successfully"}}
    assert "./mosquitto/config:/mosquitto/config:ro" in broker["volumes"]
    assert "start_interval" not in broker["healthcheck"]
    creds = services["credentials"]
    assert creds["user"] == "0:0"
    assert creds["build"]["network"] == "${DOCKER_BUILD_NETWORK:-default}"
    assert creds["build"]["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.11-slim}"}
    assert "--per-service-dirs --owner 10001:10001" in creds["command"][0]
    assert services["sim"]["profiles"] == ["sim"]
    # one image, built once: only `credentials` builds it, everyone runs the same tag
    assert [n for n, s in services.items() if "build" in s] == ["credentials"]
    assert {s["image"] for n, s in services.items() if n != "mosquitto"} == {
        "${GRIDZERO_IMAGE:-gridzero:latest}"
    }


def test_no_forced_pulls_and_no_version_key() -> None:
    for name in COMPOSE_FILES:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "pull_policy" not in text, name
        assert not re.search(r"^version:", text, re.MULTILINE), name


def test_every_variable_is_documented_in_env_example() -> None:
    documented = set(
        re.findall(
            r"^#?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(encoding="utf-8"), re.M
        )
    )
    for name in COMPOSE_FILES:
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / name).read_text(encoding="utf-8")))
        assert used <= documented, f"{name}: not in .env.example: {sorted(used - documented)}"
    assert {"COMPOSE_PROFILES", "COMPOSE_FILE"} <= documented


def test_dockerfile_base_is_an_argument_and_runtime_is_not_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("ARG PYTHON_IMAGE=python:3.11-slim") == 1
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "USER 10001:10001" in text


def _pip_installs(text: str) -> list[str]:
    """Every `pip install ...` command of a Dockerfile or shell script, continuation joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(r"pip install[^&;\n]*", joined)]


def test_image_installs_only_hash_checked_files() -> None:
    """Item 12: the build installs requirements.lock in hash mode and fetches nothing else.

    The package itself is built with the backend from the lock (no build isolation, which
    would download the newest setuptools), with --no-deps, and `pip check` proves the lock
    satisfies pyproject.toml.
    """
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installs = _pip_installs(text)
    assert installs, "no pip install in the Dockerfile"
    locked = [c for c in installs if "-r requirements.lock" in c]
    assert locked, installs
    assert all("--require-hashes" in c and "--only-binary=:all:" in c for c in locked), locked
    for command in installs:
        if command not in locked:
            assert "--no-deps" in command, command
            assert "--no-build-isolation" in command, command
    assert "pip check" in text
    assert "COPY requirements.lock ./" in text
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def _settings_cases() -> list[tuple[str, Path]]:
    cases = [(p.stem, p) for p in sorted(SETTINGS_DIR.glob("*.yaml"))]
    cases += [(p.stem, p) for p in sorted((SETTINGS_DIR / "hardware").glob("*.yaml"))]
    return cases


@pytest.mark.parametrize(
    ("name", "path"), _settings_cases(), ids=lambda v: str(v).rsplit("gridzero/data/", 1)[-1]
)
def test_settings_files_are_valid(name: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _available(name):
        pytest.skip(f"service {name} is not built yet")
    for var in [v for v in os.environ if v.startswith("GRIDZERO_")]:
        monkeypatch.delenv(var)
    overrides: dict[str, Any] = {}
    if name == "telnet-console":  # its hash comes from secrets/telnet-console/mqtt.env
        overrides["password_hash"] = console_password_hash("not-a-secret", salt=b"0" * 16)
    load_settings(service_class(name).settings_class, path, **overrides)


def test_hardware_override_covers_the_device_services() -> None:
    hw = _compose("compose.hardware.yaml")["services"]
    for name in ("bms", "charger"):
        assert hw[name]["network_mode"] == "host"
        assert hw[name]["environment"]["GRIDZERO_MQTT__HOST"] == "127.0.0.1"
    assert hw["inverter"]["devices"] == ["${SERIAL_DEVICE:-/dev/ttyUSB0}:/dev/ttyUSB0"]
    assert hw["shunt"]["devices"] == ["${I2C_DEVICE:-/dev/i2c-1}:/dev/i2c-1"]
    # no simulator on hardware, so no `sim` broker user (it may fake the grid meter)
    assert hw.pop("credentials") == {"environment": {"GRIDZERO_CREDENTIALS_WITHOUT": "sim"}}
    for name, svc in hw.items():
        config = svc["command"][svc["command"].index("--config") + 1]
        assert config == f"/config/hardware/{name}.yaml"
        assert (SETTINGS_DIR / "hardware" / f"{name}.yaml").is_file()
