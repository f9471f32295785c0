"""The housebatt-compat service: gridzero's state in, the original ESP32 project's topics out.

Optional (not started by default: ``gridzero up --with housebatt-compat``, compose profile
``housebatt-compat``). It only reads gridzero's topics and writes the original's
(``battery/...``, ``goatshed/...``); the broker's ACL lets it write nothing else. The mapping
is pure (``mapping.py``); this shell keeps the latest fresh message of each kind (retained
ones are history, never fresh: ``gridzero.runtime.freshness``) and publishes at the
original's rates: every 0.5 s, the cells every 10 s, the events as they happen.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TypeVar

from pydantic import Field

from gridzero.contract import (
    HOUSEBATT_STATUS_TOPIC,
    BmsLimits,
    ControllerState,
    ModuleState,
    PackState,
    ShuntState,
    parse_payload,
)
from gridzero.runtime.freshness import Freshness, FreshValue, Stamped
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings
from gridzero_housebatt_compat.mapping import (
    BOOT_TEXT,
    Ages,
    Inputs,
    Memory,
    cells_topic,
    controller_events,
    fast_topics,
    module_name,
    pack_events,
    shunt_events,
)

P = TypeVar("P", bound=Stamped)

FAST_PERIOD_S = 0.5  # housebatt.ino line 517: `next_send = millis() + 500`
CELLS_PERIOD_S = 10.0  # line 650: `next_battstats = millis() + 10000`


class HousebattCompatSettings(ServiceSettings):
    """Start-up settings (environment `GRIDZERO_...` / YAML)."""

    state_stale_s: float = Field(
        5.0,
        ge=1.0,
        le=60.0,
        description="pack, shunt, limits and controller state older than this are not republished",
    )
    module_stale_s: float = Field(
        15.0,
        ge=1.0,
        le=600.0,
        description="a module's cells older than this are left out of battery/cells (the bms "
        "publishes each module every 5 s)",
    )


class HousebattCompat(Service[HousebattCompatSettings]):
    """Publishes the original's topics from gridzero's state."""

    name = "housebatt-compat"
    settings_class = HousebattCompatSettings

    def start(self) -> None:
        ctx = self.ctx
        t = ctx.topics
        self.started_s = ctx.now()
        self.ages = Ages(self.settings.state_stale_s, self.settings.module_stale_s)
        self.inputs = Inputs()
        self.memory = Memory()
        self.booted = False
        self.cells_sent_s: float | None = None
        self.gates: dict[str, Freshness] = {}
        ctx.subscribe(t.bms_pack, self.on_pack)
        ctx.subscribe(t.svc("bms", "module", "+"), self.on_module)
        ctx.subscribe(t.bms_limits, self.on_limits)
        ctx.subscribe(t.shunt_state, self.on_shunt)
        ctx.subscribe(t.controller_state, self.on_controller)
        ctx.on_connect(self.on_connected)
        ctx.every(FAST_PERIOD_S, self.publish_fast, name="battery topics")
        ctx.every(1.0, self.publish_cells, name="battery/cells")

    def _take(self, msg: Message, payload: P) -> FreshValue[P]:
        """A fresh message with its arrival time (one gate per topic); NotFreshError (logged,
        refused) for a retained, old or repeated one."""
        gate = self.gates.setdefault(msg.topic, Freshness(msg.topic))
        return self.ctx.take(gate, msg, payload)

    def _status(self, events: list[str]) -> None:
        for text in events:
            self.ctx.publish(HOUSEBATT_STATUS_TOPIC, text)

    # ------------------------------------------------------------------ inputs

    def on_connected(self) -> None:
        """The original's boot message (housebatt.ino line 420), once per start."""
        if not self.booted:
            self.booted = True
            self._status([BOOT_TEXT])

    def on_pack(self, msg: Message) -> None:
        p = parse_payload(PackState, msg.topic, msg.payload)
        self.inputs = replace(self.inputs, pack=self._take(msg, p))
        self.memory, events = pack_events(self.memory, p)
        self._status(events)

    def on_module(self, msg: Message) -> None:
        p = parse_payload(ModuleState, msg.topic, msg.payload)
        if msg.topic != self.ctx.topics.bms_module(p.bus, p.module):
            raise ValueError(f"{msg.topic}: module {p.bus}-{p.module}, not this topic's")
        module_name(p.bus, p.module)  # refused here (ValueError) before it is kept: a bus
        # with no letter would otherwise break every battery/cells message until it went stale
        taken = self._take(msg, p)
        self.inputs = replace(
            self.inputs, modules={**self.inputs.modules, (p.bus, p.module): taken}
        )
        if self.cells_sent_s is None:
            self.publish_cells()  # the first as soon as there are cells, then every 10 s

    def on_limits(self, msg: Message) -> None:
        p = parse_payload(BmsLimits, msg.topic, msg.payload)
        self.inputs = replace(self.inputs, limits=self._take(msg, p))

    def on_shunt(self, msg: Message) -> None:
        p = parse_payload(ShuntState, msg.topic, msg.payload)
        self.inputs = replace(self.inputs, shunt=self._take(msg, p))
        self.memory, events = shunt_events(self.memory, p)
        self._status(events)

    def on_controller(self, msg: Message) -> None:
        p = parse_payload(ControllerState, msg.topic, msg.payload)
        taken = self._take(msg, p)
        self.inputs = replace(self.inputs, controller=taken)
        limits = self.inputs.limits
        fresh_limits = (
            limits.value
            if limits is not None and limits.fresh(taken.at_s, self.ages.state_stale_s)
            else None
        )
        self.memory, events = controller_events(self.memory, p, fresh_limits)
        self._status(events)

    # ------------------------------------------------------------------ outputs

    def publish_fast(self) -> None:
        now = self.ctx.now()
        for topic, text in fast_topics(self.inputs, now, now - self.started_s, self.ages):
            self.ctx.publish(topic, text)

    def publish_cells(self) -> None:
        now = self.ctx.now()
        if self.cells_sent_s is not None and now - self.cells_sent_s < CELLS_PERIOD_S - 0.05:
            return
        text = cells_topic(self.inputs, now, self.ages)
        if text is not None:
            self.ctx.publish("battery/cells", text)
            self.cells_sent_s = now


SERVICE = HousebattCompat

if __name__ == "__main__":
    sys.exit(run_service(HousebattCompat, load_settings(HousebattCompatSettings)))
