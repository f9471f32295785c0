"""``gridzero decode r48 <ID>#<hex>`` and ``gridzero encode r48 ...``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import NoReturn

from gridzero.chemistry import CELLS_PER_MODULE
from gridzero.codec import CodecError, EncodeError, format_can_frame, parse_can_frame
from gridzero.errors import UsageError
from gridzero_charger import codec
from gridzero_charger.codec import CanFrame, Control

_PROG = "gridzero encode r48"
ENCODE_USAGE = """\
gridzero encode r48 voltage <V> [--offline] [--cells N]
gridzero encode r48 current <A> [--rated A] [--fraction-at-rated F] [--offline]
gridzero encode r48 fraction <F> [--offline]
gridzero encode r48 dc-on | dc-off [--fan-full] [--flash-led]
gridzero encode r48 read <quantity>|all
gridzero encode r48 ac-input-limit <A>
gridzero encode r48 walk-in <seconds>|off"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as UsageError (exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc


def decode_main(argv: list[str]) -> int:
    """Print each ``<ID>#<hex>`` frame as one line of JSON."""
    parser = _Parser(prog="gridzero decode r48", description="Decode R48 CAN frames to JSON.")
    parser.add_argument(
        "frames", nargs="+", metavar="ID#HEX", help="e.g. 0607FF83#03F0002142520000"
    )
    args = parser.parse_args(argv)
    for text in args.frames:
        try:
            arbitration_id, data = parse_can_frame(text)
            message = codec.decode_frame(arbitration_id, data)
        except CodecError as exc:
            raise UsageError(str(exc)) from exc
        out = {"id": f"{arbitration_id:08X}"} | codec.message_to_dict(message)
        print(json.dumps(out))
    return 0


def _build_encode_parser() -> _Parser:
    parser = _Parser(
        prog=_PROG,
        description="Encode R48 CAN frames as <ID>#<hex> lines (cansend form).",
        usage=ENCODE_USAGE,
    )
    sub = parser.add_subparsers(dest="what", required=True, parser_class=_Parser)
    voltage = sub.add_parser("voltage", prog=f"{_PROG} voltage", help="output voltage set-point")
    voltage.add_argument("value", type=_number)
    voltage.add_argument(
        "--offline", action="store_true", help="stored fallback (EEPROM), not online"
    )
    voltage.add_argument(
        "--cells",
        type=int,
        default=None,
        help="NMC cells in series: bounds the voltage (stored: N x 4.0 V, default 12 cells; "
        "online: N x 4.2 V)",
    )
    current = sub.add_parser("current", prog=f"{_PROG} current", help="output current limit in A")
    current.add_argument("value", type=_number)
    current.add_argument("--rated", type=_number, default=codec.DEFAULT_RATED_CURRENT_A)
    current.add_argument(
        "--fraction-at-rated", type=_number, default=codec.DEFAULT_FRACTION_AT_RATED
    )
    current.add_argument("--offline", action="store_true")
    fraction = sub.add_parser(
        "fraction", prog=f"{_PROG} fraction", help="output current limit as a raw fraction"
    )
    fraction.add_argument("value", type=_number)
    fraction.add_argument("--offline", action="store_true")
    for name in ("dc-on", "dc-off"):
        control = sub.add_parser(name, prog=f"{_PROG} {name}", help="control frame")
        control.add_argument("--fan-full", action="store_true")
        control.add_argument("--flash-led", action="store_true")
    read = sub.add_parser("read", prog=f"{_PROG} read", help="read request")
    read.add_argument("quantity", help=_known_quantities())
    ac_limit = sub.add_parser(
        "ac-input-limit", prog=f"{_PROG} ac-input-limit", help="AC input current limit in A"
    )
    ac_limit.add_argument("value", type=_number)
    walk_in = sub.add_parser(
        "walk-in", prog=f"{_PROG} walk-in", help="walk-in (soft start) time in s, or off"
    )
    walk_in.add_argument("value")
    return parser


def _voltage(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    cells = args.cells
    if args.offline and cells is None:
        cells = CELLS_PER_MODULE  # one VW GTE module: the stored fallback is never unbounded
    return (codec.encode_voltage(args.value, offline=args.offline, cells_in_series=cells),)


def _current(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    fraction = codec.current_to_fraction(
        args.value, rated_current_a=args.rated, fraction_at_rated=args.fraction_at_rated
    )
    return (_current_frame(fraction, args),)


def _fraction(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    return (codec.encode_current_fraction(args.value, offline=args.offline),)


def _control(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    control = Control(
        dc_off=args.what == "dc-off", fan_full=args.fan_full, flash_led=args.flash_led
    )
    return (codec.encode_control(control),)


def _read(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    return (_read_frame(args.quantity),)


def _ac_input_limit(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    return (codec.encode_ac_input_current(args.value),)


def _walk_in(args: argparse.Namespace) -> tuple[CanFrame, ...]:
    if args.value == "off":
        return codec.encode_walk_in(False)
    return codec.encode_walk_in(True, _number_or_usage(args.value))


_ENCODERS: dict[str, Callable[[argparse.Namespace], tuple[CanFrame, ...]]] = {
    "voltage": _voltage,
    "current": _current,
    "fraction": _fraction,
    "dc-on": _control,
    "dc-off": _control,
    "read": _read,
    "ac-input-limit": _ac_input_limit,
    "walk-in": _walk_in,
}


def _current_frame(fraction: float, args: argparse.Namespace) -> CanFrame:
    try:
        return codec.encode_current_fraction(fraction, offline=args.offline)
    except EncodeError as exc:
        amps_low = codec.fraction_to_current(
            codec.FRACTION_MIN, rated_current_a=args.rated, fraction_at_rated=args.fraction_at_rated
        )
        amps_high = codec.fraction_to_current(
            codec.FRACTION_MAX, rated_current_a=args.rated, fraction_at_rated=args.fraction_at_rated
        )
        raise UsageError(
            f"{args.value:g} A is outside {amps_low:.2f}..{amps_high:.2f} A "
            f"(rated {args.rated:g} A at fraction {args.fraction_at_rated:g}): {exc}"
        ) from exc


def _known_quantities() -> str:
    return ", ".join([*(n.replace("_", "-") for n in codec.QUANTITY_BY_NAME), "all"])


def _read_frame(name: str) -> CanFrame:
    if name == "all":
        return codec.encode_read_all_request()
    quantity = codec.QUANTITY_BY_NAME.get(name.replace("-", "_"))
    if quantity is None:
        raise UsageError(f"unknown quantity {name!r}; known: {_known_quantities()}")
    return codec.encode_read_request(quantity)


def _number_or_usage(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise UsageError(f"walk-in: {text!r} is neither a number of seconds nor 'off'") from exc


def encode_main(argv: list[str]) -> int:
    """Print the frames for one command, one ``<ID>#<hex>`` per line."""
    if not argv:
        raise UsageError(f"say what to encode:\n{ENCODE_USAGE}")
    args = _build_encode_parser().parse_args(argv)
    try:
        frames = _ENCODERS[args.what](args)
    except CodecError as exc:
        raise UsageError(str(exc)) from exc
    for frame in frames:
        print(format_can_frame(frame.arbitration_id, frame.data, extended=True))
    return 0
