"""The bms service: CAN buses in, pack limits, alarms, cells and balancing out on MQTT.

One python-can bus per configured CAN bus, each with its own 0x0BA poll and a receive thread
that decodes frames and hands them to the loop in batches. The pack model, protection and
balancing (pure, see pack.py / protection.py / balancing.py) run on the loop thread.

A CAN error or a vanished bus never stops the service: the bus is closed, its modules read as
missing at once (so CCL = DCL = 0), and it is reopened every ``bus_retry_s``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import can
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict

from gridzero import chemistry, ha
from gridzero.codec import CodecError
from gridzero.contract import Alarm as AlarmPayload
from gridzero.contract import (
    BmsLimits,
    ModuleState,
    PackState,
    ShuntState,
    describe_validation_error,
    parse_payload,
)
from gridzero.contract import CellRef as CellRefPayload
from gridzero.runtime.canbus import CanSettings, bitrate_field
from gridzero.runtime.freshness import Freshness, FreshValue, Sequencer
from gridzero.runtime.link import DeviceLink
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_bms.balancing import Balancer, BalanceSettings, BalanceStep
from gridzero_bms.codec import (
    MAX_MODULE,
    CellVoltageFrame,
    CodecOptions,
    ExtenderBalance,
    Frame,
    FrameDecoder,
    TemperatureFrame,
    TempVariant,
    balanceable_modules,
    encode_balance,
    encode_poll,
)
from gridzero_bms.pack import (
    TEMPERATURE_OFFSET_MAX_C,
    CellRef,
    ModuleKey,
    Pack,
    PackLayout,
    PackSettings,
    SuspectCell,
)
from gridzero_bms.protection import Limits, Protection, ProtectionSettings
from gridzero_bms.sanity import FrameCheckSettings, FrameSanity

_BATCH_S = 0.02  # receive threads hand frames to the loop at most this often
_RECV_TIMEOUT_S = 0.05
DEEP_DISCHARGE_KEY = "deep_discharge"  # the latch, in the service's store


class BusSettings(CanSettings):
    """One CAN bus (`CanSettings`) and the modules expected on it."""

    bitrate: int = bitrate_field(500_000)
    modules: list[int] = Field(
        default_factory=lambda: list(range(1, 9)), description="module numbers on this bus"
    )

    @field_validator("modules")
    @classmethod
    def _check_modules(cls, value: list[int]) -> list[int]:
        bad = [n for n in value if not 1 <= n <= MAX_MODULE]
        if bad:
            raise ValueError(f"module numbers {bad} are outside 1..{MAX_MODULE}")
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(
                f"module {dupes} listed twice; modules with the same number need different buses"
            )
        return value


class BmsSettings(ServiceSettings):
    """Start-up settings (environment GRIDZERO_..., nested with __, or YAML)."""

    buses: list[BusSettings] = Field(default_factory=lambda: [BusSettings()], min_length=1)
    cells_per_module: int = Field(12, ge=1, le=13)
    layout: PackLayout = PackLayout.PARALLEL
    stale_after_s: float = Field(3.0, gt=0, le=60)
    temp_variant: TempVariant = TempVariant.DBC
    gen1_module3: bool = False
    extender_balance: ExtenderBalance = ExtenderBalance.NONE
    module_capacity_ah: float = Field(
        25.0, gt=0, le=1000, description="one module's capacity (GTE: about 25 Ah)"
    )
    current_per_string_a: float = Field(
        3.75,
        gt=0,
        le=100,
        description=(
            "protection.max_charge/discharge_current_a default to this x the parallel strings "
            "(8 modules: 30 A) when not set"
        ),
    )
    suspect_cells: list[SuspectCell] = Field(
        default_factory=list,
        description="cells that read wrong (bus, module, cell); the risk: services/bms/README.md",
    )
    temperature_sensors: tuple[int, ...] = Field(
        (1, 2, 3), min_length=1, description="which module sensors (1..3) count"
    )
    temperature_offset_c: float = Field(
        0.0,
        ge=-TEMPERATURE_OFFSET_MAX_C,
        le=TEMPERATURE_OFFSET_MAX_C,
        description="added to every temperature reading",
    )
    protection: ProtectionSettings = Field(default_factory=ProtectionSettings)
    balance: BalanceSettings = Field(default_factory=BalanceSettings)
    frames: FrameCheckSettings = Field(default_factory=FrameCheckSettings)
    shunt_stale_s: float = Field(
        3.0, gt=0, le=60, description="a shunt current older than this is not used"
    )
    poll_period_s: float = Field(0.5, gt=0.05, le=1.0, description="0x0BA poll period")
    protection_period_s: float = Field(0.1, gt=0.01, le=0.5)
    limits_period_s: float = Field(0.5, gt=0.05, le=2.0)
    pack_period_s: float = Field(1.0, gt=0.1, le=60.0)
    module_period_s: float = Field(5.0, gt=0.1, le=600.0)
    bus_retry_s: float = Field(5.0, gt=0.1, le=300.0)

    @model_validator(mode="after")
    def _check_pack(self) -> BmsSettings:
        self.pack_settings()  # raises with the bus and module named
        self._currents_follow_the_pack()
        errors = [
            why
            for why in (
                self._current_bound("max_charge_current_a", chemistry.MAX_CHARGE_C_RATE),
                self._current_bound("max_discharge_current_a", chemistry.MAX_DISCHARGE_C_RATE),
                self._current_bound("precharge_current_a", chemistry.PRECHARGE_MAX_C_RATE),
            )
            if why
        ]
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _currents_follow_the_pack(self) -> None:
        """Current ceilings not set explicitly scale with the strings in parallel, so one
        module gets 3.75 A, not the 30 A that needs eight (and more modules get more)."""
        unset = {
            name: self.current_per_string_a * self.parallel_strings
            for name in ("max_charge_current_a", "max_discharge_current_a")
            if name not in self.protection.model_fields_set
        }
        if unset:
            self.protection = self.protection.model_copy(update=unset)

    @property
    def parallel_strings(self) -> int:
        """Strings in parallel: every module (parallel layout) or one (series)."""
        if self.layout is PackLayout.PARALLEL:
            return sum(len(b.modules) for b in self.buses)
        return 1

    def _current_bound(self, name: str, c_rate: float) -> str:
        """Why protection.<name> exceeds ``c_rate`` × the pack's capacity ("" if it does not)."""
        value = getattr(self.protection, name)
        limit = c_rate * self.module_capacity_ah * self.parallel_strings
        if value <= limit + 1e-9:
            return ""
        return (
            f"protection.{name} = {value:g} A is above {c_rate:g} C of the pack: "
            f"module_capacity_ah {self.module_capacity_ah:g} Ah x {self.parallel_strings} "
            f"parallel strings x {c_rate:g} = {limit:g} A (gridzero.chemistry)"
        )

    def pack_settings(self) -> PackSettings:
        return PackSettings(
            cells_per_module=self.cells_per_module,
            modules=tuple(tuple(b.modules) for b in self.buses),
            layout=self.layout,
            stale_after_s=self.stale_after_s,
            suspect_cells=tuple(self.suspect_cells),
            temperature_sensors=self.temperature_sensors,
            temperature_offset_c=self.temperature_offset_c,
        )

    def codec_options(self) -> CodecOptions:
        return CodecOptions(
            temp_variant=self.temp_variant,
            gen1_module3=self.gen1_module3,
            extender_balance=self.extender_balance,
        )


