"""``gridzero health <service>``: exit 0 if the service's loop is alive and connected.

The runtime touches ``<data_dir>/<service>.health`` every few seconds while it is
connected to the broker; this command checks the file's age (Docker healthcheck).
It imports only the standard library: it runs every few seconds in every container.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HEARTBEAT_S = 5.0
"""How often the runtime touches the heartbeat file (see ServiceRunner)."""


def health_path(data_dir: Path, name: str) -> Path:
    return data_dir / f"{name}.health"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gridzero health", description=__doc__)
    parser.add_argument("service")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("GRIDZERO_DATA_DIR", "data"))
    )
    parser.add_argument("--max-age-s", type=float, default=3 * HEARTBEAT_S)
    args = parser.parse_args(argv)
    path = health_path(args.data_dir, args.service)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        print(f"{args.service}: no heartbeat yet ({path})")
        return 1
    if age > args.max_age_s:
        print(f"{args.service}: heartbeat {age:.0f} s old (limit {args.max_age_s:.0f} s)")
        return 1
    print(f"{args.service}: healthy ({age:.1f} s)")
    return 0
