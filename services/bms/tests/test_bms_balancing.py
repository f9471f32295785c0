"""Balancing: the per-cell decision and the measure/bleed cycle, with explicit time."""

from __future__ import annotations

from bms_helpers import feed, feed_all, small_pack

from gridzero_bms.balancing import (
    Balancer,
    BalanceSettings,
    ModuleCommand,
    Phase,
    decide,
)
from gridzero_bms.pack import ModuleKey, Pack

ALL = frozenset(range(1, 9))


def _snap_with(overrides: dict[tuple[int, int, int], int], mv: int = 3950) -> Pack:
    pack = small_pack()
    feed_all(pack, 0.0, mv, overrides)
    return pack


def test_cells_above_lowest_plus_hysteresis_and_start_voltage_bleed() -> None:
    pack = _snap_with({(0, 1, 1): 3930, (0, 1, 5): 3980, (0, 2, 12): 3975})
    # lowest 3.930 V + 0.040 V = 3.970 V: only 3.980 and 3.975 qualify.
    result = decide(pack.snapshot(0.0), BalanceSettings(), ALL)
    assert result == {ModuleKey(0, 1): frozenset({5}), ModuleKey(0, 2): frozenset({12})}


def test_nothing_bleeds_below_the_start_voltage() -> None:
    pack = _snap_with({(0, 1, 1): 3700, (0, 1, 5): 3850}, mv=3800)
    assert decide(pack.snapshot(0.0), BalanceSettings(), ALL) == {}


def test_force_uses_the_small_hysteresis_and_the_floor() -> None:
    pack = _snap_with({(0, 1, 1): 3700, (0, 1, 5): 3720, (0, 2, 3): 3590}, mv=3705)
    result = decide(pack.snapshot(0.0), BalanceSettings(force=True), ALL)
    # lowest 3.590 + 0.005: everything above 3.595 V except the floor of 3.6 V applies
    assert result[ModuleKey(0, 1)] == frozenset(range(1, 13))
    assert ModuleKey(0, 2) in result
    assert 3 not in result[ModuleKey(0, 2)]


def test_disabled_incomplete_or_unbalanceable_gives_nothing() -> None:
    pack = _snap_with({(0, 1, 5): 4000})
    snap = pack.snapshot(0.0)
    assert decide(snap, BalanceSettings(enabled=False), ALL) == {}
    assert decide(snap, BalanceSettings(), frozenset({2})) == {}
    incomplete = small_pack()
    feed(incomplete, 0, 1, [3950] * 11 + [4000], 0.0)
    assert decide(incomplete.snapshot(0.0), BalanceSettings(), ALL) == {}


def test_cycle_measure_bleed_measure() -> None:
    settings = BalanceSettings(cycle_s=30.0, measure_s=5.0, settle_s=1.0, resend_s=2.5)
    balancer = Balancer(settings, ALL)
    pack = small_pack()
    by_time = {}
    trusted_module1 = {}
    t = 0.0
    while t <= 40.0:
        for key in (ModuleKey(0, 1), ModuleKey(0, 2)):
            cells = [3950] * 12
            if key.module == 1:
                cells[4] = 4000
            trusted = balancer.voltages_trusted(key, t)
            if key.module == 1:
                trusted_module1[t] = trusted
            feed(pack, key.bus, key.module, cells, t, trusted=trusted)
        by_time[t] = balancer.step(pack.snapshot(t), t)
        t = round(t + 0.5, 3)
    # t=0: cells above threshold -> MEASURE with all-off commands to every module.
    assert by_time[0.0].phase is Phase.MEASURE
    assert by_time[0.0].commands == (
        ModuleCommand(0, 1, frozenset()),
        ModuleCommand(0, 2, frozenset()),
    )
    # t=5: measured -> BLEED cell 5 of module 1.
    assert by_time[5.0].phase is Phase.BLEED
    assert ModuleCommand(0, 1, frozenset({5})) in by_time[5.0].commands
    assert by_time[5.0].bleeding == {ModuleKey(0, 1): frozenset({5})}
    assert by_time[6.0].commands == ()
    assert by_time[7.5].commands != ()  # repeated every 2.5 s
    assert trusted_module1[4.5]
    assert not trusted_module1[6.0]  # bleeding: frames untrusted
    assert not trusted_module1[30.5]  # settling after bleed off
    assert trusted_module1[31.0]
    # t=30: back to MEASURE with all-off.
    assert by_time[30.0].phase is Phase.MEASURE
    assert all(c.cells == frozenset() for c in by_time[30.0].commands)
    assert by_time[35.0].phase is Phase.BLEED


def test_voltages_untrusted_while_bleeding_and_settling() -> None:
    settings = BalanceSettings(settle_s=1.0)
    balancer = Balancer(settings, ALL)
    pack = small_pack()
    key = ModuleKey(0, 1)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        feed(pack, 0, 1, [3950] * 4 + [4000] + [3950] * 7, t)
        feed(pack, 0, 2, [3950] * 12, t)
        balancer.step(pack.snapshot(t), t)
    assert balancer.phase is Phase.BLEED
    assert not balancer.voltages_trusted(key, 5.5)
    assert balancer.voltages_trusted(ModuleKey(0, 2), 5.5)
    assert balancer.step(pack.snapshot(6.0), 6.0, allowed=False).phase is Phase.IDLE
    assert not balancer.voltages_trusted(key, 6.5)
    assert balancer.voltages_trusted(key, 7.0)


def test_not_allowed_switches_everything_off_once() -> None:
    balancer = Balancer(BalanceSettings(), ALL)
    pack = _snap_with({(0, 1, 5): 4000})
    first = balancer.step(pack.snapshot(0.0), 0.0)
    assert first.phase is Phase.MEASURE
    stop = balancer.step(pack.snapshot(0.5), 0.5, allowed=False)
    assert stop.phase is Phase.IDLE
    assert stop.commands
    assert all(c.cells == frozenset() for c in stop.commands)
    again = balancer.step(pack.snapshot(1.0), 1.0, allowed=False)
    assert again.commands == ()
    assert again.reason.startswith("not allowed")
