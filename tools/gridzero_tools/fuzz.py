"""``gridzero fuzz``: every decoder, framer and MQTT handler fed generated input.

Each target gets ``--examples`` inputs (default 100,000) from a seeded generator
(`gridzero.runtime.fuzzkit`): mutations of valid examples, random bytes, and for JSON inputs
structural mutations. The same seed always gives the same inputs.

A target passes when every input gives a value or the module's own documented
error (``CodecError`` for codecs, ``PayloadError``/``ValueError`` for MQTT
payloads, the runtime's input errors for service handlers). Anything else is a
crash: it is reported with the input that caused it, and the command exits 1.

The targets live beside what they test: ``services/<name>/gridzero_<name>/fuzz.py`` (a service's
codec and handlers), `gridzero.runtime.fuzz` (the contract's parsers, the handler harness),
`gridzero_tools.sim.fuzz` (the simulator). `GROUP_TARGETS` below is the one table that names them.

    gridzero fuzz [--examples N] [--seed S] [--only a,b] [--list]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gridzero.errors import UsageError
from gridzero.runtime.fuzzkit import Mutator, Target, TargetResult, run_target

__all__ = ["GROUPS", "GROUP_TARGETS", "Mutator", "Target", "TargetResult", "fuzz", "run_target"]

# The registry: each group and the functions ("module:function") that build its targets, in
# the order they run (a target's seed is the run's seed plus its place in that order).
GROUP_TARGETS: dict[str, tuple[str, ...]] = {
    "bms-codec": ("gridzero_bms.fuzz:codec_targets",),
    "charger-codec": ("gridzero_charger.fuzz:codec_targets",),
    "inverter-codec": ("gridzero_inverter.fuzz:codec_targets",),
    "shunt-codec": ("gridzero_shunt.fuzz:codec_targets",),
    "telnet-protocol": ("gridzero_telnet_console.fuzz:protocol_targets",),
    "contract": ("gridzero.runtime.fuzz:contract_targets", "gridzero_tools.sim.fuzz:fault_targets"),
    "bms-handlers": ("gridzero_bms.fuzz:handler_targets",),
    "charger-handlers": ("gridzero_charger.fuzz:handler_targets",),
    "inverter-handlers": ("gridzero_inverter.fuzz:handler_targets",),
    "shunt-handlers": ("gridzero_shunt.fuzz:handler_targets",),
    "controller-handlers": ("gridzero_controller.fuzz:handler_targets",),
    "telnet-console-handlers": ("gridzero_telnet_console.fuzz:handler_targets",),
    "housebatt-compat-handlers": ("gridzero_housebatt_compat.fuzz:handler_targets",),
    "sim-handlers": ("gridzero_tools.sim.fuzz:handler_targets",),
}
GROUPS = tuple(GROUP_TARGETS)


def builder(spec: str) -> Callable[[], list[Target]]:
    """The target builder a ``module:function`` entry of `GROUP_TARGETS` names."""
    module_name, _, function = spec.partition(":")
    build: Callable[[], list[Target]] = getattr(importlib.import_module(module_name), function)
    return build


def all_targets(only: set[str] | None = None) -> Iterator[Target]:
    """Every target, built lazily (handler targets start their service)."""
    for group, specs in GROUP_TARGETS.items():
        if only and group not in only:
            continue
        for spec in specs:
            yield from builder(spec)()


def fuzz(
    examples: int, seed: int, only: set[str] | None = None, out: Callable[[str], None] = print
) -> list[TargetResult]:
    """Run every target; returns the results (printing one line per target)."""
    results: list[TargetResult] = []
    quiet = logging.getLogger("gridzero")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a rejected input logs a warning: 100,000 of them
    try:
        for index, target in enumerate(all_targets(only)):
            try:
                result = run_target(target, examples, seed + index)
            finally:
                if target.close is not None:
                    target.close()
            results.append(result)
            out(
                f"{result.name:<58} {result.inputs:>8} inputs {result.rate:>10,.0f}/s "
                f"{result.rejected:>8} rejected  {result.crash_count} crashes"
            )
    finally:
        quiet.setLevel(level)
    return results


def report_table(results: list[TargetResult], command: str, when: str) -> str:
    """The figures as Markdown: one row per target."""
    lines = [
        f"`{command}`: {len(results)} targets, {sum(r.inputs for r in results):,} inputs, "
        f"{sum(r.crash_count for r in results)} crashes. {when}",
        "",
        "| target | inputs | inputs/s | refused (documented error) | crashes |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.inputs:,} | {r.rate:,.0f} | {r.rejected:,} | "
        f"{r.crash_count if not r.crash_count else f'**{r.crash_count}**'} |"
        for r in results
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gridzero fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated groups: " + ", ".join(GROUPS))
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--report", type=Path, help="write the figures into this Markdown file (section 'fuzz')"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(GROUPS))
        return 0
    if args.examples < 1:
        raise UsageError(f"--examples {args.examples}: must be at least 1")
    only = {g.strip() for g in args.only.split(",")} if args.only else None
    if only and only - set(GROUPS):
        raise UsageError(
            f"--only: unknown {sorted(only - set(GROUPS))}; known: {', '.join(GROUPS)}"
        )
    started = time.perf_counter()
    results = fuzz(args.examples, args.seed, only)
    total = sum(r.inputs for r in results)
    crashes = [r for r in results if r.crash_count]
    print(
        f"{len(results)} targets, {total:,} inputs in {time.perf_counter() - started:.1f} s, "
        f"{sum(r.crash_count for r in results)} crashes"
    )
    if args.report:
        from gridzero_tools.faults.report import replace_section, stamp  # noqa: PLC0415

        command = f"gridzero fuzz --examples {args.examples} --seed {args.seed}"
        replace_section(args.report, "fuzz", report_table(results, command, stamp()))
        print(f"written to {args.report}")
    for result in crashes:
        print(f"\nCRASH in {result.name} ({result.crash_count} inputs):", file=sys.stderr)
        for crash in result.crashes:
            print(f"  input {crash.data!r}\n  {crash.error}", file=sys.stderr)
    return 1 if crashes else 0