_V: JsonDict = {"unit": "V", "step": 0.01}
_A: JsonDict = {"unit": "A", "step": 0.5}
_C: JsonDict = {"unit": "°C", "step": 0.5}


class BmsRuntime(BaseModel):
    """Settings changed at runtime over MQTT / Home Assistant (validated, persisted).

    The protection values here may only tighten the start-up ones (`runtime_limit`): the
    ranges below are the chemistry's outer bounds, the start-up value is the real limit."""

    balance_enabled: bool = True
    balance_force: bool = False
    balance_start_v: float = Field(3.9, ge=3.5, le=4.2, json_schema_extra=_V)
    balance_hysteresis_v: float = Field(
        0.04, ge=0.002, le=0.5, json_schema_extra={"unit": "V", "step": 0.001}
    )
    charge_end_v: float = Field(4.10, ge=3.5, le=chemistry.CELL_MAX_V, json_schema_extra=_V)
    over_voltage_v: float = Field(4.20, ge=3.8, le=chemistry.CELL_MAX_V, json_schema_extra=_V)
    under_voltage_v: float = Field(3.00, ge=chemistry.CELL_MIN_V, le=3.6, json_schema_extra=_V)
    discharge_cutoff_v: float = Field(3.20, ge=chemistry.CELL_MIN_V, le=3.8, json_schema_extra=_V)
    max_charge_current_a: float = Field(30.0, ge=0, le=1000, json_schema_extra=_A)
    max_discharge_current_a: float = Field(30.0, ge=0, le=1000, json_schema_extra=_A)
    over_temperature_c: float = Field(
        60.0, ge=30, le=chemistry.DISCHARGE_MAX_C, json_schema_extra=_C
    )
    under_temperature_c: float = Field(0.0, ge=chemistry.CHARGE_MIN_C, le=20, json_schema_extra=_C)

    @classmethod
    def from_settings(cls, protection: ProtectionSettings, balance: BalanceSettings) -> BmsRuntime:
        return cls(
            balance_enabled=balance.enabled,
            balance_force=balance.force,
            balance_start_v=balance.start_voltage_v,
            balance_hysteresis_v=balance.hysteresis_v,
            charge_end_v=protection.charge_end_v,
            over_voltage_v=protection.over_voltage_v,
            under_voltage_v=protection.under_voltage_v,
            discharge_cutoff_v=protection.discharge_cutoff_v,
            max_charge_current_a=protection.max_charge_current_a,
            max_discharge_current_a=protection.max_discharge_current_a,
            over_temperature_c=protection.over_temperature_c,
            under_temperature_c=protection.under_temperature_c,
        )

    def merge(
        self, protection: ProtectionSettings, balance: BalanceSettings
    ) -> tuple[ProtectionSettings, BalanceSettings]:
        """The start-up settings with these runtime values on top (validated)."""
        p = protection.model_dump()
        p.update(
            charge_end_v=self.charge_end_v,
            over_voltage_v=self.over_voltage_v,
            under_voltage_v=self.under_voltage_v,
            discharge_cutoff_v=self.discharge_cutoff_v,
            max_charge_current_a=self.max_charge_current_a,
            max_discharge_current_a=self.max_discharge_current_a,
            over_temperature_c=self.over_temperature_c,
            under_temperature_c=self.under_temperature_c,
        )
        # keep the release thresholds on the safe side when a threshold moves
        p["over_voltage_release_v"] = min(p["over_voltage_release_v"], self.over_voltage_v - 0.05)
        p["under_voltage_release_v"] = max(
            p["under_voltage_release_v"], self.under_voltage_v + 0.05
        )
        p["over_temperature_release_c"] = min(
            p["over_temperature_release_c"], self.over_temperature_c - 5
        )
        p["hot_derate_start_c"] = min(p["hot_derate_start_c"], self.over_temperature_c - 5)
        p["under_temperature_release_c"] = max(
            p["under_temperature_release_c"], self.under_temperature_c + 5
        )
        p["cold_charge_derate_start_c"] = max(p["cold_charge_derate_start_c"], self.under_temperature_c + 5)  # fmt: skip
        b = balance.model_dump()
        b.update(
            enabled=self.balance_enabled,
            force=self.balance_force,
            start_voltage_v=self.balance_start_v,
            hysteresis_v=self.balance_hysteresis_v,
        )
        return ProtectionSettings.model_validate(p), BalanceSettings.model_validate(b)


