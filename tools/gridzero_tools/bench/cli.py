"""`gridzero bench`: controllers in closed loop with the plant model, in simulated time.

    gridzero bench                                   # load-steps profile, default plant, all
    gridzero bench --profile sunny-day --plant default --json
    gridzero bench --profile my.csv --plants my-plants/ --controllers gridzero,opendtu
    gridzero bench --plot steps.png --duration 900
    gridzero bench --plants tools/gridzero_tools/data/plants --plot-cases plants.png
    gridzero bench --from-json results.json --plot-cases cases.png --plot-metric abs_grid_wh
    gridzero bench --households 100 --seed 2 --duration 1800 --jobs 2   # generated households
    gridzero bench --profile sunny-day --tariff cheap-night    # cost per day, + gridzero+schedule

Prints, per profile and plant, a table (or JSON with --json) of what the grid saw for each
controller, the oracle's physical limit and the targets of services/controller/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gridzero.errors import SettingsError, UsageError
from gridzero_controller.schedule import time_zone
from gridzero_controller.settings import ControllerSettings, update_settings
from gridzero_tools.bench.baselines import (
    BenchController,
    GridzeroBench,
    HousebattController,
    OpenDtuController,
    ScheduledGridzero,
    SoyosourceMeterController,
)
from gridzero_tools.bench.bound import BoundResult, lower_bound, require_highspy
from gridzero_tools.bench.engine import BenchConfig, RunTrace, run, units_of
from gridzero_tools.bench.households import generate
from gridzero_tools.bench.metrics import LoadStep, Metrics, find_steps, metrics_for, net_load_series
from gridzero_tools.bench.oracle import CAUSAL_LEAD_S, ORACLE_LEADS_S, OracleController
from gridzero_tools.bench.plot import (
    METRIC_UNITS,
    case_values,
    plot_cases,
    plot_traces,
    require_matplotlib,
)
from gridzero_tools.bench.population import (
    cost_report,
    distribution,
    measure_of,
    progress_printer,
    report,
    run_households,
    savings,
    target_counts,
)
from gridzero_tools.bench.tariff import (
    Cost,
    Tariff,
    cost_table,
    load_tariff,
    run_cost,
    schedule_settings,
)
from gridzero_tools.sim.params import PlantParams, load_plant
from gridzero_tools.sim.profile import Profile, load_profile

CONTROLLERS = ("gridzero", "housebatt", "soyosource-meter", "opendtu", "oracle")
CAUSAL = "oracle-causal"
METER_ORACLE = "oracle-meter"
BASELINES = ("housebatt", "soyosource-meter", "opendtu")
# Exit status when a run beats the lower bound (2 is argparse's, 1 a usage error's).
BELOW_BOUND_EXIT = 3
SCHEDULED = "gridzero+schedule"
# The bench's day: the profile's seconds count from this midnight (UTC, a Wednesday).
BENCH_DAY_WALL_S = 1736899200.0  # 2025-01-15 00:00 UTC


def make_controller(
    name: str,
    params: PlantParams,
    profile: Profile,
    settings: ControllerSettings,
    lead_s: float = 1.5,
) -> BenchController:
    """A fresh controller by name."""
    units = units_of(params)
    if name == "gridzero":
        return GridzeroBench(settings, units)
    if name == "housebatt":
        return HousebattController(units)
    if name == "soyosource-meter":
        return SoyosourceMeterController(units)
    if name == "opendtu":
        return OpenDtuController(
            units,
            soc_stop_pct=settings.soc_min_pct,
            soc_start_pct=settings.soc_min_pct + settings.soc_hysteresis_pct,
            charge_stop_soc_pct=settings.soc_max_pct,
            charger_min_current_a=settings.charger_min_current_a,
            charger_max_power_w=params.charger.max_power_w,
            target_w=settings.target_grid_w,
        )
    if name == "oracle":
        return OracleController(params, profile, settings, units, lead_s)
    raise UsageError(f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)}")


def _nominal_v(params: PlantParams) -> float:
    """Nominal pack voltage: 3.7 V per series cell."""
    return 3.7 * params.pack.cells_per_module * params.pack.modules_per_string


def bench_settings(params: PlantParams) -> ControllerSettings:
    """gridzero's defaults, with the plant's charger data (as an installer would set them)."""
    ch = params.charger
    return ControllerSettings(
        charger_max_current_a=ch.max_fraction * ch.amps_per_fraction,
        charger_min_current_a=max(5.2, ch.min_fraction * ch.amps_per_fraction),
        max_charge_w=ch.max_power_w,
        max_discharge_w=sum(i.max_power_w for i in params.inverters),
        meter_latency_s=params.meter.latency_s,
        # The plant guess from the inverters' data sheets, as an installer would set it: the
        # set-point is shared equally, so every unit ramps at once and the total output slews
        # at the sum of their rates; its lag is their mean.
        plant_time_constant_s=max(
            0.05, sum(i.lag_s for i in params.inverters) / len(params.inverters)
        ),
        plant_ramp_w_per_s=sum(i.ramp_w_per_s for i in params.inverters),
        # Frame to output: the service's tick and MQTT (0.2 s) plus the inverter's own delay.
        plant_dead_time_s=0.2 + max(i.dead_time_s for i in params.inverters),
        # The rectifier's current ramp at the pack's nominal voltage, as AC power.
        charger_ramp_w_per_s=ch.current_ramp_a_per_s * _nominal_v(params) / ch.efficiency,
    )


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, enabled: bool, total_runs: int) -> None:
        self.enabled = enabled
        self.total = max(1, total_runs)
        self.done = 0
        self.label = ""
        self._last = 0.0

    def start(self, label: str) -> Callable[[float], None]:
        """Callback for one run."""
        self.label = label

        def update(frac: float) -> None:
            self.show(frac)

        return update

    def show(self, frac: float) -> None:
        """Redraw (at most ~10 times a second)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and frac < 1.0:
            return
        self._last = now
        overall = (self.done + frac) / self.total
        width = 30
        filled = round(width * overall)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {overall * 100:5.1f}% {self.label:<40}"
        )
        sys.stderr.flush()

    def finish_run(self) -> None:
        """One run done."""
        self.done += 1

    def close(self) -> None:
        """Clear the line."""
        if self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


