"""Charger domain: every clamp reason and stale path, with explicit times."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.contract import BmsLimits
from gridzero.runtime.freshness import FreshValue, LimitHistory
from gridzero.testing import fresh_limits
from gridzero_charger import codec
from gridzero_charger.codec import Quantity
from gridzero_charger.domain import (
    TAPER_MAX_DROP_V,
    TAPER_OVER_S,
    TAPER_RELEASE_A,
    TAPER_STEP_V,
    TAPER_TOLERANCE_A,
    ChargeCommand,
    ChargerSettings,
    Decision,
    FallbackStatus,
    FallbackWrite,
    LinkState,
    Measurement,
    OverCurrentWatch,
    Readings,
    Reason,
    Taper,
    cells_mismatch,
    charge_limit_a,
    cvl_above_ceiling,
    decide,
    decision_frames,
    fallback_due_on_open,
    link_state,
    needs_refresh,
    next_taper,
    offline_defaults,
    over_current_threshold_a,
    over_measurements,
    poll_frames,
    startup_frames,
    taper_entry_v,
    taper_holds,
)

SETTINGS = ChargerSettings()
NOW = 1000.0


def limits(
    *,
    at_s: float = NOW - 0.5,
    cvl_v: float = 49.2,
    ccl_a: float = 40.0,
    charge_allowed: bool = True,
    alarms: tuple[str, ...] = (),
) -> FreshValue[BmsLimits]:
    return fresh_limits(
        at_s, cvl_v=cvl_v, ccl_a=ccl_a, charge_allowed=charge_allowed, alarms=alarms
    )


def command(
    *,
    at_s: float = NOW - 1.0,
    current_a: float | None = None,
    power_w: float | None = None,
    voltage_v: float | None = None,
) -> ChargeCommand:
    return ChargeCommand(at_s, current_a, power_w, voltage_v)


def test_controller_command_within_limits_passes() -> None:
    d = decide(command(current_a=20.0), limits(), SETTINGS, NOW)
    assert d.dc_on
    assert d.current_a == 20.0
    assert d.voltage_v == 49.2  # no voltage asked: the bms CVL
    assert d.reason is Reason.CONTROLLER
    assert d.voltage_reason is Reason.CVL
    assert d.current_fraction == pytest.approx(20.0 / 62.5 * 1.21)


def test_command_above_ccl_is_clamped_to_ccl() -> None:
    d = decide(command(current_a=60.0), limits(ccl_a=25.0), SETTINGS, NOW)
    assert (d.dc_on, d.current_a, d.reason) == (True, 25.0, Reason.CCL)


def test_voltage_above_cvl_is_clamped_to_cvl() -> None:
    d = decide(command(current_a=20.0, voltage_v=55.0), limits(cvl_v=49.2), SETTINGS, NOW)
    assert (d.dc_on, d.voltage_v, d.reason, d.voltage_reason) == (
        True,
        49.2,
        Reason.CVL,
        Reason.CVL,
    )


def test_controller_voltage_below_cvl_is_kept() -> None:
    d = decide(command(current_a=20.0, voltage_v=48.0), limits(cvl_v=49.2), SETTINGS, NOW)
    assert (d.voltage_v, d.voltage_reason, d.reason) == (48.0, Reason.CONTROLLER, Reason.CONTROLLER)


def test_cvl_above_the_pack_ceiling_is_clamped_to_cells_x_4_2_v() -> None:
    # issue 16: `layout: series` by mistake on a parallel pack -> the bms publishes 98.4 V
    for cvl_v in (98.4, 60.0, 50.5):
        d = decide(command(current_a=20.0), limits(cvl_v=cvl_v), SETTINGS, NOW)
        assert d.dc_on
        assert d.voltage_v == pytest.approx(12 * 4.2)
        assert d.voltage_reason is Reason.PACK_MAX
        assert cvl_above_ceiling(limits(cvl_v=cvl_v), SETTINGS)
    asked = decide(command(current_a=20.0, voltage_v=55.0), limits(cvl_v=98.4), SETTINGS, NOW)
    assert asked.voltage_v == pytest.approx(50.4)
    assert not cvl_above_ceiling(limits(cvl_v=50.4), SETTINGS)
    thirteen = ChargerSettings(cells_in_series=13)
    assert decide(command(current_a=20.0), limits(cvl_v=98.4), thirteen, NOW).voltage_v == (
        pytest.approx(13 * 4.2)
    )


def test_cvl_below_rectifier_range_turns_dc_off() -> None:
    d = decide(command(current_a=20.0), limits(cvl_v=40.0), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CVL)
    assert d.voltage_v >= codec.VOLTAGE_MIN_V


def test_max_power_clamps_current() -> None:
    s = ChargerSettings(max_charge_power_w=1000.0)
    d = decide(command(current_a=40.0), limits(cvl_v=50.0, ccl_a=60.0), s, NOW)
    assert (d.dc_on, d.reason) == (True, Reason.MAX_POWER)
    assert d.current_a == pytest.approx(20.0)  # 1000 W at the 50 V set-point
    assert d.power_limit_w == pytest.approx(1000.0)


def test_rectifier_maximum_current_is_a_max_power_limit() -> None:
    s = ChargerSettings(max_charge_power_w=3000.0)
    d = decide(command(current_a=100.0), limits(cvl_v=45.0, ccl_a=100.0), s, NOW)
    assert d.reason is Reason.MAX_POWER
    assert d.current_a == pytest.approx(62.5)
    assert d.current_fraction == pytest.approx(codec.FRACTION_MAX)


def test_power_command_uses_pack_voltage() -> None:
    d = decide(command(power_w=920.0), limits(), SETTINGS, NOW, pack_voltage_v=46.0)
    assert d.current_a == pytest.approx(20.0)
    assert d.reason is Reason.CONTROLLER


def test_power_command_without_pack_voltage_uses_setpoint() -> None:
    d = decide(command(power_w=984.0), limits(cvl_v=49.2), SETTINGS, NOW)
    assert d.current_a == pytest.approx(20.0)


def test_current_and_power_the_smaller_wins() -> None:
    d = decide(command(current_a=30.0, power_w=460.0 * 2), limits(), SETTINGS, NOW, 46.0)
    assert d.current_a == pytest.approx(20.0)


@pytest.mark.parametrize("alarms", [("cell_over_voltage",), ("a", "b")])
def test_alarm_turns_dc_off(alarms: tuple[str, ...]) -> None:
    d = decide(command(current_a=20.0), limits(alarms=alarms), SETTINGS, NOW)
    assert (d.dc_on, d.reason, d.current_a) == (False, Reason.ALARM, 0.0)


def test_charge_not_allowed_turns_dc_off() -> None:
    d = decide(command(current_a=20.0), limits(charge_allowed=False), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CCL)


def test_zero_ccl_turns_dc_off() -> None:
    d = decide(command(current_a=20.0), limits(ccl_a=0.0), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CCL)


def test_ccl_below_usable_minimum_turns_dc_off_not_zero_amps() -> None:
    d = decide(command(current_a=20.0), limits(ccl_a=4.0), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.BELOW_MIN_CURRENT)


def test_a_ccl_below_the_minimum_tapers_a_running_charge_at_constant_voltage() -> None:
    """Given a taper (`next_taper`: the charge was running), the output stays on at the
    taper's voltage with the least current limit: the pack takes what it accepts there."""
    m = SETTINGS.usable_min_current_a
    ccl_a = m - TAPER_TOLERANCE_A  # just below the minimum: the bms's taper crossing it
    d = decide(command(current_a=20.0), limits(ccl_a=ccl_a), SETTINGS, NOW, taper=Taper(48.5))
    assert (d.dc_on, d.reason, d.voltage_reason) == (True, Reason.TAPER, Reason.TAPER)
    assert d.voltage_v == pytest.approx(48.5)
    assert d.current_a == pytest.approx(ccl_a)
    assert d.current_fraction == codec.FRACTION_MIN
    # never above the voltage the rules allow: a CVL below the taper's voltage wins
    low_cvl = decide(
        command(current_a=20.0), limits(cvl_v=48.0, ccl_a=ccl_a), SETTINGS, NOW, taper=Taper(48.5)
    )
    assert low_cvl.dc_on
    assert low_cvl.voltage_v == pytest.approx(48.0)
    # engaged, it follows the CCL further down (the step-down keeps the current under it)
    held = decide(
        command(current_a=20.0), limits(ccl_a=1.0), SETTINGS, NOW, taper=Taper(48.5, engaged=True)
    )
    assert (held.dc_on, held.reason) == (True, Reason.TAPER)


