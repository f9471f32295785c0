"""Start a Mosquitto from the project's own ``mosquitto/config`` on this machine.

Used by ``gridzero up`` (when no broker is given) and by the test suite. The
committed config is copied into a private directory with its paths and listener
rewritten, so the very file Docker mounts is the one that is tested.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridzero.errors import GridzeroError
from gridzero.runtime.credentials import write_passwd

PROJECT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "mosquitto" / "config"


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_config(source: Path, workdir: Path, port: int, host: str = "127.0.0.1") -> str:
    """The project's mosquitto.conf, relocated to ``workdir`` and listening on host:port."""
    out = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        line = f"listener {port} {host}" if raw.strip().startswith("listener ") else raw
        line = line.replace("/mosquitto/config/", f"{workdir}/config/").replace(
            "/mosquitto/data/", f"{workdir}/data/"
        )
        out.append(line)
    # Started as root, mosquitto would switch to user `mosquitto`, which cannot read a
    # private work directory; stay the user that started it (ignored when not root).
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


@dataclass
class BrokerProcess:
    """A running mosquitto started from the project config."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    config_dir: Path = PROJECT_CONFIG_DIR
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def prepare(self, passwords: dict[str, str] | None = None) -> None:
        """Copy config and ACL into the work directory; the passwd file is copied, or
        written from ``passwords`` (user -> password) so it always matches them."""
        (self.workdir / "config").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        if passwords is not None:
            write_passwd(self.workdir / "config" / "passwd", passwords)
        for name in ("acl",) if passwords is not None else ("acl", "passwd"):
            src = self.config_dir / name
            if not src.exists():
                raise GridzeroError(
                    f"broker config {src} is missing; run `gridzero credentials init`"
                )
            shutil.copy(src, self.workdir / "config" / name)
        conf = render_config(self.config_dir / "mosquitto.conf", self.workdir, self.port, self.host)
        (self.workdir / "config" / "mosquitto.conf").write_text(conf, encoding="utf-8")

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
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise GridzeroError(
            f"mosquitto did not listen on {self.host}:{self.port} within {timeout_s} s"
        )

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
