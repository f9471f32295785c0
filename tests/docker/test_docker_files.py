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
from gridzero.registry import PARTS, part
from gridzero.runtime.credentials import console_password_hash
from gridzero.runtime.launch import SERVICE_MODULES, service_class
from gridzero.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("compose.yaml", "compose.hardware.yaml")


def _folder(name: str) -> Path:
    """The folder of a part: its Dockerfile and its settings for compose (config/)."""
    return ROOT / part(name).folder


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
    # a device service has a simulation set here and a hardware set in compose.hardware.yaml;
    # the controller and the console have one set for both
    assert config == ("/config/sim.yaml" if part(name).kind != "bus" else "/config/settings.yaml")
    assert f"./{part(name).folder}/config:/config:ro" in svc["volumes"]
    assert (_folder(name) / "config" / Path(config).name).is_file()
    # its own image, from its own Dockerfile
    assert svc["build"]["dockerfile"] == f"{part(name).folder}/Dockerfile"
    assert svc["build"]["context"] == "."
    assert svc["image"] == f"{part(name).distribution}:${{GRIDZERO_TAG:-latest}}"


def test_broker_and_credentials() -> None:
    services = _compose()["services"]
    broker = services["mosquitto"]
    assert broker["image"] == "${MOSQUITTO_IMAGE:-eclipse-mosquitto:2}"
    assert broker["depends_on"] == {"credentials": {"condition": "service_completed_successfully"}}
    assert "./mosquitto/config:/mosquitto/config:ro" in broker["volumes"]
    assert "start_interval" not in broker["healthcheck"]
    creds = services["credentials"]
    assert creds["user"] == "0:0"
    assert "--per-service-dirs --owner 10001:10001" in creds["command"][0]
    # the library is all it needs: the controller's image (no CAN, serial or I2C library)
    assert creds["image"] == services["controller"]["image"]
    assert creds["build"] == services["controller"]["build"]
    assert services["sim"]["profiles"] == ["sim"]
    for name, svc in services.items():
        if name == "mosquitto":
            continue
        assert svc["build"]["network"] == "${DOCKER_BUILD_NETWORK:-default}", name
        assert svc["build"]["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.11-slim}"}


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


@pytest.mark.parametrize("name", [p.name for p in PARTS])
def test_dockerfile_base_is_an_argument_and_runtime_is_not_root(name: str) -> None:
    text = (_folder(name) / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("ARG PYTHON_IMAGE=python:3.11-slim") == 1
    assert re.findall(r"^FROM (\S+)", text, re.M) == [
        "${PYTHON_IMAGE} AS build",
        "${PYTHON_IMAGE}",
    ] or re.findall(r"^FROM (.+)$", text, re.M) == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert "USER 10001:10001" in text
    assert f"install.sh {part(name).distribution}\n" in text


def _pip_installs(text: str) -> list[str]:
    """Every `pip install ...` command of a Dockerfile or shell script, continuation joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(r"pip install[^&;\n]*", joined)]


def test_image_installs_only_hash_checked_files() -> None:
    """Item 12: the build installs uv and the backend in hash mode, every dependency from
    uv.lock (--frozen; uv checks every file against the lock's sha256), builds the members
    without build isolation (which would fetch the newest setuptools) and fetches nothing else.
    """
    text = (ROOT / "tools" / "docker" / "install.sh").read_text(encoding="utf-8")
    installs = _pip_installs(text)
    assert installs == [
        'pip" install --require-hashes --only-binary=:all: -r tools/build-tools.txt'
    ] or all("--require-hashes" in c and "build-tools.txt" in c for c in installs), installs
    joined = re.sub(r"\\\n\s*", " ", text)
    syncs = re.findall(r"uv\" sync[^\n]*", joined)
    assert len(syncs) == 1, syncs
    for flag in ("--frozen", "--no-dev", "--no-build-isolation", "--no-editable"):
        assert flag in syncs[0], flag
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert "!uv.lock" in ignore
    assert "!tools/build-tools.txt" in ignore


def _settings_cases() -> list[tuple[str, Path]]:
    return [(p.name, f) for p in PARTS for f in sorted((_folder(p.name) / "config").glob("*.yaml"))]


@pytest.mark.parametrize(
    ("name", "path"), _settings_cases(), ids=lambda v: str(v).removeprefix(str(ROOT) + "/")
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
        assert config == "/config/hardware.yaml"
        assert (_folder(name) / "config" / "hardware.yaml").is_file()
