"""Broker users, the ACL and per-service credentials for a new installation.

``gridzero credentials init`` writes, for the default layout:

- ``mosquitto/config/passwd``: one user per service, plus ``homeassistant`` and
  ``meter``, with PBKDF2-SHA512 hashes in Mosquitto 2's ``$7$`` format (no
  plain password ever reaches the broker's files);
- ``secrets/<user>.env``: ``GRIDZERO_MQTT__USERNAME`` / ``..._PASSWORD`` for each
  service (what Docker's ``env_file`` and ``gridzero up`` read);
- ``mosquitto/config/acl`` is generated (``gridzero credentials acl``) from the same users
  and, for what each may write, the writers of the contract's ``TOPIC_SPECS``; it is
  committed and a test keeps it in step.

Nothing secret is committed: ``secrets/`` and ``passwd`` are git-ignored.
Existing credentials are kept unless ``--force``.

``--without sim`` leaves a user out (its env files and its ``passwd`` line go) and is
remembered in ``secrets/left-out-users`` until ``--with sim``; the environment variable
``GRIDZERO_CREDENTIALS_WITHOUT`` (comma-separated; the hardware compose profile sets it)
leaves users out for that run only. ``gridzero credentials rotate <user>...`` gives the
named users new passwords and keeps every other one; ``--console-login`` renews the
telnet console's login password. Afterwards reload the broker and restart the services
whose password changed (docs/security.md, "Rotating a password").
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt.client import topic_matches_sub

from gridzero.contract import (
    DEFAULT_BASE,
    DEFAULT_METER_TOPIC,
    EACH_SERVICE,
    OPTIONAL_LEVEL,
    PLACEHOLDER,
    TOPIC_SPECS,
    TopicSpec,
    topic_spec,
)
from gridzero.errors import GridzeroError, UsageError
from gridzero.meter import read_controller_meter
from gridzero.registry import SERVICES, UNIT_SERVICES, writes_own

MOSQUITTO_ITERATIONS = 101  # Mosquitto 2's own default for $7$ hashes


@dataclass(frozen=True, slots=True)
class User:
    """A broker user and the topics it may write (everything else is read-only or denied)."""

    name: str
    writes: tuple[str, ...]
    # `{meter}`: the configured meter topic (the controller's `meter_topic`), added where
    # the other patterns do not already cover it
    reads: tuple[str, ...] = ("{base}/#", "meterbox/#", "{meter}", "homeassistant/status")


_READ_ALL = ("#",)

USER_READS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    *((service, None) for service in SERVICES),
    # Home Assistant shows everything; it writes settings and buttons, its discovery and the
    # meter topic (an automation may forward a sensor, docs/meter.md): it can already
    # command any power through the settings, so the meter adds no power; and the original
    # system's meterbox/chargeTarget, for an owner's automations (issue 19): it lapses 15 s
    # after the last refresh and the bms limits still clamp it
    ("homeassistant", _READ_ALL),
    # the meter only reports; the legacy chargeTarget command is not the meter's (Home
    # Assistant's and the operator's: the contract's table)
    ("meter", None),
    ("operator", _READ_ALL),
)
"""Every broker user, in ACL order, and what it reads (None: the services' default). What a
user writes is not listed here: it comes from the writers of the contract's TOPIC_SPECS."""


def acl_patterns(spec: TopicSpec, user: str) -> tuple[str, ...]:
    """The ACL write patterns ``spec`` gives ``user`` (none if the user is no writer).

    ``{service}`` becomes the user's own name when every service writes the topic, else
    ``+``; any other placeholder (``{unit}``, ``{bus}-{module}``...) becomes ``+``; ``{base}``
    and a whole-pattern ``{meter}`` stay for ``render_acl``. An optional ``[/{unit}]`` gives
    the pattern without it and, for writers other than a service without units, with it. A
    service whose registry entry lists its ``own_topics`` gets only those every-service rows."""
    own = EACH_SERVICE in spec.writers and writes_own(user, spec.name)
    if not own and user not in spec.writers:
        return ()
    if spec.pattern == "{meter}":
        return (spec.pattern,)
    options = [OPTIONAL_LEVEL.sub("", spec.pattern)]
    if OPTIONAL_LEVEL.search(spec.pattern) and (not own or user in UNIT_SERVICES):
        options.append(OPTIONAL_LEVEL.sub(r"/{\1}", spec.pattern))
    return tuple(_acl_levels(p, user if own else None) for p in options)


def _acl_levels(pattern: str, service: str | None) -> str:
    levels = []
    for level in pattern.split("/"):
        named = level.replace("{service}", service) if service is not None else level
        levels.append("+" if PLACEHOLDER.search(named) and named != "{base}" else named)
    return "/".join(levels)


def user_writes(user: str, specs: tuple[TopicSpec, ...] = TOPIC_SPECS) -> tuple[str, ...]:
    """Every write pattern of ``user``, in table order, each once."""
    patterns = (p for spec in specs for p in acl_patterns(spec, user))
    return tuple(dict.fromkeys(patterns))


def users(specs: tuple[TopicSpec, ...] = TOPIC_SPECS) -> tuple[User, ...]:
    """Every broker user with its reads and the writes ``specs`` give it."""
    return tuple(
        User(name, user_writes(name, specs))
        if reads is None
        else User(name, user_writes(name, specs), reads)
        for name, reads in USER_READS
    )


ALL_USERS: tuple[User, ...] = users()
USERS: tuple[User, ...] = tuple(u for u in ALL_USERS if u.name != "operator")
"""The users of an installation; tests and the fault injector log in as ``operator``."""
OPERATOR = ALL_USERS[-1]
USER_NAMES: tuple[str, ...] = tuple(u.name for u in ALL_USERS)
LEFT_OUT_FILE = "left-out-users"  # in the secrets directory: users `--without` removed
WITHOUT_ENV = "GRIDZERO_CREDENTIALS_WITHOUT"  # users left out for one run (hardware profile)


def setting_writers() -> tuple[str, ...]:
    """The users the ACL lets change runtime settings and press buttons, in table order."""
    both = set(topic_spec("setting_set").writers) & set(topic_spec("action_set").writers)
    return tuple(u.name for u in ALL_USERS if u.name in both)


def render_acl(
    base: str = DEFAULT_BASE,
    meter_topic: str = DEFAULT_METER_TOPIC,
    specs: tuple[TopicSpec, ...] = TOPIC_SPECS,
) -> str:
    """The Mosquitto ACL file for a base topic and the controller's meter topic."""
    lines = [
        "# Mosquitto ACL for gridzero. Generated by `gridzero credentials acl`: the write",
        "# lines from the writers of TOPIC_SPECS in lib/gridzero/contract.py, the users and",
        "# their reads from lib/gridzero/runtime/credentials.py; edit those, not this file.",
        "# Each user writes only its own topics; only `controller` commands the",
        "# charger and the inverters; `homeassistant` writes only settings and buttons",
        "# (and the meter topic, for a forwarded sensor, and the original system's",
        "# meterbox/chargeTarget); `housebatt-compat` writes the original's topics.",
        f"# Meter topic: {meter_topic} (the controller's settings file: docs/meter.md).",
        "",
    ]
    for user in users(specs):
        lines.append(f"user {user.name}")
        lines.extend(f"topic read {t}" for t in _expand(user.reads, base, meter_topic))
        lines.extend(f"topic write {t}" for t in _expand(user.writes, base, meter_topic))
        lines.append("")
    return "\n".join(lines)


def _expand(patterns: tuple[str, ...], base: str, meter_topic: str) -> list[str]:
    """The patterns for this base and meter topic; ``{meter}`` only where no other covers it."""
    others = [p.format(base=base) for p in patterns if p != "{meter}"]
    covered = any(topic_matches_sub(p, meter_topic) for p in others)
    out: list[str] = []
    for pattern in patterns:
        if pattern != "{meter}":
            out.append(pattern.format(base=base))
        elif not covered and meter_topic not in out:
            out.append(meter_topic)
    return out


def render_acl_for(controller_config: Path | None) -> str:
    """The ACL for the base and meter topic in the controller's settings file (the file the
    controller reads: `gridzero up`'s config dir, compose's /config/controller.yaml)."""
    base, source = read_controller_meter(controller_config)
    return render_acl(base, source.topic)


def login_name(user: str, index: int) -> str:
    """The ``index``-th login of ``user``: the user itself, then ``<user>.2``, ``<user>.3``…"""
    return user if index <= 1 else f"{user}.{index}"


def add_logins_to_passwd(text: str, logins: int) -> str:
    """A passwd file where every user may also log in as ``<user>.2`` … ``<user>.<logins>``.

    The broker binds a connection to its user name (``use_username_as_clientid``), so
    a user has one connection at a time. Tools that need several at once (test rigs, a
    watcher beside a publisher) get numbered logins with the same password hash.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    extra = [
        f"{login_name(name, k)}:{digest}"
        for k in range(2, logins + 1)
        for name, _, digest in (line.partition(":") for line in lines)
    ]
    return "\n".join([*lines, *extra]) + "\n"


def add_logins_to_acl(text: str, logins: int) -> str:
    """The ACL with each ``user`` section copied, line for line, to its numbered logins."""
    sections: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("user "):
            sections.append((line[5:].strip(), []))
        elif line.startswith("pattern "):
            sections.append(("", []))  # patterns apply to everyone: not copied
        elif line.startswith("topic ") and sections:
            sections[-1][1].append(line)
    out = [text.rstrip("\n"), "", "# numbered logins: the same rights as the user they copy"]
    for k in range(2, logins + 1):
        for name, topics in sections:
            if name:
                out += [f"user {login_name(name, k)}", *topics, ""]
    return "\n".join(out) + "\n"


def _check_names(names: Iterable[str], what: str) -> list[str]:
    names = [n for n in names if n]
    unknown = [n for n in names if n not in USER_NAMES]
    if unknown:
        raise UsageError(f"{what}: unknown user(s) {unknown}; known: {', '.join(USER_NAMES)}")
    return names


def _split(values: Iterable[str]) -> list[str]:
    """``--without sim --without meter`` and ``--without sim,meter`` alike."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def left_out_users(secrets_dir: Path) -> set[str]:
    """Users remembered as left out (``--without``) for this secrets directory."""
    path = secrets_dir / LEFT_OUT_FILE
    if not path.exists():
        return set()
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return set(_check_names((ln for ln in lines if not ln.startswith("#")), str(path)))


def _remember_left_out(secrets_dir: Path, users: set[str]) -> None:
    path = secrets_dir / LEFT_OUT_FILE
    if not users:
        path.unlink(missing_ok=True)
        return
    head = "# broker users left out by `gridzero credentials init --without`; undo with --with\n"
    _write_private(path, head + "".join(f"{name}\n" for name in sorted(users)))


def _forget_user(secrets_dir: Path, name: str) -> None:
    """Remove a left-out user's credential files (its passwd line goes with the rewrite)."""
    (secrets_dir / f"{name}.env").unlink(missing_ok=True)
    (secrets_dir / name / "mqtt.env").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (secrets_dir / name).rmdir()
    if name == "telnet-console":
        (secrets_dir / CONSOLE_PASSWORD_FILE).unlink(missing_ok=True)


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    """A Mosquitto 2 ``$7$`` (PBKDF2-SHA512) password hash."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def new_password() -> str:
    return secrets.token_urlsafe(24)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (the secrets files we write)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


CONSOLE_PASSWORD_FILE = "telnet-console-password.txt"  # noqa: S105 - a file name
CONSOLE_ITERATIONS = 600_000


def console_password_hash(password: str, salt: bytes | None = None) -> str:
    """The telnet console's ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` setting value."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, CONSOLE_ITERATIONS)
    encode = base64.b64encode
    return f"pbkdf2_sha256${CONSOLE_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def _console_login(secrets_dir: Path, force: bool) -> str:
    """The console password (created once), returned as the env line with its hash."""
    path = secrets_dir / CONSOLE_PASSWORD_FILE
    if path.exists() and not force:
        password = path.read_text(encoding="utf-8").strip()
    else:
        password = new_password()[:16]
        _write_private(path, password + "\n")
    return f"GRIDZERO_PASSWORD_HASH={console_password_hash(password)}\n"


def init_credentials(
    config_dir: Path,
    secrets_dir: Path,
    *,
    force: bool = False,
    per_service_dirs: bool = False,
    owner: tuple[int, int] | None = None,
    without: Iterable[str] = (),
    with_: Iterable[str] = (),
    without_once: Iterable[str] = (),
) -> dict[str, str]:
    """Create (or keep) a password per user; write the passwd file and the env files.

    ``secrets/<user>.env`` always; with ``per_service_dirs`` also
    ``secrets/<user>/mqtt.env`` (what one container mounts, so it sees only its own
    credentials), owned by ``owner`` (uid, gid) when given. ``without`` leaves users out
    and remembers it (``secrets/left-out-users``), ``with_`` takes them back,
    ``without_once`` leaves them out for this run only. A left-out user has no env file
    and no passwd line. Returns user -> password of the users in.
    """
    without, with_ = _check_names(without, "--without"), _check_names(with_, "--with")
    once = _check_names(without_once, WITHOUT_ENV)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    remembered = left_out_users(secrets_dir)
    if without or with_:
        remembered = (remembered | set(without)) - set(with_)
        _remember_left_out(secrets_dir, remembered)
    out = remembered | set(once)
    passwords: dict[str, str] = {}
    for user in ALL_USERS:
        if user.name in out:
            _forget_user(secrets_dir, user.name)
            continue
        env_path = secrets_dir / f"{user.name}.env"
        if env_path.exists() and not force:
            passwords[user.name] = read_env_file(env_path)["GRIDZERO_MQTT__PASSWORD"]
            continue
        passwords[user.name] = new_password()
        _write_env(secrets_dir, user.name, passwords[user.name], console_force=force)
    if per_service_dirs:
        for name in passwords:
            _copy_to_service_dir(secrets_dir, name, owner)
    write_passwd(config_dir / "passwd", passwords)
    return passwords


def _write_env(secrets_dir: Path, name: str, password: str, *, console_force: bool) -> None:
    text = f"GRIDZERO_MQTT__USERNAME={name}\nGRIDZERO_MQTT__PASSWORD={password}\n"
    if name == "telnet-console":
        text += _console_login(secrets_dir, console_force)
    _write_private(secrets_dir / f"{name}.env", text)


def _copy_to_service_dir(secrets_dir: Path, name: str, owner: tuple[int, int] | None) -> None:
    target = secrets_dir / name / "mqtt.env"
    _write_private(target, (secrets_dir / f"{name}.env").read_text(encoding="utf-8"))
    if owner is not None:
        os.chown(target.parent, *owner)
        os.chown(target, *owner)


def rotate_credentials(
    config_dir: Path,
    secrets_dir: Path,
    users: Iterable[str],
    *,
    console_login: bool = False,
    per_service_dirs: bool = False,
    owner: tuple[int, int] | None = None,
) -> list[str]:
    """New passwords for ``users`` only (every other password is kept); with
    ``console_login`` a new telnet console login password too.

    Rewrites ``secrets/<user>.env``, ``secrets/<user>/mqtt.env`` where it exists (or
    with ``per_service_dirs``; its owner is kept) and the passwd file. The broker and
    the services still use the old passwords until the broker reloads its passwd file
    and the services restart. Returns the users whose env files changed.
    """
    mqtt_users = list(dict.fromkeys(_check_names(users, "rotate")))
    names = mqtt_users + (["telnet-console"] if console_login else [])
    names = list(dict.fromkeys(names))
    if not names:
        raise UsageError(
            "rotate: name the user(s) to rotate, e.g. `rotate bms`, or --console-login"
        )
    out = left_out_users(secrets_dir)
    missing = [n for n in names if n in out or not (secrets_dir / f"{n}.env").exists()]
    if missing:
        raise UsageError(
            f"rotate: no credentials for {missing} in {secrets_dir} (left out, or never "
            "created): run `gridzero credentials init` first (`--with <user>` if left out)"
        )
    passwords = {
        n: read_env_file(secrets_dir / f"{n}.env")["GRIDZERO_MQTT__PASSWORD"]
        for n in USER_NAMES
        if n not in out and (secrets_dir / f"{n}.env").exists()
    }
    for name in mqtt_users:
        passwords[name] = new_password()
    for name in names:
        renew_login = console_login and name == "telnet-console"
        _write_env(secrets_dir, name, passwords[name], console_force=renew_login)
        service_file = secrets_dir / name / "mqtt.env"
        kept = None
        if service_file.exists():
            st = service_file.stat()
            kept = (st.st_uid, st.st_gid)
        if per_service_dirs or kept is not None:
            _copy_to_service_dir(secrets_dir, name, owner or kept)
    write_passwd(config_dir / "passwd", passwords)
    return names


def write_passwd(path: Path, passwords: dict[str, str]) -> None:
    lines = [f"{name}:{mosquitto_hash(pw)}" for name, pw in passwords.items()]
    # the broker (uid 1883 in Docker) must read it; it holds only hashes. An existing
    # file keeps its owner and mode (Docker makes it 1883, 0600).
    _replace(path, "\n".join(lines) + "\n", new_mode=0o644)


def _write_private(path: Path, text: str) -> None:
    _replace(path, text, new_mode=0o600)


def _replace(path: Path, text: str, *, new_mode: int) -> None:
    """Write ``text`` to ``path`` atomically (a crash leaves the old or the new file, never
    half of one), keeping the owner and the mode of a file already there; a new file gets
    ``new_mode``. The temporary file is 0600 from the start: nobody reads a secret early."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, (st.st_mode & 0o7777) if st is not None else new_mode)
        if st is not None and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError as exc:
                raise GridzeroError(
                    f"{path} belongs to uid {st.st_uid}, gid {st.st_gid}; this user cannot "
                    "keep that owner: run as root (sudo, or through `docker compose run`)"
                ) from exc
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=Path("mosquitto/config"))
    parser.add_argument("--secrets-dir", type=Path, default=Path("secrets"))
    parser.add_argument(
        "--per-service-dirs",
        action="store_true",
        help="also write secrets/<user>/mqtt.env (one directory per container)",
    )
    parser.add_argument(
        "--owner", metavar="UID:GID", help="owner of the per-service files (Docker)"
    )


def _owner(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    uid, _, gid = text.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise UsageError(f"--owner {text!r}: expected UID:GID, e.g. 10001:10001")
    return int(uid), int(gid)


RELOAD_HINT = (
    "now reload the broker's passwd file (Docker: `docker compose kill -s SIGHUP mosquitto`; "
    "`gridzero up`: stop and start it) and restart {who} (docs/security.md, "
    '"Rotating a password")'
)


def main(argv: list[str]) -> int:
    """``gridzero credentials init|rotate|acl``."""
    parser = argparse.ArgumentParser(
        prog="gridzero credentials",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser(
        "init", help="create passwords, the broker's passwd file and secrets/*.env"
    )
    _common(init)
    init.add_argument("--force", action="store_true", help="replace every existing password")
    init.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="USER",
        help="leave this user out (e.g. sim on real hardware); remembered until --with",
    )
    init.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="USER",
        help="take a user left out with --without back in",
    )
    rotate = sub.add_parser(
        "rotate", help="new passwords for the named users only (every other one is kept)"
    )
    _common(rotate)
    rotate.add_argument("users", nargs="*", metavar="USER", help=", ".join(USER_NAMES))
    rotate.add_argument(
        "--console-login",
        action="store_true",
        help="also a new telnet console login password (secrets/telnet-console-password.txt)",
    )
    acl = sub.add_parser(
        "acl",
        help="print (or --write) the ACL for the base and meter topic of the controller's "
        "settings file (defaults without --controller-config)",
    )
    acl.add_argument(
        "--controller-config",
        type=Path,
        metavar="FILE",
        help="the controller's settings file (YAML): base_topic, meter_preset, meter_topic",
    )
    acl.add_argument("--base", help="base topic (default: the controller's, else gridzero)")
    acl.add_argument("--write", type=Path, help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    if args.action == "acl":
        base, source = read_controller_meter(args.controller_config)
        text = render_acl(args.base or base, source.topic)
        if args.write:
            args.write.write_text(text, encoding="utf-8")
        else:
            print(text, end="")
        return 0
    if args.action == "rotate":
        names = rotate_credentials(
            args.config_dir,
            args.secrets_dir,
            _split(args.users),
            console_login=args.console_login,
            per_service_dirs=args.per_service_dirs,
            owner=_owner(args.owner),
        )
        print(f"new credentials for {', '.join(names)} in {args.secrets_dir}/<user>.env")
        if _split(args.users):
            print(RELOAD_HINT.format(who=" and ".join(names)))
        else:  # only the console login: no broker password changed
            print('now restart telnet-console (docs/security.md, "Rotating a password")')
        return 0
    passwords = init_credentials(
        args.config_dir,
        args.secrets_dir,
        force=args.force,
        per_service_dirs=args.per_service_dirs,
        owner=_owner(args.owner),
        without=_split(args.without),
        with_=_split(args.with_),
        without_once=_split([os.environ.get(WITHOUT_ENV, "")]),
    )
    out = sorted(set(USER_NAMES) - set(passwords))
    print(
        f"{len(passwords)} broker users in {args.config_dir / 'passwd'}; credentials in "
        f"{args.secrets_dir}/<user>.env" + (f"; left out: {', '.join(out)}" if out else "")
    )
    return 0
