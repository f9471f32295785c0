"""``gridzero fuzz``: every decoder, framer and MQTT handler fed generated input.

Each target gets ``--examples`` inputs (default 100,000) from a seeded generator
(stdlib ``random``): mutations of valid examples (bit flips, interesting bytes,
insertions, deletions, truncation, splices), random bytes, and for JSON inputs
structural mutations (a field set to null, a huge or negative number, a wrong
type, an unknown key, deep nesting, NaN/Infinity tokens). The same seed always
gives the same inputs.

A target passes when every input gives a value or the module's own documented
error (``CodecError`` for codecs, ``PayloadError``/``ValueError`` for MQTT
payloads, the runtime's input errors for service handlers). Anything else is a
crash: it is reported with the input that caused it, and the command exits 1.

Service handlers run on real service instances (virtual CAN, ``loop://``
serial, the simulated ADS1115, a console on a free loopback port) exactly as the
runtime dispatches them; their publishes are captured instead of being sent,
and every JSON payload they would publish is validated against the contract.

    gridzero fuzz [--examples N] [--seed S] [--only a,b] [--list]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gridzero import contract
from gridzero.codec import CodecError
from gridzero.contract import (
    Payload,
    PayloadError,
    Topics,
    parse_meter,
    parse_payload,
    parse_setting_text,
)
from gridzero.errors import UsageError

# --------------------------------------------------------------------------- generator

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x24, 0x56, 0xFD, 0xF0, 0x0A, 0x0D)
NASTY_JSON: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    -0.0,
    0.5,
    1e308,
    -1e308,
    2**63,
    -(2**63),
    2**200,
    "",
    "x" * 300,
    "nan",
    "1e999",
    "\u0000",
    "\udcff",
    [],
    {},
    [1, 2, 3],
    {"a": {"b": {"c": [None]}}},
    "online",
    "auto",
    "true",
)
JSON_NONFINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999")


class Mutator:
    """Seeded input generator: mutates a corpus of valid examples, sometimes makes noise."""

    def __init__(self, seed: int, corpus: tuple[bytes, ...], *, json_like: bool) -> None:
        self.rng = random.Random(seed)
        self.corpus = corpus or (b"",)
        self.json_like = json_like

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            return rng.randbytes(rng.randint(0, 64))
        seed = rng.choice(self.corpus)
        data = self._json_mutation(seed) if self.json_like and roll < 0.45 else seed
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3, 6))):
            data = self._byte_mutation(data)
        return data

    def _byte_mutation(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        op = rng.randrange(9)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # interesting byte
            buf[rng.randrange(len(buf))] = rng.choice(INTERESTING_BYTES)
        elif op == 2:  # insert random bytes
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:  # delete a run
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 8)]
        elif op == 4 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 5 and buf:  # duplicate a chunk
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 16)]
        elif op == 6:  # splice with another example
            other = rng.choice(self.corpus)
            buf = buf[: rng.randint(0, len(buf))] + bytearray(other[rng.randint(0, len(other)) :])
        elif op == 7 and buf:  # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 8 and self.json_like:  # a non-finite token somewhere
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.choice(JSON_NONFINITE)
        return bytes(buf)

    def _json_mutation(self, seed: bytes) -> bytes:
        rng = self.rng
        try:
            value = json.loads(seed)
        except ValueError:
            return seed
        if isinstance(value, dict) and value and rng.random() < 0.85:
            value = dict(value)
            key = rng.choice(list(value))
            op = rng.randrange(5)
            if op == 0:
                del value[key]
            elif op == 1:
                value[f"extra{rng.randrange(3)}"] = rng.choice(NASTY_JSON)
            elif (
                op == 2 and isinstance(value[key], int | float) and not isinstance(value[key], bool)
            ):
                value[key] = value[key] * rng.choice((-1, 10, 1e6, 1e300)) + rng.choice((0, 0.5))
            else:
                value[key] = rng.choice(NASTY_JSON)
        elif rng.random() < 0.5:
            value = rng.choice(NASTY_JSON)
        else:
            for _ in range(rng.randint(1, 300)):
                value = [value] if rng.random() < 0.5 else {"k": value}
        try:
            return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return seed


# --------------------------------------------------------------------------- targets


Runner = Callable[[bytes], object]


@dataclass(slots=True)
class Target:
    """One thing to fuzz: ``run(input)`` must return or raise one of ``allowed``."""

    name: str
    run: Runner
    allowed: tuple[type[BaseException], ...]
    corpus: tuple[bytes, ...]
    json_like: bool = False
    close: Callable[[], None] | None = None
    check: Callable[[], str | None] | None = None  # an invariant checked after every input


@dataclass(slots=True)
class Crash:
    """One input that raised something other than the target's documented errors."""

    data: bytes
    error: str


