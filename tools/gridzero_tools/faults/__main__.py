"""``python -m gridzero_tools.faults``: see tools/gridzero_tools/faults/cli.py."""

from __future__ import annotations

import sys

from gridzero.errors import GridzeroError
from gridzero_tools.faults.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except GridzeroError as exc:
        print(f"gridzero faults: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
