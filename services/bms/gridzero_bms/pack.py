"""The pack model (pure): what every module on every bus last reported, and pack statistics.

A module is identified by (bus, module number): module numbers are fixed in each module's
slave board, so two modules with the same number must sit on different buses (anikrooz/housebatt housebatt.ino, jamiejones85/VW-bms VWBMSV2.ino).
Time is a parameter (``now_s``, monotonic seconds); nothing here reads a clock or does I/O.

Freshness: a module is present while every cell-voltage frame it owes (3 for 12 cells) has
arrived within ``stale_after_s``. Temperature frames alone do not keep a module present, and
"initialising" frames (no data) do not count.

Trust: voltage frames received while the module's bleed resistors are (or were just) on read
low on the bleeding cell and high on its neighbours. The caller says whether a frame is
trusted; statistics use the last trusted value of each cell, while ``worst_high`` and
``worst_low`` also include untrusted readings so protection errs on the safe side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gridzero_bms.codec import (
    CELLS_PER_FRAME,
    MAX_MODULE,
    BalanceCommandFrame,
    CellVoltageFrame,
    Frame,
    PollFrame,
    TemperatureFrame,
)

_NEVER = -math.inf
# Valid readings in a row after which a sensor counts as fitted: one garbage frame from a
# sensor that is not fitted must not make its absence an alarm.
SENSOR_FITTED_AFTER = 2
SENSORS = 3


class PackLayout(Enum):
    """How the modules are wired: in parallel (48 V home battery) or all in series."""

    PARALLEL = "parallel"
    SERIES = "series"


class SuspectCell(BaseModel):
    """A cell whose reading is known to be wrong (a bad sense lead or slave-board channel).

    The risk: its own under-voltage is then no longer watched (see services/bms/README.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bus: int = Field(ge=0, le=7, description="CAN bus index (0 = the first bus)")
    module: int = Field(ge=1, le=MAX_MODULE, description="module number")
    cell: int = Field(ge=1, le=13, description="cell number in the module, from 1")

    def __str__(self) -> str:
        return f"bus {self.bus} module {self.module} cell {self.cell}"


# The original applies an offset per reading in its decoder: (raw * 0.5) - 43 against the
# DBC's - 40 (anikrooz/housebatt BMSModule.cpp decodetemp, lines 62-79): 3 degrees C. A
# larger correction means a wrong decoding, not an offset, so it is bounded.
TEMPERATURE_OFFSET_MAX_C = 5.0


class PackSettings(BaseModel):
    """What the pack should look like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cells_per_module: int = Field(
        12, ge=1, le=13, description="series cells per module (GTE: 12; some MQB modules 13)"
    )
    modules: tuple[tuple[int, ...], ...] = Field(
        ((1, 2, 3, 4, 5, 6, 7, 8),),
        description="expected module numbers (1..16) per bus; one inner list per CAN bus",
    )
    layout: PackLayout = Field(PackLayout.PARALLEL, description="parallel or series modules")
    stale_after_s: float = Field(
        3.0, gt=0.0, le=60.0, description="a module silent for longer than this is missing"
    )
    cell_valid_max_mv: int = Field(
        5000, ge=4300, le=5095, description="readings at or above this are not cells (Tom: 5.0 V)"
    )
    suspect_cells: tuple[SuspectCell, ...] = Field(
        (),
        description=(
            "cells that read wrong: left out of the cell delta, balancing and under-voltage, "
            "still in over-voltage and deep discharge; at most one per module"
        ),
    )
    temperature_sensors: tuple[int, ...] = Field(
        (1, 2, 3),
        min_length=1,
        description="which of a module's sensors (1..3) count; housebatt's IgnoreTemp = 1: (1,)",
    )
    temperature_offset_c: float = Field(
        0.0,
        ge=-TEMPERATURE_OFFSET_MAX_C,
        le=TEMPERATURE_OFFSET_MAX_C,
        description="added to every temperature reading (housebatt's decoding: -3)",
    )

    @field_validator("modules")
    @classmethod
    def _check_modules(cls, value: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
        if not value or not any(value):
            raise ValueError("modules: at least one bus with at least one module is needed")
        for bus, numbers in enumerate(value):
            bad = [n for n in numbers if not 1 <= n <= MAX_MODULE]
            if bad:
                raise ValueError(f"modules: bus {bus} lists {bad}, module numbers are 1..16")
            dupes = sorted({n for n in numbers if numbers.count(n) > 1})
            if dupes:
                raise ValueError(
                    f"modules: bus {bus} lists module {dupes} twice; modules with the same "
                    f"number must sit on different buses"
                )
        return value

    @field_validator("temperature_sensors")
    @classmethod
    def _check_sensors(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [n for n in value if not 1 <= n <= 3]
        if bad or len(set(value)) != len(value):
            raise ValueError(
                f"temperature_sensors: {list(value)} must name each of sensors 1..3 at most once"
            )
        return value

    @model_validator(mode="after")
    def _check_suspects(self) -> PackSettings:
        expected = set(self.expected_keys)
        seen: set[ModuleKey] = set()
        for suspect in self.suspect_cells:
            key = ModuleKey(suspect.bus, suspect.module)
            if key not in expected:
                raise ValueError(f"suspect_cells: {suspect} is not in an expected module")
            if suspect.cell > self.cells_per_module:
                raise ValueError(
                    f"suspect_cells: {suspect} is above cells_per_module {self.cells_per_module}"
                )
            if key in seen:
                # A module with two cells nobody watches for under-voltage is a module to
                # repair, not to configure around.
                raise ValueError(f"suspect_cells: more than one suspect cell in {key}; at most one")
            seen.add(key)
        return self

    @property
    def suspects(self) -> frozenset[tuple[int, int, int]]:
        return frozenset((c.bus, c.module, c.cell) for c in self.suspect_cells)

    @property
    def expected_keys(self) -> tuple[ModuleKey, ...]:
        return tuple(ModuleKey(b, n) for b, numbers in enumerate(self.modules) for n in numbers)

    @property
    def series_cells(self) -> int:
        """Cells in series: what the charge voltage limit is multiplied by."""
        if self.layout is PackLayout.PARALLEL:
            return self.cells_per_module
        return self.cells_per_module * len(self.expected_keys)


class ModuleKey(NamedTuple):
    bus: int
    module: int

    def __str__(self) -> str:
        return f"bus {self.bus} module {self.module}"


@dataclass(frozen=True, slots=True)
class CellRef:
    """One cell's value and where it is (cell numbers start at 1)."""

    bus: int
    module: int
    cell: int
    voltage_v: float

    def __str__(self) -> str:
        return f"bus {self.bus} module {self.module} cell {self.cell} at {self.voltage_v:.3f} V"


@dataclass(frozen=True, slots=True)
class InvalidCell:
    """A cell that read no valid voltage within ``stale_after_s``: what it read and when."""

    bus: int
    module: int
    cell: int
    reading_mv: int | None  # None: the module's invalid marker 0xFFF
    age_s: float
    valid_max_mv: int

    def __str__(self) -> str:
        where = f"bus {self.bus} module {self.module} cell {self.cell}"
        if self.reading_mv is None:
            what = "the invalid marker 0xFFF"
        else:
            what = f"{self.reading_mv / 1000:.3f} V"
        return (
            f"{where} read {what} {self.age_s:.1f} s ago "
            f"(valid below {self.valid_max_mv / 1000:.3f} V)"
        )


@dataclass(frozen=True, slots=True)
class DroppedSensor:
    """A fitted sensor that read no valid temperature within ``stale_after_s``."""

    bus: int
    module: int
    sensor: int
    last_valid_c: float
    age_s: float

    def __str__(self) -> str:
        return (
            f"bus {self.bus} module {self.module} sensor {self.sensor} read no valid "
            f"temperature {self.age_s:.1f} s ago, last valid {self.last_valid_c:.1f} °C "
            "(broken, or beyond the range its frame can carry)"
        )


@dataclass(frozen=True, slots=True)
class ModuleView:
    """One module as the pack last saw it."""

    bus: int
    module: int
    expected: bool
    present: bool
    age_s: float | None
    cells_v: tuple[float | None, ...]
    cells_latest_v: tuple[float | None, ...]
    valid_cells: int
    voltage_v: float | None
    temperatures_c: tuple[float | None, ...]
    balance_bits: int | None
    trusted_at_s: float | None
    frames: int
    initialising_frames: int
    untrusted_frames: int
    suspect_cells: frozenset[int] = frozenset()

    @property
    def key(self) -> ModuleKey:
        return ModuleKey(self.bus, self.module)


@dataclass(frozen=True, slots=True)
class PackSnapshot:
    """Pack statistics at ``now_s``."""

    now_s: float
    modules: tuple[ModuleView, ...]
    expected_modules: int
    present_modules: int
    missing: tuple[ModuleKey, ...]
    unexpected: tuple[ModuleKey, ...]
    cell_count: int
    expected_cell_count: int
    series_cells: int
    min_cell: CellRef | None
    max_cell: CellRef | None
    avg_cell_v: float | None
    delta_v: float | None
    worst_low: CellRef | None
    worst_high: CellRef | None
    pack_voltage_v: float | None
    temp_min_c: float | None
    temp_max_c: float | None
    temp_avg_c: float | None
    temp_min_at: ModuleKey | None
    temp_max_at: ModuleKey | None
    temp_sensors: int
    temp_sensors_absent: int
    # The lowest latest reading of any cell, suspect or not: deep discharge still judges
    # every cell.
    lowest_any: CellRef | None = None
    # Cells missing because they read invalid within stale_after_s (for the alarm message).
    invalid_cells: tuple[InvalidCell, ...] = ()
    # Fitted sensors whose reading dropped out (temperature_missing).
    dropped_sensors: tuple[DroppedSensor, ...] = ()

    @property
    def cell_count_ok(self) -> bool:
        return self.cell_count == self.expected_cell_count

    @property
    def complete(self) -> bool:
        """Every expected module present with every cell valid, and nothing unexpected."""
        return not self.missing and not self.unexpected and self.cell_count_ok


class _Module:
    """Mutable per-module state (internal to Pack)."""

    __slots__ = (
        "balance_bits",
        "cells",
        "frames",
        "initialising",
        "invalid_mv",
        "invalid_s",
        "seen_s",
        "sensor_dropped_s",
        "sensor_fitted",
        "sensor_last_c",
        "sensor_streak",
        "temps",
        "temps_s",
        "trusted",
        "trusted_s",
        "untrusted",
    )

    def __init__(self, cells: int) -> None:
        frames = (cells + CELLS_PER_FRAME - 1) // CELLS_PER_FRAME
        self.cells: list[int | None] = [None] * cells
        self.trusted: list[int | None] = [None] * cells
        # The last invalid reading of each cell and when: a cell that reads valid again
        # still counts as missing for stale_after_s.
        self.invalid_mv: list[int | None] = [None] * cells
        self.invalid_s = [_NEVER] * cells
        self.seen_s = [_NEVER] * frames
        self.trusted_s = [_NEVER] * frames
        self.temps: tuple[float | None, ...] = ()
        self.temps_s = _NEVER
        self.balance_bits: int | None = None
        # Per sensor (1..3): valid readings in a row, fitted, its last valid reading and
        # when a fitted sensor last read no valid code.
        self.sensor_streak = [0] * SENSORS
        self.sensor_fitted = [False] * SENSORS
        self.sensor_last_c = [0.0] * SENSORS
        self.sensor_dropped_s = [_NEVER] * SENSORS
        self.frames = 0
        self.initialising = 0
        self.untrusted = 0


class Pack:
    """Every module's latest data; feed frames with `apply`, read statistics with `snapshot`."""

    def __init__(self, settings: PackSettings) -> None:
        self.settings = settings
        self._cells = settings.cells_per_module
        self._valid_max = settings.cell_valid_max_mv
        self._expected = frozenset(settings.expected_keys)
        self._modules: dict[ModuleKey, _Module] = {
            key: _Module(self._cells) for key in settings.expected_keys
        }
        self.ignored_frames = 0

    def _module(self, bus: int, number: int) -> _Module:
        key = ModuleKey(bus, number)
        state = self._modules.get(key)
        if state is None:
            state = self._modules[key] = _Module(self._cells)
        return state

    def apply(self, bus: int, frame: Frame, now_s: float, *, trusted: bool = True) -> None:
        """Take one decoded frame received on ``bus`` at ``now_s``."""
        if isinstance(frame, CellVoltageFrame):
            self.apply_cells(bus, frame, now_s, trusted=trusted)
        elif isinstance(frame, TemperatureFrame):
            self.apply_temperatures(bus, frame, now_s)
        elif isinstance(frame, BalanceCommandFrame | PollFrame):
            self.ignored_frames += 1  # our own commands echoed back, or another master

    def apply_cells(
        self, bus: int, frame: CellVoltageFrame, now_s: float, *, trusted: bool = True
    ) -> None:
        """The hot path: store one cell frame's values."""
        state = self._modules.get(ModuleKey(bus, frame.module)) or self._module(bus, frame.module)
        state.frames += 1
        if frame.initialising:
            state.initialising += 1
            return
        index = frame.index
        if index >= len(state.seen_s):
            return  # cell 13 from a 13S module in a 12-cell pack
        base = index * CELLS_PER_FRAME
        cells = state.cells
        count = min(len(frame.cells_mv), self._cells - base)
        values = frame.cells_mv[:count]
        cells[base : base + count] = values
        state.seen_s[index] = now_s
        self._note_invalid(state, base, values, now_s)
        if trusted:
            state.trusted[base : base + count] = values
            state.trusted_s[index] = now_s
        else:
            state.untrusted += 1

    def _note_invalid(
        self, state: _Module, base: int, values: tuple[int | None, ...], now_s: float
    ) -> None:
        for i, mv in enumerate(values):
            if mv is None or mv >= self._valid_max:
                state.invalid_mv[base + i] = mv
                state.invalid_s[base + i] = now_s

    def apply_temperatures(self, bus: int, frame: TemperatureFrame, now_s: float) -> None:
        state = self._module(bus, frame.module)
        state.frames += 1
        state.temps = self._counted_temperatures(frame.temperatures_c)
        state.temps_s = now_s
        self._note_sensors(state, frame.temperatures_c, now_s)
        if frame.balance_bits is not None:
            state.balance_bits = frame.balance_bits

    def _note_sensors(
        self, state: _Module, readings: tuple[float | None, ...], now_s: float
    ) -> None:
        """A fitted sensor that reads no valid code is broken or at an extreme (the DBC's
        0xFD..0xFF lie just above its 86 °C), not absent."""
        for n in self.settings.temperature_sensors:
            i = n - 1
            t = readings[i] if i < len(readings) else None
            if t is None:
                state.sensor_streak[i] = 0
                if state.sensor_fitted[i]:
                    state.sensor_dropped_s[i] = now_s
                continue
            state.sensor_streak[i] += 1
            state.sensor_last_c[i] = t + self.settings.temperature_offset_c
            if state.sensor_streak[i] >= SENSOR_FITTED_AFTER:
                state.sensor_fitted[i] = True

    def _counted_temperatures(self, readings: tuple[float | None, ...]) -> tuple[float | None, ...]:
        """The sensors chosen by ``temperature_sensors``, each with ``temperature_offset_c``
        (housebatt counts sensor 1 only: IgnoreTemp, anikrooz/housebatt housebatt.ino line
        94). A chosen sensor the frame does not carry is left out: no module temperature then
        raises temperature_missing rather than guessing."""
        chosen = self.settings.temperature_sensors
        offset = self.settings.temperature_offset_c
        return tuple(
            None if t is None else t + offset
            for n, t in enumerate(readings, start=1)
            if n in chosen
        )

    def forget_bus(self, bus: int) -> None:
        """A bus vanished: drop what its modules said, so they read as missing at once."""
        for key in list(self._modules):
            if key.bus == bus:
                self._modules[key] = _Module(self._cells)

    def snapshot(self, now_s: float) -> PackSnapshot:
        """Statistics over the modules present at ``now_s``."""
        return _Summary(self, now_s).build()

    def items(self) -> list[tuple[ModuleKey, _Module]]:
        return sorted(self._modules.items())


class _Summary:
    """Builds one PackSnapshot; split out so `Pack` stays small."""

    def __init__(self, pack: Pack, now_s: float) -> None:
        self.pack = pack
        self.settings = pack.settings
        self.now_s = now_s
        self.stale_after_s = pack.settings.stale_after_s
        self.valid_max = pack.settings.cell_valid_max_mv
        self.cells: list[CellRef] = []
        self.judged: list[CellRef] = []  # every cell but the suspect ones
        self.suspects = pack.settings.suspects
        self.lowest_any: CellRef | None = None
        self.worst_low: CellRef | None = None
        self.worst_high: CellRef | None = None
        self.temps: list[tuple[float, ModuleKey]] = []
        self.absent = 0
        self.invalid: list[InvalidCell] = []
        self.dropped: list[DroppedSensor] = []

    def _valid(self, mv: int | None) -> bool:
        return mv is not None and mv < self.valid_max

    def _view(self, key: ModuleKey, state: _Module) -> ModuleView:
        oldest = min(state.seen_s)
        age = None if oldest == _NEVER else self.now_s - oldest
        present = age is not None and age <= self.stale_after_s
        oldest_trusted = min(state.trusted_s)
        # The last trusted value stands in for an untrusted reading, but a cell whose latest
        # reading is invalid shows as invalid at once.
        shown = [
            t if self._valid(c) and self._valid(t) else c
            for t, c in zip(state.trusted, state.cells, strict=True)
        ]
        # A cell flickering between a reading and the invalid marker must not restart the
        # cell-count delay at every valid frame (nor the deep-discharge one at every invalid
        # frame): an invalid reading counts for stale_after_s, as a valid one does.
        held = [self.now_s - at <= self.stale_after_s for at in state.invalid_s]
        shown = [None if h else mv for mv, h in zip(shown, held, strict=True)]
        valid = [mv for mv in shown if mv is not None and mv < self.valid_max]
        full = len(valid) == len(shown)
        temps_fresh = self.now_s - state.temps_s <= self.stale_after_s
        view = ModuleView(
            bus=key.bus,
            module=key.module,
            expected=key in self.pack._expected,
            present=present,
            age_s=age,
            cells_v=tuple(_volts(mv) for mv in shown),
            cells_latest_v=tuple(_volts(mv) for mv in state.cells),
            valid_cells=len(valid),
            voltage_v=sum(valid) / 1000 if full else None,
            temperatures_c=state.temps if temps_fresh else (),
            balance_bits=state.balance_bits,
            trusted_at_s=None if oldest_trusted == _NEVER else oldest_trusted,
            frames=state.frames,
            initialising_frames=state.initialising,
            untrusted_frames=state.untrusted,
            suspect_cells=frozenset(
                c for b, m, c in self.suspects if (b, m) == (key.bus, key.module)
            ),
        )
        if present:
            self._collect(key, state, shown)
            self._collect_invalid(key, state, held)
            self._collect_dropped(key, state)
        return view

    def _collect_dropped(self, key: ModuleKey, state: _Module) -> None:
        for i, at in enumerate(state.sensor_dropped_s):
            if state.sensor_fitted[i] and self.now_s - at <= self.stale_after_s:
                self.dropped.append(
                    DroppedSensor(
                        key.bus, key.module, i + 1, state.sensor_last_c[i], self.now_s - at
                    )
                )

    def _collect_invalid(self, key: ModuleKey, state: _Module, held: list[bool]) -> None:
        for i, h in enumerate(held):
            if not h:
                continue
            age = self.now_s - state.invalid_s[i]
            self.invalid.append(
                InvalidCell(key.bus, key.module, i + 1, state.invalid_mv[i], age, self.valid_max)
            )
            # missing from the count, but its latest reading, if valid, still counts for
            # the worst cells
            self._worst(key, i + 1, state.cells[i])

    def _worst(
        self, key: ModuleKey, cell_no: int, reading: int | None, *, latest: bool = True
    ) -> None:
        if reading is None or reading >= self.valid_max:
            return
        cell = CellRef(key.bus, key.module, cell_no, reading / 1000)
        # A suspect cell still counts for over-voltage and deep discharge, never
        # for the lowest cell (under-voltage, discharge taper, pre-charge).
        if self.worst_high is None or cell.voltage_v > self.worst_high.voltage_v:
            self.worst_high = cell
        # Deep discharge latches until a person releases it, so it judges what the board
        # says now: the last trusted value stands for a bleeding module's cells for up to
        # a whole bleed phase, and one garbage frame just before it would latch.
        if latest and (self.lowest_any is None or cell.voltage_v < self.lowest_any.voltage_v):
            self.lowest_any = cell
        suspect = (key.bus, key.module, cell_no) in self.suspects
        if not suspect and (self.worst_low is None or cell.voltage_v < self.worst_low.voltage_v):
            self.worst_low = cell

    def _collect(self, key: ModuleKey, state: _Module, shown: list[int | None]) -> None:
        for i, mv in enumerate(shown):
            if mv is None or mv >= self.valid_max:
                continue
            ref = CellRef(key.bus, key.module, i + 1, mv / 1000)
            self.cells.append(ref)
            if (key.bus, key.module, i + 1) not in self.suspects:
                self.judged.append(ref)
            self._worst(key, i + 1, mv, latest=False)
            self._worst(key, i + 1, state.cells[i])
        if self.now_s - state.temps_s > self.stale_after_s or not state.temps:
            self.absent += max(len(state.temps), 1)
            return
        for temp in state.temps:
            if temp is None:
                self.absent += 1
            else:
                self.temps.append((temp, key))

    def _pack_voltage(self, views: list[ModuleView], complete: bool) -> float | None:
        present = [v for v in views if v.present]
        if self.settings.layout is PackLayout.SERIES:
            if not complete:
                return None
            return sum(c.voltage_v for c in self.cells)
        sums = [v.voltage_v for v in present if v.voltage_v is not None]
        return sum(sums) / len(sums) if sums else None

    def build(self) -> PackSnapshot:
        views = [self._view(key, state) for key, state in self.pack.items()]
        missing = tuple(v.key for v in views if v.expected and not v.present)
        unexpected = tuple(v.key for v in views if not v.expected and v.present)
        expected_cells = self.settings.cells_per_module * len(self.pack._expected)
        complete = not missing and not unexpected and len(self.cells) == expected_cells
        # Statistics (delta, balancing reference, SoC inputs) leave suspect cells out.
        judged = self.judged
        lo = min(judged, key=lambda c: c.voltage_v, default=None)
        hi = max(judged, key=lambda c: c.voltage_v, default=None)
        t_lo = min(self.temps, default=None)
        t_hi = max(self.temps, default=None)
        return PackSnapshot(
            now_s=self.now_s,
            modules=tuple(views),
            expected_modules=len(self.pack._expected),
            present_modules=sum(1 for v in views if v.expected and v.present),
            missing=missing,
            unexpected=unexpected,
            cell_count=len(self.cells),
            expected_cell_count=expected_cells,
            series_cells=self.settings.series_cells,
            min_cell=lo,
            max_cell=hi,
            avg_cell_v=sum(c.voltage_v for c in judged) / len(judged) if judged else None,
            delta_v=None if lo is None or hi is None else hi.voltage_v - lo.voltage_v,
            worst_low=self.worst_low,
            worst_high=self.worst_high,
            pack_voltage_v=self._pack_voltage(views, complete),
            temp_min_c=None if t_lo is None else t_lo[0],
            temp_max_c=None if t_hi is None else t_hi[0],
            temp_avg_c=sum(t for t, _ in self.temps) / len(self.temps) if self.temps else None,
            temp_min_at=None if t_lo is None else t_lo[1],
            temp_max_at=None if t_hi is None else t_hi[1],
            temp_sensors=len(self.temps),
            temp_sensors_absent=self.absent,
            lowest_any=self.lowest_any,
            invalid_cells=tuple(self.invalid),
            dropped_sensors=tuple(self.dropped),
        )


def _volts(mv: int | None) -> float | None:
    return None if mv is None else mv / 1000