@dataclass(slots=True)
class Case:
    """One profile on one plant, every controller."""

    profile: str
    plant: str
    steps: list[LoadStep]
    metrics: list[Metrics]
    traces: list[RunTrace]
    oracle_lead_s: float | None
    bound: BoundResult | None = None
    costs: list[Cost] | None = None
    tariff_unit: str = ""


def run_case(
    profile: Profile,
    params: PlantParams,
    controllers: Sequence[str],
    config: BenchConfig,
    progress: Progress,
    with_bound: bool = True,
    tariff: Tariff | None = None,
) -> Case:
    """Run every controller (the oracle with each lead, keeping the best), and the bound."""
    settings = bench_settings(params)
    traces: dict[str, RunTrace] = {}
    lead_best: float | None = None
    if "oracle" in controllers:
        best: RunTrace | None = None
        for lead in ORACLE_LEADS_S:
            ctl = make_controller("oracle", params, profile, settings, lead)
            trace = run(
                ctl, params, profile, config, progress.start(f"oracle lead {lead} s {profile.name}")
            )
            progress.finish_run()
            if best is None or trace.abs_grid_wh < best.abs_grid_wh:
                best, lead_best = trace, lead
        assert best is not None
        traces["oracle"] = best
        ctl = make_controller("oracle", params, profile, settings, CAUSAL_LEAD_S)
        ctl.name = CAUSAL
        traces[CAUSAL] = run(
            ctl, params, profile, config, progress.start(f"oracle lead 0 {profile.name}")
        )
        progress.finish_run()
        meter_ctl = OracleController(
            params, profile, settings, units_of(params), CAUSAL_LEAD_S, meter_only=True
        )
        meter_ctl.name = METER_ORACLE
        traces[METER_ORACLE] = run(
            meter_ctl, params, profile, config, progress.start(f"oracle meter {profile.name}")
        )
        progress.finish_run()
    for name in controllers:
        if name == "oracle":
            continue
        ctl = make_controller(name, params, profile, settings)
        traces[name] = run(ctl, params, profile, config, progress.start(f"{name} {profile.name}"))
        progress.finish_run()
    if tariff is not None:
        ctl = scheduled_controller(params, settings, tariff)
        traces[SCHEDULED] = run(ctl, params, profile, config, progress.start(f"{SCHEDULED}"))
        progress.finish_run()
    first = next(iter(traces.values()))
    end = first.start_s + first.duration_s
    steps = find_steps(profile, params, first.start_s, end)
    oracle_abs = traces["oracle"].abs_grid_wh if "oracle" in traces else None
    ordered = [n for n in (*controllers, SCHEDULED, CAUSAL, METER_ORACLE) if n in traces]
    net = net_load_series(profile, params, first.start_s, first.tick_s, len(first.grid_w))
    metrics = [metrics_for(traces[n], steps, oracle_abs, net) for n in ordered]
    bound = lower_bound(profile, params, config.seed, first.start_s, end) if with_bound else None
    costs = None if tariff is None else [costs_of(traces[n], params, tariff) for n in ordered]
    return Case(
        profile.name,
        params.name,
        steps,
        metrics,
        [traces[n] for n in ordered],
        lead_best,
        bound,
        costs,
        "" if tariff is None else tariff.unit,
    )


