"""The grid meter: presets for the meters owners have, the settings that pick one, and the
watch that turns a silent or garbled meter into a named fault (pure; time is a parameter).

The controller (which subscribes and parses) and the broker ACL generator (which lets the
meter write the topic and the services read it) both resolve the same settings here, from
the same file, so a meter topic cannot be configured in one and denied by the other
(docs/meter.md, "Why the topic is read from the settings file").

Payload shapes, from the makers' public documentation:

- ``shelly-pro-3em``: Shelly Gen2 devices publish each component's whole status on
  ``<topic_prefix>/status/<component:id>`` when "Generic status update over MQTT" is on
  (https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt); the Pro 3EM's
  ``em:0`` status has ``total_act_power``, W, + import
  (https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/EM).
- ``shelly-em``: Shelly EM Gen1 publishes ``shellies/<id>/emeter/<i>/power``, a bare number,
  W, + import (https://shelly-api-docs.shelly.cloud/gen1/#shelly-em-mqtt).
- ``tasmota-sml``: Tasmota's Smart Meter Interface publishes ``tele/<topic>/SENSOR``, JSON
  with the script's meter name and value names, e.g. ``{"SML": {"Power_curr": -123}}``,
  W, + import (https://tasmota.github.io/docs/Smart-Meter-Interface/).
- ``home-assistant``: an automation forwards a sensor's state with ``mqtt.publish`` as a
  plain number in W (docs/meter.md has the automation).
- ``meterbox``: the original housebatt's ``meterbox/grid``, a plain integer W, + import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from gridzero.contract import DEFAULT_BASE, DEFAULT_METER_TOPIC, PayloadError, parse_meter
from gridzero.errors import SettingsError

MeterUnit = Literal["W", "kW"]
HOME_ASSISTANT_METER_TOPIC = "gridzero/meter/grid"


class MeterPreset(StrEnum):
    """The meters owners have (docs/meter.md): each gives topic, JSON path, sign and unit."""

    METERBOX = "meterbox"
    SHELLY_PRO_3EM = "shelly-pro-3em"
    SHELLY_EM = "shelly-em"
    TASMOTA_SML = "tasmota-sml"
    HOME_ASSISTANT = "home-assistant"


@dataclass(frozen=True, slots=True)
class MeterSource:
    """Where the grid power comes from and how to read it: W = sign × scale × value."""

    topic: str
    json_path: str = ""
    sign: Literal[1, -1] = 1
    unit: MeterUnit = "W"

    def parse(self, payload: bytes) -> float:
        """Grid power in W (+ import); PayloadError naming topic, path and payload otherwise."""
        value = parse_meter(payload, json_path=self.json_path, sign=self.sign, topic=self.topic)
        watts = value * 1000.0 if self.unit == "kW" else value
        if not math.isfinite(watts) or abs(watts) > 1_000_000:
            raise PayloadError(f"{self.topic}: {watts!r} W is outside -1e6..1e6 W")
        return watts


PRESETS: dict[MeterPreset, MeterSource] = {
    MeterPreset.METERBOX: MeterSource(DEFAULT_METER_TOPIC),
    # the topic prefix is the device id (shellypro3em-<mac>) unless set in the Shelly's
    # MQTT settings: set it to `shellypro3em`, or set meter_topic to your prefix's topic
    MeterPreset.SHELLY_PRO_3EM: MeterSource("shellypro3em/status/em:0", "total_act_power"),
    MeterPreset.SHELLY_EM: MeterSource("shellies/shellyem/emeter/0/power"),
    MeterPreset.TASMOTA_SML: MeterSource("tele/tasmota/SENSOR", "SML.Power_curr"),
    MeterPreset.HOME_ASSISTANT: MeterSource(HOME_ASSISTANT_METER_TOPIC),
}


class MeterSettings(BaseModel):
    """The controller's meter settings (start-up only: never over MQTT).

    ``meter_preset`` gives all four; each explicit setting overrides its part."""

    meter_preset: MeterPreset = Field(
        MeterPreset.METERBOX,
        description="meterbox, shelly-pro-3em, shelly-em, tasmota-sml, "
        "home-assistant (docs/meter.md)",
    )
    meter_topic: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="MQTT topic of the grid power (no wildcards); empty: the preset's",
    )
    meter_json_path: str | None = Field(
        None,
        max_length=200,
        pattern=r"^([^.\s]+(\.[^.\s]+)*)?$",
        description="dotted JSON path to the value, e.g. total_act_power, SML.Power_curr; "
        "'' = the payload is a bare number; empty: the preset's",
    )
    meter_sign: Literal[1, -1] | None = Field(
        None,
        description="1 if the meter reads + for import, -1 if + for export; empty: the preset's",
    )
    meter_unit: MeterUnit | None = Field(
        None, description="W or kW (the value is multiplied by 1000); empty: the preset's"
    )

    @field_validator("meter_topic")
    @classmethod
    def _a_topic(cls, value: str | None) -> str | None:
        # a topic, not a filter: a wildcard would merge several meters into one reading; no
        # spaces (the ACL file is line based), not `$SYS/...`
        if value is not None and (
            any(c in value for c in "#+")
            or value.startswith("$")
            or any(c.isspace() for c in value)
        ):
            raise ValueError(
                f"{value!r} is not a plain topic: no wildcards (# +), no spaces, not starting "
                "with $ (e.g. shellies/em/status)"
            )
        return value

    def meter_source(self) -> MeterSource:
        """The preset with every explicit setting put over it."""
        preset = PRESETS[self.meter_preset]
        return MeterSource(
            topic=self.meter_topic if self.meter_topic is not None else preset.topic,
            json_path=self.meter_json_path
            if self.meter_json_path is not None
            else preset.json_path,
            sign=self.meter_sign if self.meter_sign is not None else preset.sign,
            unit=self.meter_unit if self.meter_unit is not None else preset.unit,
        )


METER_SETTING_NAMES = tuple(MeterSettings.model_fields)


def meter_env_names(environ: dict[str, str] | None) -> list[str]:
    """``GRIDZERO_METER_*`` variables: refused, the ACL generator could not see them."""
    return sorted(key for key in (environ or {}) if key.upper().startswith("GRIDZERO_METER_"))


def read_controller_meter(path: Path | None) -> tuple[str, MeterSource]:
    """Base topic and meter source from the controller's settings file (what the controller
    itself reads); the defaults when ``path`` is None. A file that is missing, not YAML or
    with a bad meter setting is an error naming the file and the setting."""
    if path is None:
        return DEFAULT_BASE, MeterSettings().meter_source()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SettingsError(f"controller settings {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"controller settings {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"controller settings {path}: top level must be a mapping")
    try:
        settings = MeterSettings.model_validate(
            {k: v for k, v in data.items() if k in METER_SETTING_NAMES}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise SettingsError(f"controller settings {path}: {problems}") from exc
    base = data.get("base_topic", DEFAULT_BASE)
    if not isinstance(base, str) or not base:
        raise SettingsError(f"controller settings {path}: base_topic {base!r} is not a topic")
    return base, settings.meter_source()


# --------------------------------------------------------------------------- the watch


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """A change of the meter's health, to be logged once (level: "warning" or "info")."""

    level: Literal["warning", "info"]
    text: str


