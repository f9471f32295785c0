"""The inverter service: SoyoSource GTN units on their RS485 limiter lines, on MQTT.

Thin shell: one pyserial port per line (``/dev/ttyUSB0``, ``socket://host:port``,
``rfc2217://...``; 4800 8N1), each with a reader thread that reconnects with backoff;
the loop thread asks ``domain.Dispatcher`` which demand frames are due, writes them,
polls status where a line has one unit, and publishes per unit what its line was sent and
why. It publishes its lines and units (retained) for the controller to split its demand over.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial
from pydantic import BaseModel, Field, create_model, model_validator

from gridzero import ha
from gridzero.contract import BmsLimits as BmsLimitsPayload
from gridzero.contract import (
    InverterCommand,
    InverterLineInfo,
    InverterState,
    InverterUnitInfo,
    InverterUnits,
    parse_payload,
)
from gridzero.runtime.freshness import Freshness, Sequencer
from gridzero.runtime.link import DeviceLink
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Context, RuntimeSettings, Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_inverter import codec, domain
from gridzero_inverter.codec import Frame, StatusReply

BAUD = 4800  # syssi soyosource_modbus.cpp, secondlifestorage 7631: 4800 8N1 on the limiter port


_UNIT = domain.UNIT_BOUNDS


class UnitConfig(BaseModel):
    """One inverter unit (start-up settings)."""

    id: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")
    port: str = Field(default="/dev/ttyUSB0", min_length=1, description="pyserial URL")
    max_power_w: int = _UNIT["max_power_w"].field(
        900,
        "the most this unit feeds: its rating (GTN-1000/1200/2000) or its own lower "
        "output power limit",
    )
    dc_min_v: float = _UNIT["dc_min_v"].field(..., "below this pack voltage: 0 W")
    dc_max_v: float = _UNIT["dc_max_v"].field(..., "above this pack voltage: 0 W")
    address: int = _UNIT["address"].field(codec.DEFAULT_ADDRESS)
    enabled: bool = True
    parallel: int = _UNIT["parallel"].field(1)
    query_status: bool = True
    line: str = Field(
        default="",
        max_length=32,
        pattern=r"^([a-z0-9_-]+)?$",
        description="units on one port share a line; empty: the unit's own id",
    )

    def to_domain(self) -> domain.UnitSettings:
        return domain.UnitSettings(
            unit_id=self.id,
            port_url=self.port,
            dc_min_v=self.dc_min_v,
            dc_max_v=self.dc_max_v,
            max_power_w=self.max_power_w,
            address=self.address,
            enabled=self.enabled,
            parallel=self.parallel,
            query_status=self.query_status,
            line=self.line,
        )


class InverterSettings(ServiceSettings):
    """Start-up settings of the inverter service."""

    units: list[UnitConfig] = Field(min_length=1)
    send_period_s: float = Field(
        default=1.0,
        gt=0,
        le=3,
        description="frames must keep coming; 1 s is inside every project's range",
    )
    min_gap_s: float = Field(
        default=0.25, ge=0, le=3, description="earliest re-send of a changed demand"
    )
    bms_stale_s: float = Field(default=3.0, gt=0, le=30)
    command_stale_s: float = Field(default=3.0, gt=0, le=30)
    zero_frames: int = Field(default=3, ge=1, le=100, description="0 W frames before silence")
    status_poll_s: float = Field(default=5.0, gt=0, le=600)
    status_timeout_s: float = Field(default=15.0, gt=0, le=600)
    reply_window_s: float = Field(default=1.0, gt=0, le=5, description="reply -> last queried")
    state_period_s: float = Field(default=1.0, ge=0.2, le=10)
    tick_s: float = Field(default=0.1, ge=0.02, le=0.5)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=600)
    # start-up only (never a runtime setting): they bound what DCL lets the units feed
    efficiency: float = Field(
        default=0.85,
        ge=0.5,
        le=domain.MAX_EFFICIENCY,
        description="AC/DC efficiency the DCL clamp assumes (DCL x V x this); at or below the "
        "worst the units reach",
    )
    dcl_margin_pct: float = Field(
        default=10.0, ge=0, le=50, description="reported DC current above DCL by this cuts"
    )
    dc_trip_hold_s: float = Field(
        default=10.0, gt=0, le=600, description="every unit at 0 W this long after such a report"
    )
    dc_trip_grace_s: float = Field(
        default=8.0,
        ge=0,
        le=30,
        description="a report is judged against the highest DCL of this many seconds back",
    )

    @model_validator(mode="after")
    def _units_consistent(self) -> InverterSettings:
        problems = domain.unit_set_problems([u.to_domain() for u in self.units])
        problems += self.timing().problems() + self.clamp().problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def timing(self) -> domain.Timing:
        return domain.Timing(
            bms_stale_s=self.bms_stale_s,
            command_stale_s=self.command_stale_s,
            zero_frames=self.zero_frames,
            send_period_s=self.send_period_s,
            min_gap_s=self.min_gap_s,
            status_timeout_s=self.status_timeout_s,
        )

    def clamp(self) -> domain.Clamp:
        return domain.Clamp(
            efficiency=self.efficiency,
            dcl_margin_pct=self.dcl_margin_pct,
            dc_trip_hold_s=self.dc_trip_hold_s,
            dc_trip_grace_s=self.dc_trip_grace_s,
        )


def runtime_model(unit: UnitConfig) -> type[BaseModel]:
    """Per-unit runtime settings; max power may not exceed the configured one."""
    model: type[BaseModel] = create_model(
        f"InverterRuntime_{unit.id}",
        max_power_w=(
            int,
            Field(
                default=unit.max_power_w,
                ge=0,
                le=unit.max_power_w,
                json_schema_extra={"unit": "W", "step": 10, "device_class": "power"},
            ),
        ),
        enabled=(bool, Field(default=unit.enabled)),
    )
    return model


PortItem = tuple[tuple[Frame, ...], bytes]
"""What one read of a port hands to the loop: the frames it completed and the raw bytes."""


def serial_link(
    url: str,
    addresses: frozenset[int],
    settings: InverterSettings,
    ctx: Context,
    on_item: Callable[[PortItem], None],
    on_state: Callable[[str | None], None],
) -> DeviceLink[Any, PortItem]:
    """One pyserial URL as a `DeviceLink`: reopened with backoff, its bytes framed in the
    reader thread (the framer is the thread's own, not service state)."""
    framer = codec.Framer(addresses=addresses)

    def open_port() -> Any:
        port = serial.serial_for_url(
            url,
            baudrate=BAUD,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=0.05,
            write_timeout=0.5,
        )
        _no_delay(port)
        return port

    def read(port: Any) -> PortItem | None:
        data = port.read(256)
        result = framer.feed(data) if data else framer.flush()
        return (result.frames, data) if result.frames or data else None

    return DeviceLink(
        f"port {url}",
        open_handle=open_port,
        read=read,
        close_handle=lambda port: port.close(),
        post=ctx.post,
        on_item=on_item,
        on_state=on_state,
        # pyserial's socket:// raises SerialException when the peer closes, TypeError when
        # it is closed under a read
        errors=(serial.SerialException, OSError, TypeError, ValueError),
        backoff_min_s=settings.reconnect_min_s,
        backoff_max_s=settings.reconnect_max_s,
    )


def _send(link: DeviceLink[Any, PortItem], frame: bytes) -> str | None:
    """Write one frame on the loop thread; the error text if it could not be written."""
    return link.write(lambda port: port.write(frame))


def _no_delay(port: Any) -> None:
    """Turn off Nagle's algorithm on a ``socket://`` port (an RS485-over-TCP gateway).

    An 8-byte demand frame written while the previous one is still unacknowledged would
    otherwise wait for the peer's delayed ACK, up to 40 ms on Linux. pyserial keeps the socket
    in ``_socket`` and offers no option for it; a local serial port has no such attribute.
    """
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(slots=True)
class _UnitView:
    """What the service knows about a unit beyond the dispatcher: last status and query."""

    reply: StatusReply | None = None
    reply_s: float | None = None
    last_decision: tuple[int, str] | None = None


class Inverter(Service[InverterSettings]):
    """SoyoSource units in limiter mode, clamped to the bms limits on their own."""

    name = "inverter"
    settings_class = InverterSettings

    units_seq = Sequencer()  # numbers the units description

    def start(self) -> None:
        ctx = self.ctx
        s = self.settings
        self.dispatcher = domain.Dispatcher(
            tuple(u.to_domain() for u in s.units), timing=s.timing(), clamp=s.clamp()
        )
        lines = self.dispatcher.lines
        # one freshness rule for every input that can make a unit feed (runtime/freshness.py)
        self.limits_gate = Freshness("bms limits")
        self.command_gates = {
            line.line_id: Freshness(f"inverter line {line.line_id} command") for line in lines
        }
        self.views = {u.id: _UnitView() for u in s.units}
        self.line_of = {u.unit_id: line.line_id for line in lines for u in line.units}
        self.configs = {u.id: u for u in s.units}
        self.runtimes: dict[str, RuntimeSettings[BaseModel]] = {}
        for unit in s.units:
            rt = ctx.runtime_settings(
                runtime_model(unit)(), self._runtime_changer(unit.id), unit=unit.id
            )
            self.runtimes[unit.id] = rt
            self._apply_runtime(unit.id, rt.value)
        self.ports: dict[str, DeviceLink[Any, PortItem]] = {}
        self.queried: dict[str, tuple[str, float]] = {}  # port -> (line, when queried)
        for line in lines:
            url = line.port_url
            self.ports[url] = serial_link(
                url,
                frozenset({line.address}),
                s,
                ctx,
                functools.partial(self._on_port_item, url),
                functools.partial(self._on_port_state, url),
            )
        ctx.subscribe(ctx.topics.inverter_set("+"), self.on_command)
        ctx.subscribe(ctx.topics.bms_limits, self.on_limits)
        ctx.every(s.tick_s, self.tick, name="send")
        ctx.every(s.status_poll_s, self.poll_status, name="status poll", start_s=0.3)
        ctx.every(s.state_period_s, self.publish_all, name="state")
        for unit in s.units:
            ctx.discovery(self._discovery_builder(unit.id))
        self.publish_units()
        for port in self.ports.values():
            port.start()

    # ----------------------------------------------------------------- inputs

    def on_command(self, msg: Message) -> None:
        """A line's command: the AC watts all its units together should feed."""
        ctx = self.ctx
        line_id = msg.topic.rsplit("/", 2)[-2]
        try:
            command = parse_payload(InverterCommand, msg.topic, msg.payload)
            self.dispatcher.line(line_id)
            # aged from its arrival here: no other host's clock decides (a retained, future-
            # stamped or repeated command is refused and changes nothing)
            arrived_s = ctx.take(self.command_gates[line_id], msg, command).at_s
            self.dispatcher.set_command(line_id, command.power_w, arrived_s)
        except (ValueError, KeyError) as exc:
            reason = str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)
            ctx.ack(msg.topic, msg.payload, ok=False, reason=reason)
            raise ValueError(reason) from exc
        self.tick()  # a lower demand goes out at once

    def on_limits(self, msg: Message) -> None:
        ctx = self.ctx
        payload = parse_payload(BmsLimitsPayload, msg.topic, msg.payload)
        # a retained message (maybe of a dead bms) or a future stamp raises NotFreshError
        self.dispatcher.set_limits(ctx.take(self.limits_gate, msg, payload))
        self.tick()

    def _runtime_changer(self, unit_id: str) -> Callable[[BaseModel], None]:
        def changed(value: BaseModel) -> None:
            self._apply_runtime(unit_id, value)
            self.tick()
            self.publish_unit(unit_id)
            self.publish_units()  # the controller splits over the new ratings

        return changed

    def _apply_runtime(self, unit_id: str, value: BaseModel) -> None:
        self.dispatcher.update_unit(
            unit_id,
            max_power_w=getattr(value, "max_power_w"),  # noqa: B009 - dynamic model
            enabled=getattr(value, "enabled"),  # noqa: B009
        )

    # ----------------------------------------------------------------- port thread -> loop

    def _on_port_item(self, url: str, item: PortItem) -> None:
        self._on_frames(url, *item)

    def _on_port_state(self, url: str, error: str | None) -> None:
        for line in self.dispatcher.lines:
            if line.port_url != url:
                continue
            link = self.dispatcher.links[line.line_id]
            if error is None:
                link.port_ok()
            elif link.port_error != error:
                link.port_failed(error)
                self.ctx.log.warning("line %s: %s", line.line_id, error)
        if error is None:
            self.ctx.log.info("port %s open", url)

    def _on_frames(self, url: str, frames: tuple[Frame, ...], data: bytes) -> None:
        if data:
            self.ctx.ring.add(url, "rx", data)
        now_s = self.ctx.now()
        for frame in frames:
            if not isinstance(frame, StatusReply):
                continue  # our own frames echoed, or another master on the bus
            queried = self.queried.get(url)
            if queried is None or now_s - queried[1] > self.settings.reply_window_s:
                self.ctx.log.debug("status reply on %s with no recent query: ignored", url)
                continue
            line = self.dispatcher.line(queried[0])
            view = self.views[line.units[0].unit_id]  # only a line of one unit is asked
            view.reply = frame
            view.reply_s = now_s
            self.dispatcher.links[line.line_id].status_received(now_s)
            trip = self.dispatcher.report_dc_current(line.line_id, frame.battery_current_a, now_s)
            if trip:
                self.ctx.log.error("line %s: %s", line.line_id, trip)
                self.tick()

    # ----------------------------------------------------------------- timers

    def tick(self) -> None:
        now_s = self.ctx.now()
        for out in self.dispatcher.due(now_s):
            frame = codec.encode_demand(out.power_w, out.address)
            error = _send(self.ports[out.port_url], frame)
            if error is None:
                self.dispatcher.sent(out.line_id, out.power_w, now_s)
                self.ctx.ring.add(out.port_url, "tx", frame)
        decisions = self.dispatcher.decisions(now_s)
        for uid, lid in self.line_of.items():
            decision = decisions[lid]
            key = (decision.demand_w, decision.reason.value)
            view = self.views[uid]
            if view.last_decision != key:
                if view.last_decision is not None:
                    # a new reason is a state change (INFO); a new demand under the same
                    # reason is the controller's periodic decision (DEBUG: twice a second)
                    reason_changed = view.last_decision[1] != key[1]
                    self.ctx.log.log(
                        logging.INFO if reason_changed else logging.DEBUG,
                        "unit %s (line %s): demand %d W, cap %d W (%s)",
                        uid,
                        lid,
                        decision.demand_w,
                        decision.cap_w,
                        decision.reason.value,
                    )
                view.last_decision = key
                self.publish_unit(uid)

    def poll_status(self) -> None:
        now_s = self.ctx.now()
        for line in self.dispatcher.lines:
            if not line.query_status:
                continue
            frame = codec.encode_query(line.address)
            if _send(self.ports[line.port_url], frame) is None:
                self.queried[line.port_url] = (line.line_id, now_s)
                self.ctx.ring.add(line.port_url, "tx", frame)

    # ----------------------------------------------------------------- outputs

    def publish_all(self) -> None:
        for unit in self.dispatcher.units:
            self.publish_unit(unit.unit_id)

    def publish_units(self) -> None:
        """The lines and units with their current max power (retained: a description)."""
        self.ctx.publish(self.ctx.topics.inverter_units, self.units_info(), retain=True, qos=1)

    def units_info(self) -> InverterUnits:
        lines = [
            InverterLineInfo(
                id=line.line_id,
                units=[
                    InverterUnitInfo(
                        id=u.unit_id,
                        # what it feeds at most now: on a shared line another unit's runtime
                        # cap holds the frame, and so this unit, lower than its own setting
                        max_power_w=line.unit_max_w(u),
                        parallel=u.parallel,
                        dc_min_v=u.dc_min_v,
                        dc_max_v=u.dc_max_v,
                        enabled=u.enabled,
                    )
                    for u in line.units
                ],
            )
            for line in self.dispatcher.lines
        ]
        seq = self.units_seq
        return InverterUnits(ts=self.ctx.wall(), boot=seq.boot, seq=seq.next(), lines=lines)

    def state(self, unit_id: str, *, stopped: bool = False) -> InverterState:
        now_s = self.ctx.now()
        line_id = self.line_of[unit_id]
        decision = self.dispatcher.decisions(now_s)[line_id]
        link = self.dispatcher.link_state(line_id, now_s)
        schedule = self.dispatcher.schedules[line_id]
        view = self.views[unit_id]
        fresh = link is domain.LinkState.OK and view.reply is not None
        reply = view.reply if fresh else None
        return InverterState(
            ts=self.ctx.wall(),
            unit=unit_id,
            line=line_id,
            demand_w=0 if stopped else (schedule.last_sent_w or 0),
            requested_w=decision.requested_w or 0.0,
            cap_w=0 if stopped else decision.cap_w,
            cap_reason="stopped" if stopped else decision.reason.value,
            link="stopped" if stopped else link.value,
            sending=not stopped
            and link is not domain.LinkState.PORT_ERROR
            and not schedule.silent(self.dispatcher.timing),
            battery_voltage_v=reply.battery_voltage_v if reply else None,
            battery_current_a=reply.battery_current_a if reply else None,
            ac_voltage_v=reply.ac_voltage_v if reply else None,
            frequency_hz=reply.ac_frequency_hz if reply else None,
            temperature_c=reply.temperature_c if reply else None,
            operation_status=reply.operation_status if reply else None,
        )

    def publish_unit(self, unit_id: str, *, stopped: bool = False) -> None:
        self.ctx.publish(
            self.ctx.topics.inverter_state(unit_id),
            self.state(unit_id, stopped=stopped),
            retain=True,
            qos=1,
        )

    def _discovery_builder(self, unit_id: str) -> Callable[[], tuple[str, dict[str, Any]]]:
        return lambda: discovery(self.ctx, self.configs[unit_id])

    # ----------------------------------------------------------------- shutdown

    def stop(self) -> None:
        """Safe state: explicit 0 W frames on every line, then silence."""
        for line in self.dispatcher.lines:
            port = self.ports.get(line.port_url)
            if port is None:
                continue
            for _ in range(max(1, self.settings.zero_frames)):
                if _send(port, codec.encode_demand(0, line.address)) is not None:
                    break
        for port in self.ports.values():
            port.stop()
        for unit in self.dispatcher.units:
            self.publish_unit(unit.unit_id, stopped=True)