def scheduled_controller(
    params: PlantParams, settings: ControllerSettings, tariff: Tariff
) -> ScheduledGridzero:
    """gridzero with the tariff's schedule (tariff.schedule_settings) on the bench's day."""
    try:
        scheduled = update_settings(settings, schedule_settings(tariff, settings.max_charge_w))
    except SettingsError as exc:
        raise UsageError(f"tariff {tariff.name}: gridzero settings refused: {exc}") from exc
    return ScheduledGridzero(
        scheduled,
        units_of(params),
        day_start_wall_s=BENCH_DAY_WALL_S + tariff.clock_offset_s,
        zone=time_zone("UTC"),
        price_at=tariff.import_at,
    )


def costs_of(trace: RunTrace, params: PlantParams, tariff: Tariff) -> Cost:
    """One run's cost on the tariff (tariff.run_cost)."""
    pack = params.pack
    cells = pack.modules * pack.cells_per_module
    capacity_kwh = cells * pack.cell_capacity_ah * 3.7 / 1000.0
    efficiency = sum(i.efficiency for i in params.inverters) / len(params.inverters)
    return run_cost(
        trace.controller,
        trace.grid_w,
        trace.soc_pct,
        trace.start_s,
        trace.tick_s,
        tariff,
        capacity_kwh=capacity_kwh,
        inverter_efficiency=efficiency,
        start_soc_pct=pack.initial_soc_pct,
    )


def below_bound(case: Case) -> list[str]:
    """Runs that beat the bound by more than its tolerance: impossible for the model, so a bug
    in the bench or the plant (tools/gridzero_tools/bench/bound.py says why)."""
    b = case.bound
    if b is None:
        return []
    floor = b.abs_grid_wh - b.tolerance_wh
    return [
        f"{case.profile} / {case.plant}: {m.controller} ∫|grid| {m.abs_grid_wh:.2f} Wh is below "
        f"the lower bound {b.abs_grid_wh:.2f} Wh (tolerance {b.tolerance_wh:.2f} Wh)"
        + (
            f"; the run had {sum(m.violations.values())} limit violation(s)"
            if sum(m.violations.values())
            else ""
        )
        for m in case.metrics
        if m.abs_grid_wh < floor
    ]


def excesses(case: Case, m: Metrics) -> tuple[float | None, float | None]:
    """(excess over the bound, excess over the meter oracle) of one controller, Wh."""
    by = {x.controller: x for x in case.metrics}
    over_bound = None if case.bound is None else m.abs_grid_wh - case.bound.abs_grid_wh
    seen = by.get(METER_ORACLE)
    return over_bound, None if seen is None else m.abs_grid_wh - seen.abs_grid_wh


