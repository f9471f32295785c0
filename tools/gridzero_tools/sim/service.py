"""``gridzero run sim``: the plant on the wire, in real time (times ``speed``).

- VW modules on one or more CAN buses (python-can; ``udp_multicast`` in the
  simulation, one group per bus), answering the 0x0BA poll;
- the R48 on its own CAN bus;
- each SoyoSource on a TCP server (the inverter service connects with
  ``socket://host:port``);
- the meter on ``meterbox/grid`` (plain integer W), the truth on
  ``<base>/sim/truth``, faults from ``<base>/sim/fault/set``.

I/O threads only receive; everything that touches the plant runs on the loop
thread (``ctx.post``). The plant's clock is ``start_s + speed × elapsed``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import socket
import threading
from typing import Any, TextIO

import can
from pydantic import BaseModel, Field, ValidationError

from gridzero.contract import DEFAULT_METER_TOPIC, SimFault, SimTruth, parse_payload
from gridzero.errors import UsageError
from gridzero.runtime.canbus import open_bus
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_tools.sim import faults
from gridzero_tools.sim.canhub import CanHub
from gridzero_tools.sim.devices.bms import BmsBusEmulator
from gridzero_tools.sim.devices.inverter import InverterEmulator
from gridzero_tools.sim.devices.rectifier import RectifierEmulator
from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import load_profile

MODULES_PER_BUS = 8


DEFAULT_HUB = "127.0.0.1:29536"


def _hub_bus(channel: str) -> CanBusSettings:
    host, _, port = DEFAULT_HUB.rpartition(":")
    return CanBusSettings(
        interface="socketcand", channel=channel, options={"host": host, "port": int(port)}
    )


class CanBusSettings(BaseModel):
    """A python-can bus (by default a channel of the simulator's own loopback CAN hub)."""

    interface: str = Field("socketcand", min_length=1)
    channel: str = Field("bms0", min_length=1)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="extra python-can Bus() keyword arguments (e.g. host/port for socketcand)",
    )


class SimSettings(ServiceSettings):
    """Start-up settings of the simulator."""

    plant: str = Field("default", description="bundled plant name or YAML path")
    profile: str = Field("sunny-day", description="bundled profile name or CSV path")
    seed: int = 1
    speed: float = Field(1.0, gt=0, le=1000, description="simulated seconds per real second")
    start_s: float | None = Field(None, ge=0, description="profile time to start at")
    can_hub: str = Field(
        DEFAULT_HUB,
        description="host:port where the simulator serves its socketcand CAN hub "
        "(see tools/gridzero_tools/sim/canhub.py); empty: use the buses as configured (e.g. udp_multicast)",
    )
    bms_buses: list[CanBusSettings] = Field(
        default_factory=lambda: [_hub_bus("bms0"), _hub_bus("bms1")]
    )
    module_numbers: list[list[int]] | None = Field(
        None, description="module numbers per bus; default: 1..8 on each bus in turn"
    )
    charger_bus: CanBusSettings = Field(default_factory=lambda: _hub_bus("r48"))
    inverter_listen: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:4851"], description="host:port per inverter unit"
    )
    answer_inverter_queries: bool = False
    meter_topic: str = Field(DEFAULT_METER_TOPIC, min_length=1)
    tick_s: float = Field(0.05, ge=0.01, le=1)
    truth_period_s: float = Field(1.0, ge=0.1, le=60)
    truth_file: str = Field(
        "",
        description="also append every truth as one JSON line to this file, so fault tests see "
        "the plant while the broker is down (empty: off)",
    )


def module_layout(settings: SimSettings, modules: int) -> list[list[int]]:
    """Module numbers per bus; plant modules are numbered through the buses in order."""
    if settings.module_numbers is not None:
        layout = settings.module_numbers
        if len(layout) > len(settings.bms_buses):
            raise UsageError(
                f"sim: module_numbers lists {len(layout)} buses, bms_buses has "
                f"{len(settings.bms_buses)}"
            )
    else:
        layout = []
        left = modules
        for _ in settings.bms_buses:
            take = min(MODULES_PER_BUS, left)
            layout.append(list(range(1, take + 1)))
            left -= take
    total = sum(len(b) for b in layout)
    if total != modules:
        raise UsageError(
            f"sim: the plant has {modules} modules but the buses carry {total} "
            f"(bms_buses: {len(settings.bms_buses)}, module_numbers: {layout})"
        )
    return layout


