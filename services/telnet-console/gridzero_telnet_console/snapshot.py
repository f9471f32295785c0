"""What the console knows about the system: the latest payload of every state topic.

Pure: `ingest` takes a topic, its payload bytes and ``now_s`` (monotonic
seconds, the receive time) and updates a `Snapshot`. Payloads are validated
against the MQTT contract; a payload that does not match is counted and
dropped, never shown as if it were valid. Every collection is bounded, so a
flood of made-up topics cannot grow memory.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from gridzero.contract import (
    SERVICES,
    Ack,
    BmsLimits,
    ChargerState,
    ControllerState,
    InverterState,
    LogRecord,
    ModuleState,
    PackState,
    PayloadError,
    RawFrame,
    ShuntState,
    Topics,
    parse_payload,
)
from gridzero.runtime.freshness import FreshValue

MAX_MODULES = 64
MAX_INVERTERS = 16
MAX_SETTINGS = 1000
MAX_SETTING_CHARS = 256
LOG_LINES = 500
RAW_LINES = 500
ACK_LINES = 100
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One log record, raw frame or ack, numbered so each session can follow its own cursor."""

    seq: int
    service: str
    at_s: float
    item: LogRecord | RawFrame | Ack


@dataclass(slots=True)
class Snapshot:
    """Latest state per topic. Owned by the service; sessions read it."""

    status: dict[str, str] = field(default_factory=dict)
    last_seen_s: dict[str, float] = field(default_factory=dict)
    limits: FreshValue[BmsLimits] | None = None
    pack: FreshValue[PackState] | None = None
    charger: FreshValue[ChargerState] | None = None
    shunt: FreshValue[ShuntState] | None = None
    controller: FreshValue[ControllerState] | None = None
    modules: dict[tuple[int, int], FreshValue[ModuleState]] = field(default_factory=dict)
    inverters: dict[str, FreshValue[InverterState]] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    logs: deque[Entry] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    raw: deque[Entry] = field(default_factory=lambda: deque(maxlen=RAW_LINES))
    acks: deque[Entry] = field(default_factory=lambda: deque(maxlen=ACK_LINES))
    seq: int = 0
    bad_payloads: int = 0
    last_error: str = ""

    def setting_names(self, service: str) -> list[str]:
        """Known settings of a service (``name`` or ``unit.name``), from their retained echoes."""
        prefix = service + "."
        return sorted(k[len(prefix) :] for k in self.settings if k.startswith(prefix))


def subscriptions(topics: Topics) -> list[str]:
    """The MQTT topic filters the console subscribes to."""
    base = topics.base
    return [
        f"{base}/+/status",
        f"{base}/+/log",
        f"{base}/+/ack",
        f"{base}/+/raw",
        f"{base}/+/settings/+",
        f"{base}/+/+/settings/+",
        topics.bms_limits,
        topics.bms_pack,
        f"{base}/bms/module/+",
        topics.charger_state,
        f"{base}/inverter/+/state",
        topics.shunt_state,
        topics.controller_state,
    ]


def ingest(snap: Snapshot, topics: Topics, topic: str, payload: bytes, now_s: float) -> bool:
    """Store one message; False (and a counted error) if it is not ours or not valid."""
    prefix = topics.base + "/"
    if not topic.startswith(prefix):
        return False
    parts = topic[len(prefix) :].split("/")
    service = parts[0]
    if service not in SERVICES:
        return False
    msg = _Message(service, parts[1:], topic, payload, now_s)
    try:
        handled = _dispatch(snap, msg)
    except PayloadError as exc:
        snap.bad_payloads += 1
        snap.last_error = str(exc)[:200]
        return False
    if handled:
        snap.last_seen_s[service] = now_s
    return handled


@dataclass(frozen=True, slots=True)
class _Message:
    service: str
    rest: list[str]  # topic parts after <base>/<service>/
    topic: str
    payload: bytes
    now_s: float


