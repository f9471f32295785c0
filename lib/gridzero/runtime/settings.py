"""Typed service settings from environment variables and an optional YAML file.

Precedence (highest first): environment (``GRIDZERO_...``, nested with ``__``),
the YAML file (``--config FILE`` or ``GRIDZERO_CONFIG``), the defaults. Every
validation error is collected and reported at once, naming the setting, its
environment variable, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gridzero.contract import DEFAULT_BASE
from gridzero.errors import SettingsError

ENV_PREFIX = "GRIDZERO_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
SECRET_WORDS = ("password", "secret", "token", "hash")  # never echoed in error messages
HIDDEN = "<hidden>"
MIN_SCRUB_CHARS = 4  # shorter secret values are not searched for in free text


class MqttSettings(BaseModel):
    """How a service reaches the broker.

    TLS (``tls: true``) verifies the broker's certificate against ``tls_ca_file`` (the
    system's CAs when unset) and its host name; there is no switch to skip either.
    ``tls_cert_file`` and ``tls_key_file`` (together) add a client certificate.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = Field(default="", description="broker user; each service has its own")
    password: str = Field(default="", repr=False)
    keepalive_s: int = Field(default=15, ge=5, le=600)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=15.0, gt=0, le=600)
    tls: bool = False
    tls_ca_file: Path | None = Field(
        default=None, description="PEM CA that signed the broker's certificate (TLS only)"
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (TLS only; with tls_key_file)"
    )
    tls_key_file: Path | None = Field(
        default=None, validate_default=True, description="PEM key of tls_cert_file (TLS only)"
    )

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # fields are validated in order: tls and tls_cert_file are known here
        cert_set = info.data.get("tls_cert_file") is not None
        if value is None:
            if info.field_name == "tls_key_file" and cert_set:
                raise ValueError("missing while mqtt.tls_cert_file is set: set both or neither")
            return None
        if not info.data.get("tls"):
            raise ValueError("needs mqtt.tls: true (a TLS file on a plain connection is a mistake)")
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        if info.field_name == "tls_key_file" and not cert_set:
            raise ValueError("a key without mqtt.tls_cert_file: set both or neither")
        return value


class ServiceSettings(BaseSettings):
    """Settings every service has. Services subclass and add their own fields."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )
    yaml_file: ClassVar[Path | None] = None

    base_topic: str = Field(default=DEFAULT_BASE, min_length=1, pattern=r"^[^#+/][^#+]*$")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    log_level: LogLevel = "INFO"
    mqtt_log_level: LogLevel = Field(
        default="INFO", description="level of records sent to <service>/log"
    )
    mqtt_log_rate_per_s: float = Field(default=5.0, gt=0, le=1000)
    data_dir: Path = Field(
        default=Path("data"), description="where state and runtime settings persist"
    )
    store_flush_s: float = Field(default=2.0, gt=0, le=60, description="debounce of state writes")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # a credentials/env file (GRIDZERO_ENV_FILE, e.g. secrets/bms.env) sits below the
        # real environment and above the YAML file
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _YamlSource(settings_cls, cls.yaml_file),
        )


class _YamlSource(PydanticBaseSettingsSource):
    """Values from a YAML mapping file (lowest precedence above defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data = _read_yaml(path) if path is not None else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read it ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"settings file {path}: top level must be a mapping, got {type(data).__name__}"
        )
    return data


S = TypeVar("S", bound=ServiceSettings)


# GRIDZERO_ variables that are not settings: the config and env files, and the names
# compose.yaml interpolates on the host
NOT_SETTINGS = frozenset({"CONFIG", "ENV_FILE", "TAG", "IMAGE", "CONFIG_DIR"})


def unknown_env(cls: type[BaseSettings], environ: dict[str, str] | None = None) -> list[str]:
    """``GRIDZERO_*`` environment variables that name no setting of ``cls``.

    pydantic-settings reads only the fields it knows, so a misspelt top-level
    variable (``GRIDZERO_STALE_AFTR_S``) would otherwise be ignored in silence.
    """
    known = {name.upper() for name in cls.model_fields}
    names = os.environ if environ is None else environ
    out = []
    for key in names:
        if not key.upper().startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].upper()
        if rest not in NOT_SETTINGS and rest.split("__", 1)[0] not in known:
            out.append(key)
    return sorted(out)


