"""The service runtime: one loop per process that owns timers, handlers and shutdown.

A service subclasses `Service`, registers MQTT handlers and timers on its
`Context` in `start()`, and puts its device into the safe state in `stop()`.
All handlers and timers run on one thread (the loop), so service code needs no
locks; paho's network thread only queues messages.

    class Bms(Service[BmsSettings]):
        name = "bms"
        settings_class = BmsSettings

        def start(self) -> None:
            self.ctx.subscribe(self.ctx.topics.charger_state, self.on_charger)
            self.ctx.every(0.5, self.publish_limits)

        def stop(self) -> None:
            ...  # safe state

``run_service(Bms, argv)`` is what ``gridzero run bms`` calls.
"""

from __future__ import annotations

import abc
import heapq
import itertools
import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, get_args

from paho.mqtt.client import topic_matches_sub
from pydantic import BaseModel, ValidationError

from gridzero.contract import (
    HA_STATUS_TOPIC,
    Ack,
    Payload,
    PayloadError,
    ServiceStatus,
    Topics,
    describe_validation_error,
    format_setting,
    parse_setting_text,
)
from gridzero.runtime.freshness import Freshness, FreshValue, Stamped
from gridzero.runtime.health import HEARTBEAT_S, health_path
from gridzero.runtime.logs import MqttLogHandler, RawRing, setup_logging
from gridzero.runtime.mqtt import Connection, Message
from gridzero.runtime.settings import ServiceSettings
from gridzero.runtime.store import Store

S = TypeVar("S", bound=ServiceSettings)
M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Stamped)
Handler = Callable[[Message], None]

# Errors a handler raises for bad input: logged as a rejection, the service goes on.
INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, ValidationError, UnicodeDecodeError)


@dataclass(order=True)
class _Timer:
    due_s: float
    seq: int
    period_s: float | None = field(compare=False)
    callback: Callable[[], None] = field(compare=False)
    name: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        self.cancelled = True