def discovery(ctx: Context, unit: UnitConfig) -> tuple[str, dict[str, Any]]:
    """One Home Assistant device per inverter unit.

    The unit's own measurements (DC side, AC voltage, frequency, temperature) are
    announced only for a unit that is asked for its status (``query_status``): many
    units never answer on the limiter port, and their entities would never have a
    value. A unit that is asked but gives no fresh answer shows them as unavailable.
    """
    topics = ctx.topics
    state = topics.inverter_state(unit.id)
    diag: ha.EntityCategory = "diagnostic"
    comps = [
        ha.sensor("demand", "Demand", state, "demand_w", unit="W", device_class="power"),
        ha.sensor("requested", "Requested", state, "requested_w", unit="W", device_class="power"),
        ha.sensor("cap", "Cap", state, "cap_w", unit="W", device_class="power"),
        ha.text_sensor("cap_reason", "Cap reason", state, "{{ value_json.cap_reason }}"),
        ha.text_sensor("link", "Link", state, "{{ value_json.link }}", entity_category=diag),
        ha.binary_sensor("sending", "Sending", state, "sending", entity_category=diag),
        *ha.settings_components(runtime_model(unit), topics, "inverter", unit=unit.id),
    ]
    if unit.query_status:
        comps += _measurement_components(state)
    device = ha.service_device("inverter", "SoyoSource GTN (limiter RS485)", unit=unit.id)
    return ha.device_discovery(device, comps, topics.status("inverter"))


def _measurement_components(state: str) -> list[ha.Component]:
    """What a unit reports when asked (syssi soyosource_modbus.cpp): values, not settings."""
    diag: ha.EntityCategory = "diagnostic"
    return [
        ha.sensor("battery_voltage", "Battery voltage", state, "battery_voltage_v", unit="V",
                  device_class="voltage", entity_category=diag),
        ha.sensor("battery_current", "Battery current", state, "battery_current_a", unit="A",
                  device_class="current", entity_category=diag),
        ha.sensor("ac_voltage", "AC voltage", state, "ac_voltage_v", unit="V",
                  device_class="voltage", precision=0, entity_category=diag),
        ha.sensor("frequency", "AC frequency", state, "frequency_hz", unit="Hz",
                  device_class="frequency", precision=1, entity_category=diag),
        ha.sensor("temperature", "Temperature", state, "temperature_c", unit="°C",
                  device_class="temperature", entity_category=diag),
        ha.sensor("operation_status", "Operation status", state, "operation_status",
                  state_class=None, entity_category=diag),
    ]  # fmt: skip


SERVICE = Inverter

if __name__ == "__main__":
    sys.exit(run_service(Inverter, load_settings(InverterSettings)))
