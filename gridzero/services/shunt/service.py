"""The shunt service: ADS1115 + shunt -> current, power, SoC and energy counters on MQTT.

Hardware: ``smbus2.SMBus(<i2c_bus>)``. Simulation (``i2c_bus: sim``): the
register-level ADS1115 model behind the same driver, its input voltage set from
the simulator's true battery current (``<base>/sim/truth`` ``current_a``)
through the shunt's resistance, wired the default way (charging = positive).

Loop: sample every 1/``sample_rate_hz`` s; every ``publish_s`` average the
samples, feed the coulomb counter (pack voltage and cell extremes from
``<base>/bms/pack`` when fresh) and publish ``<base>/shunt/state``. The bms and the
charger trip on that current, so the measurement's calibration is not a runtime setting:
sign (``invert``) and ``gain`` are start-up settings, and the zero offset is measured by
the ``calibrate_zero`` action only, bounded by ``max_offset_uv`` (docs/shunt.md). Any I2C
failure leaves the sample out; a saturated ADC or too few good samples make the
sensor ``unavailable`` (no current, counting pauses). A missing device is
retried every ``retry_s``. The counter state is persisted (debounced by the
runtime's store, ``store_flush_s``) and restored at start.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from gridzero import ha
from gridzero.contract import PackState, ShuntState, SimTruth, parse_payload
from gridzero.runtime.freshness import Freshness, FreshValue
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero.services.shunt.ads1115 import Ads1115, Ads1115Error, Ads1115Settings, SMBusLike
from gridzero.services.shunt.ads1115_model import Ads1115Model
from gridzero.services.shunt.codec import FSR_CHOICES_V, RATE_CHOICES_SPS
from gridzero.services.shunt.current import (
    DEAD_BAND_MAX_A,
    GAIN_MAX,
    GAIN_MIN,
    MAX_OFFSET_V,
    MIN_CALIBRATION_SAMPLES,
    CalibrationError,
    CurrentAverager,
    CurrentReading,
    CurrentSettings,
    max_offset_counts,
    zero_offset,
)
from gridzero.services.shunt.soc import (
    DEFAULT_CAPACITY_AH,
    CoulombCounter,
    SocSettings,
    soc_window_from_ocv,
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
        )


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


class Shunt(Service[ShuntSettings]):
    """Battery current, state of charge and energy from an ADS1115 on a shunt."""

    name = "shunt"
    settings_class = ShuntSettings

    def start(self) -> None:
        ctx, s = self.ctx, self.settings
        self.model: Ads1115Model | None = None
        self.adc: Ads1115 | None = None
        self.open_error = ""
        self.next_open_s = 0.0
        former_offset = self._drop_former_runtime_settings()
        self.offset_counts = self._restore_offset(former_offset)
        self.runtime = ctx.runtime_settings(
            ShuntRuntime(capacity_ah=s.capacity_ah), self.on_runtime_change
        )
        self.current_settings = self._current_settings(self.runtime.value)
        self.averager = CurrentAverager(self.current_settings)
        self.counter = self._restore_counter()
        # the energy totals published are those already on disk: after a crash the restored
        # counters are never below what Home Assistant saw (a decrease of a total_increasing
        # sensor reads as a meter reset, and the whole total would be counted again)
        self.saved_totals = self._totals()
        self.next_save_s = 0.0
        self.last_reading: CurrentReading | None = None
        self.pack: FreshValue[PackState] | None = None
        self.pack_gate = Freshness("bms pack")
        self.calibration: list[int] | None = None
        self.calibration_topic = ""
        self.errors_logged = 0
        if s.i2c_bus == "sim":
            self.model = Ads1115Model(s.address, clock=ctx.now)
            ctx.subscribe(ctx.topics.sim_truth, self.on_truth)
        ctx.subscribe(ctx.topics.bms_pack, self.on_pack)
        for name in FORMER_RUNTIME_SETTINGS:
            ctx.subscribe(ctx.topics.setting(self.name, name), self.on_former_echo)
        ctx.action("soc_full", self.on_soc_full)
        ctx.action("set_soc", self.on_set_soc)
        ctx.action("calibrate_zero", self.on_calibrate_zero)
        ctx.action("soc_from_voltage", self.on_soc_from_voltage)
        ctx.every(1.0 / s.sample_rate_hz, self.sample, name="sample")
        ctx.every(s.publish_s, self.publish_state, name="publish", start_s=s.publish_s)
        ctx.discovery(self.discovery)

    # --- settings and state -------------------------------------------------------------

    def _current_settings(self, rt: ShuntRuntime) -> CurrentSettings:
        s = self.settings
        return CurrentSettings(
            shunt_rated_a=s.shunt_rated_a,
            shunt_rated_mv=s.shunt_rated_mv,
            fsr_v=s.fsr_v,
            offset_counts=self.offset_counts,
            gain=s.gain,
            invert=s.invert,
            dead_band_a=rt.dead_band_a,
        )

    def _drop_former_runtime_settings(self) -> object:
        """Remove the saved values of former runtime settings; return a saved offset.

        A saved ``invert`` or ``gain`` is ignored (logged; an error if it differs from the
        start-up value in force): it may have been set by anyone with Home Assistant access,
        so it is not migrated. The operator sets the start-up setting if it was right."""
        saved = self.ctx.store.get(RUNTIME_SETTINGS_KEY)
        if not isinstance(saved, dict) or not any(n in saved for n in FORMER_RUNTIME_SETTINGS):
            return None
        kept = dict(saved)
        for name in ("invert", "gain"):
            if name not in kept:
                continue
            value, in_force = kept.pop(name), getattr(self.settings, name)
            log = self.ctx.log.info if value == in_force else self.ctx.log.error
            log(
                "saved runtime setting %s=%r ignored: %s is a start-up setting now"
                " (GRIDZERO_%s or the settings file), in force: %r",
                name,
                value,
                name,
                name.upper(),
                in_force,
            )
        offset = kept.pop("offset_counts", None)
        self.ctx.store.set(RUNTIME_SETTINGS_KEY, kept)
        return offset

    def _restore_offset(self, former: object) -> float:
        """The zero offset saved by calibrate_zero (or a former runtime value), if plausible."""
        stored = self.ctx.store.get(ZERO_OFFSET_KEY)
        fsr_v = self.settings.fsr_v
        if isinstance(stored, dict):
            value, what = stored.get("offset_counts"), "saved zero offset"
            if stored.get("fsr_v") != fsr_v:
                self.ctx.log.error(
                    "%s %r counts was measured at a %r V range, not %g V: ignored,"
                    " run calibrate_zero",
                    what,
                    value,
                    stored.get("fsr_v"),
                    fsr_v,
                )
                return 0.0
        elif former is not None:
            value, what = former, "saved runtime offset_counts"
        else:
            return 0.0
        limit = self.settings.max_offset_counts
        if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > limit:
            self.ctx.log.error(
                "%s %r is not a number within +-%g counts (max_offset_uv %g uV): ignored,"
                " using 0; run calibrate_zero",
                what,
                value,
                limit,
                self.settings.max_offset_uv,
            )
            return 0.0
        if what != "saved zero offset":
            self.ctx.log.info("%s %r kept as the zero offset", what, value)
            self._save_offset(float(value))
        return float(value)

    def _save_offset(self, offset_counts: float) -> None:
        self.ctx.store.set(
            ZERO_OFFSET_KEY, {"offset_counts": offset_counts, "fsr_v": self.settings.fsr_v}
        )

    def _restore_counter(self) -> CoulombCounter:
        soc_settings = self.settings.soc(self.runtime.value.capacity_ah)
        stored = self.ctx.store.get(STORE_KEY)
        if stored is None:
            return CoulombCounter(soc_settings)
        try:
            if not isinstance(stored, dict):
                raise ValueError(f"stored counter is a {type(stored).__name__}, not an object")
            counter = CoulombCounter.from_dict(stored, soc_settings)
        except ValueError as exc:
            self.ctx.log.error("stored SoC/energy counters unusable, starting afresh: %s", exc)
            return CoulombCounter(soc_settings)
        self.ctx.log.info("restored counters: %s", counter.reading())
        return counter

    def on_former_echo(self, msg: Message) -> None:
        """A retained echo of a former runtime setting (from an older version) is cleared:
        it showed a value that is no longer in force."""
        if msg.retain and msg.payload:
            self.ctx.publish(msg.topic, b"", retain=True, qos=1)
            self.ctx.log.info("cleared the retained echo %s (no longer a setting)", msg.topic)

    def on_runtime_change(self, new: ShuntRuntime) -> None:
        self.current_settings = self._current_settings(new)
        self.averager.settings = self.current_settings
        if new.capacity_ah != self.counter.settings.capacity_ah:
            self.counter.settings = self.settings.soc(new.capacity_ah)
        self._save()

    def _save(self) -> None:
        self.ctx.store.set(STORE_KEY, self.counter.to_dict())

    # --- device -----------------------------------------------------------------------------

    def _open(self) -> None:
        s = self.settings
        bus: SMBusLike
        if self.model is not None:
            bus, where = self.model, "simulated I2C"
        else:
            from smbus2 import SMBus  # noqa: PLC0415 - hardware only; tests run without it

            where = f"/dev/i2c-{s.i2c_bus}"
            try:
                bus = SMBus(s.i2c_bus)
            except OSError as exc:
                raise Ads1115Error(f"ADS1115: cannot open {where}: {exc}") from exc
        adc = Ads1115(bus, s.adc(), where=where)
        try:
            adc.start()
        except Ads1115Error:
            bus.close()
            raise
        self.adc = adc
        self.ctx.log.info("%s ready (%s)", adc.name, s.adc())

    def sample(self) -> None:
        now = self.ctx.now()
        if self.adc is None:
            if now < self.next_open_s:
                self.averager.add(None)
                return
            try:
                self._open()
                self.open_error = ""
            except Ads1115Error as exc:
                self.next_open_s = now + self.settings.retry_s
                if str(exc) != self.open_error:
                    self.ctx.log.error(
                        "%s; sensor unavailable, retrying every %g s", exc, self.settings.retry_s
                    )
                self.open_error = str(exc)
                self.averager.add(None)
                return
        adc = self.adc
        if adc is None:  # not opened yet: the branch above returned or opened it
            return
        try:
            counts = adc.read_counts()
        except Ads1115Error as exc:
            self.errors_logged += 1
            if self.errors_logged <= 5 or self.errors_logged % 100 == 0:
                self.ctx.log.warning("read failed (%d so far): %s", self.errors_logged, exc)
            self.averager.add(None)
            return
        self.averager.add(counts)
        if self.calibration is not None:
            self._calibration_sample(counts)

    # --- inputs -------------------------------------------------------------------------------

    def on_truth(self, msg: Message) -> None:
        truth = parse_payload(SimTruth, msg.topic, msg.payload)
        if self.model is not None:
            self.model.input_v = truth.current_a * self.current_settings.shunt_ohm

    def on_pack(self, msg: Message) -> None:
        pack = parse_payload(PackState, msg.topic, msg.payload)
        # aged from its arrival here; a retained pack (maybe of a dead bms) or one stamped
        # in the future is refused (runtime/freshness.py)
        self.pack = self.ctx.take(self.pack_gate, msg, pack)

    def _fresh_pack(self) -> PackState | None:
        if self.pack is None or not self.pack.fresh(self.ctx.now(), self.settings.bms_stale_s):
            return None
        return self.pack.value

    # --- actions ------------------------------------------------------------------------------

    def on_soc_full(self, payload: bytes) -> None:
        self.counter.set_soc(100.0)
        self._save()
        self.publish_state(integrate=False)

    def on_soc_from_voltage(self, payload: bytes) -> None:
        """The original system's `%` key: SoC from the lowest cell's voltage, now.

        Under load the cell voltage is below its rest value, so this reads low while
        discharging; the automatic estimate waits for rest, this one is the operator's call.
        """
        pack = self._fresh_pack()
        if pack is None or pack.cell_min is None:
            raise ValueError("soc_from_voltage: no fresh cell voltages from the bms")
        soc = soc_window_from_ocv(pack.cell_min.voltage_v, self.counter.settings) * 100.0
        self.counter.set_soc(soc, source="ocv")
        self._save()
        self.publish_state(integrate=False)
        self.ctx.log.info(
            "SoC set to %.1f %% from the lowest cell, %.3f V", soc, pack.cell_min.voltage_v
        )

    def on_set_soc(self, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace").strip()
        try:
            value = float(text)
        except ValueError as exc:
            raise ValueError(f"set_soc takes a number 0..100 (%), got {text[:20]!r}") from exc
        self.counter.set_soc(value)
        self._save()
        self.publish_state(integrate=False)

    def on_calibrate_zero(self, payload: bytes) -> None:
        if self.adc is None:
            raise ValueError("calibrate_zero: the ADS1115 is unavailable")
        if self.calibration is not None:
            raise ValueError("calibrate_zero: a calibration is already running")
        self.calibration = []
        self.calibration_topic = self.ctx.topics.action_set(self.name, "calibrate_zero")
        self.ctx.log.info(
            "zero calibration: averaging %d samples; no current may flow", self._cal_samples
        )

    @property
    def _cal_samples(self) -> int:
        return max(MIN_CALIBRATION_SAMPLES, round(4 * self.settings.sample_rate_hz))

    def _calibration_sample(self, counts: int) -> None:
        assert self.calibration is not None
        self.calibration.append(counts)
        if len(self.calibration) < self._cal_samples:
            return
        samples, self.calibration = self.calibration, None
        try:
            # an offset beyond what the hardware can have is current flowing, not an offset
            result = zero_offset(samples, max_offset_counts=self.settings.max_offset_counts)
        except CalibrationError as exc:
            self.ctx.log.error("%s", exc)
            self.ctx.ack(self.calibration_topic, b"result", ok=False, reason=str(exc))
            return
        self.offset_counts = round(result.offset_counts, 2)
        self._save_offset(self.offset_counts)
        self.current_settings = self._current_settings(self.runtime.value)
        self.averager.settings = self.current_settings
        self.ctx.log.info(
            "zero calibration: offset %.2f counts (stdev %.2f, %d samples)",
            result.offset_counts,
            result.stdev_counts,
            result.samples,
        )
        try:
            self.ctx.store.flush()
        except OSError as exc:
            self.ctx.log.error("zero offset not saved to %s: %s", self.ctx.store.path, exc)
            reason = f"offset in force but NOT saved ({self.ctx.store.path}: cannot write)"
            self.ctx.ack(self.calibration_topic, b"result", ok=False, reason=reason)
            return
        self.ctx.ack(self.calibration_topic, b"result", ok=True)

    # --- output -------------------------------------------------------------------------------

    def _totals(self) -> tuple[float, float, float, float]:
        """Ah in, Ah out, kWh in, kWh out of the counter now."""
        soc = self.counter.reading()
        return soc.ah_in, soc.ah_out, soc.wh_in / 1000.0, soc.wh_out / 1000.0

    def _write_totals(self) -> None:
        """Write the store now (at the runtime's own flush rate) and publish what is written."""
        self.next_save_s = self.ctx.now() + self.settings.store_flush_s
        try:
            self.ctx.store.flush()
        except OSError as exc:
            self.ctx.log.error("could not save the counters to %s: %s", self.ctx.store.path, exc)
            return
        self.saved_totals = self._totals()

    def publish_state(self, integrate: bool = True) -> None:
        ctx = self.ctx
        pack = self._fresh_pack()
        if integrate:
            expected = max(1, round(self.settings.sample_rate_hz * self.settings.publish_s))
            self.last_reading = self.averager.take(expected)
            self.counter.update(
                ctx.now(),
                self.last_reading.current_a,
                pack_voltage_v=pack.pack_voltage_v if pack else None,
                cell_min_v=pack.cell_min.voltage_v if pack and pack.cell_min else None,
                cell_max_v=pack.cell_max.voltage_v if pack and pack.cell_max else None,
            )
            self._save()
            if ctx.now() >= self.next_save_s:
                self._write_totals()
        reading = self.last_reading
        current = reading.current_a if reading is not None else None
        soc = self.counter.reading()
        ctx.publish(
            ctx.topics.shunt_state,
            ShuntState(
                ts=ctx.wall(),
                sensor="ok" if current is not None else "unavailable",
                current_a=current,
                power_w=current * pack.pack_voltage_v if current is not None and pack else None,
                soc_pct=None if soc.soc_pct is None else min(100.0, max(0.0, soc.soc_pct)),
                soc_source=soc.source,
                remaining_ah=soc.remaining_ah,
                remaining_wh=soc.remaining_wh,
                capacity_ah=self.counter.settings.capacity_ah,
                charge_in_ah=self.saved_totals[0],
                charge_out_ah=self.saved_totals[1],
                energy_in_kwh=self.saved_totals[2],
                energy_out_kwh=self.saved_totals[3],
                offset_counts=self.current_settings.offset_counts,
                gain=self.current_settings.gain,
            ),
            retain=True,
        )

    def discovery(self) -> tuple[str, dict[str, object]]:
        t = self.ctx.topics
        state = t.shunt_state
        comps = [
            ha.sensor(
                "current",
                "Current",
                state,
                "current_a",
                unit="A",
                device_class="current",
                precision=2,
            ),
            ha.sensor(
                "power", "Power", state, "power_w", unit="W", device_class="power", precision=0
            ),
            ha.sensor(
                "soc",
                "State of charge",
                state,
                "soc_pct",
                unit="%",
                device_class="battery",
                precision=1,
            ),
            ha.sensor(
                "remaining_ah", "Remaining charge", state, "remaining_ah", unit="Ah", precision=1
            ),
            ha.sensor(
                "remaining_wh",
                "Remaining energy",
                state,
                "remaining_wh",
                unit="Wh",
                device_class="energy_storage",
                precision=0,
            ),
            ha.sensor(
                "energy_in",
                "Energy charged",
                state,
                "energy_in_kwh",
                unit="kWh",
                device_class="energy",
                state_class="total_increasing",
                precision=3,
            ),
            ha.sensor(
                "energy_out",
                "Energy discharged",
                state,
                "energy_out_kwh",
                unit="kWh",
                device_class="energy",
                state_class="total_increasing",
                precision=3,
            ),
            ha.sensor(
                "charge_in",
                "Charge in",
                state,
                "charge_in_ah",
                unit="Ah",
                state_class="total_increasing",
                entity_category="diagnostic",
                precision=2,
            ),
            ha.sensor(
                "charge_out",
                "Charge out",
                state,
                "charge_out_ah",
                unit="Ah",
                state_class="total_increasing",
                entity_category="diagnostic",
                precision=2,
            ),
            ha.text_sensor(
                "soc_source",
                "SoC source",
                state,
                # "unknown" would read like Home Assistant's own unknown state
                "{{ 'not estimated yet' if value_json.soc_source == 'unknown'"
                " else value_json.soc_source }}",
                entity_category="diagnostic",
            ),
            ha.text_sensor(
                "sensor", "Sensor", state, "{{ value_json.sensor }}", entity_category="diagnostic"
            ),
            ha.sensor(
                "zero_offset",
                "Zero offset (counts)",
                state,
                "offset_counts",
                entity_category="diagnostic",
                precision=2,
            ),
            ha.sensor(
                "current_gain",
                "Current gain (start-up)",
                state,
                "gain",
                entity_category="diagnostic",
                precision=3,
            ),
            *ha.settings_components(ShuntRuntime, t, self.name),
            ha.button("soc_full", "Set SoC to 100 %", t.action_set(self.name, "soc_full")),
            ha.button(
                "calibrate_zero",
                "Calibrate zero (no current!)",
                t.action_set(self.name, "calibrate_zero"),
            ),
        ]
        return ha.device_discovery(
            ha.service_device(self.name, "ADS1115 + 100 A / 75 mV shunt"),
            comps,
            t.status(self.name),
        )

    def stop(self) -> None:
        self._save()
        if self.adc is not None:
            try:
                self.adc.close()
            except Ads1115Error as exc:
                self.ctx.log.warning("%s", exc)
            self.adc = None


SERVICE = Shunt

if __name__ == "__main__":
    sys.exit(run_service(Shunt, load_settings(ShuntSettings)))
