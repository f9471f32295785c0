"""Live latency: meter message on the broker -> demand frame on the inverter's serial line.

    python -m gridzero_tools.bench.latency [--messages 1000] [--period-s 0.3]

Runs the real broker (from mosquitto/config), the real controller and inverter
services as processes (`gridzero run`), and plays the rest of the world:

- the serial peer of the inverter (a TCP server on loopback, reached by the
  inverter service as ``socket://``) records every demand frame and its arrival
  time, and acts as an ideal inverter (its output is the last demand);
- a meter publishes grid = house load - inverter output. The house load steps by
  300..700 W (within 150..850 W) on every other message and holds on the one between, like
  appliances switching; every step needs a new demand. (Until the third session the load
  jumped by 150..400 W on every message; the controller's law now reads a load that never
  holds as a noisy meter and smooths it, so most such messages got no new frame.)
- the bms, shunt and charger states the controller and the inverter service
  need are published as their users would (fresh limits, SoC 60 %, charger off).

For every meter message it measures the time until the first frame whose
demand differs from the frame before the message. It prints p50/p90/p99/max,
how many messages got no new frame before the next one, and the controller
process's CPU time and resident memory. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridzero.contract import BmsLimits, ChargerState, ShuntState, Topics
from gridzero.runtime.broker import free_port
from gridzero.testing import Probe, TestBroker, wait_until
from gridzero_inverter.codec import DemandFrame, Framer

T = Topics()


@dataclass
class SerialPeer:
    """The inverter's end of the RS485 line: records demand frames as they arrive."""

    port: int = field(default_factory=free_port)
    frames: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, args=(server,), daemon=True).start()

    def _serve(self, server: socket.socket) -> None:
        while True:
            conn, _ = server.accept()
            framer = Framer()
            while chunk := conn.recv(256):
                now = time.monotonic()
                # the inverter service writes whole frames: flush, so nothing is held back
                for frame in (*framer.feed(chunk).frames, *framer.flush().frames):
                    if isinstance(frame, DemandFrame):
                        with self.lock:
                            self.frames.append((now, frame.power_w))

    @property
    def output_w(self) -> int:
        with self.lock:
            return self.frames[-1][1] if self.frames else 0


