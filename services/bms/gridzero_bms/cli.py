"""``gridzero decode vw-module`` and ``gridzero encode vw-module``.

decode: ``gridzero decode vw-module 1B4#00A0F3...`` prints the frame as JSON.
encode: ``gridzero encode vw-module balance|poll|cells|temps ...`` prints ``<ID>#<hex>`` lines.
"""

from __future__ import annotations

import argparse
import json
from typing import NoReturn

from gridzero.codec import CodecError, format_can_frame, parse_can_frame
from gridzero.errors import UsageError
from gridzero_bms.codec import (
    CodecOptions,
    ExtenderBalance,
    FrameDecoder,
    TempVariant,
    encode_balance,
    encode_module_cells,
    encode_poll,
    encode_temperature_frame,
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2 via gridzero.cli) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _options_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--temp-variant",
        choices=[v.value for v in TempVariant],
        default=TempVariant.DBC.value,
        help="temperature frame reading: dbc (−40 °C, default) or tom (−43 °C)",
    )
    parser.add_argument(
        "--gen1-module3",
        action="store_true",
        help="module 3 balances on 0x1A55541E/1F (Gen1 / orange-top GTE packs)",
    )
    parser.add_argument(
        "--extender-balance",
        choices=[v.value for v in ExtenderBalance],
        default=ExtenderBalance.NONE.value,
        help="balancing IDs for modules 9..16",
    )


def _options(ns: argparse.Namespace) -> CodecOptions:
    return CodecOptions(
        temp_variant=TempVariant(ns.temp_variant),
        gen1_module3=ns.gen1_module3,
        extender_balance=ExtenderBalance(ns.extender_balance),
    )


def decode_main(argv: list[str]) -> int:
    """``gridzero decode vw-module <ID>#<hexdata> [...]``: one JSON object per frame."""
    parser = _Parser(prog="gridzero decode vw-module", description="decode VW module CAN frames")
    parser.add_argument("frames", nargs="+", metavar="ID#HEX", help="e.g. 1B0#00A0F3...")
    _options_args(parser)
    ns = parser.parse_args(argv)
    decoder = FrameDecoder(_options(ns))
    for text in ns.frames:
        try:
            arbitration_id, data = parse_can_frame(text)
            ident = text.strip().partition("#")[0]
            extended = len(ident) > 3 or arbitration_id > 0x7FF
            frame = decoder.decode(arbitration_id, data, extended)
        except CodecError as exc:
            raise UsageError(str(exc)) from exc
        print(json.dumps(frame.to_json(), ensure_ascii=False))
    return 0


def _int_list(text: str, what: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part, 0) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UsageError(f"{what}: {text!r} is not a comma-separated list of integers") from exc


def _float_list(text: str, what: str) -> list[float | None]:
    values: list[float | None] = []
    for raw in text.split(","):
        part = raw.strip()
        if part.lower() in ("none", "-", ""):
            values.append(None)
            continue
        try:
            values.append(float(part))
        except ValueError as exc:
            raise UsageError(f"{what}: {part!r} is not a number") from exc
    return values


def encode_main(argv: list[str]) -> int:
    """``gridzero encode vw-module balance|poll|cells|temps ...``: ``<ID>#<hex>`` lines."""
    parser = _Parser(prog="gridzero encode vw-module", description="encode VW module CAN frames")
    sub = parser.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    balance = sub.add_parser("balance", help="balancing command pair for one module")
    balance.add_argument("--module", type=int, required=True)
    balance.add_argument("--cells", default="", help="cells to bleed, e.g. 1,5,9 ('' = all off)")
    balance.add_argument("--cells-per-module", type=int, default=12)
    _options_args(balance)
    sub.add_parser("poll", help="the 0x0BA keep-alive pair")
    cells = sub.add_parser("cells", help="cell-voltage frames of one module")
    cells.add_argument("--module", type=int, required=True)
    cells.add_argument("--mv", required=True, help="cell voltages in mV, e.g. 3900,3901,...")
    cells.add_argument("--counter", type=int, default=0)
    temps = sub.add_parser("temps", help="temperature / balance-status frame of one module")
    temps.add_argument("--module", type=int, required=True)
    temps.add_argument("--temps", required=True, help="°C, e.g. 21.5,22 ('none' = absent)")
    temps.add_argument("--balance", default="", help="cells whose bleed bit is set")
    temps.add_argument(
        "--temp-variant", choices=[v.value for v in TempVariant], default=TempVariant.DBC.value
    )
    ns = parser.parse_args(argv)
    try:
        frames = _encode(ns)
    except CodecError as exc:
        raise UsageError(str(exc)) from exc
    for arbitration_id, data in frames:
        print(format_can_frame(arbitration_id, data, extended=arbitration_id > 0x7FF))
    return 0


def _encode(ns: argparse.Namespace) -> list[tuple[int, bytes]]:
    if ns.kind == "poll":
        return encode_poll()
    if ns.kind == "balance":
        return encode_balance(
            ns.module,
            _int_list(ns.cells, "--cells"),
            _options(ns),
            cells_per_module=ns.cells_per_module,
        )
    if ns.kind == "cells":
        cells_mv: list[int | None] = []
        for value in _float_list(ns.mv, "--mv"):
            cells_mv.append(None if value is None else round(value))
        return encode_module_cells(ns.module, cells_mv, counter=ns.counter)
    return [
        encode_temperature_frame(
            ns.module,
            _float_list(ns.temps, "--temps"),
            _int_list(ns.balance, "--balance"),
            variant=TempVariant(ns.temp_variant),
        )
    ]
