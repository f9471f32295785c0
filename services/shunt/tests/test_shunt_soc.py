"""Coulomb counter: a day of a known current profile, anchors, gaps, big currents, persistence."""

from __future__ import annotations

import json

import pytest

from gridzero_shunt.soc import (
    DEFAULT_CAPACITY_AH,
    MODULE_CAPACITY_AH,
    CoulombCounter,
    SocSettings,
    remaining_wh,
    soc_window_from_ocv,
)

CAP = 200.0


def run(
    counter: CoulombCounter,
    t0_s: float,
    t1_s: float,
    current_a: float | None,
    step_s: float = 1.0,
    **kw: float,
) -> float:
    """Update every ``step_s`` from t0 (exclusive) to t1 (inclusive) with a constant current."""
    n = round((t1_s - t0_s) / step_s)
    for i in range(1, n + 1):
        counter.update(t0_s + i * step_s, current_a, **kw)
    return t1_s


def test_default_capacity_is_nine_gte_modules() -> None:
    assert pytest.approx(1086 / 44.4) == MODULE_CAPACITY_AH
    assert pytest.approx(24.46, abs=0.01) == MODULE_CAPACITY_AH
    assert pytest.approx(9 * 1086 / 44.4) == DEFAULT_CAPACITY_AH


def test_a_day_of_a_known_profile() -> None:
    """A day at 1 s steps: rest, evening discharge, night idle, morning charge with 120 A peaks."""
    s = SocSettings(capacity_ah=CAP, charge_efficiency=1.0)
    c = CoulombCounter(s)
    c.set_soc(50.0)
    t = 0.0
    c.update(t, 0.0)
    profile = [  # (duration s, current A, pack V)
        (3600, 0.0, 47.0),
        (3 * 3600, -20.0, 46.0),  # -60 Ah
        (6 * 3600, -2.5, 45.5),  # -15 Ah
        (2 * 3600, 30.0, 47.5),  # +60 Ah
        (1800, 120.0, 48.5),  # +60 Ah, above the 32 A the original's int16 mA overflowed at
        (5.5 * 3600, 0.0, 48.0),
        (1800, -40.0, 47.0),  # -20 Ah
        (5.5 * 3600, 0.0, 47.0),
    ]
    expected_ah = 100.0
    ah_in = ah_out = wh_in = wh_out = 0.0
    for duration, amps, volts in profile:
        t = run(c, t, t + duration, amps, pack_voltage_v=volts)
        ah = amps * duration / 3600
        expected_ah += ah
        if ah > 0:
            ah_in += ah
            wh_in += ah * volts
        else:
            ah_out -= ah
            wh_out -= ah * volts
    assert t == 86400
    r = c.reading()
    assert r.remaining_ah == pytest.approx(expected_ah, abs=1e-6)
    assert r.soc_pct == pytest.approx(expected_ah / CAP * 100, abs=1e-6)
    assert r.ah_in == pytest.approx(ah_in)
    assert r.ah_out == pytest.approx(ah_out)
    assert r.wh_in == pytest.approx(wh_in)
    assert r.wh_out == pytest.approx(wh_out)
    assert r.counting
    assert r.gaps == 0
    assert r.source == "set"


def test_charge_efficiency_applies_to_charge_in_only() -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP, charge_efficiency=0.95))
    c.set_soc(50.0)
    c.update(0.0, 0.0)
    run(c, 0, 3600, 10.0)
    assert c.remaining_ah == pytest.approx(100 + 9.5)
    assert c.ah_in == pytest.approx(10.0)
    run(c, 3600, 7200, -10.0)
    assert c.remaining_ah == pytest.approx(99.5)


def test_no_overflow_at_large_currents_for_a_day() -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP))
    c.update(0.0, 0.0)
    run(c, 0, 86400, 150.0, step_s=0.25, pack_voltage_v=48.0)
    assert c.ah_in == pytest.approx(150 * 24, rel=1e-9)
    assert c.wh_in == pytest.approx(150 * 24 * 48, rel=1e-9)
    # estimated from the pack voltage at the start (issue 21), then clamped at capacity
    assert c.reading().source == "estimated"
    assert c.reading().remaining_ah == CAP
    c.set_soc(100.0)
    run(c, 86400, 86400 + 3600, -300.0, step_s=0.25)
    assert c.remaining_ah == 0.0  # clamped, never negative
    assert c.ah_out == pytest.approx(300.0)


