#!/usr/bin/env python3
"""Generate the bundled load/PV profiles in tools/gridzero_tools/data/profiles (fixed seed).

    .venv/bin/python scripts/make_profiles.py [--out DIR] [--seed N]

Every profile is CSV ``t_s,load_w,pv_w`` at 1 s resolution with integer
watts, t_s counted from the start of the profile (for the day profiles,
from midnight). The same seed always gives the same files byte for byte.

Profiles (synthetic, built from typical appliance signatures; they are not
measurements):

- sunny-day (24 h): clear-sky PV peaking ~3.6 kW; base load with a fridge and
  a freezer cycling; kettle boils (2.2 kW, ~3 min); an induction hob pulsing
  its elements at low power levels (full power on/off every few seconds); a
  washing machine whose heater draws 2 kW, then motor and spin.
- cloudy-day (24 h): broken cloud, PV swinging between ~20 % and 100 % of
  clear sky with edges of a few seconds; kettle, microwave pulsing, toaster.
- evening-oven (4 h from 17:00): oven preheat then thermostat cycling
  (2.4 kW on/off), hob, TV and lights, PV fading to zero.
- night-base (8 h from 22:00): base load, fridge and freezer cycles, no PV.
- load-steps (1 h): 200 W base, +1 kW steps up and down every 3 minutes, no PV.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent / "tools" / "gridzero_tools" / "data" / "profiles"
)
DEFAULT_SEED = 20240601
DAY_S = 86400

Series = list[float]


def _zeros(n: int) -> Series:
    return [0.0] * n


def add_block(series: Series, start_s: int, length_s: int, power_w: float) -> None:
    """Add power_w for length_s seconds from start_s (clipped to the series)."""
    for t in range(max(0, start_s), min(len(series), start_s + length_s)):
        series[t] += power_w


def add_base(series: Series, rng: random.Random, level_w: float, wander_w: float) -> None:
    """Standby loads: a slow random walk around level_w plus small fast noise."""
    x = 0.0
    for t in range(len(series)):
        x += rng.gauss(0.0, 1.0) * wander_w / 30.0 - x / 600.0
        series[t] += max(30.0, level_w + x + rng.gauss(0.0, 3.0))


def add_compressor(
    series: Series,
    rng: random.Random,
    power_w: float,
    on_s: tuple[int, int],
    off_s: tuple[int, int],
) -> None:
    """A fridge/freezer: start spike, running power decaying a little, random on/off times."""
    t = rng.randrange(0, off_s[1])
    while t < len(series):
        on = rng.randint(*on_s)
        for k in range(on):
            if t + k >= len(series):
                break
            spike = 4.0 * power_w if k == 0 else 0.0
            series[t + k] += power_w * (1.1 - 0.1 * min(1.0, k / 300.0)) + spike
        t += on + rng.randint(*off_s)


def add_kettle(series: Series, start_s: int, rng: random.Random) -> None:
    """2.2 kW until it boils (2.5-4 min)."""
    add_block(series, start_s, rng.randint(150, 240), 2200.0 + rng.uniform(-50, 50))


def add_hob_pulsing(series: Series, rng: random.Random, start_s: int, length_s: int) -> None:
    """Induction hob at low levels: full power in short bursts (duty cycle by level)."""
    t = start_s
    end = start_s + length_s
    while t < end:
        level_len = rng.randint(120, 420)
        power = rng.choice((1400.0, 1800.0, 2100.0))
        period = rng.randint(4, 12)
        duty = rng.uniform(0.25, 0.75)
        on = max(1, round(period * duty))
        for k in range(min(level_len, end - t)):
            if k % period < on:
                series[t + k] += power
        t += level_len


def add_washing_machine(series: Series, rng: random.Random, start_s: int) -> None:
    """Fill, 2 kW heater ~15 min, tumbling, spin."""
    t = start_s
    add_block(series, t, 180, 40.0)  # filling
    t += 180
    heat = rng.randint(780, 1020)
    add_block(series, t, heat, 2000.0)
    t += heat
    for _ in range(40):  # tumbling: motor bursts
        add_block(series, t, 12, rng.uniform(150, 280))
        t += rng.randint(25, 40)
    for _ in range(3):  # rinse
        add_block(series, t, 240, 60.0)
        t += 300
    add_block(series, t, 120, 250.0)  # spin up
    add_block(series, t + 120, 360, 520.0 + rng.uniform(-30, 30))


def add_microwave(series: Series, start_s: int, length_s: int) -> None:
    """Inverter-less microwave at half power: 1.2 kW, 50 % duty on a 20 s cycle."""
    for t in range(start_s, min(len(series), start_s + length_s)):
        if (t - start_s) % 20 < 10:
            series[t] += 1250.0
        else:
            series[t] += 90.0


def add_oven(series: Series, rng: random.Random, start_s: int, preheat_s: int, cook_s: int) -> None:
    """Preheat at 2.4 kW, then thermostat cycling."""
    add_block(series, start_s, preheat_s, 2400.0)
    t = start_s + preheat_s
    end = t + cook_s
    while t < end:
        off = rng.randint(50, 130)
        add_block(series, t, min(off, end - t), 25.0)  # fan and light
        t += off
        on = rng.randint(35, 95)
        add_block(series, t, min(on, end - t), 2400.0)
        t += on


def clear_sky_pv(t_of_day_s: float, peak_w: float, sunrise_h: float, sunset_h: float) -> float:
    """A clear-sky PV curve: sin^1.4 of the day fraction between sunrise and sunset."""
    h = t_of_day_s / 3600.0
    if not sunrise_h < h < sunset_h:
        return 0.0
    x = (h - sunrise_h) / (sunset_h - sunrise_h)
    return float(peak_w * math.sin(math.pi * x) ** 1.4)


def sunny_day(rng: random.Random) -> tuple[Series, Series]:
    """See the module docstring."""
    load = _zeros(DAY_S)
    add_base(load, rng, 140.0, 40.0)
    add_compressor(load, rng, 85.0, (600, 1100), (1200, 2100))
    add_compressor(load, rng, 110.0, (900, 1500), (1500, 2700))
    add_block(load, 6 * 3600 + 40 * 60, 2 * 3600, 60.0)  # lights, coffee machine standby
    for hh, mm in ((7, 10), (10, 35), (15, 50), (21, 5)):
        add_kettle(load, hh * 3600 + mm * 60, rng)
    add_block(load, 7 * 3600 + 20 * 60, 150, 1000.0)  # toaster
    add_washing_machine(load, rng, 9 * 3600 + 45 * 60)
    add_hob_pulsing(load, rng, 12 * 3600 + 5 * 60, 25 * 60)
    add_hob_pulsing(load, rng, 18 * 3600 + 30 * 60, 35 * 60)
    add_block(load, 19 * 3600, 4 * 3600, 180.0)  # TV, lights
    pv = [
        max(0.0, clear_sky_pv(t, 3600.0, 5.6, 21.2) * (1.0 + rng.gauss(0.0, 0.004)))
        for t in range(DAY_S)
    ]
    return load, pv


def cloudy_day(rng: random.Random) -> tuple[Series, Series]:
    """See the module docstring."""
    load = _zeros(DAY_S)
    add_base(load, rng, 160.0, 50.0)
    add_compressor(load, rng, 85.0, (600, 1100), (1200, 2100))
    add_compressor(load, rng, 110.0, (900, 1500), (1500, 2700))
    for hh, mm in ((7, 30), (11, 0), (14, 20), (16, 45), (20, 10)):
        add_kettle(load, hh * 3600 + mm * 60, rng)
    add_block(load, 8 * 3600, 180, 950.0)  # toaster
    add_microwave(load, 12 * 3600 + 30 * 60, 240)
    add_microwave(load, 18 * 3600 + 55 * 60, 360)
    add_hob_pulsing(load, rng, 18 * 3600 + 20 * 60, 30 * 60)
    add_block(load, 19 * 3600, 4 * 3600, 200.0)
    factor = 1.0
    target = 1.0
    hold = 0
    pv: Series = []
    for t in range(DAY_S):
        if hold <= 0:
            target = rng.choice((0.2, 0.25, 0.35, 0.6, 0.9, 1.0, 1.05))
            hold = rng.randint(15, 240)
        hold -= 1
        factor += (target - factor) * 0.25  # cloud edges: a few seconds
        clear = clear_sky_pv(t, 3600.0, 5.8, 21.0)
        pv.append(max(0.0, clear * factor * (1.0 + rng.gauss(0.0, 0.01))))
    return load, pv


def evening_oven(rng: random.Random) -> tuple[Series, Series]:
    """See the module docstring (t_s = 0 is 17:00)."""
    n = 4 * 3600
    load = _zeros(n)
    add_base(load, rng, 170.0, 40.0)
    add_compressor(load, rng, 85.0, (600, 1100), (1200, 2100))
    add_oven(load, rng, 10 * 60, 12 * 60, 70 * 60)
    add_hob_pulsing(load, rng, 60 * 60, 20 * 60)
    add_kettle(load, 65 * 60, rng)
    add_block(load, 30 * 60, n - 30 * 60, 150.0)  # lights, TV
    add_block(load, 150 * 60, 60 * 60, 300.0)  # dishwasher pump/motor
    add_block(load, 155 * 60, 20 * 60, 1900.0)  # dishwasher heater
    pv = [
        max(0.0, clear_sky_pv(17 * 3600 + t, 3600.0, 5.6, 20.6) * (1.0 + rng.gauss(0.0, 0.005)))
        for t in range(n)
    ]
    return load, pv


def night_base(rng: random.Random) -> tuple[Series, Series]:
    """See the module docstring (t_s = 0 is 22:00)."""
    n = 8 * 3600
    load = _zeros(n)
    add_base(load, rng, 110.0, 25.0)
    add_compressor(load, rng, 85.0, (600, 1100), (1200, 2100))
    add_compressor(load, rng, 110.0, (900, 1500), (1500, 2700))
    add_block(load, 0, 75 * 60, 120.0)  # last TV and lights
    return load, _zeros(n)


def load_steps(rng: random.Random) -> tuple[Series, Series]:
    """See the module docstring."""
    del rng
    n = 3600
    pattern = (0, 1, 2, 1, 0, 2, 0, 1, 0, 2, 1, 0, 1, 2, 1, 0, 2, 0, 1, 0)
    load = [200.0 + 1000.0 * pattern[(t // 180) % len(pattern)] for t in range(n)]
    return load, _zeros(n)


PROFILES: dict[str, Callable[[random.Random], tuple[Series, Series]]] = {
    "sunny-day": sunny_day,
    "cloudy-day": cloudy_day,
    "evening-oven": evening_oven,
    "night-base": night_base,
    "load-steps": load_steps,
}


def write_profile(path: Path, load: Series, pv: Series) -> None:
    """CSV with integer watts."""
    lines = ["t_s,load_w,pv_w"]
    lines.extend(
        f"{t},{round(lw)},{round(pw)}" for t, (lw, pw) in enumerate(zip(load, pv, strict=True))
    )
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def main() -> int:
    """Write every profile."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in PROFILES.items():
        rng = random.Random(f"{args.seed}:{name}")
        load, pv = build(rng)
        path = args.out / f"{name}.csv"
        write_profile(path, load, pv)
        print(f"{path}: {len(load)} rows, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
