"""docs/safety.md is the safety case: every test and fault-matrix scenario it names exists.

A barrier whose proof was renamed or deleted would otherwise leave the case pointing at
nothing, with no one noticing."""

from __future__ import annotations

import re
from pathlib import Path

from gridzero_tools.faults import scenarios

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "safety.md"


def _table() -> str:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- safety-table:begin -->", "<!-- safety-table:end -->"
    return text[text.index(begin) + len(begin) : text.index(end)]


def test_every_named_test_exists() -> None:
    named = re.findall(
        r"((?:services/[\w-]+/)?tests/[\w/]+\.py)(?:::(\w+))?", DOC.read_text(encoding="utf-8")
    )
    assert len(named) > 40
    missing = []
    for path, name in named:
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^def {name}\(", source.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_named_scenario_is_in_the_fault_matrix() -> None:
    keys: list[str] = []
    for cell in re.findall(r"matrix ((?:`\w+`(?:, )?)+)", _table()):
        keys += re.findall(r"`(\w+)`", cell)
    assert len(keys) > 15
    assert sorted(set(keys) - set(scenarios.SCENARIOS)) == []


def test_every_row_has_a_hazard_a_barrier_a_test_and_a_time() -> None:
    for line in _table().strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 5, line
        if cells[0].startswith("**"):
            continue  # a section heading
        assert all(cells), line
