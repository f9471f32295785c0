"""A device link: one handle (a CAN bus, a serial port) owned by one reader thread.

The same pattern for every device service: the reader thread opens the handle (retrying
with a backoff that doubles up to a ceiling), reads from it, and hands each item it read to
the service loop through ``post`` (the loop's queue, `Context.post`). After a read failure it
closes the handle and opens it again. The thread never touches service state: whatever it
learns (an item, the link up, the link down and why) reaches the service as a call on the
loop thread. Writes come from the loop thread through `DeviceLink.write`; a lock keeps a
write and the reader's reopen from using a handle that is being closed.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

H = TypeVar("H")  # the device handle
R = TypeVar("R")  # what one read hands to the loop

Post = Callable[[Callable[[], None]], None]


class DeviceLink(Generic[H, R]):
    """One device handle and its reader thread (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        open_handle: Callable[[], H],
        read: Callable[[H], R | None],
        close_handle: Callable[[H], None],
        post: Post,
        on_item: Callable[[R], None],
        on_state: Callable[[str | None], None],
        errors: tuple[type[BaseException], ...],
        backoff_min_s: float,
        backoff_max_s: float,
        pause_after_failure_s: float = 0.0,
    ) -> None:
        """``read`` returns one item or None (nothing this time; it should block briefly).
        ``on_item`` and ``on_state`` run on the loop thread; ``on_state(None)`` means open,
        a text means down and why. ``errors``: what opening, reading and writing may raise."""
        self.name = name
        self._open_handle = open_handle
        self._read = read
        self._close_handle = close_handle
        self._post = post
        self._on_item = on_item
        self._on_state = on_state
        self._errors = errors
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._pause_after_failure_s = pause_after_failure_s
        self._lock = threading.Lock()
        self._handle: H | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"link-{name}", daemon=True)

    @property
    def up(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the reader and close the handle (the loop thread, at shutdown)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._close_quietly(handle)

    def write(self, send: Callable[[H], None], *, reopen_on_error: bool = True) -> str | None:
        """``send(handle)`` on the loop thread; the error text if the link is down or it failed.

        ``reopen_on_error``: a failed write closes the handle and the reader opens it again
        (a serial port whose peer went away); False for errors that pass (a full CAN queue)."""
        with self._lock:
            handle = self._handle
            if handle is None:
                return f"{self.name} is not open"
            try:
                send(handle)
            except self._errors as exc:
                message = f"{self.name}: write failed: {exc}"
                if reopen_on_error:
                    self._handle = None
                    self._close_quietly(handle)
                    self._post_state(message)
                return message
        return None

    # ----------------------------------------------------------------- the reader thread

    def _run(self) -> None:
        backoff_s = self._backoff_min_s
        while not self._stop.is_set():
            handle = self._handle
            if handle is None:
                try:
                    handle = self._open_handle()
                except self._errors as exc:
                    self._post_state(f"{self.name}: cannot open: {exc}")
                    self._stop.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff_max_s)
                    continue
                with self._lock:
                    self._handle = handle
                backoff_s = self._backoff_min_s
                self._post_state(None)
            try:
                item = self._read(handle)
            except self._errors as exc:
                self._drop(handle)
                self._post_state(f"{self.name}: read failed: {exc}")
                self._stop.wait(self._pause_after_failure_s)
                continue
            if item is not None:
                self._post(functools.partial(self._on_item, item))

    def _post_state(self, error: str | None) -> None:
        self._post(functools.partial(self._on_state, error))

    def _drop(self, handle: H) -> None:
        with self._lock:
            if self._handle is handle:
                self._handle = None
        self._close_quietly(handle)

    def _close_quietly(self, handle: H) -> None:
        with contextlib.suppress(*self._errors):
            self._close_handle(handle)
