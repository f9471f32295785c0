"""docs/from-housebatt.md: every gridzero default in its table is the code's default, and the
page is linked from the README."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gridzero_bms.balancing import BalanceSettings
from gridzero_bms.protection import ProtectionSettings
from gridzero_bms.service import BmsSettings
from gridzero_controller.settings import ControllerSettings
from gridzero_inverter.service import UnitConfig
from gridzero_shunt.settings import ShuntSettings
from gridzero_telnet_console.settings import TelnetConsoleSettings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "from-housebatt.md"


def _rows() -> list[tuple[str, str, str]]:
    """(service, setting path, default) of each row of the defaults table."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- defaults -->\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        service, _, path = cells[2].strip("`").partition(" ")
        rows.append((service, path, cells[3]))
    return rows


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def _code_default(service: str, path: str) -> Any:
    head, _, name = path.rpartition(".")
    if service == "bms":
        nested = {"protection": ProtectionSettings, "balance": BalanceSettings}
        return _default(nested[head], name) if head else _default(BmsSettings, name)
    models: dict[str, type[BaseModel]] = {
        "inverter": UnitConfig,
        "controller": ControllerSettings,
        "telnet-console": TelnetConsoleSettings,
        "shunt": ShuntSettings,
    }
    return _default(models[service], name)


def _shown(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


ROWS = _rows()


def test_the_table_has_every_difference_the_issue_names() -> None:
    named = {path for _, path, _ in ROWS}
    for setting in (
        "units[].max_power_w",
        "current_per_string_a",
        "protection.charge_end_v",
        "protection.under_temperature_c",
        "balance.hysteresis_v",
        "temp_variant",
        "gen1_module3",
        "soc_min_pct",
        "soc_max_pct",
        "port",
    ):
        assert setting in named


@pytest.mark.parametrize(("service", "path", "shown"), ROWS)
def test_each_gridzero_default_is_the_codes(service: str, path: str, shown: str) -> None:
    value = _code_default(service, path.replace("units[].", ""))
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert float(shown) == pytest.approx(value, abs=1e-9), f"{service} {path}"
    else:
        assert shown == _shown(value), f"{service} {path}"


def test_the_readme_links_the_page() -> None:
    assert "docs/from-housebatt.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^# Coming from housebatt$", DOC.read_text(encoding="utf-8"), re.M)