def load_settings(cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    """Build and validate settings, or raise SettingsError listing every problem."""
    if config_file is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(os.environ[ENV_PREFIX + "CONFIG"])
    bound = type(cls.__name__, (cls,), {"yaml_file": config_file})
    env_file = os.environ.get(ENV_PREFIX + "ENV_FILE")
    if env_file and not Path(env_file).is_file():
        raise SettingsError(f"GRIDZERO_ENV_FILE={env_file}: no such file")
    unknown = [
        f"  {key[len(ENV_PREFIX) :].lower()} ({key}): unknown setting" for key in unknown_env(cls)
    ]
    try:
        settings: S = bound(_env_file=env_file or None, **overrides)
    except ValidationError as exc:
        text = describe_settings_error(exc, config_file)
        if unknown:
            head, _, rest = text.partition("\n")
            count = exc.error_count() + len(unknown)
            head = head.replace(f"{exc.error_count()} invalid", f"{count} invalid", 1)
            text = "\n".join([head, *unknown, rest])
        raise SettingsError(text) from exc
    if unknown:
        raise SettingsError("\n".join([f"{len(unknown)} invalid setting(s):", *unknown]))
    return settings


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets a nested setting (a list item: the whole list's)."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        parts.append(str(part).upper())
    return ENV_PREFIX + "__".join(parts)


def describe_settings_error(exc: ValidationError, config_file: Path | None = None) -> str:
    """All errors, one per line: setting (env var) = value: what is allowed.

    No secret is ever printed: a value whose setting is named like a secret (`SECRET_WORDS`)
    shows as ``<hidden>``; a mapping (what a whole-model check gets: every setting given,
    the MQTT password included) is never printed, only the settings its message names; a
    list is printed with its secrets hidden; and every secret value seen in the errors or
    in a ``GRIDZERO_*`` variable named like a secret is cut out of the final text, in case
    a message quotes it.
    """
    lines = [
        f"{exc.error_count()} invalid setting(s)"
        + (f" (file {config_file})" if config_file else "")
        + ":"
    ]
    secrets: set[str] = _secret_env_values()
    for err in exc.errors(include_url=False):
        lines.append(_describe_one(err, secrets))
    return scrub("\n".join(lines), secrets)


def _describe_one(err: Any, secrets: set[str]) -> str:
    loc = tuple(err["loc"])
    name = ".".join(str(p) for p in loc) or "settings"
    where = f"{name} ({env_name(loc)})" if loc else "settings (as a whole)"
    if err["type"] == "extra_forbidden":
        return f"  {where}: unknown setting"
    value = err.get("input")
    secret_place = is_secret_name(name)
    secrets |= secret_values(value, secret_place)
    if isinstance(value, Mapping):
        # a whole-model check: name the settings the message is about, never their values
        return f"  {where}: {err['msg']}{_allowed(err)}{_involved(loc, value, err['msg'])}"
    if err["type"] == "missing":
        shown = "missing"
    elif secret_place:
        shown = HIDDEN
    else:
        shown = repr(redact(value))
    return f"  {where} = {shown}: {err['msg']}{_allowed(err)}"


def _involved(loc: tuple[int | str, ...], given: Mapping[Any, Any], msg: str) -> str:
    """The given settings a whole-model message names (or, if none, the names given)."""
    keys = [str(k) for k in given]
    named = [k for k in keys if re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", msg)]
    if named:
        parts = [f"{'.'.join(str(p) for p in (*loc, k))} ({env_name((*loc, k))})" for k in named]
        return f" [settings involved: {', '.join(parts)}]"
    return f" [settings given: {', '.join(keys)}]" if keys else ""


def is_secret_name(name: str) -> bool:
    """Whether a setting's name says its value is secret (password, token, hash, ...)."""
    low = name.lower()
    return any(word in low for word in SECRET_WORDS)


def _is_hideable(value: object) -> bool:
    # booleans and None carry no secret (insecure_loopback_no_password is a flag)
    return isinstance(value, str | bytes | int | float) and not isinstance(value, bool)


def redact(value: Any, secret: bool = False) -> Any:
    """A copy with every value under a secret-named key (at any depth) replaced by ``<hidden>``.

    Empty strings stay empty, so ``--check`` still shows that a password is not set.
    """
    if isinstance(value, Mapping):
        return {k: redact(v, secret or is_secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, secret) for v in value]
    if secret and _is_hideable(value) and value != "":
        return HIDDEN
    return value


def secret_values(value: Any, secret: bool = False) -> set[str]:
    """The text of every value under a secret-named key (at any depth)."""
    if isinstance(value, Mapping):
        found: set[str] = set()
        for k, v in value.items():
            found |= secret_values(v, secret or is_secret_name(str(k)))
        return found
    if isinstance(value, list | tuple | set | frozenset):
        return set().union(*(secret_values(v, secret) for v in value))
    if secret and _is_hideable(value):
        return {value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)}
    return set()


def _secret_env_values() -> set[str]:
    return {
        value
        for key, value in os.environ.items()
        if key.upper().startswith(ENV_PREFIX) and is_secret_name(key)
    }


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` with every secret of at least `MIN_SCRUB_CHARS` characters cut out.

    Shorter ones are not searched for: they would match ordinary text, and a 3-character
    password is no secret anyway (it is still never printed as a value).
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SCRUB_CHARS:
            text = text.replace(secret, HIDDEN)
    return text


def _allowed(err: Any) -> str:
    ctx = err.get("ctx") or {}
    if any(str(v) in err["msg"] for v in ctx.values()):
        return ""  # pydantic's own message already names the limit
    bounds = [
        f"{k} {v}" for k, v in ctx.items() if k in ("ge", "gt", "le", "lt", "expected", "pattern")
    ]
    return f" (allowed: {', '.join(bounds)})" if bounds and "expected" not in err["msg"] else ""