def contract_fault(  # noqa: PLR0911 (one return per fault kind reads best)
    msg: SimFault, plant: Plant, layout: list[list[int]]
) -> faults.Fault | str:
    """The plant fault for a contract ``SimFault``, or the kind to clear ("" = all)."""
    duration = msg.duration_s or None
    kind = msg.kind
    if kind == "clear":
        return msg.target
    if kind in ("duplicate_module", "frozen_module"):
        return board_fault(msg, layout)
    simple: dict[str, type[faults.ChargerSilent | faults.MeterSilent | faults.MeterJunk]] = {
        "rectifier_silent": faults.ChargerSilent,
        "meter_silent": faults.MeterSilent,
        "meter_junk": faults.MeterJunk,
    }
    if kind in simple:
        return simple[kind](duration_s=duration)
    if kind == "load_step":
        return faults.LoadStep(extra_w=msg.value, duration_s=duration)
    if kind in ("rectifier_over_current", "rectifier_refuses_stored"):
        return _rectifier_fault(msg, duration)
    if kind in ("inverter_silent", "gateway_restart"):
        unit = _unit(msg.target, plant)
        if kind == "inverter_silent":
            return faults.InverterSilent(unit=unit, duration_s=duration)
        return faults.GatewayRestart(unit=unit, duration_s=duration or 5.0)
    if kind == "bus_garbage":
        bus: int | str = "charger" if msg.target == "charger" else int(msg.target or 0)
        return faults.BusGarbage(bus=bus, rate_hz=msg.value or 50.0, duration_s=duration)
    if kind in ("module_silent", "cell_drift", "over_temperature"):
        return _module_fault(msg, layout, duration)
    raise ValueError(f"fault kind {kind!r} is not modelled by the simulator")


def _module_fault(msg: SimFault, layout: list[list[int]], duration: float | None) -> faults.Fault:
    """A fault of one module's readings: ``target`` 'bus:module[:cell]'."""
    kind = msg.kind
    parts = msg.target.split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"fault target {msg.target!r}: expected 'bus:module[:cell]'")
    bus, number = int(parts[0]), int(parts[1])
    if not 0 <= bus < len(layout) or number not in layout[bus]:
        raise ValueError(f"fault target {msg.target!r}: no module {number} on bus {bus}")
    module = sum(len(b) for b in layout[:bus]) + layout[bus].index(number)
    if kind == "module_silent":
        return faults.ModuleSilent(module=module, duration_s=duration)
    if kind == "over_temperature":
        return faults.TemperatureOffset(module=module, offset_c=msg.value, duration_s=duration)
    cell = int(parts[2]) - 1 if len(parts) > 2 else 0
    return faults.CellDrift(module=module, cell=cell, v_per_h=msg.value, duration_s=duration)


def board_fault(msg: SimFault, layout: list[list[int]]) -> faults.Fault:
    """A bms slave-board fault: ``target`` 'bus:module'; for duplicate_module ``value`` is the
    twin's cell voltage (0: 3.7 V) and the module number need not be one the bus carries."""
    parts = msg.target.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"fault {msg.kind} target {msg.target!r}: expected 'bus:module'")
    bus, number = int(parts[0]), int(parts[1])
    if not 0 <= bus < len(layout):
        raise ValueError(f"fault {msg.kind} target {msg.target!r}: no bms bus {bus}")
    duration = msg.duration_s or None
    if msg.kind == "duplicate_module":
        return faults.DuplicateModule(
            bus=bus, number=number, cell_v=msg.value or 3.7, duration_s=duration
        )
    if number not in layout[bus]:
        raise ValueError(f"fault {msg.kind} target {msg.target!r}: no module {number} on bus {bus}")
    module = sum(len(b) for b in layout[:bus]) + layout[bus].index(number)
    return faults.FrozenModule(module=module, duration_s=duration)


def _rectifier_fault(
    msg: SimFault, duration: float | None
) -> faults.RectifierOverCurrent | faults.RectifierRefusesStored:
    """value: the extra amps (default 20), or the stored voltage refused below (0 = all)."""
    if msg.kind == "rectifier_over_current":
        return faults.RectifierOverCurrent(extra_a=msg.value or 20.0, duration_s=duration)
    return faults.RectifierRefusesStored(below_v=msg.value or None, duration_s=duration)


def _unit(target: str, plant: Plant) -> int:
    names = [p.name for p in plant.params.inverters]
    if target in names:
        return names.index(target)
    return int(target or 0)


