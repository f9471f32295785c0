"""The telnet-console service: the asyncio telnet server on the MQTT runtime.

The runtime's loop thread receives the state topics and hands them to the
server's own asyncio thread (`ConsoleServer.deliver`); sessions publish their
commands through the runtime's connection (paho's publish is thread-safe).
The console commands nothing directly: every change goes to a service's
``settings/<name>/set`` or ``action/<name>/set`` topic, and that service
validates it and answers on its ``ack`` topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading

from gridzero import ha
from gridzero.errors import GridzeroError, SettingsError
from gridzero.runtime.mqtt import Message
from gridzero.runtime.service import Context, Service, run_service
from gridzero.runtime.settings import load_settings
from gridzero_telnet_console.server import ConsoleServer, ServerConfig
from gridzero_telnet_console.settings import (
    TelnetConsoleSettings,
    effective_bind_host,
    shared_networks,
)
from gridzero_telnet_console.snapshot import subscriptions

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0


class TelnetConsole(Service[TelnetConsoleSettings]):
    """Serves the console; subscribes to the state topics, publishes operator commands."""

    name = "telnet-console"
    settings_class = TelnetConsoleSettings

    def __init__(self, settings: TelnetConsoleSettings, ctx: Context) -> None:
        super().__init__(settings, ctx)
        self.server: ConsoleServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ctx = self.ctx
        settings = self.settings
        host = effective_bind_host(settings)  # SettingsError (exit 2) without a password
        if settings.password_hash == "" and settings.insecure_loopback_no_password:
            ctx.log.warning("telnet console runs WITHOUT a password, on %s only", host)
        shared = shared_networks(settings)
        ctx.log.info(
            "telnet console: addresses that stand for many clients (locked %s s only): %s",
            settings.shared_lockout_s,
            ", ".join(str(n) for n in shared) or "none",
        )
        config = ServerConfig(
            host=host,
            port=settings.port,
            password=settings.stored_hash(),
            topics=ctx.topics,
            max_sessions=settings.max_sessions,
            max_unauthenticated=settings.max_unauthenticated,
            max_unauthenticated_per_address=settings.max_unauthenticated_per_address,
            max_failed_logins=settings.max_failed_logins,
            lockout_s=settings.lockout_s,
            shared=shared,
            shared_lockout_s=settings.shared_lockout_s,
            idle_timeout_s=settings.idle_timeout_s,
            login_timeout_s=settings.login_timeout_s,
            refresh_s=settings.refresh_s,
            max_line_chars=settings.max_line_chars,
            ack_timeout_s=settings.ack_timeout_s,
        )
        self.server = ConsoleServer(config, self._publish, clock=ctx.now)
        self._thread = threading.Thread(target=self._serve, name="telnet-console", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise GridzeroError(f"telnet console did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            raise SettingsError(
                f"telnet console cannot listen on {host}:{settings.port}: {self._error}"
            ) from self._error
        for topic_filter in subscriptions(ctx.topics):
            ctx.subscribe(topic_filter, self._on_message)
        ctx.discovery(self.discovery)

    @property
    def port(self) -> int:
        """The port actually bound (settings may say 0)."""
        return self.server.port if self.server is not None else self.settings.port

    def _on_message(self, msg: Message) -> None:
        if self.server is not None:
            self.server.deliver(msg.topic, msg.payload)

    def _publish(self, topic: str, payload: str) -> None:
        self.ctx.publish(topic, payload, qos=1)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except OSError as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        assert self.server is not None
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self.server.start()  # OSError (address in use, ...) reaches _serve
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self.server.close()

    def stop(self) -> None:
        loop, event, thread = self._loop, self._stop_event, self._thread
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(event.set)
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                self.ctx.log.error("telnet server did not stop within %s s", STOP_TIMEOUT_S)

    def discovery(self) -> tuple[str, dict[str, object]]:
        topics = self.ctx.topics
        status = ha.text_sensor(
            "status",
            "Status",
            topics.status(self.name),
            "{{ value }}",
            entity_category="diagnostic",
            icon="mdi:console",
        )
        return ha.device_discovery(
            ha.service_device(self.name, "telnet console"), [status], topics.status(self.name)
        )


SERVICE = TelnetConsole

if __name__ == "__main__":
    sys.exit(run_service(TelnetConsole, load_settings(TelnetConsoleSettings)))
