"""A CAN bus on loopback for simulation: a small socketcand-compatible hub.

python-can's ``socketcand`` interface connects to it exactly as it would to a
real socketcand daemon in front of a SocketCAN interface, so the services use
their unchanged python-can code and only their settings say
``interface: socketcand, host: 127.0.0.1, port: <hub port>, channel: <bus>``.
Every frame a client sends is delivered to every other client that opened the
same channel (one channel per simulated bus), like a real shared bus.

Why not ``udp_multicast``: its packets follow the host's default route, so on a
machine whose loopback has no multicast route they leave the machine. The hub
keeps simulated CAN traffic on 127.0.0.1. In Docker the simulator binds it on
the project network and the services reach it as host ``sim``.

Protocol subset (socketcand's raw mode): server ``< hi >``; client ``< open CH >``
-> ``< ok >``; client ``< rawmode >`` -> ``< ok >``; client ``< send ID LEN B.. >``;
server ``< frame ID SECS.USECS HEX >`` (3-digit IDs are standard, 8-digit extended).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
MAX_LINE = 256


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    address: tuple[str, int]
    channel: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, text: str) -> bool:
        try:
            with self.lock:
                self.sock.sendall(text.encode("ascii"))
        except OSError:
            return False
        return True


def parse_send(message: str) -> tuple[str, bytes]:
    """``< send ID LEN B0 B1 ... >`` -> (ID text as sent, data). Raises ValueError."""
    parts = message[1:-1].split()
    if len(parts) < 3 or parts[0] != "send":
        raise ValueError(f"not a send command: {message!r}")
    ident, length = parts[1], int(parts[2], 16)
    int(ident, 16)  # must be hex
    data = bytes(int(b, 16) for b in parts[3 : 3 + length])
    if len(data) != length or length > 8:
        raise ValueError(f"send {ident}: {length} bytes announced, {len(data)} given (max 8)")
    return ident.upper(), data


def format_frame(ident: str, data: bytes, now_s: float) -> str:
    return f"< frame {ident} {now_s:.6f} {data.hex().upper()} >"


class CanHub:
    """A TCP server on loopback; each accepted client is one CAN node on a channel."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = socket.create_server((host, port))
        self.host, self.port = self._server.getsockname()[:2]
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.frames = 0
        self.rejected = 0
        self._thread = threading.Thread(target=self._accept, name="canhub", daemon=True)

    def start(self) -> CanHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.sock.close()

    def inject(self, channel: str, ident: str, data: bytes) -> None:
        """Put a frame on a channel from outside any client (fault injection: garbage)."""
        self._broadcast(None, channel, ident, data)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, address = self._server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, address)
            threading.Thread(
                target=self._serve, args=(client,), name=f"canhub-{address[1]}", daemon=True
            ).start()

    def _serve(self, client: _Client) -> None:
        try:
            client.send("< hi >")
            self._read_loop(client)
        except OSError as exc:
            log.debug("canhub client %s: %s", client.address, exc)
        finally:
            with self._lock:
                self._clients.discard(client)
            client.sock.close()

    def _read_loop(self, client: _Client) -> None:
        buffer = ""
        while not self._stop.is_set():
            chunk = client.sock.recv(4096)
            if not chunk:
                return
            buffer += chunk.decode("ascii", "replace")
            while True:
                start, end = buffer.find("<"), buffer.find(">")
                if start == -1 or end == -1:
                    buffer = buffer[-MAX_LINE:] if start == -1 else buffer[start:][:MAX_LINE]
                    break
                if end < start:
                    buffer = buffer[start:]
                    continue
                message, buffer = buffer[start : end + 1], buffer[end + 1 :]
                self._handle(client, message)

    def _handle(self, client: _Client, message: str) -> None:
        words = message[1:-1].split()
        if words[:1] == ["open"] and len(words) == 2:
            client.channel = words[1]
            client.send("< ok >")
            return
        if words[:1] == ["rawmode"]:
            with self._lock:
                self._clients.add(client)
            client.send("< ok >")
            return
        try:
            ident, data = parse_send(message)
        except ValueError as exc:
            self.rejected += 1
            log.debug("canhub: %s", exc)
            return
        self._broadcast(client, client.channel, ident, data)

    def _broadcast(self, sender: _Client | None, channel: str, ident: str, data: bytes) -> None:
        text = format_frame(ident, data, time.time())
        with self._lock:
            targets = [c for c in self._clients if c is not sender and c.channel == channel]
        self.frames += 1
        for target in targets:
            target.send(text)
