"""The bench's figures, drawn with matplotlib (Agg, no window).

matplotlib is an optional extra (`pip install -e '.[plot]'`, which `./run.sh bench` does): it
stays out of the runtime install and the device images. `require_matplotlib` says so, naming
the fix, before the bench spends minutes on a run whose figure it could not draw.

Two figures:

- `trace_figure`: one case over time, three strips sharing the time axis: grid power
  (W, + import), battery power (W, + charging: the contract's one battery sign; the bench's
  trace counts delivered power, so it is drawn negated) and state of charge (%), one line per
  controller. gridzero is drawn on top in a strong colour; the oracles thin and light, behind.
- `cases_figure`: one metric over many cases (profiles, plants, generated households), a box
  per controller with every case as a dot, the worst case of each controller named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gridzero.errors import UsageError
from gridzero_tools.bench.engine import RunTrace

if TYPE_CHECKING:  # only for the types: matplotlib is imported when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING = (
    "{option} needs matplotlib, an optional extra not in the runtime install: "
    "run the bench with ./run.sh bench (it installs it), or add it to .venv with "
    "./run.sh install plot (pip: pip install -c constraints.txt -e '.[plot]')"
)

# 100 dots per inch: FIGSIZE_IN inches are exactly this many pixels.
DPI = 100
TRACE_SIZE_PX = (1200, 900)
CASES_SIZE_PX = (1200, 700)
# A day at 0.25 s is 345,600 samples per line; per bucket of the time axis the minimum and
# the maximum are kept (in time order), so spikes stay visible at a fraction of the points.
MAX_POINTS = 4000


@dataclass(frozen=True, slots=True)
class LineStyle:
    """How one controller is drawn."""

    colour: str
    width: float
    zorder: int
    dash: str = "-"
    alpha: float = 1.0


# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies) for the
# baselines; gridzero a strong blue, wider and on top; the oracles thin, light and behind:
# they are references, and the grey meter oracle used to hide gridzero's line.
GRIDZERO = "gridzero"
STYLES: dict[str, LineStyle] = {
    GRIDZERO: LineStyle("#0033cc", 1.8, 10),
    "housebatt": LineStyle("#e69f00", 1.0, 6),
    "soyosource-meter": LineStyle("#009e73", 1.0, 6),
    "opendtu": LineStyle("#cc79a7", 1.0, 6),
    "oracle": LineStyle("#000000", 0.7, 3, "--", 0.6),
    "oracle-causal": LineStyle("#777777", 0.7, 2, ":", 0.8),
    "oracle-meter": LineStyle("#aaaaaa", 0.8, 2, "-", 0.8),
}
OTHER = LineStyle("#555555", 1.0, 5)
# Units of the case metrics (the keys of Metrics.as_dict and the derived ones below).
METRIC_UNITS: dict[str, str] = {
    "import_wh": "Wh",
    "export_wh": "Wh",
    "abs_grid_wh": "Wh",
    "avoidable_wh": "Wh",
    "excess_over_meter_oracle_wh": "Wh",
    "mean_abs_grid_w": "W",
    "mean_settling_s": "s",
    "unsettled_steps": "steps",
    "reversals_per_min": "1/min",
    "worst_reversals_per_min": "1/min",
    "oscillating_minutes": "min",
    "battery_throughput_wh": "Wh",
    "violations_total": "count",
}
METRIC_NAMES: dict[str, str] = {
    "import_wh": "grid import",
    "export_wh": "grid export",
    "abs_grid_wh": "∫|grid|",
    "avoidable_wh": "avoidable exchange (∫|grid| − oracle's)",
    "excess_over_meter_oracle_wh": "excess over the meter oracle (∫|grid| − oracle-meter's)",
    "mean_abs_grid_w": "mean |grid|",
    "mean_settling_s": "mean settling time",
    "unsettled_steps": "unsettled load steps",
    "reversals_per_min": "reversals per minute",
    "worst_reversals_per_min": "worst reversals in a minute",
    "oscillating_minutes": "oscillating minutes",
    "battery_throughput_wh": "battery throughput",
    "violations_total": "limit violations",
}


def style_of(controller: str) -> LineStyle:
    """The style of a controller (an unknown one dark grey, between baselines and oracles)."""
    return STYLES.get(controller, OTHER)


def require_matplotlib(option: str) -> None:
    """Raise a UsageError naming the fix when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: only the figures need it
    except ImportError as exc:
        raise UsageError(MISSING.format(option=option)) from exc
    # No window, no display: the Agg raster backend, whatever the environment says.
    matplotlib.use("Agg")


