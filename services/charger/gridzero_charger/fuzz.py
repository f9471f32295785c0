"""Fuzz targets of the charger: the R48 frame decoder and its handlers (groups charger-codec,
charger-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.codec import CodecError
from gridzero.runtime.fuzz import fuzz_tag, service_targets
from gridzero.runtime.fuzzkit import Target, can_input, split_can
from gridzero_charger import codec


def codec_targets() -> list[Target]:
    frames = [
        codec.encode_voltage(52.5),
        codec.encode_voltage(46.8, offline=True, cells_in_series=12),
        codec.encode_current_fraction(0.5),
        codec.encode_control(codec.Control(dc_off=True)),
        codec.encode_read_request(codec.Quantity(0x01)),
        codec.encode_read_all_request(),
        codec.encode_reading(codec.Quantity(0x01), 53.1),
        codec.encode_reading(codec.Quantity(0x02), 12.5, more=True),
        codec.encode_status({}),
        codec.encode_write_ack(0x21, codec.encode_voltage(52.5).data),
    ]
    corpus = tuple(can_input(f.arbitration_id, f.data, True) for f in frames)

    def run(data: bytes) -> object:
        ident, _extended, payload = split_can(data)
        message = codec.decode_frame(ident, payload)
        return codec.message_to_dict(message)

    return [Target("charger decode_frame (R48)", run, (CodecError,), corpus)]


def harness_settings() -> dict[str, Any]:
    """What a charger service needs, beyond a data directory, to start without its hardware."""
    settings: dict[str, Any] = {"can": {"interface": "virtual", "channel": f"{fuzz_tag()}c"}}
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of a charger service started without its hardware."""
    return service_targets("charger", harness_settings())