def test_a_ccl_that_drops_far_below_the_minimum_at_once_stops_the_charge() -> None:
    """A bms derating for temperature or a warning: at the minimum current the charge would
    sit far above the CCL until the voltage came down, and the over-current trip would latch."""
    m = SETTINGS.usable_min_current_a
    far = limits(ccl_a=m - TAPER_TOLERANCE_A - 0.01)
    d = decide(command(current_a=20.0), far, SETTINGS, NOW, taper=Taper(48.5))
    assert (d.dc_on, d.reason) == (False, Reason.BELOW_MIN_CURRENT)
    assert not taper_holds(Taper(48.5), m - TAPER_TOLERANCE_A - 0.01, m)
    assert taper_holds(Taper(48.5), m - TAPER_TOLERANCE_A, m)
    assert not taper_holds(Taper(48.5), m, m)  # a candidate needs the CCL below the minimum
    assert taper_holds(Taper(48.5, engaged=True), m + TAPER_RELEASE_A - 0.01, m)
    assert not taper_holds(Taper(48.5, engaged=True), m + TAPER_RELEASE_A, m)
    assert not taper_holds(Taper(48.5, engaged=True), 0.0, m)
    assert not taper_holds(Taper(math.nan, engaged=True), 1.0, m)


@pytest.mark.parametrize(
    ("cmd", "lim", "taper", "reason"),
    [
        # the controller asks for less than the minimum: not the bms's limit, no taper
        ({"current_a": 4.0}, {"ccl_a": 40.0}, Taper(48.5), Reason.BELOW_MIN_CURRENT),
        ({"current_a": 20.0}, {"ccl_a": 0.0}, Taper(48.5), Reason.CCL),  # full: off
        ({"current_a": 20.0}, {"ccl_a": 4.0, "alarms": ("x",)}, Taper(48.5), Reason.ALARM),
        ({"current_a": 20.0}, {"ccl_a": 4.0}, Taper(40.0), Reason.BELOW_MIN_CURRENT),
        ({"current_a": 20.0}, {"ccl_a": 4.0}, Taper(math.nan), Reason.BELOW_MIN_CURRENT),
        ({"current_a": 20.0}, {"ccl_a": 4.0}, None, Reason.BELOW_MIN_CURRENT),
    ],
)
def test_what_does_not_taper(
    cmd: dict[str, float], lim: dict[str, Any], taper: Taper | None, reason: Reason
) -> None:
    d = decide(command(**cmd), limits(**lim), SETTINGS, NOW, taper=taper)
    assert (d.dc_on, d.reason) == (False, reason)


