"""The controller service: MQTT in, `core.Controller`, MQTT out.

Inputs: the grid meter (`meter_preset` and the explicit `meter_*` settings choose topic, JSON
path, sign and unit, docs/meter.md; default `meterbox/grid`, a plain integer in W, + import),
bms limits, shunt SoC, charger and inverter states, the inverter lines and units (learned from
the inverter service's retained `inverter/units`: until they are known nothing runs), and the
original system's `meterbox/chargeTarget`. Outputs: one demand per inverter line and the charger
command on every control step (every meter value, at least every `control_period_s`, so the
device services never see a stale command), the controller state with loop quality, runtime
settings and Home Assistant discovery. All decisions are in the pure domain (services/controller/README.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import Field, model_validator

from gridzero import ha
from gridzero.contract import (
    LEGACY_CHARGE_TARGET_TOPIC,
    ChargeCommand,
    ChargerState,
    ControllerState,
    InverterCommand,
    InverterState,
    InverterUnits,
    PayloadError,
    ShuntState,
    parse_meter,
    parse_payload,
)
from gridzero.contract import BmsLimits as BmsLimitsPayload
from gridzero.errors import SettingsError
from gridzero.meter import MeterEvent, MeterSettings, MeterWatch, meter_env_names
from gridzero.runtime.freshness import Freshness, FreshValue, Sequencer, Stamped, is_fresh
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import RETAINED_REFUSED, Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_controller.charge_target import ChargeTargetHold, overlay
from gridzero_controller.core import (
    ChargerReading,
    Controller,
    ControllerOutput,
    FeedingTracker,
    InverterReading,
    Observation,
)
from gridzero_controller.dispatch import InverterUnit, Side, unit_holdoff_s
from gridzero_controller.law import LawReason, MeterSample
from gridzero_controller.prices import Price, fresh_price, parse_price
from gridzero_controller.schedule import Rule, decide, local_time, time_zone
from gridzero_controller.settings import (
    ControllerRuntime,
    ControllerSettings,
    update_settings,
)


class ControllerServiceSettings(ServiceSettings, MeterSettings):
    """Start-up settings (environment `GRIDZERO_...` / YAML).

    The meter settings (`MeterSettings`) come from the settings file only: the broker's ACL
    is generated from that file, so a topic set in the environment could be denied unseen."""

    legacy_charge_target: bool = Field(True, description="accept meterbox/chargeTarget")
    control_period_s: float = Field(0.5, gt=0.05, le=5.0, description="control step without meter")
    inverter_dc_margin_v: float = Field(
        0.5, ge=0, le=20, description="derate a line over this span above its dc_min_v"
    )
    inverter_off_holdoff_s: float | None = Field(
        None,
        ge=1,
        le=120,
        description="after its demand went to 0 a line counts as feeding this long (the "
        "interlock); empty: a SoyoSource's ramp-down from the line's max power (900 W: 7.1 s)",
    )
    time_zone: str = Field(
        "UTC",
        description="IANA time zone of the schedule windows (e.g. Europe/Berlin); windows are "
        "local wall-clock times, daylight-saving changes included",
    )
    price_input: bool = Field(False, description="read the import price from <base>/price")
    price_stale_s: float = Field(
        900.0, ge=60, le=7200, description="a price older than this is no price (stops charging)"
    )
    controller: ControllerSettings = Field(
        default_factory=ControllerSettings,
        description="every tuning setting (services/controller/README.md)",
    )

    @model_validator(mode="after")
    def _known_zone(self) -> ControllerServiceSettings:
        time_zone(self.time_zone)
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_units_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "units" in data:
            raise ValueError(
                "units is no longer a controller setting: the controller learns the inverter "
                "units from the inverter service (<base>/inverter/units); configure them in the "
                "inverter's settings only (services/inverter/README.md)"
            )
        return data

    @model_validator(mode="after")
    def _meter_from_the_file(self) -> ControllerServiceSettings:
        names = meter_env_names(dict(os.environ))
        if names:
            raise ValueError(
                f"{', '.join(names)}: the meter settings are read from the controller's settings "
                "file only (YAML `meter_preset:`, `meter_topic:` ...), because the broker's ACL "
                "is generated from that file; move them there (docs/meter.md)"
            )
        return self


NO_UNITS = (
    "no inverter units known yet: waiting for the inverter service's retained "
    "<base>/inverter/units; nothing charges or discharges until then"
)


def runtime_limit(startup: ControllerSettings) -> Callable[[ControllerRuntime], str]:
    """Runtime values may tighten the start-up power caps, SoC window and charge-target
    timeout, never widen them."""

    def why(value: ControllerRuntime) -> str:
        problems = [
            f"{name} {getattr(value, name):g} above its start-up {getattr(startup, name):g}"
            for name in (
                "max_charge_w",
                "max_discharge_w",
                "soc_max_pct",
                "charge_target_timeout_s",
            )
            if getattr(value, name) > getattr(startup, name)
        ]
        if value.soc_min_pct < startup.soc_min_pct:
            problems.append(
                f"soc_min_pct {value.soc_min_pct:g} below its start-up {startup.soc_min_pct:g}"
            )
        if problems:
            return "; ".join(problems) + " (start-up settings may only be tightened at runtime)"
        return ""

    return why


def runtime_from(settings: ControllerSettings) -> ControllerRuntime:
    """The runtime part of full settings (start-up defaults for the runtime entities)."""
    return ControllerRuntime.model_validate(
        {name: getattr(settings, name) for name in ControllerRuntime.model_fields}
    )


def units_from(
    described: InverterUnits, settings: ControllerServiceSettings
) -> tuple[InverterUnit, ...]:
    """The controller's view of each line: what it feeds at most and where its DC window is."""
    out: list[InverterUnit] = []
    for line in described.lines:
        dc_min_v, dc_max_v = line.dc_window_v()
        out.append(
            InverterUnit(
                line.id,
                float(line.capacity_w()),
                dc_min_v,
                dc_max_v,
                settings.inverter_dc_margin_v,
                settings.inverter_off_holdoff_s,
            )
        )
    return tuple(out)


