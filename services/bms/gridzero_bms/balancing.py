"""Cell balancing (pure): which cells bleed, and the measure/bleed cycle.

Decision (Tom-evnut/VW-bms BMSModuleManager.cpp, anikrooz/housebatt housebatt.ino): a cell bleeds when it is above the
pack-wide lowest cell plus a hysteresis and above a start voltage. ``force`` drops the start
voltage (never below ``force_min_voltage_v``) and uses a smaller hysteresis, like housebatt's
forceBalance.

Cycle (Tom's balanceCells, ~30 s with a ~5 s measuring window): MEASURE sends all-off and
waits, so the voltages read at the end of the window are trustworthy; BLEED sends the
commands and repeats them; then MEASURE again. Voltages read while a module bleeds, or within
``settle_s`` after it stopped, are not trusted (`voltages_trusted`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridzero_bms.pack import ModuleKey, PackSnapshot


class BalanceSettings(BaseModel):
    """Balancing switches, thresholds and cycle timing; defaults cited in services/bms/README.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="balance cells at all")
    force: bool = Field(False, description="balance below the start voltage, tighter hysteresis")
    start_voltage_v: float = Field(3.9, ge=3.5, le=4.2, description="only cells above this bleed")
    hysteresis_v: float = Field(
        0.04, ge=0.002, le=0.5, description="bleed cells above the lowest cell plus this"
    )
    force_hysteresis_v: float = Field(0.005, ge=0.002, le=0.5, description="hysteresis in force")
    force_min_voltage_v: float = Field(
        3.6, ge=3.2, le=4.2, description="even in force, no cell at or below this bleeds"
    )
    cycle_s: float = Field(30.0, ge=5.0, le=600.0, description="one measure + bleed cycle")
    measure_s: float = Field(5.0, ge=1.0, le=60.0, description="bleeding off to measure")
    settle_s: float = Field(1.0, ge=0.0, le=10.0, description="voltages untrusted after bleed off")
    resend_s: float = Field(2.5, ge=0.5, le=60.0, description="commands are repeated this often")

    @model_validator(mode="after")
    def _check_timing(self) -> BalanceSettings:
        if self.measure_s <= self.settle_s:
            raise ValueError(f"measure_s = {self.measure_s} must be > settle_s = {self.settle_s}")
        if self.cycle_s <= self.measure_s:
            raise ValueError(f"cycle_s = {self.cycle_s} must be > measure_s = {self.measure_s}")
        return self


def decide(
    snap: PackSnapshot, settings: BalanceSettings, balanceable: frozenset[int]
) -> dict[ModuleKey, frozenset[int]]:
    """The cells to bleed per module (only modules that need it), from trusted voltages.

    Nothing bleeds unless the pack is complete: with a module missing the lowest cell is
    unknown, and bleeding towards a wrong reference drains good cells.
    """
    if not settings.enabled or not snap.complete or snap.min_cell is None:
        return {}
    if settings.force:
        floor_v = settings.force_min_voltage_v
        threshold_v = snap.min_cell.voltage_v + settings.force_hysteresis_v
    else:
        floor_v = settings.start_voltage_v
        threshold_v = snap.min_cell.voltage_v + settings.hysteresis_v
    result: dict[ModuleKey, frozenset[int]] = {}
    for module in snap.modules:
        if not module.present or module.module not in balanceable:
            continue
        cells = frozenset(
            i + 1
            for i, v in enumerate(module.cells_v)
            # a suspect cell's reading decides nothing: it never bleeds on it
            if v is not None
            and v > threshold_v
            and v > floor_v
            and i + 1 not in module.suspect_cells
        )
        if cells:
            result[module.key] = cells
    return result


class Phase(Enum):
    IDLE = "idle"
    MEASURE = "measure"
    BLEED = "bleed"


@dataclass(frozen=True, slots=True)
class ModuleCommand:
    """Bleed exactly ``cells`` on one module (empty: all off)."""

    bus: int
    module: int
    cells: frozenset[int]


@dataclass(frozen=True, slots=True)
class BalanceStep:
    """What to send now, and the state to report."""

    phase: Phase
    commands: tuple[ModuleCommand, ...]
    bleeding: Mapping[ModuleKey, frozenset[int]] = field(default_factory=dict)
    reason: str = ""


