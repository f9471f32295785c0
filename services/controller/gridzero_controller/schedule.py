"""Schedules and price rules: which rule is in force now, and what it lets the loop do (pure).

A window is one line of text, so that it fits a Home Assistant text entity (255 characters)
whose ``pattern`` the frontend checks as the owner types:

    <days> <HH:MM>-<HH:MM> charge <soc>% <power>W   grid-charge up to <soc> % at up to <power>
    <days> <HH:MM>-<HH:MM> hold                     no discharging (keep the battery for later)
    <days> <HH:MM>-<HH:MM> discharge_to <soc>%      discharging allowed down to <soc> %

``<days>`` is ``daily`` or a comma list of days and day ranges (``mon-fri``, ``sat,sun``,
``mon,wed,fri-sun``). An end at or before the start crosses midnight: the window belongs to
the day it starts on (``fri 22:00-06:00`` runs from Friday 22:00 to Saturday 06:00).

Times are local wall-clock times in the controller's ``time_zone`` (an IANA name, zoneinfo):
a window is active while the local clock shows a time inside it. On the spring-forward day a
window spanning the skipped hour is an hour shorter (a window wholly inside it does not
happen); on the fall-back day a window spanning the repeated hour is an hour longer. That is
how Victron ESS's scheduled charge windows and every time-of-use tariff count too: the
cheap hours are named by the wall clock.

The order of rules: the first active window (in order 1..6), else ``charge_below_price``, else
``hold_below_price``, else none (the plain loop with the reserve SoC as its discharge floor).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 6
_DAY = "(?:mon|tue|wed|thu|fri|sat|sun)"
_DAYS = rf"(?:daily|{_DAY}(?:-{_DAY})?(?:,{_DAY}(?:-{_DAY})?)*)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_NUM = r"[0-9]{1,5}(?:\.[0-9]+)?"
# The whole grammar as one regular expression: Home Assistant's text entity checks it in the
# frontend (`pattern`), the controller checks it again (and the numbers' ranges) on arrival.
WINDOW_PATTERN = (
    rf"^$|^none$|^{_DAYS} {_TIME}-{_TIME} "
    rf"(?:charge {_NUM}% {_NUM}W|hold|discharge_to {_NUM}%)$"
)
_WINDOW_RE = re.compile(
    rf"^(?P<days>{_DAYS}) (?P<start>{_TIME})-(?P<end>{_TIME}) "
    rf"(?P<action>charge|hold|discharge_to)(?: (?P<soc>{_NUM})%)?(?: (?P<power>{_NUM})W)?$"
)
# Grid charging counts as "at CVL" this close below the bms's charge voltage limit: from there
# on the charger would only hold the voltage while the current tapers, which is no use from
# the grid (the bms and the charger service still stop it at CVL and on every alarm).
CVL_MARGIN_V = 0.1


class Action(StrEnum):
    """What a window or price rule asks for."""

    NONE = "none"
    CHARGE = "charge"
    HOLD = "hold"
    DISCHARGE_TO = "discharge_to"


@dataclass(frozen=True, slots=True)
class Window:
    """One parsed window: days (0 = Monday), minutes after local midnight, the action."""

    days: frozenset[int]
    start_min: int
    end_min: int
    action: Action
    soc_pct: float = 0.0
    power_w: float = 0.0

    @property
    def crosses_midnight(self) -> bool:
        return self.end_min <= self.start_min

    def span(self) -> str:
        return f"{_hhmm(self.start_min)}-{_hhmm(self.end_min)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _days(text: str) -> frozenset[int]:
    if text == "daily":
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        a = DAY_NAMES.index(first)
        b = DAY_NAMES.index(last) if last else a
        # a range may wrap over the week's end: fri-mon
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(out)


# An unused window. Spelled out, not "": its setting is echoed as a retained message, and an
# empty retained message deletes the retained value, so the console and Home Assistant would
# never learn the setting exists.
NO_WINDOW = "none"


def parse_window(text: str, where: str = "window", max_charge_w: float = math.inf) -> Window | None:
    """One window from its text ("none" or "" is no window); ValueError naming the value and
    the limit."""
    text = " ".join(text.split())
    if text in ("", NO_WINDOW):
        return None
    m = _WINDOW_RE.match(text)
    if m is None:
        raise ValueError(
            f"{where} {text!r}: not '<days> HH:MM-HH:MM charge <soc>% <power>W', '... hold' or "
            "'... discharge_to <soc>%' (days: daily, mon-fri, sat,sun ...)"
        )
    start, end = _minutes(m["start"]), _minutes(m["end"])
    if start == end:
        raise ValueError(f"{where} {text!r}: start and end are both {m['start']} (empty window)")
    action = Action(m["action"])
    soc, power = m["soc"], m["power"]
    need_soc = action is not Action.HOLD
    need_power = action is Action.CHARGE
    if need_soc != (soc is not None) or need_power != (power is not None):
        form = {
            Action.CHARGE: "charge <soc>% <power>W",
            Action.HOLD: "hold (no SoC, no power)",
            Action.DISCHARGE_TO: "discharge_to <soc>% (no power)",
        }[action]
        raise ValueError(f"{where} {text!r}: the action is written '{form}'")
    soc_pct = float(soc) if soc is not None else 0.0
    power_w = float(power) if power is not None else 0.0
    if not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"{where} {text!r}: SoC {soc_pct:g} % outside 0..100 %")
    if action is Action.CHARGE and not 0.0 < power_w <= max_charge_w:
        raise ValueError(
            f"{where} {text!r}: power {power_w:g} W outside 0 < power <= max_charge_w "
            f"{max_charge_w:g} W"
        )
    return Window(_days(m["days"]), start, end, action, soc_pct, power_w)


def time_zone(name: str) -> ZoneInfo:
    """The zone by IANA name (``Europe/London``); ValueError naming it if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"time_zone {name!r}: not an IANA time zone name (e.g. Europe/Berlin, UTC)"
        ) from exc


