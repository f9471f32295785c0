"""The inverter's clamp, safe state, send schedule and link state, with explicit times."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.contract import BmsLimits
from gridzero.runtime.freshness import FreshValue
from gridzero.testing import fresh_limits
from gridzero_inverter.domain import (
    Clamp,
    Command,
    Dispatcher,
    LineDecision,
    LinkState,
    LinkTracker,
    Reason,
    SendSchedule,
    Timing,
    UnitSettings,
    decide,
    lines_of,
    parse_power_command,
    unit_set_problems,
)

U48 = UnitSettings("gtn48", "socket://gw:4001", dc_min_v=40.0, dc_max_v=60.0, max_power_w=900)
U36 = UnitSettings("gtn36", "socket://gw:4002", dc_min_v=28.0, dc_max_v=44.0, max_power_w=1000)
T = Timing()


def limits(
    dcl_a: float = 50.0,
    pack_v: float = 50.0,
    allowed: bool = True,
    alarm: bool = False,
    at_s: float = 100.0,
) -> FreshValue[BmsLimits]:
    return fresh_limits(
        at_s,
        dcl_a=dcl_a,
        pack_voltage_v=pack_v,
        discharge_allowed=allowed,
        alarms=("cell_under_voltage",) if alarm else (),
    )


def one(
    power_w: float,
    lim: FreshValue[BmsLimits] | None = None,
    unit: UnitSettings = U48,
    now_s: float = 100.5,
    cmd_s: float = 100.0,
) -> LineDecision:
    lim = limits() if lim is None else lim
    return decide(lines_of([unit]), {unit.unit_id: Command(power_w, cmd_s)}, lim, T, now_s)[
        unit.unit_id
    ]


def test_controller_within_every_limit() -> None:
    d = one(600)
    assert (d.demand_w, d.cap_w, d.reason) == (600, 900, Reason.CONTROLLER)


def test_fraction_of_a_watt_rounds_down() -> None:
    assert one(600.9).demand_w == 600
    assert one(600.9).reason is Reason.CONTROLLER


def test_max_power() -> None:
    d = one(5000)
    assert (d.demand_w, d.cap_w, d.reason) == (900, 900, Reason.MAX_POWER)


def test_dcl_times_pack_voltage_times_efficiency() -> None:
    d = one(900, limits(dcl_a=10.0, pack_v=48.5))  # 485 W DC x 0.85
    assert (d.demand_w, d.cap_w, d.reason) == (412, 412, Reason.DCL)


@pytest.mark.parametrize("efficiency", [0.87, 0.90, 0.92])
def test_dc_current_at_the_dcl_clamp_stays_within_dcl(efficiency: float) -> None:
    # issue 16 item 8: the clamp compared AC watts with DCL x V, so at 87-92 % efficiency the
    # pack gave 10.9-11.5 A against a DCL of 10 A
    d = one(900, limits(dcl_a=10.0, pack_v=50.0))
    dc_current_a = d.demand_w / efficiency / 50.0
    print(f"DCL 10 A at 50 V: {d.demand_w} W AC, {dc_current_a:.2f} A DC at {efficiency:.0%}")
    assert d.reason is Reason.DCL
    assert dc_current_a <= 10.0


def test_clamp_settings_are_bounded() -> None:
    assert Clamp().problems() == []
    assert "efficiency 1.1 is outside 0.5..0.92" in Clamp(efficiency=1.1).problems()[0]
    assert "efficiency 0.4" in Clamp(efficiency=0.4).problems()[0]
    # 1.0 let the clamp allow DCL x V of AC, a DC draw of DCL / 0.87 at the unit's
    # real efficiency
    assert "efficiency 1.0 is outside" in Clamp(efficiency=1.0).problems()[0]
    assert Clamp(efficiency=0.92).problems() == []
    assert "dc_trip_grace_s 31" in Clamp(dc_trip_grace_s=31).problems()[0]
    with pytest.raises(ValueError, match=r"efficiency 1\.2"):
        Dispatcher((U48,), clamp=Clamp(efficiency=1.2))


def test_reported_dc_current_above_dcl_cuts_every_unit_for_the_hold() -> None:
    disp = Dispatcher((U48, U36), clamp=Clamp(dcl_margin_pct=10.0, dc_trip_hold_s=10.0))
    disp.set_limits(limits(dcl_a=10.0, pack_v=42.0, at_s=100.0))
    disp.set_command("gtn48", 300, 100.0)
    disp.set_command("gtn36", 300, 100.0)
    assert disp.report_dc_current("gtn48", 11.2, 99.0) == ""  # within 10 x 1.1 + 0.2 A
    assert disp.report_dc_current("gtn48", 5.0, 100.0) == ""
    reason = disp.report_dc_current("gtn36", 6.5, 100.5)  # the units together: 11.5 A
    assert "11.5 A DC, above DCL 10 A" in reason
    for now_s in (100.5, 102.0):
        disp.set_limits(limits(dcl_a=10.0, pack_v=42.0, at_s=now_s))
        disp.set_command("gtn48", 300, now_s)
        disp.set_command("gtn36", 300, now_s)
        decisions = disp.decisions(now_s)
        assert {d.reason for d in decisions.values()} == {Reason.DC_CURRENT}
        assert all(d.demand_w == 0 and not d.safe_state for d in decisions.values())
    disp.set_limits(limits(dcl_a=10.0, pack_v=42.0, at_s=110.5))
    disp.set_command("gtn48", 300, 110.5)
    assert disp.decisions(110.5)["gtn48"].reason is not Reason.DC_CURRENT


def test_a_report_after_the_dcl_fell_is_judged_against_the_dcl_the_units_may_still_follow() -> None:
    # The DCL fell from 20 A to 5 A and the units, still ramping down from the old frame,
    # reported 15 A a second later: that was a trip (0 W for 10 s) for a unit that obeyed.
    disp = Dispatcher((U48,), clamp=Clamp(dcl_margin_pct=10.0, dc_trip_grace_s=8.0))

    def limits_until(end_s: float, start_s: float) -> None:  # as the bms sends them, every 0.5 s
        for k in range(round((end_s - start_s) / 0.5) + 1):
            now_s = start_s + 0.5 * k
            disp.set_limits(limits(dcl_a=20.0 if now_s < 102.0 else 5.0, at_s=now_s))

    limits_until(103.0, 100.0)
    assert disp.report_dc_current("gtn48", 15.0, 103.0) == ""
    # above the old DCL too: a unit that ignores its frames is cut at once
    assert "above DCL 20 A" in disp.report_dc_current("gtn48", 22.5, 103.0)
    disp.tripped_until_s = None
    limits_until(109.0, 103.5)
    assert disp.report_dc_current("gtn48", 15.0, 109.0) == ""  # 20 A last came 7.5 s ago
    limits_until(110.0, 109.5)
    # 8 s after the last 20 A only the new DCL counts: 15 A is a unit feeding above its frame
    assert "above DCL 5 A" in disp.report_dc_current("gtn48", 15.0, 110.0)
    assert len(disp.dcl_history.points) <= 17  # the window, not the whole run


def test_without_a_grace_a_report_is_judged_against_the_dcl_now() -> None:
    disp = Dispatcher((U48,), clamp=Clamp(dcl_margin_pct=10.0, dc_trip_grace_s=0.0))
    disp.set_limits(limits(dcl_a=20.0, at_s=100.0))
    disp.set_limits(limits(dcl_a=5.0, at_s=102.0))
    assert "above DCL 5 A" in disp.report_dc_current("gtn48", 15.0, 102.5)


def test_parallel_units_report_for_each_of_them() -> None:
    pair = UnitSettings(
        "pair", "/dev/ttyUSB0", 40.0, 60.0, max_power_w=900, parallel=2, query_status=False
    )
    disp = Dispatcher((pair,))
    disp.set_limits(limits(dcl_a=10.0, pack_v=50.0, at_s=100.0))
    assert disp.report_dc_current("pair", 5.4, 100.0) == ""  # 10.8 A
    assert disp.report_dc_current("pair", 5.7, 101.0) != ""  # 11.4 A > 11.2 A


def test_dcl_zero() -> None:
    d = one(300, limits(dcl_a=0.0))
    assert (d.demand_w, d.reason) == (0, Reason.DCL)


def test_not_allowed() -> None:
    d = one(300, limits(allowed=False))
    assert (d.demand_w, d.cap_w, d.reason, d.safe_state) == (0, 0, Reason.NOT_ALLOWED, False)


@pytest.mark.parametrize("pack_v", [39.9, 60.1])
def test_dc_window(pack_v: float) -> None:
    d = one(300, limits(pack_v=pack_v))
    assert (d.demand_w, d.reason, d.safe_state) == (0, Reason.DC_WINDOW, False)


@pytest.mark.parametrize("pack_v", [40.0, 60.0])
def test_dc_window_edges_are_inside(pack_v: float) -> None:
    assert one(300, limits(pack_v=pack_v)).reason is Reason.CONTROLLER


def test_alarm() -> None:
    d = one(300, limits(alarm=True))
    assert (d.demand_w, d.reason, d.safe_state) == (0, Reason.ALARM, True)


def test_stale_bms_by_age() -> None:
    assert one(300, limits(at_s=100.0), now_s=103.0, cmd_s=103.0).reason is Reason.CONTROLLER
    d = one(300, limits(at_s=100.0), now_s=103.01, cmd_s=103.0)
    assert (d.demand_w, d.reason, d.safe_state) == (0, Reason.STALE_BMS, True)


def test_no_bms_limits_yet() -> None:
    d = decide(lines_of([U48]), {"gtn48": Command(300, 0.0)}, None, T, 0.0)["gtn48"]
    assert d.reason is Reason.STALE_BMS


@pytest.mark.parametrize(("dcl", "v"), [(math.nan, 50.0), (50.0, math.inf), (-1.0, 50.0)])
def test_unusable_bms_limits_count_as_stale(dcl: float, v: float) -> None:
    assert one(300, limits(dcl_a=dcl, pack_v=v)).reason is Reason.STALE_BMS


def test_stale_command() -> None:
    assert one(300, now_s=103.0, cmd_s=100.0, lim=limits(at_s=103.0)).reason is Reason.CONTROLLER
    d = one(300, now_s=103.01, cmd_s=100.0, lim=limits(at_s=103.0))
    assert (d.demand_w, d.reason, d.safe_state) == (0, Reason.STALE_COMMAND, True)


def test_no_command_yet() -> None:
    d = decide(lines_of([U48]), {}, limits(), T, 100.0)["gtn48"]
    assert (d.reason, d.requested_w) == (Reason.STALE_COMMAND, None)


def test_disabled() -> None:
    d = one(300, unit=UnitSettings("x", "/dev/ttyUSB0", 40.0, 60.0, enabled=False))
    assert (d.demand_w, d.reason, d.safe_state) == (0, Reason.DISABLED, True)


def test_reason_order_disabled_before_stale_bms_before_alarm() -> None:
    off = UnitSettings("x", "/dev/ttyUSB0", 40.0, 60.0, enabled=False)
    assert one(300, limits(alarm=True, at_s=0.0), unit=off).reason is Reason.DISABLED
    assert one(300, limits(alarm=True, at_s=0.0)).reason is Reason.STALE_BMS


def test_36v_and_48v_units_side_by_side() -> None:
    cmds = {"gtn48": Command(500, 100.0), "gtn36": Command(500, 100.0)}
    at_50v = decide(lines_of([U48, U36]), cmds, limits(pack_v=50.0), T, 100.5)
    assert at_50v["gtn48"].reason is Reason.CONTROLLER
    assert at_50v["gtn36"].reason is Reason.DC_WINDOW
    at_42v = decide(lines_of([U48, U36]), cmds, limits(pack_v=42.0), T, 100.5)
    assert at_42v["gtn48"].demand_w == 500
    assert at_42v["gtn36"].demand_w == 500


def test_shared_dcl_budget_is_split_in_proportion() -> None:
    cmds = {"gtn48": Command(900, 100.0), "gtn36": Command(300, 100.0)}
    one_to_one = Clamp(efficiency=1.0)  # the split's arithmetic, on round numbers
    d = decide(
        lines_of([U48, U36]), cmds, limits(dcl_a=20.0, pack_v=42.0), T, 100.5, clamp=one_to_one
    )
    assert d["gtn48"].demand_w + d["gtn36"].demand_w <= 840
    assert (d["gtn48"].demand_w, d["gtn36"].demand_w) == (630, 210)
    assert d["gtn48"].reason is d["gtn36"].reason is Reason.DCL
    assert d["gtn48"].cap_w == 840 - 210


def test_cap_is_headroom_left_by_the_other_units() -> None:
    cmds = {"gtn48": Command(200, 100.0), "gtn36": Command(300, 100.0)}
    one_to_one = Clamp(efficiency=1.0)
    d = decide(
        lines_of([U48, U36]), cmds, limits(dcl_a=20.0, pack_v=42.0), T, 100.5, clamp=one_to_one
    )
    assert (d["gtn48"].cap_w, d["gtn36"].cap_w) == (540, 640)
    assert d["gtn48"].reason is Reason.CONTROLLER


def test_parallel_units_count_in_the_budget() -> None:
    pair = UnitSettings("pair", "/dev/ttyUSB0", 40.0, 60.0, max_power_w=900, parallel=2)
    d = decide(
        lines_of([pair]), {"pair": Command(1800, 100.0)}, limits(dcl_a=20.0, pack_v=50.0), T, 100.5
    )
    assert d["pair"].demand_w * 2 <= 1000
    assert d["pair"].reason is Reason.DCL


units_st = st.lists(
    st.builds(
        UnitSettings,
        unit_id=st.sampled_from(["a", "b", "c", "d"]),
        port_url=st.just("/dev/ttyUSB0"),
        dc_min_v=st.floats(0, 50),
        dc_max_v=st.floats(51, 200),
        max_power_w=st.integers(0, 2000),
        address=st.integers(0, 255),
        enabled=st.booleans(),
        parallel=st.integers(1, 6),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda u: u.unit_id,
)


@settings(max_examples=200)
@given(
    units_st,
    st.lists(st.floats(0, 1e9), min_size=4, max_size=4),
    st.one_of(st.floats(-10, 500), st.just(math.nan)),
    st.one_of(st.floats(0, 120), st.just(math.nan)),
    st.booleans(),
    st.booleans(),
    st.floats(95, 110),
)
def test_never_above_any_cap(
    units: list[UnitSettings],
    powers: list[float],
    dcl: float,
    pack_v: float,
    allowed: bool,
    alarm: bool,
    now_s: float,
) -> None:
    cmds = {u.unit_id: Command(p, 100.0) for u, p in zip(units, powers, strict=False)}
    lim = limits(dcl, pack_v, allowed, alarm, at_s=100.0)
    decisions = decide(lines_of(units), cmds, lim, T, now_s)
    total_w = 0
    for unit in units:
        d = decisions[unit.unit_id]
        assert 0 <= d.demand_w <= d.cap_w or d.demand_w == d.cap_w == 0
        assert d.demand_w <= unit.max_power_w
        assert d.demand_w <= cmds[unit.unit_id].power_w
        if d.demand_w:
            assert unit.enabled
            assert allowed
            assert not alarm
            assert unit.dc_min_v <= pack_v <= unit.dc_max_v
        total_w += d.demand_w * unit.parallel
    if total_w:
        assert total_w <= dcl * pack_v * Clamp().efficiency


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "negative"),
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        ("600", "not a number"),
        (None, "not a number"),
        (True, "not a number"),
        ([600], "not a number"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_power_command(value)


def test_refused_command_leaves_state_unchanged() -> None:
    disp = Dispatcher((U48,))
    disp.set_command("gtn48", 300, 10.0)
    with pytest.raises(ValueError, match="negative"):
        disp.set_command("gtn48", -5, 11.0)
    with pytest.raises(KeyError, match="not configured"):
        disp.set_command("nope", 5, 11.0)
    assert disp.commands["gtn48"] == Command(300.0, 10.0)


def test_huge_command_is_clamped_not_refused() -> None:
    assert parse_power_command(1e12) == 1e12
    assert one(1e12).demand_w == 900


# ------------------------------------------------------------------ send schedule


def test_zero_frames_then_silence() -> None:
    sched = SendSchedule()
    safe = LineDecision("u", 0, 0, Reason.STALE_COMMAND, None)
    sent = []
    for step in range(10):
        now_s = float(step)
        power = sched.due(safe, T, now_s)
        if power is not None:
            sched.sent(power, now_s)
            sent.append((now_s, power))
    assert sent == [(0.0, 0), (1.0, 0), (2.0, 0)]
    assert sched.silent(T)


def test_leaving_safe_state_resumes_and_reentering_sends_zeros_again() -> None:
    sched = SendSchedule()
    safe = LineDecision("u", 0, 0, Reason.ALARM, None)
    ok = LineDecision("u", 400, 900, Reason.CONTROLLER, 400)
    for now_s in (0.0, 1.0, 2.0, 3.0):
        if (p := sched.due(safe, T, now_s)) is not None:
            sched.sent(p, now_s)
    assert sched.due(safe, T, 4.0) is None
    assert sched.due(ok, T, 4.0) == 400
    sched.sent(400, 4.0)
    assert sched.due(safe, T, 4.3) == 0  # a cut goes out at once (after min_gap)
    sched.sent(0, 4.3)
    assert not sched.silent(T)


def test_period_and_immediate_change() -> None:
    sched = SendSchedule()
    d600 = LineDecision("u", 600, 900, Reason.CONTROLLER, 600)
    d700 = LineDecision("u", 700, 900, Reason.CONTROLLER, 700)
    d100 = LineDecision("u", 100, 900, Reason.CONTROLLER, 100)
    assert sched.due(d600, T, 0.0) == 600
    sched.sent(600, 0.0)
    assert sched.due(d600, T, 0.5) is None  # unchanged: only every period
    assert sched.due(d100, T, 0.1) is None  # min_gap
    assert sched.due(d100, T, 0.3) == 100  # a cut goes out at once
    assert sched.due(d700, T, 0.3) == 700  # so does a rise
    sched.sent(700, 0.3)
    assert sched.due(d700, T, 1.0) is None
    assert sched.due(d700, T, 1.3) == 700  # the period repeats it
    sched.sent(700, 1.3)
    assert sched.due(d600, T, 1.35) == 600  # a repeat does not hold back the next change


def test_failed_write_is_retried() -> None:
    sched = SendSchedule()
    safe = LineDecision("u", 0, 0, Reason.STALE_BMS, None)
    assert sched.due(safe, T, 0.0) == 0
    # no sent(): the write failed; the zero frame is still owed
    assert sched.due(safe, T, 0.1) == 0


# ------------------------------------------------------------------ dispatcher end to end


def test_dispatcher_goes_to_zero_within_stale_time_and_then_silent() -> None:
    disp = Dispatcher((U48,))
    disp.set_limits(limits(at_s=0.0))
    disp.set_command("gtn48", 500, 0.0)
    out = []
    now_s = 0.0
    while now_s < 12.0:
        disp.set_limits(limits(at_s=now_s))  # bms keeps publishing; controller fell silent at 0
        for frame in disp.due(now_s):
            disp.sent(frame.line_id, frame.power_w, now_s)
            out.append((round(now_s, 1), frame.power_w))
        now_s += 0.1
    zeros = [t for t, p in out if p == 0]
    assert zeros[0] <= 3.0 + 0.11 + 1e-9
    assert len(zeros) == T.zero_frames
    assert [p for t, p in out if t < 3.0] == [500, 500, 500]
    assert out[-1][0] < 6.0  # then silence


def test_dispatcher_runtime_settings() -> None:
    disp = Dispatcher((U48,))
    assert disp.update_unit("gtn48", max_power_w=500).max_power_w == 500
    with pytest.raises(ValueError, match=r"max_power_w=2400 W is outside 0\.\.2000 W"):
        disp.update_unit("gtn48", max_power_w=2400)
    with pytest.raises(ValueError, match="not whole watts"):
        disp.update_unit("gtn48", max_power_w=1.5)
    with pytest.raises(ValueError, match="only"):
        disp.update_unit("gtn48", port_url="x")
    assert disp.update_unit("gtn48", enabled=False).enabled is False
    assert disp.unit("gtn48").max_power_w == 500


def test_unit_set_problems() -> None:
    same_wire = UnitSettings("b", U48.port_url, 40.0, 60.0)
    problems = unit_set_problems([U48, same_wire, U48])
    assert any("'gtn48' and 'b' share port socket://gw:4001" in p for p in problems)
    assert any("'gtn48': id used twice" in p for p in problems)
    bad = UnitSettings("bad id", "", 60.0, 40.0, max_power_w=-1, address=300, parallel=0)
    text = "; ".join(bad.problems())
    for part in (
        "id 'bad id' must be",
        "port_url is empty",
        "max_power_w=-1 W is outside 0..2000 W",
        "dc_min_v 60.0 must be below",
        "address=300 is outside 0..255",
        "parallel=0 is outside 1..6",
    ):
        assert part in text
    with pytest.raises(ValueError, match="no units"):
        Dispatcher(())


def test_timing_problems() -> None:
    assert Timing().problems() == []
    # 0 sent no 0 W frame at all, so a stop left the unit at its last demand
    assert "zero_frames 0 is outside 1..100" in Timing(zero_frames=0).problems()[0]
    bad = Timing(bms_stale_s=0.0, zero_frames=-1, min_gap_s=2.0)
    text = "; ".join(bad.problems())
    for part in ("bms_stale_s 0.0", "zero_frames -1", "min_gap_s 2.0"):
        assert part in text


def test_link_state() -> None:
    link = LinkTracker()
    assert link.state(T, 0.0) is LinkState.NO_STATUS
    link.status_received(1.0)
    assert link.state(T, 5.0) is LinkState.OK
    assert link.state(T, 11.5) is LinkState.NO_STATUS
    link.port_failed("[Errno 111] Connection refused")
    assert link.state(T, 1.5) is LinkState.PORT_ERROR
    link.port_ok()
    assert link.state(T, 1.5) is LinkState.OK


# ------------------------------------------------------------------ lines: units sharing a port


def on_line(unit_id: str, max_power_w: int, line: str = "roof") -> UnitSettings:
    return UnitSettings(
        unit_id,
        "/dev/ttyUSB0",
        40.0,
        60.0,
        max_power_w=max_power_w,
        query_status=False,
        line=line,
    )


def test_units_of_different_ratings_on_one_line_get_the_same_frame() -> None:
    # a 1000 W and a 600 W unit hear one frame; each feeds up to its own rating
    (roof,) = lines_of([on_line("big", 1000), on_line("small", 600)])
    assert roof.capacity_w() == 1600
    assert [roof.frame_for(w) for w in (0, 600, 1200, 1400, 1600, 5000)] == [
        0,
        300,
        600,
        800,
        1000,
        1000,
    ]
    assert roof.output_w(800) == 1400
    d = decide([roof], {"roof": Command(1400, 100.0)}, limits(), T, 100.5)["roof"]
    assert (d.demand_w, d.reason) == (800, Reason.CONTROLLER)
    d = decide([roof], {"roof": Command(2000, 100.0)}, limits(), T, 100.5)["roof"]
    assert (d.demand_w, d.reason) == (1000, Reason.MAX_POWER)


def test_a_shared_line_counts_every_unit_at_the_whole_frame_in_the_budget() -> None:
    (roof,) = lines_of([on_line("big", 1000), on_line("small", 600)])
    one_to_one = Clamp(efficiency=1.0)
    # budget 20 A x 50 V = 1000 W: two units that may each feed the frame: at most 500 W
    d = decide(
        [roof], {"roof": Command(1600, 100.0)}, limits(dcl_a=20.0), T, 100.5, clamp=one_to_one
    )["roof"]
    assert (d.demand_w, d.cap_w, d.reason) == (500, 500, Reason.DCL)


def test_one_unit_off_stops_its_whole_line() -> None:
    off = replace(on_line("small", 600), enabled=False)
    (roof,) = lines_of([on_line("big", 1000), off])
    d = decide([roof], {"roof": Command(1000, 100.0)}, limits(), T, 100.5)["roof"]
    assert (d.demand_w, d.reason) == (0, Reason.DISABLED)


def test_line_problems_name_the_units() -> None:
    asked = replace(on_line("small", 600), query_status=True)
    text = "; ".join(unit_set_problems([on_line("big", 1000), asked]))
    assert "line 'roof': 2 inverters hear one status query" in text
    moved = replace(on_line("small", 600), port_url="/dev/ttyUSB1")
    text = "; ".join(unit_set_problems([on_line("big", 1000), moved]))
    assert "line 'roof': its units must share one port" in text
    other = replace(on_line("small", 600), address=0x25)
    assert "share one address byte" in "; ".join(unit_set_problems([on_line("big", 1000), other]))
    seven = [on_line(f"u{i}", 300) for i in range(7)]
    assert "7 inverters, more than 6" in "; ".join(unit_set_problems(seven))


def test_dispatcher_commands_lines_not_units() -> None:
    disp = Dispatcher((on_line("big", 1000), on_line("small", 600)))
    disp.set_limits(limits(at_s=0.0))
    assert disp.set_command("roof", 1200, 0.0) == 1200
    with pytest.raises(KeyError, match="line 'big' is not configured"):
        disp.set_command("big", 600, 0.0)
    (frame,) = disp.due(0.0)
    assert (frame.line_id, frame.port_url, frame.power_w) == ("roof", "/dev/ttyUSB0", 600)


# ------------------------------------------------------------------ a runtime cap on a shared line


def test_a_runtime_cap_on_a_shared_line_holds_the_whole_line_frame() -> None:
    # unit a set to 0 W at runtime on a line shared with b (both 900 W) got a 900 W
    # frame: a does not know its runtime cap, hears the frame and feeds it: ~1800 W fed
    disp = Dispatcher((on_line("a", 900), on_line("b", 900)))
    disp.update_unit("a", max_power_w=0)
    disp.set_limits(limits(dcl_a=100.0, at_s=0.0))
    disp.set_command("roof", 900, 0.0)
    d = disp.decisions(0.1)["roof"]
    assert (d.demand_w, d.cap_w, d.reason) == (0, 0, Reason.MAX_POWER)
    assert [o.power_w for o in disp.due(0.1)] == [0]
    assert disp.line("roof").output_w(d.demand_w) == 0
    disp.update_unit("a", max_power_w=300)  # every unit of the line at most 300 W now
    roof = disp.line("roof")
    assert (roof.max_frame_w, roof.capacity_w(), roof.frame_for(900)) == (300, 600, 300)
    assert roof.output_w(roof.frame_for(900)) == 600


def test_a_runtime_cap_at_or_above_a_units_hardware_limit_leaves_the_split_alone() -> None:
    # 1000 W + 600 W: the 600 W unit holds itself at 600 W, so no cap on the frame from it
    disp = Dispatcher((on_line("big", 1000), on_line("small", 600)))
    disp.update_unit("small", max_power_w=600)
    assert disp.line("roof").frame_for(1600) == 1000
    disp.update_unit("big", max_power_w=700)  # big holds the frame: small still 600 W at 700
    roof = disp.line("roof")
    assert (roof.capacity_w(), roof.frame_for(1300), roof.frame_for(5000)) == (1300, 700, 700)
    disp.update_unit("small", max_power_w=400)
    roof = disp.line("roof")
    assert (roof.capacity_w(), roof.frame_for(1600)) == (800, 400)
    assert [roof.unit_max_w(u) for u in roof.units] == [400, 400]


def test_a_runtime_max_power_above_the_start_up_one_is_refused_naming_unit_and_line() -> None:
    disp = Dispatcher((on_line("a", 900), on_line("b", 900)))
    disp.update_unit("a", max_power_w=500)
    assert disp.update_unit("a", max_power_w=900).max_power_w == 900
    with pytest.raises(ValueError, match=r"unit 'a' \(line 'roof'\): max_power_w 1000 W is above"):
        disp.update_unit("a", max_power_w=1000)
    assert disp.unit("a").max_power_w == 900


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 2)), min_size=1,
             max_size=3),
    st.floats(0, 1e5),
    st.floats(0, 500),
)  # fmt: skip
def test_no_unit_of_a_shared_line_feeds_above_its_runtime_max_power(
    specs: list[tuple[int, int, int]], command_w: float, dcl: float
) -> None:
    units = [
        replace(on_line(f"u{i}", max(a, b)), parallel=n, max_power_w=min(a, b),
                own_limit_w=max(a, b))
        for i, (a, b, n) in enumerate(specs)
    ]  # fmt: skip
    (roof,) = lines_of(units)
    d = decide([roof], {"roof": Command(command_w, 100.0)}, limits(dcl_a=dcl), T, 100.5)["roof"]
    for unit in units:  # every unit feeds the frame up to its hardware limit
        assert min(d.demand_w, unit.hardware_limit_w) <= unit.max_power_w
    assert roof.output_w(d.demand_w) <= command_w
    assert d.demand_w * roof.count <= dcl * 50.0 * Clamp().efficiency
