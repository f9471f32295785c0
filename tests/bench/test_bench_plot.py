"""`gridzero bench --plot` and `--plot-cases`: figures a person reads (issue 21, item 3).

The figures are checked as a reader meets them: the PNG file (size, gridzero's colour in the
pixels of each strip) and the figure's own title, axis labels with units, legend and the
order the lines are drawn in.
"""

from __future__ import annotations

import json
import sys
import tomllib
from array import array
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from gridzero.errors import UsageError
from gridzero_tools.bench.cli import Case, Progress, main, run_case
from gridzero_tools.bench.engine import BenchConfig, RunTrace, Violations
from gridzero_tools.bench.plot import (
    CASES_SIZE_PX,
    STYLES,
    TRACE_SIZE_PX,
    case_values,
    cases_figure,
    envelope,
    plot_traces,
    trace_figure,
)
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.profile import load_profile

SHORT = ["--profile", "load-steps", "--start", "700", "--duration", "240", "--no-progress"]


@pytest.fixture(scope="module")
def case() -> Case:
    """load-steps 700…940 s on the default plant: gridzero, one baseline and the oracles."""
    return run_case(
        load_profile("load-steps"),
        load_plant("default"),
        ["gridzero", "opendtu", "oracle"],
        BenchConfig(seed=1, duration_s=240.0, start_s=700.0),
        Progress(False, 1),
    )


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _pixels_near(img: Image.Image, colour: tuple[int, int, int], box: tuple[int, ...]) -> int:
    """Pixels within a small distance of ``colour`` inside ``box`` (left, top, right, bottom)."""
    raw = img.convert("RGB").crop(box).tobytes()
    return sum(
        1
        for i in range(0, len(raw), 3)
        if abs(raw[i] - colour[0]) + abs(raw[i + 1] - colour[1]) + abs(raw[i + 2] - colour[2]) <= 24
    )


def _data_lines(fig: Figure, index: int) -> dict[str, float]:
    """label -> zorder of the controllers' lines in strip ``index`` (not the 0 W line)."""
    ax = fig.axes[index]
    return {
        str(line.get_label()).split(" ")[0]: line.get_zorder()
        for line in ax.get_lines()
        if not str(line.get_label()).startswith("_")
    }


def test_the_battery_strip_shows_the_contracts_sign_charging_up(case: Case) -> None:
    # the trace counts battery power as delivered (+ discharge); every doc and figure uses
    # the contract's one sign, + charging, so the strip draws the trace negated
    fig = trace_figure(case.traces, case.profile, case.plant, seed=1)
    battery = fig.axes[1]
    assert "+ charging" in battery.get_ylabel()
    trace = next(t for t in case.traces if t.controller == "gridzero")
    (line,) = [ln for ln in battery.get_lines() if str(ln.get_label()).startswith("gridzero")]
    drawn = [float(y) for y in line.get_ydata()]
    _, values = envelope(trace.battery_w)
    assert drawn == [-v for v in values]
    assert any(v != 0 for v in values)


def test_trace_figure_has_title_axes_with_units_ticks_and_legend(case: Case) -> None:
    fig = trace_figure(case.traces, case.profile, case.plant, seed=1)
    title = fig.get_suptitle()
    assert "profile load-steps" in title
    assert "plant default" in title
    assert "seed 1" in title
    strips = fig.axes
    assert len(strips) == 3
    assert [ax.get_ylabel().split("\n")[0] for ax in strips] == [
        "grid power (W)",
        "battery power (W)",
        "state of charge (%)",
    ]
    assert strips[-1].get_xlabel() == "profile time (s)"
    # one shared time axis: the same limits on every strip, the 240 s of the run
    assert {ax.get_xlim() for ax in strips} == {(700.0, 940.0)}
    for ax in strips:
        assert len(ax.get_yticks()) >= 3
    labels = [t.get_text() for t in strips[-1].get_xticklabels()]
    assert any(label.strip() for label in labels)
    legend = strips[0].get_legend()
    assert legend is not None
    names = [t.get_text().split(" ")[0] for t in legend.get_texts()]
    assert names == ["gridzero", "opendtu", "oracle", "oracle-causal", "oracle-meter"]
    # each legend entry also says what that controller's grid exchange was
    assert all("Wh)" in t.get_text() for t in legend.get_texts())


def test_gridzero_is_drawn_on_top_of_every_other_line(case: Case) -> None:
    """The meter oracle's grey line used to hide gridzero's (issue 21)."""
    fig = trace_figure(case.traces, case.profile, case.plant)
    for index in range(3):
        z = _data_lines(fig, index)
        assert set(z) == {"gridzero", "opendtu", "oracle", "oracle-causal", "oracle-meter"}
        others = [v for name, v in z.items() if name != "gridzero"]
        assert z["gridzero"] > max(others)
    gz = STYLES["gridzero"]
    assert all(gz.width > s.width for name, s in STYLES.items() if name != "gridzero")


