"""Frame sanity: two boards with one number, a frozen board, lost frames, counter wrap."""

from __future__ import annotations

from bms_helpers import DECODER, small_pack

from gridzero_bms.codec import encode_module_cells
from gridzero_bms.pack import Pack
from gridzero_bms.sanity import FrameCheckSettings, FrameSanity


def _answer(
    sanity: FrameSanity, pack: Pack, now_s: float, module: int, mv: int, counter: int
) -> None:
    """One board's three cell frames, through the real codec, into the checks and the pack."""
    for arbitration_id, data in encode_module_cells(module, [mv] * 12, counter=counter & 0x0F):
        frame = DECODER.decode(arbitration_id, data)
        sanity.frame(0, arbitration_id, module, frame.counter)  # type: ignore[union-attr]
        pack.apply(0, frame, now_s)


def test_a_twin_answering_just_before_is_invisible_to_the_pack_but_not_to_the_checks() -> None:
    pack, sanity = small_pack(), FrameSanity(FrameCheckSettings())
    for poll in range(6):
        now = poll * 0.5
        sanity.poll(0)
        _answer(sanity, pack, now, 1, 3700, poll)
        _answer(sanity, pack, now + 0.004, 2, 4300, poll + 7)  # the twin, 4 ms earlier...
        _answer(sanity, pack, now + 0.008, 2, 3700, poll)  # ...than the real module 2
    # the pack keeps the last frame per ID: the 4.30 V board is never seen
    assert pack.snapshot(3.0).worst_high is not None
    assert pack.snapshot(3.0).worst_high.voltage_v == 3.7  # type: ignore[union-attr]
    problems = sanity.problems()
    assert problems, "the twin went unnoticed"
    assert any(p.startswith("bus 0 module 2 frame 0x1B4 (cells 1..4): ") for p in problems)
    assert "out-of-order counters" in problems[0]
    assert "two boards with the same number" in problems[0]
    assert not any("module 1 " in p for p in problems)


def test_twins_in_lockstep_show_as_repeats() -> None:
    sanity = FrameSanity(FrameCheckSettings())
    for poll in range(4):
        for _board in range(2):
            sanity.frame(0, 0x1B4, 2, poll & 0x0F)
    assert any("repeated" in p for p in sanity.problems())


def test_a_frozen_board_repeating_its_frames_is_found() -> None:
    pack, sanity = small_pack(), FrameSanity(FrameCheckSettings(counter_faults=3))
    for poll in range(3):
        sanity.poll(0)
        _answer(sanity, pack, poll * 0.5, 1, 3700, 5)
    assert sanity.problems() == ()  # two repeats: not yet
    sanity.poll(0)
    _answer(sanity, pack, 1.5, 1, 3700, 5)
    problems = sanity.problems()
    assert len(problems) == 3  # each of its three cell frames
    assert "3 repeated and 0 out-of-order counters" in problems[0]
    assert "a frozen board repeating its last frame" in problems[0]
    # the frozen board is still "present" to the pack: only the counter gives it away
    assert pack.snapshot(1.6).modules[0].present


def test_a_healthy_board_with_lost_frames_and_counter_wrap_is_fine() -> None:
    sanity = FrameSanity(FrameCheckSettings(max_counter_step=4))
    counter = 13
    for poll in range(40):
        sanity.poll(0)
        step = 3 if poll % 10 == 0 else 1  # two frames lost now and then
        counter = (counter + step) & 0x0F
        sanity.frame(0, 0x1B0, 1, counter)
        sanity.frame(0, 0x1A555401, 1)  # the temperature frame has no counter
    assert sanity.problems() == ()


def test_a_board_that_counts_again_clears_after_the_window() -> None:
    sanity = FrameSanity(FrameCheckSettings(counter_window=8, counter_faults=3))
    for _ in range(4):
        sanity.frame(0, 0x1B0, 1, 9)
    assert sanity.problems()
    for counter in range(10, 18):
        sanity.frame(0, 0x1B0, 1, counter & 0x0F)
    assert sanity.problems() == ()


def test_the_rate_check_alone_finds_twins() -> None:
    sanity = FrameSanity(FrameCheckSettings(counter_check=False, rate_window_polls=4))
    for _poll in range(4):
        sanity.poll(0)
        sanity.frame(0, 0x1A555402, 2)
        sanity.frame(0, 0x1A555402, 2)
    assert sanity.problems() == ()  # the window is not full yet
    sanity.poll(0)
    problems = sanity.problems()
    assert problems == (
        "bus 0 module 2 frame 0x1A555402 (temperatures): 8 frames in the last 4 polls, at most "
        "5 allowed (two boards with the same number on this bus?)",
    )


def test_one_frame_per_poll_with_jitter_is_fine_and_forget_bus_clears() -> None:
    sanity = FrameSanity(FrameCheckSettings())
    for poll in range(10):
        sanity.poll(1)
        # a late answer lands after the next poll now and then
        if poll % 3 != 2:
            sanity.frame(1, 0x1A555401, 1)
        if poll % 3 == 0:
            sanity.frame(1, 0x1A555401, 1)
    assert sanity.problems() == ()
    for _ in range(4):
        sanity.frame(1, 0x1B0, 1, 0)
    assert sanity.problems()
    sanity.forget_bus(1)
    assert sanity.problems() == ()
