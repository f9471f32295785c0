"""The loaded-voltage SoC estimate against the simulator's pack model (issue 21 item 4).

The pack never rests here: current flows the whole time, as under a grid-zero loop. The
pack voltage is what the bms reports (the mean of the parallel modules' cell sums), the
truth is the pack model's own state of charge mapped onto the counter's SoC window.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero_shunt.estimate import EstimateSettings, VoltageEstimator
from gridzero_shunt.soc import CoulombCounter, SocSettings, soc_window_from_ocv
from gridzero_tools.sim.pack import Pack
from gridzero_tools.sim.params import PackParams, ThermalParams

S = SocSettings()


def bms_pack_voltage(pack: Pack, terminal_v: float, now_s: float) -> float:
    """The bms's pack voltage: the mean over the parallel modules of their cell sums."""
    modules = pack.cell_voltages_v(terminal_v, now_s)
    return sum(sum(cells) for cells in modules) / len(modules)


def true_window_pct(pack: Pack) -> float:
    lo, hi = S.window
    return 100.0 * min(1.0, max(0.0, (pack.soc_pct / 100.0 - lo) / (hi - lo)))


def loaded_run(
    counter: CoulombCounter, soc_pct: float, seconds: int, seed: int = 1
) -> tuple[Pack, list[tuple[float, float | None, str]]]:
    """Drive the pack model with a current that never rests; feed the counter each second."""
    pack = Pack(PackParams(initial_soc_pct=soc_pct), ThermalParams(), random.Random(seed), 0.0)
    rng = random.Random(seed + 100)
    seen: list[tuple[float, float | None, str]] = []
    for t in range(1, seconds + 1):
        # a household at grid zero: 40 A of discharge that wanders, or a PV surplus charge
        base = -40.0 if soc_pct >= 50 else 35.0
        current = base + 15.0 * math.sin(t / 7.0) + rng.gauss(0.0, 3.0)
        terminal = pack.voltage_v(current)
        pack.accumulate(terminal, 1.0)
        pack.update(float(t))
        volts = bms_pack_voltage(pack, pack.voltage_v(current), float(t))
        counter.update(float(t), current, pack_voltage_v=volts, pack_voltage_at_s=t - 0.3)
        reading = counter.reading()
        seen.append((float(t), reading.soc_pct, reading.source))
    return pack, seen


@pytest.mark.parametrize("soc_pct", [15.0, 35.0, 50.0, 70.0, 90.0])
def test_a_loaded_pack_is_estimated_within_a_minute(soc_pct: float) -> None:
    counter = CoulombCounter(S)
    pack, seen = loaded_run(counter, soc_pct, 60)
    first = next((t, soc) for t, soc, _ in seen if soc is not None)
    reading = counter.reading()
    truth = true_window_pct(pack)
    print(
        f"true {soc_pct:.0f} % of 3.0-4.2 V = {truth:.1f} % of the window: first estimate at"
        f" {first[0]:.0f} s, at 60 s {reading.soc_pct:.1f} % +- {reading.uncertain_pct:.1f}"
    )
    assert first[0] <= 10
    assert reading.source == "estimated"
    assert reading.soc_pct is not None
    assert reading.soc_pct == pytest.approx(truth, abs=3.0)
    assert reading.uncertain_pct is not None
    assert 5.0 <= reading.uncertain_pct <= 15.0


def test_without_the_resistance_correction_the_estimate_is_worse() -> None:
    """The I x R term matters: left out, a 40 A discharge reads several % low."""
    with_r = CoulombCounter(S)
    pack, _ = loaded_run(with_r, 50.0, 30)
    without = CoulombCounter(SocSettings(pack_resistance_ohm=0.0))
    loaded_run(without, 50.0, 30)
    truth = true_window_pct(pack)
    err_with = abs((with_r.reading().soc_pct or 0) - truth)
    err_without = abs((without.reading().soc_pct or 0) - truth)
    print(f"error with I x R {err_with:.2f} %, without {err_without:.2f} %")
    assert err_with < err_without


def test_counting_continues_from_the_estimate() -> None:
    counter = CoulombCounter(S)
    loaded_run(counter, 50.0, 20)
    at_20 = counter.remaining_ah
    assert at_20 is not None
    for t in range(21, 121):  # no pack voltage any more: counting only
        counter.update(float(t), -36.0)
    assert counter.remaining_ah == pytest.approx(at_20 - 36.0 * 100 / 3600)
    assert counter.source == "estimated"


def test_a_rest_refines_the_estimate() -> None:
    counter = CoulombCounter(SocSettings(rest_hold_s=30))
    loaded_run(counter, 50.0, 20)
    assert counter.source == "estimated"
    for t in range(21, 60):
        counter.update(float(t), 0.3, cell_min_v=3.60)
    reading = counter.reading()
    assert reading.source == "ocv"
    assert reading.soc_pct == pytest.approx(100 * soc_window_from_ocv(3.60, S), abs=0.05)
    assert reading.uncertain_pct is None


