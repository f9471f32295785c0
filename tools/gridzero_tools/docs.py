"""``gridzero docs``: regenerate the generated documentation (docs/mqtt.md).

The MQTT reference is built from the contract's models, so it cannot drift:
a test compares the committed file with what this module renders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridzero import contract, meter
from gridzero.runtime.credentials import setting_writers

HEADER = """# MQTT reference

Generated from `lib/gridzero/contract.py` by `gridzero docs` — do not edit by hand;
`tests/foundation/test_generated_files.py` fails when this file and the models disagree.

Base topic: `{base}` (setting `GRIDZERO_BASE_TOPIC`). Every service publishes
`<base>/<service>/status` (`online` retained after connect, `offline` as its last
will, `stopped` on a clean exit). State payloads are JSON with SI units in the key
names and `ts` (Unix seconds). Commands go to `.../set` topics, are validated, and are
answered on `<base>/<service>/ack`; a refused command changes nothing. Runtime settings
and buttons (`.../settings/<name>/set`, `.../action/<name>/set`) may be written by
{setters} (the broker's ACL: `gridzero credentials acl`). A setting's value is plain
text: a number, `true`/`false` (also `on`/`off`, any case) for a true/false setting, or a
word for a choice; `on`/`true`/`off`/`false` sent to any other setting is refused (it would
otherwise be read as 1 or 0: 1 A, 1 W).

Signs: battery current and battery power (the shunt's `current_a` and `power_w`, the
controller's `setpoint_w`, the simulator's `current_a`):
**{battery_sign}**. Grid power: **{grid_sign}**. A device's own current or
power (the rectifier's output, an inverter's demand) is a size, never negative.
The state of charge is `soc_pct` on `<base>/shunt/state`.

Numbers are published rounded to what they mean, once, in the contract
(`contract.DECIMALS_BY_UNIT`, by the unit the key ends in: V to the mV, A to 10 mA, W to
0.1 W, % to 0.1, °C to 0.1, `ts` to the ms); column "to". Limits and energy totals are rounded
down: a published limit never allows more, a total is never ahead of the one stored.

Services: {services}.
"""


def _row(*cells: str) -> str:
    """One Markdown table row; a ``|`` inside a cell is escaped so it cannot split the cell."""
    escaped = (c.replace("\\|", "|").replace("|", "\\|") for c in cells)
    return "| " + " | ".join(escaped) + " |"


def render_topics(specs: tuple[contract.TopicSpec, ...] = contract.TOPIC_SPECS) -> str:
    """The topic table: one row per kind of topic in the contract's ``TOPIC_SPECS``."""
    lines = [
        "## Topics",
        "",
        "| topic | writer | payload | retained | what |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        payload = (
            f"[`{spec.payload.__name__}`](#{spec.payload.__name__.lower()})"
            if isinstance(spec.payload, type)
            else spec.payload
        )
        retained = "yes" if spec.retained else "no"
        writers = ", ".join(spec.writers) + (f" ({spec.note})" if spec.note else "")
        lines.append(_row(f"`{spec.pattern}`", writers, payload, retained, spec.doc))
    return "\n".join(lines)


def render_meter() -> str:
    """The meter topic: the controller settings that choose it, and the presets."""
    lines = [
        "## Meter topic",
        "",
        "The controller reads the grid power (W, + import) from one topic. Its start-up",
        "settings choose it; they are read from the controller's settings file only (YAML; a",
        "`GRIDZERO_METER_*` variable is refused) and are never writable over MQTT, because the",
        "broker's ACL is generated from the same file (`gridzero up`, `gridzero credentials acl",
        "--controller-config FILE`, the compose `credentials` service): broker user `meter`",
        "and `homeassistant` may write that topic, every service may read it. Guide with",
        "copy-paste settings for each meter: [docs/meter.md](meter.md).",
        "",
        "| setting | type | default | meaning |",
        "|---|---|---|---|",
    ]
    schema = meter.MeterSettings.model_json_schema()
    for name, prop in schema["properties"].items():
        default = prop.get("default")
        shown = "the preset's" if default is None else f"`{default}`"
        kind = _type_name(prop).replace(" | ", " \\| ")  # a bare | would split the row
        lines.append(f"| `{name}` | {kind} | {shown} | {prop.get('description', '')} |")
    lines += [
        "",
        "| `meter_preset` | topic | JSON path | sign | unit |",
        "|---|---|---|---|---|",
    ]
    for preset, source in meter.PRESETS.items():
        path = f"`{source.json_path}`" if source.json_path else "(bare number)"
        lines.append(
            f"| `{preset.value}` | `{source.topic}` | {path} | {source.sign:+d} | {source.unit} |"
        )
    lines += [
        "",
        "A silent meter (no reading for `meter_stale_s`) and a message that is no reading are",
        "faults in the controller's state `faults`, naming the topic: `meter_stale: no reading",
        "on <topic> for <n> s`, `meter_unparseable: <topic>: json path ... not found ...`.",
    ]
    return "\n".join(lines)


def _type_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
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
        needed = "yes" if key in required else "no"
        meaning = prop.get("description", "")
        resolution = _resolution(roundings.get(key))
        lines.append(
            _row(f"`{key}`", _type_name(prop), needed, _bounds(inner), resolution, meaning)
        )
    return "\n".join(lines)


def _names(names: tuple[str, ...]) -> str:
    """`a`, `b` and `c`."""
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _all_models() -> list[type[contract.Payload]]:
    seen: dict[str, type[contract.Payload]] = {}
    extra: tuple[type[contract.Payload], ...] = (contract.CellRef, contract.Alarm)
    for model in contract.PAYLOAD_MODELS + extra:
        seen.setdefault(model.__name__, model)
    return list(seen.values())


def render_mqtt_md(specs: tuple[contract.TopicSpec, ...] = contract.TOPIC_SPECS) -> str:
    parts = [
        HEADER.format(
            base=contract.DEFAULT_BASE,
            services=", ".join(f"`{s}`" for s in contract.SERVICES),
            setters=_names(setting_writers()),
            battery_sign=contract.BATTERY_SIGN,
            grid_sign=contract.GRID_SIGN,
        ),
        render_topics(specs),
        "",
        render_meter(),
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
