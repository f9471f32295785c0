"""VW GTE module slave boards on one CAN bus (pure; the frames of Tom-evnut/VW-bms BMSModule.cpp and BMSModuleManager.cpp).

Modules answer the 0x0BA keep-alive: after each poll frame that asks for
voltages, every module on the bus that is not silenced by a fault sends its
cell-voltage frames and its temperature/balance-status frame. Balancing
commands (0x1A55540A + 2·(n−1), two halves) switch the plant's bleed
resistors; the byte is a duration in 2-minute steps (DBC interpretation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gridzero.codec import CodecError
from gridzero_bms import codec
from gridzero_tools.sim.faults import DuplicateModule, FrozenModule
from gridzero_tools.sim.plant import Plant

BALANCE_STEP_S = 120.0  # DBC: factor 2, unit minute
CELL_MV_MIN = codec.CELL_MV_OFFSET
CELL_MV_MAX = codec.CELL_MV_OFFSET + codec.CELL_INVALID_RAW - 1
TEMP_MIN_C = -40.0
# the hottest each variant's frame carries: DBC raw 0xFC (0xFD..0xFF read as absent); tom's
# first field 68.0 °C (its codes above are markers). A hotter model sends that top value.
TEMP_MAX_C = {codec.TempVariant.DBC: 86.0, codec.TempVariant.TOM: 68.0}
TWIN_COUNTER_OFFSET = 7  # a duplicate board counts on its own, out of phase with the real one


@dataclass(frozen=True, slots=True)
class WireFrame:
    """One CAN frame to send."""

    arbitration_id: int
    data: bytes
    extended: bool


class BmsBusEmulator:
    """The modules on one bus: ``numbers[i]`` is the CAN module number of plant module
    ``first_index + i``."""

    def __init__(
        self,
        bus: int,
        numbers: Sequence[int],
        first_index: int,
        options: codec.CodecOptions | None = None,
    ) -> None:
        self.bus = bus
        self.numbers = tuple(numbers)
        self.first_index = first_index
        self.options = options or codec.CodecOptions()
        self._decoder = codec.FrameDecoder(self.options)
        self._index_of = {n: first_index + i for i, n in enumerate(self.numbers)}
        self._counter = 0
        self._last: dict[int, list[WireFrame]] = {}  # plant module -> frames it sent last
        self.bad_frames = 0

    def on_frame(
        self, plant: Plant, arbitration_id: int, data: bytes, extended: bool, now_s: float
    ) -> list[WireFrame]:
        """React to one received frame; returns frames to send in reply."""
        try:
            frame = self._decoder.decode(arbitration_id, data, extended)
        except CodecError:
            self.bad_frames += 1
            return []
        if isinstance(frame, codec.PollFrame):
            return self.report(plant, now_s) if frame.send_voltages else []
        if isinstance(frame, codec.BalanceCommandFrame):
            self._balance(plant, frame, now_s)
        return []

    def _balance(self, plant: Plant, frame: codec.BalanceCommandFrame, now_s: float) -> None:
        index = self._index_of.get(frame.module)
        if index is None:
            return
        n_cells = plant.params.pack.cells_per_module
        half = range(frame.first_cell - 1, frame.first_cell + 7)
        current = plant.balancing_cells(index, max(now_s, plant.now_s))
        kept = {c for c in current if c not in half}
        on = {c - 1 for c in frame.cells_on if c - 1 < n_cells}
        raws = [raw for raw in frame.slots if raw not in (codec.BALANCE_OFF, codec.BALANCE_UNUSED)]
        duration = max(raws) * BALANCE_STEP_S if raws else None
        plant.set_balancing(index, frozenset(kept | on), now_s, duration)

    def report(self, plant: Plant, now_s: float) -> list[WireFrame]:
        """Every module's cell and temperature frames (silent modules send nothing)."""
        self._counter = (self._counter + 1) & 0x0F
        cells = plant.measured_cell_voltages_v(now_s)
        temps = plant.measured_temperatures_c(now_s)
        twins, frozen = self._board_faults(plant, now_s)
        out: list[WireFrame] = []
        for number in sorted(set(twins) - set(self.numbers)):
            out += self._twin(twins.pop(number), plant)  # a stray board with a number of its own
        for i, number in enumerate(self.numbers):
            index = self.first_index + i
            if plant.module_silent(index, now_s):
                continue
            if number in twins:
                out += self._twin(twins[number], plant)  # just before the real module
            if index in frozen and index in self._last:
                out += self._last[index]
                continue
            mv = [min(CELL_MV_MAX, max(CELL_MV_MIN, round(v * 1000.0))) for v in cells[index]]
            frames = [
                WireFrame(arb, data, False)
                for arb, data in codec.encode_module_cells(number, mv, counter=self._counter)
            ]
            t = min(TEMP_MAX_C[self.options.temp_variant], max(TEMP_MIN_C, temps[index]))
            bal = [c + 1 for c in sorted(plant.balancing_cells(index, now_s))]
            arb, data = codec.encode_temperature_frame(
                number, (t, t), bal, variant=self.options.temp_variant
            )
            frames.append(WireFrame(arb, data, True))
            self._last[index] = frames
            out += frames
        return out

    def _board_faults(
        self, plant: Plant, now_s: float
    ) -> tuple[dict[int, DuplicateModule], set[int]]:
        """Duplicate boards on this bus (by module number) and frozen plant modules."""
        twins: dict[int, DuplicateModule] = {}
        frozen: set[int] = set()
        for fault in plant.active_faults(now_s):
            if isinstance(fault, DuplicateModule) and fault.bus == self.bus:
                twins[fault.number] = fault
            elif isinstance(fault, FrozenModule):
                frozen.add(fault.module)
        return twins, frozen

    def _twin(self, fault: DuplicateModule, plant: Plant) -> list[WireFrame]:
        """The duplicate board's frames: its own cells, temperature and counter."""
        counter = (self._counter + TWIN_COUNTER_OFFSET) & 0x0F
        mv = min(CELL_MV_MAX, max(CELL_MV_MIN, round(fault.cell_v * 1000.0)))
        n_cells = plant.params.pack.cells_per_module
        frames = [
            WireFrame(arb, data, False)
            for arb, data in codec.encode_module_cells(
                fault.number, [mv] * n_cells, counter=counter
            )
        ]
        arb, data = codec.encode_temperature_frame(
            fault.number, (fault.temperature_c,) * 2, variant=self.options.temp_variant
        )
        frames.append(WireFrame(arb, data, True))
        return frames