def local_time(wall_s: float, zone: ZoneInfo) -> datetime:
    """The local wall-clock time at the Unix time ``wall_s``."""
    return datetime.fromtimestamp(wall_s, zone)


def window_active(window: Window, local: datetime) -> bool:
    """Whether the local clock at ``local`` is inside the window."""
    minute = local.hour * 60 + local.minute
    today = local.weekday()
    if not window.crosses_midnight:
        return today in window.days and window.start_min <= minute < window.end_min
    if today in window.days and minute >= window.start_min:
        return True
    return (today - 1) % 7 in window.days and minute < window.end_min


@dataclass(frozen=True, slots=True)
class PriceRules:
    """The price rules' settings (off unless enabled)."""

    charge_enabled: bool = False
    charge_below: float = 0.0
    charge_soc_pct: float = 80.0
    charge_w: float = 0.0
    hold_enabled: bool = False
    hold_below: float = 0.0


@dataclass(frozen=True, slots=True)
class Rule:
    """The rule in force: which one (``source``), its action and why, in words."""

    source: str  # "none", "window_1".."window_6", "charge_below_price", "hold_below_price"
    action: Action
    why: str
    soc_pct: float = 0.0
    power_w: float = 0.0


NO_RULE = Rule("none", Action.NONE, "no window or price rule active")


def decide(
    windows: tuple[Window | None, ...],
    local: datetime,
    price: float | None,
    rules: PriceRules,
) -> Rule:
    """The rule in force at ``local``; ``price``: the import price if fresh, else None."""
    for i, w in enumerate(windows, start=1):
        if w is not None and window_active(w, local):
            return Rule(
                f"window_{i}",
                w.action,
                f"window {i} {w.span()} {_describe(w)}",
                w.soc_pct,
                w.power_w,
            )
    if price is not None and rules.charge_enabled and price < rules.charge_below:
        return Rule(
            "charge_below_price",
            Action.CHARGE,
            f"price {price:g} below {rules.charge_below:g}: charge to {rules.charge_soc_pct:g} % "
            f"at up to {rules.charge_w:g} W",
            rules.charge_soc_pct,
            rules.charge_w,
        )
    if price is not None and rules.hold_enabled and price < rules.hold_below:
        return Rule(
            "hold_below_price",
            Action.HOLD,
            f"price {price:g} below {rules.hold_below:g}: no discharging",
        )
    if price is None and (rules.charge_enabled or rules.hold_enabled):
        return Rule("none", Action.NONE, "price missing or stale: price rules inactive")
    return NO_RULE


