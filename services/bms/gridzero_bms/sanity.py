"""Frame sanity (pure): does each frame ID on a bus come from exactly one live board?

Module numbers are fixed in the slave boards, and every CAN ID a board uses follows from its
number (anikrooz/housebatt housebatt.ino, jamiejones85/VW-bms VWBMSV2.ino: no VW module BMS project has a way to renumber a board; anikrooz/housebatt
put its two "module 3"s on two buses). Two boards with the same number on one bus therefore send the same
IDs, and the pack model, which keeps the last frame per ID, sees only whichever answered
last: a module at 4.30 V per cell answering a few ms before its twin at 3.70 V is never seen.
A board that freezes may keep repeating its last frame, and would stay "present".

Two checks per (bus, frame ID) catch both:

- **Counter.** The low nibble of byte 1 of every cell-voltage frame is a message counter (DBC
  ``CMC_xx_yy_BZ``, "Botschaftszähler", in Tom-evnut/VW-bms ``VWtest.dbc``): one board counts up by one per frame,
  wrapping at 16. A step (new − old) mod 16 of 1..``max_counter_step`` is normal (frames may be
  lost). A step of 0 is a repeat (a frozen board); a larger step is a jump back or far ahead
  (two boards interleaving: their steps alternate k and 17 − k, so at least every other step is
  bad whatever their phase). The ID is at fault while at least ``counter_faults`` of its last
  ``counter_window`` steps were bad.
- **Rate.** The boards answer the 0x0BA poll (openinverter wiki "VW Hybrid Battery Packs";
  Tom-evnut/VW-bms VWBMSV2.ino sendcommand). An ID is at fault while it sent
  more than ``max_frames_per_poll`` × ``rate_window_polls`` + 1 frames in the last
  ``rate_window_polls`` polls of its bus (the + 1 absorbs a frame that arrives just after the
  next poll). This catches twins even if the counter were not checked.

No open-source project checks the counter (Tom-evnut/VW-bms BMSModule.cpp and its forks do not), and whether real boards count per frame and answer
each poll exactly once is [uncertain]; both checks are start-up settings (services/bms/README.md). A
setting that does not match the boards stops charge and discharge, never the reverse.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridzero_bms.codec import CELL_ID_FIRST, CELLS_PER_FRAME

COUNTER_MODULUS = 16


class FrameCheckSettings(BaseModel):
    """How strictly frame counters and rates are checked (start-up settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    counter_check: bool = Field(
        True, description="check the cell frames' message counter (byte 1, low nibble)"
    )
    max_counter_step: int = Field(
        4, ge=1, le=8, description="largest normal counter step (larger: lost frames or a twin)"
    )
    counter_window: int = Field(8, ge=2, le=64, description="counter steps looked at per frame ID")
    counter_faults: int = Field(
        3, ge=1, le=64, description="bad steps in the window that make a frame ID faulty"
    )
    max_frames_per_poll: int = Field(
        1, ge=1, le=50, description="frames one board sends per ID and 0x0BA poll"
    )
    rate_window_polls: int = Field(
        4, ge=1, le=50, description="polls over which the frame rate of an ID is counted"
    )

    @model_validator(mode="after")
    def _check(self) -> FrameCheckSettings:
        if self.counter_faults > self.counter_window:
            raise ValueError(
                f"counter_faults = {self.counter_faults} must be <= counter_window = "
                f"{self.counter_window}"
            )
        return self

    @property
    def max_frames_in_window(self) -> int:
        return self.max_frames_per_poll * self.rate_window_polls + 1


@dataclass(slots=True)
class _Stream:
    """One (bus, frame ID)."""

    module: int
    name: str
    counter: int | None = None
    steps: deque[int] = field(default_factory=deque)  # the last counter steps
    repeats: int = 0  # steps of 0 in ``steps``
    jumps: int = 0  # steps above max_counter_step in ``steps``
    this_poll: int = 0
    per_poll: deque[int] = field(default_factory=deque)
    in_window: int = 0  # sum of ``per_poll``


class FrameSanity:
    """Feed every module frame with `frame`, every poll with `poll`; read `problems`."""

    def __init__(self, settings: FrameCheckSettings) -> None:
        self.settings = settings
        self._streams: dict[tuple[int, int], _Stream] = {}

    def frame(self, bus: int, arbitration_id: int, module: int, counter: int | None = None) -> None:
        """A frame from a module; ``counter`` for cell frames that carry data."""
        key = (bus, arbitration_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(module, _frame_name(arbitration_id))
        stream.this_poll += 1
        if counter is None or not self.settings.counter_check:
            return
        if stream.counter is not None:
            step = (counter - stream.counter) % COUNTER_MODULUS
            stream.steps.append(step)
            self._count(stream, step, 1)
            if len(stream.steps) > self.settings.counter_window:
                self._count(stream, stream.steps.popleft(), -1)
        stream.counter = counter

    def _count(self, stream: _Stream, step: int, sign: int) -> None:
        # running counts keep `problems` (10 Hz) cheap
        if step == 0:
            stream.repeats += sign
        elif step > self.settings.max_counter_step:
            stream.jumps += sign

    def poll(self, bus: int) -> None:
        """A 0x0BA poll went out on ``bus``: the frames counted so far belong to the last one."""
        window = self.settings.rate_window_polls
        for (b, _arbitration_id), stream in self._streams.items():
            if b != bus:
                continue
            stream.per_poll.append(stream.this_poll)
            stream.in_window += stream.this_poll
            stream.this_poll = 0
            if len(stream.per_poll) > window:
                stream.in_window -= stream.per_poll.popleft()

    def forget_bus(self, bus: int) -> None:
        """The bus was closed: what its boards said no longer counts."""
        for key in [k for k in self._streams if k[0] == bus]:
            del self._streams[key]

    def problems(self) -> tuple[str, ...]:
        """One line per faulty frame ID, naming bus, module, ID and what is wrong."""
        s = self.settings
        out = []
        full = s.rate_window_polls
        for (bus, arbitration_id), stream in self._streams.items():
            repeats, jumps = stream.repeats, stream.jumps
            too_many = len(stream.per_poll) == full and stream.in_window > s.max_frames_in_window
            if repeats + jumps < s.counter_faults and not too_many:
                continue
            where = f"bus {bus} module {stream.module} frame 0x{arbitration_id:X} ({stream.name})"
            if repeats + jumps >= s.counter_faults:
                out.append(
                    f"{where}: {repeats} repeated and {jumps} out-of-order counters in the last "
                    f"{len(stream.steps)} frames (at most {s.counter_faults - 1} allowed; "
                    f"{_cause(repeats, jumps)})"
                )
            if too_many:
                out.append(
                    f"{where}: {stream.in_window} frames in the last {full} polls, at "
                    f"most {s.max_frames_in_window} allowed (two boards with the same number "
                    f"on this bus?)"
                )
        return tuple(sorted(out))


def _cause(repeats: int, jumps: int) -> str:
    if jumps == 0:
        return "a frozen board repeating its last frame?"
    if repeats == 0:
        return "two boards with the same number on this bus?"
    return "two boards with the same number, or a frozen board?"


def _frame_name(arbitration_id: int) -> str:
    if arbitration_id > 0x7FF:
        return "temperatures"
    first = (arbitration_id - CELL_ID_FIRST) % CELLS_PER_FRAME * CELLS_PER_FRAME + 1
    return f"cells {first}..{first + CELLS_PER_FRAME - 1}"
