"""The shunt's settings: start-up (``ShuntSettings``) and runtime (``ShuntRuntime``), and the
keys of its state file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from gridzero.chemistry import (
    CELL_RESISTANCE_MAX_MOHM,
    CELL_RESISTANCE_MIN_MOHM,
    CELLS_PER_MODULE,
)
from gridzero.runtime.settings import ServiceSettings
from gridzero_shunt.ads1115 import Ads1115Settings
from gridzero_shunt.codec import FSR_CHOICES_V, RATE_CHOICES_SPS
from gridzero_shunt.current import (
    DEAD_BAND_MAX_A,
    GAIN_MAX,
    GAIN_MIN,
    MAX_OFFSET_V,
    max_offset_counts,
)
from gridzero_shunt.soc import (
    DEFAULT_CAPACITY_AH,
    DEFAULT_MODULE_RESISTANCE_MOHM,
    DEFAULT_MODULES,
    SocSettings,
)

_SOC = SocSettings()
STORE_KEY = "counter"
# the zero offset measured by calibrate_zero, with the ADC range it was measured at
ZERO_OFFSET_KEY = "zero_offset"
# where the runtime keeps the saved runtime settings (RuntimeSettings, no unit)
RUNTIME_SETTINGS_KEY = "settings"
# runtime settings before issue 16: the sign and gain are start-up settings now, and the
# offset is set by calibrate_zero only. Their saved values and retained echoes are removed.
FORMER_RUNTIME_SETTINGS = ("invert", "gain", "offset_counts")


class ShuntSettings(ServiceSettings):
    """Start-up settings (environment ``GRIDZERO_<FIELD>`` / YAML)."""

    i2c_bus: int | Literal["sim"] = Field(
        default=1, description="I2C bus number (/dev/i2c-N), or 'sim' for the ADS1115 model"
    )
    address: int = Field(default=0x48, ge=0x48, le=0x4B, description="ADDR pin: 0x48..0x4B")
    fsr_v: float = Field(default=0.256, description="ADC full-scale range (PGA), volts")
    data_rate_sps: int = Field(default=8, description="ADC data rate, samples per second")
    single_shot: bool = Field(default=False, description="single-shot instead of continuous")
    transfer: Literal["block", "word"] = Field(
        default="block", description="I2C block transfers (MSB first) or SMBus words (swapped)"
    )
    shunt_rated_a: float = Field(default=100.0, gt=0, le=10000)
    shunt_rated_mv: float = Field(default=75.0, gt=0, le=1000)
    invert: bool = Field(
        default=False,
        description="flip the sign: AIN0/AIN1 wired the other way round (charging read < 0)",
    )
    gain: float = Field(
        default=1.0,
        ge=GAIN_MIN,
        le=GAIN_MAX,
        description="measured current x gain: a shunt/ADC tolerance correction only",
    )
    max_offset_uv: float = Field(
        default=MAX_OFFSET_V * 1e6,
        gt=0,
        le=MAX_OFFSET_V * 1e6,
        description="largest zero offset calibrate_zero may store, uV at the ADC input",
    )
    sample_rate_hz: float = Field(default=8.0, ge=4.0, le=50.0)
    publish_s: float = Field(default=1.0, ge=0.25, le=10.0)
    retry_s: float = Field(default=5.0, gt=0, le=300, description="re-open a missing device")
    capacity_ah: float = Field(
        default=round(DEFAULT_CAPACITY_AH, 1),
        gt=0,
        le=10000,
        description="initial capacity (9 GTE modules x 24.46 Ah); a runtime setting after that",
    )
    charge_efficiency: float = Field(default=_SOC.charge_efficiency, ge=0.5, le=1.0)
    series_cells: int = Field(default=_SOC.series_cells, ge=1, le=200)
    full_cell_v: float = Field(default=_SOC.full_cell_v, ge=3.5, le=4.25)
    tail_current_a: float = Field(default=_SOC.tail_current_a, ge=0, le=1000)
    full_hold_s: float = Field(default=_SOC.full_hold_s, ge=0, le=7200)
    empty_cell_v: float = Field(default=_SOC.empty_cell_v, ge=2.5, le=3.7)
    empty_hold_s: float = Field(default=_SOC.empty_hold_s, ge=0, le=7200)
    max_gap_s: float = Field(default=_SOC.max_gap_s, gt=0, le=60)
    rest_current_a: float = Field(default=_SOC.rest_current_a, ge=0, le=100)
    rest_hold_s: float = Field(default=_SOC.rest_hold_s, ge=0, le=7200)
    bms_stale_s: float = Field(default=5.0, gt=0, le=120, description="pack data older is ignored")
    module_resistance_mohm: float = Field(
        default=DEFAULT_MODULE_RESISTANCE_MOHM,
        ge=CELLS_PER_MODULE * CELL_RESISTANCE_MIN_MOHM,
        le=CELLS_PER_MODULE * CELL_RESISTANCE_MAX_MOHM,
        description="one 12-cell module's internal resistance, for the loaded-voltage SoC estimate",
    )
    parallel_strings: int = Field(
        default=DEFAULT_MODULES, ge=1, le=64, description="strings (modules) in parallel"
    )
    estimate_window_s: float = Field(
        default=_SOC.estimate_window_s, ge=1, le=60, description="SoC estimate averages this long"
    )

    @field_validator("fsr_v")
    @classmethod
    def _fsr(cls, value: float) -> float:
        if not any(abs(value - v) < 1e-9 for v in FSR_CHOICES_V):
            raise ValueError(f"must be one of {', '.join(f'{v:g}' for v in FSR_CHOICES_V)} V")
        return value

    @field_validator("data_rate_sps")
    @classmethod
    def _rate(cls, value: int) -> int:
        if value not in RATE_CHOICES_SPS:
            raise ValueError(f"must be one of {', '.join(map(str, RATE_CHOICES_SPS))} SPS")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ShuntSettings:
        if self.single_shot and 1.5 / self.data_rate_sps > 0.5 / self.sample_rate_hz:
            raise ValueError(
                f"single-shot conversions at {self.data_rate_sps} SPS block too long for"
                f" {self.sample_rate_hz:g} Hz sampling; use continuous mode or a higher data rate"
            )
        if self.empty_cell_v >= self.full_cell_v:
            raise ValueError(
                f"empty_cell_v {self.empty_cell_v} V must be below full_cell_v {self.full_cell_v} V"
            )
        return self

    @property
    def max_offset_counts(self) -> float:
        """``max_offset_uv`` in ADC counts at this range (48 at +-0.256 V)."""
        return max_offset_counts(self.fsr_v, self.max_offset_uv * 1e-6)

    def adc(self) -> Ads1115Settings:
        return Ads1115Settings(
            address=self.address,
            fsr_v=self.fsr_v,
            data_rate_sps=self.data_rate_sps,
            single_shot=self.single_shot,
            transfer=self.transfer,
        )

    def soc(self, capacity_ah: float) -> SocSettings:
        return SocSettings(
            capacity_ah=capacity_ah,
            charge_efficiency=self.charge_efficiency,
            series_cells=self.series_cells,
            full_cell_v=self.full_cell_v,
            tail_current_a=self.tail_current_a,
            full_hold_s=self.full_hold_s,
            empty_cell_v=self.empty_cell_v,
            empty_hold_s=self.empty_hold_s,
            max_gap_s=self.max_gap_s,
            rest_current_a=self.rest_current_a,
            rest_hold_s=self.rest_hold_s,
            pack_resistance_ohm=self.pack_resistance_ohm,
            estimate_window_s=self.estimate_window_s,
        )

    @property
    def pack_resistance_ohm(self) -> float:
        """The pack's resistance as the bms's pack voltage sees it: series cells in each of
        the parallel strings."""
        per_cell = self.module_resistance_mohm / 1000.0 / CELLS_PER_MODULE
        return per_cell * self.series_cells / self.parallel_strings


class ShuntRuntime(BaseModel):
    """Settings changed at runtime (MQTT / Home Assistant), persisted.

    Neither can hide an over-current: the capacity scales the SoC only, and the dead band
    zeroes at most 0.5 A. The sign, gain and zero offset are not here (module docstring)."""

    capacity_ah: float = Field(
        default=round(DEFAULT_CAPACITY_AH, 1),
        ge=1,
        le=10000,
        json_schema_extra={"unit": "Ah", "step": 0.1},
    )
    dead_band_a: float = Field(
        default=0.05,
        ge=0,
        le=DEAD_BAND_MAX_A,
        json_schema_extra={"unit": "A", "step": 0.01, "device_class": "current"},
    )
