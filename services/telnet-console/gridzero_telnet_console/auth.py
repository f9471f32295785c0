"""Console login: password hashes, failed-login lockout per client, idle timeout.

Pure: no I/O and no clock; time is the ``now_s`` argument (monotonic seconds).
The password is never stored, logged or put in an error message: settings hold
``pbkdf2_sha256$<iterations>$<salt base64>$<hash base64>`` (make one with
``python -m gridzero_telnet_console.hashpw``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 figure for PBKDF2-HMAC-SHA256
MIN_ITERATIONS = 1_000  # tests use this; a real hash should use the default
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
MAX_PASSWORD_CHARS = 256

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``pbkdf2_sha256$...`` string."""

    iterations: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{SCHEME}${self.iterations}${salt}${digest}"


def parse_hash(text: str) -> PasswordHash:
    """Parse a stored hash; ValueError names the part that is wrong (never echoes the hash)."""
    parts = text.strip().split("$")
    if len(parts) != 4 or parts[0] != SCHEME:
        raise ValueError(
            f"password_hash must look like {SCHEME}$<iterations>$<salt base64>$<hash base64> "
            f"(got {len(parts)} '$'-separated part(s), scheme {parts[0][:20]!r})"
        )
    try:
        iterations = int(parts[1])
    except ValueError:
        raise ValueError("password_hash: iterations is not an integer") from None
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"password_hash: {iterations} iterations outside {MIN_ITERATIONS}..{MAX_ITERATIONS}"
        )
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("password_hash: salt or hash is not valid base64") from None
    if len(salt) < 8 or len(digest) != 32:
        raise ValueError(
            f"password_hash: salt of {len(salt)} bytes (need >= 8) "
            f"and hash of {len(digest)} bytes (need 32)"
        )
    return PasswordHash(iterations, salt, digest)


def hash_password(password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> PasswordHash:
    """Hash a password with a caller-supplied random salt (``os.urandom(SALT_BYTES)``)."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return PasswordHash(iterations, salt, digest)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Constant-time check of a password against a stored hash."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    candidate = hashlib.pbkdf2_hmac(
        "sha256", password.encode("utf-8", errors="replace"), stored.salt, stored.iterations
    )
    return hmac.compare_digest(candidate, stored.digest)


IPV6_BUCKET_PREFIX = 64  # one IPv6 subnet is one client: a host picks addresses in its /64 freely


def client_key(address: str) -> str:
    """The bucket failed logins are counted in: an IPv4 address, or an IPv6 address's /64.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what a dual-stack socket reports)
    counts as its IPv4 address; a zone (``fe80::1%eth0``) is dropped; text that is not an
    address is its own bucket.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_BUCKET_PREFIX), strict=False))
    return str(ip)


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or networks (``172.17.0.1``, ``127.0.0.0/8``, ``::1``); ValueError names a bad one."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
    return tuple(out)


