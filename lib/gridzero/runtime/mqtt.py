"""The broker connection every service uses (paho-mqtt 2).

- Last will ``offline`` (retained) on the service's status topic; ``online``
  (retained) after every successful connect; ``stopped`` on a clean exit.
- Reconnects with exponential backoff (paho's loop thread) and re-subscribes
  every filter after each reconnect, so a restarted broker loses nothing we
  subscribed to.
- Incoming messages are handed to one callback; the service loop queues them
  so that all handlers run on the service's own thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gridzero.contract import ServiceStatus
from gridzero.errors import SettingsError
from gridzero.runtime.settings import MqttSettings

log = logging.getLogger(__name__)


def _no_delay(_client: object, _userdata: object, sock: object) -> None:
    """Send every MQTT packet at once (Nagle off): a command published while the previous
    packet is unacknowledged would otherwise wait for the broker's delayed ACK (~40 ms)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    retain: bool = False
    call: Callable[[], None] | None = None  # runtime-internal: a function posted to the loop


class Connection:
    """A paho client with last will, status, backoff and re-subscription."""

    def __init__(
        self,
        settings: MqttSettings,
        status_topic: str,
        on_message: Callable[[Message], None],
        client_name: str,
    ) -> None:
        self._settings = settings
        self._status_topic = status_topic
        self._on_message_cb = on_message
        self._filters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closing = False
        self.connect_count = 0
        self.on_connected: list[Callable[[], None]] = []
        client_id = f"gridzero-{client_name}-{socket.gethostname()[:16]}-{os.getpid()}"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
        )
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password or None)
        if settings.tls:
            self._set_tls(settings)
        self.client.will_set(status_topic, ServiceStatus.OFFLINE.value, qos=1, retain=True)
        self.client.reconnect_delay_set(
            min_delay=max(1, round(settings.reconnect_min_s)),
            max_delay=max(1, round(settings.reconnect_max_s)),
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = _no_delay
        self.client.on_connect_fail = self._on_connect_fail
        self._pending_mid: int | None = None
        self._last_failure = ""

    def _set_tls(self, settings: MqttSettings) -> None:
        """Verify the broker's certificate and host name (paho's default; never switched
        off); the CA and a client certificate from the settings."""

        def name(path: Path | None) -> str | None:
            return str(path) if path is not None else None

        try:
            self.client.tls_set(
                ca_certs=name(settings.tls_ca_file),
                certfile=name(settings.tls_cert_file),
                keyfile=name(settings.tls_key_file),
            )
        except (ssl.SSLError, OSError) as exc:
            files = ", ".join(
                f"{field}={value}"
                for field, value in (
                    ("mqtt.tls_ca_file", settings.tls_ca_file),
                    ("mqtt.tls_cert_file", settings.tls_cert_file),
                    ("mqtt.tls_key_file", settings.tls_key_file),
                )
                if value is not None
            )
            raise SettingsError(
                f"mqtt TLS files ({files or 'system CAs'}) cannot be used: {exc}"
            ) from exc

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def start(self) -> None:
        """Connect in the background; paho's thread retries until the broker answers."""
        self.client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s
        )
        self.client.loop_start()

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        with self._lock:
            self._filters[topic_filter] = qos
        if self.client.is_connected():
            self.client.subscribe(topic_filter, qos)

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(
        self, final_status: ServiceStatus = ServiceStatus.STOPPED, timeout_s: float = 1.0
    ) -> None:
        """Publish the final status (if connected), disconnect and stop the network thread."""
        self._closing = True
        if self.client.is_connected():
            info = self.client.publish(self._status_topic, final_status.value, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("final status %s not confirmed: %s", final_status.value, exc)
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    # paho callbacks (network thread)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%d refused the connection: %s",
                self._settings.host,
                self._settings.port,
                reason,
            )
            return
        self.connect_count += 1
        self._last_failure = ""
        log.info(
            "connected to broker %s:%d (connect #%d)",
            self._settings.host,
            self._settings.port,
            self.connect_count,
        )
        with self._lock:
            filters = list(self._filters.items())
        if not filters:
            self._ready()
            return
        # ready only once the broker confirmed every subscription: a message published
        # right after we report "connected" must reach our handlers
        _result, self._pending_mid = client.subscribe(filters)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._pending_mid:
            return
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused %d subscription(s): %s", len(refused), ", ".join(refused))
        self._pending_mid = None
        self._ready()

    def _ready(self) -> None:
        # `online` means: connected and every subscription in place
        self.client.publish(self._status_topic, ServiceStatus.ONLINE.value, qos=1, retain=True)
        self._connected.set()
        for callback in list(self.on_connected):
            callback()

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # paho calls this inside its `except OSError` around the connect: the exception in
        # flight says why (refused, unreachable, a certificate the CA did not sign, …).
        # Logged once per distinct reason, not at every retry.
        reason = str(sys.exc_info()[1] or "unknown reason")
        if reason != self._last_failure:
            self._last_failure = reason
            log.warning(
                "cannot connect to broker %s:%d%s: %s; retrying with backoff",
                self._settings.host,
                self._settings.port,
                " (TLS)" if self._settings.tls else "",
                reason,
            )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing:
            # the broker binds a connection to its user: a second login as the same user
            # (another copy of this service, a tool) replaces this one, and back again
            log.warning(
                "disconnected from broker: %s; reconnecting with backoff (if this repeats, "
                "something else may log in as user %r: one connection per user)",
                reason,
                self._settings.username,
            )

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self._on_message_cb(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