def _describe(w: Window) -> str:
    if w.action is Action.CHARGE:
        return f"charge to {w.soc_pct:g} % at up to {w.power_w:g} W"
    if w.action is Action.DISCHARGE_TO:
        return f"discharge down to {w.soc_pct:g} %"
    return "hold: no discharging"


@dataclass(frozen=True, slots=True)
class Applied:
    """What the rule lets the loop do now."""

    rule: Rule
    grid_charge_w: float  # > 0: charge from the grid at up to this AC power
    discharge_allowed: bool
    why: str


class RuleGate:
    """The state the rules need between steps (pure): the charge target latch and the
    discharge floor with hysteresis.

    A grid charge stops at its target SoC or at CVL and stays stopped (the rest of the window
    holds: no discharging of what was just bought) until the SoC has fallen by the hysteresis
    or the rule changed. Discharging stops at the floor (the reserve SoC, or a
    ``discharge_to`` window's SoC) and resumes at floor + hysteresis. An unknown SoC starts no
    grid charge and keeps the floor's last decision."""

    def __init__(self) -> None:
        self._reached_key: tuple[str, float, float] | None = None
        self.floor_blocked = False

    def apply(
        self,
        rule: Rule,
        *,
        soc_pct: float | None,
        reserve_soc_pct: float,
        hysteresis_pct: float,
        limits_ok: bool,
        pack_voltage_v: float | None,
        cvl_v: float | None,
    ) -> Applied:
        """The rule's effect for this step."""
        floor = rule.soc_pct if rule.action is Action.DISCHARGE_TO else reserve_soc_pct
        self._update_floor(soc_pct, floor, hysteresis_pct)
        floor_ok = not self.floor_blocked
        floor_note = "" if floor_ok else f"; discharging stopped at the floor {floor:g} %"
        if rule.action is Action.HOLD:
            return Applied(rule, 0.0, False, rule.why)
        if rule.action is not Action.CHARGE:
            self._reached_key = None
            return Applied(rule, 0.0, floor_ok, rule.why + floor_note)
        return self._charge(rule, soc_pct, hysteresis_pct, limits_ok, pack_voltage_v, cvl_v)

    def _charge(
        self,
        rule: Rule,
        soc_pct: float | None,
        hysteresis_pct: float,
        limits_ok: bool,
        pack_voltage_v: float | None,
        cvl_v: float | None,
    ) -> Applied:
        key = (rule.source, rule.soc_pct, rule.power_w)
        if self._reached_key is not None and self._reached_key != key:
            self._reached_key = None
        if not limits_ok:
            return Applied(
                rule, 0.0, False, rule.why + "; no grid charging: bms limits stale or alarm"
            )
        if soc_pct is None:
            return Applied(rule, 0.0, False, rule.why + "; no grid charging: SoC unknown")
        at_cvl = (
            pack_voltage_v is not None
            and cvl_v is not None
            and pack_voltage_v >= cvl_v - CVL_MARGIN_V
        )
        if soc_pct >= rule.soc_pct or at_cvl:
            self._reached_key = key
        elif self._reached_key == key and soc_pct <= rule.soc_pct - hysteresis_pct:
            self._reached_key = None
        if self._reached_key == key:
            what = "CVL" if at_cvl and soc_pct < rule.soc_pct else f"{rule.soc_pct:g} %"
            return Applied(rule, 0.0, False, rule.why + f"; reached {what}: holding")
        return Applied(rule, rule.power_w, False, rule.why)

    def _update_floor(self, soc_pct: float | None, floor: float, hysteresis_pct: float) -> None:
        if soc_pct is None:
            return
        if floor <= 0.0:
            self.floor_blocked = False
        elif soc_pct <= floor:
            self.floor_blocked = True
        elif soc_pct >= floor + hysteresis_pct:
            self.floor_blocked = False
