"""Static checks of the container hardening and the supply chain (fast; no Docker engine).

Every container drops every Linux capability, cannot gain privileges, has a read-only root
filesystem with a tmpfs at /tmp; the hardware override weakens none of that and maps only
the two device nodes. Every dependency is installed from uv.lock, whose every entry is pinned
and carries sha256 hashes, with wheels for amd64 and arm64; uv and the build backend come from
tools/build-tools.txt (pinned, hashed); `./run.sh up` installs no test tools.
The live checks (the same settings as the engine applies them) are in test_compose.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"
BUILD_TOOLS = ROOT / "tools" / "build-tools.txt"
MEMBERS = [ROOT / "lib", *sorted((ROOT / "services").iterdir()), ROOT / "tools"]
# root for chown/chmod of the broker's passwd and the per-service secrets: only these
CREDENTIALS_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
HARDWARE_DEVICES = {
    "inverter": ["${SERIAL_DEVICE:-/dev/ttyUSB0}:/dev/ttyUSB0"],
    "shunt": ["${I2C_DEVICE:-/dev/i2c-1}:/dev/i2c-1"],
}


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return data


SERVICES = _compose("compose.yaml")["services"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_container_has_no_capability_and_a_read_only_root(name: str) -> None:
    svc = SERVICES[name]
    assert svc.get("cap_drop") == ["ALL"], f"{name}: cap_drop {svc.get('cap_drop')}"
    assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: security_opt"
    assert svc.get("read_only") is True, f"{name}: read_only {svc.get('read_only')}"
    tmpfs = svc.get("tmpfs", [])
    assert [t for t in tmpfs if t.split(":")[0] == "/tmp"], f"{name}: no tmpfs at /tmp: {tmpfs}"
    assert not svc.get("privileged", False), name
    expected_caps = CREDENTIALS_CAPS if name == "credentials" else []
    assert sorted(svc.get("cap_add", [])) == expected_caps, f"{name}: cap_add"


def test_only_credentials_runs_as_root() -> None:
    users = {name: svc.get("user") for name, svc in SERVICES.items()}
    # gridzero services: the image's USER 10001:10001 (test_docker_files); the broker: its
    # own uid from the start, so it needs no capability to drop root
    assert users.pop("credentials") == "0:0"
    assert users.pop("mosquitto") == "1883:1883"
    assert set(users.values()) == {None}, users


def test_hardware_override_weakens_nothing() -> None:
    hw = _compose("compose.hardware.yaml")["services"]
    weakening = {"privileged", "cap_add", "cap_drop", "security_opt", "read_only", "tmpfs"}
    weakening |= {"user", "pid", "ipc", "userns_mode", "device_cgroup_rules", "volumes"}
    for name, svc in hw.items():
        assert not weakening & set(svc), f"{name}: overrides {sorted(weakening & set(svc))}"
        assert svc.get("devices", []) == HARDWARE_DEVICES.get(name, []), f"{name}: devices"


# ------------------------------------------------------------------ the lock (item 12)


def _lock() -> dict[str, dict[str, Any]]:
    """name -> package entry of uv.lock, for every package that is not a workspace member."""
    data = tomllib.loads(LOCK.read_text(encoding="utf-8"))
    packages: dict[str, dict[str, Any]] = {}
    for package in data["package"]:
        if "editable" in package["source"] or "virtual" in package["source"]:
            continue
        packages.setdefault(canonicalize_name(package["name"]), package)
    return packages


def _files(package: dict[str, Any]) -> list[dict[str, Any]]:
    return [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]


def test_lock_pins_every_dependency_with_hashes() -> None:
    lock = _lock()
    assert {"pydantic", "paho-mqtt", "python-can", "pyserial", "smbus2"} <= set(lock)
    for name, package in lock.items():
        assert package["version"], name
        files = _files(package)
        assert files, f"{name}: no file in the lock"
        for file in files:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", file["hash"]), (name, file["url"])


def test_lock_has_wheels_for_amd64_and_arm64() -> None:
    for name, package in _lock().items():
        wheels = [w["url"].rsplit("/", 1)[-1] for w in package.get("wheels", [])]
        if not wheels or any(w.endswith("-none-any.whl") for w in wheels):
            continue
        assert any("x86_64" in w for w in wheels), f"{name}: no amd64 wheel"
        assert any("aarch64" in w for w in wheels), f"{name}: no arm64 wheel"


def _build_tools() -> dict[str, tuple[str, list[str]]]:
    text = re.sub(r"\\\n\s*", " ", BUILD_TOOLS.read_text(encoding="utf-8"))
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        assert version, f"{BUILD_TOOLS.name}: {spec!r} is not pinned with =="
        assert options
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options)
        pins[canonicalize_name(name)] = (version, options)
    return pins


def test_build_backend_is_pinned_and_license_is_an_spdx_string() -> None:
    tools = _build_tools()
    assert set(tools) == {"uv", "setuptools"}
    for member in MEMBERS:
        project = tomllib.loads((member / "pyproject.toml").read_text(encoding="utf-8"))
        # a table ({text = "MIT"}) is deprecated by setuptools and refused by its future releases
        assert project["project"]["license"] == "MIT", member
        assert project["build-system"]["requires"] == [f"setuptools=={tools['setuptools'][0]}"]


def _run_sh_block(command: str) -> str:
    text = (ROOT / "run.sh").read_text(encoding="utf-8")
    match = re.search(rf"^  {command}\)\n(.*?)^    ;;", text, re.M | re.S)
    assert match, f"run.sh has no `{command})` case"
    return match.group(1)


def test_run_sh_installs_runtime_for_up_and_nothing_unpinned() -> None:
    text = (ROOT / "run.sh").read_text(encoding="utf-8")
    assert "need_venv runtime" in _run_sh_block("up")
    assert "need_venv dev" in _run_sh_block("test")
    joined = re.sub(r"\\\n\s*", " ", text)
    installs = re.findall(r"(?:pip install|uv sync|uv pip)[^\n]*", joined)
    assert installs
    for command in installs:
        assert not re.search(r"--upgrade|\s-U\s", command), command
        hashed = "--require-hashes" in command and "-r tools/build-tools.txt" in command
        assert hashed or ("uv sync" in command and "--frozen" in command), command


def _run_sh_install(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./run.sh", "install"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _copy_workspace(to: Path) -> None:
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.egg-info", "build", "tests", "README.md", "config"
    )
    for name in ("run.sh", "pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, to / name)
    for member in MEMBERS:
        shutil.copytree(member, to / member.relative_to(ROOT), ignore=ignore)


@pytest.mark.timeout(300)
def test_run_sh_install_is_runtime_only_and_refuses_a_wrong_hash(tmp_path: Path) -> None:
    """`./run.sh install` (what `up` installs) in a copy: no dev tools; a bad hash stops it."""
    if shutil.which("python3") is None:
        pytest.skip("no python3 to create a venv with")
    _copy_workspace(tmp_path)
    done = _run_sh_install(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run(
        [
            ".venv/bin/python",
            "-c",
            "import importlib.metadata as m; "
            "print(*(f'{d.name}=={d.version}' for d in m.distributions()))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = {
        canonicalize_name(n): v for n, _, v in (ln.partition("==") for ln in listed.split())
    }
    for name in ("pydantic", "python-can", "pyserial", "smbus2", "paho-mqtt"):
        assert installed.get(name) == _lock()[name]["version"], name
    dev = {"pytest", "mypy", "ruff", "hypothesis", "pytest-timeout", "matplotlib"} & set(installed)
    assert not dev, f"`up` installed the dev tools {sorted(dev)}"

    # one wrong hash (pyserial's wheel): a fresh venv must refuse to install
    shutil.rmtree(tmp_path / ".venv")
    lock = (tmp_path / "uv.lock").read_text(encoding="utf-8")
    good = _lock()["pyserial"]["wheels"][0]["hash"]
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    (tmp_path / "uv.lock").write_text(lock.replace(good, bad), "utf-8")
    done = _run_sh_install(tmp_path)
    assert done.returncode != 0, "a wrong hash was accepted"
    assert "hash" in done.stderr.lower(), done.stderr[-3000:]


@pytest.mark.timeout(300)
def test_two_run_sh_installs_at_once_leave_one_working_venv(tmp_path: Path) -> None:
    """Two commands that each need the venv, started together (two `bench` runs after a
    pull): the second waits for the first instead of syncing the same venv at once, and every
    workspace package imports afterwards."""
    if shutil.which("python3") is None:
        pytest.skip("no python3 to create a venv with")
    _copy_workspace(tmp_path)
    runs = [
        subprocess.Popen(
            ["./run.sh", "install"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [run.communicate(timeout=240) for run in runs]
    finally:
        for run in runs:
            run.kill()  # a hung install must not outlive the test (no-op once it exited)
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    packages = sorted(p.parent.name for p in ROOT.glob("services/*/gridzero_*/__init__.py"))
    imported = subprocess.run(
        [".venv/bin/python", "-c", f"import gridzero, gridzero_tools, {', '.join(packages)}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
