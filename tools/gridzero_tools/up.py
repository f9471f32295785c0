"""``gridzero up``: the whole system on this machine, without Docker.

Starts the broker from ``mosquitto/`` (unless ``--broker`` names one), then the
simulator (unless ``--no-sim``) and every service as its own process, each
logging in with its own credentials from ``secrets/``. Their logs are
interleaved with a ``[service]`` prefix. A service that dies is restarted with
backoff, as Docker's restart policy would. Ctrl-C (or SIGTERM) stops
everything cleanly: services first (so they reach their safe states while the
broker is still there), then the simulator, then the broker.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from gridzero.errors import UsageError
from gridzero.meter import read_controller_meter
from gridzero.registry import OPTIONAL_SERVICES, SYSTEM_SERVICES
from gridzero.runtime.broker import LOOPBACK, BrokerProcess, connect_host, free_port
from gridzero.runtime.credentials import (
    LEFT_OUT_FILE,
    init_credentials,
    read_env_file,
    render_acl,
)
from gridzero.runtime.launch import SERVICE_MODULES

DATA_UP = Path(__file__).resolve().parent / "data" / "up"
DEFAULT_PORT = 1883
PORT_FILE = "broker-port"  # in the data directory: the port a fallback took, kept for next time
# the simulator first: its CAN hub and serial endpoints must listen before the devices open
ORDER = ("sim", *SYSTEM_SERVICES)
COLOURS = {
    "sim": 35,
    "bms": 32,
    "shunt": 36,
    "charger": 33,
    "inverter": 34,
    "controller": 31,
    "telnet-console": 37,
    "housebatt-compat": 90,
}


@dataclass
class Child:
    """One supervised service process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start_s: float = 0.0
    started_s: float = 0.0
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops the children; prints their output with prefixes.

    Each child's PID is written to ``<pid_dir>/<name>.pid`` (tools and the fault
    tests use it to kill one service and watch it come back).
    """

    def __init__(self, children: list[Child], *, colour: bool, pid_dir: Path | None = None) -> None:
        self.children = children
        self.pid_dir = pid_dir
        self.colour = colour
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        prefix = f"[{name}]".ljust(17)
        if self.colour:
            prefix = f"\x1b[{COLOURS.get(name, 37)}m{prefix}\x1b[0m"
        with self._print_lock:
            sys.stdout.write(f"{prefix} {line}\n")
            sys.stdout.flush()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def start(self, child: Child) -> None:
        # own session: a terminal's Ctrl-C reaches only `up`, which stops the
        # children in order (services before the broker they report through)
        child.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            child.argv,
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_s = time.monotonic()
        if self.pid_dir is not None:
            self.pid_dir.mkdir(parents=True, exist_ok=True)
            (self.pid_dir / f"{child.name}.pid").write_text(f"{child.proc.pid}\n", encoding="utf-8")
        assert child.proc.stdout is not None
        reader = threading.Thread(
            target=self._pump, args=(child.name, child.proc.stdout), daemon=True
        )
        reader.start()
        child.readers = [reader]

    def watch(self) -> None:
        """Restart children that exit, with backoff, until told to stop."""
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.proc is None:
                    if now >= child.next_start_s:
                        self.start(child)
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                ran_s = now - child.started_s
                child.restarts = 0 if ran_s > 60 else child.restarts + 1
                delay = min(30.0, 2.0 ** min(child.restarts, 5))
                self.say("up", f"{child.name} exited with {code}; restarting in {delay:.0f} s")
                if code == 2:
                    self.say(
                        "up", f"{child.name}: exit 2 means bad settings; see its message above"
                    )
                child.proc = None
                child.next_start_s = now + delay

    def stop_all(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("up", f"{child.name} did not stop in {timeout_s:.0f} s; killing it")
                child.proc.kill()
                child.proc.wait()
            for reader in child.readers:
                reader.join(1.0)


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(SERVICE_MODULES[name]) is not None
    except ModuleNotFoundError:
        return False


def _child_env(
    name: str, host: str, port: int, secrets_dir: Path, data_dir: Path
) -> dict[str, str]:
    creds = read_env_file(secrets_dir / f"{name}.env")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDZERO_")}
    env.update(creds)
    env.update(
        {
            "GRIDZERO_MQTT__HOST": host,
            "GRIDZERO_MQTT__PORT": str(port),
            "GRIDZERO_DATA_DIR": str(data_dir / name),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _argv(name: str, config_dir: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "gridzero.cli", "run", name]
    if config_dir is not None and (config_dir / f"{name}.yaml").exists():
        argv += ["--config", str(config_dir / f"{name}.yaml")]
    return argv


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gridzero up",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker", metavar="HOST:PORT", help="use this broker instead of starting one"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the broker we start (default: the port of the last start, else 1883; "
        f"a fallback port is remembered in DATA_DIR/{PORT_FILE})",
    )
    parser.add_argument(
        "--bind",
        metavar="ADDR",
        default=LOOPBACK,
        help="address the broker we start listens on (default 127.0.0.1: this machine only); "
        "0.0.0.0 for a Home Assistant on the LAN: then the passwords and TLS matter "
        "(docs/security.md)",
    )
    parser.add_argument(
        "--no-sim", action="store_true", help="real hardware: do not start the simulator"
    )
    parser.add_argument(
        "--services", help="comma-separated subset to start (default: all that exist)"
    )
    parser.add_argument(
        "--with",
        dest="with_services",
        action="append",
        default=[],
        metavar="NAME",
        help="also start an optional service (repeat or comma-separate): "
        + ", ".join(OPTIONAL_SERVICES),
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=DATA_UP,
        help="directory with <service>.yaml settings (default: the simulation set)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="state of every service"
    )
    parser.add_argument("--secrets-dir", type=Path, default=Path("secrets"))
    parser.add_argument(
        "--tls-port",
        type=int,
        help="port of the broker's TLS listener (mosquitto/config/conf.d; default: as written)",
    )
    parser.add_argument(
        "--logins",
        type=int,
        default=1,
        metavar="N",
        help="let each broker user log in N times at once, as <user>, <user>.2 … <user>.N "
        "(same password and rights; for tools and test rigs: a user has one connection "
        "at a time otherwise)",
    )
    parser.add_argument("--no-colour", action="store_true")
    return parser.parse_args(argv)


def _controller_config(config_dir: Path | None) -> Path | None:
    path = config_dir / "controller.yaml" if config_dir is not None else None
    return path if path is not None and path.exists() else None


def _broker_address(
    args: argparse.Namespace, passwords: dict[str, str], acl: str
) -> tuple[str, int, BrokerProcess | None, str]:
    """Where the services reach the broker, the broker we started, and a warning for the user."""
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--broker {args.broker!r}: expected HOST:PORT")
        return host, int(port), None, ""
    if not 1 <= args.logins <= 100:
        raise UsageError(f"--logins {args.logins}: expected 1 to 100")
    _check_bind(args.bind)
    port_file = args.data_dir / PORT_FILE
    port, warning = (args.port, "") if args.port else choose_port(port_file, args.bind)
    broker = BrokerProcess(
        (args.data_dir / "broker").resolve(),
        port,
        host=args.bind,
        tls_port=args.tls_port,
        logins=args.logins,
        acl=acl,
    )
    broker.prepare(passwords)
    broker.start()
    if port != DEFAULT_PORT and not args.port:
        port_file.write_text(f"{port}\n", encoding="utf-8")  # the next start takes it again
    return connect_host(args.bind), port, broker, warning


def _check_bind(address: str) -> None:
    try:
        socket.getaddrinfo(address, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise UsageError(
            f"--bind {address!r}: expected an IP address of this machine "
            "(127.0.0.1, 0.0.0.0 or one interface's address)"
        ) from None


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether mosquitto could listen on host:port now.

    Mosquitto binds its listeners with SO_REUSEADDR, so a port whose last connections
    are still in TIME_WAIT (a quick restart) is free for it; a bind without the option
    would call that port busy and move the broker away from it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def remembered_port(port_file: Path) -> int | None:
    """The port a former start fell back to (``PORT_FILE``), if any and valid."""
    try:
        text = port_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 1 <= int(text) <= 65535 else None


def choose_port(
    port_file: Path, host: str = LOOPBACK, default: int = DEFAULT_PORT
) -> tuple[int, str]:
    """The broker's port and a warning when it is not the one clients expect.

    The port of the last start (remembered when it was a fallback), else 1883; only
    when those are really taken (another program listens on them) a free port, which
    the caller remembers so that the next start keeps it.
    """
    remembered = remembered_port(port_file)
    for wanted in dict.fromkeys((remembered or default, default)):
        if not port_free(wanted, host):
            continue
        if wanted == default:
            port_file.unlink(missing_ok=True)
            back = remembered is not None and remembered != default
            return wanted, (
                f"port {remembered}, remembered from an earlier fallback, is taken: the "
                f"broker is back on port {default}"
                if back
                else ""
            )
        return wanted, (
            f"the broker listens on port {wanted}, not {default}: an earlier start fell "
            f"back to it (remembered in {port_file}; delete that file or pass --port "
            f"{default} to go back)"
        )
    port = free_port()
    return port, (
        f"port {default} is taken by another program (a second `gridzero up`, or a "
        f"broker of the system: `ss -ltnp 'sport = :{default}'`): the broker listens on "
        f"port {port} instead, and keeps it on the next start ({port_file}). Point Home "
        f"Assistant and your tools at port {port}, or free port {default}, delete "
        f"{port_file} and start again."
    )


def watch_command(host: str, port: int, secrets_dir: Path) -> str:
    """The shell command that shows every gridzero message on this broker."""
    env = str(secrets_dir / "operator.env")
    # `.` looks a name without a slash up in PATH
    source = shlex.quote(env if "/" in env else f"./{env}")
    return (
        f". {source} && mosquitto_sub -h {host} -p {port} -u operator "
        "-P \"$GRIDZERO_MQTT__PASSWORD\" -t 'gridzero/#' -t meterbox/grid -v"
    )


def _selected(args: argparse.Namespace) -> list[str]:
    if args.services:
        names = [s.strip() for s in args.services.split(",") if s.strip()]
        unknown = [n for n in names if n not in SERVICE_MODULES]
        if unknown:
            raise UsageError(f"--services: unknown {unknown}; known: {', '.join(SERVICE_MODULES)}")
    else:
        names = [n for n in ORDER if not (args.no_sim and n == "sim")]
    extra = [s.strip() for value in args.with_services for s in value.split(",") if s.strip()]
    unknown = [n for n in extra if n not in OPTIONAL_SERVICES]
    if unknown:
        raise UsageError(
            f"--with: unknown {unknown}; optional services: {', '.join(OPTIONAL_SERVICES)}"
        )
    return names + [n for n in extra if n not in names]


def _check_users(names: list[str], passwords: dict[str, str], args: argparse.Namespace) -> None:
    """Every service to start has a broker user (none was left out with --without)."""
    without = [n for n in names if n not in passwords]
    if without:
        hint = " (real hardware: --no-sim)" if without == ["sim"] else ""
        raise UsageError(
            f"no broker user for {', '.join(without)}: left out in "
            f"{args.secrets_dir / LEFT_OUT_FILE}; start without it{hint} or take it back "
            f"with `gridzero credentials init --with {without[0]}`"
        )


def _start_simulator_first(sup: Supervisor, config_dir: Path | None) -> None:
    """The device services open the simulator's CAN hub and serial endpoints: let it listen first."""
    sim = next((c for c in sup.children if c.name == "sim"), None)
    if sim is None:
        return
    sup.start(sim)
    host, port = _hub_address(config_dir)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not sup.stopping.is_set():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    sup.say(
        "up",
        f"the simulator's CAN hub {host}:{port} is not listening yet; starting the services anyway",
    )


