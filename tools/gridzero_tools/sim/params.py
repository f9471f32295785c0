"""Plant parameters: pydantic models and the YAML loader.

Every number the plant model uses lives in a plant file
(``tools/gridzero_tools/data/plants/default.yaml`` documents each one and where its
default comes from). ``load_plant(path)`` validates the file and turns any
mistake into a ``gridzero.errors.UsageError`` that names the file, the line
and the field, e.g.::

    plants/bad.yaml line 12: charger.offline_voltage_v = 70.0: Input should be less
    than or equal to 58.5

``load_plant("default")`` (a bare name) loads a bundled plant file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gridzero.errors import UsageError

PLANTS_DIR = Path(__file__).resolve().parent.parent / "data" / "plants"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PackParams(_Model):
    """The battery: modules of 12 NMC cells, in parallel strings of series modules."""

    modules: int = Field(9, ge=1, le=64)
    modules_per_string: int = Field(1, ge=1, le=16)
    cells_per_module: int = Field(12, ge=1, le=16)
    cell_capacity_ah: float = Field(24.46, gt=0.1, le=1000)
    capacity_spread_pct: float = Field(2.0, ge=0, le=30)
    cell_resistance_mohm: float = Field(1.3, gt=0, le=1000)
    resistance_spread_pct: float = Field(10.0, ge=0, le=50)
    resistance_temp_coeff_per_c: float = Field(0.015, ge=0, le=0.1)
    string_resistance_mohm: float = Field(5.0, ge=0, le=10000)
    self_discharge_pct_per_day: float = Field(0.05, ge=0, le=10)
    self_discharge_spread_pct_per_day: float = Field(0.03, ge=0, le=10)
    initial_soc_pct: float = Field(50.0, ge=0, le=100)
    initial_soc_spread_pct: float = Field(1.0, ge=0, le=20)
    balance_bleed_a: float = Field(0.1, ge=0, le=5)
    cell_update_s: float = Field(1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _strings_divide(self) -> PackParams:
        if self.modules % self.modules_per_string:
            raise ValueError(
                f"modules = {self.modules} is not a multiple of "
                f"modules_per_string = {self.modules_per_string}"
            )
        return self

    @property
    def strings(self) -> int:
        """Parallel strings."""
        return self.modules // self.modules_per_string


class ThermalParams(_Model):
    """One lumped temperature per module, heated by I²R and bleed, cooled to ambient."""

    ambient_c: float = Field(20.0, ge=-40, le=60)
    initial_c: float | None = Field(None, ge=-40, le=80)
    module_heat_capacity_j_per_c: float = Field(10000.0, gt=0)
    module_to_ambient_c_per_w: float = Field(1.0, gt=0)


class ChargerParams(_Model):
    """Vertiv/Emerson R48 rectifier (PurpleAlien/R48_Rectifier rectifier.py)."""

    max_power_w: float = Field(3000.0, gt=0, le=20000)
    amps_per_fraction: float = Field(51.65, gt=0, le=500)
    min_fraction: float = Field(0.10, ge=0, le=1.21)
    max_fraction: float = Field(1.21, gt=0, le=2)
    voltage_min_v: float = Field(41.0, gt=0, le=100)
    voltage_max_v: float = Field(58.5, gt=0, le=100)
    offline_voltage_v: float = Field(53.5, gt=0, le=100)
    offline_current_fraction: float = Field(1.21, ge=0, le=2)
    online_timeout_s: float = Field(30.0, gt=0, le=3600)
    initial_dc_on: bool = False
    walk_in_s: float = Field(8.0, ge=0, le=200)
    current_ramp_a_per_s: float = Field(20.0, gt=0)
    voltage_ramp_v_per_s: float = Field(2.0, gt=0)
    efficiency: float = Field(0.95, gt=0.3, le=1)
    standby_w: float = Field(0.0, ge=0, le=200)
    cable_resistance_mohm: float = Field(10.0, ge=0, le=10000)
    ac_voltage_v: float = Field(230.0, gt=50, le=500)

    @model_validator(mode="after")
    def _ranges(self) -> ChargerParams:
        if not self.voltage_min_v < self.voltage_max_v:
            raise ValueError(
                f"voltage_min_v = {self.voltage_min_v} must be below "
                f"voltage_max_v = {self.voltage_max_v}"
            )
        if not self.voltage_min_v <= self.offline_voltage_v <= self.voltage_max_v:
            raise ValueError(
                f"offline_voltage_v = {self.offline_voltage_v} is outside "
                f"{self.voltage_min_v}..{self.voltage_max_v} V"
            )
        if not self.min_fraction <= self.max_fraction:
            raise ValueError(
                f"min_fraction = {self.min_fraction} is above max_fraction = {self.max_fraction}"
            )
        if self.offline_current_fraction > self.max_fraction:
            raise ValueError(
                f"offline_current_fraction = {self.offline_current_fraction} is above "
                f"max_fraction = {self.max_fraction}"
            )
        return self


class InverterParams(_Model):
    """One SoyoSource GTN in battery-limit mode (syssi/esphome-soyosource-gtn-virtual-meter README)."""

    name: str = Field("gtn1", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    max_power_w: float = Field(900.0, gt=0, le=5400)
    efficiency: float = Field(0.87, gt=0.3, le=1)
    lag_s: float = Field(1.0, ge=0, le=120)
    ramp_w_per_s: float = Field(300.0, gt=0)
    dead_time_s: float = Field(0.0, ge=0, le=10)
    frame_timeout_s: float = Field(3.0, gt=0, le=120)
    dc_shutdown_v: float = Field(43.0, gt=0, le=200)
    dc_start_v: float = Field(44.0, gt=0, le=200)
    dc_max_v: float = Field(60.0, gt=0, le=200)
    start_delay_s: float = Field(10.0, ge=0, le=600)

    @model_validator(mode="after")
    def _window(self) -> InverterParams:
        if not self.dc_shutdown_v <= self.dc_start_v < self.dc_max_v:
            raise ValueError(
                f"DC window needs dc_shutdown_v ({self.dc_shutdown_v}) <= dc_start_v "
                f"({self.dc_start_v}) < dc_max_v ({self.dc_max_v})"
            )
        return self


class HouseParams(_Model):
    """How the load/PV profile is read."""

    interpolation: Literal["linear", "hold"] = "linear"
    load_scale: float = Field(1.0, ge=0, le=100)
    pv_scale: float = Field(1.0, ge=0, le=100)


class MeterParams(_Model):
    """The grid meter publishing ``meterbox/grid``."""

    period_s: float = Field(0.5, gt=0, le=600)
    latency_s: float = Field(0.1, ge=0, le=600)
    noise_w: float = Field(0.0, ge=0, le=10000)
    resolution_w: float = Field(1.0, gt=0, le=1000)
    phase_s: float = Field(0.0, ge=0, le=600)


class SimParams(_Model):
    """Numerical settings."""

    max_step_s: float = Field(0.1, gt=0, le=10)


class PlantParams(_Model):
    """A whole plant file."""

    name: str = "default"
    description: str = ""
    pack: PackParams = PackParams()
    thermal: ThermalParams = ThermalParams()
    charger: ChargerParams = ChargerParams()
    inverters: tuple[InverterParams, ...] = Field((InverterParams(),), min_length=1, max_length=8)
    house: HouseParams = HouseParams()
    meter: MeterParams = MeterParams()
    sim: SimParams = SimParams()

    @model_validator(mode="after")
    def _unique_inverter_names(self) -> PlantParams:
        names = [inv.name for inv in self.inverters]
        if len(set(names)) != len(names):
            raise ValueError(f"inverter names must be unique, got {names}")
        return self


def bundled_plants() -> list[str]:
    """Names of the plant files shipped in tools/gridzero_tools/data/plants."""
    return sorted(p.stem for p in PLANTS_DIR.glob("*.yaml"))


def resolve_plant_path(name_or_path: str | Path) -> Path:
    """A path as given, or the bundled file for a bare name like ``meter-2s``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path():
        return path
    bundled = PLANTS_DIR / f"{path.name}.yaml"
    if not bundled.exists():
        raise UsageError(
            f"plant {str(name_or_path)!r}: no such bundled plant; "
            f"known: {', '.join(bundled_plants())} (or give a .yaml path)"
        )
    return bundled