def test_next_taper_starts_at_the_pack_voltage_of_a_running_charge_only() -> None:
    assert next_taper(None, False, 48.6, 5.2, 5.1, NOW) is None  # stopped: starts at the minimum
    assert next_taper(None, True, None, 5.2, 5.1, NOW) is None  # pack voltage unknown
    assert next_taper(None, True, math.inf, 5.2, 5.1, NOW) is None
    assert next_taper(None, True, 48.6, 5.2, 5.1, NOW) == Taper(48.6, ccl_a=5.1)
    assert next_taper(Taper(48.6), False, 48.6, 5.2, 5.1, NOW) is None  # DC went off: over
    assert next_taper(None, True, 48.6, 5.2, math.nan, NOW) is None


def test_a_ccl_that_drops_at_once_during_a_taper_ends_it_and_a_slow_drift_does_not() -> None:
    """A derating or a warning mid-taper: at the held voltage the current would sit above the
    new CCL until the step-down caught up, and the over-current trip would latch first. The
    cells evening out under the held voltage lower it slowly (5.2 -> 3.7 A over an hour on
    the bench): that the step-down follows."""
    held = Taper(48.6, engaged=True, ccl_a=4.9)
    assert next_taper(held, True, 48.7, 4.0, 4.9 - TAPER_TOLERANCE_A - 0.01, NOW) is None
    t: Taper | None = held
    for step in range(12):  # 0.1 A a step: 4.9 -> 3.7 A
        ccl_a = 4.9 - 0.1 * (step + 1)
        t = next_taper(t, True, 48.7, ccl_a, ccl_a, NOW + step)
        assert t == Taper(48.6, engaged=True, ccl_a=pytest.approx(ccl_a))


def test_next_taper_lowers_its_voltage_while_the_current_stays_above_the_ccl() -> None:
    """A rectifier whose output sits above its set-point, or cells that drift apart, keep the
    current above the limit: the voltage comes down a step every `TAPER_OVER_S`."""
    over_a = 3.0 + TAPER_TOLERANCE_A + 0.1
    t = next_taper(Taper(48.6, engaged=True, ccl_a=3.0), True, 48.7, over_a, 3.0, NOW)
    assert t == Taper(48.6, NOW, engaged=True, ccl_a=3.0)
    t = next_taper(t, True, 48.7, over_a, 3.0, NOW + TAPER_OVER_S - 0.1)
    assert t == Taper(48.6, NOW, engaged=True, ccl_a=3.0)
    t = next_taper(t, True, 48.7, over_a, 3.0, NOW + TAPER_OVER_S)
    assert t is not None
    assert t.voltage_v == pytest.approx(48.6 - TAPER_STEP_V)
    assert (t.over_since_s, t.engaged) == (None, True)
    # within the tolerance (or unmeasured) nothing changes and the wait starts again
    held = Taper(48.6, NOW, engaged=True, ccl_a=3.0)
    within_a = 3.0 + TAPER_TOLERANCE_A
    same = Taper(48.6, engaged=True, ccl_a=3.0)
    assert next_taper(held, True, 48.7, within_a, 3.0, NOW + 5) == same
    assert next_taper(held, True, 48.7, None, 3.0, NOW + 5) == same
    assert next_taper(held, True, 48.7, math.nan, 3.0, NOW + 5) == same


