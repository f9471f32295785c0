"""``gridzero decode ads1115`` and ``gridzero encode ads1115``.

decode: a conversion register value (as read, MSB first) to volts and, with a
shunt rating, amperes; or a config register word to its fields. Prints JSON.
encode: a config register word from PGA, data rate and mode.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import NoReturn

from gridzero.codec import CodecError, parse_hex
from gridzero.errors import UsageError
from gridzero_shunt.codec import (
    CONFIG_LAYOUT,
    FSR_CHOICES_V,
    MUX_NAMES,
    RATE_CHOICES_SPS,
    decode_config,
    encode_config,
    is_saturated,
    lsb_v,
    shunt_config,
    signed16,
    swap_word,
)
from gridzero_shunt.current import CurrentSettings, current_from_counts

_SHUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*a\s*/\s*(\d+(?:\.\d+)?)\s*mv\s*$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _fsr(text: str) -> float:
    try:
        value = abs(float(text.strip().lstrip("±")))
    except ValueError:
        value = float("nan")
    for choice in FSR_CHOICES_V:
        if abs(value - choice) < 1e-9:
            return choice
    allowed = ", ".join(f"{v:g}" for v in FSR_CHOICES_V)
    raise UsageError(f"--pga {text!r}: the ADS1115 full-scale range must be one of {allowed} (V)")


def _word(text: str, what: str) -> int:
    try:
        data = parse_hex(text)
    except CodecError as exc:
        raise UsageError(f"{what} {text!r} is not hex: write it like 0x2580") from exc
    if len(data) != 2:
        raise UsageError(f"{what} {text!r} has {len(data)} bytes; a register is 2 bytes (0x0000)")
    return int.from_bytes(data, "big")


def _shunt(text: str) -> CurrentSettings:
    match = _SHUNT_RE.match(text)
    if not match:
        raise UsageError(
            f"--shunt {text!r}: write the rating as <amperes>A/<millivolts>mV, e.g. 100A/75mV"
        )
    rated_a, rated_mv = float(match.group(1)), float(match.group(2))
    if rated_a <= 0 or rated_mv <= 0:
        raise UsageError(f"--shunt {text!r}: the rating must be positive")
    return CurrentSettings(shunt_rated_a=rated_a, shunt_rated_mv=rated_mv)


def decode_main(argv: list[str]) -> int:
    """``gridzero decode ads1115 [--pga V] [--shunt 100A/75mV] <hex>`` or ``--config <hex>``."""
    parser = _Parser(
        prog="gridzero decode ads1115",
        description="Decode an ADS1115 conversion result (MSB first) or a config word.",
    )
    parser.add_argument("value", nargs="?", help="conversion register value, e.g. 0x2580")
    parser.add_argument("--config", metavar="HEX", help="decode a config register word instead")
    parser.add_argument("--pga", default="0.256", help="full-scale range in V (default 0.256)")
    parser.add_argument("--shunt", help="shunt rating, e.g. 100A/75mV, to print the current")
    parser.add_argument(
        "--smbus-word",
        action="store_true",
        help="the value is an SMBus read_word_data result (bytes swapped)",
    )
    args = parser.parse_args(argv)
    if (args.value is None) == (args.config is None):
        raise UsageError(
            "gridzero decode ads1115: give either a conversion value or --config <hex>"
        )
    if args.config is not None:
        word = _word(args.config, "--config")
        if args.smbus_word:
            word = swap_word(word)
        config = decode_config(word)
        fields = {f.name: getattr(config, f.name) for f in CONFIG_LAYOUT}
        out: dict[str, object] = {"register": "config", "word": f"0x{word:04X}"}
        out.update(config.describe())
        out["fields"] = fields
        print(json.dumps(out))
        return 0
    fsr_v = _fsr(args.pga)
    word = _word(args.value, "conversion value")
    if args.smbus_word:
        word = swap_word(word)
    counts = signed16(word)
    saturated = is_saturated(counts)
    result: dict[str, object] = {
        "register": "conversion",
        "word": f"0x{word:04X}",
        "counts": counts,
        "fsr_v": fsr_v,
        "lsb_v": lsb_v(fsr_v),
        "voltage_v": counts * lsb_v(fsr_v),
        "saturated": saturated,
    }
    if args.shunt is not None:
        settings = _shunt(args.shunt)
        settings = CurrentSettings(
            shunt_rated_a=settings.shunt_rated_a,
            shunt_rated_mv=settings.shunt_rated_mv,
            fsr_v=fsr_v,
        )
        result["shunt_ohm"] = settings.shunt_ohm
        # A full-scale code means "at least this much": the current is unknown.
        result["current_a"] = None if saturated else current_from_counts(counts, settings)
    print(json.dumps(result))
    return 0


def encode_main(argv: list[str]) -> int:
    """``gridzero encode ads1115 config --pga 0.256 --rate 128 --mode single``."""
    parser = _Parser(
        prog="gridzero encode ads1115",
        description="Encode an ADS1115 config register word (printed as 0xXXXX).",
    )
    parser.add_argument("register", choices=["config"], help="what to encode")
    parser.add_argument("--pga", default="0.256", help="full-scale range in V (default 0.256)")
    parser.add_argument(
        "--rate",
        type=int,
        default=128,
        help=f"data rate in SPS, one of {', '.join(map(str, RATE_CHOICES_SPS))} (default 128)",
    )
    parser.add_argument("--mode", choices=["single", "continuous"], default="single")
    parser.add_argument(
        "--mux", type=int, default=0, help="input code 0..7 (default 0 = AIN0-AIN1)"
    )
    args = parser.parse_args(argv)
    fsr_v = _fsr(args.pga)
    if args.rate not in RATE_CHOICES_SPS:
        allowed = ", ".join(map(str, RATE_CHOICES_SPS))
        raise UsageError(f"--rate {args.rate}: the data rate must be one of {allowed} SPS")
    if args.mux not in MUX_NAMES:
        raise UsageError(f"--mux {args.mux}: the input code must be 0..7")
    word = encode_config(
        shunt_config(fsr_v, args.rate, single_shot=args.mode == "single", mux=args.mux)
    )
    print(f"0x{word:04X}")
    return 0