class MeterWatch:
    """Stale and unparseable meter: faults that name the topic, one log event per episode.

    An episode starts when the meter goes silent for longer than the stale time (or its
    first bad message arrives) and ends with the next good reading; while it lasts the
    fault is in `faults` and nothing more is logged.
    """

    def __init__(self, topic: str, started_s: float) -> None:
        self.topic = topic
        self._last_good_s: float | None = None
        self._since_s = started_s  # silence counts from start until the first reading
        self._stale_logged = False
        self._bad: str | None = None

    def reading(self, now_s: float) -> list[MeterEvent]:
        """A good reading: ends both episodes."""
        events = []
        if self._stale_logged:
            events.append(
                MeterEvent(
                    "info",
                    f"meter back: reading on {self.topic} after "
                    f"{now_s - self._since_s:.0f} s without one",
                )
            )
        if self._bad is not None:
            events.append(MeterEvent("info", f"meter readable again on {self.topic}"))
        self._last_good_s = self._since_s = now_s
        self._stale_logged = False
        self._bad = None
        return events

    def unparseable(self, error: str) -> list[MeterEvent]:
        """A message that is not a reading; the newest error is the fault's text."""
        first = self._bad is None
        self._bad = error
        if not first:
            return []
        return [
            MeterEvent(
                "warning",
                f"meter_unparseable: {error} (the previous reading is "
                f"kept until it goes stale; check meter_json_path, docs/meter.md)",
            )
        ]

    def check(self, now_s: float, stale_s: float) -> list[MeterEvent]:
        """Call on every control step: starts a stale episode once."""
        if self._stale_logged or now_s - self._since_s <= stale_s:
            return []
        self._stale_logged = True
        return [
            MeterEvent(
                "warning",
                f"{self._stale_text(now_s)}: is the meter publishing there, logged in as broker "
                "user `meter` (or Home Assistant)? The broker's ACL is generated from the "
                "controller's settings file (docs/meter.md)",
            )
        ]

    def _stale_text(self, now_s: float) -> str:
        what = "no reading" if self._last_good_s is None else "no new reading"
        return f"meter_stale: {what} on {self.topic} for {now_s - self._since_s:.0f} s"

    def faults(self, now_s: float, stale_s: float) -> list[str]:
        """The active meter faults, for the state's `faults` list."""
        out = []
        if now_s - self._since_s > stale_s:
            out.append(self._stale_text(now_s))
        if self._bad is not None:
            out.append(f"meter_unparseable: {self._bad}")
        return out
