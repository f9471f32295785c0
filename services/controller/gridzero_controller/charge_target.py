"""The original system's `meterbox/chargeTarget`, as it meant it: pure, time is a parameter.

In github.com/anikrooz/housebatt (housebatt.ino, commit 1c279d5) a payload > 0 sets
`targetMode` and a demand of that many watts into the battery, and the meter is ignored while
it lasts (lines 207 and 221-226); a payload <= 0 ends it and re-enables the inverter
(`invertOverride = 1`, lines 227-229); with no message for `timeout` = 15 s it ends on its own
(lines 70 and 659-667), so a dead automation cannot leave the battery charging from the grid.

Here the target is an overlay on the controller's runtime settings: held in memory only (never
persisted, gone after a restart), `constant_power` at minus that power while it lasts, every
clamp of that mode still in force (`max_charge_w`, `charge_enabled`, the SoC gate, the bms
limits in the controller and again in the charger service). Mode `off` wins over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gridzero_controller.settings import ControllerSettings, Mode, update_settings


@dataclass(frozen=True, slots=True)
class ChargeTarget:
    """An active target: charge at ``power_w`` until ``until_s`` (monotonic s) unless refreshed."""

    power_w: float
    until_s: float

    def left_s(self, now_s: float) -> float:
        return max(0.0, self.until_s - now_s)


class ChargeTargetHold:
    """The one target the controller holds, and when it lapses."""

    def __init__(self) -> None:
        self.target: ChargeTarget | None = None

    def receive(self, power_w: float, now_s: float, timeout_s: float) -> bool:
        """A live command: > 0 sets (or refreshes) the target, <= 0 ends it. Returns whether
        discharging is to be enabled again (the original's `invertOverride = 1`)."""
        if not math.isfinite(power_w):
            raise ValueError(f"meterbox/chargeTarget: {power_w!r} W is not a number")
        if power_w > 0:
            self.target = ChargeTarget(float(power_w), now_s + timeout_s)
            return False
        self.target = None
        return True

    def current(self, now_s: float) -> ChargeTarget | None:
        """The target in force at ``now_s``; None once it lapsed (and it stays gone)."""
        if self.target is not None and now_s >= self.target.until_s:
            self.target = None
        return self.target


# Modes in which the owner said "do not charge": an outside automation does not override them.
OWNER_WINS = frozenset({Mode.OFF, Mode.HOLD, Mode.DISCHARGE_ONLY})


def overlay(settings: ControllerSettings, target: ChargeTarget | None) -> ControllerSettings:
    """The settings in force: the runtime ones, or constant charging at the target's power.

    Raises SettingsError (naming the value and the range) for a power outside
    `constant_power_w`'s range: refused like any bad command."""
    if target is None:
        return settings
    changes: dict[str, Any] = {"mode": Mode.CONSTANT_POWER, "constant_power_w": -target.power_w}
    charging = update_settings(settings, changes)  # range-checked in every mode
    return settings if settings.mode in OWNER_WINS else charging
