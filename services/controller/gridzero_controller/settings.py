"""Controller modes and runtime settings: a pure, validated model (no MQTT here).

Every setting has a range, so a bad value from MQTT, Home Assistant or a file is
refused with its name, the value and the allowed range, and never changes state.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gridzero.contract import ControllerMode
from gridzero.errors import SettingsError
from gridzero_controller.schedule import (
    MAX_WINDOWS,
    NO_WINDOW,
    WINDOW_PATTERN,
    PriceRules,
    Window,
    parse_window,
)

# The modes are part of the MQTT contract (auto, charge_only, discharge_only, hold,
# constant_power, off): AUTO keeps the grid at the target charging and discharging;
# CHARGE_ONLY / DISCHARGE_ONLY the same loop, one side only; HOLD battery idle (0 W), devices
# ready; CONSTANT_POWER a fixed signed battery power (`constant_power_w`, + discharge,
# − charge); OFF everything off, the charger's DC output too.
Mode = ControllerMode


def _num(default: float, lo: float, hi: float, unit: str, step: float) -> Any:
    # unit and step: how Home Assistant shows the number entity of a runtime setting
    return Field(default, ge=lo, le=hi, json_schema_extra={"unit": unit, "step": step})


def _window(number: int) -> Any:
    # a Home Assistant text entity each: a state holds at most 255 characters, and the
    # frontend checks the pattern while the owner types (schedule.py)
    return Field(
        NO_WINDOW,
        max_length=255,
        title=f"Window {number}",
        json_schema_extra={"pattern": WINDOW_PATTERN},
    )


class ControllerRuntime(BaseModel):
    """The settings users change at run time (MQTT / Home Assistant); validated, persisted.

    Declared once, here: `ControllerSettings` (every setting, start-up) extends it, so the
    runtime subset has the same defaults and bounds as the start-up file by construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = Mode.AUTO
    # Independent of the mode: the owner's "no charging" / "no discharging" switches (the
    # telnet console's `c`/`i` keys and Home Assistant switches); off = that side at 0 W.
    charge_enabled: bool = True
    discharge_enabled: bool = True
    target_grid_w: float = _num(0.0, -500.0, 500.0, "W", 5)
    # Half a watt: a SoyoSource demand frame carries whole watts, rounded to the nearest, so a
    # set-point that moved by more than half a watt may already change the frame; at 1 W the
    # grid drifted up to ~1.5 W before a correction (issue 18, tenth round).
    deadband_w: float = _num(0.5, 0.0, 200.0, "W", 0.5)
    max_charge_w: float = _num(3000.0, 0.0, 20000.0, "W", 50)
    max_discharge_w: float = _num(3000.0, 0.0, 20000.0, "W", 50)
    constant_power_w: float = _num(0.0, -20000.0, 20000.0, "W", 50)
    soc_min_pct: float = _num(10.0, 0.0, 100.0, "%", 1)
    soc_max_pct: float = _num(95.0, 0.0, 100.0, "%", 1)
    soc_hysteresis_pct: float = _num(3.0, 0.1, 30.0, "%", 0.5)
    # Meter handling.
    meter_stale_s: float = _num(5.0, 1.0, 120.0, "s", 1)
    # `meterbox/chargeTarget` lapses this long after its last refresh (the original's 15 s
    # `timeout`, housebatt.ino line 70): a dead automation cannot keep charging from the grid.
    # Runtime values may only shorten the start-up one (service.runtime_limit).
    charge_target_timeout_s: float = _num(15.0, 5.0, 300.0, "s", 1)
    # Schedules and price rules (schedule.py; services/controller/README.md "Schedules").
    # Discharging stops at this SoC outside `discharge_to` windows (0: only soc_min_pct).
    reserve_soc_pct: float = _num(0.0, 0.0, 100.0, "%", 1)
    window_1: str = _window(1)
    window_2: str = _window(2)
    window_3: str = _window(3)
    window_4: str = _window(4)
    window_5: str = _window(5)
    window_6: str = _window(6)
    # Prices in the unit of the price topic (e.g. EUR/kWh or ct/kWh); "below" is strict.
    price_charge_enabled: bool = False
    charge_below_price: float = _num(0.0, -1000.0, 1000.0, "/kWh", 0.001)
    price_charge_soc_pct: float = _num(80.0, 0.0, 100.0, "%", 1)
    price_charge_w: float = _num(1000.0, 0.0, 20000.0, "W", 50)
    price_hold_enabled: bool = False
    hold_below_price: float = _num(0.0, -1000.0, 1000.0, "/kWh", 0.001)

    @field_validator(*(f"window_{i}" for i in range(1, MAX_WINDOWS + 1)), mode="before")
    @classmethod
    def _unused_window(cls, value: object) -> object:
        # "" (Home Assistant's cleared text, a value saved before "none") is the unused window
        if isinstance(value, str) and not value.strip():
            return NO_WINDOW
        return value

    @model_validator(mode="after")
    def _check_schedule(self) -> Self:
        self.windows()
        if self.price_charge_enabled and not 0 < self.price_charge_w <= self.max_charge_w:
            raise ValueError(
                f"price_charge_w {self.price_charge_w:g} must be above 0 and at most "
                f"max_charge_w {self.max_charge_w:g} while price_charge_enabled"
            )
        return self

    def windows(self) -> tuple[Window | None, ...]:
        """The parsed windows 1..6 (None: empty); ValueError naming the bad one."""
        return tuple(
            parse_window(getattr(self, f"window_{i}"), f"window_{i}", self.max_charge_w)
            for i in range(1, MAX_WINDOWS + 1)
        )

    def price_rules(self) -> PriceRules:
        return PriceRules(
            charge_enabled=self.price_charge_enabled,
            charge_below=self.charge_below_price,
            charge_soc_pct=self.price_charge_soc_pct,
            charge_w=self.price_charge_w,
            hold_enabled=self.price_hold_enabled,
            hold_below=self.hold_below_price,
        )

    @model_validator(mode="after")
    def _check_soc_band(self) -> Self:
        if self.soc_min_pct + self.soc_hysteresis_pct >= self.soc_max_pct - self.soc_hysteresis_pct:
            raise ValueError(
                f"soc_min_pct {self.soc_min_pct} + hysteresis {self.soc_hysteresis_pct} must stay "
                f"below soc_max_pct {self.soc_max_pct} - hysteresis"
            )
        return self