def _excess_ratio(g: Metrics, ref: Metrics | None, baselines: list[Metrics]) -> float | None:
    """gridzero's excess over ``ref`` divided by the best baseline's (None: no room)."""
    if ref is None or not baselines:
        return None
    room = min(b.abs_grid_wh for b in baselines) - ref.abs_grid_wh
    if room <= 0:
        return None
    return round((g.abs_grid_wh - ref.abs_grid_wh) / room, 3)


def targets(case: Case) -> dict[str, object]:
    """The issue's targets, evaluated for gridzero on this case."""
    by = {m.controller: m for m in case.metrics}
    out: dict[str, object] = {}
    g = by.get("gridzero")
    if g is None:
        return out
    base = [by[b].avoidable_wh for b in BASELINES if b in by and by[b].avoidable_wh is not None]
    if g.avoidable_wh is not None and base:
        best = min(v for v in base if v is not None)
        # A best baseline at or below the oracle leaves no room to compare (it broke a rule
        # the oracle keeps): the target is then undefined, not met or failed.
        out["avoidable_vs_best_baseline"] = None if best <= 0 else round(g.avoidable_wh / best, 3)
        out["avoidable_at_most_half_of_best_baseline"] = (
            None if best <= 0 else g.avoidable_wh <= 0.5 * best
        )
    # What no causal controller can avoid (anticipation) is taken out: the excess over the
    # causal oracle, and over the one that sees the load only through the meter, against the
    # best baseline's excess over the same reference.
    for key, ref in (("causal", CAUSAL), ("meter_oracle", METER_ORACLE)):
        ratio = _excess_ratio(g, by.get(ref), [by[b] for b in BASELINES if b in by])
        if ratio is not None:
            out[f"excess_over_{key}_vs_best_baseline"] = ratio
    out["zero_violations"] = sum(g.violations.values()) == 0
    o = by.get("oracle")
    # Reversals the load forces (an oven's thermostat, side switches) show in the oracles
    # too, which only ever follow the load: only gridzero's excess over them counts.
    refs = [by[n].oscillating_minutes for n in ("oracle", CAUSAL, METER_ORACLE) if n in by]
    out["oscillating_minutes"] = g.oscillating_minutes
    out["no_sustained_oscillation"] = g.oscillating_minutes <= max(refs, default=0)
    o = by.get(CAUSAL) or o
    if o is not None and o.mean_settling_s and g.mean_settling_s is not None:
        ratio = g.mean_settling_s / o.mean_settling_s
        out["settling_vs_causal_oracle"] = round(ratio, 3)
        out["settling_within_1_5x_causal_oracle"] = ratio <= 1.5
    seen = by.get(METER_ORACLE)
    if seen is not None and seen.mean_settling_s and g.mean_settling_s is not None:
        # Against the oracle with the same information (a slow or late meter delays both).
        out["settling_vs_meter_oracle"] = round(g.mean_settling_s / seen.mean_settling_s, 3)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(case: Case) -> str:
    """Human-readable table of one case."""
    head = f"profile {case.profile} · plant {case.plant} · {len(case.steps)} load steps" + (
        f" · oracle lead {case.oracle_lead_s} s" if case.oracle_lead_s is not None else ""
    )
    cols = (
        f"{'controller':<17}{'import':>9}{'export':>9}{'∫|grid|':>9}{'avoid.':>9}{'mean|g|':>8}"
        f"{'settle':>8}{'unset.':>7}{'rev/min':>8}{'worst':>6}{'osc':>5}{'starts':>7}{'thru':>9}{'viol':>5}"
    )
    units = f"{'':<17}{'Wh':>9}{'Wh':>9}{'Wh':>9}{'Wh':>9}{'W':>8}{'s':>8}{'':>7}{'':>8}{'':>6}{'min':>5}{'':>7}{'Wh':>9}{'':>5}{'Wh':>9}{'Wh':>9}"
    lines = [head, cols, units]
    for m in case.metrics:
        lines.append(
            f"{m.controller:<17}{m.import_wh:>9.1f}{m.export_wh:>9.1f}{m.abs_grid_wh:>9.1f}"
            f"{_fmt(m.avoidable_wh):>9}{m.mean_abs_grid_w:>8.1f}{_fmt(m.mean_settling_s):>8}"
            f"{m.unsettled_steps:>7}{m.reversals_per_min:>8.2f}{m.worst_reversals_per_min:>6.0f}"
            f"{m.oscillating_minutes:>5}{m.charger_starts:>7}"
            f"{m.battery_throughput_wh:>9.1f}{sum(m.violations.values()):>5}"
            f"{_fmt(excesses(case, m)[0]):>9}{_fmt(excesses(case, m)[1]):>9}"
        )
    b = case.bound
    if b is not None:
        lines.append(
            f"{'bound':<17}{b.import_wh:>9.1f}{b.export_wh:>9.1f}{b.abs_grid_wh:>9.1f}"
            f"   (LP relaxation, {b.blocks} blocks of {b.block_s:g} s, tolerance "
            f"{b.tolerance_wh:.2f} Wh, solved in {b.solve_s:.1f} s)"
        )
    t = targets(case)
    if t:
        lines.append("targets (gridzero): " + ", ".join(f"{k}={v}" for k, v in t.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `gridzero bench`."""
    p = argparse.ArgumentParser(prog="gridzero bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--profile",
        action="append",
        help="profile CSV or bundled name (repeatable); default load-steps",
    )
    p.add_argument("--plant", help="plant YAML or bundled name (default: default)")
    p.add_argument("--plants", help="a directory of plant YAML files: run each")
    p.add_argument("--controllers", default=",".join(CONTROLLERS), help="comma-separated subset")
    p.add_argument("--duration", type=float, help="seconds of the profile to run (default: all)")
    p.add_argument("--start", type=float, help="profile time to start at (default: its start)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a PNG of the first case over time: grid power, battery power and SoC per "
        "controller (needs matplotlib: the plot extra)",
    )
    p.add_argument(
        "--plot-cases",
        metavar="FILE.png",
        help="write a PNG of one metric over all cases: a box per controller, a dot per case "
        "(needs matplotlib: the plot extra)",
    )
    p.add_argument(
        "--plot-metric",
        choices=sorted(METRIC_UNITS),
        help="the metric of --plot-cases (default: excess_over_meter_oracle_wh when the "
        "oracles run, else abs_grid_wh)",
    )
    p.add_argument(
        "--from-json",
        metavar="FILE.json",
        help="run nothing: read the cases of an earlier --json output (for --plot-cases)",
    )
    p.add_argument(
        "--households",
        type=int,
        metavar="N",
        help="run N generated households (bench/households.py, drawn from --seed; each "
        "--duration s long, default 3600) instead of --profile/--plant, and report the "
        "distribution",
    )
    p.add_argument(
        "--households-out",
        metavar="DIR",
        help="where each household's profile CSV and plant YAML go (default: a new temp dir)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes for --households (default 1)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--no-bound",
        action="store_true",
        help="skip the lower bound (the LP needs HiGHS: the bound extra)",
    )
    p.add_argument(
        "--tariff",
        metavar="FILE",
        help="import/export prices by time of day (YAML or CSV, or bundled: cheap-night, "
        "half-hourly): cost per day for every controller, plus gridzero+schedule",
    )
    return p


def _plants(ns: argparse.Namespace) -> list[PlantParams]:
    if ns.plants:
        folder = Path(ns.plants)
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        if not files:
            raise UsageError(f"--plants {folder}: no .yaml files there")
        return [load_plant(f) for f in files]
    return [load_plant(ns.plant or "default")]


def _controller_doc(c: Case, m: Metrics) -> dict[str, object]:
    doc = m.as_dict()
    over_bound, over_meter = excesses(c, m)
    doc["excess_over_bound_wh"] = None if over_bound is None else round(over_bound, 2)
    doc["excess_over_meter_oracle_wh"] = None if over_meter is None else round(over_meter, 2)
    return doc


def case_doc(c: Case) -> dict[str, object]:
    """One case as in the --json output."""
    return {
        "profile": c.profile,
        "plant": c.plant,
        "load_steps": [{"t_s": s.t_s, "delta_w": s.delta_w} for s in c.steps],
        "oracle_lead_s": c.oracle_lead_s,
        "bound": None if c.bound is None else c.bound.as_dict(),
        "controllers": [_controller_doc(c, m) for m in c.metrics],
        "targets": targets(c),
        "costs": None
        if c.costs is None
        else [
            {
                "controller": k.controller,
                "import": round(k.import_cost, 4),
                "export": round(k.export_credit, 4),
                "stored": round(k.stored_value, 4),
                "per_day": round(k.per_day, 4),
            }
            for k in c.costs
        ],
    }


def _saved_cases(path: Path) -> list[dict[str, object]]:
    """The cases of an earlier --json output."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--from-json {path}: cannot read it as JSON: {exc}") from exc
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list) or not cases:
        raise UsageError(f"--from-json {path}: no 'cases' list (write it with --json)")
    return cases


