"""Static checks of the container hardening and the supply chain (fast; no Docker engine).

Every container drops every Linux capability, cannot gain privileges, has a read-only root
filesystem with a tmpfs at /tmp; the hardware override weakens none of that and maps only
the two device nodes. The runtime dependencies and the build backend are installed from
requirements.lock, whose every entry is pinned to the version in constraints.txt and carries
sha256 hashes of the PyPI wheels for amd64 and arm64; `./run.sh up` installs only those.
The live checks (the same settings as the engine applies them) are in test_compose.py.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
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


def _lock() -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, hashes, wheel file names from the comments) of requirements.lock."""
    entries: dict[str, tuple[str, list[str], list[str]]] = {}
    files: list[str] = []
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text(encoding="utf-8"))
    for line in text.splitlines():
        if line.startswith("#"):
            files += re.findall(r"^# [0-9a-f]{64}  (\S+\.whl)$", line)
            continue
        if not line.strip():
            continue
        spec, *options = line.split()
        name, _, version = spec.partition("==")
        assert version, f"requirements.lock: {spec!r} is not pinned with =="
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert all(o.startswith("--hash=sha256:") for o in options), line
        entries[canonicalize_name(name)] = (version, hashes, files)
        files = []
    return entries


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.split("#", 1)[0].strip().partition("==")
        if name:
            pins[canonicalize_name(name)] = version
    return pins


def _runtime_closure() -> set[str]:
    """pyproject's dependencies and build backend with everything they need (installed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    todo = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += importlib.metadata.requires(req.name) or []
    return seen


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock()
    assert set(lock) == _runtime_closure(), "requirements.lock is not the runtime closure"
    pins = _constraints()
    for name, (version, hashes, _files) in lock.items():
        assert pins.get(name) == version, f"{name}: lock {version}, constraints {pins.get(name)}"
        assert hashes, f"{name}: no hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_lock_has_wheels_for_amd64_and_arm64() -> None:
    for name, (_version, hashes, files) in _lock().items():
        assert len(files) == len(hashes), f"{name}: one file comment per hash"
        if any(f.endswith("-none-any.whl") for f in files):
            continue
        assert any("x86_64" in f for f in files), f"{name}: no amd64 wheel"
        assert any("aarch64" in f for f in files), f"{name}: no arm64 wheel"


def test_build_backend_is_pinned_and_license_is_an_spdx_string() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # a table ({text = "MIT"}) is deprecated by setuptools and refused by its future releases
    assert project["project"]["license"] == "MIT"
    lock = _lock()
    for spec in project["build-system"]["requires"]:
        req = Requirement(spec)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        assert pinned, f"build backend {spec!r} is not pinned"
        assert lock[canonicalize_name(req.name)][0] == pinned[0], spec


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
    installs = re.findall(r"pip install[^\n]*", joined)
    assert installs
    for command in installs:
        assert not re.search(r"--upgrade|\s-U\s", command), command
        hashed = "--require-hashes" in command and "-r requirements.lock" in command
        assert hashed or "--no-deps" in command or "-c constraints.txt" in command, command


def _run_sh_install(workdir: Path) -> subprocess.CompletedProcess[str]:
    argv = ["./run.sh", "install"]
    return subprocess.run(
        argv, cwd=workdir, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.timeout(300)
def test_run_sh_install_is_runtime_only_and_refuses_a_wrong_hash(tmp_path: Path) -> None:
    """`./run.sh install` (what `up` installs) in a copy: no dev tools; a bad hash stops it."""
    if shutil.which("python3") is None:
        pytest.skip("no python3 to create a venv with")
    for name in ("run.sh", "pyproject.toml", "README.md", "requirements.lock", "constraints.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "gridzero",
        tmp_path / "gridzero",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    done = _run_sh_install(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run(
        [".venv/bin/python", "-m", "pip", "list", "--format=freeze"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = {
        canonicalize_name(n): v for n, _, v in (ln.partition("==") for ln in listed.split())
    }
    for name, (version, _hashes, _files) in _lock().items():
        assert installed.get(name) == version, f"{name}: {installed.get(name)} != {version}"
    dev = {"pytest", "mypy", "ruff", "hypothesis", "pytest-timeout"} & set(installed)
    assert not dev, f"`up` installed the dev tools {sorted(dev)}"

    # one wrong hash (the first entry's): a fresh venv must refuse to install
    shutil.rmtree(tmp_path / ".venv")
    lock = (tmp_path / "requirements.lock").read_text(encoding="utf-8")
    good = re.search(r"--hash=sha256:[0-9a-f]{64}", lock)
    assert good
    bad = good.group(0)[:-1] + ("0" if good.group(0)[-1] != "0" else "1")
    (tmp_path / "requirements.lock").write_text(lock.replace(good.group(0), bad, 1), "utf-8")
    done = _run_sh_install(tmp_path)
    assert done.returncode != 0, "a wrong hash was accepted"
    assert "DO NOT MATCH THE HASHES" in done.stderr, done.stderr[-3000:]
