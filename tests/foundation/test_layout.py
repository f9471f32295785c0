"""The layout of the design card, checked: every service in services/<name>/ with its code,
tests, doc, Dockerfile and its own dependencies; no service imports another; the library
imports no service and no tool; the tools ship in no device image."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from gridzero.registry import PARTS, Part

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PARTS = [p for p in PARTS if p.kind != "tool"]
OWN = {p.package.split(".")[0] for p in PARTS} | {"gridzero"}
# import name -> distribution, for every third-party import a service may make
DISTRIBUTIONS = {
    "can": "python-can",
    "serial": "pyserial",
    "smbus2": "smbus2",
    "yaml": "PyYAML",
    "pydantic": "pydantic",
    "pydantic_settings": "pydantic-settings",
    "paho": "paho-mqtt",
}


def _imports(folder: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """top-level module imported -> the files (relative to ROOT) that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(root)))
    return found


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    names = set()
    for spec in project["dependencies"]:
        name = spec
        for stop in "<>=!~[; ":
            name = name.split(stop)[0]
        names.add(name)
    return names


def test_the_top_level_is_the_design_cards() -> None:
    for entry in ("services", "mosquitto", "tests", "compose.yaml", "README.md"):
        assert (ROOT / entry).exists(), entry
    folders = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
    assert folders == {p.folder.removeprefix("services/") for p in SERVICE_PARTS}


@pytest.mark.parametrize("part", SERVICE_PARTS, ids=lambda p: p.name)
def test_a_service_folder_holds_all_of_the_service(part: Part) -> None:
    folder = ROOT / part.folder
    for entry in ("pyproject.toml", "Dockerfile", "README.md", "tests", part.package):
        assert (folder / entry).exists(), f"{part.folder}/{entry} is missing"
    assert (folder / part.package / "service.py").exists()
    assert list((folder / "tests").glob("test_*.py")), f"{part.folder}/tests has no tests"
    project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == part.distribution
    dockerfile = (folder / "Dockerfile").read_text(encoding="utf-8")
    assert f"install.sh {part.distribution}\n" in dockerfile


@pytest.mark.parametrize("part", SERVICE_PARTS, ids=lambda p: p.name)
def test_no_service_imports_another_or_a_tool(part: Part) -> None:
    imported = _imports(ROOT / part.folder / part.package)
    others = (OWN - {part.package, "gridzero"}) & set(imported)
    assert not others, {name: imported[name] for name in others}


@pytest.mark.parametrize("part", SERVICE_PARTS, ids=lambda p: p.name)
def test_no_service_test_imports_another_service(part: Part) -> None:
    """A service's tests may drive it with the simulator (a tool playing the device on the
    other side of the wire), never with another service's code."""
    imported = _imports(ROOT / part.folder / "tests")
    others = (OWN - {part.package, "gridzero", "gridzero_tools"}) & set(imported)
    assert not others, {name: imported[name] for name in others}


def test_the_library_imports_no_service_and_no_tool() -> None:
    imported = _imports(ROOT / "lib" / "gridzero")
    foreign = (OWN - {"gridzero"}) & set(imported)
    assert not foreign, {name: imported[name] for name in foreign}


@pytest.mark.parametrize("part", SERVICE_PARTS, ids=lambda p: p.name)
def test_a_service_declares_what_its_code_imports(part: Part) -> None:
    """Each image holds the library, the service and its declared dependencies only: an
    undeclared import would fail in the image, a needless one would only make it bigger."""
    imported = set(_imports(ROOT / part.folder / part.package))
    needed = {DISTRIBUTIONS[name] for name in imported if name in DISTRIBUTIONS}
    library = _declared(ROOT / "lib" / "pyproject.toml")
    declared = _declared(ROOT / part.folder / "pyproject.toml")
    assert "gridzero" in declared
    assert needed - library <= declared, (
        f"{part.name} imports {sorted(needed - library - declared)}"
    )
    assert declared - {"gridzero"} <= needed, f"{part.name} declares {sorted(declared - needed)}"


def test_the_guard_finds_an_import_of_another_service(tmp_path: Path) -> None:
    """The check above is not vacuous: it sees both import forms."""
    (tmp_path / "x.py").write_text("import gridzero_bms.codec\nfrom gridzero_shunt import soc\n")
    assert set(_imports(tmp_path, tmp_path)) == {"gridzero_bms", "gridzero_shunt"}
