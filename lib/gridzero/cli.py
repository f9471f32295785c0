"""The ``gridzero`` command: one subcommand per job, each in its own module.

Subcommands are loaded lazily from the table below, so a broken or missing
optional piece disables only its own subcommand. Exit codes: 0 ok, 2 bad usage
or bad settings, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gridzero import __version__
from gridzero.errors import GridzeroError, UsageError
from gridzero.registry import CODEC_DEVICES


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand implemented by ``module:function(argv) -> int``."""

    name: str
    target: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("run", "gridzero.runtime.launch:run_main", "run one service: gridzero run <service>"),
    Command("decode", "gridzero.cli:decode_main", "decode a device frame to JSON"),
    Command("encode", "gridzero.cli:encode_main", "encode device frames as <ID>#<hex> or hex"),
    Command("sim", "gridzero_tools.sim.cli:main", "run the plant simulator"),
    Command("up", "gridzero_tools.up:main", "run the whole system on this machine"),
    Command("bench", "gridzero_tools.bench.cli:main", "benchmark controllers in closed loop"),
    Command(
        "credentials",
        "gridzero.runtime.credentials:main",
        "generate broker passwords, ACL and service credentials",
    ),
    Command(
        "health",
        "gridzero.runtime.health:main",
        "exit 0 if a service's loop is alive and connected",
    ),
    Command(
        "docs", "gridzero_tools.docs:main", "regenerate generated documentation (docs/mqtt.md)"
    ),
    Command("fuzz", "gridzero_tools.fuzz:main", "fuzz every decoder and MQTT handler"),
    Command(
        "faults", "gridzero_tools.faults.cli:main", "run the fault matrix over the running system"
    ),
)


def _load(target: str) -> Callable[[list[str]], int]:
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        # an image holds only the library and its own service: say what is missing
        top = module_name.split(".")[0]
        raise UsageError(f"{top} is not installed here (no module {exc.name})") from exc
    func: Callable[[list[str]], int] = getattr(module, function)
    return func


def _device_dispatch(kind: str, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        devices = ", ".join(CODEC_DEVICES)
        print(f"usage: gridzero {kind} <device> ...\ndevices: {devices}")
        return 0 if argv else 2
    device, rest = argv[0], argv[1:]
    if device not in CODEC_DEVICES:
        raise UsageError(f"unknown device {device!r}; known devices: {', '.join(CODEC_DEVICES)}")
    return _load(f"{CODEC_DEVICES[device]}:{kind}_main")(rest)


def decode_main(argv: list[str]) -> int:
    """``gridzero decode <device> ...``."""
    return _device_dispatch("decode", argv)


def encode_main(argv: list[str]) -> int:
    """``gridzero encode <device> ...``."""
    return _device_dispatch("encode", argv)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommands parse their own arguments."""
    parser = argparse.ArgumentParser(
        prog="gridzero",
        description="Grid-zero home battery services on MQTT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {c.name:<12} {c.help}" for c in COMMANDS),
    )
    parser.add_argument("--version", action="version", version=f"gridzero {__version__}")
    parser.add_argument(
        "command", metavar="command", help="one of: " + ", ".join(c.name for c in COMMANDS)
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gridzero`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args:
        parser.print_help(sys.stderr)
        return 2
    ns = parser.parse_args(args[:1])
    commands = {c.name: c for c in COMMANDS}
    if ns.command not in commands:
        print(
            f"gridzero: unknown command {ns.command!r}; known: {', '.join(commands)}",
            file=sys.stderr,
        )
        return 2
    try:
        return _load(commands[ns.command].target)(args[1:])
    except GridzeroError as exc:
        print(f"gridzero {ns.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
