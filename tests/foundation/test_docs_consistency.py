"""The docs cannot contradict the code or each other (issue 21, item 6).

Each doc is found by its title or by the text it must contain, not by a fixed path, so the
layout can move files without making these tests blind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from gridzero import contract
from gridzero.runtime.credentials import setting_writers
from gridzero_tools.docs import _all_models, render_mqtt_md

ROOT = Path(__file__).resolve().parents[2]
SIZE = "(a size)"  # a device's own current or power, never negative by its meaning


def markdown_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", ".mypy_cache", ".pytest_cache"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def doc_titled(title: str) -> Path:
    found = [p for p in markdown_files() if p.read_text(encoding="utf-8").startswith(title)]
    assert len(found) == 1, f"expected one doc starting {title!r}, found {found}"
    return found[0]


# --- one sign convention ---------------------------------------------------------------


def _lower_bound(info: FieldInfo) -> float | None:
    for meta in info.metadata:
        for name in ("ge", "gt"):
            bound = getattr(meta, name, None)
            if bound is not None:
                return float(bound)
    return None


def _signed_power_and_current_fields() -> list[tuple[str, str, str]]:
    """(model, field, description) of every A or W field that may be negative."""
    rows = []
    for model in _all_models():
        for name, info in model.model_fields.items():
            if not name.endswith(("_a", "_w")):
                continue
            bound = _lower_bound(info)
            if bound is not None and bound >= 0:
                continue  # a limit or a size: it has no sign to state
            rows.append((model.__name__, name, info.description or ""))
    return rows


def test_every_signed_current_and_power_states_its_sign() -> None:
    """A battery field states contract.BATTERY_SIGN, a grid one GRID_SIGN, a size says so."""
    conventions = (contract.BATTERY_SIGN, contract.GRID_SIGN, SIZE, "grid_w - target_w")
    missing = [
        f"{model}.{name}: {desc!r}"
        for model, name, desc in _signed_power_and_current_fields()
        if not any(c in desc for c in conventions)
    ]
    assert not missing, "fields that do not say which way is positive:\n" + "\n".join(missing)


def test_every_battery_current_and_power_has_the_one_sign() -> None:
    battery = [
        (model, name, desc)
        for model, name, desc in _signed_power_and_current_fields()
        if SIZE not in desc
        and (
            "battery" in desc
            or name in ("current_a", "setpoint_w")
            or (model == "ShuntState" and name == "power_w")
        )
    ]
    names = {(model, name) for model, name, _ in battery}
    assert {("ShuntState", "current_a"), ("ShuntState", "power_w")} <= names
    assert {("ControllerState", "setpoint_w"), ("SimTruth", "current_a")} <= names
    for model, name, desc in battery:
        assert contract.BATTERY_SIGN in desc, f"{model}.{name}: {desc!r}"


# "+ discharge", "- charge", "positive = discharging": any sign that is not the one
_OTHER_SIGN = re.compile(
    r"[(,:;]\s*(\+\s*discharg|[-−]\s*charg(e|es|ing)\b)"
    r"|positive\s*(=|when|while)?\s*discharg|negative\s*(=|when|while)?\s*charg",
    re.I,
)


def test_no_description_and_no_doc_states_another_battery_sign() -> None:
    texts = {
        f"{model.__name__}.{name}": info.description or ""
        for model in _all_models()
        for name, info in model.model_fields.items()
    }
    texts.update(
        {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in markdown_files()}
    )
    wrong = []
    for where, text in texts.items():
        for match in _OTHER_SIGN.finditer(text):
            line = text[: match.start()].count("\n") + 1
            wrong.append(f"{where}:{line}: {text[max(0, match.start() - 30) : match.end() + 10]!r}")
    assert not wrong, "a battery sign other than + charging:\n" + "\n".join(wrong)


def test_mqtt_reference_and_readme_state_the_sign_and_the_soc_topic() -> None:
    mqtt = render_mqtt_md()
    header = mqtt.split("## Topics")[0]
    assert contract.BATTERY_SIGN in header
    assert contract.GRID_SIGN in header
    assert "`soc_pct` on `<base>/shunt/state`" in header
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "+ charging (into the battery), - discharging" in readme
    assert "`soc_pct` in `gridzero/shunt/state`" in readme


# --- tables ------------------------------------------------------------------------------


def _cells(row: str) -> int:
    """Cells of a Markdown table row; ``\\|`` and ``|`` inside `code` do not split (GFM)."""
    inner = row.strip()[1:-1] if row.strip().endswith("|") else row.strip()[1:]
    return len(re.split(r"(?<!\\)\|", inner))


def _tables(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, rows) of every table outside code blocks."""
    tables: list[tuple[int, list[str]]] = []
    fenced = False
    current: list[str] = []
    start = 0
    for number, line in enumerate([*text.splitlines(), ""], start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            if not current:
                start = number
            current.append(line)
            continue
        if len(current) >= 2 and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", current[1]):
            tables.append((start, current))
        current = []
    return tables


@pytest.mark.parametrize("path", [*markdown_files()], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_row_has_the_header_column_count(path: Path) -> None:
    """Issue 21: `number | null` in a cell split it and shifted every column after it."""
    wrong = []
    for start, rows in _tables(path.read_text(encoding="utf-8")):
        columns = _cells(rows[0])
        for offset, row in enumerate(rows):
            if _cells(row) != columns:
                wrong.append(f"line {start + offset}: {_cells(row)} cells, header {columns}")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def test_the_column_check_sees_an_unescaped_bar() -> None:
    text = "| a | b |\n|---|---|\n| `x` | number | null |\n| y | number \\| null |\n"
    [(_, rows)] = _tables(text)
    assert [_cells(r) for r in rows] == [2, 2, 3, 2]


# --- soc_source, settings writers -----------------------------------------------------------


def test_shunt_doc_lists_the_soc_sources_of_the_contract() -> None:
    text = " ".join(doc_titled("# Shunt service").read_text(encoding="utf-8").split())
    listed = re.search(r"`soc_source` is one of (.*?)\.", text)
    assert listed, "the shunt doc must say: `soc_source` is one of `a`, `b`, ..."
    assert tuple(re.findall(r"`(\w+)`", listed.group(1))) == contract.SOC_SOURCES
    assert ", ".join(contract.SOC_SOURCES) in render_mqtt_md()


def test_who_may_write_settings_is_the_acl() -> None:
    writers = set(setting_writers())
    assert writers == {"telnet-console", "homeassistant", "operator"}
    for spec in contract.TOPIC_SPECS:
        if spec.pattern.endswith(("/settings/{name}/set", "/action/{name}/set")):
            assert set(spec.writers) == writers, spec.pattern
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"runtime settings and buttons may be written by (.*?) \(", readme)
    assert said, "README must say who may write runtime settings and buttons"
    assert set(re.findall(r"`([\w-]+)`", said.group(1))) == writers
    security = doc_titled("# Security").read_text(encoding="utf-8")
    table = [row for row in security.splitlines() if re.match(r"\| `[\w-]+` \|", row)]
    rows = {re.match(r"\| `([\w-]+)`", row).group(1): row for row in table}  # type: ignore[union-attr]
    documented = {
        user
        for user, row in rows.items()
        if "settings/<name>/set" in row or "settings/…/set" in row
    }
    assert documented == writers