def test_an_engaged_taper_holds_until_the_ccl_is_well_above_the_minimum() -> None:
    """Held at constant voltage the current falls and the CCL comes back above the minimum:
    back at the minimum current at once it would fall under again (constant current and
    constant voltage alternated every second on the bench)."""
    m = SETTINGS.usable_min_current_a
    held = Taper(48.6, engaged=True)
    for ccl_a in (m + 0.2, m + TAPER_RELEASE_A - 0.01):
        d = decide(command(current_a=m), limits(ccl_a=ccl_a), SETTINGS, NOW, taper=held)
        assert (d.dc_on, d.reason, d.voltage_v) == (True, Reason.TAPER, 48.6)
        assert d.current_fraction == codec.FRACTION_MIN
    back = decide(
        command(current_a=m), limits(ccl_a=m + TAPER_RELEASE_A), SETTINGS, NOW, taper=held
    )
    assert (back.dc_on, back.reason, back.voltage_v) == (True, Reason.CONTROLLER, 49.2)
    # a candidate (not yet engaged) above the minimum changes nothing
    fresh = decide(command(current_a=m), limits(ccl_a=m + 0.2), SETTINGS, NOW, taper=Taper(48.6))
    assert (fresh.reason, fresh.voltage_v) == (Reason.CONTROLLER, 49.2)
    # a controller asking below the minimum is refused even while tapering
    low = decide(command(current_a=m - 1.0), limits(ccl_a=m + 0.2), SETTINGS, NOW, taper=held)
    assert (low.dc_on, low.reason) == (False, Reason.BELOW_MIN_CURRENT)


def test_the_taper_starts_at_the_rectifiers_reading_within_a_cables_drop_of_the_pack() -> None:
    assert taper_entry_v(48.75, 48.6) == pytest.approx(48.75)
    assert taper_entry_v(48.4, 48.6) == pytest.approx(48.4)  # lower: held lower, safe
    # a corrupt or miscalibrated reading far above the pack is not believed
    assert taper_entry_v(58.0, 48.6) == pytest.approx(48.6 + TAPER_MAX_DROP_V)
    assert taper_entry_v(None, 48.6) == pytest.approx(48.6)
    assert taper_entry_v(math.nan, 48.6) == pytest.approx(48.6)
    assert taper_entry_v(48.75, None) == pytest.approx(48.75)
    assert taper_entry_v(None, None) is None
    assert taper_entry_v(math.inf, math.nan) is None


def test_the_taper_starts_at_the_rectifiers_own_output_voltage_when_it_is_fresh() -> None:
    r = Readings().apply(codec.Reading(0, Quantity.OUTPUT_VOLTAGE, 48.72), NOW)
    assert r.fresh_output_voltage_v(NOW + 1.0, SETTINGS) == pytest.approx(48.72)
    assert r.fresh_output_voltage_v(NOW + SETTINGS.measurement_stale_s + 0.1, SETTINGS) is None
    assert Readings().fresh_output_voltage_v(NOW, SETTINGS) is None


def test_command_below_usable_minimum_turns_dc_off() -> None:
    d = decide(command(current_a=5.0), limits(), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.BELOW_MIN_CURRENT)
    at_min = decide(command(current_a=5.2), limits(), SETTINGS, NOW)
    assert at_min.dc_on
    assert at_min.current_fraction >= codec.FRACTION_MIN


@pytest.mark.parametrize("current_a", [0.0, -5.0])
def test_zero_or_negative_command_turns_dc_off(current_a: float) -> None:
    d = decide(command(current_a=current_a), limits(), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CONTROLLER)


def test_controller_disable_turns_dc_off() -> None:
    cmd = ChargeCommand(NOW - 1.0, current_a=20.0, enable=False)
    d = decide(cmd, limits(), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CONTROLLER)


def test_command_without_current_or_power_turns_dc_off() -> None:
    d = decide(command(), limits(), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.CONTROLLER)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_command_turns_dc_off(bad: float) -> None:
    for cmd in (command(current_a=bad), command(current_a=10.0, voltage_v=bad)):
        d = decide(cmd, limits(), SETTINGS, NOW)
        assert (d.dc_on, d.reason) == (False, Reason.CONTROLLER)


def test_bms_limits_stale_turns_dc_off() -> None:
    fresh = decide(command(current_a=20.0), limits(at_s=NOW - 3.0), SETTINGS, NOW)
    assert fresh.dc_on  # exactly 3 s old: still fresh
    d = decide(command(current_a=20.0), limits(at_s=NOW - 3.01), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.STALE_BMS)


def test_bms_limits_missing_or_from_the_future_turn_dc_off() -> None:
    assert decide(command(current_a=20.0), None, SETTINGS, NOW).reason is Reason.STALE_BMS
    future = decide(command(current_a=20.0), limits(at_s=NOW + 5.0), SETTINGS, NOW)
    assert (future.dc_on, future.reason) == (False, Reason.STALE_BMS)


def test_bms_limits_not_finite_turn_dc_off() -> None:
    d = decide(command(current_a=20.0), limits(ccl_a=math.nan), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.STALE_BMS)


def test_command_stale_turns_dc_off() -> None:
    assert decide(command(at_s=NOW - 5.0, current_a=20.0), limits(), SETTINGS, NOW).dc_on
    d = decide(command(at_s=NOW - 5.01, current_a=20.0), limits(), SETTINGS, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.STALE_COMMAND)
    assert decide(None, limits(), SETTINGS, NOW).reason is Reason.STALE_COMMAND


