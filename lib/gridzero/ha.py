"""Home Assistant MQTT device discovery, built as plain data (pure functions).

Each service announces one device (each inverter unit its own) on
``homeassistant/device/<object_id>/config`` with an origin block, shared
availability (the service's status topic) and its components: sensors, binary
sensors, and for runtime settings number/select/switch, plus buttons. Devices
link to the ``gridzero`` hub device with ``via_device``.

The builders check what Home Assistant would otherwise reject or silently
mis-file: a device class with the wrong unit, an energy sensor that is not
``total``/``total_increasing``, a number without a range.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gridzero import __version__
from gridzero.contract import HA_DISCOVERY_PREFIX, ServiceStatus, Topics
from gridzero.registry import SYSTEM_SERVICES

HUB_ID = "gridzero_hub"
ORIGIN = {"name": "gridzero", "sw": __version__, "url": "https://example.invalid/gridzero"}

EntityCategory = Literal["config", "diagnostic"]
StateClass = Literal["measurement", "total", "total_increasing"]

# device_class -> units Home Assistant accepts for it (the subset we use)
DEVICE_CLASS_UNITS: dict[str, frozenset[str]] = {
    "voltage": frozenset({"V", "mV"}),
    "current": frozenset({"A", "mA"}),
    "power": frozenset({"W", "kW"}),
    "energy": frozenset({"Wh", "kWh", "MWh"}),
    "energy_storage": frozenset({"Wh", "kWh", "MWh"}),
    "temperature": frozenset({"°C", "°F", "K"}),
    "battery": frozenset({"%"}),
    "frequency": frozenset({"Hz", "kHz"}),
    "duration": frozenset({"s", "min", "h", "d", "ms"}),
}


@dataclass(frozen=True, slots=True)
class Device:
    """One Home Assistant device."""

    object_id: str
    name: str
    model: str
    via_hub: bool = True
    node_id: str = ""

    def block(self) -> dict[str, Any]:
        dev: dict[str, Any] = {
            "ids": [self.object_id],
            "name": self.name,
            "mf": "gridzero",
            "mdl": self.model,
            "sw": __version__,
        }
        if self.via_hub and self.object_id != HUB_ID:
            dev["via_device"] = HUB_ID
        return dev

    def discovery_topic(self, prefix: str = HA_DISCOVERY_PREFIX) -> str:
        node = f"{self.node_id}/" if self.node_id else ""
        return f"{prefix}/device/{node}{self.object_id}/config"


# Display precision when a sensor does not set one: HA shows the state as published
# (e.g. 138.95383094446544 W) unless told otherwise.
DEFAULT_PRECISION: dict[str, int] = {
    "W": 0,
    "kW": 2,
    "V": 2,
    "mV": 0,
    "A": 1,
    "mA": 0,
    "°C": 1,
    "%": 1,
    "Hz": 2,
    "s": 1,
    "Wh": 0,
    "kWh": 3,
    "Ah": 1,
    "1/min": 1,
}

# unit -> device class for number entities of runtime settings (HA then shows the
# right icon and, for temperatures, converts to the user's unit system)
NUMBER_UNIT_CLASSES: dict[str, str] = {
    "V": "voltage",
    "A": "current",
    "W": "power",
    "°C": "temperature",
    "s": "duration",
}

# the name suffix of a setting -> the word its label ends with ("target_grid_w" ->
# "Target grid power"); empty: the unit needs no word ("soc_min_pct" -> "SoC min")
_SUFFIX_WORDS: dict[str, str] = {
    "w": "power",
    "v": "voltage",
    "a": "current",
    "c": "temperature",
    "s": "time",
    "pct": "",
    "ah": "",
}
_ACRONYMS = {"soc": "SoC", "ocv": "OCV", "dc": "DC", "ac": "AC", "bms": "BMS", "rms": "RMS"}

# The services the hub device shows as running or not (the simulator is not part of
# an installation).
HUB_SERVICES: tuple[str, ...] = SYSTEM_SERVICES


@dataclass(frozen=True, slots=True)
class Component:
    """One entity of a device: platform plus its discovery keys.

    ``available_when`` is a Jinja condition on ``value_json`` of the state topic: while
    it is false (e.g. the value is ``null`` because nothing was measured yet) Home
    Assistant shows the entity as unavailable instead of a stale or ``unknown`` value.
    """

    key: str
    platform: str
    config: Mapping[str, Any] = field(default_factory=dict)
    available_when: str | None = None


def _check_class(
    key: str, device_class: str | None, unit: str | None, state_class: str | None
) -> None:
    if device_class is None:
        return
    allowed = DEVICE_CLASS_UNITS.get(device_class)
    if allowed is not None and unit not in allowed:
        raise ValueError(
            f"entity {key!r}: unit {unit!r} is not valid for device_class {device_class!r} ({sorted(allowed)})"
        )
    if device_class == "energy" and state_class not in ("total", "total_increasing"):
        raise ValueError(
            f"entity {key!r}: energy needs state_class total or total_increasing, got {state_class!r}"
        )


def sensor(
    key: str,
    name: str,
    state_topic: str,
    value_key: str,
    *,
    unit: str | None = None,
    device_class: str | None = None,
    state_class: StateClass | None = "measurement",
    entity_category: EntityCategory | None = None,
    precision: int | None = None,
    icon: str | None = None,
) -> Component:
    """A sensor reading one key (dotted for nested objects) of a JSON state payload.

    A ``null`` value (nothing measured yet, device not answering) makes the entity
    unavailable rather than ``unknown``; the template renders ``None`` for it, which
    Home Assistant's MQTT sensor stores as no value instead of failing on it.
    """
    parts = value_key.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError(f"entity {key!r}: value key {value_key!r} is not a dotted identifier")
    paths = ["value_json." + ".".join(parts[: i + 1]) for i in range(len(parts))]
    present = " and ".join(f"{p} is not none" for p in paths)
    value = paths[-1] if len(paths) == 1 else f"{paths[-1]} if {present} else none"
    return computed_sensor(
        key,
        name,
        state_topic,
        value,
        present,
        unit=unit,
        device_class=device_class,
        state_class=state_class,
        entity_category=entity_category,
        precision=precision,
        icon=icon,
    )


def computed_sensor(
    key: str,
    name: str,
    state_topic: str,
    expression: str,
    available_when: str,
    *,
    unit: str | None = None,
    device_class: str | None = None,
    state_class: StateClass | None = "measurement",
    entity_category: EntityCategory | None = None,
    precision: int | None = None,
    icon: str | None = None,
    attributes: str | None = None,
) -> Component:
    """A sensor whose value is a Jinja ``expression`` on ``value_json``, available only
    while ``available_when`` holds; ``attributes`` is an expression giving a dict of
    extra attributes from the same topic (e.g. a module's cell voltages)."""
    _check_class(key, device_class, unit, state_class)
    config: dict[str, Any] = {
        "name": name,
        "state_topic": state_topic,
        "value_template": "{{ %s }}" % expression,  # noqa: UP031 - Jinja braces
    }
    if unit is None and state_class == "measurement":
        state_class = (
            None  # HA refuses a measurement without a unit for numeric-less sensors (text)
        )
    if precision is None and unit is not None:
        precision = DEFAULT_PRECISION.get(unit)
    if attributes is not None:
        config["json_attributes_topic"] = state_topic
        config["json_attributes_template"] = "{{ (%s) | tojson }}" % attributes  # noqa: UP031
    _put(
        config,
        unit_of_measurement=unit,
        device_class=device_class,
        state_class=state_class,
        entity_category=entity_category,
        suggested_display_precision=precision,
        icon=icon,
    )
    return Component(key, "sensor", config, available_when=available_when)


def text_sensor(
    key: str,
    name: str,
    state_topic: str,
    template: str,
    *,
    entity_category: EntityCategory | None = None,
    icon: str | None = None,
) -> Component:
    """A sensor showing text (alarm reason, mode), from a full Jinja template."""
    config: dict[str, Any] = {"name": name, "state_topic": state_topic, "value_template": template}
    _put(config, entity_category=entity_category, icon=icon)
    return Component(key, "sensor", config)


def binary_sensor(
    key: str,
    name: str,
    state_topic: str,
    value_key: str,
    *,
    device_class: str | None = None,
    entity_category: EntityCategory | None = None,
    template: str | None = None,
) -> Component:
    """A binary sensor from a boolean key of a JSON state payload (or a full template)."""
    config: dict[str, Any] = {
        "name": name,
        "state_topic": state_topic,
        "value_template": template or "{{ 'ON' if value_json.%s else 'OFF' }}" % value_key,  # noqa: UP031
    }
    _put(config, device_class=device_class, entity_category=entity_category)
    return Component(key, "binary_sensor", config)


def number(
    key: str,
    name: str,
    command_topic: str,
    state_topic: str,
    *,
    minimum: float,
    maximum: float,
    step: float,
    unit: str | None = None,
    device_class: str | None = None,
    entity_category: EntityCategory | None = "config",
) -> Component:
    """A number entity for a runtime setting."""
    if not minimum < maximum or step <= 0:
        raise ValueError(
            f"number {key!r}: needs min < max and step > 0, got {minimum}, {maximum}, {step}"
        )
    _check_class(key, device_class, unit, None)
    config: dict[str, Any] = {
        "name": name,
        "command_topic": command_topic,
        "state_topic": state_topic,
        "min": minimum,
        "max": maximum,
        "step": step,
        "mode": "box",
    }
    _put(
        config, unit_of_measurement=unit, device_class=device_class, entity_category=entity_category
    )
    return Component(key, "number", config)


def text(
    key: str,
    name: str,
    command_topic: str,
    state_topic: str,
    *,
    pattern: str | None = None,
    max_length: int = 255,
    entity_category: EntityCategory | None = "config",
) -> Component:
    """A text entity for a runtime setting (HA's MQTT text: at most 255 characters; the
    frontend checks ``pattern``, a regular expression, as the user types)."""
    if not 0 < max_length <= 255:
        raise ValueError(f"text {key!r}: max_length {max_length} outside 1..255 (HA's limit)")
    config: dict[str, Any] = {
        "name": name,
        "command_topic": command_topic,
        "state_topic": state_topic,
        "max": max_length,
        "mode": "text",
    }
    _put(config, pattern=pattern, entity_category=entity_category)
    return Component(key, "text", config)


def select(
    key: str,
    name: str,
    command_topic: str,
    state_topic: str,
    options: Iterable[str],
    *,
    entity_category: EntityCategory | None = "config",
) -> Component:
    """A select entity for an enumerated runtime setting."""
    opts = list(options)
    if not opts:
        raise ValueError(f"select {key!r}: needs at least one option")
    config: dict[str, Any] = {
        "name": name,
        "command_topic": command_topic,
        "state_topic": state_topic,
        "options": opts,
    }
    _put(config, entity_category=entity_category)
    return Component(key, "select", config)


def switch(
    key: str,
    name: str,
    command_topic: str,
    state_topic: str,
    *,
    entity_category: EntityCategory | None = "config",
) -> Component:
    """A switch for a boolean runtime setting (payloads ``true``/``false``)."""
    config: dict[str, Any] = {
        "name": name,
        "command_topic": command_topic,
        "state_topic": state_topic,
        "payload_on": "true",
        "payload_off": "false",
        "state_on": "true",
        "state_off": "false",
    }
    _put(config, entity_category=entity_category)
    return Component(key, "switch", config)


def button(
    key: str, name: str, command_topic: str, *, entity_category: EntityCategory | None = "config"
) -> Component:
    """A button that publishes ``press`` to an action topic."""
    config: dict[str, Any] = {
        "name": name,
        "command_topic": command_topic,
        "payload_press": "press",
    }
    _put(config, entity_category=entity_category)
    return Component(key, "button", config)


def _put(config: dict[str, Any], **values: Any) -> None:
    config.update({k: v for k, v in values.items() if v is not None})


def _availability(topic: str, condition: str) -> dict[str, str]:
    return {
        "topic": topic,
        "value_template": "{{ 'online' if %s else 'offline' }}" % condition,  # noqa: UP031
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def device_discovery(
    device: Device,
    components: Iterable[Component],
    availability_topic: str | None,
    *,
    prefix: str = HA_DISCOVERY_PREFIX,
) -> tuple[str, dict[str, Any]]:
    """The (topic, payload) of one device's discovery message.

    Every entity is available while the service's status topic reads ``online``
    (``availability_topic``; ``None`` for a device whose entities are always
    meaningful, like the hub's service states). A component with ``available_when``
    gets its own availability list: the service's status and its value, both needed.
    """
    service_available = (
        _availability(availability_topic, f"value == '{ServiceStatus.ONLINE.value}'")
        if availability_topic is not None
        else None
    )
    cmps: dict[str, Any] = {}
    for comp in components:
        if comp.key in cmps:
            raise ValueError(f"device {device.object_id}: component key {comp.key!r} used twice")
        cmp: dict[str, Any] = {
            "p": comp.platform,
            "unique_id": f"{device.object_id}_{comp.key}",
            **comp.config,
        }
        if comp.available_when is not None:
            own = _availability(str(comp.config["state_topic"]), comp.available_when)
            cmp["availability"] = [a for a in (service_available, own) if a is not None]
            cmp["availability_mode"] = "all"
        cmps[comp.key] = cmp
    payload: dict[str, Any] = {"dev": device.block(), "o": ORIGIN, "cmps": cmps, "qos": 1}
    if service_available is not None:
        payload["availability"] = [service_available]
    return device.discovery_topic(prefix), payload


def service_device(
    service: str, model: str, *, unit: str | None = None, name: str | None = None
) -> Device:
    """The device of a service (or of one unit of it, e.g. an inverter)."""
    if unit:
        return Device(
            f"gridzero_{service}_{unit}",
            name or f"gridzero {service} {unit}",
            model,
            node_id=f"gridzero_{service}",
        )
    return Device(f"gridzero_{service}", name or f"gridzero {service}", model)


def hub_device() -> Device:
    return Device(HUB_ID, "gridzero", "grid-zero home battery", via_hub=False)


def hub_discovery(
    topics: Topics, services: Iterable[str] = HUB_SERVICES, *, prefix: str = HA_DISCOVERY_PREFIX
) -> tuple[str, dict[str, Any]]:
    """The hub device every service device links to (``via_device``), announced by the
    controller: one "running" binary sensor per service, from its retained status topic.

    These entities have no availability of their own: the broker keeps each status
    topic true (its last will writes ``offline``), so they stay right when the
    announcing service is down.
    """
    comps = [
        binary_sensor(
            _object_key(service),
            f"{service} service",
            topics.status(service),
            "",
            device_class="running",
            template="{{ 'ON' if value == '%s' else 'OFF' }}" % ServiceStatus.ONLINE.value,  # noqa: UP031
        )
        for service in services
    ]
    return device_discovery(hub_device(), comps, None, prefix=prefix)


def _object_key(name: str) -> str:
    return name.replace("-", "_")


def settings_components(
    model: type[BaseModel], topics: Topics, service: str, *, unit: str | None = None
) -> list[Component]:
    """number/select/switch entities for every field of a runtime-settings model.

    Ranges come from the field's constraints (ge/le/gt/lt); unit, step and
    device class from ``json_schema_extra={"unit": "W", "step": 10, "device_class": "power"}``
    (a number's device class otherwise follows its unit); the label from the field's
    ``title`` or its name ("target_grid_w" -> "Target grid power").
    """
    out = []
    for name, info in model.model_fields.items():
        cmd = topics.setting_set(service, name, unit=unit)
        state = topics.setting(service, name, unit=unit)
        out.append(_setting_component(name, setting_label(name, info.title), info, cmd, state))
    return out


def setting_label(name: str, title: str | None = None) -> str:
    """A runtime setting's entity name: its title, or its name without the unit suffix."""
    if title:
        return title
    words = name.split("_")
    if len(words) > 1 and words[-1] in _SUFFIX_WORDS:
        noun = _SUFFIX_WORDS[words.pop()]
        if noun and noun not in words:
            words.append(noun)
    words = [_ACRONYMS.get(w, w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _setting_component(name: str, label: str, info: FieldInfo, cmd: str, state: str) -> Component:
    annotation = _strip_optional(info.annotation)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if annotation is bool:
        return switch(name, label, cmd, state)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return select(name, label, cmd, state, [str(m.value) for m in annotation])
    if get_origin(annotation) is Literal:
        return select(name, label, cmd, state, [str(a) for a in get_args(annotation)])
    if annotation in (int, float):
        lo, hi = _bounds(info)
        step = float(extra.get("step", 1 if annotation is int else 0.01))  # type: ignore[arg-type]
        unit_value = extra.get("unit")
        unit = str(unit_value) if unit_value is not None else None
        device_class = extra.get("device_class")
        if device_class is None and unit is not None:
            device_class = NUMBER_UNIT_CLASSES.get(unit)
        return number(
            name,
            label,
            cmd,
            state,
            minimum=lo,
            maximum=hi,
            step=step,
            unit=unit,
            device_class=str(device_class) if device_class is not None else None,
        )
    if annotation is str:
        pattern = extra.get("pattern")
        longest = next((m.max_length for m in info.metadata if hasattr(m, "max_length")), 255)
        return text(
            name,
            label,
            cmd,
            state,
            pattern=str(pattern) if pattern is not None else None,
            max_length=min(255, int(longest or 255)),
        )
    raise ValueError(f"setting {name!r}: type {annotation!r} has no Home Assistant entity")


def _strip_optional(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(info: FieldInfo) -> tuple[float, float]:
    lo: float | None = None
    hi: float | None = None
    for meta in info.metadata:
        for attr, is_low in (("ge", True), ("gt", True), ("le", False), ("lt", False)):
            value = getattr(meta, attr, None)
            if value is not None:
                if is_low:
                    lo = float(value)
                else:
                    hi = float(value)
    if lo is None or hi is None:
        raise ValueError(
            "a numeric runtime setting needs both a lower and an upper bound for Home Assistant"
        )
    return lo, hi
