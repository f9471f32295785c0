"""A minimal service that shows the runtime's patterns (and is what the runtime tests run).

Copy this shape for a real service: settings class, runtime settings model,
start() registering handlers/timers/discovery, stop() going to the safe state.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, Field

from gridzero import ha
from gridzero.contract import InverterCommand, parse_payload
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import ServiceSettings, load_settings


class ExampleSettings(ServiceSettings):
    """Start-up settings (environment / YAML)."""

    tick_s: float = Field(default=0.2, gt=0, le=10, description="how often the state is published")


class ExampleRuntime(BaseModel):
    """Settings a user may change at runtime (MQTT / Home Assistant)."""

    target_w: float = Field(
        default=0.0, ge=-1000, le=1000, json_schema_extra={"unit": "W", "step": 10}
    )
    enabled: bool = True
    mode: Literal["auto", "hold"] = "auto"


class ExampleService(Service[ExampleSettings]):
    """Counts ticks, echoes the last accepted command, exposes runtime settings."""

    name = "controller"
    settings_class = ExampleSettings

    def start(self) -> None:
        ctx = self.ctx
        self.ticks = int(ctx.store.get("ticks", 0))
        self.last_command_w: float | None = None
        self.runtime = ctx.runtime_settings(ExampleRuntime())
        ctx.subscribe(ctx.topics.inverter_set("u1"), self.on_command)
        ctx.action("reset", self.on_reset)
        ctx.every(self.settings.tick_s, self.tick)
        ctx.discovery(self.discovery)

    def on_command(self, msg: Message) -> None:
        command = parse_payload(InverterCommand, msg.topic, msg.payload)
        self.last_command_w = command.power_w
        self.ctx.ack(msg.topic, msg.payload, ok=True)

    def on_reset(self, payload: bytes) -> None:
        if payload.strip() not in (b"press", b""):
            raise ValueError(f"reset takes 'press', got {payload[:20]!r}")
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        self.ctx.store.set("ticks", self.ticks)
        self.ctx.publish(self.ctx.topics.controller_state, str(self.ticks), retain=True)

    def discovery(self) -> tuple[str, dict[str, object]]:
        topics = self.ctx.topics
        comps = [
            ha.sensor(
                "ticks", "Ticks", topics.controller_state, "ticks", state_class="total_increasing"
            ),
            *ha.settings_components(ExampleRuntime, topics, self.name),
            ha.button("reset", "Reset", topics.action_set(self.name, "reset")),
        ]
        return ha.device_discovery(
            ha.service_device(self.name, "example"), comps, topics.status(self.name)
        )

    def stop(self) -> None:
        self.ctx.store.set("ticks", self.ticks)


SERVICE = ExampleService

if __name__ == "__main__":
    sys.exit(run_service(ExampleService, load_settings(ExampleSettings)))
