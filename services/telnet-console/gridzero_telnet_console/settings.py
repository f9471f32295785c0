"""Settings of the telnet console (environment ``GRIDZERO_...`` or the YAML file).

Security rule: the console listens on every interface (``bind_host`` 0.0.0.0,
what people expect of a box on their LAN) but only with a password. Without
``password_hash`` it refuses to start, unless ``insecure_loopback_no_password``
is on: then it runs without a login and binds 127.0.0.1 whatever ``bind_host``
says.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from gridzero.errors import SettingsError
from gridzero.runtime.settings import ServiceSettings
from gridzero_telnet_console.auth import (
    IPNetwork,
    PasswordHash,
    default_gateways,
    parse_hash,
    parse_networks,
)

LOOPBACK = "127.0.0.1"
GATEWAY = "gateway"  # in shared_addresses: the default gateways, read at start
# Docker's userland proxy connects from the bridge gateway; SSH port forwards from loopback
DEFAULT_SHARED = (GATEWAY, "127.0.0.0/8", "::1")
ROUTE_FILES = (Path("/proc/net/route"), Path("/proc/net/ipv6_route"))


class TelnetConsoleSettings(ServiceSettings):
    """The console's own settings; MQTT and logging come from `ServiceSettings`."""

    bind_host: str = Field(default="0.0.0.0", min_length=1, description="address to listen on")  # noqa: S104
    port: int = Field(default=2323, ge=0, le=65535, description="TCP port (0: any free port)")
    password_hash: str = Field(
        default="",
        repr=False,
        description="pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>; "
        "make one with python -m gridzero_telnet_console.hashpw",
    )
    insecure_loopback_no_password: bool = Field(
        default=False, description="run without a password, on 127.0.0.1 only"
    )
    max_failed_logins: int = Field(default=3, ge=1, le=100)
    lockout_s: float = Field(default=300.0, ge=0, le=86400)
    shared_addresses: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SHARED),
        description="addresses that stand for many clients (a proxy): locked out for "
        "shared_lockout_s only; 'gateway' = this host's default gateways (Docker's proxy)",
    )
    shared_lockout_s: float = Field(default=30.0, ge=0, le=86400)
    idle_timeout_s: float = Field(default=600.0, ge=10, le=86400)
    login_timeout_s: float = Field(
        default=30.0, ge=5, le=3600, description="time to log in before the connection closes"
    )
    max_sessions: int = Field(default=4, ge=1, le=64, description="logged-in sessions at once")
    max_unauthenticated: int = Field(
        default=8, ge=1, le=256, description="connections not logged in yet, at once"
    )
    max_unauthenticated_per_address: int = Field(
        default=2, ge=1, le=256, description="of those, from one client (IPv6: one /64)"
    )
    refresh_s: float = Field(default=1.0, ge=0.2, le=60)
    max_line_chars: int = Field(default=200, ge=20, le=1000)
    ack_timeout_s: float = Field(default=5.0, ge=0.5, le=120)

    @field_validator("shared_addresses")
    @classmethod
    def _check_shared(cls, value: list[str]) -> list[str]:
        parse_networks(v for v in value if v != GATEWAY)  # ValueError names the bad entry
        return value

    @field_validator("password_hash")
    @classmethod
    def _strip(cls, value: str) -> str:
        # Checked in `stored_hash`, not here: a validation error here would print the value.
        return value.strip()

    def stored_hash(self) -> PasswordHash | None:
        """The parsed hash, or SettingsError naming what is wrong (never the hash itself)."""
        if not self.password_hash:
            return None
        try:
            return parse_hash(self.password_hash)
        except ValueError as exc:
            raise SettingsError(f"telnet-console (GRIDZERO_PASSWORD_HASH): {exc}") from None


def effective_bind_host(settings: TelnetConsoleSettings) -> str:
    """Where to listen, or SettingsError when the console would run without a password."""
    if settings.stored_hash() is not None:
        return settings.bind_host
    if settings.insecure_loopback_no_password:
        return LOOPBACK
    raise SettingsError(
        "telnet-console: password_hash (GRIDZERO_PASSWORD_HASH) is empty; "
        "make one with `python -m gridzero_telnet_console.hashpw`, or set "
        "insecure_loopback_no_password (GRIDZERO_INSECURE_LOOPBACK_NO_PASSWORD=true) "
        "to run without a password on 127.0.0.1 only"
    )


def shared_networks(
    settings: TelnetConsoleSettings, route_files: tuple[Path, Path] = ROUTE_FILES
) -> tuple[IPNetwork, ...]:
    """`shared_addresses` as networks, ``gateway`` replaced by the default gateways now."""
    texts = [v for v in settings.shared_addresses if v != GATEWAY]
    if GATEWAY in settings.shared_addresses:
        texts += default_gateways(*(_read(path) for path in route_files))
    return parse_networks(texts)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""  # not Linux, or no IPv6: no gateway of that kind
