"""Schedules and price rules: windows in local time (DST days), settings refused by name,
the price topic, and the rules' effect on the controller core."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gridzero.errors import SettingsError
from gridzero.runtime.freshness import FreshValue
from gridzero.testing import FakeClock, Offline, fresh_limits, shunt_state
from gridzero_controller.core import ChargerReading, Controller, InverterReading, Observation
from gridzero_controller.dispatch import InverterUnit, Side
from gridzero_controller.law import MeterSample
from gridzero_controller.prices import Price, fresh_price, parse_price
from gridzero_controller.schedule import (
    WINDOW_PATTERN,
    Action,
    PriceRules,
    decide,
    local_time,
    parse_window,
    window_active,
)
from gridzero_controller.service import SOC_STALE_S, ControllerService, ControllerServiceSettings
from gridzero_controller.settings import ControllerSettings, update_settings

LONDON = ZoneInfo("Europe/London")
UNITS = (InverterUnit("gtn1", 900.0),)


def _active_minutes(text: str, day: datetime, zone: ZoneInfo) -> int:
    """Real minutes (60 s of Unix time each) the window is active on the local date ``day``."""
    w = parse_window(text)
    assert w is not None
    start = day.replace(tzinfo=zone).timestamp()
    times = (local_time(start + 60 * m, zone) for m in range(26 * 60))
    return sum(window_active(w, t) for t in times if t.date() == day.date())


def test_a_window_across_midnight_belongs_to_its_start_day() -> None:
    w = parse_window("fri 22:00-06:00 hold")
    assert w is not None
    fri = datetime(2025, 1, 17, 22, 30, tzinfo=LONDON)  # a Friday
    assert window_active(w, fri)
    assert window_active(w, fri + timedelta(hours=7, minutes=29))  # Saturday 05:59
    assert not window_active(w, fri + timedelta(hours=7, minutes=30))  # Saturday 06:00
    assert not window_active(w, fri - timedelta(days=1))  # Thursday 22:30


def test_day_lists_and_ranges() -> None:
    w = parse_window("mon-wed,sat 08:00-09:00 discharge_to 20%")
    assert w is not None
    assert w.days == frozenset({0, 1, 2, 5})
    wrap = parse_window("fri-mon 08:00-09:00 hold")
    assert wrap is not None
    assert wrap.days == frozenset({4, 5, 6, 0})


def test_spring_forward_day_a_window_over_the_skipped_hour_is_an_hour_shorter() -> None:
    # Europe/London 2025-03-30: 01:00 GMT becomes 02:00 BST
    spring = datetime(2025, 3, 30)
    assert _active_minutes("daily 00:30-04:30 charge 80% 2000W", spring, LONDON) == 180
    assert _active_minutes("daily 01:15-01:45 hold", spring, LONDON) == 0  # never shown
    ordinary = datetime(2025, 3, 23)
    assert _active_minutes("daily 00:30-04:30 charge 80% 2000W", ordinary, LONDON) == 240


def test_fall_back_day_a_window_over_the_repeated_hour_is_an_hour_longer() -> None:
    # Europe/London 2025-10-26: 02:00 BST becomes 01:00 GMT, 01:00..02:00 is shown twice
    autumn = datetime(2025, 10, 26)
    assert _active_minutes("daily 00:30-04:30 charge 80% 2000W", autumn, LONDON) == 300
    assert _active_minutes("daily 01:15-01:45 hold", autumn, LONDON) == 60


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("window_2", "daily 25:00-04:30 hold", "window_2"),
        ("window_1", "daily 00:30-04:30 charge 80%", "charge <soc>% <power>W"),
        ("window_3", "daily 00:30-04:30 charge 120% 2000W", "outside 0..100"),
        ("window_1", "daily 00:30-04:30 charge 80% 5000W", "max_charge_w 3000"),
        ("window_4", "daily 04:30-04:30 hold", "empty window"),
        ("window_1", "someday 00:30-04:30 hold", "window_1"),
        ("reserve_soc_pct", 101, "reserve_soc_pct"),
    ],
)
def test_malformed_settings_are_refused_by_name(name: str, value: object, says: str) -> None:
    current = ControllerSettings()
    with pytest.raises(SettingsError, match=says) as err:
        update_settings(current, {name: value})
    assert name in str(err.value)


def test_price_charge_power_is_bounded_by_max_charge_w() -> None:
    with pytest.raises(SettingsError, match="price_charge_w 4000"):
        update_settings(
            ControllerSettings(), {"price_charge_enabled": True, "price_charge_w": 4000}
        )


def test_start_up_time_zone_must_be_an_iana_name() -> None:
    with pytest.raises(ValueError, match="time_zone 'Mars/Olympus'"):
        ControllerServiceSettings(time_zone="Mars/Olympus")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"0.2315", Price(0.2315)),
        (b'{"import": 0.2, "export": 0.05, "forecast": [0.1, 0.3]}', Price(0.2, 0.05, (0.1, 0.3))),
        (
            b'{"state": 21.5, "next": [{"value_inc_vat": 19.0}, {"total": 22}]}',
            Price(21.5, None, (19.0, 22.0)),
        ),
    ],
)
def test_price_payloads(payload: bytes, expected: Price) -> None:
    assert parse_price(payload) == expected


@pytest.mark.parametrize("payload", [b"unavailable", b"", b'{"export": 1}', b"nan", b"[1, 2]"])
def test_bad_price_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="price topic"):
        parse_price(payload)


# ------------------------------------------------------------------ the rules on the core


def _obs(
    now: float, grid: float, soc: float, rule_price: float | None, s: ControllerSettings
) -> Observation:
    local = datetime(2025, 1, 15, 12, 0, tzinfo=LONDON)
    rule = decide(s.windows(), local, rule_price, s.price_rules())
    return Observation(
        now_s=now,
        meter=MeterSample(grid, now),
        limits=fresh_limits(now, cvl_v=50.0),
        pack_voltage_v=48.0,
        soc_pct=soc,
        inverters=(InverterReading(0.0, now),),
        charger=ChargerReading(48.0, 0.0, now),
        rule=rule,
    )


PRICE_RULES = {
    "price_charge_enabled": True,
    "charge_below_price": 0.10,
    "price_charge_soc_pct": 80.0,
    "price_charge_w": 2000.0,
}


def test_a_price_below_the_limit_charges_and_a_stale_price_stops_it() -> None:
    s = update_settings(ControllerSettings(min_dwell_s=1.0), PRICE_RULES)
    c = Controller(s, UNITS)
    arrived = FreshValue(Price(0.08), 0.0)
    stale_s = 900.0
    out = None
    for k in range(10):
        t = 0.5 * k
        price = fresh_price(arrived, t, stale_s)
        out = c.step(_obs(t, 300.0, 50.0, None if price is None else price.import_price, s))
    assert out is not None
    assert out.applied.rule.source == "charge_below_price"
    assert out.commands.side is Side.CHARGE
    assert out.commands.charger.on
    # the house imports 300 W, yet the battery charges from the grid at ~2000 W
    assert out.commands.charger.current_a * 48.0 / s.charger_efficiency == pytest.approx(
        2000, rel=0.05
    )
    t = stale_s + 1.0
    assert fresh_price(arrived, t, stale_s) is None
    out = c.step(_obs(t, 2300.0, 50.0, None, s))
    assert not out.commands.charger.on
    assert out.applied.rule.source == "none"
    assert "stale" in out.applied.why


def test_no_price_never_starts_grid_charging() -> None:
    s = update_settings(ControllerSettings(min_dwell_s=1.0), PRICE_RULES)
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 300.0, 50.0, None, s))
        assert not out.commands.charger.on


def test_price_charging_stops_at_its_target_soc() -> None:
    s = update_settings(ControllerSettings(min_dwell_s=1.0), PRICE_RULES)
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 300.0, 80.0, 0.05, s))
        assert not out.commands.charger.on
        assert out.commands.discharge_w == 0.0  # holding what was bought
    assert "reached 80 %" in out.applied.why


def test_grid_charging_stops_at_any_bms_alarm() -> None:
    s = update_settings(ControllerSettings(min_dwell_s=1.0), PRICE_RULES)
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 300.0, 50.0, 0.05, s))
    assert out.commands.charger.on
    obs = replace(
        _obs(5.0, 2300.0, 50.0, 0.05, s),
        limits=fresh_limits(5.0, cvl_v=50.0, alarms=["cell_over_voltage"]),
    )
    out = c.step(obs)
    assert not out.commands.charger.on
    assert "alarm" in out.applied.why


def test_grid_charging_stops_at_cvl() -> None:
    s = update_settings(ControllerSettings(min_dwell_s=1.0), PRICE_RULES)
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(replace(_obs(0.5 * k, 300.0, 60.0, 0.05, s), pack_voltage_v=49.95))
    assert not out.commands.charger.on
    assert "reached CVL" in out.applied.why


def test_hold_below_price_and_the_reserve_stop_discharging() -> None:
    s = update_settings(
        ControllerSettings(min_dwell_s=1.0),
        {"price_hold_enabled": True, "hold_below_price": 0.2, "reserve_soc_pct": 30.0},
    )
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 500.0, 50.0, 0.15, s))
        assert out.commands.discharge_w == 0.0
    assert out.applied.rule.source == "hold_below_price"
    c = Controller(s, UNITS)
    for k in range(10):  # dear: discharging, but not at the reserve
        out = c.step(_obs(0.5 * k, 500.0, 30.0, 0.3, s))
        assert out.commands.discharge_w == 0.0
    assert "floor 30 %" in out.applied.why


def test_a_discharge_to_window_lowers_the_floor() -> None:
    s = update_settings(
        ControllerSettings(min_dwell_s=1.0),
        {"reserve_soc_pct": 50.0, "window_1": "daily 11:00-13:00 discharge_to 20%"},
    )
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 500.0, 40.0, None, s))
    assert out.applied.rule.source == "window_1"
    assert out.commands.discharge_w > 0


def test_rules_act_in_mode_auto_only() -> None:
    s = update_settings(
        ControllerSettings(min_dwell_s=1.0), {**PRICE_RULES, "mode": "discharge_only"}
    )
    c = Controller(s, UNITS)
    for k in range(10):
        out = c.step(_obs(0.5 * k, 300.0, 50.0, 0.05, s))
        assert not out.commands.charger.on


def test_decide_order_windows_first() -> None:
    w = parse_window("daily 11:00-13:00 hold")
    local = datetime(2025, 1, 15, 12, 0, tzinfo=LONDON)
    rules = PriceRules(charge_enabled=True, charge_below=1.0, charge_w=1000)
    assert decide((w,), local, 0.5, rules).action is Action.HOLD
    assert decide((None,), local, 0.5, rules).action is Action.CHARGE


def test_the_service_takes_a_live_price_and_refuses_a_retained_one(tmp_path) -> None:
    settings = ControllerServiceSettings(price_input=True, data_dir=str(tmp_path))
    h = Offline(ControllerService, settings, FakeClock()).start()
    topic = h.ctx.topics.price
    h.deliver(topic, "0.07", retain=True)
    assert h.service.price is None
    h.deliver(topic, '{"import": 0.07}')
    assert h.service.price is not None
    assert h.service.price.value.import_price == 0.07
    assert h.service.price.at_s == h.clock.now_s


def test_an_unused_window_is_none_never_empty() -> None:
    """Each setting is echoed as a retained message; an empty retained message deletes the
    retained value, so an empty window would be invisible to the console and Home Assistant."""
    s = ControllerSettings()
    assert [getattr(s, f"window_{i}") for i in range(1, 7)] == ["none"] * 6
    assert s.windows() == (None,) * 6
    cleared = update_settings(
        update_settings(s, {"window_2": "daily 00:30-04:30 hold"}), {"window_2": ""}
    )
    assert cleared.window_2 == "none"
    assert cleared.windows()[1] is None
    assert re.fullmatch(WINDOW_PATTERN, "none")
    assert re.fullmatch(WINDOW_PATTERN, "")


def _shunt_state(soc_pct: float) -> str:
    return shunt_state(ts=1.7e9, soc_pct=soc_pct).model_dump_json()


def test_a_silent_shunt_leaves_the_soc_unknown_for_the_rules(tmp_path) -> None:
    """A grid charge runs toward its target SoC and discharging stops at the reserve by the
    shunt's SoC: its last value must not stand in once the shunt has gone quiet."""
    settings = ControllerServiceSettings(data_dir=str(tmp_path))
    h = Offline(ControllerService, settings, FakeClock()).start()
    h.deliver(h.ctx.topics.shunt_state, _shunt_state(42.0))
    assert h.service.soc_now(h.clock.now_s) == 42.0
    h.clock.advance(SOC_STALE_S - 1.0)
    assert h.service.soc_now(h.clock.now_s) == 42.0
    h.clock.advance(2.0)
    assert h.service.soc_now(h.clock.now_s) is None
    h.deliver(h.ctx.topics.shunt_state, _shunt_state(43.0))
    assert h.service.soc_now(h.clock.now_s) == 43.0
