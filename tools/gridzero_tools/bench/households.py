"""Generated households for the bench: a profile (load and PV at 1 s) and a plant each.

Pure: every draw comes from ``random.Random`` seeded with ``f"{seed}:{index}"``, so household
``index`` of seed ``seed`` is the same whatever the number of households asked for, and no
clock is read. ``generate(n, seed, duration_s)`` returns the households; ``write_household``
writes one as the bench's own files (``t_s,load_w,pv_w`` CSV and a plant YAML) so a bad case
replays with ``gridzero bench --profile FILE --plant FILE``.

What the shapes draw from (docs/sim.md, "Generated households", lists it with sources):

- PV: a clear-sky bell between sunrise and sunset of the season (UK latitude, ~52°N), times a
  clearness index: clear (small haze noise), broken cumulus (sun and cloud spells of tens of
  seconds to minutes, edges of 2-20 s, cloud-edge enhancement above clear sky), overcast (10-35 %
  with slow drift). Shapes after the 1 s irradiance studies of broken cumulus (ramps of
  60-80 % of clear sky within seconds, enhancement to ~1.2x); the spell lengths are assumptions.
- Base load: standby 60-250 W with slow drift; a fridge and often a freezer compressor
  (60-150 W, on 8-25 min in 25-60 min, a 1-2 s start surge of ~3x).
- Appliances, each a power shape at 1 s: kettle, oven (preheat then thermostat cycling), hob
  (energy-regulator pulsing), microwave, washing machine (fill, heater, drum motor, spin),
  tumble dryer (heater cycling with the drum), dishwasher (two heats), heat pump (compressor
  ramp, modulation), immersion heater (thermostat), EV charger (7.4 or 3.7 kW, starting,
  pausing, ramping in current steps).
- Plant: the default plant with the meter's period, latency and noise, the number of inverters
  and their speed, the pack's size and initial state of charge drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from gridzero.errors import UsageError
from gridzero_tools.sim.params import InverterParams, PlantParams
from gridzero_tools.sim.profile import Profile

SEASONS = ("winter", "spring", "summer", "autumn")
# (sunrise h, sunset h, clear-sky peak as a fraction of kWp) at ~52°N, local solar time.
SUN: dict[str, tuple[float, float, float]] = {
    "winter": (8.0, 16.0, 0.35),
    "spring": (6.0, 19.0, 0.70),
    "summer": (4.8, 21.2, 0.85),
    "autumn": (7.0, 18.0, 0.55),
}
SKIES = ("clear", "broken", "overcast")
APPLIANCES = (
    "kettle",
    "oven",
    "hob",
    "microwave",
    "washer",
    "dryer",
    "dishwasher",
    "heat_pump",
    "immersion",
    "ev",
)
MAX_LOAD_W = 20000.0
MAX_DURATION_S = 86400.0


@dataclass(frozen=True, slots=True)
class Household:
    """One generated case: the profile, the plant and what was drawn."""

    name: str
    profile: Profile
    plant: PlantParams
    features: tuple[str, ...]
    # Local time of day of the profile's second 0 (the drawn start), for a tariff's prices.
    start_of_day_s: float = 0.0

    @property
    def summary(self) -> str:
        """The drawn features in one line (the report's "why")."""
        return ", ".join(self.features)


def generate(n: int, seed: int, duration_s: float = 3600.0) -> list[Household]:
    """``n`` households of ``duration_s`` each (1 s rows)."""
    if n < 1:
        raise UsageError(f"--households {n}: need at least 1")
    if not 60.0 <= duration_s <= MAX_DURATION_S:
        raise UsageError(f"household duration {duration_s:g} s: must be 60..{MAX_DURATION_S:g} s")
    return [household(seed, i, duration_s) for i in range(n)]


def household(seed: int, index: int, duration_s: float) -> Household:
    """Household ``index`` of ``seed`` (independent of how many are generated)."""
    rng = random.Random(f"{seed}:{index}")
    n = int(duration_s) + 1
    season = rng.choice(SEASONS)
    sky = rng.choices(SKIES, weights=(3, 4, 3))[0]
    sunrise, sunset, peak = SUN[season]
    # Start anywhere from 06:00 to 21:00, so runs cover mornings, midday and evenings.
    start_h = rng.uniform(6.0, 21.0)
    kwp = 0.0 if rng.random() < 0.1 else rng.uniform(1.5, 8.0)
    pv = pv_series(rng, n, start_h, sunrise, sunset, peak * kwp * 1000.0, sky)
    load = [0.0] * n
    base = base_load(rng, n, load)
    chosen = _appliances(rng, season, start_h, duration_s)
    for kind in chosen:
        _SHAPES[kind](rng, load)
    for i in range(n):
        load[i] = round(min(MAX_LOAD_W, max(0.0, load[i])), 1)
    name = f"hh-s{seed}-{index:03d}"
    plant, plant_notes = plant_for(rng, name)
    hhmm = f"{int(start_h):02d}:{int(start_h % 1 * 60):02d}"
    features = (
        season,
        f"start {hhmm}",
        f"{sky} sky",
        f"PV {kwp:.1f} kWp" if kwp else "no PV",
        f"base {base:.0f} W",
        *chosen,
        *plant_notes,
    )
    t = tuple(float(i) for i in range(n))
    profile = Profile(name, t, tuple(load), tuple(pv))
    return Household(name, profile, plant, features, start_h * 3600.0)


# ---------------------------------------------------------------- PV


def pv_series(
    rng: random.Random,
    n: int,
    start_h: float,
    sunrise_h: float,
    sunset_h: float,
    peak_w: float,
    sky: str,
) -> list[float]:
    """AC PV power at 1 s: clear-sky bell × clearness index of the sky type."""
    clear = []
    span = sunset_h - sunrise_h
    for i in range(n):
        # Time of day: a run past midnight (a day-long household) sees the next sunrise.
        h = (start_h + i / 3600.0) % 24.0
        x = (h - sunrise_h) / span
        clear.append(peak_w * math.sin(math.pi * x) ** 1.3 if 0.0 < x < 1.0 else 0.0)
    k = _clearness(rng, n, sky)
    return [round(max(0.0, c * f), 1) for c, f in zip(clear, k, strict=True)]


def _clearness(rng: random.Random, n: int, sky: str) -> list[float]:
    if sky == "clear":
        level = rng.uniform(0.9, 1.0)
        return _drift(rng, n, level, 0.02, 0.8, 1.02)
    if sky == "overcast":
        return _drift(rng, n, rng.uniform(0.12, 0.3), 0.05, 0.05, 0.4)
    # Broken cumulus: sun and shade spells, fast edges, enhancement at the cloud edge.
    out = [0.0] * n
    sunny = rng.random() < 0.5
    level = 1.0
    i = 0
    while i < n:
        length = max(5, int(rng.expovariate(1.0 / (90.0 if sunny else 60.0))))
        target = rng.uniform(0.95, 1.05) if sunny else rng.uniform(0.15, 0.45)
        edge = rng.randint(2, 20)
        for j in range(i, min(n, i + length)):
            frac = min(1.0, (j - i + 1) / edge)
            out[j] = level + (target - level) * frac
            # Cloud-edge enhancement: a short overshoot as the sun comes out.
            if sunny and j - i < edge + 10 and j - i >= edge:
                out[j] *= 1.15
        level = target
        i += length
        sunny = not sunny
    return out


def _drift(
    rng: random.Random, n: int, level: float, step: float, lo: float, hi: float
) -> list[float]:
    """A bounded random walk changed every 10 s, interpolated between."""
    out = [0.0] * n
    x = level
    nxt = x
    for i in range(n):
        if i % 10 == 0:
            x = nxt
            nxt = min(hi, max(lo, x + rng.gauss(0.0, step / 3.0)))
        out[i] = x + (nxt - x) * (i % 10) / 10.0
    return out


# ---------------------------------------------------------------- base load


def base_load(rng: random.Random, n: int, load: list[float]) -> float:
    """Standby, drift and cold appliances into ``load``; returns the standby level."""
    standby = rng.uniform(60.0, 250.0)
    drift = _drift(rng, n, 1.0, 0.05, 0.85, 1.2)
    for i in range(n):
        load[i] += standby * drift[i]
    _compressor(rng, load, rng.uniform(60.0, 120.0))  # fridge
    if rng.random() < 0.6:
        _compressor(rng, load, rng.uniform(80.0, 150.0))  # freezer
    return standby


def _compressor(rng: random.Random, load: list[float], power_w: float) -> None:
    """On 8-25 min in a 25-60 min cycle; a ~3x start surge for 1-2 s."""
    n = len(load)
    period = rng.uniform(1500.0, 3600.0)
    on = rng.uniform(480.0, min(1500.0, 0.6 * period))
    t = -rng.uniform(0.0, period)
    while t < n:
        a = int(max(0.0, t))
        b = int(min(n, t + on))
        for i in range(a, b):
            load[i] += power_w
        if t >= 0:
            for i in range(a, min(n, a + rng.randint(1, 2))):
                load[i] += 2.0 * power_w
        t += period * rng.uniform(0.9, 1.1)


# ---------------------------------------------------------------- appliances


def _appliances(rng: random.Random, season: str, start_h: float, duration_s: float) -> list[str]:
    """Which appliances run in this window (each at most once, kettles may repeat)."""
    hours = duration_s / 3600.0
    evening = 16.5 <= start_h + hours / 2 <= 21.5 or start_h >= 16.0
    cold = season in ("winter", "autumn")
    odds = {
        "kettle": min(0.95, 0.4 * hours + 0.3),
        "oven": 0.5 if evening else 0.15,
        "hob": 0.45 if evening else 0.2,
        "microwave": 0.3,
        "washer": 0.3,
        "dryer": 0.3 if cold else 0.12,
        "dishwasher": 0.3,
        "heat_pump": 0.35 if cold else 0.1,
        "immersion": 0.2,
        "ev": 0.25,
    }
    chosen = [kind for kind in APPLIANCES if rng.random() < odds[kind]]
    if not chosen:
        chosen = [rng.choice(APPLIANCES)]
    if "kettle" in chosen and hours > 1.0 and rng.random() < 0.5:
        chosen.append("kettle")
    return chosen


def _window(rng: random.Random, n: int, length: int) -> int:
    """A start second so that most of ``length`` lies within the run."""
    return rng.randint(0, max(0, n - max(60, length // 2)))


def _add(load: list[float], start: int, powers: list[float]) -> None:
    for k, p in enumerate(powers):
        i = start + k
        if 0 <= i < len(load):
            load[i] += p


def _cycle(
    rng: random.Random, total: int, power_w: float, on: tuple[int, int], off: tuple[int, int]
) -> list[float]:
    """Thermostat or energy-regulator pulsing: full power on, nothing off."""
    out: list[float] = []
    state = True
    while len(out) < total:
        span = rng.randint(*on) if state else rng.randint(*off)
        out.extend([power_w if state else 0.0] * span)
        state = not state
    return out[:total]


def kettle(rng: random.Random, load: list[float]) -> None:
    """2-3 kW, 2-4 min, on until its thermostat trips."""
    length = rng.randint(120, 240)
    power = rng.uniform(2000.0, 3000.0)
    _add(load, _window(rng, len(load), length), [power] * length)


def oven(rng: random.Random, load: list[float]) -> None:
    """Preheat 8-15 min at full element power, then thermostat cycling for 20-60 min."""
    power = rng.uniform(2000.0, 3500.0)
    heat = rng.randint(480, 900)
    cycling = rng.randint(1200, 3600)
    shape = [power] * heat + _cycle(rng, cycling, power, (20, 90), (40, 180))
    fan = 30.0
    _add(load, _window(rng, len(load), len(shape)), [p + fan for p in shape])


def hob(rng: random.Random, load: list[float]) -> None:
    """A radiant ring on its energy regulator (10-60 s pulses) or induction (2-8 s) for 8-30 min."""
    total = rng.randint(480, 1800)
    if rng.random() < 0.5:
        shape = _cycle(rng, total, rng.uniform(1100.0, 2000.0), (10, 60), (10, 50))
    else:
        shape = _cycle(rng, total, rng.uniform(1200.0, 2200.0), (2, 8), (2, 6))
    _add(load, _window(rng, len(load), total), shape)


def microwave(rng: random.Random, load: list[float]) -> None:
    """~1.2-1.6 kW input, 1-6 min; at part power the magnetron pulses (~30 s period)."""
    total = rng.randint(60, 360)
    power = rng.uniform(1200.0, 1600.0)
    if rng.random() < 0.5:
        shape = [power] * total
    else:
        duty = rng.uniform(0.3, 0.7)
        on = int(30 * duty)
        shape = [(power if (k % 30) < on else 80.0) for k in range(total)]
    _add(load, _window(rng, len(load), total), shape)


def washer(rng: random.Random, load: list[float]) -> None:
    """Fill (~100 W), heater 1.8-2.3 kW for 10-20 min with the drum turning, wash, spin."""
    heater = rng.uniform(1800.0, 2300.0)
    shape = [100.0] * rng.randint(120, 300)
    shape += [heater + _drum(k) for k in range(rng.randint(600, 1200))]
    shape += [_drum(k) for k in range(rng.randint(900, 2400))]
    shape += [rng.uniform(300.0, 600.0)] * rng.randint(300, 600)  # spin
    _add(load, _window(rng, len(load), len(shape)), shape)


def _drum(k: int) -> float:
    """Drum motor: tumbles ~12 s one way, rests ~4 s."""
    return 200.0 if k % 16 < 12 else 15.0


def dryer(rng: random.Random, load: list[float]) -> None:
    """Vented/condenser: 2-2.6 kW heater on its thermostat with a 200 W drum; or a heat-pump
    dryer: a ~700 W compressor after a 5 min run-up."""
    total = rng.randint(2700, 5400)
    if rng.random() < 0.7:
        heat = rng.uniform(2000.0, 2600.0)
        cyc = [heat] * rng.randint(600, 1200) + _cycle(rng, total, heat, (120, 360), (60, 150))
        shape = [200.0 + p for p in cyc[:total]]
    else:
        top = rng.uniform(550.0, 900.0)
        shape = [200.0 + top * min(1.0, k / 300.0) for k in range(total)]
    _add(load, _window(rng, len(load), len(shape)), shape)


def dishwasher(rng: random.Random, load: list[float]) -> None:
    """Fill, heat 1.8-2.2 kW, wash pump, rinse heat, dry (after published cycle traces)."""
    heat = rng.uniform(1800.0, 2200.0)
    shape = [30.0] * rng.randint(120, 300)
    shape += [heat + 60.0] * rng.randint(600, 1200)
    shape += [80.0] * rng.randint(900, 1800)
    shape += [heat + 60.0] * rng.randint(300, 900)
    shape += [10.0] * rng.randint(600, 1200)
    _add(load, _window(rng, len(load), len(shape)), shape)


def heat_pump(rng: random.Random, load: list[float]) -> None:
    """Inverter compressor: soft start over 2-5 min to 0.8-3 kW, slow modulation, runs of
    20-90 min with rests, ramp down over ~1 min."""
    n = len(load)
    top = rng.uniform(800.0, 3000.0)
    t = rng.randint(0, max(0, n // 3))
    while t < n:
        run = rng.randint(1200, 5400)
        up = rng.randint(120, 300)
        level = top
        shape = []
        for k in range(run):
            if k % 60 == 0:
                level = min(top, max(0.4 * top, level + rng.gauss(0.0, 0.05 * top)))
            shape.append(60.0 + level * min(1.0, k / up))
        shape += [60.0 + level * (1.0 - k / 60.0) for k in range(60)]
        _add(load, t, shape)
        t += len(shape) + rng.randint(600, 2400)


def immersion(rng: random.Random, load: list[float]) -> None:
    """3 kW element until the cylinder thermostat trips (15-60 min), sometimes a re-heat."""
    power = rng.uniform(2800.0, 3000.0)
    shape = [power] * rng.randint(900, 3600)
    if rng.random() < 0.3:
        shape += [0.0] * rng.randint(300, 900) + [power] * rng.randint(60, 300)
    _add(load, _window(rng, len(load), len(shape)), shape)


def ev(rng: random.Random, load: list[float]) -> None:
    """EV charger (IEC 61851 mode 3): 32 A (7.4 kW) or 16 A (3.7 kW) at 230 V; the car ramps
    its current over 5-30 s, pauses for minutes (battery conditioning, a timer), and a
    solar-following charger steps the current in 1 A steps (6 A minimum)."""
    n = len(load)
    amps_max = rng.choice((32, 16))
    solar = rng.random() < 0.35
    shape: list[float] = []
    total = rng.randint(1800, 3 * 3600)
    amps = float(amps_max)
    while len(shape) < total:
        ramp = rng.randint(5, 30)
        span = rng.randint(300, 1800)
        for k in range(span):
            if solar and k % rng.randint(10, 30) == 0:
                amps = min(float(amps_max), max(6.0, amps + rng.choice((-2, -1, 1, 2))))
            shape.append(230.0 * amps * min(1.0, (k + 1) / ramp))
        if rng.random() < 0.4:
            shape += [5.0] * rng.randint(60, 600)  # paused
    _add(load, _window(rng, n, len(shape)), shape[:total])


_SHAPES: dict[str, Callable[[random.Random, list[float]], None]] = {
    "kettle": kettle,
    "oven": oven,
    "hob": hob,
    "microwave": microwave,
    "washer": washer,
    "dryer": dryer,
    "dishwasher": dishwasher,
    "heat_pump": heat_pump,
    "immersion": immersion,
    "ev": ev,
}


# ---------------------------------------------------------------- plant


def plant_for(rng: random.Random, name: str) -> tuple[PlantParams, list[str]]:
    """The default plant with the meter, inverters, pack size and SoC drawn."""
    period = rng.choice((0.25, 0.5, 0.5, 1.0, 1.0, 2.0, 5.0))
    latency = round(rng.choice((0.05, 0.1, 0.3, 0.8, 1.5)) * rng.uniform(0.8, 1.2), 2)
    noise = rng.choice((0.0, 0.0, 3.0, 10.0, 25.0))
    units = rng.choice((1, 1, 2, 3))
    lag = round(rng.uniform(0.5, 2.5), 2)
    ramp = round(rng.uniform(150.0, 600.0))
    dead = round(rng.choice((0.0, 0.0, 0.2, 0.5)), 2)
    inverters = tuple(
        InverterParams(name=f"gtn{k + 1}", lag_s=lag, ramp_w_per_s=ramp, dead_time_s=dead)
        for k in range(units)
    )
    modules = rng.choice((4, 6, 9, 12))
    soc = round(rng.uniform(25.0, 80.0), 1)
    base = PlantParams()
    plant = base.model_copy(
        update={
            "name": name,
            "description": "generated household (gridzero bench --households)",
            "meter": base.meter.model_copy(
                update={"period_s": period, "latency_s": latency, "noise_w": noise}
            ),
            "inverters": inverters,
            "pack": base.pack.model_copy(update={"modules": modules, "initial_soc_pct": soc}),
        }
    )
    # Round trip through the validator: a drawn value outside a limit fails here, not later.
    plant = PlantParams.model_validate(plant.model_dump())
    notes = [
        f"meter {period:g} s/{latency:g} s late/noise {noise:g} W",
        f"{units}x900 W inverter (lag {lag:g} s, {ramp:g} W/s, dead {dead:g} s)",
        f"{modules} modules at {soc:g} %",
    ]
    return plant, notes


# ---------------------------------------------------------------- files


def profile_csv(profile: Profile) -> str:
    """The bench's profile format."""
    rows = ["t_s,load_w,pv_w"]
    rows.extend(
        f"{t:g},{ld:g},{pv:g}"
        for t, ld, pv in zip(profile.t_s, profile.load_w, profile.pv_w, strict=True)
    )
    return "\n".join(rows) + "\n"


def plant_yaml(plant: PlantParams, features: tuple[str, ...]) -> str:
    """A plant file `load_plant` reads back to the same parameters."""
    head = "# generated household: " + ", ".join(features) + "\n"
    return head + yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False)


def write_household(hh: Household, folder: Path) -> tuple[Path, Path]:
    """``<name>.csv`` and ``<name>.yaml`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{hh.name}.csv"
    yaml_path = folder / f"{hh.name}.yaml"
    csv_path.write_text(profile_csv(hh.profile), encoding="utf-8")
    yaml_path.write_text(plant_yaml(hh.plant, hh.features), encoding="utf-8")
    return csv_path, yaml_path
