"""Fuzz targets of the library: the contract's payload parsers, and every service's MQTT
handlers run on a real service instance without a broker.

A service's handlers run exactly as the runtime dispatches them (virtual CAN, ``loop://``
serial, the simulated ADS1115, a console on a free loopback port); their publishes are
captured instead of being sent, and every payload they would publish is validated against
its own contract model. Each service's ``fuzz.py`` calls `service_targets` with the settings
it needs to start without hardware.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gridzero import contract
from gridzero.contract import (
    Payload,
    PayloadError,
    Topics,
    parse_meter,
    parse_payload,
    parse_setting_text,
)
from gridzero.runtime.fuzzkit import Target

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


# Typical values by field name, where one generic value cannot satisfy a model's cross-field
# rules (a unit's DC window must be a window: dc_min_v below dc_max_v).
_NAMED_EXAMPLES: dict[str, Any] = {"dc_min_v": 44.0, "dc_max_v": 58.0, "max_power_w": 900}


def _example_value(annotation: Any, name: str) -> Any:  # noqa: PLR0911 - one case per type
    if name in _NAMED_EXAMPLES:
        return _NAMED_EXAMPLES[name]
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
    return targets


# --------------------------------------------------------------------------- service handlers


def topic_examples(topics: Topics, unit: str) -> dict[str, bytes]:
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


def _settings_for(name: str, data_dir: Path, extra: dict[str, Any]) -> Any:
    from gridzero.runtime.launch import service_class  # noqa: PLC0415

    cls = service_class(name)
    common: dict[str, Any] = {"data_dir": data_dir, "store_flush_s": 60}
    return cls, cls.settings_class.model_validate({**common, **extra})


def fuzz_tag() -> str:
    """A name no other run uses (virtual CAN channels of a harness)."""
    return f"fuzz{time.monotonic_ns()}"


def start_harness(name: str, extra: dict[str, Any]) -> Harness:
    """Build and start a service without a broker connection (``extra``: its settings)."""
    from gridzero.runtime.service import Context  # noqa: PLC0415

    tmp = tempfile.TemporaryDirectory(prefix=f"gridzero-fuzz-{name}-")
    cls, settings = _settings_for(name, Path(tmp.name), extra)
    ctx = Context(cls.name, settings)
    service = cls(settings, ctx)
    harness = Harness(name, service, ctx, tmp=tmp)
    ctx.publish = harness.capture  # type: ignore[method-assign] # captured, not sent
    service.start()
    return harness


def service_targets(
    name: str,
    settings: dict[str, Any],
    corpora: Callable[[Topics], dict[str, tuple[bytes, ...]]] | None = None,
) -> list[Target]:
    """One target per subscription of the service: payloads (and setting names) fuzzed.

    ``settings``: what the service needs beyond a data directory to start without its
    hardware; ``corpora``: valid payloads of topics only that service knows (topic filter ->
    payloads)."""
    from gridzero.runtime.mqtt import Message  # noqa: PLC0415
    from gridzero.runtime.service import INPUT_ERRORS  # noqa: PLC0415

    harness = start_harness(name, settings)
    ctx = harness.ctx
    topics: Topics = ctx.topics
    examples = topic_examples(topics, "gtn1")
    own = {} if corpora is None else corpora(topics)
    targets: list[Target] = []
    subs: list[tuple[str, Any]] = list(ctx._subs)
    filters = sorted({f for f, _h in subs})
    for topic_filter in filters:
        handlers = [h for f, h in subs if f == topic_filter]
        concrete, corpus = _concrete(topic_filter, topics, examples, harness)
        if corpora is not None and topic_filter in own:
            corpus = tuple(b"\0" + payload for payload in own[topic_filter])
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
    if "/action/" in topic_filter:
        return [topic_filter], (b"\0PRESS", b"\x0050", b"\0", b'\0{"x": 1}')
    if topic_filter not in examples:
        return [topic_filter], (b"\0", b"\0online", b"\x00123")
    return [topic_filter], (b"\0" + examples[topic_filter],)


def _setting_names(harness: Harness, topic_filter: str) -> list[str]:
    names: list[str] = []
    for value in vars(harness.service).values():
        model = getattr(value, "value", None)
        if isinstance(model, BaseModel):
            names += list(type(model).model_fields)
    for value in getattr(harness.service, "runtimes", {}).values():
        names += list(type(value.value).model_fields)
    return [*dict.fromkeys(names), "no_such", "../x", "a" * 200]
