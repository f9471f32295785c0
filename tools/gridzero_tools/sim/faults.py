"""Fault injections: plain, validated values the plant (and the wire layer) obey.

Each fault is a frozen pydantic model with a ``kind``; ``parse_fault`` reads
one from JSON (the body of ``gridzero/sim/fault/set``). Every fault has an
optional ``start_s`` (default: when it is injected) and ``duration_s``
(default: until cleared). ``docs/sim.md`` describes each kind.

| kind | effect |
|---|---|
| cell_drift | a cell's measured voltage moves by ``offset_v`` + ``v_per_h`` x hours |
| cell_leak | a cell loses charge through an extra ``current_a`` (real imbalance) |
| module_silent | a module sends no frames (plant physics unchanged) |
| charger_silent | the rectifier neither hears nor answers: its online set-points expire |
| inverter_silent | an inverter hears no demand frames: it stops after its timeout |
| gateway_restart | an inverter's serial gateway drops its TCP link and frames for a while |
| bus_garbage | random frames on a CAN bus (``bus`` = bms bus index or "charger") |
| meter_silent | the meter publishes nothing |
| meter_junk | the meter publishes garbage payloads |
| load_step | ``extra_w`` of load is added |
| temperature_offset | a module's measured temperature moves by ``offset_c`` + ``c_per_h`` x hours |
| duplicate_module | a second board with module number ``number`` on bms bus ``bus`` (its own cells) |
| frozen_module | a module's board repeats the frames it sent last (counter included) |
| rectifier_over_current | the rectifier delivers ``extra_a`` more than every current limit it should hold |
| rectifier_refuses_stored | the rectifier answers stored-fallback writes with an error (all, or voltages below ``below_v``) |
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gridzero.errors import UsageError


class _Fault(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    start_s: float | None = None
    duration_s: float | None = Field(None, gt=0)

    def active(self, now_s: float) -> bool:
        """True while ``now_s`` is inside the fault's window (start_s must be set)."""
        start = self.start_s if self.start_s is not None else float("-inf")
        if now_s < start:
            return False
        return self.duration_s is None or now_s < start + self.duration_s


class CellDrift(_Fault):
    """A cell's measured voltage drifts (sense-wire or ADC fault); its charge is unchanged."""

    kind: Literal["cell_drift"] = "cell_drift"
    module: int = Field(ge=0)
    cell: int = Field(ge=0)
    offset_v: float = Field(0.0, ge=-5, le=5)
    v_per_h: float = Field(0.0, ge=-50, le=50)


class CellLeak(_Fault):
    """A cell loses charge through an extra leak current (real, growing imbalance)."""

    kind: Literal["cell_leak"] = "cell_leak"
    module: int = Field(ge=0)
    cell: int = Field(ge=0)
    current_a: float = Field(gt=0, le=50)


class ModuleSilent(_Fault):
    """A module's slave board stops sending frames."""

    kind: Literal["module_silent"] = "module_silent"
    module: int = Field(ge=0)


class ChargerSilent(_Fault):
    """The rectifier's CAN link is dead both ways."""

    kind: Literal["charger_silent"] = "charger_silent"


class InverterSilent(_Fault):
    """An inverter's RS485 link is dead: demand frames do not arrive."""

    kind: Literal["inverter_silent"] = "inverter_silent"
    unit: int = Field(ge=0)


class GatewayRestart(_Fault):
    """An RS485 network gateway reboots: TCP link dropped, frames lost for duration_s."""

    kind: Literal["gateway_restart"] = "gateway_restart"
    unit: int = Field(ge=0)
    duration_s: float | None = Field(5.0, gt=0)


class BusGarbage(_Fault):
    """Random frames on a CAN bus: a BMS bus index, or "charger"."""

    kind: Literal["bus_garbage"] = "bus_garbage"
    bus: int | Literal["charger"] = 0
    rate_hz: float = Field(50.0, gt=0, le=5000)


class MeterSilent(_Fault):
    """The grid meter stops publishing."""

    kind: Literal["meter_silent"] = "meter_silent"


