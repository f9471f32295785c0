"""How fast the plant runs in closed loop: ``python -m gridzero_tools.sim.speed [profile] [plant]``.

Drives the plant with a plain integrating grid-zero loop (not the real
controller: this measures the plant, not the control law) at a 0.1 s step
over the whole profile and prints steps per second and the energy totals.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from gridzero_tools.sim.params import load_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import load_profile


@dataclass(frozen=True, slots=True)
class SpeedResult:
    """What one timed run gave."""

    steps: int
    simulated_s: float
    wall_s: float
    import_wh: float
    export_wh: float
    soc_start_pct: float
    soc_end_pct: float

    @property
    def steps_per_s(self) -> float:
        """Plant steps per wall-clock second."""
        return self.steps / self.wall_s if self.wall_s > 0 else float("inf")


def run(
    profile_name: str = "sunny-day",
    plant_name: str = "default",
    step_s: float = 0.1,
    duration_s: float | None = None,
    seed: int = 1,
) -> SpeedResult:
    """Run the closed loop and time it (wall clock read here only, never in the plant)."""
    profile = load_profile(profile_name)
    plant = Plant(load_plant(plant_name), profile, seed=seed, start_s=profile.start_s)
    end = profile.start_s + (profile.duration_s if duration_s is None else duration_s)
    demand_w = 0.0
    last_meter_t = -1.0
    steps = 0
    soc0 = plant.soc_pct
    t = profile.start_s
    n_inv = len(plant.inverters)
    charging = False
    wall0 = time.perf_counter()
    while t < end:
        steps += 1
        t = profile.start_s + steps * step_s
        plant.step(t)
        reading = plant.meter.latest(t)
        if (
            reading is not None
            and reading.t_s != last_meter_t
            and reading.value_w == reading.value_w
        ):
            last_meter_t = reading.t_s
            demand_w = max(-2500.0, min(900.0 * n_inv, demand_w + 0.7 * reading.value_w))
        if steps % 10 == 0:
            if demand_w > 0:
                for unit in range(n_inv):
                    plant.command_inverter(unit, demand_w / n_inv, t)
                if charging:
                    plant.charger_dc(False, t)
                    charging = False
            elif demand_w < -300:
                amps = -demand_w / max(plant.pack_voltage_v, 40.0)
                plant.command_charger_online(50.0, min(1.21, amps / 51.65), t)
                if not charging:
                    plant.charger_dc(True, t)
                    charging = True
    wall = time.perf_counter() - wall0
    e = plant.energy
    return SpeedResult(
        steps, end - profile.start_s, wall, e.grid_import_wh, e.grid_export_wh, soc0, plant.soc_pct
    )


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    args = sys.argv[1:] if argv is None else argv
    profile = args[0] if args else "sunny-day"
    plant = args[1] if len(args) > 1 else "default"
    r = run(profile, plant)
    print(
        f"{profile} on {plant}: {r.steps} steps of 0.1 s ({r.simulated_s / 3600:.1f} h) in "
        f"{r.wall_s:.2f} s = {r.steps_per_s:,.0f} steps/s, "
        f"{r.simulated_s / r.wall_s:,.0f}x real time; grid import {r.import_wh:.0f} Wh, "
        f"export {r.export_wh:.0f} Wh; SoC {r.soc_start_pct:.1f} -> {r.soc_end_pct:.1f} %"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
