"""Start a Mosquitto from the project's own ``mosquitto/config`` on this machine.

Used by ``gridzero up`` (when no broker is given) and by the test suite. The
committed config is copied into a private directory with its paths rewritten, so
the very file Docker mounts is the one that is tested. The plain listener moves
to the port given (on loopback by default); a TLS listener (one with a
``certfile``, e.g. ``conf.d/tls.conf``) keeps its own port and address, or moves
to ``tls_port``. ``include_dir`` files are inlined in Mosquitto's order.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridzero.errors import GridzeroError
from gridzero.runtime.credentials import add_logins_to_acl, add_logins_to_passwd, write_passwd

PROJECT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "mosquitto" / "config"
DOCKER_CONFIG = "/mosquitto/config/"
DOCKER_DATA = "/mosquitto/data/"


LOOPBACK = "127.0.0.1"


def connect_host(bind: str) -> str:
    """Where a client on this machine reaches a listener bound to ``bind``."""
    return LOOPBACK if bind in ("0.0.0.0", "::", "") else bind  # noqa: S104 - not a bind


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _include_order(name: str) -> tuple[tuple[str, bool], ...]:
    # Mosquitto's order: case-sensitive alphabetical, an upper-case letter before its
    # lower case (00.conf, A.conf, a.conf, B.conf)
    return tuple((ch.lower(), ch.islower()) for ch in name)


def _expand_includes(source: Path) -> list[str]:
    """The main file with each ``include_dir`` replaced by its ``*.conf`` files' lines."""
    out: list[str] = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        words = raw.split()
        if not (words and words[0] == "include_dir"):
            out.append(raw)
            continue
        where = " ".join(words[1:])
        folder = (
            source.parent / where[len(DOCKER_CONFIG) :]
            if where.startswith(DOCKER_CONFIG)
            else Path(where)
        )
        if not folder.is_dir():
            raise GridzeroError(f"{source}: include_dir {where}: no such directory ({folder})")
        out.append(f"# {raw.strip()}: inlined below")
        for conf in sorted(folder.glob("*.conf"), key=lambda p: _include_order(p.name)):
            out.append(f"# from {conf}")
            out.extend(conf.read_text(encoding="utf-8").splitlines())
    return out


def _is_tls_block(lines: list[str], start: int) -> bool:
    """Whether the listener starting at ``lines[start]`` has a certificate (until the next one)."""
    for raw in lines[start + 1 :]:
        word = raw.split()[0] if raw.split() else ""
        if word == "listener":
            return False
        if word == "certfile":
            return True
    return False


# Only for the Home Assistant end-to-end test: the ha-peer tool watches for Home Assistant's
# birth message with a second connection under Home Assistant's own login, which one
# connection per login would keep logging out. Never set in production or in Docker.
SHARED_CLIENT_IDS_ENV = "MOSQUITTO_TEST_SHARED_CLIENT_IDS"


def render_config(
    source: Path,
    workdir: Path,
    port: int,
    host: str = "127.0.0.1",
    tls_port: int | None = None,
) -> str:
    """The project's mosquitto.conf, relocated to ``workdir``: the first plain listener on
    host:port, a TLS listener kept as written or moved to host:``tls_port``."""
    lines = _expand_includes(source)
    out = []
    plain_done = False
    shared_ids = os.environ.get(SHARED_CLIENT_IDS_ENV) == "1"
    for i, raw in enumerate(lines):
        line = raw
        if shared_ids and raw.split()[:1] == ["use_username_as_clientid"]:
            continue
        if raw.split()[:1] == ["listener"]:
            if _is_tls_block(lines, i):
                line = f"listener {tls_port} {host}" if tls_port is not None else raw
            elif not plain_done:
                line, plain_done = f"listener {port} {host}", True
        line = line.replace(DOCKER_CONFIG, f"{workdir}/config/").replace(
            DOCKER_DATA, f"{workdir}/data/"
        )
        out.append(line)
    # Started as root, mosquitto would switch to user `mosquitto`, which cannot read a
    # private work directory; stay the user that started it (ignored when not root).
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


@dataclass
class BrokerProcess:
    """A running mosquitto started from the project config.

    ``acl`` replaces the config directory's ACL (``gridzero up`` renders it from the
    controller's settings, so the meter topic it names is allowed). ``logins`` > 1 lets every user also log in as ``<user>.2`` … (same password, a copy
    of its ACL section): for tools and tests that hold several connections of one user,
    which ``use_username_as_clientid`` otherwise makes replace each other.
    """

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    config_dir: Path = PROJECT_CONFIG_DIR
    tls_port: int | None = None
    logins: int = 1
    acl: str | None = None  # the ACL to use instead of the config directory's (`gridzero up`)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def prepare(self, passwords: dict[str, str] | None = None) -> None:
        """Copy the config directory (ACL, certificates, …) into the work directory; the
        passwd file is copied, or written from ``passwords`` (user -> password) so it
        always matches them."""
        config = self.workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        for name in ("acl",) if passwords is not None else ("acl", "passwd"):
            if not (self.config_dir / name).exists():
                raise GridzeroError(
                    f"broker config {self.config_dir / name} is missing; run `gridzero credentials init`"
                )
        for src in self.config_dir.iterdir():
            if src.name == "mosquitto.conf" or (src.name == "passwd" and passwords is not None):
                continue
            try:
                if src.is_dir():
                    shutil.copytree(src, config / src.name, dirs_exist_ok=True)
                else:
                    shutil.copy(src, config / src.name)
            except OSError as exc:  # e.g. a TLS key readable by the Docker broker only
                raise GridzeroError(f"cannot copy the broker config {src}: {exc}") from exc
        if passwords is not None:
            write_passwd(config / "passwd", passwords)
        if self.acl is not None:
            (config / "acl").write_text(self.acl, encoding="utf-8")
        if self.logins > 1:
            for name, add in (("passwd", add_logins_to_passwd), ("acl", add_logins_to_acl)):
                path = config / name
                path.write_text(
                    add(path.read_text(encoding="utf-8"), self.logins), encoding="utf-8"
                )
        conf = render_config(
            self.config_dir / "mosquitto.conf", self.workdir, self.port, self.host, self.tls_port
        )
        (config / "mosquitto.conf").write_text(conf, encoding="utf-8")

    def start(self, timeout_s: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise GridzeroError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed executable, our own config
            [exe, "-c", str(self.workdir / "config" / "mosquitto.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C must not kill it before the services
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GridzeroError(
                    f"mosquitto exited with {self.proc.returncode}; see {self.workdir / 'mosquitto.log'}"
                )
            try:
                with socket.create_connection((connect_host(self.host), self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise GridzeroError(
            f"mosquitto did not listen on {self.host}:{self.port} within {timeout_s} s"
        )

    def reload(self, passwords: dict[str, str] | None = None) -> None:
        """Copy the config again and make the running broker re-read its passwd and ACL
        (SIGHUP; clients whose password no longer matches are disconnected)."""
        self.prepare(passwords)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