def test_gaps_are_not_integrated() -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP, max_gap_s=5.0))
    c.set_soc(50.0)
    c.update(0.0, 100.0)
    c.update(1.0, 100.0)
    assert c.remaining_ah == pytest.approx(100 + 100 / 3600 * 0.995)
    before = c.remaining_ah
    assert before is not None
    c.update(60.0, 100.0)  # 59 s without samples: pause, do not guess
    assert c.remaining_ah == before
    assert not c.reading().counting
    assert c.reading().gaps == 1
    c.update(61.0, 100.0)
    assert c.reading().counting
    assert c.remaining_ah == pytest.approx(before + 100 / 3600 * 0.995)


def test_unknown_current_and_backwards_time_pause_counting() -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP))
    c.set_soc(50.0)
    c.update(0.0, 10.0)
    c.update(1.0, None)  # sensor unavailable for this interval
    c.update(0.5, 10.0)  # clock went backwards
    c.update(1.5, 10.0)
    assert c.remaining_ah == pytest.approx(100 + 10 / 3600 * 0.995)
    assert c.reading().gaps == 1


def test_full_anchor_after_hold_time() -> None:
    s = SocSettings(capacity_ah=CAP, full_cell_v=4.08, tail_current_a=5.0, full_hold_s=180)
    c = CoulombCounter(s)
    c.set_soc(80.0)  # drifted: the pack is really full
    c.update(0.0, 3.0, cell_max_v=4.09)
    run(c, 0, 179, 3.0, cell_max_v=4.09)
    assert c.reading().source == "set"
    run(c, 179, 180, 3.0, cell_max_v=4.09)
    assert c.remaining_ah == CAP
    assert c.source == "full_anchor"


def test_full_anchor_needs_small_current_held() -> None:
    s = SocSettings(capacity_ah=CAP, full_hold_s=180)
    c = CoulombCounter(s)
    c.set_soc(80.0)
    c.update(0.0, 3.0, cell_max_v=4.09)
    run(c, 0, 100, 3.0, cell_max_v=4.09)
    run(c, 100, 101, 20.0, cell_max_v=4.09)  # bulk current again: the timer restarts
    run(c, 101, 250, 3.0, cell_max_v=4.09)
    assert c.reading().source == "set"
    run(c, 250, 290, 3.0, cell_max_v=4.09)
    assert c.source == "full_anchor"


def test_empty_anchor_and_unknown_start() -> None:
    s = SocSettings(capacity_ah=CAP, empty_cell_v=3.2, empty_hold_s=60)
    c = CoulombCounter(s)
    assert c.reading().soc_pct is None
    c.update(0.0, -30.0, cell_min_v=3.15)
    run(c, 0, 59, -30.0, cell_min_v=3.15)
    assert c.reading().soc_pct is None
    run(c, 59, 60, -30.0, cell_min_v=3.15)
    assert c.reading().soc_pct == 0.0
    assert c.source == "empty_anchor"


def test_initial_soc_from_ocv_at_rest() -> None:
    s = SocSettings(capacity_ah=CAP, rest_current_a=2.0, rest_hold_s=30)
    c = CoulombCounter(s)
    c.update(0.0, -20.0, cell_min_v=3.7)
    run(c, 0, 10, -20.0, cell_min_v=3.70)  # under load: no OCV estimate
    run(c, 10, 40, 0.5, cell_min_v=3.77)  # at rest from the sample at t = 11 s
    assert c.remaining_ah is None
    run(c, 40, 41, 0.5, cell_min_v=3.77)
    expected = soc_window_from_ocv(3.77, s)
    assert c.source == "ocv"
    assert c.reading().soc_pct == pytest.approx(expected * 100)
    assert 45 < expected * 100 < 55
    # Once known, OCV does not override counting.
    run(c, 41, 200, 0.0, cell_min_v=3.9)
    assert c.reading().soc_pct == pytest.approx(expected * 100)


