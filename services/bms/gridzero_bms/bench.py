"""Receive-path benchmark: ``.venv/bin/python -m gridzero_bms.bench``.

Feeds recorded-style traffic (8 modules, 3 cell frames + 1 temperature frame each per poll
cycle, generated with our own encoder, varying voltages) through decode + pack update on one
core, then times the 10 Hz snapshot + protection step. Prints frames/s, the CPU fraction three
fully loaded 500 kbit/s buses (3 × 4000 frames/s) would need, and peak resident memory.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time

from gridzero_bms.codec import (
    FrameDecoder,
    encode_module_cells,
    encode_temperature_frame,
)
from gridzero_bms.pack import Pack, PackSettings
from gridzero_bms.protection import Protection, ProtectionSettings

BUS_FRAMES_PER_S = 4000  # a 500 kbit/s bus full of 8-byte frames (~125 bits each)
BUSES = 3


def traffic(cycles: int, modules: int = 8, seed: int = 1) -> list[tuple[int, bytes]]:
    """``cycles`` poll cycles of every module's frames, voltages wandering around 3.9 V."""
    rng = random.Random(seed)
    frames: list[tuple[int, bytes]] = []
    for cycle in range(cycles):
        for module in range(1, modules + 1):
            cells = [3900 + rng.randint(-40, 40) for _ in range(12)]
            frames.extend(encode_module_cells(module, cells, counter=cycle % 16))
            frames.append(encode_temperature_frame(module, [20 + rng.random() * 5, 21.0]))
    return frames


def run(cycles: int) -> dict[str, float]:
    frames = traffic(cycles)
    decoder = FrameDecoder()
    pack = Pack(PackSettings())
    decode, apply = decoder.decode, pack.apply
    step_s = 0.5 / (len(frames) / cycles)  # one poll cycle per 0.5 s of simulated time
    start = time.process_time()
    now_s = 0.0
    for arbitration_id, data in frames:
        apply(0, decode(arbitration_id, data), now_s)
        now_s += step_s
    per_frame_s = (time.process_time() - start) / len(frames)

    protection = Protection(ProtectionSettings())
    evaluations = 2000
    start = time.process_time()
    for i in range(evaluations):
        protection.update(pack.snapshot(now_s + i * 0.1), now_s + i * 0.1)
    per_eval_s = (time.process_time() - start) / evaluations

    load = BUSES * BUS_FRAMES_PER_S
    return {
        "frames": len(frames),
        "frames_per_s": 1 / per_frame_s,
        "us_per_frame": per_frame_s * 1e6,
        "cpu_fraction_3_buses": load * per_frame_s,
        "us_per_protection_step": per_eval_s * 1e6,
        "cpu_fraction_protection_10hz": 10 * per_eval_s,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gridzero_bms.bench")
    parser.add_argument("--cycles", type=int, default=5000, help="poll cycles of 32 frames")
    ns = parser.parse_args(argv)
    r = run(ns.cycles)
    load = BUSES * BUS_FRAMES_PER_S
    print(f"frames decoded + applied : {r['frames']:.0f}")
    print(
        f"throughput (one core)    : {r['frames_per_s']:,.0f} frames/s ({r['us_per_frame']:.2f} µs/frame)"
    )
    print(f"3 full buses ({load} f/s) : {100 * r['cpu_fraction_3_buses']:.1f} % of one core")
    print(
        f"snapshot + protection    : {r['us_per_protection_step']:.0f} µs/step, {100 * r['cpu_fraction_protection_10hz']:.2f} % of one core at 10 Hz"
    )
    print(f"peak resident memory     : {r['max_rss_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
