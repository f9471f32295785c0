"""Fuzz targets of the shunt: the ADS1115 register codec and its handlers (groups shunt-codec,
shunt-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.codec import CodecError
from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target
from gridzero_shunt import codec


def codec_targets() -> list[Target]:
    corpus = (b"\x25\x80", b"\x80\x00", b"\x7f\xff", b"\x85\x83", b"\x00\x00", b"\xff\xff")

    def conversion(data: bytes) -> object:
        counts = codec.decode_conversion(data)
        return codec.is_saturated(counts)

    def config(data: bytes) -> object:
        word = int.from_bytes(data[:3], "big") if data else -1
        decoded = codec.decode_config(word)
        return codec.encode_config(decoded), decoded.describe()

    def words(data: bytes) -> object:
        word = codec.bytes_to_word(data)
        return codec.signed16(codec.swap_word(word)), codec.word_to_bytes(word)

    return [
        Target("shunt decode_conversion (ADS1115)", conversion, (CodecError,), corpus),
        Target("shunt decode_config (ADS1115)", config, (CodecError,), corpus),
        Target("shunt register words (ADS1115)", words, (CodecError,), corpus),
    ]


def harness_settings() -> dict[str, Any]:
    """What a shunt service needs, beyond a data directory, to start without its hardware."""
    settings: dict[str, Any] = {"i2c_bus": "sim"}
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of a shunt service started without its hardware."""
    return service_targets("shunt", harness_settings())