class Context:
    """What a service gets from the runtime: publish, subscribe, timers, store, logging."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topics = Topics(settings.base_topic)
        self.log = logging.getLogger(f"gridzero.{name}")
        self.ring = RawRing(clock=clock)
        self.store = Store(settings.data_dir / f"{name}.json")
        self.now = clock
        self.wall = wall
        self.handler_errors = 0
        self.rejected_inputs = 0
        self._inbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._subs: list[tuple[str, Handler]] = []
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._discovery: list[Callable[[], tuple[str, dict[str, Any]]]] = []
        self._on_connect: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self.conn = Connection(settings.mqtt, self.topics.status(name), self._inbox.put, name)
        # (re)announce from the loop thread, not paho's
        self.conn.on_connected.append(lambda: self._inbox.put(Message(_CONNECTED, b"")))

    # ----------------------------------------------------------------- messaging

    def publish(
        self, topic: str, payload: Payload | str | bytes, *, retain: bool = False, qos: int = 0
    ) -> None:
        """Publish a model (as JSON), text or bytes."""
        data = payload.model_dump_json().encode() if isinstance(payload, BaseModel) else payload
        self.conn.publish(topic, data, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler`` (on the loop thread) for every message matching the filter."""
        self._subs.append((topic_filter, handler))
        self.conn.subscribe(topic_filter, qos)

    def ack(self, topic: str, payload: bytes, *, ok: bool, reason: str = "") -> None:
        """Answer a command on ``<base>/<service>/ack``."""
        value = payload[:200].decode("utf-8", "replace")
        self.publish(
            self.topics.ack(self.name),
            Ack(ts=self.wall(), ok=ok, topic=topic, value=value, reason=reason),
        )

    def take(self, gate: Freshness, msg: Message, payload: P) -> FreshValue[P]:
        """``payload`` of ``msg`` with its arrival time by this host's clock, if ``gate``
        admits it; NotFreshError (logged as a rejected input, nothing changes) otherwise."""
        return gate.take(payload, retained=msg.retain, now_s=self.now(), wall_s=self.wall())

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Run after every (re)connect, on the loop thread: re-publish retained state here."""
        self._on_connect.append(callback)

    def discovery(self, build: Callable[[], tuple[str, dict[str, Any]]]) -> None:
        """Register a Home Assistant discovery message; sent at connect and when HA comes online."""
        if not self._discovery:
            self.conn.subscribe(HA_STATUS_TOPIC)
        self._discovery.append(build)

    def publish_discovery(self) -> None:
        for build in self._discovery:
            topic, payload = build()
            self.conn.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread (thread-safe): how I/O threads hand over frames."""
        self._inbox.put(Message(_CALL, b"", False, callback))

    # ----------------------------------------------------------------- timers

    def every(
        self, period_s: float, callback: Callable[[], None], *, name: str = "", start_s: float = 0.0
    ) -> _Timer:
        """Call ``callback`` every ``period_s`` seconds (first after ``start_s``)."""
        if period_s <= 0:
            raise ValueError(f"timer {name or callback!r}: period {period_s} s must be > 0")
        timer = _Timer(self.now() + start_s, next(self._seq), period_s, callback, name)
        heapq.heappush(self._timers, timer)
        return timer

    def after(self, delay_s: float, callback: Callable[[], None], *, name: str = "") -> _Timer:
        """Call ``callback`` once, ``delay_s`` seconds from now."""
        timer = _Timer(self.now() + max(0.0, delay_s), next(self._seq), None, callback, name)
        heapq.heappush(self._timers, timer)
        return timer

    # ----------------------------------------------------------------- runtime settings and actions

    def runtime_settings(
        self,
        initial: M,
        on_change: Callable[[M], None] | None = None,
        *,
        unit: str | None = None,
        limit: Callable[[M], str] | None = None,
    ) -> RuntimeSettings[M]:
        """Expose a pydantic model's fields as MQTT/Home Assistant settings (see RuntimeSettings).

        ``limit`` returns why a whole value would widen a start-up (hardware or chemistry)
        limit, or "" if it does not: such a value is refused, also when restored from disk."""
        return RuntimeSettings(self, initial, on_change, unit=unit, limit=limit)

    def action(
        self, name: str, handler: Callable[[bytes], None], *, unit: str | None = None
    ) -> None:
        """A button: ``<base>/<service>[/<unit>]/action/<name>/set``. Raise ValueError to refuse."""
        topic = self.topics.action_set(self.name, name, unit=unit)

        def run(msg: Message) -> None:
            if msg.retain:
                self.ack(msg.topic, msg.payload, ok=False, reason=RETAINED_REFUSED)
                self.log.warning("action %s refused: retained message", name)
                return
            try:
                handler(msg.payload)
            except INPUT_ERRORS as exc:
                self.ack(msg.topic, msg.payload, ok=False, reason=str(exc))
                self.log.warning("action %s refused: %s", name, exc)
                return
            self.ack(msg.topic, msg.payload, ok=True)
            self.log.info("action %s done", name)

        self.subscribe(topic, run)

    # ----------------------------------------------------------------- loop

    def request_stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_loop(self) -> None:
        """Dispatch messages and timers until ``request_stop``."""
        while not self._stop.is_set():
            self._run_due_timers()
            timeout = self._time_to_next_timer()
            try:
                msg = self._inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            if msg is None:
                break
            self._dispatch(msg)

    def _time_to_next_timer(self) -> float:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return 0.5
        return max(0.0, min(0.5, self._timers[0].due_s - self.now()))

    def _run_due_timers(self) -> None:
        now = self.now()
        while self._timers and self._timers[0].due_s <= now and not self._stop.is_set():
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.period_s is not None:
                # after a stall, do not fire a burst of catch-up calls
                timer.due_s = max(timer.due_s + timer.period_s, now)
                heapq.heappush(self._timers, timer)
            self._guard(timer.name or getattr(timer.callback, "__name__", "timer"), timer.callback)

    def _dispatch(self, msg: Message) -> None:
        if msg.topic == _CALL and msg.call is not None:
            self._guard("posted call", msg.call)
            return
        if msg.topic == _CONNECTED:
            self.publish_discovery()
            for callback in self._on_connect:
                self._guard("on_connect", callback)
            return
        if msg.topic == HA_STATUS_TOPIC and msg.payload.strip() == b"online":
            self.publish_discovery()
        for topic_filter, handler in self._subs:
            if topic_matches_sub(topic_filter, msg.topic):
                self._handle(handler, msg)

    def _handle(self, handler: Handler, msg: Message) -> None:
        try:
            handler(msg)
        except PayloadError as exc:
            self.rejected_inputs += 1
            self.log.warning("rejected message: %s", exc)
        except INPUT_ERRORS as exc:
            self.rejected_inputs += 1
            self.log.warning(
                "rejected message on %s: %s; payload %r", msg.topic, exc, msg.payload[:120]
            )
        except Exception:
            # a bug in a handler must not take the device's safety timers down with it
            self.handler_errors += 1
            self.log.exception(
                "handler for %s failed; payload %r\nlast raw frames:\n%s",
                msg.topic,
                msg.payload[:200],
                self.ring.dump(),
            )

    def _guard(self, what: str, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self.handler_errors += 1
            self.log.exception("%s failed\nlast raw frames:\n%s", what, self.ring.dump())


# Every service's ``restart`` button: the process exits with RESTART_EXIT_CODE and its
# supervisor starts it again (Docker's ``restart: unless-stopped``, `gridzero up`). It goes
# through the same shutdown as SIGTERM, so the service leaves its devices safe first.
RESTART_ACTION = "restart"
RESTART_PAYLOAD = b"PRESS"  # Home Assistant's button payload; anything else is refused
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", not a failure of the settings (2)
RESTART_DELAY_S = 0.5  # lets the ack and the log line out before the shutdown

RETAINED_REFUSED = (
    "refused: a retained message is never taken as a command (the broker would replay it "
    "after every restart); publish it without the retain flag, and clear the retained one "
    "with an empty retained message"
)

_CONNECTED = "\x00connected"  # internal markers, never valid MQTT topics from the broker
_CALL = "\x00call"


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type is bool, or a union with bool in it."""
    return annotation is bool or any(_takes_bool(arg) for arg in get_args(annotation))


class RuntimeSettings(Generic[M]):
    """Settings a user may change at runtime over MQTT / Home Assistant.

    Each field of the model is one setting: ``.../settings/<field>/set`` changes
    it, ``.../settings/<field>`` echoes it (retained). A change is validated
    against the whole model (ranges, cross-field rules); a refused change is
    answered on ``ack`` with the reason, and the unchanged value is re-published
    so a UI that already showed the new value snaps back. Accepted values are
    persisted (debounced) and survive restarts.
    """

    def __init__(
        self,
        ctx: Context,
        initial: M,
        on_change: Callable[[M], None] | None,
        *,
        unit: str | None,
        limit: Callable[[M], str] | None = None,
    ) -> None:
        self._ctx = ctx
        self._unit = unit
        self._key = "settings" + (f"/{unit}" if unit else "")
        self._on_change = on_change
        self._limit = limit or (lambda _value: "")
        self._model: type[M] = type(initial)
        why = self._limit(initial)
        if why:
            # the start-up defaults themselves break a start-up limit: a settings bug
            raise ValueError(f"{ctx.name} runtime defaults: {why}")
        self.value: M = self._restore(initial)
        ctx.subscribe(ctx.topics.setting_set(ctx.name, "+", unit=unit), self._on_set)
        ctx.on_connect(self.publish_all)

    def _restore(self, initial: M) -> M:
        stored = self._ctx.store.get(self._key) or {}
        if not isinstance(stored, dict) or not stored:
            return initial
        # the saved set as a whole first: its fields were accepted together, and one at a
        # time against the start-up defaults a valid combination can fall apart
        whole, reason = self._validated({**initial.model_dump(), **stored})
        if whole is not None:
            return whole
        self._ctx.log.error(
            "saved settings %s no longer valid as a whole (%s); restoring field by field",
            stored,
            reason,
        )
        value = initial
        for name, raw in stored.items():
            candidate, why = self._validated({**value.model_dump(), name: raw})
            if candidate is None:
                self._ctx.log.error(
                    "persisted setting %s=%r no longer valid, using %r: %s",
                    name,
                    raw,
                    getattr(value, name, None),
                    why,
                )
                continue
            value = candidate
        return value

    def _validated(self, data: dict[str, Any]) -> tuple[M | None, str]:
        """The value if it is valid and inside the start-up limits, else (None, why)."""
        try:
            candidate = self._model.model_validate(data)
        except ValidationError as exc:
            return None, describe_validation_error(exc)
        why = self._limit(candidate)
        return (None, why) if why else (candidate, "")

    def _name_from(self, topic: str) -> str:
        return topic.rsplit("/", 2)[-2]

    def publish_all(self) -> None:
        for name in type(self.value).model_fields:
            self._echo(name)

    def _echo(self, name: str) -> None:
        topic = self._ctx.topics.setting(self._ctx.name, name, unit=self._unit)
        self._ctx.publish(topic, format_setting(getattr(self.value, name)), retain=True, qos=1)

    def _on_set(self, msg: Message) -> None:
        name = self._name_from(msg.topic)
        fields = type(self.value).model_fields
        if name not in fields:
            self._refuse(msg, f"unknown setting {name!r}; known: {', '.join(fields)}")
            return
        if msg.retain:
            self._refuse(msg, RETAINED_REFUSED, name)
            return
        try:
            raw = parse_setting_text(msg.payload)
        except PayloadError as exc:
            self._refuse(msg, str(exc), name)
            return
        if isinstance(raw, bool) and not _takes_bool(fields[name].annotation):
            # pydantic would take true/on as 1 and false/off as 0: a switch sent to a
            # current or power setting would set it to 1 A or 1 W
            text = msg.payload.decode("utf-8", "replace").strip()
            self._refuse(msg, f"{name} is not a true/false setting: {text!r} refused", name)
            return
        new, why = self._validated({**self.value.model_dump(), name: raw})
        if new is None:
            self._refuse(msg, why, name)
            return
        saved = self.apply(new, changed=name)
        if saved:
            self._ctx.ack(msg.topic, msg.payload, ok=True)
        else:
            self._ctx.ack(
                msg.topic,
                msg.payload,
                ok=False,
                reason=f"{name} is in force now but was NOT saved ({self._ctx.store.path}: "
                "cannot write); it will be lost at the next restart",
            )

    def apply(self, new: M, *, changed: str | None = None) -> bool:
        """Adopt a validated value (also used by a service for its own changes).

        Returns False if the change is in force but could not be saved."""
        old = self.value
        saved = True
        self.value = new
        diff = {
            n: getattr(new, n) for n in type(new).model_fields if getattr(new, n) != getattr(old, n)
        }
        if diff:
            stored = dict(self._ctx.store.get(self._key) or {})
            stored.update(new.model_dump(mode="json", include=set(diff)))
            self._ctx.store.set(self._key, stored)
            self._ctx.log.info(
                "setting changed: %s", ", ".join(f"{k}={v!r}" for k, v in diff.items())
            )
            # written now, not at the next debounced flush: a change that was acknowledged
            # must survive a crash right after it (settings change rarely; counters do not)
            try:
                self._ctx.store.flush()
            except OSError as exc:
                saved = False
                self._ctx.log.error("setting change not saved to %s: %s", self._ctx.store.path, exc)
        for name in diff or ([changed] if changed else []):
            self._echo(name)
        if diff and self._on_change is not None:
            self._on_change(new)
        return saved

    def _refuse(self, msg: Message, reason: str, name: str | None = None) -> None:
        self._ctx.log.warning(
            "setting change refused on %s (%r): %s", msg.topic, msg.payload[:60], reason
        )
        self._ctx.ack(msg.topic, msg.payload, ok=False, reason=reason)
        if name is not None:
            self._echo(name)


class Service(abc.ABC, Generic[S]):
    """Base of every service: settings and context in, start/stop out."""

    name: ClassVar[str]
    settings_class: ClassVar[type[ServiceSettings]]

    def __init__(self, settings: S, ctx: Context) -> None:
        self.settings = settings
        self.ctx = ctx

    @abc.abstractmethod
    def start(self) -> None:
        """Open transports and register handlers and timers on the context."""

    def stop(self) -> None:
        """Put the device into its safe state and release it. Must return within ~1 s."""


class ServiceRunner:
    """Runs one service: connect, loop, clean shutdown. Used by ``gridzero run`` and tests."""

    def __init__(self, service_cls: type[Service[Any]], settings: ServiceSettings) -> None:
        self.ctx = Context(service_cls.name, settings)
        self.service = service_cls(settings, self.ctx)
        self._log_handler = MqttLogHandler(
            lambda rec: self.ctx.publish(self.ctx.topics.log(self.ctx.name), rec),
            settings.mqtt_log_level,
            settings.mqtt_log_rate_per_s,
        )
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.restart_requested = False

    def run(self) -> None:
        """Block until ``stop()`` (or a signal) and shut down cleanly."""
        ctx = self.ctx
        logging.getLogger("gridzero").addHandler(self._log_handler)
        try:
            self.service.start()
            ctx.every(
                ctx.settings.store_flush_s,
                lambda: ctx.store.flush_with_backoff(ctx.now()),
                name="store flush",
            )
            ctx.every(HEARTBEAT_S, self._heartbeat, name="heartbeat")
            ctx.action(RESTART_ACTION, self._on_restart)
            ctx.conn.start()
            ctx.run_loop()
        finally:
            self._shutdown()

    def _on_restart(self, payload: bytes) -> None:
        """A person asked for a restart (console `R`, or the button): stop, to be started again."""
        if payload.strip() != RESTART_PAYLOAD:
            raise ValueError(
                f"restart wants the payload {RESTART_PAYLOAD.decode()!r}, got {payload[:32]!r}"
            )
        self.restart_requested = True
        self.ctx.log.warning(
            "restart requested: stopping (exit %d); the supervisor starts it again",
            RESTART_EXIT_CODE,
        )
        self.ctx.after(RESTART_DELAY_S, self.stop, name="restart")

    def _heartbeat(self) -> None:
        """Touch ``<data_dir>/<name>.health`` while the loop runs and the broker is connected.

        Docker's healthcheck (``gridzero health <name>``) reads its age: a hung loop
        or a lost broker makes the container unhealthy.
        """
        if self.ctx.conn.connected:
            path = health_path(self.ctx.settings.data_dir, self.ctx.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def _shutdown(self) -> None:
        ctx = self.ctx
        try:
            self.service.stop()
        except Exception:
            ctx.log.exception("stop() failed while going to the safe state")
        try:
            ctx.store.flush()
        except OSError as exc:
            ctx.log.error("could not save state to %s: %s", ctx.store.path, exc)
        logging.getLogger("gridzero").removeHandler(self._log_handler)
        ctx.conn.stop(ServiceStatus.STOPPED)
        ctx.log.info("stopped")

    def stop(self) -> None:
        self.ctx.request_stop()

    # tests run services in threads; processes use run() on the main thread

    def start_thread(self) -> None:
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc
                raise

        self._thread = threading.Thread(target=target, name=f"service-{self.ctx.name}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise TimeoutError(f"service {self.ctx.name} did not stop within {timeout_s} s")


def run_service(service_cls: type[Service[Any]], settings: ServiceSettings) -> int:
    """Run a service in this process until SIGTERM/SIGINT; returns the exit code."""
    setup_logging(settings.log_level, service_cls.name)
    runner = ServiceRunner(service_cls, settings)

    def on_signal(signum: int, frame: object) -> None:
        runner.ctx.log.info("signal %s: shutting down", signal.Signals(signum).name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()
    return RESTART_EXIT_CODE if runner.restart_requested else 0
