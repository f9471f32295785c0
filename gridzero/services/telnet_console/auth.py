"""Console login: password hashes, failed-login lockout, idle timeout.

Pure: no I/O and no clock; time is the ``now_s`` argument (monotonic seconds).
The password is never stored, logged or put in an error message: settings hold
``pbkdf2_sha256$<iterations>$<salt base64>$<hash base64>`` (make one with
``python -m gridzero.services.telnet_console.hashpw``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP 2023 figure for PBKDF2-HMAC-SHA256
MIN_ITERATIONS = 1_000  # tests use this; a real hash should use the default
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
MAX_PASSWORD_CHARS = 256


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


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until_s: float = 0.0


@dataclass(slots=True)
class LoginGuard:
    """Counts failed logins per client address and locks an address out for a while.

    ``max_failures`` failures in a row lock the address for ``lockout_s``; a
    success clears its count. At most ``max_tracked`` addresses are remembered
    (the oldest is forgotten first), so a scan from many addresses cannot grow
    memory without bound.
    """

    max_failures: int = 3
    lockout_s: float = 300.0
    max_tracked: int = 1024
    _by_address: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)

    def locked_for_s(self, address: str, now_s: float) -> float:
        """Seconds this address stays locked out (0 if it may try)."""
        entry = self._by_address.get(address)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until_s - now_s)

    def failure(self, address: str, now_s: float) -> float:
        """Record a failed login; returns the lockout now in force in seconds (0 if none)."""
        entry = self._by_address.pop(address, None) or _Failures()
        if entry.locked_until_s and now_s >= entry.locked_until_s:
            entry = _Failures()  # an expired lockout starts a fresh count
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.locked_until_s = now_s + self.lockout_s
        self._by_address[address] = entry
        while len(self._by_address) > self.max_tracked:
            self._by_address.popitem(last=False)
        return self.locked_for_s(address, now_s)

    def success(self, address: str) -> None:
        self._by_address.pop(address, None)

    def failures(self, address: str) -> int:
        entry = self._by_address.get(address)
        return entry.count if entry else 0


@dataclass(slots=True)
class IdleTimer:
    """Closes a session after ``timeout_s`` without a key from the client."""

    timeout_s: float
    last_activity_s: float

    def touch(self, now_s: float) -> None:
        self.last_activity_s = now_s

    def expired(self, now_s: float) -> bool:
        return now_s - self.last_activity_s >= self.timeout_s