def _dispatch(snap: Snapshot, msg: _Message) -> bool:
    service, rest, topic, payload = msg.service, msg.rest, msg.topic, msg.payload
    if rest == ["status"]:
        text = payload.decode("utf-8", "replace").strip()
        if text not in ("online", "offline", "stopped"):
            raise PayloadError(f"{topic}: status {text[:40]!r} is not online/offline/stopped")
        snap.status[service] = text
        if text != "online":
            snap.last_seen_s.pop(service, None)
            return False  # a status change is not data from the service
        return True
    if len(rest) == 1 and rest[0] in ("log", "ack", "raw"):
        return _ring(snap, msg)
    if len(rest) >= 2 and rest[-2] == "settings" and len(rest) <= 3:
        return _setting(snap, service, rest, topic, payload)
    return _state(snap, msg)


def _ring(snap: Snapshot, msg: _Message) -> bool:
    kind, topic, payload = msg.rest[0], msg.topic, msg.payload
    item: LogRecord | RawFrame | Ack
    if kind == "log":
        item = parse_payload(LogRecord, topic, payload)
        ring = snap.logs
    elif kind == "raw":
        item = parse_payload(RawFrame, topic, payload)
        ring = snap.raw
    else:
        item = parse_payload(Ack, topic, payload)
        ring = snap.acks
    snap.seq += 1
    ring.append(Entry(snap.seq, msg.service, msg.now_s, item))
    return True


def _setting(snap: Snapshot, service: str, rest: list[str], topic: str, payload: bytes) -> bool:
    names = [*rest[:-2], rest[-1]]
    if not all(_NAME.match(n) for n in names):
        raise PayloadError(f"{topic}: setting name is not [A-Za-z0-9_.-]{{1,64}}")
    key = ".".join((service, *names))
    if key not in snap.settings and len(snap.settings) >= MAX_SETTINGS:
        raise PayloadError(f"{topic}: more than {MAX_SETTINGS} settings known; ignored")
    text = payload.decode("utf-8", "replace").strip()
    snap.settings[key] = text[:MAX_SETTING_CHARS]
    return True


def _state(snap: Snapshot, msg: _Message) -> bool:
    service, rest, topic, payload, now_s = msg.service, msg.rest, msg.topic, msg.payload, msg.now_s
    if service == "bms" and rest == ["limits"]:
        snap.limits = FreshValue(parse_payload(BmsLimits, topic, payload), now_s)
    elif service == "bms" and rest == ["pack"]:
        snap.pack = FreshValue(parse_payload(PackState, topic, payload), now_s)
    elif service == "bms" and len(rest) == 2 and rest[0] == "module":
        module = parse_payload(ModuleState, topic, payload)
        key = (module.bus, module.module)
        if key not in snap.modules and len(snap.modules) >= MAX_MODULES:
            raise PayloadError(f"{topic}: more than {MAX_MODULES} modules; ignored")
        snap.modules[key] = FreshValue(module, now_s)
    elif service == "charger" and rest == ["state"]:
        snap.charger = FreshValue(parse_payload(ChargerState, topic, payload), now_s)
    elif service == "inverter" and len(rest) == 2 and rest[1] == "state":
        unit = rest[0]
        if not _NAME.match(unit):
            raise PayloadError(f"{topic}: inverter unit name is not [A-Za-z0-9_.-]{{1,64}}")
        if unit not in snap.inverters and len(snap.inverters) >= MAX_INVERTERS:
            raise PayloadError(f"{topic}: more than {MAX_INVERTERS} inverter units; ignored")
        snap.inverters[unit] = FreshValue(parse_payload(InverterState, topic, payload), now_s)
    elif service == "shunt" and rest == ["state"]:
        snap.shunt = FreshValue(parse_payload(ShuntState, topic, payload), now_s)
    elif service == "controller" and rest == ["state"]:
        snap.controller = FreshValue(parse_payload(ControllerState, topic, payload), now_s)
    else:
        return False
    return True