def _new_figure(size_px: tuple[int, int]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def envelope(
    values: Sequence[float], max_points: int = MAX_POINTS
) -> tuple[list[int], list[float]]:
    """Indices and values of a line thinned to about ``max_points``: per bucket its minimum
    and maximum, in time order (a short spike survives, unlike plain decimation)."""
    n = len(values)
    if n <= max_points:
        return list(range(n)), list(values)
    buckets = max(1, max_points // 2)
    idx: list[int] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        i_min = lo + min(range(len(chunk)), key=chunk.__getitem__)
        i_max = lo + max(range(len(chunk)), key=chunk.__getitem__)
        idx.extend(sorted({i_min, i_max}))
    return idx, [values[i] for i in idx]


def _hmm(seconds: float, _pos: object = None) -> str:
    """Profile time as h:mm (the profiles start at midnight)."""
    minutes = math.floor(seconds / 60.0 + 0.5)
    return f"{minutes // 60}:{minutes % 60:02d}"


def _time_axis(ax: Axes, start_s: float, end_s: float) -> str:
    """Ticks for the shared time axis; returns its label with the unit."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator  # noqa: PLC0415

    span = end_s - start_s
    if span <= 2 * 3600:
        return "profile time (s)"
    step_min = next((m for m in (15, 30, 60, 120, 180, 240) if span / (m * 60) <= 12), 360)
    ax.xaxis.set_major_locator(MultipleLocator(step_min * 60.0))
    ax.xaxis.set_major_formatter(FuncFormatter(_hmm))
    return "profile time (h:mm)"


def _label(trace: RunTrace) -> str:
    return f"{trace.controller} (∫|grid| {trace.abs_grid_wh:.1f} Wh)"


def trace_figure(
    traces: Sequence[RunTrace],
    profile: str,
    plant: str,
    seed: int | None = None,
    note: str = "",
) -> Figure:
    """One case over time: grid power, battery power and SoC, one line per controller."""
    fig = _new_figure(TRACE_SIZE_PX)
    axes = fig.subplots(3, 1, sharex=True)
    strips = (  # field, its sign on the figure, label
        ("grid_w", 1.0, "grid power (W)\n+ import, − export"),
        # the trace counts battery power as delivered; the figure shows the contract's sign
        ("battery_w", -1.0, "battery power (W)\n+ charging, − discharging"),
        ("soc_pct", 1.0, "state of charge (%)"),
    )
    start = min((t.start_s for t in traces), default=0.0)
    end = max((t.start_s + t.duration_s for t in traces), default=1.0)
    for ax, (field, sign, ylabel) in zip(axes, strips, strict=True):
        for trace in traces:
            series: Sequence[float] = getattr(trace, field)
            idx, ys = envelope(series)
            ys = [sign * y for y in ys]
            xs = [trace.start_s + i * trace.tick_s for i in idx]
            st = style_of(trace.controller)
            ax.plot(
                xs,
                ys,
                color=st.colour,
                linewidth=st.width,
                linestyle=st.dash,
                alpha=st.alpha,
                zorder=st.zorder,
                label=_label(trace),
            )
        ax.set_ylabel(ylabel)
        ax.grid(True, color="#e6e6e6", linewidth=0.6, zorder=0)
        if field != "soc_pct":
            ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
    axes[-1].set_xlim(start, end)
    axes[-1].set_xlabel(_time_axis(axes[-1], start, end))
    title = f"gridzero bench · profile {profile} · plant {plant}"
    if seed is not None:
        title += f" · seed {seed}"
    fig.suptitle(title + (f"\n{note}" if note else ""))
    axes[0].legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="controller"
    )
    return fig


def plot_traces(
    path: Path,
    traces: Sequence[RunTrace],
    profile: str,
    plant: str,
    seed: int | None = None,
    note: str = "",
) -> Figure:
    """Write `trace_figure` to ``path`` (PNG, 1200 × 900 px) and return it."""
    require_matplotlib("--plot")
    fig = trace_figure(traces, profile, plant, seed, note)
    fig.savefig(path, format="png", dpi=DPI)
    return fig


@dataclass(frozen=True, slots=True)
class CaseValues:
    """One case of a distribution: its label and one value per controller."""

    label: str
    values: Mapping[str, float]


def case_values(cases: Sequence[Mapping[str, object]], metric: str) -> list[CaseValues]:
    """``metric`` per controller per case, from the bench's JSON cases (`--json`'s "cases").

    ``excess_over_meter_oracle_wh`` is derived: ∫|grid| minus the meter oracle's in the same
    case (a case without the meter oracle has none). A controller without the value (None) is
    left out of that case."""
    if metric not in METRIC_UNITS:
        raise UsageError(f"--plot-metric {metric!r}: unknown; known: {', '.join(METRIC_UNITS)}")
    out: list[CaseValues] = []
    for case in cases:
        rows = case.get("controllers")
        if not isinstance(rows, list):
            raise UsageError(f"case {case.get('profile')!r}: no 'controllers' list")
        by = {str(r["controller"]): r for r in rows if isinstance(r, dict)}
        values: dict[str, float] = {}
        for name, row in by.items():
            if metric == "excess_over_meter_oracle_wh":
                ref = by.get("oracle-meter")
                if ref is None or name == "oracle-meter":
                    continue
                value: object = float(row["abs_grid_wh"]) - float(ref["abs_grid_wh"])
            else:
                value = row.get(metric)
            if isinstance(value, int | float):
                values[name] = float(value)
        out.append(CaseValues(f"{case.get('profile')} / {case.get('plant')}", values))
    return out


def _jitter(i: int, n: int) -> float:
    """A fixed spread of the dots around their box (the same figure every run)."""
    return 0.0 if n <= 1 else -0.18 + 0.36 * ((i * 0.618034) % 1.0)


def cases_figure(cases: Sequence[CaseValues], metric: str, title: str = "") -> Figure:
    """A box per controller of ``metric`` over the cases, every case a dot, the worst named."""
    fig = _new_figure(CASES_SIZE_PX)
    ax = fig.subplots()
    order = [c for c in STYLES if any(c in v.values for v in cases)]
    order += sorted({c for v in cases for c in v.values} - set(order))
    data = [[v.values[c] for v in cases if c in v.values] for c in order]
    boxes = ax.boxplot(
        data,
        positions=range(len(order)),
        widths=0.55,
        showfliers=False,  # every case is drawn as a dot already
        patch_artist=True,
        medianprops={"color": "#222222", "linewidth": 1.2},
    )
    for name, box in zip(order, boxes["boxes"], strict=True):
        st = style_of(name)
        box.set_facecolor(st.colour)
        box.set_alpha(0.35 if name == GRIDZERO else 0.15)
        box.set_zorder(st.zorder)
    for pos, name in enumerate(order):
        st = style_of(name)
        points = [(v.label, v.values[name]) for v in cases if name in v.values]
        xs = [pos + _jitter(i, len(points)) for i in range(len(points))]
        ax.scatter(
            xs,
            [p[1] for p in points],
            s=28 if name == GRIDZERO else 14,
            color=st.colour,
            edgecolors="white",
            linewidths=0.4,
            zorder=st.zorder + 10,
            label=f"{name} (median {_median([p[1] for p in points]):.1f})",
        )
        if points:
            worst = max(range(len(points)), key=lambda i: points[i][1])
            ax.annotate(
                points[worst][0],
                (xs[worst], points[worst][1]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize="x-small",
                color=st.colour if name == GRIDZERO else "#444444",
            )
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("controller")
    ax.set_ylabel(f"{METRIC_NAMES[metric]} ({METRIC_UNITS[metric]})")
    ax.axhline(0.0, color="#999999", linewidth=0.8, zorder=1)
    ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.6, zorder=0)
    fig.suptitle(
        (title or f"gridzero bench · {METRIC_NAMES[metric]}")
        + f" · {len(cases)} case{'s' if len(cases) != 1 else ''}; worst case of each named"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="controller")
    return fig


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def plot_cases(
    path: Path, cases: Sequence[Mapping[str, object]], metric: str, title: str = ""
) -> Figure:
    """Write `cases_figure` of the bench's JSON cases to ``path`` (PNG, 1200 × 700 px)."""
    require_matplotlib("--plot-cases")
    fig = cases_figure(case_values(cases, metric), metric, title)
    fig.savefig(path, format="png", dpi=DPI)
    return fig