def test_png_has_the_size_and_gridzero_s_colour_in_every_strip(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "trace.png"
    fig = plot_traces(out, case.traces, case.profile, case.plant, seed=1)
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == TRACE_SIZE_PX
        colour = _rgb(STYLES["gridzero"].colour)
        height = img.size[1]
        for ax in fig.axes:
            # each strip's plotting area, in pixels from the top left
            x0, y0, x1, y1 = ax.get_window_extent().extents
            box = (round(x0), round(height - y1), round(x1), round(height - y0))
            assert _pixels_near(img, colour, box) > 100, box


def test_cli_plot_writes_a_png_and_plot_cases_a_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace_png, cases_png = tmp_path / "trace.png", tmp_path / "cases.png"
    argv = [*SHORT, "--controllers", "gridzero,opendtu", "--plot", str(trace_png)]
    argv += ["--plant", "default", "--plot-cases", str(cases_png), "--json"]
    assert main(argv) == 0
    with Image.open(trace_png) as img:
        assert (img.format, img.size) == ("PNG", TRACE_SIZE_PX)
        assert _pixels_near(img, _rgb(STYLES["gridzero"].colour), (0, 0, *img.size)) > 300
    with Image.open(cases_png) as img:
        assert (img.format, img.size) == ("PNG", CASES_SIZE_PX)
    # the saved --json output draws the same distribution again without running anything
    saved = tmp_path / "run.json"
    saved.write_text(capsys.readouterr().out, encoding="utf-8")
    again = tmp_path / "again.png"
    assert main(["--from-json", str(saved), "--plot-cases", str(again)]) == 0
    with Image.open(again) as img:
        assert (img.format, img.size) == ("PNG", CASES_SIZE_PX)


def test_plot_without_matplotlib_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Refused before any run (a day's bench takes minutes), with the command that fixes it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    out = tmp_path / "p.png"
    for option in ("--plot", "--plot-cases"):
        with pytest.raises(UsageError) as err:
            main([*SHORT, option, str(out)])
        text = str(err.value)
        assert f"{option} needs matplotlib" in text
        assert "./run.sh bench" in text
        assert "./run.sh install plot" in text
    assert not out.exists()


def test_from_json_refuses_what_it_cannot_draw(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"cases": []}), encoding="utf-8")
    with pytest.raises(UsageError, match="no 'cases' list"):
        main(["--from-json", str(saved), "--plot-cases", str(tmp_path / "c.png")])
    with pytest.raises(UsageError, match="--plot needs the runs' traces"):
        main(["--from-json", str(saved), "--plot", str(tmp_path / "p.png")])
    with pytest.raises(UsageError, match="give --plot-cases"):
        main(["--from-json", str(saved)])


def _doc(profile: str, **abs_grid: float) -> dict[str, object]:
    rows = [{"controller": k.replace("_", "-"), "abs_grid_wh": v} for k, v in abs_grid.items()]
    return {"profile": profile, "plant": "default", "controllers": rows}


def test_cases_figure_shows_each_controller_s_distribution_and_worst_case() -> None:
    docs = [
        _doc("h1", gridzero=101.0, opendtu=110.0, oracle_meter=100.0),
        _doc("h2", gridzero=230.0, opendtu=215.0, oracle_meter=200.0),
        _doc("h3", gridzero=52.0, opendtu=60.0, oracle_meter=50.0),
    ]
    cases = case_values(docs, "excess_over_meter_oracle_wh")
    assert [c.label for c in cases] == ["h1 / default", "h2 / default", "h3 / default"]
    assert cases[1].values == {"gridzero": 30.0, "opendtu": 15.0}
    fig = cases_figure(cases, "excess_over_meter_oracle_wh")
    (ax,) = fig.axes
    assert "3 cases" in fig.get_suptitle()
    assert ax.get_ylabel().endswith("(Wh)")
    assert ax.get_xlabel() == "controller"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gridzero", "opendtu"]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "gridzero (median 2.0)",
        "opendtu (median 10.0)",
    ]
    # the worst household of each controller is named next to its dot
    assert {t.get_text() for t in ax.texts} == {"h2 / default"}
    with pytest.raises(UsageError, match="unknown"):
        case_values(docs, "no_such_metric")


def _trace(hours: float) -> RunTrace:
    n = int(hours * 3600 / 0.25)
    flat = array("d", [0.0] * n)
    return RunTrace(
        "gridzero", 0.0, 0.25, flat, flat, flat, array("d", [50.0] * n),
        0.0, 0.0, 0.0, 0.0, Violations(), n * 0.25,
    )  # fmt: skip


def test_a_day_reads_in_hours_and_minutes() -> None:
    fig = trace_figure([_trace(24.0)], "sunny-day", "default")
    bottom = fig.axes[-1]
    assert bottom.get_xlabel() == "profile time (h:mm)"
    fig.canvas.draw()
    labels = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert "12:00" in labels
    assert all(":" in label for label in labels)


def test_envelope_keeps_a_short_spike_and_bounds_the_points() -> None:
    values = [0.0] * 345_600  # a day at 0.25 s
    values[123_457] = 3000.0
    idx, ys = envelope(values, 4000)
    assert len(idx) <= 4000
    assert max(ys) == 3000.0
    assert idx == sorted(idx)
    short = [1.0, 2.0, 3.0]
    assert envelope(short, 4000) == ([0, 1, 2], short)


def test_matplotlib_stays_out_of_the_runtime_install() -> None:
    """Only the tools' `plot` extra (and the `dev` group) bring it; no service or library
    depends on it, so no device image holds it."""
    root = Path(__file__).resolve().parents[2]
    for pyproject in [root / "lib" / "pyproject.toml", *root.glob("services/*/pyproject.toml")]:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        assert not any("matplotlib" in d for d in project["dependencies"]), pyproject
    tools = tomllib.loads((root / "tools" / "pyproject.toml").read_text(encoding="utf-8"))
    assert not any("matplotlib" in d for d in tools["project"]["dependencies"])
    assert tools["project"]["optional-dependencies"]["plot"] == ["matplotlib>=3.8,<4"]
    lock = tomllib.loads((root / "uv.lock").read_text(encoding="utf-8"))
    assert any(p["name"] == "matplotlib" for p in lock["package"])
