"""The fault rig: the whole system (`gridzero up`) on a simulated plant that outlives it.

The plant simulator runs as its own process, like real hardware: killing the
system (or its broker) does not stop the cells, the rectifier or the inverters.
The simulator also appends its truth to a file (``truth_file``), so what the
plant did is known even while the broker is down.

Times are Unix seconds (the truth's ``ts``), so MQTT observations and truth
lines share one clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridzero.contract import Topics
from gridzero.registry import SYSTEM_SERVICES
from gridzero.runtime.credentials import init_credentials, read_env_file
from gridzero.testing import Probe, System

T = Topics()
Truth = dict[str, Any]


def flat_profile(path: Path, load_w: float, pv_w: float, hours: float = 24.0) -> Path:
    """A constant load/PV profile (the mode is then chosen with load steps)."""
    end = int(hours * 3600)
    path.write_text(f"t_s,load_w,pv_w\n0,{load_w:g},{pv_w:g}\n{end},{load_w:g},{pv_w:g}\n")
    return path


@dataclass(frozen=True, slots=True)
class RigConfig:
    """What the rig runs: profile (name or CSV path), plant, sim speed and start time."""

    profile: str = ""
    plant: str = "default"
    speed: float = 1.0
    start_s: float | None = None
    truth_period_s: float = 0.2
    settings: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()


class Rig:
    """The system under test plus its plant; see the module docstring."""

    def __init__(self, root: Path, config: RigConfig = RigConfig()) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        profile = config.profile or str(flat_profile(root / "profile.csv", 400.0, 2400.0))
        self.truth_path = root / "truth.jsonl"
        sim: dict[str, object] = {
            "profile": profile,
            "plant": config.plant,
            "speed": config.speed,
            "truth_period_s": config.truth_period_s,
            "truth_file": str(self.truth_path),
        }
        if config.start_s is not None:
            sim["start_s"] = config.start_s
        settings = {name: dict(values) for name, values in config.settings}
        self.system = System(
            root / "system", services=",".join(SYSTEM_SERVICES), sim=sim, settings=settings
        )
        self.sim_proc: subprocess.Popen[bytes] | None = None
        self.brokers: list[subprocess.Popen[bytes]] = []  # mosquittos we restarted ourselves
        self.probe: Probe | None = None
        self._truth_offset = 0
        self._truths: list[Truth] = []
        self._mono_to_wall = time.time() - time.monotonic()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        sys_ = self.system
        init_credentials(sys_.data_dir / "credentials", sys_.secrets_dir)
        self.sim_proc = self._spawn_sim()
        self._wait_port(sys_.hub_port, 30, "the simulator's CAN hub")
        sys_.start()
        self.probe = sys_.probe("operator")

    def _spawn_sim(self) -> subprocess.Popen[bytes]:
        sys_ = self.system
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDZERO_")}
        env.update(read_env_file(sys_.secrets_dir / "sim.env"))
        env.update(
            {
                "GRIDZERO_MQTT__HOST": "127.0.0.1",
                "GRIDZERO_MQTT__PORT": str(sys_.port),
                "GRIDZERO_MQTT__RECONNECT_MAX_S": "2",
                "GRIDZERO_DATA_DIR": str(sys_.data_dir / "sim"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        argv = [sys.executable, "-m", "gridzero.cli", "run", "sim"]
        argv += ["--config", str(sys_.config_dir / "sim.yaml")]
        log = (self.root / "sim.log").open("ab")
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_port(self, port: int, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            if self.sim_proc is not None and self.sim_proc.poll() is not None:
                raise RuntimeError(f"the simulator exited: see {self.root / 'sim.log'}")
            time.sleep(0.1)
        raise TimeoutError(f"{what} not listening on port {port} within {timeout_s} s")

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        self.system.stop()
        for broker in self.brokers:
            _terminate(broker)
        self.brokers.clear()
        if self.sim_proc is not None:
            _terminate(self.sim_proc)
            self.sim_proc = None

    # ------------------------------------------------------------------ faults and processes

    def inject(self, fault: dict[str, Any], timeout_s: float = 60.0) -> None:
        """Publish a fault to the simulator (contract SimFault or the plant's own JSON).

        Waits for the simulator's answer; a refused fault raises RuntimeError with its reason.
        """
        text = json.dumps(fault)
        deadline = time.monotonic() + timeout_s
        answer = None
        # the simulator may still be reconnecting after a broker or system restart: repeat
        # the fault until it answers (an unanswered one never reached it)
        while answer is None and time.monotonic() < deadline:
            since = time.time()
            self._probe().publish(T.sim_fault_set, text)
            answer = self.wait_message(
                T.ack("sim"), lambda p: json.loads(p).get("value") == text[:200], 2.0, since=since
            )
        if answer is None:
            raise RuntimeError(f"the simulator did not answer fault {text} within {timeout_s} s")
        ack = json.loads(answer)
        if not ack["ok"]:
            raise RuntimeError(f"the simulator refused fault {text}: {ack['reason']}")

    def publish(self, topic: str, payload: str) -> None:
        """Publish as user ``operator`` (faults, settings, buttons)."""
        self._probe().publish(topic, payload)

    def clear(self, kind: str = "") -> None:
        self.inject({"kind": "clear", "target": kind})

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal one child of `gridzero up` (a service or ``mosquitto``); returns its PID."""
        pid = self.system.pid(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid

    def kill_broker(self) -> None:
        """SIGKILL the broker, whoever started it (`gridzero up` or a restart of ours)."""
        for broker in self.brokers:
            broker.kill()
            broker.wait()
        self.brokers.clear()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            self.kill("mosquitto")

    def start_broker(self) -> None:
        """Start the broker `gridzero up` ran, from its own config (not restarted by `up`)."""
        conf = self.system.data_dir / "broker" / "config" / "mosquitto.conf"
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = (self.root / "mosquitto-restarted.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - fixed executable, the system's own config
            [exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.brokers.append(proc)
        self._wait_port(self.system.port, 10, "the restarted broker")
        self.system.data_dir.joinpath("pids", "mosquitto.pid").write_text(f"{proc.pid}\n")

    def kill_system(self) -> None:
        """SIGKILL `gridzero up`, every service and the broker at once (a power cut of the Pi)."""
        sys_ = self.system
        pids = []
        for name in (*SYSTEM_SERVICES, "mosquitto"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                pids.append(sys_.pid(name))
        if sys_.proc is not None:
            pids.append(sys_.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for broker in self.brokers:
            broker.wait()
        self.brokers.clear()
        if sys_.proc is not None:
            sys_.proc.wait()
            sys_.proc = None
        for pid in pids:  # reap nothing else; just wait until they are gone
            _wait_gone(pid, 10)

    def start_system(self) -> None:
        """`gridzero up` again, with the same data, secrets and ports."""
        if self.probe is not None:
            self.probe.close()
        self.system.start()
        self.probe = self.system.probe("operator")

    # ------------------------------------------------------------------ observations

    def _probe(self) -> Probe:
        if self.probe is None:
            raise RuntimeError("the rig is not started")
        return self.probe

    def wall(self, mono: float) -> float:
        return mono + self._mono_to_wall

    def truths(self, since: float = 0.0, until: float = float("inf")) -> list[Truth]:
        """Truth lines with ``since <= ts < until`` (read from the simulator's file)."""
        self._read_truths()
        return [t for t in self._truths if since <= t["ts"] < until]

    def latest_truth(self) -> Truth | None:
        self._read_truths()
        return self._truths[-1] if self._truths else None

    def _read_truths(self) -> None:
        if not self.truth_path.exists():
            return
        with self.truth_path.open("rb") as fh:
            fh.seek(self._truth_offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._truth_offset += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                self._truths.append(json.loads(line))

    def wait_truth(
        self, predicate: Callable[[Truth], bool], timeout_s: float, *, since: float = 0.0
    ) -> Truth | None:
        """The first truth at or after ``since`` that satisfies ``predicate`` (None on timeout)."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            found = self.truths(since)
            for truth in found[seen:]:
                if predicate(truth):
                    return truth
            seen = len(found)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def messages(
        self, topic_filter: Callable[[str], bool], since: float, until: float = float("inf")
    ) -> list[tuple[float, str, bytes]]:
        """(wall time, topic, payload) of recorded MQTT messages (retained ones included)."""
        return [
            (self.wall(at), topic, payload)
            for at, topic, payload, _retain in list(self._probe().messages)
            if topic_filter(topic) and since <= self.wall(at) < until
        ]

    def wait_message(
        self, topic: str, predicate: Callable[[bytes], bool], timeout_s: float, *, since: float
    ) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _at, _topic, payload in self.messages(lambda t: t == topic, since):
                if predicate(payload):
                    return payload
            time.sleep(0.1)
        return None

    def log(self) -> str:
        return self.system.log()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
