"""Fuzz targets of the inverter: the SoyoSource frame decoder, the RS485 stream framer (its
buffer must stay bounded) and its handlers (groups inverter-codec, inverter-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.codec import CodecError
from gridzero.runtime.fuzz import service_targets
from gridzero.runtime.fuzzkit import Target
from gridzero_inverter import codec


def codec_targets() -> list[Target]:
    reply = codec.encode_status_reply(codec.StatusReply(0, 52.1, 8.2, 231.0, 50.0, 31.5))
    corpus = (
        codec.encode_demand(0),
        codec.encode_demand(600),
        codec.encode_demand(40, 0x25),
        codec.encode_query(),
        reply,
        codec.encode_demand(228) + reply + codec.encode_query(),
        bytes.fromhex("2301010000023E001700EF64029EB5"),
    )

    def decode(data: bytes) -> object:
        return codec.frame_to_json(codec.decode_frame(data))

    holder: dict[str, codec.Framer] = {}

    def new_framer() -> codec.Framer:
        holder["f"] = codec.Framer(addresses=frozenset({0x24, 0x25}))
        return holder["f"]

    new_framer()
    fed = [0]

    def feed(data: bytes) -> object:
        fed[0] += 1
        if fed[0] % 1000 == 0:
            new_framer()
        framer = holder["f"]
        result = framer.feed(data)
        if fed[0] % 7 == 0:
            framer.flush()
        return result

    def bounded() -> str | None:
        pending = holder["f"].pending
        return None if pending <= 64 else f"Framer holds {pending} bytes back (unbounded buffer?)"

    return [
        Target("inverter decode_frame (SoyoSource)", decode, (CodecError,), corpus),
        Target("inverter Framer stream", feed, (), corpus, check=bounded),
    ]


def harness_settings() -> dict[str, Any]:
    """What a inverter service needs, beyond a data directory, to start without its hardware."""
    settings: dict[str, Any] = {
        "units": [{"id": "gtn1", "port": "loop://", "dc_min_v": 40, "dc_max_v": 60}]
    }
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of a inverter service started without its hardware."""
    return service_targets("inverter", harness_settings())
