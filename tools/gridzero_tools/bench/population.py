"""`gridzero bench --households N`: every controller on N generated households, the distribution.

Runs each household (bench/households.py) as a case, in ``jobs`` worker processes, and reduces
the cases to a distribution per controller: median, mean, 90th percentile and the worst
household with its drawn features (the "why"). The measure is the excess of ∫|grid| over the
meter oracle's (issue 18) when the oracles run, else ∫|grid| itself.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from gridzero_tools.bench.engine import BenchConfig
from gridzero_tools.bench.households import Household, write_household
from gridzero_tools.bench.tariff import Tariff
from gridzero_tools.sim.profile import Profile

METER_ORACLE = "oracle-meter"
BASELINES = ("housebatt", "soyosource-meter", "opendtu")
# The rectifier's lowest power at a 12S pack's nominal 44.4 V: 5.2 A × 44.4 V / 0.95.
CHARGER_MIN_W = 243.0


def profile_stats(profile: Profile) -> dict[str, float]:
    """What makes a profile hard, for the report: load steps, surplus below the charger's
    minimum, mean net load, PV swing."""
    net = [ld - pv for ld, pv in zip(profile.load_w, profile.pv_w, strict=True)]
    n = len(net)
    steps = sum(1 for i in range(1, n) if abs(net[i] - net[i - 1]) >= 1000.0)
    small_surplus = sum(1 for x in net if -CHARGER_MIN_W < x < 0.0)
    pv_swing = max((abs(profile.pv_w[i] - profile.pv_w[i - 1]) for i in range(1, n)), default=0.0)
    return {
        "mean_net_w": round(sum(net) / n, 1),
        "steps_1kw": float(steps),
        "surplus_below_charger_min_pct": round(100.0 * small_surplus / n, 1),
        "max_pv_ramp_w_per_s": round(pv_swing, 1),
    }


Work = tuple[Household, Sequence[str], BenchConfig, Tariff | None, bool]


def _run_one(args: Work) -> dict[str, object]:
    """One household, every controller (in a worker process)."""
    from gridzero_tools.bench.cli import Progress, case_doc, run_case  # noqa: PLC0415

    hh, controllers, config, tariff, with_bound = args
    # The household starts at its drawn hour: the tariff's clock starts there too.
    local = None if tariff is None else replace(tariff, clock_offset_s=hh.start_of_day_s)
    started = time.monotonic()
    case = run_case(
        hh.profile, hh.plant, controllers, config, Progress(False, 1), with_bound, local
    )
    doc = case_doc(case)
    doc["features"] = list(hh.features)
    doc["stats"] = profile_stats(hh.profile)
    doc["wall_s"] = round(time.monotonic() - started, 2)
    return doc


def run_households(
    households: Sequence[Household],
    controllers: Sequence[str],
    config: BenchConfig,
    jobs: int,
    out_dir: Path,
    on_done: Callable[[int, int], None] | None = None,
    tariff: Tariff | None = None,
    with_bound: bool = True,
) -> list[dict[str, object]]:
    """Write every household's files to ``out_dir`` and run each; case docs in order. With a
    tariff, each case also has gridzero+schedule and the costs (cli.run_case)."""
    files = {hh.name: write_household(hh, out_dir) for hh in households}
    work: list[Work] = [(hh, tuple(controllers), config, tariff, with_bound) for hh in households]
    docs: list[dict[str, object]] = []
    if jobs <= 1:
        for k, item in enumerate(work):
            docs.append(_run_one(item))
            if on_done:
                on_done(k + 1, len(work))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for k, doc in enumerate(pool.map(_run_one, work)):
                docs.append(doc)
                if on_done:
                    on_done(k + 1, len(work))
    for doc in docs:
        csv_path, yaml_path = files[str(doc["profile"])]
        doc["files"] = {"profile": str(csv_path), "plant": str(yaml_path)}
    return docs


@dataclass(frozen=True, slots=True)
class Spread:
    """One controller's distribution over the households."""

    controller: str
    n: int
    median: float
    mean: float
    p90: float
    worst: float
    worst_household: str
    violations: int
    # The most rectifier starts in one household: a controller that follows the bms's limit
    # on and off near full, or every pulse of a load, shows here (issue 18).
    most_charger_starts: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly."""
        return {
            "controller": self.controller,
            "n": self.n,
            "median": round(self.median, 2),
            "mean": round(self.mean, 2),
            "p90": round(self.p90, 2),
            "worst": round(self.worst, 2),
            "worst_household": self.worst_household,
            "violations": self.violations,
            "most_charger_starts": self.most_charger_starts,
        }


def _rows(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = doc.get("controllers")
    assert isinstance(rows, list)
    return {str(r["controller"]): r for r in rows if isinstance(r, dict)}


def measure_of(docs: Sequence[dict[str, object]]) -> str:
    """The excess over the meter oracle when it ran in every case, else ∫|grid|."""
    ran = all(METER_ORACLE in _rows(d) for d in docs)
    return "excess_over_meter_oracle_wh" if ran else "abs_grid_wh"


def values(doc: dict[str, object], measure: str) -> dict[str, float]:
    """``measure`` per controller in one case."""
    by = _rows(doc)
    out: dict[str, float] = {}
    ref = by.get(METER_ORACLE)
    for name, row in by.items():
        value = float(str(row["abs_grid_wh"]))
        if measure == "excess_over_meter_oracle_wh":
            if ref is None or name == METER_ORACLE:
                continue
            value -= float(str(ref["abs_grid_wh"]))
        out[name] = value
    return out


def _p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]


def distribution(docs: Sequence[dict[str, object]], measure: str) -> list[Spread]:
    """Per controller, over the cases."""
    per: dict[str, list[tuple[float, str]]] = {}
    viol: dict[str, int] = {}
    starts: dict[str, int] = {}
    for doc in docs:
        for name, v in values(doc, measure).items():
            per.setdefault(name, []).append((v, str(doc["profile"])))
        for name, row in _rows(doc).items():
            viol[name] = viol.get(name, 0) + int(str(row.get("violations_total", 0)))
            starts[name] = max(starts.get(name, 0), int(str(row.get("charger_starts", 0))))
    out = []
    for name, pairs in per.items():
        xs = [v for v, _ in pairs]
        worst_v, worst_name = max(pairs)
        out.append(
            Spread(
                name,
                len(xs),
                statistics.median(xs),
                statistics.fmean(xs),
                _p90(xs),
                worst_v,
                worst_name,
                viol.get(name, 0),
                starts.get(name, 0),
            )
        )
    return out


def target_counts(docs: Sequence[dict[str, object]]) -> dict[str, int]:
    """Issue 18's targets over the households, for gridzero against the violation-free
    baselines: within half of the best one's excess, and never worse than any of them.

    Two counts of "within half": the issue's rule as written (``..._as_written``: where a
    baseline beats the meter oracle, gridzero must beat it by half as much), and one with the
    best baseline's excess taken as at least 0 (where a baseline beats the meter oracle,
    gridzero at or below the meter oracle counts), which earlier rounds reported.
    """
    half = strict = worse = counted = 0
    for doc in docs:
        by = _rows(doc)
        if "gridzero" not in by or METER_ORACLE not in by:
            continue
        ex = values(doc, "excess_over_meter_oracle_wh")
        clean = [
            ex[b]
            for b in BASELINES
            if b in by and b in ex and int(str(by[b].get("violations_total", 0))) == 0
        ]
        if not clean:
            continue
        counted += 1
        g = ex["gridzero"]
        half += g <= 0.5 * max(0.0, min(clean)) + 1e-9
        strict += g <= 0.5 * min(clean) + 1e-9
        worse += any(g > c + 1e-9 for c in clean)
    return {
        "households_compared": counted,
        "gridzero_within_half_of_best_baseline_as_written": strict,
        "gridzero_within_half_of_best_baseline": half,
        "gridzero_worse_than_a_baseline": worse,
    }


def report(docs: Sequence[dict[str, object]], measure: str, wall_s: float, jobs: int) -> str:
    """The distribution table, the worst households and why, the wall time."""
    spreads = distribution(docs, measure)
    by_name = {str(d["profile"]): d for d in docs}
    unit = "Wh"
    lines = [
        f"{len(docs)} households · measure {measure} ({unit})",
        f"{'controller':<17}{'median':>9}{'mean':>9}{'p90':>9}{'worst':>9}{'viol':>6}"
        f"{'starts':>8}  worst household",
    ]
    for s in spreads:
        lines.append(
            f"{s.controller:<17}{s.median:>9.1f}{s.mean:>9.1f}{s.p90:>9.1f}{s.worst:>9.1f}"
            f"{s.violations:>6}{s.most_charger_starts:>8}  {s.worst_household}"
        )
    lines.append("")
    seen: set[str] = set()
    for s in spreads:
        if s.worst_household in seen:
            continue
        seen.add(s.worst_household)
        doc = by_name[s.worst_household]
        files = doc.get("files")
        feats = doc.get("features")
        stats = doc.get("stats")
        lines.append(f"{s.worst_household} (worst for {s.controller}):")
        if isinstance(feats, list):
            lines.append("  " + ", ".join(str(f) for f in feats))
        if isinstance(stats, dict):
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in stats.items()))
        if isinstance(files, dict):
            lines.append(
                f"  replay: gridzero bench --profile {files['profile']} --plant {files['plant']}"
            )
    counts = target_counts(docs)
    if counts["households_compared"]:
        lines.append("")
        lines.append("targets (gridzero): " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    per = wall_s / max(1, len(docs))
    lines.append(
        f"{len(docs)} household(s) in {wall_s:.1f} s wall time ({per:.1f} s each, "
        f"{jobs} job(s), {os.cpu_count()} cores)"
    )
    return "\n".join(lines)


def progress_printer(enabled: bool) -> Callable[[int, int], None] | None:
    """A one-line count on stderr."""
    if not enabled:
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\rhouseholds {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# ---------------------------------------------------------------- money (--tariff)

SCHEDULED = "gridzero+schedule"


def costs_per_day(doc: dict[str, object]) -> dict[str, float]:
    """Cost per day of each controller in one case (empty without a tariff)."""
    costs = doc.get("costs")
    if not isinstance(costs, list):
        return {}
    return {str(c["controller"]): float(c["per_day"]) for c in costs if isinstance(c, dict)}


@dataclass(frozen=True, slots=True)
class Savings:
    """gridzero+schedule's saving over plain gridzero per day, over the households (+ saves)."""

    n: int
    median: float
    mean: float
    worst: float
    worst_household: str
    best: float
    losing: int  # households where the schedule costs more

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly."""
        return {
            "n": self.n,
            "median": round(self.median, 4),
            "mean": round(self.mean, 4),
            "worst": round(self.worst, 4),
            "worst_household": self.worst_household,
            "best": round(self.best, 4),
            "losing": self.losing,
        }


def savings(docs: Sequence[dict[str, object]]) -> Savings | None:
    """The saving distribution, or None when no case has both costs."""
    pairs: list[tuple[float, str]] = []
    for doc in docs:
        c = costs_per_day(doc)
        if "gridzero" in c and SCHEDULED in c:
            pairs.append((c["gridzero"] - c[SCHEDULED], str(doc["profile"])))
    if not pairs:
        return None
    xs = [v for v, _ in pairs]
    worst, worst_name = min(pairs)
    return Savings(
        len(xs),
        statistics.median(xs),
        statistics.fmean(xs),
        worst,
        worst_name,
        max(xs),
        sum(1 for x in xs if x < 0.0),
    )


def cost_report(docs: Sequence[dict[str, object]], tariff: str, unit: str) -> str:
    """Per household: cost per day of gridzero and gridzero+schedule, the saving; then the
    saving's median, mean and worst."""
    lines = [
        f"cost per day on tariff {tariff} ({unit or 'price unit'}; stored energy valued as in "
        "bench/tariff.py)",
        f"{'household':<14}{'gridzero':>10}{'+schedule':>11}{'saving':>9}  features",
    ]
    for doc in docs:
        c = costs_per_day(doc)
        if "gridzero" not in c or SCHEDULED not in c:
            continue
        feats = doc.get("features")
        why = ", ".join(str(f) for f in feats[:4]) if isinstance(feats, list) else ""
        lines.append(
            f"{doc['profile']!s:<14}{c['gridzero']:>10.3f}{c[SCHEDULED]:>11.3f}"
            f"{c['gridzero'] - c[SCHEDULED]:>9.3f}  {why}"
        )
    s = savings(docs)
    if s is not None:
        lines.append(
            f"saving over {s.n} households: median {s.median:.3f}, mean {s.mean:.3f}, "
            f"worst {s.worst:.3f} ({s.worst_household}), best {s.best:.3f}, "
            f"{s.losing} losing"
        )
    return "\n".join(lines)
