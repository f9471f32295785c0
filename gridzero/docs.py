"""``gridzero docs``: regenerate the generated documentation (docs/mqtt.md).

The MQTT reference is built from the contract's models, so it cannot drift:
a test compares the committed file with what this module renders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridzero import contract

HEADER = """# MQTT reference

Generated from `gridzero/contract.py` by `gridzero docs` — do not edit by hand;
`tests/test_docs.py` fails when this file and the models disagree.

Base topic: `{base}` (setting `GRIDZERO_BASE_TOPIC`). Every service publishes
`<base>/<service>/status` (`online` retained after connect, `offline` as its last
will, `stopped` on a clean exit). State payloads are JSON with SI units in the key
names and `ts` (Unix seconds). Battery power: + discharge, − charge. Battery current:
+ charging. Commands go to `.../set` topics, are validated, and are answered on
`<base>/<service>/ack`; a refused command changes nothing.

Numbers are published rounded to what they mean, once, in the contract
(`contract.DECIMALS_BY_UNIT`, by the unit the key ends in: V to the mV, A to 10 mA, W to
0.1 W, % to 0.1, °C to 0.1, `ts` to the ms); column "to". Limits and energy totals are rounded
down: a published limit never allows more, a total is never ahead of the one stored.

Services: {services}.
"""


def render_topics() -> str:
    lines = [
        "## Topics",
        "",
        "| topic | writer | payload | retained | what |",
        "|---|---|---|---|---|",
    ]
    for spec in contract.TOPIC_SPECS:
        payload = (
            f"[`{spec.payload.__name__}`](#{spec.payload.__name__.lower()})"
            if isinstance(spec.payload, type)
            else spec.payload
        )
        lines.append(
            f"| `{spec.pattern}` | {spec.writer} | {payload} | {'yes' if spec.retained else 'no'} | {spec.doc} |"
        )
    return "\n".join(lines)


def _type_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if schema.get("type") == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return str(schema.get("type", "any"))


def _bounds(schema: dict[str, Any]) -> str:
    marks = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    return ", ".join(f"{sym} {schema[k]:g}" for k, sym in marks.items() if k in schema)


def _resolution(rounding: contract.Rounding | None) -> str:
    if rounding is None:
        return ""
    step = f"{10.0**-rounding.decimals:.{rounding.decimals}f}" if rounding.decimals else "1"
    return step + (" ↓" if rounding.down else "")


def render_model(model: type[contract.Payload]) -> str:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    lines = [
        f"### {model.__name__}",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| key | type | required | range | to | meaning |",
        "|---|---|---|---|---|---|",
    ]
    roundings = model.roundings()
    for key, prop in schema.get("properties", {}).items():
        inner = prop
        if "anyOf" in prop:
            inner = next((s for s in prop["anyOf"] if s.get("type") != "null"), prop)
        lines.append(
            f"| `{key}` | {_type_name(prop)} | {'yes' if key in required else 'no'} | {_bounds(inner)} | {_resolution(roundings.get(key))} | {prop.get('description', '')} |"
        )
    return "\n".join(lines)


def _all_models() -> list[type[contract.Payload]]:
    seen: dict[str, type[contract.Payload]] = {}
    extra: tuple[type[contract.Payload], ...] = (contract.CellRef, contract.Alarm)
    for model in contract.PAYLOAD_MODELS + extra:
        seen.setdefault(model.__name__, model)
    return list(seen.values())


def render_mqtt_md() -> str:
    parts = [
        HEADER.format(
            base=contract.DEFAULT_BASE, services=", ".join(f"`{s}`" for s in contract.SERVICES)
        ),
        render_topics(),
        "",
        "## Payloads",
        "",
        "\n\n".join(render_model(m) for m in _all_models()),
        "",
        "## Controller modes",
        "",
        ", ".join(f"`{m.value}`" for m in contract.ControllerMode),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gridzero docs", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/mqtt.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render_mqtt_md()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run `gridzero docs`")
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0