def test_a_full_charge_refines_the_estimate() -> None:
    counter = CoulombCounter(SocSettings(full_hold_s=60))
    loaded_run(counter, 50.0, 20)
    for t in range(21, 90):
        counter.update(float(t), 3.0, cell_max_v=4.09)
    assert counter.source == "full_anchor"
    assert counter.reading().soc_pct == 100.0


def test_an_estimate_is_restored_as_an_estimate() -> None:
    counter = CoulombCounter(S)
    loaded_run(counter, 50.0, 20)
    again = CoulombCounter.from_dict(counter.to_dict(), S)
    assert again.source == "estimated"
    assert again.uncertain_pct == counter.uncertain_pct


def test_a_stale_voltage_gives_no_estimate() -> None:
    counter = CoulombCounter(S)
    for t in range(1, 61):  # a voltage that arrived 2.5 s before each update: too old
        counter.update(float(t), -30.0, pack_voltage_v=44.5, pack_voltage_at_s=t - 2.5)
    assert counter.reading().soc_pct is None
    assert "arrived 2.5 s ago" in counter.estimator.last_refusal


def test_one_voltage_is_used_once() -> None:
    counter = CoulombCounter(S)
    for t in range(1, 61):  # the same pack message, arrived at 0.5 s, on every update
        counter.update(float(t), -30.0, pack_voltage_v=44.5, pack_voltage_at_s=min(t, 0.5))
    assert counter.reading().soc_pct is None


def test_a_voltage_that_stops_gives_no_new_estimate() -> None:
    est = VoltageEstimator(S.estimate())
    for t in range(1, 6):
        assert est.add(float(t), -30.0, 44.5, float(t)) == ""
    assert est.estimate(5.0) is not None
    # the bms falls silent: after the window the old samples are no estimate any more
    assert est.estimate(5.0 + S.estimate_window_s + 0.1) is None


@pytest.mark.parametrize(
    ("current", "volts", "match"),
    [
        (math.nan, 44.5, "current nan A is not a number"),
        (-30.0, math.inf, "pack voltage inf V is not a number"),
        (-30.0, 0.0, "0.000 V per cell (0 V / 12) is outside 2.5..4.35 V"),
        (-30.0, 60.0, "5.000 V per cell"),
        (-1e6, 44.5, "current -1e+06 A needs a 166.667 V per cell correction, above 0.15 V"),
        (None, 44.5, "current None A is not a number"),
    ],
)
def test_bad_inputs_are_refused_by_name(current: float | None, volts: float, match: str) -> None:
    est = VoltageEstimator(S.estimate())
    assert match in est.add(1.0, current, volts, 1.0)
    assert est.estimate(1.0) is None
    assert est.refused == 1


def test_bad_estimate_settings() -> None:
    with pytest.raises(ValueError, match=r"pack resistance 2\.0 ohm is outside 0\.\.1 ohm"):
        SocSettings(pack_resistance_ohm=2.0)
    with pytest.raises(ValueError, match=r"window_s 0\.0 s"):
        EstimateSettings(0.002, 12, (0.1, 0.9), window_s=0.0)


GOOD = st.tuples(st.floats(-100, 100), st.floats(40.0, 50.0))
HUGE = st.one_of(st.floats(min_value=1e6), st.floats(max_value=-1e6), st.integers(10**6, 10**30))
BAD = st.one_of(
    st.none(), st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(), HUGE
)
ANY_CURRENT = st.one_of(st.floats(-100, 100), BAD)
ANY_VOLTS = st.one_of(st.floats(40.0, 50.0), BAD)
BAD_PAIR = st.one_of(st.tuples(BAD, ANY_VOLTS), st.tuples(ANY_CURRENT, BAD))


@settings(max_examples=300, deadline=None)
@given(good=st.lists(GOOD, min_size=3, max_size=5), bad=st.lists(BAD_PAIR, max_size=6))
def test_fuzz_bad_inputs_change_nothing(
    good: list[tuple[float, float]], bad: list[tuple[object, object]]
) -> None:
    """NaN, infinity, None, booleans and huge values between good samples are refused by
    name and change neither the estimate nor raise."""
    clean = VoltageEstimator(S.estimate())
    mixed = VoltageEstimator(S.estimate())
    t = 0.0
    for current, volts in good:
        t += 1.0
        for b_current, b_volts in bad:  # fresh, new arrival times: only the values are bad
            t += 0.01
            reason = mixed.add(t, b_current, b_volts, t)  # type: ignore[arg-type]
            assert reason.startswith("voltage estimate: ")
        t += 0.01
        assert clean.add(t, current, volts, t) == ""
        assert mixed.add(t, current, volts, t) == ""
    assert mixed.refused == len(bad) * len(good)
    assert clean.estimate(t) == mixed.estimate(t)
    estimate = clean.estimate(t)
    assert estimate is not None
    assert 0.0 <= estimate.soc <= 1.0
    assert 0.0 <= estimate.uncertain_pct <= 100.0
