"""Fuzz targets of the bms: its CAN frame decoder (every temperature variant) and its handlers
(run by `gridzero fuzz`, groups bms-codec and bms-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.codec import CodecError
from gridzero.runtime.fuzz import fuzz_tag, service_targets
from gridzero.runtime.fuzzkit import Target, can_input, split_can
from gridzero_bms import codec


def codec_targets() -> list[Target]:
    corpus: list[bytes] = []
    for module in (1, 2, 8, 9, 16):
        corpus += [
            can_input(a, d, False)
            for a, d in codec.encode_module_cells(module, [3700 + 17 * i for i in range(12)])
        ]
        ident, data = codec.encode_temperature_frame(module, (21.5, 22.0), (1, 5, 12))
        corpus.append(can_input(ident, data, True))
    corpus += [can_input(a, d, True) for a, d in codec.encode_balance(3, (1, 4, 9))]
    corpus += [can_input(a, d, False) for a, d in codec.encode_poll()]
    targets = []
    for variant in codec.TempVariant:
        decoder = codec.FrameDecoder(codec.CodecOptions(temp_variant=variant))

        def run(data: bytes, decoder: codec.FrameDecoder = decoder) -> object:
            ident, extended, payload = split_can(data)
            return decoder.decode(ident, payload, extended)

        targets.append(
            Target(f"bms FrameDecoder ({variant.value})", run, (CodecError,), tuple(corpus))
        )
    return targets


def harness_settings() -> dict[str, Any]:
    """What a bms service needs, beyond a data directory, to start without its hardware."""
    settings: dict[str, Any] = {
        "buses": [{"interface": "virtual", "channel": f"{fuzz_tag()}b", "modules": [1, 2]}]
    }
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of a bms service started without its hardware."""
    return service_targets("bms", harness_settings())
