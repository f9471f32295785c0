"""The charger service: the R48 rectifier on CAN, the controller and the bms on MQTT.

Thin shell: python-can in, `codec` and `domain` in the middle, MQTT out. At start-up it
turns the DC output off and writes the offline (EEPROM) defaults, so the rectifier is safe
if this process dies; then it polls readings, clamps every controller command to the bms
limits (`domain.decide`), refreshes the online set-points well inside their ~30 s lifetime
and publishes what it decided and why.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from typing import Any

import can
from pydantic import BaseModel, Field

from gridzero import ha
from gridzero.codec import CodecError
from gridzero.contract import BmsLimits as BmsLimitsPayload
from gridzero.contract import ChargeCommand as ChargeCommandPayload
from gridzero.contract import ChargerState, PayloadError, parse_payload
from gridzero.runtime.canbus import open_bus
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero.services.charger import codec, domain
from gridzero.services.charger.codec import CanFrame, Control
from gridzero.services.charger.domain import SETTING_BOUNDS, ChargerSettings, Decision

LINK = "r48"


class CanSettings(BaseModel):
    """Which CAN interface reaches the rectifier (python-can names)."""

    interface: str = Field(
        default="socketcan", description="socketcan on hardware; udp_multicast or virtual in sim"
    )
    channel: str = Field(default="can0", min_length=1)
    bitrate: int = Field(default=125000, ge=10000, le=1000000, description="R48: 125 kbit/s")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="extra python-can Bus() keyword arguments (e.g. host/port for socketcand)",
    )


class ChargerServiceSettings(ServiceSettings):
    """Start-up settings of the charger service."""

    can: CanSettings = Field(default_factory=CanSettings)
    poll_period_s: float = Field(default=1.0, ge=0.2, le=10, description="readings poll")
    control_period_s: float = Field(default=0.5, ge=0.1, le=2, description="safety re-check")
    state_period_s: float = Field(default=1.0, ge=0.2, le=10, description="state publish")
    min_current_a: float = Field(default=5.2, ge=0.5, le=50, description="rectifier minimum")
    bms_stale_s: float = Field(default=3.0, ge=0.5, le=10, description="bms limits max age")
    command_stale_s: float = Field(default=5.0, ge=0.5, le=60, description="command max age")
    refresh_period_s: float = Field(default=5.0, ge=0.5, le=15, description="online refresh")
    link_timeout_s: float = Field(default=10.0, ge=2, le=120, description="no reply -> lost")
    bus_retry_s: float = Field(
        default=5.0, ge=0.5, le=300, description="re-open a CAN bus that failed"
    )


def _bounded(default: float, name: str, step: float, **extra: Any) -> Any:
    bound = SETTING_BOUNDS[name]
    schema: dict[str, Any] = {"step": step, **extra}
    if bound.unit:
        schema["unit"] = bound.unit
    return Field(default=default, ge=bound.low, le=bound.high, json_schema_extra=schema)


class ChargerRuntime(BaseModel):
    """Settings changed at runtime over MQTT / Home Assistant; validated and persisted."""

    enabled: bool = True
    max_charge_power_w: float = _bounded(3000.0, "max_charge_power_w", 50, device_class="power")
    rated_current_a: float = _bounded(
        codec.DEFAULT_RATED_CURRENT_A, "rated_current_a", 0.1, device_class="current"
    )
    fraction_at_rated: float = _bounded(codec.DEFAULT_FRACTION_AT_RATED, "fraction_at_rated", 0.01)
    offline_voltage_v: float = _bounded(
        domain.DEFAULT_OFFLINE_VOLTAGE_V, "offline_voltage_v", 0.1, device_class="voltage"
    )
    offline_current_fraction: float = _bounded(codec.FRACTION_MIN, "offline_current_fraction", 0.01)


class Charger(Service[ChargerServiceSettings]):
    """The R48 rectifier behind the battery's limits."""

    name = "charger"
    settings_class = ChargerServiceSettings

    def start(self) -> None:
        ctx = self.ctx
        self.runtime = ctx.runtime_settings(ChargerRuntime(), self.on_runtime_change)
        self.domain_settings = self._domain_settings(self.runtime.value)
        self.started_s = ctx.now()
        self.readings = domain.Readings()
        self.command: domain.ChargeCommand | None = None
        self.limits: domain.BmsLimits | None = None
        self.pack_voltage_v: float | None = None
        self.decision = domain.decide(None, None, self.domain_settings, self.started_s)
        self.last_sent_s: float | None = None
        self.send_errors = 0
        self.bad_frames = 0
        self._rx_stop = threading.Event()
        self.bus: can.BusABC | None = None
        self._try_open()
        self._rx_thread = threading.Thread(target=self._receive, name="charger-can-rx", daemon=True)
        self._rx_thread.start()
        ctx.subscribe(ctx.topics.charger_set, self.on_command)
        ctx.subscribe(ctx.topics.bms_limits, self.on_limits)
        ctx.every(self.settings.poll_period_s, self.poll, name="poll")
        ctx.every(self.settings.control_period_s, self.control, name="control")
        ctx.every(self.settings.state_period_s, self.publish_state, name="state")
        ctx.discovery(self.discovery)

    def _open_bus(self) -> can.BusABC:
        cfg = self.settings.can
        return open_bus(cfg.interface, cfg.channel, cfg.bitrate, cfg.options)

    def _try_open(self) -> bool:
        """Open the bus (any thread); on success the loop re-sends the start-up frames.

        A bus that will not open (adapter missing, socketcand not up yet) is retried by
        the receive thread; meanwhile nothing can be commanded, and the rectifier runs
        on the offline defaults written the last time the bus was up.
        """
        try:
            bus = self._open_bus()
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            self.ctx.log.warning("CAN bus %s: cannot open: %s", self.settings.can.channel, exc)
            return False
        self.bus = bus
        self.ctx.post(self._on_bus_open)
        return True

    def _on_bus_open(self) -> None:
        self.ctx.log.info(
            "CAN bus %s open: writing DC off and the safe offline defaults",
            self.settings.can.channel,
        )
        self._send(domain.startup_frames(self.domain_settings))
        self.last_sent_s = self.ctx.now()

    def _reopen_bus(self) -> None:
        """Receive thread: the bus failed; replace it (a restarted socketcand, a re-plugged adapter)."""
        bus, self.bus = self.bus, None
        if bus is not None:
            with contextlib.suppress(can.CanError, OSError):
                bus.shutdown()
        self._try_open()

    def _domain_settings(self, runtime: ChargerRuntime) -> ChargerSettings:
        s = self.settings
        return ChargerSettings(
            enabled=runtime.enabled,
            max_charge_power_w=runtime.max_charge_power_w,
            rated_current_a=runtime.rated_current_a,
            fraction_at_rated=runtime.fraction_at_rated,
            min_current_a=s.min_current_a,
            offline_voltage_v=runtime.offline_voltage_v,
            offline_current_fraction=runtime.offline_current_fraction,
            bms_stale_s=s.bms_stale_s,
            command_stale_s=s.command_stale_s,
            refresh_period_s=s.refresh_period_s,
            link_timeout_s=s.link_timeout_s,
        )

    def on_runtime_change(self, runtime: ChargerRuntime) -> None:
        old = domain.offline_defaults(self.domain_settings)
        self.domain_settings = self._domain_settings(runtime)
        new = domain.offline_defaults(self.domain_settings)
        if new != old:
            # EEPROM writes: only when the defaults really change.
            self._send(
                (
                    codec.encode_voltage(new.voltage_v, offline=True),
                    codec.encode_current_fraction(new.current_fraction, offline=True),
                )
            )
        self.control()

    # ----------------------------------------------------------------- CAN

    def _send(self, frames: tuple[CanFrame, ...]) -> None:
        for frame in frames:
            self.ctx.ring.add(LINK, "tx", frame.arbitration_id.to_bytes(4, "big") + frame.data)
            message = can.Message(
                arbitration_id=frame.arbitration_id, data=frame.data, is_extended_id=True
            )
            bus = self.bus
            if bus is None:
                self.send_errors += 1
                continue
            try:
                bus.send(message, timeout=0.2)
            except can.CanError as exc:
                self.send_errors += 1
                self.ctx.log.warning("CAN send of %08X failed: %s", frame.arbitration_id, exc)

    def _receive(self) -> None:
        """Receive thread: hand every frame to the loop thread, never touch state here."""
        while not self._rx_stop.is_set():
            bus = self.bus
            if bus is None:
                if not self._try_open():
                    self._rx_stop.wait(self.settings.bus_retry_s)
                continue
            try:
                message = bus.recv(timeout=0.2)
            except (can.CanError, OSError, ValueError) as exc:
                self.ctx.log.warning("CAN receive failed: %s", exc)
                self._rx_stop.wait(1.0)
                if not self._rx_stop.is_set():
                    self._reopen_bus()
                continue
            if message is None or message.is_error_frame or message.is_remote_frame:
                continue
            arbitration_id, data = message.arbitration_id, bytes(message.data)
            self.ctx.post(functools.partial(self.on_frame, arbitration_id, data))

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

    def poll(self) -> None:
        self._send(domain.poll_frames())

    # ----------------------------------------------------------------- MQTT inputs

    def _arrival_s(self, ts: float) -> float:
        # Stamp on our monotonic clock, aged by what the payload's own time says, so a
        # retained message from a dead publisher is never taken as fresh.
        age_s = max(0.0, self.ctx.wall() - ts)
        return self.ctx.now() - age_s

    def on_command(self, msg: Message) -> None:
        try:
            payload = parse_payload(ChargeCommandPayload, msg.topic, msg.payload)
        except PayloadError as exc:
            self.ctx.ack(msg.topic, msg.payload, ok=False, reason=str(exc))
            raise
        self.command = domain.ChargeCommand(
            at_s=self._arrival_s(payload.ts),
            current_a=payload.current_a,
            power_w=payload.power_w,
            voltage_v=payload.voltage_v,
            enable=payload.enable,
        )
        self.control()

    def on_limits(self, msg: Message) -> None:
        payload = parse_payload(BmsLimitsPayload, msg.topic, msg.payload)
        self.limits = domain.BmsLimits(
            at_s=self._arrival_s(payload.ts),
            cvl_v=payload.cvl_v,
            ccl_a=payload.ccl_a,
            charge_allowed=payload.charge_allowed,
            alarms=tuple(alarm.code for alarm in payload.alarms),
        )
        self.pack_voltage_v = payload.pack_voltage_v if payload.pack_voltage_v > 0 else None
        self.control()

    # ----------------------------------------------------------------- decisions and state

    def control(self) -> None:
        now_s = self.ctx.now()
        decision = domain.decide(
            self.command, self.limits, self.domain_settings, now_s, self.pack_voltage_v
        )
        if decision.dc_on != self.decision.dc_on or decision.reason != self.decision.reason:
            self.ctx.log.info(
                "DC %s, %.1f V, %.1f A, because %s",
                "on" if decision.dc_on else "off",
                decision.voltage_v,
                decision.current_a,
                decision.reason,
            )
        if domain.needs_refresh(
            self.decision, self.last_sent_s, decision, now_s, self.domain_settings
        ):
            self._send(domain.decision_frames(decision))
            self.last_sent_s = now_s
        self.decision = decision

    def state(self) -> ChargerState:
        link = domain.link_state(
            self.started_s, self.readings.last_reply_s, self.ctx.now(), self.domain_settings
        )
        r = self.readings if link is domain.LinkState.OK else domain.Readings()
        d: Decision = self.decision
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
            *ha.settings_components(ChargerRuntime, self.ctx.topics, self.name),
        ]  # fmt: skip
        device = ha.service_device(self.name, "Vertiv R48 rectifier")
        return ha.device_discovery(device, comps, self.ctx.topics.status(self.name))

    def stop(self) -> None:
        # Safe state: DC off now; the EEPROM defaults written at start cover what follows.
        try:
            if getattr(self, "bus", None) is not None:
                self._send((codec.encode_control(Control(dc_off=True)),))
        finally:
            if getattr(self, "_rx_stop", None) is not None:
                self._rx_stop.set()
            if getattr(self, "_rx_thread", None) is not None:
                self._rx_thread.join(1.0)
            bus = getattr(self, "bus", None)
            if bus is not None:
                bus.shutdown()


SERVICE = Charger

if __name__ == "__main__":
    sys.exit(run_service(Charger, load_settings(ChargerServiceSettings)))