# Runtime protection settings and the side on which a value would widen its start-up limit.
_TIGHTEN_ONLY: tuple[tuple[str, str], ...] = (
    ("charge_end_v", "above"),
    ("over_voltage_v", "above"),
    ("under_voltage_v", "below"),
    ("discharge_cutoff_v", "below"),
    ("max_charge_current_a", "above"),
    ("max_discharge_current_a", "above"),
    ("over_temperature_c", "above"),
    ("under_temperature_c", "below"),
)


def runtime_limit(
    protection: ProtectionSettings, balance: BalanceSettings
) -> Callable[[BmsRuntime], str]:
    """Why a runtime value would widen the start-up (hardware/chemistry) limits, or ""."""

    def why(value: BmsRuntime) -> str:
        wider = []
        for name, side in _TIGHTEN_ONLY:
            new, limit = getattr(value, name), getattr(protection, name)
            if (new > limit) if side == "above" else (new < limit):
                wider.append(
                    f"{name} = {new:g} is {side} its start-up limit protection.{name} = {limit:g}"
                )
        if wider:
            return (
                "; ".join(wider) + " (runtime settings may only tighten the start-up "
                "hardware and chemistry limits)"
            )
        try:
            value.merge(protection, balance)
        except ValidationError as exc:
            return f"does not combine with the start-up settings: {describe_validation_error(exc)}"
        return ""

    return why