@dataclass(slots=True)
class TargetResult:
    """What one target did with its inputs."""

    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    crash_count: int = 0

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def run_target(target: Target, examples: int, seed: int) -> TargetResult:
    """Feed ``examples`` generated inputs (the corpus first) to ``target``."""
    result = TargetResult(target.name)
    mutator = Mutator(seed, target.corpus, json_like=target.json_like)
    inputs = list(target.corpus[:examples])
    start = time.perf_counter()
    for i in range(examples):
        data = inputs[i] if i < len(inputs) else next(mutator)
        try:
            target.run(data)
            result.accepted += 1
        except target.allowed:
            result.rejected += 1
        except Exception as exc:  # noqa: BLE001 - anything else is exactly what we look for
            _record(result, data, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        if target.check is not None:
            problem = target.check()
            if problem is not None:
                _record(result, data, problem, "")
    result.inputs = examples
    result.seconds = time.perf_counter() - start
    return result


def _record(result: TargetResult, data: bytes, error: str, trace: str) -> None:
    result.crash_count += 1
    if len(result.crashes) < 5:
        result.crashes.append(Crash(data, error + ("\n" + trace if trace else "")))


# --------------------------------------------------------------------------- codec targets


def _can_input(arbitration_id: int, data: bytes, extended: bool) -> bytes:
    return arbitration_id.to_bytes(4, "big") + bytes((1 if extended else 0,)) + data


def _split_can(data: bytes) -> tuple[int, bool, bytes]:
    arbitration_id = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
    extended = bool(data[4] & 1) if len(data) > 4 else arbitration_id > 0x7FF
    return arbitration_id, extended, data[5:]


def bms_targets() -> list[Target]:
    from gridzero_bms import codec  # noqa: PLC0415 - loaded on demand

    corpus: list[bytes] = []
    for module in (1, 2, 8, 9, 16):
        corpus += [
            _can_input(a, d, False)
            for a, d in codec.encode_module_cells(module, [3700 + 17 * i for i in range(12)])
        ]
        ident, data = codec.encode_temperature_frame(module, (21.5, 22.0), (1, 5, 12))
        corpus.append(_can_input(ident, data, True))
    corpus += [_can_input(a, d, True) for a, d in codec.encode_balance(3, (1, 4, 9))]
    corpus += [_can_input(a, d, False) for a, d in codec.encode_poll()]
    targets = []
    for variant in codec.TempVariant:
        decoder = codec.FrameDecoder(codec.CodecOptions(temp_variant=variant))

        def run(data: bytes, decoder: codec.FrameDecoder = decoder) -> object:
            ident, extended, payload = _split_can(data)
            return decoder.decode(ident, payload, extended)

        targets.append(
            Target(f"bms FrameDecoder ({variant.value})", run, (CodecError,), tuple(corpus))
        )
    return targets


def charger_targets() -> list[Target]:
    from gridzero_charger import codec  # noqa: PLC0415

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
    corpus = tuple(_can_input(f.arbitration_id, f.data, True) for f in frames)

    def run(data: bytes) -> object:
        ident, _extended, payload = _split_can(data)
        message = codec.decode_frame(ident, payload)
        return codec.message_to_dict(message)

    return [Target("charger decode_frame (R48)", run, (CodecError,), corpus)]


def inverter_targets() -> list[Target]:
    from gridzero_inverter import codec  # noqa: PLC0415

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


def shunt_targets() -> list[Target]:
    from gridzero_shunt import codec  # noqa: PLC0415

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


def telnet_targets() -> list[Target]:
    from gridzero_telnet_console import protocol  # noqa: PLC0415

    corpus = (
        b"hello\r\n",
        bytes((255, 251, 1, 255, 253, 3, 255, 250, 31, 0, 120, 0, 40, 255, 240)),
        b"\x1b[A\x1b[B\x1b[1;5C\x1bOP",
        b":set controller.target_grid_w 20\r\x00",
        bytes((255, 255, 255, 244, 255, 246, 255, 254, 24, 255, 252, 34)),
        "äöü€\r\n".encode(),
    )
    holder: dict[str, protocol.TelnetParser] = {"p": protocol.TelnetParser()}
    fed = [0]

    def feed(data: bytes) -> object:
        fed[0] += 1
        if fed[0] % 1000 == 0:
            holder["p"] = protocol.TelnetParser()
            holder["p"].opening()
        parser = holder["p"]
        events = parser.feed(data)
        if fed[0] % 5 == 0:
            events += parser.flush_escape()
        return events

    def bounded() -> str | None:
        p = holder["p"]
        if len(p._sb) > 4096 or len(p._esc_buf) > 64:
            return f"telnet parser buffers grew: sb {len(p._sb)}, esc {len(p._esc_buf)}"
        if not (0 < p.width <= 10000 and 0 < p.height <= 10000):
            return f"telnet window size {p.width}x{p.height} out of range"
        return None

    return [Target("telnet TelnetParser", feed, (), corpus, check=bounded)]


# --------------------------------------------------------------------------- contract targets


def example_payload(model: type[BaseModel]) -> dict[str, Any]:
    """A valid example of a contract model, built from its field types."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        values[name] = _example_value(info.annotation, name)
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError:
        # cross-field rules (e.g. "current_a or power_w, not both"): optional fields left out
        for name, info in model.model_fields.items():
            if type(None) in get_args(info.annotation) and name != "ts":
                values[name] = None
                with contextlib.suppress(ValidationError):
                    return model.model_validate(values).model_dump(mode="json")
        raise


def _example_value(annotation: Any, name: str) -> Any:  # noqa: PLR0911 - one case per type
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, UnionType):
        real = [a for a in args if a is not type(None)]
        return _example_value(real[0], name) if real else None
    if origin is Literal:
        return args[0]
    if origin is list:
        return [_example_value(args[0], name)] if args else []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return example_payload(annotation)
    if (
        isinstance(annotation, type)
        and issubclass(annotation, str)
        and hasattr(annotation, "_value2member_map_")
    ):
        return next(iter(annotation._value2member_map_))  # a StrEnum
    if annotation is bool:
        return True
    if annotation is int:
        return 1
    if annotation is float:
        return 1.0
    if annotation is str:
        return "x"
    return None


def contract_targets() -> list[Target]:
    targets: list[Target] = []
    models: list[type[Payload]] = [*contract.PAYLOAD_MODELS]
    for model in models:
        example = json.dumps(example_payload(model)).encode()

        def run(data: bytes, model: type[Payload] = model) -> object:
            return parse_payload(model, "fuzz/topic", data)

        targets.append(
            Target(f"parse_payload {model.__name__}", run, (PayloadError,), (example,), True)
        )

    def meter_plain(data: bytes) -> object:
        return parse_meter(data)

    def meter_json(data: bytes) -> object:
        return parse_meter(data, json_path="ENERGY.Power", sign=-1)

    def setting_text(data: bytes) -> object:
        return parse_setting_text(data)

    targets += [
        Target(
            "parse_meter (plain)", meter_plain, (PayloadError,), (b"123", b"-45.5", b" 0 "), True
        ),
        Target(
            "parse_meter (json path)",
            meter_json,
            (PayloadError,),
            (b'{"ENERGY": {"Power": 812}}', b'{"ENERGY": {"Power": "1.5"}}'),
            True,
        ),
        Target(
            "parse_setting_text", setting_text, (PayloadError,), (b"1", b"4.1", b"true", b"auto")
        ),
    ]
    from gridzero_tools.sim import faults  # noqa: PLC0415

    fault_corpus = (
        b'{"kind": "load_step", "extra_w": 1500, "duration_s": 120}',
        b'{"kind": "cell_drift", "module": 0, "cell": 3, "offset_v": 0.2}',
        b'{"kind": "gateway_restart", "unit": 0}',
        b'{"kind": "bus_garbage", "bus": "charger", "rate_hz": 50}',
    )

    def fault(data: bytes) -> object:
        return faults.parse_fault(data)

    targets.append(Target("sim parse_fault", fault, (UsageError,), fault_corpus, True))
    return targets


# --------------------------------------------------------------------------- service handlers


def _topic_examples(topics: Topics, unit: str) -> dict[str, bytes]:
    """A valid payload for every topic a service subscribes to."""
    models: dict[str, type[Payload]] = {
        topics.bms_limits: contract.BmsLimits,
        topics.bms_pack: contract.PackState,
        topics.charger_state: contract.ChargerState,
        topics.charger_set: contract.ChargeCommand,
        topics.inverter_state(unit): contract.InverterState,
        topics.inverter_set(unit): contract.InverterCommand,
        topics.shunt_state: contract.ShuntState,
        topics.controller_state: contract.ControllerState,
        topics.sim_truth: contract.SimTruth,
        topics.sim_fault_set: contract.SimFault,
    }
    out = {t: json.dumps(_live_example(m)).encode() for t, m in models.items()}
    out[contract.DEFAULT_METER_TOPIC] = b"350"
    out[contract.LEGACY_CHARGE_TARGET_TOPIC] = b"500"
    out[contract.HA_STATUS_TOPIC] = b"online"
    return out


_SEQ = itertools.count(1)  # numbered payloads must count up to be accepted


def _live_example(model: type[Payload]) -> dict[str, Any]:
    """An example with a current time stamp (services judge freshness by ``ts``)."""
    example = example_payload(model)
    if "ts" in example:
        example["ts"] = time.time()
    if model is contract.SimTruth:
        example["cells_v"] = [[3.7] * 12 for _ in range(9)]
        example["temperatures_c"] = [20.0] * 9
        example["inverter_w"] = [100.0]
    if model is contract.BmsLimits:
        example.update(cvl_v=49.2, ccl_a=30, dcl_a=30, pack_voltage_v=47.0)
    if "seq" in example:
        example.update(boot="fuzz", seq=next(_SEQ))
    return example


@dataclass(slots=True)
class Harness:
    """A service started in-process, not connected; publishes are captured and checked."""

    name: str
    service: Any
    ctx: Any
    published: int = 0
    bad_publish: str | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None

    def capture(
        self, topic: str, payload: Payload | str | bytes, *, retain: bool = False, qos: int = 0
    ) -> None:
        del retain, qos
        self.published += 1
        if isinstance(payload, BaseModel):
            try:
                type(payload).model_validate_json(payload.model_dump_json())
            except ValidationError as exc:
                self.bad_publish = f"{topic}: published payload fails its own model: {exc}"


def _settings_for(name: str, data_dir: Path) -> Any:
    from gridzero.runtime.launch import service_class  # noqa: PLC0415

    cls = service_class(name)
    common: dict[str, Any] = {"data_dir": data_dir, "store_flush_s": 60}
    tag = f"fuzz{time.monotonic_ns()}"
    extra: dict[str, dict[str, Any]] = {
        "bms": {
            "buses": [{"interface": "virtual", "channel": f"{tag}b", "modules": [1, 2]}],
        },
        "charger": {"can": {"interface": "virtual", "channel": f"{tag}c"}},
        "inverter": {
            "units": [{"id": "gtn1", "port": "loop://", "dc_min_v": 40, "dc_max_v": 60}],
        },
        "shunt": {"i2c_bus": "sim"},
        "controller": {},
        "telnet-console": {"insecure_loopback_no_password": True, "port": 0},
        "sim": {
            "can_hub": "",
            "bms_buses": [
                {"interface": "virtual", "channel": f"{tag}s0"},
                {"interface": "virtual", "channel": f"{tag}s1"},
            ],
            "charger_bus": {"interface": "virtual", "channel": f"{tag}sc"},
            "inverter_listen": ["127.0.0.1:0"],
        },
    }
    return cls, cls.settings_class.model_validate({**common, **extra[name]})


def start_harness(name: str) -> Harness:
    """Build and start a service without a broker connection."""
    from gridzero.runtime.service import Context  # noqa: PLC0415

    tmp = tempfile.TemporaryDirectory(prefix=f"gridzero-fuzz-{name}-")
    cls, settings = _settings_for(name, Path(tmp.name))
    ctx = Context(cls.name, settings)
    service = cls(settings, ctx)
    harness = Harness(name, service, ctx, tmp=tmp)
    ctx.publish = harness.capture  # type: ignore[method-assign] # captured, not sent
    service.start()
    return harness


def service_targets(name: str) -> list[Target]:
    """One target per subscription of the service: payloads (and setting names) fuzzed."""
    from gridzero.runtime.mqtt import Message  # noqa: PLC0415
    from gridzero.runtime.service import INPUT_ERRORS  # noqa: PLC0415

    harness = start_harness(name)
    ctx = harness.ctx
    topics: Topics = ctx.topics
    examples = _topic_examples(topics, "gtn1")
    targets: list[Target] = []
    subs: list[tuple[str, Any]] = list(ctx._subs)
    filters = sorted({f for f, _h in subs})
    for topic_filter in filters:
        handlers = [h for f, h in subs if f == topic_filter]
        concrete, corpus = _concrete(topic_filter, topics, examples, harness)
        if not concrete:
            continue

        def run(
            data: bytes,
            handlers: list[Any] = handlers,
            concrete: list[str] = concrete,
        ) -> object:
            topic = concrete[data[0] % len(concrete)] if data else concrete[0]
            message = Message(topic, data[1:])
            for handler in handlers:
                handler(message)
            return None

        def check(h: Harness = harness) -> str | None:
            return h.bad_publish

        targets.append(
            Target(
                f"{name} handler {topic_filter}",
                run,
                (*INPUT_ERRORS, PayloadError),
                corpus,
                json_like=True,
                check=check,
            )
        )
    if targets:
        targets[-1].close = lambda: _stop_harness(harness)
    else:
        _stop_harness(harness)
    return targets


def _stop_harness(harness: Harness) -> None:
    with contextlib.suppress(Exception):
        harness.service.stop()
    if harness.tmp is not None:
        harness.tmp.cleanup()


def _concrete(
    topic_filter: str, topics: Topics, examples: dict[str, bytes], harness: Harness
) -> tuple[list[str], tuple[bytes, ...]]:
    """Concrete topics for a filter, and a corpus: one selector byte + a payload."""
    if "/settings/+/set" in topic_filter:
        names = _setting_names(harness, topic_filter)
        concrete = [topic_filter.replace("/settings/+/set", f"/settings/{n}/set") for n in names]
        values = (b"1", b"0", b"4.1", b"-5", b"true", b"off", b"auto", b"hold", b"1e999", b"x")
        corpus = tuple(bytes((i,)) + v for i in range(len(concrete)) for v in values)
        return concrete, corpus
    if "+" in topic_filter:
        concrete = [topic_filter.replace("+", "gtn1"), topic_filter.replace("+", "nosuch")]
        example = examples.get(concrete[0], b"{}")
        return concrete, (b"\0" + example, b"\1" + example)
    if topic_filter == topics.sim_fault_set:
        return [topic_filter], tuple(b"\0" + f for f in SIM_FAULTS)
    if "/action/" in topic_filter:
        return [topic_filter], (b"\0PRESS", b"\x0050", b"\0", b'\0{"x": 1}')
    if topic_filter not in examples:
        return [topic_filter], (b"\0", b"\0online", b"\x00123")
    return [topic_filter], (b"\0" + examples[topic_filter],)


SIM_FAULTS = (
    b'{"kind": "load_step", "value": 500, "duration_s": 1}',
    b'{"kind": "meter_junk", "duration_s": 2}',
    b'{"kind": "cell_drift", "target": "0:1:3", "value": 0.5}',
    b'{"kind": "module_silent", "target": "1:1", "duration_s": 3}',
    b'{"kind": "over_temperature", "target": "0:2", "value": 30}',
    b'{"kind": "clear", "target": ""}',
    b'{"kind": "cell_leak", "module": 0, "cell": 3, "current_a": 0.5}',
    b'{"kind": "gateway_restart", "target": "0"}',
)


def _setting_names(harness: Harness, topic_filter: str) -> list[str]:
    names: list[str] = []
    for value in vars(harness.service).values():
        model = getattr(value, "value", None)
        if isinstance(model, BaseModel):
            names += list(type(model).model_fields)
    for value in getattr(harness.service, "runtimes", {}).values():
        names += list(type(value.value).model_fields)
    return [*dict.fromkeys(names), "no_such", "../x", "a" * 200]


# --------------------------------------------------------------------------- command

SERVICES_FUZZED = ("bms", "charger", "inverter", "shunt", "controller", "telnet-console", "sim")


def all_targets(only: set[str] | None = None) -> Iterator[Target]:
    """Every target, built lazily (service targets start their service)."""
    groups: list[tuple[str, Callable[[], list[Target]]]] = [
        ("bms-codec", bms_targets),
        ("charger-codec", charger_targets),
        ("inverter-codec", inverter_targets),
        ("shunt-codec", shunt_targets),
        ("telnet-protocol", telnet_targets),
        ("contract", contract_targets),
    ]
    groups += [(f"{s}-handlers", _bind(s)) for s in SERVICES_FUZZED]
    for group, build in groups:
        if only and group not in only:
            continue
        yield from build()


def _bind(name: str) -> Callable[[], list[Target]]:
    return lambda: service_targets(name)


GROUPS = (
    "bms-codec",
    "charger-codec",
    "inverter-codec",
    "shunt-codec",
    "telnet-protocol",
    "contract",
    *(f"{s}-handlers" for s in SERVICES_FUZZED),
)


def fuzz(
    examples: int, seed: int, only: set[str] | None = None, out: Callable[[str], None] = print
) -> list[TargetResult]:
    """Run every target; returns the results (printing one line per target)."""
    results: list[TargetResult] = []
    quiet = logging.getLogger("gridzero")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a rejected input logs a warning: 100,000 of them
    try:
        for index, target in enumerate(all_targets(only)):
            try:
                result = run_target(target, examples, seed + index)
            finally:
                if target.close is not None:
                    target.close()
            results.append(result)
            out(
                f"{result.name:<58} {result.inputs:>8} inputs {result.rate:>10,.0f}/s "
                f"{result.rejected:>8} rejected  {result.crash_count} crashes"
            )
    finally:
        quiet.setLevel(level)
    return results


def report_table(results: list[TargetResult], command: str, when: str) -> str:
    """The figures as Markdown: one row per target."""
    lines = [
        f"`{command}`: {len(results)} targets, {sum(r.inputs for r in results):,} inputs, "
        f"{sum(r.crash_count for r in results)} crashes. {when}",
        "",
        "| target | inputs | inputs/s | refused (documented error) | crashes |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.inputs:,} | {r.rate:,.0f} | {r.rejected:,} | "
        f"{r.crash_count if not r.crash_count else f'**{r.crash_count}**'} |"
        for r in results
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gridzero fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated groups: " + ", ".join(GROUPS))
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--report", type=Path, help="write the figures into this Markdown file (section 'fuzz')"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(GROUPS))
        return 0
    if args.examples < 1:
        raise UsageError(f"--examples {args.examples}: must be at least 1")
    only = {g.strip() for g in args.only.split(",")} if args.only else None
    if only and only - set(GROUPS):
        raise UsageError(
            f"--only: unknown {sorted(only - set(GROUPS))}; known: {', '.join(GROUPS)}"
        )
    started = time.perf_counter()
    results = fuzz(args.examples, args.seed, only)
    total = sum(r.inputs for r in results)
    crashes = [r for r in results if r.crash_count]
    print(
        f"{len(results)} targets, {total:,} inputs in {time.perf_counter() - started:.1f} s, "
        f"{sum(r.crash_count for r in results)} crashes"
    )
    if args.report:
        from gridzero_tools.faults.report import replace_section, stamp  # noqa: PLC0415

        command = f"gridzero fuzz --examples {args.examples} --seed {args.seed}"
        replace_section(args.report, "fuzz", report_table(results, command, stamp()))
        print(f"written to {args.report}")
    for result in crashes:
        print(f"\nCRASH in {result.name} ({result.crash_count} inputs):", file=sys.stderr)
        for crash in result.crashes:
            print(f"  input {crash.data!r}\n  {crash.error}", file=sys.stderr)
    return 1 if crashes else 0