class MeterJunk(_Fault):
    """The grid meter publishes payloads that are not numbers (value NaN in the model)."""

    kind: Literal["meter_junk"] = "meter_junk"


class LoadStep(_Fault):
    """Extra house load from start_s (for duration_s, or until cleared)."""

    kind: Literal["load_step"] = "load_step"
    extra_w: float = Field(ge=-100000, le=100000)


class TemperatureOffset(_Fault):
    """A module's measured temperature is offset (a hot spot at the sensor, or a sensor fault).

    Like ``cell_drift`` it changes what the module reports (and the truth's
    ``temperatures_c``), not the physics: the bms's temperature protection acts on it.
    """

    kind: Literal["temperature_offset"] = "temperature_offset"
    module: int = Field(ge=0)
    offset_c: float = Field(0.0, ge=-100, le=150)
    c_per_h: float = Field(0.0, ge=-3600, le=3600)


class DuplicateModule(_Fault):
    """A second slave board with the same module number on one bms bus.

    It answers every poll just before the real module, with its own cells (all at ``cell_v``),
    its own temperature and its own message counter: the wiring mistake that makes one of two
    modules invisible to a receiver that keeps the last frame per ID (module numbers are fixed
    in the boards, so two packs' "module 3"s clash on one bus). The twin is a board on the wire
    only: the plant's cells are unchanged.
    """

    kind: Literal["duplicate_module"] = "duplicate_module"
    bus: int = Field(ge=0)
    number: int = Field(ge=1, le=16)
    cell_v: float = Field(3.7, ge=1.0, le=5.0)
    temperature_c: float = Field(20.0, ge=-40, le=86)


class FrozenModule(_Fault):
    """A module's slave board freezes and repeats the frames it sent last (counter and all)."""

    kind: Literal["frozen_module"] = "frozen_module"
    module: int = Field(ge=0)


class RectifierOverCurrent(_Fault):
    """The rectifier's current regulation fails: it delivers ``extra_a`` above its current
    limit (and its power cap), as far as the voltage drives it; it reports what it delivers."""

    kind: Literal["rectifier_over_current"] = "rectifier_over_current"
    extra_a: float = Field(20.0, gt=0, le=200)


class RectifierRefusesStored(_Fault):
    """The rectifier refuses writes of its stored fallback (registers 0x24, 0x19) with error
    0xF3. With ``below_v`` only stored voltages below it are refused: the R48 variants that
    store only 48-58 V (PurpleAlien/R48_Rectifier rectifier.py: offline voltage 48-58 V)."""

    kind: Literal["rectifier_refuses_stored"] = "rectifier_refuses_stored"
    below_v: float | None = Field(None, gt=0, le=100)


Fault = Annotated[
    CellDrift
    | CellLeak
    | ModuleSilent
    | ChargerSilent
    | InverterSilent
    | GatewayRestart
    | BusGarbage
    | MeterSilent
    | MeterJunk
    | LoadStep
    | TemperatureOffset
    | DuplicateModule
    | FrozenModule
    | RectifierOverCurrent
    | RectifierRefusesStored,
    Field(discriminator="kind"),
]

FAULT_ADAPTER: TypeAdapter[Fault] = TypeAdapter(Fault)
FAULT_KINDS: tuple[str, ...] = (
    "cell_drift",
    "cell_leak",
    "module_silent",
    "charger_silent",
    "inverter_silent",
    "gateway_restart",
    "bus_garbage",
    "meter_silent",
    "meter_junk",
    "load_step",
    "temperature_offset",
    "duplicate_module",
    "frozen_module",
    "rectifier_over_current",
    "rectifier_refuses_stored",
)


def parse_fault(payload: str | bytes) -> Fault:
    """A fault from JSON; bad input raises UsageError naming the field."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"fault: payload is not JSON: {exc}") from exc
    try:
        return FAULT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(
            f"fault {payload!r}: {problems} (kinds: {', '.join(FAULT_KINDS)})"
        ) from exc