@dataclass(slots=True)
class _Rx:
    bus: int
    arbitration_id: int
    data: bytes
    extended: bool
    now_s: float


def _read_batch(index: int, clock: Callable[[], float]) -> Callable[[can.BusABC], list[_Rx] | None]:
    """The link's read for bus ``index``: the frames of up to ``_BATCH_S``, or None."""

    def read(bus: can.BusABC) -> list[_Rx] | None:
        batch: list[_Rx] = []
        first_s = 0.0
        while True:
            msg = bus.recv(_RECV_TIMEOUT_S)
            now_s = clock()
            if msg is not None and not msg.is_error_frame and not msg.is_remote_frame:
                if not batch:
                    first_s = now_s
                batch.append(
                    _Rx(index, msg.arbitration_id, bytes(msg.data), msg.is_extended_id, now_s)
                )
            if not batch:
                return None  # quiet bus: let the reader check whether it should stop
            if now_s - first_s >= _BATCH_S:
                return batch

    return read


class _BusLink:
    """One CAN bus: a `DeviceLink` (its reader batches frames to the loop) and sends."""

    def __init__(self, service: Bms, index: int, settings: BusSettings) -> None:
        self.index = index
        self.settings = settings
        self.name = f"can{index}:{settings.interface}/{settings.channel}"
        self.errors = 0
        self._ctx = service.ctx
        self.link: DeviceLink[can.BusABC, list[_Rx]] = DeviceLink(
            f"bus {self.name}",
            open_handle=settings.open,
            read=_read_batch(index, service.ctx.now),
            close_handle=lambda bus: bus.shutdown(),
            post=service.ctx.post,
            on_item=service.on_frames,
            on_state=functools.partial(service.bus_state, self),
            errors=(can.CanError, OSError, ValueError, ImportError),
            # a failed bus stays closed (its modules missing: CCL = DCL = 0) for a retry period
            backoff_min_s=service.settings.bus_retry_s,
            backoff_max_s=service.settings.bus_retry_s,
            pause_after_failure_s=service.settings.bus_retry_s,
        )

    @property
    def up(self) -> bool:
        return self.link.up

    def send(self, frames: list[tuple[int, bytes]]) -> bool:
        """Send on the loop thread; a failed send passes (the bus stays open)."""
        ring = self._ctx.ring

        def send_all(bus: can.BusABC) -> None:
            for arbitration_id, data in frames:
                extended = arbitration_id > 0x7FF
                bus.send(
                    can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=extended)
                )
                ring.add(self.name, "tx", arbitration_id.to_bytes(4, "big") + data)

        error = self.link.write(send_all, reopen_on_error=False)
        if error is None:
            return True
        if self.link.up:
            self.errors += 1
            self._ctx.log.warning("%s", error)
        return False


