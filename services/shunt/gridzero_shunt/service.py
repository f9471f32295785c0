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
the ``calibrate_zero`` action only, bounded by ``max_offset_uv`` (services/shunt/README.md). Any I2C
failure leaves the sample out; too few good samples make the sensor ``unavailable`` (no
current, counting pauses); a saturated ADC publishes full scale in its direction (the current
is at least that, so the over-current trips fire) and counting pauses. A missing device is
retried every ``retry_s``. The counter state is persisted (debounced by the
runtime's store, ``store_flush_s``) and restored at start. With no stored SoC, a first
estimate comes from the fresh pack voltage under load within seconds (``estimate.py``).

The parts: ``settings.py`` (start-up and runtime settings), ``adc_loop.py`` (open, retry,
read), ``calibration.py`` (zero offset: state file and ``calibrate_zero``),
``persistence.py`` (the counter in the state file), ``discovery.py`` (Home Assistant);
this file wires them to the bus.
"""

from __future__ import annotations

import sys

from gridzero.contract import PackState, ShuntState, SimTruth, parse_payload
from gridzero.runtime.freshness import Freshness, FreshValue
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import load_settings
from gridzero_shunt.adc_loop import AdcLoop
from gridzero_shunt.ads1115_model import Ads1115Model
from gridzero_shunt.calibration import CalibrationRun, ZeroOffset
from gridzero_shunt.current import (
    CalibrationError,
    CurrentAverager,
    CurrentReading,
    CurrentSettings,
)
from gridzero_shunt.discovery import discovery
from gridzero_shunt.persistence import CounterStore
from gridzero_shunt.settings import (
    FORMER_RUNTIME_SETTINGS,
    RUNTIME_SETTINGS_KEY,
    STORE_KEY,
    ZERO_OFFSET_KEY,
    ShuntRuntime,
    ShuntSettings,
)
from gridzero_shunt.soc import soc_window_from_ocv

__all__ = [
    "FORMER_RUNTIME_SETTINGS",
    "RUNTIME_SETTINGS_KEY",
    "SERVICE",
    "STORE_KEY",
    "ZERO_OFFSET_KEY",
    "Shunt",
    "ShuntRuntime",
    "ShuntSettings",
]


class Shunt(Service[ShuntSettings]):
    """Battery current, state of charge and energy from an ADS1115 on a shunt."""

    name = "shunt"
    settings_class = ShuntSettings

    def start(self) -> None:
        ctx, s = self.ctx, self.settings
        self.adc_loop = AdcLoop(s, ctx.log, ctx.now)
        self.zero = ZeroOffset(s, ctx.store, ctx.log)
        self.offset_counts = self.zero.restore()
        self.calibration = CalibrationRun(s)
        self.runtime = ctx.runtime_settings(
            ShuntRuntime(capacity_ah=s.capacity_ah), self.on_runtime_change
        )
        self.current_settings = self._current_settings(self.runtime.value)
        self.averager = CurrentAverager(self.current_settings)
        self.counters = CounterStore(ctx.store, ctx.log, s.store_flush_s)
        self.counter = self.counters.restore(s.soc(self.runtime.value.capacity_ah))
        self.last_reading: CurrentReading | None = None
        self._saturated = False
        self.pack: FreshValue[PackState] | None = None
        self.pack_gate = Freshness("bms pack")
        if self.model is not None:
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
        ctx.discovery(lambda: discovery(ctx.topics, self.name))

    @property
    def model(self) -> Ads1115Model | None:
        """The ADS1115 model (``i2c_bus: sim``), else None."""
        return self.adc_loop.model

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
        self.counters.save(self.counter)

    # --- device -----------------------------------------------------------------------------

    def sample(self) -> None:
        counts = self.adc_loop.read()
        self.averager.add(counts)
        if counts is not None and self.calibration.running:
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
        discharging; the automatic estimates correct for the current (or wait for rest),
        this one is the operator's call.
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
        if self.adc_loop.adc is None:
            raise ValueError("calibrate_zero: the ADS1115 is unavailable")
        self.calibration.start(self.ctx.topics.action_set(self.name, "calibrate_zero"))
        self.ctx.log.info(
            "zero calibration: averaging %d samples; no current may flow", self.calibration.wanted
        )

    def _calibration_sample(self, counts: int) -> None:
        topic = self.calibration.topic
        result = self.calibration.add(counts)
        if result is None:
            return
        if isinstance(result, CalibrationError):
            self.ctx.log.error("%s", result)
            self.ctx.ack(topic, b"result", ok=False, reason=str(result))
            return
        self.offset_counts = round(result.offset_counts, 2)
        self.zero.save(self.offset_counts)
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
            self.ctx.ack(topic, b"result", ok=False, reason=reason)
            return
        self.ctx.ack(topic, b"result", ok=True)

    # --- output -------------------------------------------------------------------------------

    def _integrate(self, pack: PackState | None) -> None:
        """One averaging block into the counter (with the pack data if fresh), then saved."""
        ctx, s = self.ctx, self.settings
        expected = max(1, round(s.sample_rate_hz * s.publish_s))
        self.last_reading = self.averager.take(expected)
        volts = pack.pack_voltage_v if pack and pack.pack_voltage_v > 0 else None
        self.counter.update(
            ctx.now(),
            self.last_reading.current_a,
            pack_voltage_v=volts,
            cell_min_v=pack.cell_min.voltage_v if pack and pack.cell_min else None,
            cell_max_v=pack.cell_max.voltage_v if pack and pack.cell_max else None,
            pack_voltage_at_s=self.pack.at_s if self.pack is not None else -1e9,
        )
        self._save()
        self.counters.write_if_due(self.counter, ctx.now())

    def publish_state(self, integrate: bool = True) -> None:
        ctx = self.ctx
        pack = self._fresh_pack()
        if integrate:
            self._integrate(pack)
        reading = self.last_reading
        current = reading.published_a if reading is not None else None
        if integrate:
            self._log_saturation(reading)
        soc = self.counter.reading()
        saved = self.counters.saved
        ctx.publish(
            ctx.topics.shunt_state,
            ShuntState(
                ts=ctx.wall(),
                sensor="ok" if current is not None else "unavailable",
                current_a=current,
                power_w=current * pack.pack_voltage_v if current is not None and pack else None,
                soc_pct=None if soc.soc_pct is None else min(100.0, max(0.0, soc.soc_pct)),
                soc_source=soc.source,
                soc_uncertain_pct=soc.uncertain_pct,
                remaining_ah=soc.remaining_ah,
                remaining_wh=soc.remaining_wh,
                capacity_ah=self.counter.settings.capacity_ah,
                charge_in_ah=saved[0],
                charge_out_ah=saved[1],
                energy_in_kwh=saved[2],
                energy_out_kwh=saved[3],
                offset_counts=self.current_settings.offset_counts,
                gain=self.current_settings.gain,
            ),
            retain=True,
        )

    def _log_saturation(self, reading: CurrentReading | None) -> None:
        """Once when the ADC starts clipping: the published current is then a bound."""
        bound = None if reading is None else reading.at_least_a
        if bound is not None and not self._saturated:
            self.ctx.log.error(
                "%s: shunt current beyond the ADC's full scale of +-%.1f A (+-%g V); published "
                "as %.1f A (at least that) so that the over-current trips fire; not counted "
                "in the SoC",
                self.adc_loop.adc.name if self.adc_loop.adc else "ADS1115",
                self.current_settings.full_scale_a,
                self.settings.fsr_v,
                bound,
            )
        self._saturated = bound is not None

    def stop(self) -> None:
        self._save()
        self.adc_loop.close()


SERVICE = Shunt

if __name__ == "__main__":
    sys.exit(run_service(Shunt, load_settings(ShuntSettings)))