def _hub_address(config_dir: Path | None) -> tuple[str, int]:
    address = "127.0.0.1:29536"
    path = config_dir / "sim.yaml" if config_dir is not None else None
    if path is not None and path.exists():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        address = str(data.get("can_hub") or address)
    host, _, port = address.rpartition(":")
    return ("127.0.0.1" if host in ("", "0.0.0.0") else host), int(port)  # noqa: S104


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # the broker we start gets a passwd file made from these very secrets
    passwords = init_credentials(args.data_dir / "credentials", args.secrets_dir)
    names = _selected(args)
    _check_users(names, passwords, args)
    missing = [n for n in names if not _available(n)]
    config_dir = None if args.no_sim and args.config_dir == DATA_UP else args.config_dir
    # the broker's ACL lets the meter write the topic the controller will read: both come
    # from the controller's settings file (a bad meter setting stops us here, named)
    base, meter = read_controller_meter(_controller_config(config_dir))
    host, port, broker, port_warning = _broker_address(
        args, passwords, render_acl(base, meter.topic)
    )
    children = [
        Child(n, _argv(n, config_dir), _child_env(n, host, port, args.secrets_dir, args.data_dir))
        for n in names
        if n not in missing
    ]
    sup = Supervisor(
        children, colour=sys.stdout.isatty() and not args.no_colour, pid_dir=args.data_dir / "pids"
    )
    if broker is not None and broker.proc is not None:
        (args.data_dir / "pids").mkdir(parents=True, exist_ok=True)
        (args.data_dir / "pids" / "mosquitto.pid").write_text(
            f"{broker.proc.pid}\n", encoding="utf-8"
        )
    where = f"{broker.host}:{port}" if broker is not None else f"{host}:{port}"
    sup.say("up", f"broker {where}" + (" (started from mosquitto/config)" if broker else ""))
    if broker is not None:
        sup.say("up", f"meter topic {meter.topic}: broker user `meter` may write it")
    else:
        sup.say(
            "up",
            f"meter topic {meter.topic}: the broker at {host}:{port} is not ours; its ACL must let "
            "the meter write it and the controller read it (`gridzero credentials acl "
            "--controller-config <file>` prints ours)",
        )
    if broker is not None and broker.host != LOOPBACK:
        sup.say(
            "up",
            f"WARNING: the broker listens on {broker.host}, reachable from the network: every "
            "user's password now guards the battery, and the plain listener sends them in "
            "clear text; switch TLS on (docs/security.md) and keep secrets/ private",
        )
    if port_warning:
        sup.say("up", f"WARNING: {port_warning}")
    sup.say("up", "watch it: " + watch_command(host, port, args.secrets_dir))
    if missing:
        sup.say("up", f"not built yet, skipped: {', '.join(missing)}")
    signal.signal(signal.SIGTERM, lambda *_: sup.stopping.set())
    # started in the background by a shell, SIGINT may be ignored: Ctrl-C / kill -INT must stop us
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _start_simulator_first(sup, config_dir)
        sup.watch()
    except KeyboardInterrupt:
        sup.say("up", "Ctrl-C: stopping")
    finally:
        sup.stop_all()
        if broker is not None:
            broker.stop()
        sup.say("up", "all stopped")
    return 0