class ControllerSettings(ControllerRuntime):
    """Every setting of the grid-zero loop (the runtime ones above, plus start-up tuning).
    Powers are AC watts at the grid meter."""

    stale_ramp_w_per_s: float = Field(500.0, ge=10.0, le=100000.0)
    spike_w: float = Field(1500.0, ge=50.0, le=20000.0)
    spike_confirm_w: float = Field(300.0, ge=10.0, le=20000.0)
    meter_latency_s: float = Field(0.0, ge=0.0, le=10.0)
    # The plant guess: how the inverters' output follows a command, used between two output
    # measurements (law.ControlLaw.battery_estimate) and for the overdrive (law.Overdrive).
    # Dead time: MQTT and the inverter service's 0.1 s tick; the frame goes out at once.
    plant_dead_time_s: float = Field(0.2, ge=0.0, le=30.0)
    plant_time_constant_s: float = Field(1.0, gt=0.0, le=60.0)
    plant_ramp_w_per_s: float = Field(300.0, gt=0.0, le=100000.0)
    # The same guess for the rectifier while charging: its current loop follows within
    # ~0.1 s, rising at ~20 A/s (≈ 1 kW/s at 48 V) and falling at once.
    charger_dead_time_s: float = Field(0.2, ge=0.0, le=30.0)
    charger_time_constant_s: float = Field(0.1, gt=0.0, le=60.0)
    charger_ramp_w_per_s: float = Field(1000.0, gt=0.0, le=100000.0)
    smooth_band_w: float = Field(100.0, ge=0.0, le=2000.0)
    smooth_gain: float = Field(0.3, gt=0.0, le=1.0)
    noise_deadband: float = Field(1.0, ge=0.0, le=5.0)
    uncertain_gain: float = Field(1.0, ge=0.0, le=1.0)
    # Gain on increases of |battery power| (backing off always uses gain 1; services/controller/README.md).
    rise_gain: float = Field(1.0, gt=0.0, le=1.0)
    # Share of the plant guess's overdrive used while the inverters ramp (0 = none; law.py).
    overdrive_gain: float = Field(1.0, ge=0.0, le=1.0)
    bms_stale_s: float = Field(3.0, ge=0.5, le=60.0)
    # Dispatch.
    inverter_efficiency: float = Field(0.92, gt=0.5, le=1.0)
    charger_efficiency: float = Field(0.94, gt=0.5, le=1.0)
    charger_min_current_a: float = Field(5.2, ge=0.0, le=100.0)
    charger_max_current_a: float = Field(51.7, gt=0.0, le=200.0)
    discharge_start_w: float = Field(20.0, ge=0.0, le=1000.0)
    # W of grid exchange a charger start must save, and a running charger may lose, before
    # the side changes (dispatch.charge_pays): no toggling at the break-even point.
    charge_hysteresis_w: float = Field(20.0, ge=0.0, le=2000.0)
    min_dwell_s: float = Field(1.0, ge=0.0, le=600.0)
    off_inverter_w: float = Field(5.0, ge=0.0, le=200.0)
    off_charger_a: float = Field(0.5, ge=0.0, le=20.0)
    off_unconfirmed_s: float = Field(15.0, ge=1.0, le=600.0)
    state_stale_s: float = Field(5.0, ge=0.5, le=120.0)
    # Supervision.
    follow_timeout_s: float = Field(15.0, ge=1.0, le=600.0)
    follow_tolerance_w: float = Field(80.0, ge=1.0, le=5000.0)
    quality_window_s: float = Field(60.0, ge=5.0, le=3600.0)


def validate_settings(values: dict[str, Any]) -> ControllerSettings:
    """Build settings from plain values, or raise SettingsError listing every bad one."""
    try:
        return ControllerSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:
                # a rule across fields: the message names them (the input is every setting)
                problems.append(f"controller settings: {err['msg']}")
                continue
            where = ".".join(str(p) for p in err["loc"])
            problems.append(f"controller setting {where}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("; ".join(problems)) from exc


def update_settings(current: ControllerSettings, changes: dict[str, Any]) -> ControllerSettings:
    """Apply a partial change; the current settings are untouched if any value is bad."""
    merged = current.model_dump()
    merged.update(changes)
    return validate_settings(merged)