def _check_plot_options(ns: argparse.Namespace) -> None:
    """Refuse what cannot be drawn or bounded before any run (a day's bench takes minutes)."""
    if ns.from_json and ns.plot:
        raise UsageError("--plot needs the runs' traces: not available with --from-json")
    if ns.from_json and not ns.plot_cases:
        raise UsageError("--from-json only draws: give --plot-cases FILE.png")
    if ns.plot:
        require_matplotlib("--plot")
    if ns.plot_cases:
        require_matplotlib("--plot-cases")
    if not ns.from_json and not ns.no_bound:
        require_highspy("gridzero bench")


def _default_metric(docs: list[dict[str, object]]) -> str:
    """The excess over the meter oracle where it ran (issue 18's measure), else ∫|grid|."""
    ran = {name for case in case_values(docs, "abs_grid_wh") for name in case.values}
    return "excess_over_meter_oracle_wh" if METER_ORACLE in ran else "abs_grid_wh"


def _controllers(ns: argparse.Namespace) -> list[str]:
    """The --controllers list, each one known."""
    controllers = [c.strip() for c in ns.controllers.split(",") if c.strip()]
    for c in controllers:
        if c not in CONTROLLERS:
            raise UsageError(
                f"--controllers: unknown controller {c!r}; known: {', '.join(CONTROLLERS)}"
            )
    return controllers


