"""``gridzero faults`` / ``python -m gridzero_tools.faults``: run the fault matrix, print and report it.

    gridzero faults                                  # thorough timing, print the results
    gridzero faults --report docs/reliability.md     # ... and write the table into the file
    gridzero faults --quick --only broker_down,meter_silent
    gridzero faults --continuity --report docs/reliability.md   # the "nothing lost" run

Each run starts its own broker, simulator and services in a temporary directory
on free ports (several minutes of real time). Exit code 0 when every scenario
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from gridzero.errors import UsageError
from gridzero_tools.faults import report, scenarios
from gridzero_tools.faults.rig import Rig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gridzero faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short faults (what CI runs)")
    parser.add_argument(
        "--only", help="comma-separated scenarios: " + ", ".join(scenarios.SCENARIOS)
    )
    parser.add_argument(
        "--continuity", action="store_true", help="run the SIGKILL continuity run instead"
    )
    parser.add_argument("--report", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    if args.continuity:
        from gridzero_tools.faults import continuity  # noqa: PLC0415 - only this mode needs it

        return continuity.main(args.quick, args.report, args.keep)
    keys = [k.strip() for k in args.only.split(",")] if args.only else None
    unknown = sorted(set(keys or ()) - set(scenarios.SCENARIOS))
    if unknown:
        raise UsageError(f"--only: unknown {unknown}; known: {', '.join(scenarios.SCENARIOS)}")
    timing = scenarios.QUICK if args.quick else scenarios.THOROUGH
    work = Path(tempfile.mkdtemp(prefix="gridzero-faults-"))
    print(f"work directory {work} ({timing.name} timing)", flush=True)
    rig = Rig(work)
    try:
        rig.start()
        results = scenarios.run_matrix(rig, timing, keys, progress=_say)
    finally:
        rig.stop()
    command = "python -m gridzero_tools.faults" + (" --quick" if args.quick else "")
    table = report.matrix_table(results, timing, command)
    print(table)
    if args.report:
        report.replace_section(args.report, "fault-matrix", table)
        print(f"written to {args.report}")
    if not args.keep:
        _cleanup(work)
    return 0 if all(r.passed for r in results) else 1


def _say(line: str) -> None:
    print(line, flush=True)


def _cleanup(work: Path) -> None:
    import shutil  # noqa: PLC0415

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