def load_plant(name_or_path: str | Path) -> PlantParams:
    """Read and validate a plant file; errors name the file, line and field."""
    path = resolve_plant_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"plant file {path}: cannot read: {exc.strerror or exc}") from exc
    return parse_plant(text, str(path))


def parse_plant(text: str, source: str = "<plant>") -> PlantParams:
    """Validate plant YAML text; ``source`` names it in error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"plant file {source}{where}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(
            f"plant file {source}: top level must be a mapping, got {type(data).__name__}"
        )
    try:
        return PlantParams.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_describe(exc, node, source)) from exc


def _describe(exc: ValidationError, node: yaml.Node | None, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc)
        where = f" line {line}" if line else ""
        value = _value_text(err)
        lines.append(f"plant file {source}{where}: {field}{value}: {err['msg']}")
    return "\n".join(lines)


def _value_text(err: Any) -> str:
    if err["type"] in ("missing", "model_type") or "input" not in err:
        return ""
    value = err["input"]
    if isinstance(value, dict | list):
        return ""
    if isinstance(value, float) and math.isnan(value):
        return " = nan"
    return f" = {value!r}"


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    if node is None:
        return None
    best = node.start_mark.line + 1
    current: yaml.Node = node
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    best = key.start_mark.line + 1
                    break
        elif (
            isinstance(current, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(current.value)
        ):
            child = current.value[part]
            best = child.start_mark.line + 1
        if child is None:
            break
        current = child
    return best