def test_disabled_turns_dc_off() -> None:
    s = ChargerSettings(enabled=False)
    d = decide(command(current_a=20.0), limits(), s, NOW)
    assert (d.dc_on, d.reason) == (False, Reason.DISABLED)


def test_stale_limits_timeline() -> None:
    """The bms stops publishing at t=10; the charger is off from t=13 (3 s setting)."""
    lim = limits(at_s=10.0)
    states = {
        t: decide(command(at_s=t, current_a=20.0), lim, SETTINGS, float(t)) for t in range(10, 15)
    }
    assert [states[t].dc_on for t in range(10, 15)] == [True, True, True, True, False]


def test_off_voltage_is_the_safe_default_never_above_cvl() -> None:
    d = decide(None, limits(cvl_v=45.0), SETTINGS, NOW)
    assert d.voltage_v == 45.0
    assert d.current_fraction == codec.FRACTION_MIN
    stale = decide(None, None, SETTINGS, NOW)
    assert stale.voltage_v == pytest.approx(46.8)


# --- invariants under any input -------------------------------------------------------------

maybe_float = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=200)
@given(
    cmd_current=maybe_float,
    cmd_power=maybe_float,
    cmd_voltage=maybe_float,
    cvl=st.floats(allow_nan=True, allow_infinity=True),
    ccl=st.floats(allow_nan=True, allow_infinity=True),
    allowed=st.booleans(),
    pack=maybe_float,
    cmd_age=st.floats(-1.0, 10.0),
    bms_age=st.floats(-1.0, 10.0),
    taper_v=maybe_float,
    engaged=st.booleans(),
)
def test_decision_never_exceeds_limits(
    cmd_current: float | None,
    cmd_power: float | None,
    cmd_voltage: float | None,
    cvl: float,
    ccl: float,
    allowed: bool,
    pack: float | None,
    cmd_age: float,
    bms_age: float,
    taper_v: float | None,
    engaged: bool,
) -> None:
    lim = fresh_limits(NOW - bms_age, cvl_v=cvl, ccl_a=ccl, charge_allowed=allowed)
    cmd = ChargeCommand(NOW - cmd_age, cmd_current, cmd_power, cmd_voltage)
    taper = None if taper_v is None else Taper(taper_v, engaged=engaged)
    d = decide(cmd, lim, SETTINGS, NOW, pack, taper=taper)
    assert codec.VOLTAGE_MIN_V <= d.voltage_v <= codec.VOLTAGE_MAX_V
    assert codec.FRACTION_MIN <= d.current_fraction <= codec.FRACTION_MAX
    decision_frames(d, SETTINGS)  # every decision is encodable, within the pack's ceiling
    assert d.voltage_v <= 12 * 4.2 + 1e-9
    if not d.dc_on:
        assert d.voltage_v <= 12 * 4.0  # the "harmless" set-point stays inside the fallback
        assert d.current_fraction == codec.FRACTION_MIN
    if d.dc_on:
        assert allowed
        assert 0.0 <= NOW - lim.at_s <= SETTINGS.bms_stale_s
        assert 0.0 <= NOW - cmd.at_s <= SETTINGS.command_stale_s
        assert d.voltage_v <= cvl
        assert d.current_a <= ccl
        assert d.voltage_v * d.current_a <= SETTINGS.max_charge_power_w + 1e-6
        if cmd_current is not None:
            assert d.current_a <= cmd_current
        if d.reason is Reason.TAPER:
            # only the bms's limit below the minimum tapers, at the taper's voltage or lower
            assert taper_v is not None
            assert d.voltage_v <= taper_v
            assert 0.0 < d.current_a < SETTINGS.usable_min_current_a + TAPER_RELEASE_A
            assert d.current_fraction == codec.FRACTION_MIN
        else:
            assert d.current_a >= SETTINGS.usable_min_current_a


# --- settings, refresh, frames, link, readings ----------------------------------------------


def test_settings_report_every_problem() -> None:
    with pytest.raises(ValueError, match="charger settings") as info:
        ChargerSettings(fallback_voltage_v=60.0, refresh_period_s=30.0, rated_current_a=math.nan)
    assert "fallback_voltage_v=60.0 V is outside 41..58.5 V" in str(info.value)
    assert "refresh_period_s=30.0 s is outside 0.5..15 s" in str(info.value)
    assert "rated_current_a=nan" in str(info.value)


def test_offline_defaults_are_safe() -> None:
    defaults = offline_defaults(SETTINGS)
    assert defaults.voltage_v == pytest.approx(46.8)  # 12 x 3.9 V
    assert defaults.current_fraction == codec.FRACTION_MIN


