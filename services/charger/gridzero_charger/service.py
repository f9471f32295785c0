"""The charger service: the R48 rectifier on CAN, the controller and the bms on MQTT.

Thin shell: python-can in, `codec` and `domain` in the middle, MQTT out. At start-up it
turns the DC output off and writes the stored fallback (at most cells x 4.0 V, the least
current), so the rectifier is safe if this process dies, and keeps DC off until the rectifier
has acknowledged that write. Then it polls readings, clamps every controller command to the
bms limits and the pack's ceiling (`domain.decide`), trips on a measured over-current
(rectifier report or shunt; latched until a person resets it), refreshes the online
set-points well inside their ~30 s lifetime and publishes what it decided and why.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Literal

import can
from pydantic import BaseModel, Field, model_validator

from gridzero import chemistry, ha
from gridzero.codec import CodecError
from gridzero.contract import (
    Alarm,
    ChargerState,
    PackState,
    PayloadError,
    ShuntState,
    parse_payload,
)
from gridzero.contract import BmsLimits as BmsLimitsPayload
from gridzero.contract import ChargeCommand as ChargeCommandPayload
from gridzero.runtime import canbus
from gridzero.runtime.freshness import Freshness, FreshValue, LimitHistory, NotFreshError
from gridzero.runtime.link import DeviceLink
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_charger import codec, domain
from gridzero_charger.codec import CanFrame, Control
from gridzero_charger.domain import ChargerSettings, Decision

LINK = "r48"


class CanSettings(canbus.CanSettings):
    """Which CAN interface reaches the rectifier."""

    bitrate: int = canbus.bitrate_field(125_000, "R48: 125 kbit/s")


_DEFAULTS = ChargerSettings()


def _bounded(name: str, description: str, default: Any = ..., **extra: Any) -> Any:
    """A setting with the domain's default and range (`domain.SETTING_BOUNDS`), which
    `ChargerSettings` checks again: declared once, there."""
    value = getattr(_DEFAULTS, name) if default is ... else default
    return domain.SETTING_BOUNDS[name].field(value, description, **extra)


class ChargerServiceSettings(ServiceSettings):
    """Start-up settings of the charger service (hardware and chemistry limits among them:
    never writable over MQTT, see services/charger/README.md "Two kinds of settings")."""

    can: CanSettings = Field(default_factory=CanSettings)
    poll_period_s: float = Field(default=1.0, ge=0.2, le=10, description="readings poll")
    control_period_s: float = Field(default=0.5, ge=0.1, le=2, description="safety re-check")
    state_period_s: float = Field(default=1.0, ge=0.2, le=10, description="state publish")
    min_current_a: float = _bounded("min_current_a", "rectifier minimum")
    bms_stale_s: float = _bounded("bms_stale_s", "bms limits max age")
    command_stale_s: float = _bounded("command_stale_s", "command max age")
    refresh_period_s: float = _bounded("refresh_period_s", "online refresh")
    link_timeout_s: float = _bounded("link_timeout_s", "no reply -> lost")
    bus_retry_s: float = Field(
        default=5.0, ge=0.5, le=300, description="re-open a CAN bus that failed"
    )
    # --- hardware and chemistry limits
    rectifier_model: Literal["R48-3000e3", "R48-2000e3"] = Field(
        default="R48-3000e3",
        description="sets the current the 1.21 fraction stands for and the power rating",
    )
    fraction_at_rated: float = _bounded(
        "fraction_at_rated",
        "fraction meaning the model's rated current: 1.21 (most sources) or 1.00",
    )
    max_charge_power_w: float | None = _bounded(
        "max_charge_power_w", "hardware power cap; default the model's rating", default=None
    )
    cells_in_series: int = _bounded("cells_in_series", "NMC cells in series")
    fallback_voltage_v: float = _bounded(
        "fallback_voltage_v", "stored fallback voltage, at most cells x 4.0 V"
    )
    measurement_stale_s: float = _bounded(
        "measurement_stale_s", "max age of a measured current for the trip"
    )
    over_current_margin_a: float = _bounded("over_current_margin_a", "trip margin")
    over_current_margin_pct: float = _bounded(
        "over_current_margin_pct", "trip margin, % of CCL (the larger margin counts)"
    )
    over_current_trip_s: float = _bounded("over_current_trip_s", "over the margin this long: trip")

    @model_validator(mode="after")
    def _hardware_limits(self) -> ChargerServiceSettings:
        problems = domain.fallback_voltage_problems(self.fallback_voltage_v, self.cells_in_series)
        rating_w = domain.RECTIFIER_MODELS[self.rectifier_model].rated_power_w
        if self.max_charge_power_w is not None and self.max_charge_power_w > rating_w:
            problems.append(
                f"max_charge_power_w={self.max_charge_power_w:g} W is above the "
                f"{self.rectifier_model}'s rating {rating_w:g} W"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def model(self) -> domain.RectifierModel:
        return domain.RECTIFIER_MODELS[self.rectifier_model]

    @property
    def power_cap_w(self) -> float:
        """The start-up power cap that runtime settings may only tighten."""
        if self.max_charge_power_w is None:
            return self.model.rated_power_w
        return self.max_charge_power_w


class ChargerRuntime(BaseModel):
    """Settings changed at runtime over MQTT / Home Assistant; validated and persisted.

    They may only tighten the start-up limits (`Charger._runtime_limit`). The hardware and
    chemistry limits (current scaling, stored fallback, cells) are start-up settings only."""

    enabled: bool = True
    max_charge_power_w: float = _bounded(
        "max_charge_power_w",
        "power cap; at most the start-up cap",
        json_schema_extra={"step": 50, "unit": "W", "device_class": "power"},
    )


OVER_CURRENT_KEY = "over_current_trip"


class Charger(Service[ChargerServiceSettings]):
    """The R48 rectifier behind the battery's limits."""

    name = "charger"
    settings_class = ChargerServiceSettings

    def start(self) -> None:
        ctx = self.ctx
        self.runtime = ctx.runtime_settings(
            ChargerRuntime(max_charge_power_w=self.settings.power_cap_w),
            self.on_runtime_change,
            limit=self._runtime_limit,
        )
        self.domain_settings = self._domain_settings(self.runtime.value)
        self.started_s = ctx.now()
        self.readings = domain.Readings()
        self.command: domain.ChargeCommand | None = None
        self.limits: FreshValue[BmsLimitsPayload] | None = None
        self.pack_voltage_v: float | None = None
        self.shunt: domain.Measurement | None = None
        self.taper: domain.Taper | None = None
        self.limits_gate = Freshness("bms limits")
        self.command_gate = Freshness("charge command")
        self.shunt_gate = Freshness("shunt state")
        self.pack_gate = Freshness("bms pack")
        # the bms's cells in series, from its pack state: a disagreement holds DC off
        self.bms_cells: int | None = None
        self.fallback: domain.FallbackWrite | None = None  # written when the bus first opens
        self.watch = domain.OverCurrentWatch(trip=self._restored_trip())
        self.ccl_history = LimitHistory()
        self._alarm_since: dict[str, float] = {}
        self.decision = domain.decide(
            None, None, self.domain_settings, self.started_s, hold_off=self._hold_off()
        )
        # what the rectifier was last told, and when: changes are judged against it (a CCL
        # falling in small steps adds up), not against the previous decision
        self.sent: Decision | None = None
        self.last_sent_s: float | None = None
        self.send_errors = 0
        self.bad_frames = 0
        # A bus that will not open (adapter missing, socketcand not up yet) is retried by the
        # link; meanwhile nothing can be commanded, and the rectifier runs on the stored
        # fallback written the last time the bus was up.
        self.link: DeviceLink[can.BusABC, tuple[int, bytes]] = DeviceLink(
            f"CAN bus {self.settings.can.channel}",
            open_handle=self.settings.can.open,
            read=_read_frame,
            close_handle=lambda bus: bus.shutdown(),
            post=ctx.post,
            on_item=lambda frame: self.on_frame(*frame),
            on_state=self._on_link_state,
            errors=(can.CanError, OSError, ValueError, ImportError),
            backoff_min_s=self.settings.bus_retry_s,
            backoff_max_s=self.settings.bus_retry_s,
            pause_after_failure_s=1.0,
        )
        self.link.start()
        ctx.subscribe(ctx.topics.charger_set, self.on_command)
        ctx.subscribe(ctx.topics.bms_limits, self.on_limits)
        ctx.subscribe(ctx.topics.shunt_state, self.on_shunt)
        ctx.subscribe(ctx.topics.bms_pack, self.on_pack)
        ctx.action("reset_over_current", self.on_reset_over_current)
        ctx.every(self.settings.poll_period_s, self.poll, name="poll")
        ctx.every(self.settings.control_period_s, self.control, name="control")
        ctx.every(self.settings.state_period_s, self.publish_state, name="state")
        ctx.discovery(self.discovery)

    def _on_link_state(self, error: str | None) -> None:
        """The link opened the bus (DC off, and the stored fallback if due) or lost it."""
        if error is not None:
            self.ctx.log.warning("%s", error)
            return
        self._on_bus_open()

    def _on_bus_open(self) -> None:
        now = self.ctx.now()
        # The stored fallback (EEPROM) only when due: a link that reopens every second must
        # not wear it out; an unconfirmed write is retried with its back-off (control).
        store = domain.fallback_due_on_open(self.fallback, self.domain_settings)
        defaults = domain.offline_defaults(self.domain_settings)
        self.ctx.log.info(
            "CAN bus %s open: writing DC off%s (%.2f V, fraction %.2f)",
            self.settings.can.channel,
            " and the stored fallback" if store else "",
            defaults.voltage_v,
            defaults.current_fraction,
        )
        self._send(domain.startup_frames(self.domain_settings, store_fallback=store))
        if store:
            # DC stays off until the rectifier acknowledges both stored values
            self.fallback = domain.FallbackWrite.sent(self.domain_settings, now)
        # the start-up frames replaced what the rectifier held: the decision goes out again
        self.sent = None
        self.control()

    def _domain_settings(self, runtime: ChargerRuntime) -> ChargerSettings:
        s = self.settings
        return ChargerSettings(
            enabled=runtime.enabled,
            max_charge_power_w=min(runtime.max_charge_power_w, s.power_cap_w),
            rated_current_a=s.model.rated_current_a,
            fraction_at_rated=s.fraction_at_rated,
            min_current_a=s.min_current_a,
            cells_in_series=s.cells_in_series,
            fallback_voltage_v=s.fallback_voltage_v,
            bms_stale_s=s.bms_stale_s,
            command_stale_s=s.command_stale_s,
            refresh_period_s=s.refresh_period_s,
            link_timeout_s=s.link_timeout_s,
            measurement_stale_s=s.measurement_stale_s,
            over_current_margin_a=s.over_current_margin_a,
            over_current_margin_pct=s.over_current_margin_pct,
            over_current_trip_s=s.over_current_trip_s,
        )

    def _runtime_limit(self, runtime: ChargerRuntime) -> str:
        cap_w = self.settings.power_cap_w
        if runtime.max_charge_power_w > cap_w:
            return (
                f"max_charge_power_w={runtime.max_charge_power_w:g} W is above the start-up "
                f"limit {cap_w:g} W ({self.settings.rectifier_model} rating or the start-up "
                "max_charge_power_w); runtime settings may only tighten it"
            )
        return ""

    def on_runtime_change(self, runtime: ChargerRuntime) -> None:
        self.domain_settings = self._domain_settings(runtime)
        self.control()

    # ----------------------------------------------------------------- the charger's own alarms

    def _restored_trip(self) -> domain.OverCurrentTrip | None:
        """A trip latched before a restart stays latched: a restart is not a person's reset."""
        stored = self.ctx.store.get(OVER_CURRENT_KEY)
        if stored is None:
            return None
        try:
            trip = domain.OverCurrentTrip(
                source=str(stored["source"]),
                current_a=float(stored["current_a"]),
                ccl_a=float(stored["ccl_a"]),
                threshold_a=float(stored["threshold_a"]),
                over_s=float(stored["over_s"]),
            )
        except (KeyError, TypeError, ValueError):
            trip = domain.OverCurrentTrip("unknown (unreadable saved trip)", 0.0, 0.0, 0.0, 0.0)
        self.ctx.log.error("over-current trip latched before the restart: %s", trip.alarm().message)
        return trip

    def _hold_off(self) -> domain.Reason | None:
        if self.watch.trip is not None:
            return domain.Reason.OVER_CURRENT
        if self.fallback is None or not self.fallback.confirmed:
            return domain.Reason.FALLBACK_UNCONFIRMED
        if domain.cells_mismatch(self.bms_cells, self.domain_settings):
            return domain.Reason.CELLS_MISMATCH
        return None

    def _measurements(self) -> tuple[domain.Measurement, ...]:
        found = (self.readings.current_measurement(), self.shunt)
        return tuple(m for m in found if m is not None)

    def _measured_a(self, now_s: float) -> float | None:
        """The highest fresh measured charge current (None if none is fresh)."""
        return domain.highest_fresh_a(self._measurements(), now_s, self.domain_settings)

    def _supervise_fallback(self, now_s: float) -> None:
        fallback = self.fallback
        if fallback is None:
            return
        checked = fallback.check(now_s)
        if checked.status is not fallback.status:
            self.ctx.log.error("stored fallback: %s", checked.problem)
        if checked.retry_due(now_s) and self.link.up:
            checked = checked.retried(now_s)
            self.ctx.log.warning(
                "stored fallback: writing again (attempt %d; next wait %.0f s)",
                checked.attempt,
                checked.retry_after_s(),
            )
            self._send(checked.frames)
        self.fallback = checked

    def _watch_over_current(self, now_s: float) -> None:
        tripped_before = self.watch.trip is not None
        self.ccl_history = self.ccl_history.add(
            now_s, domain.charge_limit_a(self.limits), self.domain_settings.measurement_stale_s
        )
        self.watch = self.watch.update(
            self._measurements(), self.ccl_history.highest(), now_s, self.domain_settings
        )
        trip = self.watch.trip
        if trip is not None and not tripped_before:
            self.ctx.log.error("over-current trip: %s", trip.alarm().message)
            # current flows that should not: say DC off again now, even if it was already
            # sent (a lost frame, a rectifier that missed it)
            self.sent = None
            self.ctx.store.set(OVER_CURRENT_KEY, dataclasses.asdict(trip))
            try:
                self.ctx.store.flush()
            except OSError as exc:
                self.ctx.log.error("over-current trip not saved: %s", exc)

    def on_reset_over_current(self, payload: bytes) -> None:
        """A person resets a latched over-current trip (refused while current still flows)."""
        del payload
        if self.watch.trip is None:
            raise ValueError("no over-current trip is latched; nothing to reset")
        now_s = self.ctx.now()
        ccl_a = domain.charge_limit_a(self.limits)
        still = domain.over_measurements(self._measurements(), ccl_a, now_s, self.domain_settings)
        if still:
            m = still[0]
            raise ValueError(
                f"refused: {m.source} still measures {m.current_a:.1f} A with DC off, above "
                f"{domain.over_current_threshold_a(ccl_a, self.domain_settings):.1f} A; the "
                "rectifier is not obeying DC off: switch it off at the mains"
            )
        self.ctx.log.warning(
            "over-current trip reset by a person: %s", self.watch.trip.alarm().message
        )
        self.watch = self.watch.reset()
        self.ctx.store.delete(OVER_CURRENT_KEY)
        try:
            self.ctx.store.flush()
        except OSError as exc:
            self.ctx.log.error("over-current reset not saved: %s", exc)
        self.control()

    def alarms(self) -> list[domain.ChargerAlarm]:
        """The charger's own active alarms."""
        found: list[domain.ChargerAlarm] = []
        if self.watch.trip is not None:
            found.append(self.watch.trip.alarm())
        if self.fallback is not None and (alarm := self.fallback.alarm()) is not None:
            found.append(alarm)
        if mismatch := domain.cells_mismatch(self.bms_cells, self.domain_settings):
            found.append(domain.ChargerAlarm("cells_mismatch", mismatch))
        s = self.domain_settings
        if domain.cvl_above_ceiling(self.limits, s) and self.limits is not None:
            found.append(
                domain.ChargerAlarm(
                    "cvl_above_pack_max",
                    f"bms CVL {self.limits.value.cvl_v:.2f} V is above the pack's ceiling "
                    f"{s.pack_ceiling_v:.2f} V ({s.cells_in_series} cells x "
                    f"{chemistry.CELL_MAX_V:g} V): set-points clamped to the ceiling; check "
                    "the bms's layout and cell settings",
                )
            )
        return found

    # ----------------------------------------------------------------- CAN

    def _send(self, frames: tuple[CanFrame, ...]) -> bool:
        """Put ``frames`` on the bus; False if any failed (the caller decides on a retry)."""
        ok = True
        for frame in frames:
            self.ctx.ring.add(LINK, "tx", frame.arbitration_id.to_bytes(4, "big") + frame.data)
            message = can.Message(
                arbitration_id=frame.arbitration_id, data=frame.data, is_extended_id=True
            )
            # a failed send (a full queue) passes: the bus stays open
            error = self.link.write(
                functools.partial(_send_message, message), reopen_on_error=False
            )
            if error is not None:
                ok = False
                self.send_errors += 1
                if self.link.up:
                    self.ctx.log.warning("CAN send of %08X failed: %s", frame.arbitration_id, error)
        return ok

    def on_frame(self, arbitration_id: int, data: bytes) -> None:
        self.ctx.ring.add(LINK, "rx", arbitration_id.to_bytes(4, "big") + data)
        try:
            message = codec.decode_frame(arbitration_id, data)
        except CodecError as exc:
            self.bad_frames += 1
            self.ctx.log.debug("ignored CAN frame: %s", exc)
            return
        if isinstance(message, codec.ErrorReply):
            self.ctx.log.warning(
                "rectifier refused message type %#04x register %#04x: error %#04x (%s)",
                message.msgtype,
                message.register,
                message.error_code,
                message.error_name,
            )
        self.readings = self.readings.apply(message, self.ctx.now())
        if self.fallback is not None:
            before = self.fallback
            self.fallback = before.on_message(message)
            if self.fallback.status is not before.status:
                self._fallback_changed()

    def _fallback_changed(self) -> None:
        fallback = self.fallback
        assert fallback is not None
        if fallback.confirmed:
            self.ctx.log.info(
                "stored fallback confirmed by the rectifier (attempt %d)", fallback.attempt
            )
        else:
            self.ctx.log.error("stored fallback: %s", fallback.problem)
        self.control()

    def poll(self) -> None:
        self._send(domain.poll_frames())

    # ----------------------------------------------------------------- MQTT inputs

    def on_command(self, msg: Message) -> None:
        try:
            payload = parse_payload(ChargeCommandPayload, msg.topic, msg.payload)
            at_s = self.ctx.take(self.command_gate, msg, payload).at_s
        except (PayloadError, NotFreshError) as exc:
            self.ctx.ack(msg.topic, msg.payload, ok=False, reason=str(exc))
            raise
        self.command = domain.ChargeCommand(
            at_s=at_s,
            current_a=payload.current_a,
            power_w=payload.power_w,
            voltage_v=payload.voltage_v,
            enable=payload.enable,
        )
        self.control()

    def on_limits(self, msg: Message) -> None:
        payload = parse_payload(BmsLimitsPayload, msg.topic, msg.payload)
        was_above = domain.cvl_above_ceiling(self.limits, self.domain_settings)
        self.limits = self.ctx.take(self.limits_gate, msg, payload)
        if domain.cvl_above_ceiling(self.limits, self.domain_settings) and not was_above:
            self.ctx.log.error(
                "bms CVL %.2f V is above the pack's ceiling %.2f V (%d cells x %.2f V): "
                "clamped; check the bms settings",
                payload.cvl_v,
                self.domain_settings.pack_ceiling_v,
                self.domain_settings.cells_in_series,
                chemistry.CELL_MAX_V,
            )
        self.pack_voltage_v = payload.pack_voltage_v if payload.pack_voltage_v > 0 else None
        self.control()

    def on_pack(self, msg: Message) -> None:
        """The bms's pack state: its cells in series are checked against ours."""
        payload = parse_payload(PackState, msg.topic, msg.payload)
        self.ctx.take(self.pack_gate, msg, payload)  # refuses a retained or future pack
        if payload.cells_in_series is None or payload.cells_in_series == self.bms_cells:
            return
        self.bms_cells = payload.cells_in_series
        mismatch = domain.cells_mismatch(self.bms_cells, self.domain_settings)
        if mismatch:
            self.ctx.log.error("%s", mismatch)
        else:
            self.ctx.log.info("bms and charger agree: %d cells in series", self.bms_cells)
        self.control()

    def on_shunt(self, msg: Message) -> None:
        """The shunt's measured battery current (+ = charging) for the over-current trip."""
        payload = parse_payload(ShuntState, msg.topic, msg.payload)
        at_s = self.ctx.take(self.shunt_gate, msg, payload).at_s
        current_a = payload.current_a
        if payload.sensor != "ok" or current_a is None:
            self.shunt = None
        else:
            self.shunt = domain.Measurement("shunt", current_a, at_s)
        self.control()

    # ----------------------------------------------------------------- decisions and state

    def control(self) -> None:
        now_s = self.ctx.now()
        self._supervise_fallback(now_s)
        self._watch_over_current(now_s)
        output_v = self.readings.fresh_output_voltage_v(now_s, self.domain_settings)
        taper = domain.next_taper(
            self.taper,
            self.decision.dc_on,
            domain.taper_entry_v(output_v, self.pack_voltage_v),
            self._measured_a(now_s),
            domain.charge_limit_a(self.limits),
            now_s,
        )
        decision = domain.decide(
            self.command,
            self.limits,
            self.domain_settings,
            now_s,
            self.pack_voltage_v,
            hold_off=self._hold_off(),
            taper=taper,
        )
        self.taper = taper if decision.reason is domain.Reason.TAPER else None
        if decision.dc_on != self.decision.dc_on or decision.reason != self.decision.reason:
            self.ctx.log.info(
                "DC %s, %.1f V, %.1f A, because %s",
                "on" if decision.dc_on else "off",
                decision.voltage_v,
                decision.current_a,
                decision.reason,
            )
        if domain.needs_refresh(
            self.sent, self.last_sent_s, decision, now_s, self.domain_settings
        ) and self._send(domain.decision_frames(decision, self.domain_settings)):
            # recorded only once on the bus: a failed send (a stop above all) is tried again
            # at the next control tick, not after the refresh period
            self.sent, self.last_sent_s = decision, now_s
        self.decision = decision

    def _alarm_payloads(self) -> list[Alarm]:
        alarms = self.alarms()
        wall = self.ctx.wall()
        codes = {a.code for a in alarms}
        self._alarm_since = {c: t for c, t in self._alarm_since.items() if c in codes}
        for alarm in alarms:
            self._alarm_since.setdefault(alarm.code, wall)
        return [
            Alarm(code=a.code, message=a.message, since_ts=self._alarm_since[a.code])
            for a in alarms
        ]

    def state(self) -> ChargerState:
        link = domain.link_state(
            self.started_s, self.readings.last_reply_s, self.ctx.now(), self.domain_settings
        )
        r = self.readings if link is domain.LinkState.OK else domain.Readings()
        d: Decision = self.decision
        fallback = self.fallback.status.value if self.fallback is not None else "pending"
        return ChargerState(
            ts=self.ctx.wall(),
            link=link.value,
            dc_on=d.dc_on,
            output_voltage_v=r.output_voltage_v,
            output_current_a=r.output_current_a,
            output_power_w=r.power_w,
            temperature_c=r.temperature_c,
            input_voltage_v=r.input_voltage_v,
            setpoint_voltage_v=d.voltage_v,
            setpoint_current_a=d.current_a,
            limit_reason=d.reason.value,
            status_flags=list(r.status_active),
            alarms=self._alarm_payloads(),
            fallback=fallback,
        )

    def publish_state(self) -> None:
        self.ctx.publish(self.ctx.topics.charger_state, self.state(), retain=True)

    def discovery(self) -> tuple[str, dict[str, object]]:
        t = self.ctx.topics.charger_state
        comps = [
            ha.binary_sensor("dc_on", "DC output", t, "dc_on", device_class="power"),
            ha.sensor("voltage", "Output voltage", t, "output_voltage_v", unit="V",
                      device_class="voltage", precision=2),
            ha.sensor("current", "Output current", t, "output_current_a", unit="A",
                      device_class="current", precision=1),
            ha.sensor("power", "Output power", t, "output_power_w", unit="W",
                      device_class="power", precision=0),
            ha.sensor("temperature", "Temperature", t, "temperature_c", unit="°C",
                      device_class="temperature", entity_category="diagnostic"),
            ha.sensor("input_voltage", "AC input voltage", t, "input_voltage_v", unit="V",
                      device_class="voltage", entity_category="diagnostic"),
            ha.sensor("setpoint_voltage", "Voltage set-point", t, "setpoint_voltage_v",
                      unit="V", device_class="voltage", precision=2),
            ha.sensor("setpoint_current", "Current limit", t, "setpoint_current_a", unit="A",
                      device_class="current", precision=1),
            ha.text_sensor("limit_reason", "Limited by", t, "{{ value_json.limit_reason }}"),
            ha.text_sensor("link", "Rectifier link", t, "{{ value_json.link }}",
                           entity_category="diagnostic"),
            ha.text_sensor("status_flags", "Rectifier status", t,
                           "{{ value_json.status_flags | join(', ') or 'none' }}",
                           entity_category="diagnostic"),
            ha.binary_sensor("alarm", "Charger alarm", t, "alarms", device_class="problem",
                             template="{{ 'ON' if value_json.alarms else 'OFF' }}"),
            ha.text_sensor("alarms", "Charger alarms", t,
                           "{{ (value_json.alarms | map(attribute='message') | join('; ')"
                           " or 'none')[:250] }}"),
            ha.binary_sensor("fallback_problem", "Stored fallback unconfirmed", t, "fallback",
                             device_class="problem",
                             template="{{ 'OFF' if value_json.fallback == 'confirmed' else 'ON' }}"),
            ha.text_sensor("fallback", "Stored fallback", t, "{{ value_json.fallback }}",
                           entity_category="diagnostic"),
            ha.button("reset_over_current", "Reset over-current trip",
                      self.ctx.topics.action_set(self.name, "reset_over_current")),
            *ha.settings_components(ChargerRuntime, self.ctx.topics, self.name),
        ]  # fmt: skip
        device = ha.service_device(self.name, "Vertiv R48 rectifier")
        return ha.device_discovery(device, comps, self.ctx.topics.status(self.name))

    def stop(self) -> None:
        # Safe state: DC off now; the EEPROM defaults written at start cover what follows.
        link = getattr(self, "link", None)
        if link is None:
            return
        try:
            if link.up:
                self._send((codec.encode_control(Control(dc_off=True)),))
        finally:
            link.stop()


def _read_frame(bus: can.BusABC) -> tuple[int, bytes] | None:
    """One data frame from the bus (the link's reader thread), or None."""
    message = bus.recv(timeout=0.2)
    if message is None or message.is_error_frame or message.is_remote_frame:
        return None
    return message.arbitration_id, bytes(message.data)


def _send_message(message: can.Message, bus: can.BusABC) -> None:
    bus.send(message, timeout=0.2)


SERVICE = Charger

if __name__ == "__main__":
    sys.exit(run_service(Charger, load_settings(ChargerServiceSettings)))
