"""Make a console password hash for the ``password_hash`` setting.

    python -m gridzero_telnet_console.hashpw            # asks twice, no echo
    printf '%s\\n' "$PW" | python -m gridzero_telnet_console.hashpw --stdin

Prints ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` on stdout; nothing else is
printed there, and the password is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

from gridzero.errors import GridzeroError, UsageError
from gridzero_telnet_console.auth import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MAX_PASSWORD_CHARS,
    MIN_ITERATIONS,
    SALT_BYTES,
    hash_password,
)

MIN_PASSWORD_CHARS = 8


def _read_password(use_stdin: bool) -> str:
    if use_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("console password: ")
    second = getpass.getpass("again: ")
    if first != second:
        raise UsageError("the two passwords differ; nothing was written")
    return first


def check_password(password: str) -> None:
    """Refuse passwords that are too short or too long (the message never shows it)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise UsageError(
            f"password of {len(password)} characters; "
            f"need {MIN_PASSWORD_CHARS}..{MAX_PASSWORD_CHARS}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridzero_telnet_console.hashpw",
        description="Print a password hash for the telnet console's password_hash setting.",
    )
    parser.add_argument("--stdin", action="store_true", help="read the password from stdin")
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 iterations ({MIN_ITERATIONS}..{MAX_ITERATIONS}, default %(default)s)",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not MIN_ITERATIONS <= args.iterations <= MAX_ITERATIONS:
        raise UsageError(
            f"--iterations {args.iterations} outside {MIN_ITERATIONS}..{MAX_ITERATIONS}"
        )
    password = _read_password(args.stdin)
    check_password(password)
    print(hash_password(password, os.urandom(SALT_BYTES), args.iterations))
    return 0


def _entry() -> int:
    try:
        return main()
    except GridzeroError as exc:
        print(f"hashpw: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, EOFError):
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
