"""services/inverter/README.md's "Your inverters": every YAML block there is a valid inverter config.

A guide a newcomer copies must work as written: each block is read from the doc and loaded
as the service loads its file; the lines it makes are the ones the guide describes.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gridzero.runtime.settings import load_settings
from gridzero_inverter import domain
from gridzero_inverter.service import InverterSettings

DOC = Path(__file__).resolve().parents[1] / "README.md"


def guide_blocks() -> list[dict[str, object]]:
    text = DOC.read_text(encoding="utf-8")
    guide = text.split("## Your inverters", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", guide, re.S)]


def lines_of(config: dict[str, object], tmp_path: Path) -> list[tuple[str, list[str]]]:
    settings = load_settings(InverterSettings, data_dir=tmp_path, **config)
    lines = domain.lines_of([u.to_domain() for u in settings.units])
    return [(line.line_id, [u.unit_id for u in line.units]) for line in lines]


def test_the_guide_has_its_three_layouts(tmp_path: Path) -> None:
    one, shared, own = guide_blocks()
    assert lines_of(one, tmp_path) == [("gtn1", ["gtn1"])]
    assert lines_of(shared, tmp_path) == [("roof", ["gtn-a", "gtn-b"])]
    assert lines_of(own, tmp_path) == [("gtn1000", ["gtn1000"]), ("gtn2000", ["gtn2000"])]


def test_the_shared_line_of_the_guide_feeds_as_it_says(tmp_path: Path) -> None:
    _one, shared, _own = guide_blocks()
    settings = load_settings(InverterSettings, data_dir=tmp_path, **shared)
    (roof,) = domain.lines_of([u.to_domain() for u in settings.units])
    # "a 500 W frame for 1000 W, 600 W for 1200 W, 800 W for 1400 W and 1000 W for 1600 W"
    assert [roof.frame_for(w) for w in (1000, 1200, 1400, 1600)] == [500, 600, 800, 1000]