def test_ocv_window_end_points() -> None:
    s = SocSettings()
    assert soc_window_from_ocv(s.empty_cell_v, s) == pytest.approx(0.0)
    assert soc_window_from_ocv(s.full_cell_v, s) == pytest.approx(1.0)
    assert soc_window_from_ocv(4.2, s) == 1.0
    assert soc_window_from_ocv(3.0, s) == 0.0


def test_remaining_wh() -> None:
    s = SocSettings(capacity_ah=CAP)
    assert remaining_wh(0.0, s) == 0.0
    full = remaining_wh(CAP, s)
    assert 12 * 3.6 * CAP < full < 12 * 3.9 * CAP
    assert remaining_wh(CAP / 2, s) < full / 2  # the lower half has the lower voltage


def test_persistence_round_trip_continues_counting() -> None:
    s = SocSettings(capacity_ah=CAP)
    c = CoulombCounter(s)
    c.set_soc(40.0)
    c.update(0.0, 0.0)
    run(c, 0, 3600, 20.0, pack_voltage_v=48.0)
    stored = json.loads(json.dumps(c.to_dict()))
    again = CoulombCounter.from_dict(stored, s)
    assert again.remaining_ah == pytest.approx(c.remaining_ah)
    assert again.source == "restored"
    assert (again.ah_in, again.wh_in) == (c.ah_in, c.wh_in)
    again.update(5000.0, 20.0)  # first sample after restart: nothing integrated yet
    again.update(5001.0, 20.0)
    assert again.ah_in == pytest.approx(c.ah_in + 20 / 3600)


def test_capacity_change_keeps_soc() -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP))
    c.set_soc(50.0)
    c.settings = SocSettings(capacity_ah=100.0)
    assert c.reading().soc_pct == pytest.approx(50.0)
    assert c.remaining_ah == pytest.approx(50.0)
    restored = c.with_settings(SocSettings(capacity_ah=300.0))
    assert restored.remaining_ah == pytest.approx(150.0)


def test_unknown_state_persists_as_unknown() -> None:
    c = CoulombCounter.from_dict(CoulombCounter().to_dict())
    assert c.remaining_ah is None
    assert c.source == "unknown"


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"version": 2}, "version 2, expected 1"),
        ({"ah_in": -1.0}, "ah_in -1.0 is negative"),
        ({"wh_out": "x"}, "wh_out: 'x' is not a finite number"),
        ({"source": "guess"}, "source 'guess'"),
        ({"remaining_ah": 300.0}, "remaining 300.0 Ah is outside 0..200 Ah"),
        ({"capacity_ah": 0.0}, "capacity 0.0 Ah must be > 0"),
    ],
)
def test_bad_stored_state(patch: dict[str, object], match: str) -> None:
    c = CoulombCounter(SocSettings(capacity_ah=CAP))
    c.set_soc(50.0)
    data = {**c.to_dict(), **patch}
    with pytest.raises(ValueError, match=match):
        CoulombCounter.from_dict(data)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"capacity_ah": 0.0}, "capacity 0.0 Ah must be > 0"),
        ({"capacity_ah": -10.0}, "capacity -10.0 Ah must be > 0"),
        ({"capacity_ah": float("nan")}, "not a finite number"),
        ({"charge_efficiency": 1.5}, "charge efficiency 1.5"),
        ({"empty_cell_v": 4.1, "full_cell_v": 4.0}, "empty < full"),
        ({"max_gap_s": 0.0}, "max_gap_s 0.0 must be > 0"),
        ({"full_hold_s": -1.0}, "full_hold_s -1.0 must be >= 0"),
        ({"series_cells": 0}, "series cells 0"),
    ],
)
def test_bad_soc_settings(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SocSettings(**kw)  # type: ignore[arg-type]


def test_set_soc_range() -> None:
    c = CoulombCounter()
    with pytest.raises(ValueError, match=r"101 % is outside 0\.\.100"):
        c.set_soc(101)