class Sim(Service[SimSettings]):
    """The simulator service."""

    name = "sim"
    settings_class = SimSettings

    def start(self) -> None:
        s = self.settings
        ctx = self.ctx
        profile = load_profile(s.profile)
        self.plant = Plant(
            load_plant(s.plant), profile, seed=s.seed, start_s=s.start_s or profile.start_s
        )
        self.layout = module_layout(s, self.plant.params.pack.modules)
        if len(s.inverter_listen) < len(self.plant.inverters):
            raise UsageError(
                f"sim: {len(self.plant.inverters)} inverters need as many inverter_listen "
                f"addresses, got {s.inverter_listen}"
            )
        self._t0_real = ctx.now()
        self._t0_sim = self.plant.now_s
        self._rng = random.Random(f"gridzero-sim:{s.seed}:wire")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.bms: list[tuple[can.BusABC, BmsBusEmulator]] = []
        self.hub = self._start_hub(s.can_hub)
        first = 0
        for i, (cfg, numbers) in enumerate(zip(s.bms_buses, self.layout, strict=False)):
            bus = self._open(cfg)
            emu = BmsBusEmulator(i, numbers, first)
            first += len(numbers)
            self.bms.append((bus, emu))
            self._reader(bus, functools.partial(self._on_bms, i))
        self.charger_bus = self._open(s.charger_bus)
        self.rectifier = RectifierEmulator()
        self._reader(self.charger_bus, self._on_charger)
        self.inverter_emus = [
            InverterEmulator(u, answer_queries=s.answer_inverter_queries)
            for u in range(len(self.plant.inverters))
        ]
        self._conns: list[socket.socket | None] = [None] * len(self.inverter_emus)
        self._servers = [
            self._listen(u, s.inverter_listen[u]) for u in range(len(self.inverter_emus))
        ]
        self._truth_log: TextIO | None = None
        if s.truth_file:
            self._truth_log = open(s.truth_file, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        ctx.subscribe(ctx.topics.sim_fault_set, self.on_fault)
        ctx.every(s.tick_s, self.tick, name="tick")
        ctx.every(s.truth_period_s, self.publish_truth, name="truth")
        ctx.every(0.1, self.garbage, name="garbage")

    # ----------------------------------------------------------------- time

    def sim_now(self) -> float:
        return self._t0_sim + (self.ctx.now() - self._t0_real) * self.settings.speed

    def tick(self) -> None:
        now = self.sim_now()
        self.plant.step(now)
        for reading in self.plant.meter.take_new(now):
            self.ctx.publish(self.settings.meter_topic, reading.payload)
        for unit, conn in enumerate(self._conns):
            if conn is not None and self.plant.gateway_down(unit, now):
                self.ctx.log.info("inverter %d gateway restarting: dropping its link", unit)
                self._close_conn(unit)

    def publish_truth(self) -> None:
        tr = self.plant.truth()
        truth = SimTruth(
            ts=self.ctx.wall(),
            soc_pct=round(tr.soc_pct, 3),
            pack_voltage_v=round(tr.pack_voltage_v, 3),
            current_a=round(tr.battery_current_a, 3),
            cell_min_v=round(tr.cell_min_v, 4),
            cell_max_v=round(tr.cell_max_v, 4),
            cells_v=[[round(v, 4) for v in row] for row in tr.cell_voltages_v],
            temperatures_c=[round(t, 2) for t in tr.temperatures_c],
            load_w=round(tr.load_w, 1),
            pv_w=round(tr.pv_w, 1),
            grid_w=round(tr.grid_w, 1),
            inverter_w=[round(w, 1) for w in tr.inverter_ac_w],
            charger_ac_w=round(tr.charger_ac_w, 1),
            charger_dc_a=round(tr.charger_current_a, 3),
        )
        self.ctx.publish(self.ctx.topics.sim_truth, truth)
        if self._truth_log is not None:
            try:
                self._truth_log.write(truth.model_dump_json() + "\n")
                self._truth_log.flush()
            except OSError as exc:
                self.ctx.log.error(
                    "truth_file %s: %s; no longer written", self.settings.truth_file, exc
                )
                self._truth_log = None

    # ----------------------------------------------------------------- faults

    def on_fault(self, msg: Message) -> None:
        now = self.sim_now()
        try:
            fault = self._parse_fault(msg)
            if isinstance(fault, str):
                cleared = self.plant.clear_faults(fault or None, now_s=now)
                self.ctx.log.info("cleared %d fault(s) %s", cleared, fault or "(all)")
            else:
                injected = self.plant.inject(fault, now)
                self.ctx.log.info("fault injected: %s", injected.model_dump_json())
        except ValueError as exc:
            # a refused fault is answered like any refused command, and changes nothing
            self.ctx.ack(msg.topic, msg.payload, ok=False, reason=str(exc))
            raise
        self.ctx.ack(msg.topic, msg.payload, ok=True)

    def _parse_fault(self, msg: Message) -> faults.Fault | str:
        """The contract's SimFault, or else the plant's own fault JSON; ValueError if neither."""
        try:
            spec = parse_payload(SimFault, msg.topic, msg.payload)
            return contract_fault(spec, self.plant, self.layout)
        except (ValueError, ValidationError) as contract_error:
            if b'"kind"' not in msg.payload:
                raise
            try:
                return faults.parse_fault(msg.payload)
            except UsageError as exc:
                raise ValueError(f"{contract_error}; as a plant fault: {exc}") from exc
        except UsageError as exc:
            raise ValueError(str(exc)) from exc

    def garbage(self) -> None:
        now = self.sim_now()
        targets: list[tuple[can.BusABC, int | str]] = [(b, i) for i, (b, _) in enumerate(self.bms)]
        targets.append((self.charger_bus, "charger"))
        for bus, key in targets:
            rate = self.plant.bus_garbage_hz(key, now)
            for _ in range(round(rate * 0.1 * self.settings.speed)):
                extended = self._rng.random() < 0.5
                ident = self._rng.getrandbits(29 if extended else 11)
                data = bytes(self._rng.getrandbits(8) for _ in range(self._rng.randint(0, 8)))
                self._send(bus, ident, data, extended)

    # ----------------------------------------------------------------- CAN

    def _start_hub(self, address: str) -> CanHub | None:
        if not address:
            return None
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"sim: can_hub {address!r} is not host:port")
        hub = CanHub(host, int(port)).start()
        self.ctx.log.info("CAN hub (socketcand) listening on %s:%d", hub.host, hub.port)
        return hub

    def _open(self, cfg: CanBusSettings) -> can.BusABC:
        return open_bus(cfg.interface, cfg.channel, None, cfg.options)

    def _reader(self, bus: can.BusABC, handler: Any) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    message = bus.recv(timeout=0.2)
                except (can.CanError, OSError, ValueError) as exc:
                    self.ctx.log.warning("CAN receive failed: %s", exc)
                    self._stop.wait(1.0)
                    continue
                if message is None or message.is_error_frame or message.is_remote_frame:
                    continue
                self.ctx.post(functools.partial(handler, message))

        thread = threading.Thread(target=run, name="sim-can-rx", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send(self, bus: can.BusABC, ident: int, data: bytes, extended: bool) -> None:
        try:
            bus.send(can.Message(arbitration_id=ident, data=data, is_extended_id=extended), 0.2)
        except can.CanError as exc:
            self.ctx.log.warning("CAN send of %X failed: %s", ident, exc)

    def _on_bms(self, index: int, message: can.Message) -> None:
        now = self.sim_now()
        self.plant.step(now)
        bus, emu = self.bms[index]
        data = bytes(message.data)
        for frame in emu.on_frame(
            self.plant, message.arbitration_id, data, message.is_extended_id, now
        ):
            self._send(bus, frame.arbitration_id, frame.data, frame.extended)

    def _on_charger(self, message: can.Message) -> None:
        now = self.sim_now()
        self.plant.step(now)
        replies = self.rectifier.on_frame(
            self.plant, message.arbitration_id, bytes(message.data), now
        )
        for frame in replies:
            self._send(self.charger_bus, frame.arbitration_id, frame.data, True)

    # ----------------------------------------------------------------- inverters over TCP

    def _listen(self, unit: int, address: str) -> socket.socket:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"sim: inverter_listen {address!r}: expected host:port")
        server = socket.create_server((host, int(port)), reuse_port=False)
        server.settimeout(0.2)

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.ctx.post(functools.partial(self._attach, unit, conn))

        thread = threading.Thread(target=accept, name=f"sim-inv{unit}-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return server

    def _attach(self, unit: int, conn: socket.socket) -> None:
        if self.plant.gateway_down(unit, self.sim_now()):
            conn.close()
            return
        self._close_conn(unit)
        self._conns[unit] = conn
        conn.settimeout(0.2)

        def read() -> None:
            while not self._stop.is_set() and self._conns[unit] is conn:
                try:
                    data = conn.recv(256)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.ctx.post(functools.partial(self._on_inverter_bytes, unit, conn, data))

        thread = threading.Thread(target=read, name=f"sim-inv{unit}-rx", daemon=True)
        thread.start()

    def _on_inverter_bytes(self, unit: int, conn: socket.socket, data: bytes) -> None:
        if self._conns[unit] is not conn:
            return
        now = self.sim_now()
        self.plant.step(now)
        reply = self.inverter_emus[unit].on_bytes(self.plant, data, now)
        if reply:
            try:
                conn.sendall(reply)
            except OSError:
                self._close_conn(unit)

    def _close_conn(self, unit: int) -> None:
        conn = self._conns[unit]
        self._conns[unit] = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    # ----------------------------------------------------------------- stop

    def stop(self) -> None:
        self._stop.set()
        for unit in range(len(self._conns)):
            self._close_conn(unit)
        for server in self._servers:
            server.close()
        for thread in self._threads:
            thread.join(0.5)
        for bus, _ in self.bms:
            bus.shutdown()
        self.charger_bus.shutdown()
        if self.hub is not None:
            self.hub.stop()
        if self._truth_log is not None:
            self._truth_log.close()


SERVICE = Sim


def main(argv: list[str] | None = None) -> int:
    """Run the simulator with settings from the environment."""
    del argv
    return run_service(Sim, load_settings(SimSettings))