def _state_publisher(probes: dict[str, Probe], stop: threading.Event) -> None:
    seq = 0
    while not stop.is_set():
        now = time.time()
        seq += 1
        limits = BmsLimits(
            ts=now,
            boot="latency",
            seq=seq,
            cvl_v=49.2,
            ccl_a=30,
            dcl_a=30,
            charge_allowed=True,
            discharge_allowed=True,
            pack_voltage_v=48.0,
        )
        probes["bms"].publish(T.bms_limits, limits.model_dump_json(), qos=0)
        shunt = ShuntState(
            ts=now,
            sensor="ok",
            current_a=0.0,
            power_w=0.0,
            soc_pct=60.0,
            soc_source="set",
            remaining_ah=100,
            remaining_wh=4800,
            capacity_ah=200,
            charge_in_ah=0,
            charge_out_ah=0,
            energy_in_kwh=0,
            energy_out_kwh=0,
            offset_counts=0,
            gain=1,
        )
        probes["shunt"].publish(T.shunt_state, shunt.model_dump_json(), qos=0)
        charger = ChargerState(
            ts=now,
            link="ok",
            dc_on=False,
            output_voltage_v=48.0,
            output_current_a=0.0,
            output_power_w=0.0,
            temperature_c=30,
            input_voltage_v=230,
            setpoint_voltage_v=None,
            setpoint_current_a=None,
            limit_reason="controller",
        )
        probes["charger"].publish(T.charger_state, charger.model_dump_json(), qos=0)
        stop.wait(0.5)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _spawn(broker: TestBroker, service: str, config: Path, data: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **broker.env(service),
        "GRIDZERO_DATA_DIR": str(data / service),
        "GRIDZERO_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gridzero.cli", "run", service, "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run(messages: int, period_s: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="gridzero-latency-") as tmp:
        root = Path(tmp)
        broker = TestBroker.create(root)
        peer = SerialPeer()
        peer.start()
        (root / "inverter.yaml").write_text(
            f"units:\n  - id: gtn1\n    port: socket://127.0.0.1:{peer.port}\n    max_power_w: 900\n"
            "    dc_min_v: 43.0\n    dc_max_v: 60.0\n",
            encoding="utf-8",
        )
        # the controller learns gtn1 from the inverter service
        (root / "controller.yaml").write_text("{}\n", encoding="utf-8")
        procs = {s: _spawn(broker, s, root / f"{s}.yaml", root) for s in ("inverter", "controller")}
        probes = {u: broker.probe(u, subscribe=None) for u in ("bms", "shunt", "charger", "meter")}
        watcher = broker.probe()
        stop = threading.Event()
        threading.Thread(target=_state_publisher, args=(probes, stop), daemon=True).start()
        try:
            for service in procs:
                watcher.wait_for(T.status(service), lambda p: p == b"online", timeout_s=20)
            wait_until(lambda: peer.frames != [], 20, "first demand frame")
            return _measure(rng, messages, period_s, peer, probes["meter"], procs["controller"].pid)
        finally:
            stop.set()
            for proc in procs.values():
                proc.terminate()
                proc.wait(5)
            for probe in (*probes.values(), watcher):
                probe.close()
            broker.stop()


def _measure(
    rng: random.Random,
    messages: int,
    period_s: float,
    peer: SerialPeer,
    meter: Probe,
    controller_pid: int,
) -> dict[str, float]:
    load_w = 400.0
    latencies: list[float] = []
    missed = 0
    cpu0, wall0 = _proc_cpu_s(controller_pid), time.monotonic()
    for i in range(messages):
        load_w = _next_load(rng, load_w)
        before = peer.output_w
        sent = time.monotonic()
        meter.publish("meterbox/grid", str(round(load_w - before)), qos=0)
        deadline = sent + period_s
        latency = _first_change(peer, sent, before, deadline)
        if latency is not None:
            latencies.append(latency)
        else:
            missed += 1
        time.sleep(max(0.0, deadline - time.monotonic()))
        # The load holds for one message: not timed.
        meter.publish("meterbox/grid", str(round(load_w - peer.output_w)), qos=0)
        time.sleep(period_s)
        if sys.stderr.isatty() and i % 50 == 0:
            print(f"\r{i}/{messages}", end="", file=sys.stderr)
    cpu_s, wall_s = _proc_cpu_s(controller_pid) - cpu0, time.monotonic() - wall0
    if not latencies:
        raise RuntimeError("no meter message produced a new demand frame")
    q = statistics.quantiles(latencies, n=100)
    return {
        "messages": messages,
        "answered": len(latencies),
        "no_new_frame": missed,
        "p50_ms": q[49] * 1000,
        "p90_ms": q[89] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": max(latencies) * 1000,
        "controller_cpu_pct": 100 * cpu_s / wall_s,
        "controller_rss_mib": _proc_rss_mib(controller_pid),
    }


def _next_load(rng: random.Random, load_w: float) -> float:
    """A new house load in 150..850 W, 300..700 W away from ``load_w``."""
    while True:
        new_w = load_w + rng.choice((-1, 1)) * rng.uniform(300, 700)
        if 150.0 <= new_w <= 850.0:
            return new_w


def _first_change(peer: SerialPeer, sent: float, before: int, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        with peer.lock:
            new = [t for t, w in peer.frames if t >= sent and w != before]
        if new:
            return new[0] - sent
        time.sleep(0.001)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridzero_tools.bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--period-s", type=float, default=0.3, help="time between meter messages")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.messages, args.period_s, args.seed)
    print("meter message -> demand frame on the serial line (real broker, controller, inverter):")
    for key, value in result.items():
        print(f"  {key:<20} {value:.1f}" if isinstance(value, float) else f"  {key:<20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