class Bms(Service[BmsSettings]):
    """VW GTE module BMS on 1..N CAN buses."""

    name = "bms"
    settings_class = BmsSettings

    def start(self) -> None:
        ctx, s = self.ctx, self.settings
        self.decoder = FrameDecoder(s.codec_options())
        self.pack = Pack(s.pack_settings())
        self.sanity = FrameSanity(s.frames)
        self.runtime = ctx.runtime_settings(
            BmsRuntime.from_settings(s.protection, s.balance),
            self.on_runtime_change,
            limit=runtime_limit(s.protection, s.balance),
        )
        protection, balance = self.runtime.value.merge(s.protection, s.balance)
        self.protection = Protection(protection)
        self._restore_deep_discharge()
        self.shunt_freshness = Freshness("shunt state")
        self.shunt: FreshValue[float] | None = None  # current_a, + = charging
        self.balancer = Balancer(balance, balanceable_modules(s.codec_options()))
        self.limits: Limits | None = None
        self.limits_seq = Sequencer()
        self.balance_step: BalanceStep | None = None
        self.frames_rx = 0
        self.frames_bad = 0
        self._published_alarms: tuple[str, ...] | None = None
        self.links = [_BusLink(self, i, b) for i, b in enumerate(s.buses)]
        for link in self.links:
            link.link.start()
        ctx.every(s.poll_period_s, self.poll, name="poll")
        ctx.every(s.protection_period_s, self.evaluate, name="protection")
        ctx.every(s.limits_period_s, self.publish_limits, name="limits")
        ctx.every(s.limits_period_s, self.balance, name="balance", start_s=s.limits_period_s / 2)
        ctx.every(s.pack_period_s, self.publish_pack, name="pack")
        ctx.every(s.module_period_s, self.publish_modules, name="modules")
        ctx.action("force_balance", self.on_force_balance)
        ctx.action("release_deep_discharge", self.on_release_deep_discharge)
        ctx.subscribe(ctx.topics.shunt_state, self.on_shunt)
        ctx.discovery(self.discovery)

    def on_force_balance(self, payload: bytes) -> None:
        """The original system's `l` key: toggle forced balancing (the `balance_force` setting)."""
        current = self.runtime.value
        self.runtime.apply(
            current.model_copy(update={"balance_force": not current.balance_force}),
            changed="balance_force",
        )

    def on_release_deep_discharge(self, payload: bytes) -> None:
        """A person released the deep-discharge latch; ValueError (answered on ack) if refused."""
        now = self.ctx.now()
        self.protection.release_deep_discharge(self.pack.snapshot(now), now)
        self.ctx.log.warning("deep-discharge latch released by a person")
        self._save_deep_discharge()
        self.evaluate()

    def _restore_deep_discharge(self) -> None:
        """A latch saved before a restart holds again: only a person releases it."""
        saved = self.ctx.store.get(DEEP_DISCHARGE_KEY)
        # anything but an explicit "not latched" counts as latched: the safe reading
        released = saved is None or (isinstance(saved, dict) and saved.get("latched") is False)
        if not released:
            message = saved.get("message") if isinstance(saved, dict) else None
            text = f"{message or 'deep discharge'} [restored after a restart]"
            self.protection.latch_deep_discharge(text, self.ctx.now())
            self.ctx.log.warning(
                "deep-discharge latch restored from %s: %s", self.ctx.store.path, text
            )
        self._deep_saved = self.protection.deep_discharge.latched

    def _save_deep_discharge(self) -> None:
        """Write the latch now, not at the next debounced flush: it must survive a crash."""
        deep = self.protection.deep_discharge
        self._deep_saved = deep.latched
        value = {"latched": deep.latched, "message": deep.message, "ts": self.ctx.wall()}
        self.ctx.store.set(DEEP_DISCHARGE_KEY, value)
        try:
            self.ctx.store.flush()
        except OSError as exc:
            self.ctx.log.error(
                "deep-discharge latch (%s) not saved to %s: %s",
                "set" if deep.latched else "released",
                self.ctx.store.path,
                exc,
            )

    def on_shunt(self, msg: Message) -> None:
        """The shunt's measured current, for the over-current alarm (fresh by arrival only)."""
        state = self.ctx.take(
            self.shunt_freshness, msg, parse_payload(ShuntState, msg.topic, msg.payload)
        )
        current_a = state.value.current_a
        if state.value.sensor != "ok" or current_a is None:
            self.shunt = None
            return
        self.shunt = FreshValue(current_a, state.at_s)

    def measured_current(self, now_s: float) -> float | None:
        """The latest shunt current if it arrived within ``shunt_stale_s``, else None."""
        if self.shunt is None or not self.shunt.fresh(now_s, self.settings.shunt_stale_s):
            return None
        return self.shunt.value

    # ------------------------------------------------------------------ CAN

    def poll(self) -> None:
        for link in self.links:
            if link.send(encode_poll()):
                self.sanity.poll(link.index)

    def on_frames(self, frames: list[_Rx]) -> None:
        """A batch of received frames (loop thread)."""
        decode, apply, trusted = (
            self.decoder.decode,
            self.pack.apply,
            self.balancer.voltages_trusted,
        )
        for rx in frames:
            self.frames_rx += 1
            try:
                frame: Frame = decode(rx.arbitration_id, rx.data, rx.extended)
            except CodecError as exc:
                self._bad_frame(rx, exc)
                continue
            module = getattr(frame, "module", 0)
            # what the boards send counts for frame sanity; commands from a master do not
            if isinstance(frame, CellVoltageFrame):
                counter = None if frame.initialising else frame.counter
                self.sanity.frame(rx.bus, rx.arbitration_id, module, counter)
            elif isinstance(frame, TemperatureFrame):
                self.sanity.frame(rx.bus, rx.arbitration_id, module)
            apply(rx.bus, frame, rx.now_s, trusted=trusted(ModuleKey(rx.bus, module), rx.now_s))

    def _bad_frame(self, rx: _Rx, exc: CodecError) -> None:
        self.frames_bad += 1
        raw = f"{rx.arbitration_id:X}#{rx.data.hex().upper()}"
        self.ctx.ring.add(f"can{rx.bus}", "rx", rx.arbitration_id.to_bytes(4, "big") + rx.data)
        if self.frames_bad <= 20 or self.frames_bad % 1000 == 0:
            self.ctx.log.warning(
                "bus %d: bad frame %s (%d so far): %s", rx.bus, raw, self.frames_bad, exc
            )

    def bus_state(self, link: _BusLink, error: str | None) -> None:
        """The bus opened, or it failed or would not open: its modules are missing at once
        (the link closed it and opens it again after ``bus_retry_s``)."""
        if error is None:
            self.ctx.log.info("bus %s: open", link.name)
            return
        if "read failed" in error:
            link.errors += 1
            self.ctx.log.error("%s; closed", error)
        else:
            self.ctx.log.warning("%s", error)
        self.pack.forget_bus(link.index)
        self.sanity.forget_bus(link.index)
        self.evaluate()

    # ------------------------------------------------------------------ domain

    def on_runtime_change(self, value: BmsRuntime) -> None:
        try:
            protection, balance = value.merge(self.settings.protection, self.settings.balance)
        except ValueError as exc:
            self.ctx.log.error(
                "runtime settings do not combine with the start-up settings: %s", exc
            )
            return
        self.protection.reconfigure(protection)
        self.balancer.reconfigure(balance)

    def evaluate(self) -> None:
        now = self.ctx.now()
        self.limits = self.protection.update(
            self.pack.snapshot(now),
            now,
            frame_problems=self.sanity.problems(),
            current_a=self.measured_current(now),
        )
        if self.protection.deep_discharge.latched != self._deep_saved:
            self._save_deep_discharge()
        codes = tuple(a.code for a in self.limits.alarms)
        if codes != self._published_alarms:
            self.publish_limits()  # a new or cleared alarm goes out at once

    def balance(self) -> None:
        now = self.ctx.now()
        snap = self.pack.snapshot(now)
        allowed = self.limits is not None and not self.limits.alarms
        step = self.balancer.step(snap, now, allowed=allowed)
        self.balance_step = step
        for command in step.commands:
            link = self.links[command.bus]
            try:
                frames = encode_balance(
                    command.module,
                    command.cells,
                    self.decoder.options,
                    cells_per_module=self.settings.cells_per_module,
                )
            except CodecError as exc:
                self.ctx.log.warning(
                    "balance command bus %d module %d: %s", command.bus, command.module, exc
                )
                continue
            link.send(frames)

    # ------------------------------------------------------------------ MQTT

    def publish_limits(self) -> None:
        if self.limits is None:
            self.evaluate()
            return
        ctx, limits = self.ctx, self.limits
        now, wall = ctx.now(), ctx.wall()
        snap = self.pack.snapshot(now)
        reasons = [r for r in (limits.charge_reason, limits.discharge_reason) if r]
        payload = BmsLimits(
            ts=wall,
            boot=self.limits_seq.boot,
            seq=self.limits_seq.next(),
            cvl_v=limits.cvl_v,
            ccl_a=limits.ccl_a,
            dcl_a=limits.dcl_a,
            charge_allowed=limits.charge_allowed,
            discharge_allowed=limits.discharge_allowed,
            pack_voltage_v=snap.pack_voltage_v or 0.0,
            reasons=reasons,
            alarms=[
                AlarmPayload(
                    code=a.code, message=a.message, since_ts=max(0.0, wall - (now - a.since_s))
                )
                for a in limits.alarms
            ],
        )
        ctx.publish(ctx.topics.bms_limits, payload, retain=True)
        self._published_alarms = tuple(a.code for a in limits.alarms)

    def publish_pack(self) -> None:
        ctx = self.ctx
        snap = self.pack.snapshot(ctx.now())
        bleeding = self.balancer.bleeding
        alarms = self.limits.alarms if self.limits is not None else ()
        payload = PackState(
            ts=ctx.wall(),
            pack_voltage_v=snap.pack_voltage_v or 0.0,
            cell_min=_cell(snap.min_cell),
            cell_max=_cell(snap.max_cell),
            cell_avg_v=snap.avg_cell_v,
            cell_delta_v=snap.delta_v,
            temperature_min_c=snap.temp_min_c,
            temperature_max_c=snap.temp_max_c,
            temperature_avg_c=snap.temp_avg_c,
            modules_present=snap.present_modules,
            modules_expected=snap.expected_modules,
            cells_counted=snap.cell_count,
            cells_expected=snap.expected_cell_count,
            cells_in_series=snap.series_cells,
            balancing=bool(bleeding),
            balancing_cells=sum(len(c) for c in bleeding.values()),
            alarm_text="; ".join(a.message for a in alarms),
            frames_rx=self.frames_rx,
            frames_bad=self.frames_bad,
        )
        ctx.publish(ctx.topics.bms_pack, payload, retain=True)

    def publish_modules(self) -> None:
        ctx = self.ctx
        snap = self.pack.snapshot(ctx.now())
        wall = ctx.wall()
        for m in snap.modules:
            payload = ModuleState(
                ts=wall,
                bus=m.bus,
                module=m.module,
                present=m.present,
                age_s=m.age_s,
                cells_v=list(m.cells_v),
                temperatures_c=list(m.temperatures_c),
                balancing_cells=sorted(self.balancer.bleeding.get(m.key, frozenset())),
                suspect_cells=sorted(m.suspect_cells),
            )
            ctx.publish(ctx.topics.bms_module(m.bus, m.module), payload, retain=True)

    def discovery(self) -> tuple[str, dict[str, Any]]:
        t = self.ctx.topics
        lim, pack = t.bms_limits, t.bms_pack
        sensor: Callable[..., ha.Component] = ha.sensor
        comps = [
            sensor("cvl", "Charge voltage limit", lim, "cvl_v", unit="V", device_class="voltage", precision=2),
            sensor("ccl", "Charge current limit", lim, "ccl_a", unit="A", device_class="current", precision=1),
            sensor("dcl", "Discharge current limit", lim, "dcl_a", unit="A", device_class="current", precision=1),
            ha.binary_sensor("charge_allowed", "Charge allowed", lim, "charge_allowed"),
            ha.binary_sensor("discharge_allowed", "Discharge allowed", lim, "discharge_allowed"),
            sensor("pack_voltage", "Pack voltage", pack, "pack_voltage_v", unit="V", device_class="voltage", precision=2),
            sensor("cell_min", "Lowest cell", pack, "cell_min.voltage_v", unit="V", device_class="voltage", precision=3),
            sensor("cell_max", "Highest cell", pack, "cell_max.voltage_v", unit="V", device_class="voltage", precision=3),
            sensor("cell_avg", "Average cell", pack, "cell_avg_v", unit="V", device_class="voltage", precision=3),
            sensor("cell_delta", "Cell delta", pack, "cell_delta_v", unit="V", device_class="voltage", precision=3),
            sensor("temp_min", "Lowest temperature", pack, "temperature_min_c", unit="°C", device_class="temperature", precision=1),
            sensor("temp_max", "Highest temperature", pack, "temperature_max_c", unit="°C", device_class="temperature", precision=1),
            sensor("modules_present", "Modules present", pack, "modules_present", entity_category="diagnostic", state_class=None),
            sensor("balancing_cells", "Cells balancing", pack, "balancing_cells", state_class=None),
            ha.text_sensor("alarm", "Alarm", pack, "{{ (value_json.alarm_text or 'ok')[:255] }}"),
            sensor("frames_bad", "Bad CAN frames", pack, "frames_bad", entity_category="diagnostic", state_class="total_increasing"),
            ha.button(
                "release_deep_discharge",
                "Release deep-discharge latch",
                t.action_set(self.name, "release_deep_discharge"),
            ),
            *ha.settings_components(BmsRuntime, t, self.name),
            *self._module_components(),
        ]  # fmt: skip
        return ha.device_discovery(
            ha.service_device(self.name, "VW GTE module BMS"), comps, t.status(self.name)
        )

    def _module_components(self) -> list[ha.Component]:
        """One sensor per expected module: its lowest cell, with every cell, temperature
        and bleeding cell as attributes (the per-module view of the dashboard)."""
        known = "value_json.present and value_json.cells_v and none not in value_json.cells_v"
        attributes = (
            "{'bus': value_json.bus, 'module': value_json.module, 'present': value_json.present,"
            " 'cells_v': value_json.cells_v, 'temperatures_c': value_json.temperatures_c,"
            " 'balancing_cells': value_json.balancing_cells,"
            " 'suspect_cells': value_json.suspect_cells | default([])}"
        )
        return [
            ha.computed_sensor(
                f"module_{bus}_{module}",
                f"Module {bus}-{module} lowest cell",
                self.ctx.topics.bms_module(bus, module),
                f"value_json.cells_v | min if {known} else none",
                known,
                unit="V",
                device_class="voltage",
                precision=3,
                attributes=attributes,
            )
            for bus, settings in enumerate(self.settings.buses)
            for module in settings.modules
        ]

    def stop(self) -> None:
        """Switch every bleed resistor off, then release the buses."""
        for link in self.links:
            if not link.up:
                continue
            for module in link.settings.modules:
                try:
                    frames = encode_balance(
                        module,
                        (),
                        self.decoder.options,
                        cells_per_module=self.settings.cells_per_module,
                    )
                except CodecError:
                    continue
                link.send(frames)
        for link in self.links:
            link.link.stop()


def _cell(ref: CellRef | None) -> CellRefPayload | None:
    if ref is None:
        return None
    return CellRefPayload(bus=ref.bus, module=ref.module, cell=ref.cell, voltage_v=ref.voltage_v)


SERVICE = Bms

if __name__ == "__main__":
    sys.exit(run_service(Bms, load_settings(BmsSettings)))
