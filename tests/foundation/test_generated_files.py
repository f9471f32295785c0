"""Generated files stay in step with their sources, and pure layers stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gridzero.registry import PARTS
from gridzero.runtime.credentials import render_acl
from gridzero_tools.docs import render_mqtt_md

ROOT = Path(__file__).resolve().parents[2]


def test_docs_mqtt_md_matches_the_models() -> None:
    committed = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    assert committed == render_mqtt_md(), (
        "docs/mqtt.md drifted from lib/gridzero/contract.py: run `gridzero docs`"
    )


def test_committed_acl_matches_the_user_table() -> None:
    committed = (ROOT / "mosquitto" / "config" / "acl").read_text(encoding="utf-8")
    assert committed == render_acl(), (
        "mosquitto/config/acl drifted: run `gridzero credentials acl --write mosquitto/config/acl`"
    )


def test_no_secrets_committed() -> None:
    assert (
        not (ROOT / "mosquitto" / "config" / "passwd").is_file()
        or "passwd" in (ROOT / ".gitignore").read_text()
    )
    assert "/secrets/" in (ROOT / ".gitignore").read_text()


FORBIDDEN = {
    "can",
    "serial",
    "smbus2",
    "paho",
    "socket",
    "asyncio",
    "subprocess",
    "threading",
    "time",
}
PURE_NAMES = (
    "codec.py",
    "domain.py",
    "pack.py",
    "protection.py",
    "balancing.py",
    "law.py",
    "dispatch.py",
    "soc.py",
    "current.py",
    "plant.py",
    "framer.py",
)


def _pure_modules() -> list[Path]:
    packages = [ROOT / "lib" / "gridzero", ROOT / "tools" / "gridzero_tools"]
    packages += [ROOT / p.folder / p.package for p in PARTS if p.kind != "tool"]
    return sorted(p for pkg in packages for p in pkg.rglob("*.py") if p.name in PURE_NAMES)


def test_the_purity_check_finds_the_codecs_and_domains() -> None:
    """It checked nothing for a while after the layout move: it must see every service."""
    found = {p.relative_to(ROOT).parts[:2] for p in _pure_modules()}
    for part in PARTS:
        if part.kind == "device":
            assert tuple(part.folder.split("/")) in found, part.folder
    assert len(_pure_modules()) >= 12


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_codec_and_domain_modules_do_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