def in_networks(address: str, networks: Iterable[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


RTF_GATEWAY = 0x2  # route flag: the route goes through a gateway (linux/route.h)


def default_gateways(route_v4: str, route_v6: str) -> tuple[str, ...]:
    """The default routes' gateways from the text of /proc/net/route and /proc/net/ipv6_route.

    Inside a Docker bridge network the default gateway is the bridge's address on the host,
    and that is the address Docker's userland proxy (docker-proxy) connects from.
    """
    found: list[str] = []
    for line in route_v4.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            flags, gateway = int(fields[3], 16), int(fields[2], 16)
        except ValueError:
            continue
        if flags & RTF_GATEWAY and gateway:
            # the kernel prints the address in host byte order: little-endian on every Pi
            found.append(str(ipaddress.IPv4Address(gateway.to_bytes(4, "little"))))
    for line in route_v6.splitlines():
        fields = line.split()
        if len(fields) < 9 or fields[0] != "0" * 32 or fields[1] != "00":
            continue
        try:
            flags, hop = int(fields[8], 16), ipaddress.IPv6Address(bytes.fromhex(fields[4]))
        except ValueError:
            continue
        if flags & RTF_GATEWAY and hop != ipaddress.IPv6Address(0):
            found.append(str(hop))
    return tuple(dict.fromkeys(found))


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until_s: float = 0.0


@dataclass(slots=True)
class LoginGuard:
    """Counts failed logins per client (`client_key`) and locks a client out for a while.

    ``max_failures`` failures in a row lock the client for ``lockout_s``; a success clears
    its count. An address in ``shared`` stands for many clients (Docker's userland proxy,
    the bridge gateway, loopback for SSH port forwards): locking it for ``lockout_s`` would
    lock everyone behind it out, so it is locked for ``shared_lockout_s`` only, which still
    limits guessing to ``max_failures`` per ``shared_lockout_s`` through it.

    At most ``max_tracked`` clients are remembered, so a scan from many addresses cannot
    grow memory without bound. When the table is full, the oldest entry that is *not* an
    active lockout is forgotten; an active lockout is never forgotten (else a client could
    clear its own lockout by failing from enough other addresses). When every entry is an
    active lockout, failures from clients not in the table are limited globally instead:
    each one closes the door to every untracked client for ``overflow_spacing_s``.
    """

    max_failures: int = 3
    lockout_s: float = 300.0
    max_tracked: int = 4096
    shared: tuple[IPNetwork, ...] = ()
    shared_lockout_s: float = 30.0
    overflow_spacing_s: float = 1.0
    _by_client: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)
    _overflow_until_s: float = 0.0

    def is_shared(self, address: str) -> bool:
        """Whether this address stands for many clients (see the class)."""
        return in_networks(address, self.shared)

    def locked_for_s(self, address: str, now_s: float) -> float:
        """Seconds this client stays locked out (0 if it may try)."""
        entry = self._by_client.get(client_key(address))
        if entry is None:
            return self._overflow_wait_s(now_s)
        return max(0.0, entry.locked_until_s - now_s)

    def failure(self, address: str, now_s: float) -> float:
        """Record a failed login; returns the lockout now in force in seconds (0 if none)."""
        key = client_key(address)
        entry = self._by_client.pop(key, None)
        if entry is None:
            if not self._make_room(now_s):
                # every entry is an active lockout: limit untracked clients all together
                self._overflow_until_s = now_s + self.overflow_spacing_s
                return self.overflow_spacing_s
            entry = _Failures()
        elif entry.locked_until_s and now_s >= entry.locked_until_s:
            entry = _Failures()  # an expired lockout starts a fresh count
        entry.count += 1
        if entry.count >= self.max_failures:
            hold_s = self.shared_lockout_s if self.is_shared(address) else self.lockout_s
            entry.locked_until_s = now_s + hold_s
        self._by_client[key] = entry
        return max(0.0, entry.locked_until_s - now_s)

    def success(self, address: str) -> None:
        self._by_client.pop(client_key(address), None)

    def failures(self, address: str) -> int:
        entry = self._by_client.get(client_key(address))
        return entry.count if entry else 0

    def tracked(self) -> int:
        return len(self._by_client)

    def _make_room(self, now_s: float) -> bool:
        """Forget the oldest entries that are not active lockouts until one more fits."""
        if len(self._by_client) < self.max_tracked:
            return True
        for key in list(self._by_client):
            if self._by_client[key].locked_until_s <= now_s:
                del self._by_client[key]
                if len(self._by_client) < self.max_tracked:
                    return True
        return False

    def _overflow_wait_s(self, now_s: float) -> float:
        if len(self._by_client) < self.max_tracked:
            return 0.0
        return max(0.0, self._overflow_until_s - now_s)


@dataclass(slots=True)
class IdleTimer:
    """Closes a session after ``timeout_s`` without a key from the client."""

    timeout_s: float
    last_activity_s: float

    def touch(self, now_s: float) -> None:
        self.last_activity_s = now_s

    def expired(self, now_s: float) -> bool:
        return now_s - self.last_activity_s >= self.timeout_s
