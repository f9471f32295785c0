"""Settings of the telnet console (environment ``GRIDZERO_...`` or the YAML file).

Security rule: the console listens on every interface (``bind_host`` 0.0.0.0,
what people expect of a box on their LAN) but only with a password. Without
``password_hash`` it refuses to start, unless ``insecure_loopback_no_password``
is on: then it runs without a login and binds 127.0.0.1 whatever ``bind_host``
says.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from gridzero.errors import SettingsError
from gridzero.runtime.settings import ServiceSettings
from gridzero.services.telnet_console.auth import PasswordHash, parse_hash

LOOPBACK = "127.0.0.1"


class TelnetConsoleSettings(ServiceSettings):
    """The console's own settings; MQTT and logging come from `ServiceSettings`."""

    bind_host: str = Field(default="0.0.0.0", min_length=1, description="address to listen on")  # noqa: S104
    port: int = Field(default=2323, ge=0, le=65535, description="TCP port (0: any free port)")
    password_hash: str = Field(
        default="",
        repr=False,
        description="pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>; "
        "make one with python -m gridzero.services.telnet_console.hashpw",
    )
    insecure_loopback_no_password: bool = Field(
        default=False, description="run without a password, on 127.0.0.1 only"
    )
    max_failed_logins: int = Field(default=3, ge=1, le=100)
    lockout_s: float = Field(default=300.0, ge=0, le=86400)
    idle_timeout_s: float = Field(default=600.0, ge=10, le=86400)
    login_timeout_s: float = Field(default=60.0, ge=5, le=3600)
    max_sessions: int = Field(default=4, ge=1, le=64)
    refresh_s: float = Field(default=1.0, ge=0.2, le=60)
    max_line_chars: int = Field(default=200, ge=20, le=1000)
    ack_timeout_s: float = Field(default=5.0, ge=0.5, le=120)

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
        "make one with `python -m gridzero.services.telnet_console.hashpw`, or set "
        "insecure_loopback_no_password (GRIDZERO_INSECURE_LOOPBACK_NO_PASSWORD=true) "
        "to run without a password on 127.0.0.1 only"
    )