def _households_main(ns: argparse.Namespace, controllers: list[str]) -> int:
    """`--households N`: generate, write, run every controller on each, the distribution."""
    if ns.profile or ns.plant or ns.plants or ns.start is not None:
        raise UsageError(
            "--households draws its own profiles and plants: drop --profile, --plant, "
            "--plants and --start (replay one household with --profile FILE --plant FILE)"
        )
    if ns.plot:
        raise UsageError(
            "--plot draws one case: replay a household with --profile FILE --plant FILE --plot"
        )
    if not 1 <= ns.jobs <= 64:
        raise UsageError(f"--jobs {ns.jobs}: must be 1..64")
    duration = 3600.0 if ns.duration is None else ns.duration
    households = generate(ns.households, ns.seed, duration)
    out = Path(ns.households_out or tempfile.mkdtemp(prefix=f"gridzero-households-s{ns.seed}-"))
    print(f"households: {len(households)} of seed {ns.seed}, files in {out}", file=sys.stderr)
    config = BenchConfig(seed=ns.seed)
    tariff = None if ns.tariff is None else load_tariff(ns.tariff)
    started = time.monotonic()
    docs = run_households(
        households,
        controllers,
        config,
        ns.jobs,
        out,
        progress_printer(not ns.no_progress and sys.stderr.isatty()),
        tariff,
        not ns.no_bound,
    )
    elapsed = time.monotonic() - started
    measure = measure_of(docs)
    if ns.plot_cases:
        metric = ns.plot_metric or _default_metric(docs)
        plot_cases(Path(ns.plot_cases), docs, metric)
        print(f"wrote {ns.plot_cases}: {metric} over {len(docs)} household(s)", file=sys.stderr)
    if ns.json:
        summary = {
            "seed": ns.seed,
            "count": len(docs),
            "duration_s": duration,
            "out_dir": str(out),
            "jobs": ns.jobs,
            "measure": measure,
            "distribution": [s.as_dict() for s in distribution(docs, measure)],
            "targets": target_counts(docs),
            "savings": None if (sv := savings(docs)) is None else sv.as_dict(),
        }
        print(
            json.dumps(
                {"elapsed_s": round(elapsed, 2), "households": summary, "cases": docs}, indent=2
            )
        )
    else:
        print(report(docs, measure, elapsed, ns.jobs))
        if tariff is not None:
            print()
            print(cost_report(docs, tariff.name, tariff.unit))
    return 0