class Balancer:
    """The measure/bleed cycle; call `step` every ~0.5 s with the latest snapshot."""

    def __init__(self, settings: BalanceSettings, balanceable: frozenset[int]) -> None:
        self.settings = settings
        self.balanceable = balanceable
        self.phase = Phase.IDLE
        self.bleeding: dict[ModuleKey, frozenset[int]] = {}
        self._phase_since = 0.0
        self._last_send = 0.0
        self._off_at: dict[ModuleKey, float] = {}

    def reconfigure(self, settings: BalanceSettings) -> None:
        self.settings = settings

    def voltages_trusted(self, key: ModuleKey, now_s: float) -> bool:
        """False while ``key`` bleeds and for ``settle_s`` after its bleeding stopped."""
        if key in self.bleeding:
            return False
        off_at = self._off_at.get(key)
        return off_at is None or now_s - off_at >= self.settings.settle_s

    def step(self, snap: PackSnapshot, now_s: float, *, allowed: bool = True) -> BalanceStep:
        """Advance the cycle. ``allowed`` False (alarms, no data) stops bleeding at once."""
        if not self.settings.enabled or not allowed:
            reason = "disabled" if not self.settings.enabled else "not allowed (alarm or no data)"
            if self.phase is Phase.IDLE:
                return self._report((), reason)
            return self._enter(Phase.IDLE, snap, now_s, reason)
        if self.phase is Phase.IDLE:
            if decide(snap, self.settings, self.balanceable):
                return self._enter(Phase.MEASURE, snap, now_s, "cells above threshold")
            return self._report((), "nothing to balance")
        if self.phase is Phase.MEASURE:
            return self._step_measure(snap, now_s)
        return self._step_bleed(snap, now_s)

    def _step_bleed(self, snap: PackSnapshot, now_s: float) -> BalanceStep:
        if now_s - self._phase_since >= self.settings.cycle_s - self.settings.measure_s:
            return self._enter(Phase.MEASURE, snap, now_s, "measuring")
        return self._resend(snap, now_s, "bleeding")

    def _step_measure(self, snap: PackSnapshot, now_s: float) -> BalanceStep:
        if now_s - self._phase_since < self.settings.measure_s:
            return self._resend(snap, now_s, "measuring")
        if not self._measured(snap):
            self._phase_since = now_s
            return self._resend(snap, now_s, "measuring: waiting for trusted voltages")
        wanted = decide(snap, self.settings, self.balanceable)
        if not wanted:
            return self._enter(Phase.IDLE, snap, now_s, "balanced")
        self.bleeding = dict(wanted)
        return self._enter(Phase.BLEED, snap, now_s, "bleeding")

    def _measured(self, snap: PackSnapshot) -> bool:
        fresh_from = self._phase_since + self.settings.settle_s
        return all(
            m.trusted_at_s is not None and m.trusted_at_s >= fresh_from
            for m in snap.modules
            if m.present
        )

    def _enter(self, phase: Phase, snap: PackSnapshot, now_s: float, reason: str) -> BalanceStep:
        if phase is not Phase.BLEED:
            for key in self.bleeding:
                self._off_at[key] = now_s
            self.bleeding = {}
        self.phase = phase
        self._phase_since = now_s
        self._last_send = now_s
        return self._report(self._commands(snap), reason)

    def _resend(self, snap: PackSnapshot, now_s: float, reason: str) -> BalanceStep:
        if now_s - self._last_send < self.settings.resend_s:
            return self._report((), reason)
        self._last_send = now_s
        return self._report(self._commands(snap), reason)

    def _commands(self, snap: PackSnapshot) -> tuple[ModuleCommand, ...]:
        # Every present module gets a command each time, so a module that missed an off
        # command (or bleeds on a timer from before a restart) is switched off too.
        keys = {m.key for m in snap.modules if m.present} | set(self.bleeding)
        return tuple(
            ModuleCommand(key.bus, key.module, self.bleeding.get(key, frozenset()))
            for key in sorted(keys)
            if key.module in self.balanceable
        )

    def _report(self, commands: tuple[ModuleCommand, ...], reason: str) -> BalanceStep:
        return BalanceStep(self.phase, commands, dict(self.bleeding), reason)
