"""``gridzero encode soyosource ...`` and ``gridzero decode soyosource <hex>``."""

from __future__ import annotations

import argparse
import json

from gridzero.codec import CodecError, parse_hex
from gridzero.errors import UsageError
from gridzero_inverter.codec import (
    DEFAULT_ADDRESS,
    DEFAULT_PLAUSIBILITY,
    decode_frame,
    encode_demand,
    encode_query,
    frame_to_json,
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"address {text!r} is not a number (e.g. 0x24)") from exc
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"address {text!r} is outside 0x00..0xFF")
    return value


def _watts(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"demand {text!r} is not a whole number of watts") from exc
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"demand {value} W is outside 0..65535 W")
    return value


def _hex(frame: bytes) -> str:
    return frame.hex(" ").upper()


def encode_main(argv: list[str]) -> int:
    """``encode soyosource demand <W> [--address A]`` / ``encode soyosource query``."""
    parser = _Parser(
        prog="gridzero encode soyosource",
        description="Print a SoyoSource limiter frame as space-separated hex.",
    )
    sub = parser.add_subparsers(dest="frame", required=True, parser_class=_Parser)
    demand = sub.add_parser("demand", help="power demand frame (syssi soyosource_modbus.cpp)")
    demand.add_argument("power_w", type=_watts, help="demanded power, whole watts 0..65535")
    demand.add_argument("--address", type=_address, default=DEFAULT_ADDRESS, help="default 0x24")
    query = sub.add_parser("query", help="status query frame (syssi soyosource_modbus.cpp, README)")
    query.add_argument("--address", type=_address, default=DEFAULT_ADDRESS, help="default 0x24")
    args = parser.parse_args(argv)
    try:
        frame = (
            encode_demand(args.power_w, args.address)
            if args.frame == "demand"
            else encode_query(args.address)
        )
    except CodecError as exc:
        raise UsageError(f"encode soyosource: {exc}") from exc
    print(_hex(frame))
    return 0


def decode_main(argv: list[str]) -> int:
    """``decode soyosource <hex>``: a demand frame, a status query or a status reply as JSON."""
    parser = _Parser(
        prog="gridzero decode soyosource",
        description="Decode one SoyoSource limiter frame (hex, spaces optional) to JSON.",
    )
    parser.add_argument("hex", nargs="+", help="the frame, e.g. 24 56 00 21 02 58 80 AE")
    parser.add_argument(
        "--no-plausibility",
        action="store_true",
        help="decode a status reply even if its values are implausible",
    )
    args = parser.parse_args(argv)
    text = " ".join(args.hex)
    try:
        data = parse_hex(text)
        frame = decode_frame(data, None if args.no_plausibility else DEFAULT_PLAUSIBILITY)
    except CodecError as exc:
        raise UsageError(f"decode soyosource: {exc}") from exc
    print(json.dumps(frame_to_json(frame), indent=2))
    return 0