def main(argv: list[str]) -> int:
    """Entry point of `gridzero bench`."""
    ns = build_parser().parse_args(argv)
    _check_plot_options(ns)
    if ns.from_json:
        docs = _saved_cases(Path(ns.from_json))
        metric = ns.plot_metric or _default_metric(docs)
        plot_cases(Path(ns.plot_cases), docs, metric)
        print(f"wrote {ns.plot_cases}: {metric} over {len(docs)} case(s) from {ns.from_json}")
        return 0
    controllers = _controllers(ns)
    if ns.duration is not None and ns.duration <= 0:
        raise UsageError(f"--duration {ns.duration}: must be > 0 s")
    if ns.households is not None:
        return _households_main(ns, controllers)
    profiles = [load_profile(p) for p in (ns.profile or ["load-steps"])]
    plants = _plants(ns)
    config = BenchConfig(seed=ns.seed, duration_s=ns.duration, start_s=ns.start)
    tariff = None if ns.tariff is None else load_tariff(ns.tariff)
    runs_per_case = (
        (tariff is not None)
        + len(controllers)
        + (len(ORACLE_LEADS_S) + 1 if "oracle" in controllers else 0)
    )
    progress = Progress(
        not ns.no_progress and sys.stderr.isatty(), runs_per_case * len(profiles) * len(plants)
    )
    cases: list[Case] = []
    started = time.monotonic()
    try:
        for params in plants:
            for profile in profiles:
                cases.append(
                    run_case(
                        profile, params, controllers, config, progress, not ns.no_bound, tariff
                    )
                )
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    docs = [case_doc(c) for c in cases]
    if ns.plot:
        first = cases[0]
        note = "" if first.oracle_lead_s is None else f"oracle lead {first.oracle_lead_s} s"
        plot_traces(Path(ns.plot), first.traces, first.profile, first.plant, ns.seed, note)
        print(f"wrote {ns.plot}: {first.profile} / {first.plant} over time", file=sys.stderr)
    if ns.plot_cases:
        metric = ns.plot_metric or _default_metric(docs)
        plot_cases(Path(ns.plot_cases), docs, metric)
        print(f"wrote {ns.plot_cases}: {metric} over {len(docs)} case(s)", file=sys.stderr)
    if ns.json:
        print(json.dumps({"elapsed_s": round(elapsed, 2), "cases": docs}, indent=2))
    else:
        _print_cases(cases, elapsed)
    return _check_bound(cases, ns.no_bound, ns.json)


def _print_cases(cases: Sequence[Case], elapsed: float) -> None:
    for c in cases:
        print(table(c))
        if c.costs is not None:
            print(cost_table(c.costs, c.tariff_unit))
        print()
    print(f"{len(cases)} case(s) in {elapsed:.1f} s wall time")


def _check_bound(cases: Sequence[Case], skipped: bool, as_json: bool) -> int:
    """The exit status: BELOW_BOUND_EXIT, with a message per run, if any beat the bound."""
    if skipped:
        print(
            "lower bound skipped (--no-bound): no check that every run is above it",
            file=sys.stderr if as_json else sys.stdout,
        )
    failures = [line for c in cases for line in below_bound(c)]
    for line in failures:
        print(f"BENCH BUG: {line}", file=sys.stderr)
    return BELOW_BOUND_EXIT if failures else 0