def test_fallback_voltage_above_4_0_v_per_cell_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fallback_voltage_v=48.1 V is above 48 V \(12 cells"):
        ChargerSettings(fallback_voltage_v=48.1)
    assert offline_defaults(ChargerSettings(fallback_voltage_v=48.0)).voltage_v == 48.0
    assert (
        offline_defaults(ChargerSettings(cells_in_series=14, fallback_voltage_v=56.0)).voltage_v
        == 56.0
    )
    with pytest.raises(ValueError, match=r"cells_in_series=15 cells is outside 11\.\.14"):
        ChargerSettings(cells_in_series=15)


def test_current_scaling_is_bounded_to_the_known_models() -> None:
    # issue 16: rated 20 A made CCL 10 A a fraction of 0.605 (~31 A on an R48-3000e3)
    with pytest.raises(ValueError, match=r"rated_current_a=20.0 A is outside 41.7..62.5 A"):
        ChargerSettings(rated_current_a=20.0)
    with pytest.raises(ValueError, match=r"fraction_at_rated=0.5 is outside 1..1.21"):
        ChargerSettings(fraction_at_rated=0.5)
    worst = ChargerSettings(rated_current_a=41.7, fraction_at_rated=1.21)
    # the most any allowed scaling asks of a real R48-3000e3 (1.00 = 62.5 A, R48.c) for 10 A
    assert worst.current_to_fraction(10.0) * 62.5 <= 10.0 * 1.82


def test_startup_frames_dc_off_then_offline_then_online() -> None:
    frames = [codec.decode_frame(f.arbitration_id, f.data) for f in startup_frames(SETTINGS)]
    assert frames[0] == codec.Control(dc_off=True)
    registers = [getattr(m, "register", None) for m in frames[1:]]
    assert registers == [0x24, 0x19, 0x21, 0x22]
    stored = [m for m in frames[1:3] if isinstance(m, codec.SetPoint)]
    assert [m.value for m in stored] == [pytest.approx(46.8), pytest.approx(0.10)]


def test_the_stored_fallback_is_due_on_open_once_or_when_its_values_change() -> None:
    """Each open used to write the stored values (EEPROM): ~94,000 writes a day on a link
    whose reads fail and that reopens every second."""
    assert fallback_due_on_open(None, SETTINGS)
    written = FallbackWrite.sent(SETTINGS, NOW)
    assert not fallback_due_on_open(written, SETTINGS)
    # unconfirmed: its retry's back-off decides, not the reopen
    assert not fallback_due_on_open(written.check(NOW + 3.0), SETTINGS)
    assert fallback_due_on_open(written, ChargerSettings(fallback_voltage_v=44.0))
    reopen = [
        codec.decode_frame(f.arbitration_id, f.data)
        for f in startup_frames(SETTINGS, store_fallback=False)
    ]
    assert reopen[0] == codec.Control(dc_off=True)
    assert [getattr(m, "register", None) for m in reopen[1:]] == [0x21, 0x22]


def test_decision_frames_order() -> None:
    on = Decision(True, 49.2, 20.0, 0.39, Reason.CONTROLLER, Reason.CVL)
    off = Decision(False, 46.8, 0.0, 0.1, Reason.ALARM, Reason.ALARM)
    on_msgs = [codec.decode_frame(f.arbitration_id, f.data) for f in decision_frames(on, SETTINGS)]
    off_msgs = [
        codec.decode_frame(f.arbitration_id, f.data) for f in decision_frames(off, SETTINGS)
    ]
    assert on_msgs[-1] == codec.Control(dc_off=False)  # set-points first, then on
    assert off_msgs[0] == codec.Control(dc_off=True)  # off first


def test_needs_refresh() -> None:
    d = Decision(True, 49.2, 20.0, 0.39, Reason.CONTROLLER, Reason.CVL)
    assert needs_refresh(None, None, d, NOW, SETTINGS)
    assert not needs_refresh(d, NOW - 4.9, d, NOW, SETTINGS)
    assert needs_refresh(d, NOW - 5.0, d, NOW, SETTINGS)  # refresh period
    changed = Decision(True, 49.2, 25.0, 0.48, Reason.CONTROLLER, Reason.CVL)
    assert needs_refresh(d, NOW - 0.1, changed, NOW, SETTINGS)
    off = Decision(False, 46.8, 0.0, 0.1, Reason.ALARM, Reason.ALARM)
    assert needs_refresh(d, NOW - 0.1, off, NOW, SETTINGS)
    assert SETTINGS.refresh_period_s < 30.0 / 2  # well inside the ~30 s fallback


def test_poll_frames_cover_published_quantities() -> None:
    quantities = [codec.decode_frame(f.arbitration_id, f.data) for f in poll_frames()]
    assert [q.quantity for q in quantities if isinstance(q, codec.ReadRequest)] == [
        Quantity.OUTPUT_VOLTAGE,
        Quantity.OUTPUT_CURRENT,
        Quantity.CURRENT_LIMIT,
        Quantity.TEMPERATURE,
        Quantity.INPUT_VOLTAGE,
        Quantity.STATUS,
    ]


def test_link_state() -> None:
    assert link_state(0.0, None, 5.0, SETTINGS) is LinkState.UNKNOWN
    assert link_state(0.0, None, 10.5, SETTINGS) is LinkState.LOST
    assert link_state(0.0, 20.0, 29.0, SETTINGS) is LinkState.OK
    assert link_state(0.0, 20.0, 30.5, SETTINGS) is LinkState.LOST


def test_readings_model() -> None:
    r = Readings()
    assert r.power_w is None
    r = r.apply(codec.Reading(0, Quantity.OUTPUT_VOLTAGE, 48.0), 1.0)
    r = r.apply(codec.Reading(0, Quantity.OUTPUT_CURRENT, 10.0), 2.0)
    r = r.apply(codec.Reading(0, Quantity.CURRENT_LIMIT, 0.5), 2.0)
    r = r.apply(codec.Reading(0, Quantity.TEMPERATURE, 31.0), 2.0)
    r = r.apply(codec.Reading(0, Quantity.INPUT_VOLTAGE, 230.0), 2.0)
    r = r.apply(codec.StatusReading(0, 0x00400000), 3.0)
    assert r.power_w == pytest.approx(480.0)
    assert (r.temperature_c, r.input_voltage_v, r.last_reply_s) == (31.0, 230.0, 3.0)
    assert r.status_active == ("module_off",)
    assert r.current_limit_a(SETTINGS) == pytest.approx(0.5 / 1.21 * 62.5)
    r = r.apply(codec.ErrorReply(0, 0x43, 0x24, 0xF3), 4.0)
    assert r.error_count == 1
    assert r.last_error is not None
    assert "invalid_data" in r.last_error
    assert r.apply(codec.ReadRequest(Quantity.STATUS), 9.0) == r  # our own requests: ignored


# --- the stored fallback must be confirmed before DC may go on (issue 16) ------------------


def _ack(frame: codec.CanFrame) -> codec.Message:
    return codec.decode_frame(*_reply(codec.encode_write_ack(frame.data[3], frame.data)))


def _reply(frame: codec.CanFrame) -> tuple[int, bytes]:
    return frame.arbitration_id, frame.data


def test_hold_off_keeps_dc_off_before_every_other_rule() -> None:
    for reason in (Reason.FALLBACK_UNCONFIRMED, Reason.OVER_CURRENT):
        d = decide(command(current_a=20.0), limits(), SETTINGS, NOW, hold_off=reason)
        assert (d.dc_on, d.reason) == (False, reason)
        assert d.voltage_v <= 48.0
        assert d.current_fraction == codec.FRACTION_MIN


def test_fallback_confirmed_only_by_both_acks_with_the_value_written() -> None:
    write = FallbackWrite.sent(SETTINGS, NOW)
    voltage, current = write.frames
    assert not write.confirmed
    half = write.on_message(_ack(voltage))
    assert (half.confirmed, half.status) == (False, FallbackStatus.PENDING)
    done = half.on_message(_ack(current))
    assert done.confirmed
    assert done.alarm() is None
    # an echo of a different value is not a confirmation
    wrong = codec.encode_write_ack(0x24, bytes.fromhex("03F000244260000" + "0"))
    bad = write.on_message(codec.decode_frame(*_reply(wrong)))
    assert bad.status is FallbackStatus.REFUSED
    assert bad.alarm() is not None


def test_fallback_error_reply_is_an_alarm_with_a_hint_and_a_retry() -> None:
    write = FallbackWrite.sent(SETTINGS, NOW)
    refusal = codec.decode_frame(*_reply(codec.encode_error_reply(0x03, 0x24, 0xF3)))
    refused = write.on_message(refusal)
    assert refused.status is FallbackStatus.REFUSED
    alarm = refused.alarm()
    assert alarm is not None
    assert alarm.code == "fallback_unconfirmed"
    assert "refused the stored fallback voltage 46.8" in alarm.message
    assert "set fallback_voltage_v to 48" in alarm.message
    # a later ack of the same attempt does not undo the refusal
    assert not refused.on_message(_ack(write.frames[1])).confirmed
    assert not refused.retry_due(NOW + 4.9)
    assert refused.retry_due(NOW + 5.0)
    again = refused.retried(NOW + 5.0)
    assert (again.attempt, again.status) == (2, FallbackStatus.PENDING)
    assert again.alarm() is not None  # still shown while the retry is pending
    assert again.retry_after_s() == 10.0
    confirmed = again.on_message(_ack(again.frames[0])).on_message(_ack(again.frames[1]))
    assert confirmed.confirmed
    assert confirmed.alarm() is None


def test_fallback_unanswered_after_the_ack_timeout_and_backoff_is_capped() -> None:
    write = FallbackWrite.sent(SETTINGS, NOW)
    assert write.check(NOW + 1.9).status is FallbackStatus.PENDING
    lost = write.check(NOW + 2.0)
    assert lost.status is FallbackStatus.UNANSWERED
    assert lost.alarm() is not None
    assert "no acknowledgement of the stored fallback current and voltage" in lost.problem
    assert FallbackWrite(write.frames, NOW, attempt=30).retry_after_s() == 300.0


# --- measured over-current trip (issue 16) ---------------------------------------------------


def _m(source: str, current_a: float, at_s: float) -> Measurement:
    return Measurement(source, current_a, at_s)


def test_over_current_threshold_is_ccl_plus_the_larger_margin() -> None:
    assert over_current_threshold_a(10.0, SETTINGS) == pytest.approx(12.0)  # 2 A
    assert over_current_threshold_a(30.0, SETTINGS) == pytest.approx(33.0)  # 10 %
    assert over_current_threshold_a(0.0, SETTINGS) == pytest.approx(2.0)
    assert charge_limit_a(None) == 0.0
    assert charge_limit_a(limits(charge_allowed=False)) == 0.0
    assert charge_limit_a(limits(ccl_a=30.0)) == 30.0


@pytest.mark.parametrize("source", ["rectifier", "shunt"])
def test_over_current_trips_after_the_set_time_and_latches(source: str) -> None:
    watch = OverCurrentWatch()
    for t in (0.0, 0.5, 1.0, 1.5):
        watch = watch.update((_m(source, 45.0, NOW + t),), 30.0, NOW + t, SETTINGS)
        assert watch.trip is None
    watch = watch.update((_m(source, 45.0, NOW + 2.0),), 30.0, NOW + 2.0, SETTINGS)
    assert watch.trip is not None
    assert watch.trip.source == source
    assert "measured 45.0 A, above CCL 30.0 A" in watch.trip.alarm().message
    # latched: a current back to 0 does not clear it, only reset() does
    later = watch.update((_m(source, 0.0, NOW + 3.0),), 30.0, NOW + 3.0, SETTINGS)
    assert later.trip == watch.trip
    assert later.reset().trip is None


def test_over_current_needs_it_to_last_and_to_be_fresh() -> None:
    watch = OverCurrentWatch()
    watch = watch.update((_m("shunt", 45.0, NOW),), 30.0, NOW, SETTINGS)
    watch = watch.update((_m("shunt", 31.0, NOW + 1.0),), 30.0, NOW + 1.0, SETTINGS)  # dipped
    watch = watch.update((_m("shunt", 45.0, NOW + 2.0),), 30.0, NOW + 2.0, SETTINGS)
    assert watch.trip is None
    # a reading older than measurement_stale_s does not count
    stale = OverCurrentWatch(over_since_s=NOW - 10.0)
    assert stale.update((_m("rectifier", 45.0, NOW - 3.5),), 30.0, NOW, SETTINGS).trip is None
    # within the margin: no trip however long
    ok = OverCurrentWatch(over_since_s=None)
    for t in range(10):
        ok = ok.update((_m("rectifier", 32.9, NOW + t),), 30.0, NOW + t, SETTINGS)
    assert ok.trip is None
    assert not over_measurements((_m("x", math.nan, NOW),), 30.0, NOW, SETTINGS)


def test_readings_give_the_rectifier_measurement_with_its_arrival() -> None:
    r = Readings().apply(codec.Reading(0, Quantity.OUTPUT_CURRENT, 12.5), 7.0)
    assert r.current_measurement() == Measurement("rectifier", 12.5, 7.0)
    assert Readings().current_measurement() is None


def test_a_lowered_ccl_is_not_an_over_current_while_the_measurement_catches_up() -> None:
    # The bms drops CCL 30 -> 0 (a deep-discharge latch); the rectifier stops at once, but
    # the shunt's last reading (30 A) is still fresh for up to measurement_stale_s.
    history, watch = LimitHistory(), OverCurrentWatch()
    lagging = (Measurement("shunt", 30.0, 0.0),)
    for step in range(30):  # 3 s at 0.1 s
        now = 0.1 * step
        ccl = 30.0 if now < 0.2 else 0.0
        history = history.add(now, ccl, SETTINGS.measurement_stale_s)
        watch = watch.update(lagging, history.highest(), now, SETTINGS)
    assert watch.trip is None
    # a current that goes on after the window is a real over-current
    flowing = (Measurement("shunt", 30.0, 3.5),)
    for step in range(35, 70):
        now = 0.1 * step
        history = history.add(now, 0.0, SETTINGS.measurement_stale_s)
        flowing = (Measurement("shunt", 30.0, now),)
        watch = watch.update(flowing, history.highest(), now, SETTINGS)
    assert watch.trip is not None


def test_cells_mismatch_names_both_counts_and_the_fallback_per_cell() -> None:
    fourteen = ChargerSettings(cells_in_series=14, fallback_voltage_v=54.6)
    assert cells_mismatch(None, fourteen) == ""  # the bms has not said
    assert cells_mismatch(14, fourteen) == ""
    text = cells_mismatch(12, fourteen)
    assert "bms counts 12 cells in series" in text
    assert "cells_in_series 14" in text
    assert "54.60 V is 4.55 V a cell" in text
