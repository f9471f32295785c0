"""Published numbers are rounded to what they mean (contract.DECIMALS_BY_UNIT), once, in the
contract: every service started without a broker publishes its states for a few seconds of an
injected clock, and no float in them has more decimals than its field allows."""

from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gridzero import contract
from gridzero.contract import Payload, Rounding
from gridzero.runtime.fuzz import topic_examples
from gridzero.runtime.launch import service_class
from gridzero.testing import FakeClock, Offline

# service name -> the module holding its harness settings
HARNESSES = {
    "bms": "gridzero_bms.fuzz",
    "charger": "gridzero_charger.fuzz",
    "inverter": "gridzero_inverter.fuzz",
    "shunt": "gridzero_shunt.fuzz",
    "controller": "gridzero_controller.fuzz",
    "sim": "gridzero_tools.sim.fuzz",
}
COMMANDS_UNROUNDED = {("SimFault", "value")}  # a generic number: V/h, W, °C or s


def _decimals(value: float) -> int:
    text = repr(value)
    if "e" in text or "." not in text:
        return 0 if "e" not in text else 99
    return len(text.split(".")[1].rstrip("0"))


def _too_fine(model: type[Payload], doc: dict[str, Any]) -> list[str]:
    found = []
    for name, rounding in model.roundings().items():
        values = doc.get(name)
        flat = values if isinstance(values, list) else [values]
        while any(isinstance(v, list) for v in flat):
            flat = [x for v in flat for x in (v if isinstance(v, list) else [v])]
        for value in flat:
            if isinstance(value, float) and math.isfinite(value):
                allowed = 99 if rounding is None else rounding.decimals
                if _decimals(value) > allowed:
                    found.append(f"{model.__name__}.{name} = {value!r} (allowed {allowed})")
    for name, info in model.model_fields.items():
        nested = doc.get(name)
        inner = getattr(info.annotation, "__args__", (info.annotation,))
        for kind in inner:
            if isinstance(kind, type) and issubclass(kind, Payload) and isinstance(nested, dict):
                found += _too_fine(kind, nested)
    return found


def test_every_float_field_of_the_contract_has_a_rounding() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in contract.PAYLOAD_MODELS
        for name, rounding in model.roundings().items()
        if rounding is None and (model.__name__, name) not in COMMANDS_UNROUNDED
    ]
    assert missing == []


def test_rounding_means_what_the_field_says() -> None:
    state = contract.ControllerState.model_validate(
        {
            **json.loads(
                json.dumps(
                    {
                        "ts": 1764770000.123456,
                        "mode": "auto",
                        "grid_w": 12.3456,
                        "target_w": 0.0,
                        "setpoint_w": 118.61627647781577,
                        "charge_w": 0.0,
                        "discharge_w": 118.61627647781577,
                        "state": "tracking",
                        "meter_age_s": 0.123456,
                        "grid_error_mean_w": 1.23456,
                        "grid_error_rms_w": 2.34567,
                        "reversals_per_min": 0.123456,
                        "faults": [],
                    }
                )
            )
        }
    )
    doc = json.loads(state.model_dump_json())
    assert doc["setpoint_w"] == 118.6
    assert doc["ts"] == 1764770000.123
    assert state.setpoint_w == 118.61627647781577  # the value itself is untouched
    # limits and totals round down: a published limit never allows more than computed
    assert Rounding(2, down=True).apply(29.999) == 29.99
    assert Rounding(2, down=True).apply(0.29) == 0.29
    assert Rounding(3).apply([[3.70049, None], [4.1]]) == [[3.7, None], [4.1]]


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_every_published_state_is_rounded(name: str, tmp_path: Path) -> None:
    cls = service_class(name)
    extra = importlib.import_module(HARNESSES[name]).harness_settings()
    settings = cls.settings_class.model_validate(
        {"data_dir": tmp_path, "store_flush_s": 60, **extra}
    )
    clock = FakeClock(wall_offset_s=time.time() - 1000.0)  # examples are stamped time.time()
    offline = Offline(cls, settings, clock).start()
    try:
        examples = topic_examples(offline.ctx.topics, "gtn1")
        for step in range(1, 21):
            for topic_filter, _handler in list(offline.ctx._subs):
                if topic_filter in examples:
                    example = json.loads(examples[topic_filter])
                    if isinstance(example, dict) and "ts" in example:
                        example["ts"] = clock.wall()
                    if isinstance(example, dict) and "seq" in example:
                        example["seq"] = step
                    offline.deliver(topic_filter, json.dumps(example))
            offline.advance(0.5, step_s=0.05)
    finally:
        offline.stop()
    states = [(t, p) for t, p, _r in offline.published if isinstance(p, Payload)]
    assert states, f"{name} published no state"
    problems = []
    for topic, payload in states:
        doc = json.loads(payload.model_dump_json())
        problems += [f"{topic}: {p}" for p in _too_fine(type(payload), doc)]
    assert problems == []


def test_a_model_without_floats_is_left_alone() -> None:
    class Plain(Payload):
        name: str

    assert Plain.roundings() == {}
    assert isinstance(Plain(name="x"), BaseModel)
