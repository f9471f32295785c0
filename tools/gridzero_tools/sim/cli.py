"""``gridzero sim``: run the plant simulator on the wire (see docs/sim.md).

    gridzero sim [--plant NAME|FILE] [--profile NAME|FILE] [--seed N] [--speed X]
                 [--start-s S] [--config FILE] [--check]

Settings not given here come from the environment (``GRIDZERO_...``) and the
optional YAML file, as for every service; ``gridzero run sim`` is the same
service without these shortcuts. Bad plant or profile files exit with 2 and a
message naming the file, line and field.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gridzero.runtime.service import run_service
from gridzero.runtime.settings import load_settings
from gridzero_tools.sim.params import bundled_plants, load_plant
from gridzero_tools.sim.profile import bundled_profiles, load_profile
from gridzero_tools.sim.service import Sim, SimSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridzero sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"bundled plants: {', '.join(bundled_plants())}\n"
        f"bundled profiles: {', '.join(bundled_profiles())}",
    )
    parser.add_argument("--plant", help="bundled plant name or YAML path")
    parser.add_argument("--profile", help="bundled profile name or CSV path")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--speed", type=float, help="simulated seconds per real second")
    parser.add_argument("--start-s", type=float, help="profile time to start at")
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--check", action="store_true", help="validate everything and exit")
    return parser


def main(argv: list[str]) -> int:
    """Entry of ``gridzero sim``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("plant", args.plant),
            ("profile", args.profile),
            ("seed", args.seed),
            ("speed", args.speed),
            ("start_s", args.start_s),
        )
        if value is not None
    }
    settings = load_settings(SimSettings, args.config, **overrides)
    plant = load_plant(settings.plant)
    profile = load_profile(settings.profile)
    if args.check:
        print(
            f"plant {plant.name}: {plant.pack.modules} modules, {len(plant.inverters)} "
            f"inverter(s); profile {profile.name}: {profile.duration_s:.0f} s"
        )
        return 0
    return run_service(Sim, settings)