def _state_name(out: ControllerOutput) -> str:
    if not out.limits_ok:
        return "stale_bms"
    if out.law.reason in (LawReason.METER_STALE, LawReason.NO_METER):
        return "stale_meter"
    return {
        Side.IDLE: "idle",
        Side.CHARGE: "charging",
        Side.DISCHARGE: "discharging",
        Side.TO_CHARGE: "switching",
        Side.TO_DISCHARGE: "switching",
    }[out.commands.side]


# The shunt publishes every 1 s by default and every 10 s at the most (its `publish_s`):
# three of its slowest periods without one and its SoC is unknown here.
SOC_STALE_S = 30.0

N = TypeVar("N", ChargeCommand, InverterCommand)
P = TypeVar("P", bound=Stamped)


class ControllerService(Service[ControllerServiceSettings]):
    """Closes the grid-zero loop over MQTT."""

    name = "controller"
    settings_class = ControllerServiceSettings
    commands_seq = Sequencer()  # one numbering per process: the devices refuse repeats

    def _numbered(self, model: type[N], **fields: Any) -> N:
        return model(boot=self.commands_seq.boot, seq=self.commands_seq.next(), **fields)

    def start(self) -> None:
        ctx = self.ctx
        s = self.settings
        # learned from the inverter service (on_units); until then nothing runs
        self.units: tuple[InverterUnit, ...] = ()
        self.line_of: dict[str, str] = {}  # unit -> its line
        self.single: set[str] = set()  # lines of one inverter: their status is their output
        self.controller: Controller | None = None
        self.runtime = ctx.runtime_settings(
            runtime_from(s.controller), self.on_runtime_change, limit=runtime_limit(s.controller)
        )
        # meterbox/chargeTarget: in memory only, so a restart never brings one back
        self.charge_target = ChargeTargetHold()
        self.meter: MeterSample | None = None
        self.meter_source = s.meter_source()
        self.meter_watch = MeterWatch(self.meter_source.topic, ctx.now())
        ctx.log.info(
            "meter: %s (preset %s, json path %r, sign %+d, unit %s)",
            self.meter_source.topic,
            s.meter_preset.value,
            self.meter_source.json_path,
            self.meter_source.sign,
            self.meter_source.unit,
        )
        self.grid_w: float | None = None
        self.limits: FreshValue[BmsLimitsPayload] | None = None
        self.pack_voltage_v: float | None = None
        self.soc_pct: float | None = None
        self.soc_at_s: float | None = None  # arrival here of the last shunt state
        self.inverters: dict[str, InverterReading] = {}  # by line
        self.feeding: dict[str, FeedingTracker] = {}  # by line
        self.charger: ChargerReading | None = None
        # No other host's clock decides freshness; retained states and limits are never fresh.
        self.gates = {
            "limits": Freshness("bms limits"),
            "charger": Freshness("charger state"),
            "shunt": Freshness("shunt state"),
        }
        self.last_step_s = -1e9
        self.price_now: float | None = None
        t = ctx.topics
        ctx.subscribe(self.meter_source.topic, self.on_meter)
        ctx.subscribe(t.bms_limits, self.on_limits)
        ctx.subscribe(t.shunt_state, self.on_shunt)
        ctx.subscribe(t.charger_state, self.on_charger)
        ctx.subscribe(t.inverter_units, self.on_units)
        ctx.subscribe(t.inverter_state("+"), self.on_inverter)
        if s.legacy_charge_target:
            ctx.subscribe(LEGACY_CHARGE_TARGET_TOPIC, self.on_charge_target)
        self.zone = time_zone(s.time_zone)
        self.price: FreshValue[Price] | None = None
        if s.price_input:
            ctx.subscribe(t.price, self.on_price)
        ctx.every(s.control_period_s, self.tick, name="control")
        ctx.discovery(self.discovery)
        # the hub device every service device links to in Home Assistant
        ctx.discovery(lambda: ha.hub_discovery(ctx.topics))

    # ------------------------------------------------------------------ settings

    def _effective(self, runtime: ControllerRuntime) -> ControllerSettings:
        """The runtime settings, with an active charge target laid over them."""
        full = update_settings(self.settings.controller, runtime.model_dump())
        return overlay(full, self.charge_target.current(self.ctx.now()))

    def on_runtime_change(self, runtime: ControllerRuntime) -> None:
        """A validated runtime change: the domain takes it at the next step."""
        if self.controller is not None:
            self.controller.update_settings(self._effective(runtime))

    def settings_now(self) -> ControllerSettings:
        if self.controller is not None:
            return self.controller.settings
        return self._effective(self.runtime.value)

    def on_charge_target(self, msg: Message) -> None:
        """`meterbox/chargeTarget` (`charge_target.py`): > 0 W charge at that power, ignoring
        the meter, for `charge_target_timeout_s` after the last refresh; <= 0 W back to the
        loop and discharging enabled again.

        A retained one is refused: the broker would replay it after every restart, so an old
        "charge at 3 kW" would come back on its own."""
        if msg.retain:
            self.ctx.ack(msg.topic, msg.payload, ok=False, reason=RETAINED_REFUSED)
            self.ctx.log.warning("%s refused: retained message", msg.topic)
            return
        now = self.ctx.now()
        timeout_s = self.runtime.value.charge_target_timeout_s
        try:
            watts = parse_meter(msg.payload, topic=msg.topic)
            trial = ChargeTargetHold()
            trial.receive(watts, now, timeout_s)
            try:  # checked before anything changes: a bad value leaves the old target
                overlay(self.settings_now(), trial.current(now))
            except SettingsError as exc:
                # e.g. above the constant-power range: refused like any bad command
                raise ValueError(f"{msg.topic}: {watts:g} W refused: {exc}") from exc
        except ValueError as exc:
            self.ctx.ack(msg.topic, msg.payload, ok=False, reason=str(exc))
            raise
        was = self.charge_target.current(now)
        if self.charge_target.receive(watts, now, timeout_s):
            if was is not None:
                self.ctx.log.info(
                    "%s %g W: charge target ended, back to the loop", msg.topic, watts
                )
            if not self.runtime.value.discharge_enabled:
                # the original's `invertOverride = 1` (housebatt.ino line 229)
                self.runtime.apply(
                    self.runtime.value.model_copy(update={"discharge_enabled": True}),
                    changed="discharge_enabled",
                )
        elif was is None:
            self.ctx.log.info(
                "%s: charging at %g W, meter ignored, for %g s unless refreshed",
                msg.topic,
                watts,
                timeout_s,
            )
        if self.controller is not None:  # else it takes effect once the units are known
            self.controller.update_settings(self._effective(self.runtime.value))
        self.ctx.ack(msg.topic, msg.payload, ok=True)

    def on_price(self, msg: Message) -> None:
        """The import price (prices.py). A retained one is history, never fresh: refused."""
        if msg.retain:
            raise ValueError(
                f"{msg.topic}: retained price refused (a retained price is never fresh)"
            )
        self.price = FreshValue(parse_price(msg.payload), self.ctx.now())

    def rule_now(self, now: float, settings: ControllerSettings) -> tuple[Rule, float | None]:
        """The window or price rule in force (schedule.decide) and the fresh import price."""
        price = fresh_price(self.price, now, self.settings.price_stale_s)
        value = None if price is None else price.import_price
        local = local_time(self.ctx.wall(), self.zone)
        return decide(settings.windows(), local, value, settings.price_rules()), value

    def _take(self, gate: str, msg: Message, payload: P) -> FreshValue[P]:
        """A fresh message with its arrival time; NotFreshError (logged, refused) otherwise."""
        return self.ctx.take(self.gates[gate], msg, payload)

    # ------------------------------------------------------------------ inputs

    def on_meter(self, msg: Message) -> None:
        """A grid meter value: step the loop at once.

        A message that is no reading changes nothing (the previous reading stays until it
        goes stale) and is a `meter_unparseable` fault until the next good one, logged once."""
        now = self.ctx.now()
        try:
            grid = self.meter_source.parse(msg.payload)
        except PayloadError as exc:
            self.ctx.rejected_inputs += 1
            self._log_meter(self.meter_watch.unparseable(str(exc)))
            return
        self._log_meter(self.meter_watch.reading(now))
        self.meter = MeterSample(grid, now)
        self.grid_w = grid
        self.step(now)

    def _log_meter(self, events: list[MeterEvent]) -> None:
        for event in events:
            if event.level == "warning":
                self.ctx.log.warning("%s", event.text)
            else:
                self.ctx.log.info("%s", event.text)

    def on_limits(self, msg: Message) -> None:
        """bms limits; a denied side counts as a zero limit, any alarm as an alarm."""
        p = parse_payload(BmsLimitsPayload, msg.topic, msg.payload)
        self.limits = self._take("limits", msg, p)
        self.pack_voltage_v = p.pack_voltage_v if p.pack_voltage_v > 0 else None

    def on_shunt(self, msg: Message) -> None:
        """State of charge from the shunt (None while its sensor is unavailable)."""
        p = parse_payload(ShuntState, msg.topic, msg.payload)
        self.soc_at_s = self._take("shunt", msg, p).at_s
        self.soc_pct = p.soc_pct if p.sensor == "ok" else None

    def soc_now(self, now: float) -> float | None:
        """The shunt's SoC while it keeps arriving: a silent shunt's last SoC must not keep a
        grid charge going toward its target or discharging above the reserve."""
        if self.soc_at_s is None or not is_fresh(self.soc_at_s, now, SOC_STALE_S):
            return None
        return self.soc_pct

    def on_charger(self, msg: Message) -> None:
        """The rectifier's measured output; no reading while its link is not ok."""
        p = parse_payload(ChargerState, msg.topic, msg.payload)
        arrived_s = self._take("charger", msg, p).at_s
        if p.link != "ok" or p.output_current_a is None:
            self.charger = None
            return
        current = p.output_current_a if p.dc_on else 0.0
        voltage = p.output_voltage_v or self.pack_voltage_v or 0.0
        self.charger = ChargerReading(voltage, current, arrived_s)

    def on_units(self, msg: Message) -> None:
        """The inverter lines and units: the controller splits its demand over these lines.

        A retained message is fine: it describes hardware, it commands nothing. It is
        validated (counts, ratings up to a GTN's 2000 W, DC windows); a bad one raises and
        changes nothing."""
        described = parse_payload(InverterUnits, msg.topic, msg.payload)
        units = units_from(described, self.settings)
        self.line_of = {u.id: line.id for line in described.lines for u in line.units}
        self.single = {
            line.id for line in described.lines if sum(u.parallel for u in line.units) == 1
        }
        if units == self.units:
            return
        self.ctx.log.info(
            "inverter lines: %s",
            ", ".join(f"{u.name} {u.max_w:g} W {u.dc_min_v:g}..{u.dc_max_v:g} V" for u in units),
        )
        self.units = units
        for unit in units:
            self.feeding.setdefault(unit.name, FeedingTracker())
            self.gates.setdefault(f"inverter/{unit.name}", Freshness(f"inverter {unit.name} state"))
        if self.controller is None:
            self.controller = Controller(self._effective(self.runtime.value), units)
        else:
            self.controller.set_units(units)

    def on_inverter(self, msg: Message) -> None:
        """One unit's state, for its line: measured output from its DC side, if it reports one.

        A 0 W demand (or no frames) is not 0 W output: the unit ramps down over seconds, so
        it counts as feeding for its hold-off after that (`core.FeedingTracker`)."""
        p = parse_payload(InverterState, msg.topic, msg.payload)
        line_id = self.line_of.get(p.unit)
        unit = next((u for u in self.units if u.name == line_id), None)
        if unit is None or msg.topic != self.ctx.topics.inverter_state(p.unit):
            raise ValueError(f"{msg.topic}: state of unit {p.unit!r}, not a known unit here")
        arrived_s = self._take(f"inverter/{unit.name}", msg, p).at_s
        settings = self.settings_now()
        output: float | None = None
        volts, amps = p.battery_voltage_v, p.battery_current_a
        if volts is not None and amps is not None and p.link == "ok" and unit.name in self.single:
            output = max(0.0, volts * amps) * settings.inverter_efficiency
        self.inverters[unit.name] = self.feeding[unit.name].update(
            arrived_s,
            demand_w=p.demand_w,
            sending=p.sending,
            output_w=output,
            holdoff_s=unit_holdoff_s(unit, settings),
            dc_voltage_v=volts if output is not None else None,
        )

    # ------------------------------------------------------------------ loop

    def tick(self) -> None:
        """Step even without meter values, so stale data is acted on."""
        now = self.ctx.now()
        if now - self.last_step_s >= 0.8 * self.settings.control_period_s:
            self.step(now)

    def step(self, now: float) -> None:
        """One control step: observation → commands → MQTT."""
        self.last_step_s = now
        self._lapse_charge_target(now)
        if self.controller is None:
            self._log_meter(self.meter_watch.check(now, self.settings_now().meter_stale_s))
            self.publish_waiting(now)
            return
        rule, self.price_now = self.rule_now(now, self.controller.settings)
        obs = Observation(
            rule=rule,
            now_s=now,
            meter=self.meter,
            limits=self.limits,
            pack_voltage_v=self.pack_voltage_v,
            soc_pct=self.soc_now(now),
            inverters=tuple(self.inverters.get(u.name) for u in self.units),
            charger=self.charger,
        )
        out = self.controller.step(obs)
        self._log_meter(self.meter_watch.check(now, self.controller.settings.meter_stale_s))
        self.publish(out, now)

    def _lapse_charge_target(self, now: float) -> None:
        """A target not refreshed in time ends here: back to the runtime settings."""
        held = self.charge_target.target
        if held is not None and self.charge_target.current(now) is None:
            self.ctx.log.warning(
                "%s: %g W not refreshed for %g s: lapsed, back to the loop",
                LEGACY_CHARGE_TARGET_TOPIC,
                held.power_w,
                self.runtime.value.charge_target_timeout_s,
            )
            if self.controller is not None:
                self.controller.update_settings(self._effective(self.runtime.value))

    def _charge_target_fields(
        self, now: float, ts: float
    ) -> tuple[float | None, float | None, float | None]:
        """The state's view of the charge target: its power, time left and lapse (Unix) time."""
        target = self.charge_target.current(now)
        if target is None:
            return None, None, None
        left_s = target.left_s(now)
        return target.power_w, round(left_s, 1), round(ts + left_s, 1)

    def publish_waiting(self, now: float) -> None:
        """No units known: the charger off (the interlock cannot see the inverters), and why."""
        ctx = self.ctx
        ts = ctx.wall()
        ctx.publish(ctx.topics.charger_set, self._numbered(ChargeCommand, ts=ts, enable=False))
        s = self.settings_now()
        target_w, target_left_s, target_until_ts = self._charge_target_fields(now, ts)
        state = ControllerState(
            ts=ts,
            mode=s.mode,
            grid_w=self.grid_w,
            target_w=s.target_grid_w,
            setpoint_w=0.0,
            charge_w=0.0,
            discharge_w=0.0,
            state="no_units",
            meter_age_s=None,
            grid_error_mean_w=0.0,
            grid_error_rms_w=0.0,
            reversals_per_min=0.0,
            charge_target_w=target_w,
            charge_target_left_s=target_left_s,
            charge_target_until_ts=target_until_ts,
            faults=[*self.meter_watch.faults(now, s.meter_stale_s), NO_UNITS],
        )
        ctx.publish(ctx.topics.controller_state, state, retain=True)

    def publish(self, out: ControllerOutput, now: float) -> None:
        """Commands to every line and the charger, then the state."""
        ctx = self.ctx
        ts = ctx.wall()
        assert self.controller is not None
        for unit, power in zip(self.units, out.commands.inverter_w, strict=True):
            ctx.publish(
                ctx.topics.inverter_set(unit.name),
                self._numbered(InverterCommand, ts=ts, power_w=max(0.0, power)),
            )
        c = out.commands.charger
        if c.on:
            charge = self._numbered(
                ChargeCommand, ts=ts, current_a=c.current_a, voltage_v=c.voltage_v, enable=True
            )
        else:
            charge = self._numbered(ChargeCommand, ts=ts, enable=False)
        ctx.publish(ctx.topics.charger_set, charge)
        q = out.quality
        target_w, target_left_s, target_until_ts = self._charge_target_fields(now, ts)
        v = self.pack_voltage_v or 0.0
        charge_w = c.current_a * v / self.controller.settings.charger_efficiency if c.on else 0.0
        state = ControllerState(
            ts=ts,
            mode=self.controller.settings.mode,
            grid_w=self.grid_w,
            target_w=self.controller.settings.target_grid_w,
            # the law counts discharge as positive (the house's view, like grid_w); the
            # contract's battery sign is + charging (contract.BATTERY_SIGN)
            setpoint_w=0.0 - out.setpoint_w,
            charge_w=charge_w,
            discharge_w=out.commands.discharge_w,
            state=_state_name(out),
            meter_age_s=q.meter_age_s,
            grid_error_mean_w=q.mean_error_w,
            grid_error_rms_w=q.rms_error_w,
            reversals_per_min=q.reversals_per_min,
            charge_target_w=target_w,
            charge_target_left_s=target_left_s,
            charge_target_until_ts=target_until_ts,
            faults=[
                *self.meter_watch.faults(now, self.controller.settings.meter_stale_s),
                *(f.message(now) for f in out.faults),
            ],
            rule=out.applied.rule.source,
            rule_why=out.applied.why,
            price=self.price_now,
        )
        ctx.publish(ctx.topics.controller_state, state, retain=True)

    def discovery(self) -> tuple[str, dict[str, object]]:
        """Home Assistant device: loop sensors and runtime settings."""
        t = self.ctx.topics
        st = t.controller_state
        comps = [
            ha.sensor("grid", "Grid power", st, "grid_w", unit="W", device_class="power"),
            ha.sensor(
                "setpoint", "Battery set-point", st, "setpoint_w", unit="W", device_class="power"
            ),
            ha.sensor("charge", "Charge power", st, "charge_w", unit="W", device_class="power"),
            ha.sensor(
                "discharge", "Discharge power", st, "discharge_w", unit="W", device_class="power"
            ),
            ha.sensor("state", "State", st, "state", state_class=None),
            ha.sensor("rule", "Rule", st, "rule", state_class=None),
            ha.text_sensor("rule_why", "Rule reason", st, "{{ value_json.rule_why[:255] }}"),
            ha.sensor(
                "charge_target",
                "Charge target",
                st,
                "charge_target_w",
                unit="W",
                device_class="power",
            ),
            # a state may hold 255 characters; the full list is in the state payload
            ha.text_sensor(
                "faults", "Faults", st, "{{ (value_json.faults | join('; ') or 'none')[:255] }}"
            ),
            ha.sensor(
                "rms_error",
                "Grid error RMS",
                st,
                "grid_error_rms_w",
                unit="W",
                device_class="power",
                entity_category="diagnostic",
            ),
            ha.sensor(
                "reversals",
                "Set-point reversals",
                st,
                "reversals_per_min",
                unit="1/min",
                entity_category="diagnostic",
            ),
            ha.sensor(
                "meter_age",
                "Meter age",
                st,
                "meter_age_s",
                unit="s",
                device_class="duration",
                entity_category="diagnostic",
            ),
            *ha.settings_components(ControllerRuntime, t, self.name),
        ]
        return ha.device_discovery(
            ha.service_device(self.name, "grid-zero controller"), comps, t.status(self.name)
        )

    def stop(self) -> None:
        """Safe state: every inverter 0 W, charger disabled (the devices stop on their own too)."""
        ctx = self.ctx
        ts = ctx.wall()
        for unit in self.units:
            ctx.publish(
                ctx.topics.inverter_set(unit.name),
                self._numbered(InverterCommand, ts=ts, power_w=0.0),
            )
        ctx.publish(ctx.topics.charger_set, self._numbered(ChargeCommand, ts=ts, enable=False))


SERVICE = ControllerService

if __name__ == "__main__":
    sys.exit(run_service(ControllerService, load_settings(ControllerServiceSettings)))
