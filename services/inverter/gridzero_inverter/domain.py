"""What each SoyoSource line is sent, and why: the inverter's own safety clamp.

Pure: no I/O, no clock; every function takes ``now_s`` (monotonic seconds).

A *line* is one RS485 port and the units on it. The limiter frame carries no unit
address that the inverters are known to honour: every unit on a line hears the same
demand and feeds up to its own rating (the OEM clamp and ESPHome's ``soyosource``
component send one frame to all of them, divided by their number). So a demand is
per line: the controller asks a line for AC watts, and the line's frame is the demand
at which its units together feed that.

Every demand is clamped, line by line, to its units' max power, the pack's
discharge limit (DCL x pack voltage x a conservative efficiency: the demand is AC
watts, the limit is DC amps; shared by all units: their sum never exceeds it), the
bms's discharge_allowed flag and the unit's DC voltage window. A unit that reports
a DC current above DCL (plus a margin) cuts every unit to 0 W for a while. Stale bms
limits, a bms alarm, a stale controller command or a disabled unit put the unit in
its safe state: a few explicit 0 W frames, then silence (the inverter stops feeding
when frames stop, KlausLi/Esp-Soyosource-Controller README, syssi).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gridzero.contract import GTN_MAX_POWER_W, MAX_LINES, MAX_UNITS_PER_LINE, BmsLimits
from gridzero.runtime.bounds import Bound, bound_problems
from gridzero.runtime.freshness import FreshValue, LimitHistory, is_fresh


class Reason(StrEnum):
    """Why a unit's demand is what it is."""

    CONTROLLER = "controller"  # the controller's command, within every limit
    MAX_POWER = "max_power"  # the unit's own max power setting
    DCL = "dcl"  # the battery's discharge current limit x pack voltage x efficiency (shared)
    DC_CURRENT = "dc_current"  # a unit reported a DC current above DCL: all units cut for a while
    DC_WINDOW = "dc_window"  # pack voltage outside the unit's DC window
    NOT_ALLOWED = "not_allowed"  # the bms does not allow discharge
    ALARM = "alarm"  # a bms alarm is active
    STALE_BMS = "stale_bms"  # no bms limits, or too old, or unusable
    STALE_COMMAND = "stale_command"  # no controller command, or too old
    DISABLED = "disabled"  # the unit is switched off in its settings


SAFE_STATE_REASONS = frozenset(
    {Reason.DISABLED, Reason.ALARM, Reason.STALE_BMS, Reason.STALE_COMMAND}
)
"""Reasons that send a few 0 W frames and then go silent."""


class LinkState(StrEnum):
    """How the serial link to a unit looks."""

    OK = "ok"  # status replies seen recently
    NO_STATUS = "no_status"  # frames go out, the unit does not answer (many never do)
    PORT_ERROR = "port_error"  # the port cannot be opened or written


MAX_UNIT_POWER_W = GTN_MAX_POWER_W
"""The largest GTN limiter model (GTN-2000LIM48W) feeds 2000 W; no unit setting goes above."""

MAX_PARALLEL = MAX_UNITS_PER_LINE
"""Units on one line: ESPHome's ``power_demand_divider`` range 1..6."""

UNIT_BOUNDS: dict[str, Bound] = {
    "max_power_w": Bound(0, MAX_UNIT_POWER_W, "W"),
    "dc_min_v": Bound(0, 200, "V"),
    "dc_max_v": Bound(0, 200, "V"),
    "address": Bound(0, 0xFF),
    "parallel": Bound(1, MAX_PARALLEL),
}
"""The ranges of a unit's settings, declared once (the service's `UnitConfig` uses them)."""


@dataclass(frozen=True, slots=True)
class UnitSettings:
    """One inverter (or ``parallel`` identical inverters), on the line ``line`` (its port).

    ``line`` empty: the unit's own id. Units on one port must name the same line.
    """

    unit_id: str
    port_url: str
    dc_min_v: float
    dc_max_v: float
    max_power_w: int = 900  # syssi's max_power_demand default (syssi README)
    address: int = 0x24  # syssi soyosource_modbus.cpp
    enabled: bool = True
    parallel: int = 1  # identical inverters that hear the same frames
    query_status: bool = True
    line: str = ""
    # What the unit holds itself to whatever frame it hears: its rating, or the output power
    # limit set on its own display (the start-up max_power_w). None: max_power_w. A runtime
    # max_power_w below it is the service's own limit, which only the frame can enforce.
    own_limit_w: int | None = None

    @property
    def line_id(self) -> str:
        return self.line or self.unit_id

    @property
    def hardware_limit_w(self) -> int:
        """The most the unit feeds at any frame (it ignores the service's runtime cap)."""
        return self.max_power_w if self.own_limit_w is None else self.own_limit_w

    @property
    def frame_limit_w(self) -> int | None:
        """The highest frame this unit may hear: its runtime cap, if below its own limit."""
        return self.max_power_w if self.max_power_w < self.hardware_limit_w else None

    def problems(self) -> list[str]:
        """Every invalid field, named with its value and the allowed range."""
        where = f"inverter unit {self.unit_id!r}"
        out: list[str] = []
        for label, text in (("id", self.unit_id), ("line", self.line_id)):
            if not text or not all(c.isalnum() or c in "_-" for c in text):
                out.append(f"{where}: {label} {text!r} must be letters, digits, '_' or '-'")
        if not self.port_url.strip():
            out.append(f"{where}: port_url is empty")
        out += bound_problems(self, UNIT_BOUNDS, where)
        if self.dc_min_v >= self.dc_max_v:
            out.append(f"{where}: dc_min_v {self.dc_min_v} must be below dc_max_v {self.dc_max_v}")
        return out + self._own_limit_problems(where)

    def _own_limit_problems(self, where: str) -> list[str]:
        if self.own_limit_w is None:
            return []
        problem = UNIT_BOUNDS["max_power_w"].problem("own_limit_w", self.own_limit_w)
        if problem:
            return [f"{where}: {problem}"]
        if self.max_power_w > self.own_limit_w:
            return [
                f"{where} (line {self.line_id!r}): max_power_w {self.max_power_w} W is above its "
                f"start-up max_power_w {self.own_limit_w} W (a runtime value may only lower it)"
            ]
        return []


@dataclass(frozen=True, slots=True)
class Line:
    """One RS485 port and the units on it: they all hear the same demand frame.

    Each unit feeds ``min(frame, its hardware limit)``, so a line of a 1000 W and a 600 W
    unit feeds 1200 W at a 600 W frame and 1600 W at 1000 W. A unit's runtime max power
    below its hardware limit is unknown to the unit: the frame of the whole line is held
    at or below it (every unit on the line then feeds at most that frame).
    """

    line_id: str
    units: tuple[UnitSettings, ...]

    @property
    def port_url(self) -> str:
        return self.units[0].port_url

    @property
    def address(self) -> int:
        return self.units[0].address

    @property
    def count(self) -> int:
        """Inverters that hear the frame (each may feed the whole frame)."""
        return sum(u.parallel for u in self.units)

    @property
    def enabled(self) -> bool:
        """A unit of a shared line cannot be stopped alone: one off stops the line."""
        return all(u.enabled for u in self.units)

    @property
    def max_frame_w(self) -> int:
        """The highest frame sent: no unit's runtime cap is exceeded (each feeds the frame
        up to its hardware limit), and above the largest hardware limit a frame feeds
        nothing more."""
        caps = [u.frame_limit_w for u in self.units if u.frame_limit_w is not None]
        return min([max(u.hardware_limit_w for u in self.units), *caps])

    @property
    def dc_min_v(self) -> float:
        return max(u.dc_min_v for u in self.units)

    @property
    def dc_max_v(self) -> float:
        return min(u.dc_max_v for u in self.units)

    @property
    def query_status(self) -> bool:
        """Only a line with one inverter is asked: several would answer at once."""
        return self.count == 1 and self.units[0].query_status

    def output_w(self, frame_w: float) -> float:
        """What the units feed together at this frame (each up to its hardware limit)."""
        return sum(min(frame_w, u.hardware_limit_w) * u.parallel for u in self.units)

    def unit_max_w(self, unit: UnitSettings) -> int:
        """The most ``unit`` feeds now: its hardware limit or the line's highest frame."""
        return min(unit.hardware_limit_w, self.max_frame_w)

    def capacity_w(self) -> int:
        return sum(self.unit_max_w(u) * u.parallel for u in self.units)

    def frame_for(self, total_w: float) -> int:
        """The largest whole-watt frame, up to ``max_frame_w``, at which the line feeds at
        most ``total_w``."""
        total_w = max(0.0, min(total_w, self.capacity_w()))
        saturated_w = 0.0  # output of the units already at their hardware limit
        hearing = self.count  # units still below their hardware limit
        for unit in sorted(self.units, key=lambda u: u.hardware_limit_w):
            if total_w <= saturated_w + unit.hardware_limit_w * hearing:
                # output grows with the frame: capping the frame keeps it within total_w
                frame = math.floor((total_w - saturated_w) / hearing + 1e-9)
                return min(frame, self.max_frame_w)
            saturated_w += unit.hardware_limit_w * unit.parallel
            hearing -= unit.parallel
        return self.max_frame_w


def lines_of(units: Sequence[UnitSettings]) -> tuple[Line, ...]:
    """Units grouped by line, in the order each line first appears."""
    grouped: dict[str, list[UnitSettings]] = {}
    for unit in units:
        grouped.setdefault(unit.line_id, []).append(unit)
    return tuple(Line(line_id, tuple(members)) for line_id, members in grouped.items())


def unit_set_problems(units: Sequence[UnitSettings]) -> list[str]:
    """Problems of each unit and of the set: duplicate ids, and lines that are not one port."""
    out = [p for unit in units for p in unit.problems()]
    if not units:
        out.append("inverter: no units configured")
    ids = [u.unit_id for u in units]
    out += [
        f"inverter unit {uid!r}: id used twice"
        for uid in sorted({i for i in ids if ids.count(i) > 1})
    ]
    lines = lines_of(units)
    if len(lines) > MAX_LINES:
        out.append(f"inverter: {len(lines)} lines, more than {MAX_LINES}")
    line_of_port: dict[str, str] = {}
    for line in lines:
        out += _line_problems(line)
        other = line_of_port.setdefault(line.port_url, line.line_id)
        if other != line.line_id:
            out.append(
                f"inverter lines {other!r} and {line.line_id!r} share port {line.port_url}: every "
                "unit on a port hears the same demand frame (the frame has no address the units "
                f"honour); give the units the same `line:` (e.g. {other!r}), or each line its "
                "own adapter"
            )
    return out


def _line_problems(line: Line) -> list[str]:
    where = f"inverter line {line.line_id!r}"
    out: list[str] = []
    ids = [u.unit_id for u in line.units]
    if len({u.port_url for u in line.units}) > 1:
        ports = ", ".join(f"{u.unit_id}: {u.port_url}" for u in line.units)
        out.append(f"{where}: its units must share one port ({ports})")
    if len({u.address for u in line.units}) > 1:
        out.append(f"{where}: its units {ids} must share one address byte (one frame for all)")
    if line.count > MAX_PARALLEL:
        out.append(f"{where}: {line.count} inverters, more than {MAX_PARALLEL} on one line")
    if line.count > 1 and any(u.query_status for u in line.units):
        out.append(
            f"{where}: {line.count} inverters hear one status query and would answer at once; "
            "set query_status: false on its units"
        )
    if line.dc_min_v >= line.dc_max_v:
        out.append(
            f"{where}: its units' DC windows do not overlap ({line.dc_min_v:g}..{line.dc_max_v:g} V)"
        )
    return out


@dataclass(frozen=True, slots=True)
class Timing:
    """Timeouts and rates (defaults: KlausLi/Esp-Soyosource-Controller README, syssi issue #16)."""

    bms_stale_s: float = 3.0  # the bms publishes its limits about every 0.5 s
    command_stale_s: float = 3.0
    zero_frames: int = (
        3  # explicit 0 W frames before silence (KlausLi/Esp-Soyosource-Controller README)
    )
    send_period_s: float = 1.0  # KlausLi/Esp-Soyosource-Controller README, syssi: 1 s is inside every project's working range
    min_gap_s: float = 0.25  # a changed demand goes out at once, but never faster than this
    status_timeout_s: float = 10.0  # link "ok" if a status reply came within this

    def problems(self) -> list[str]:
        out: list[str] = []
        for name in ("bms_stale_s", "command_stale_s", "send_period_s", "status_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 60):
                out.append(f"inverter timing: {name} {value} is outside (0, 60] s")
        # 0 would send no 0 W frame at all: the unit keeps feeding its last demand until its
        # own frame timeout, and a stop would not be a stop
        if not 1 <= self.zero_frames <= 100:
            out.append(f"inverter timing: zero_frames {self.zero_frames} is outside 1..100")
        if not (math.isfinite(self.min_gap_s) and 0 <= self.min_gap_s <= self.send_period_s):
            out.append(
                f"inverter timing: min_gap_s {self.min_gap_s} is outside 0..send_period_s "
                f"({self.send_period_s})"
            )
        return out


MAX_EFFICIENCY = 0.92  # the SoyoSource GTN's best AC/DC efficiency (87-92 %, see Clamp)


@dataclass(frozen=True, slots=True)
class Clamp:
    """How the bms's discharge current limit (DC amps) bounds the AC demand (start-up only).

    The demand is AC watts; the pack delivers AC / efficiency. At 87-92 % a demand of
    DCL x V draws 10.9-11.5 A against a DCL of 10 A, so the budget is DCL x V x
    ``efficiency``, with an efficiency at or below the worst the unit reaches (0.85: the
    SoyoSource's own display estimates its output at V x I x 0.87, syssi soyosource_display.cpp). A unit
    that reports its DC current is also checked against DCL directly.
    """

    efficiency: float = 0.85
    dcl_margin_pct: float = 10.0  # reported DC current above DCL x (1 + this) + 0.2 A cuts
    dc_trip_hold_s: float = 10.0  # how long every unit stays at 0 W after such a report
    # A report is judged against the highest DCL in force during this window: after the DCL
    # falls, the units take a while to follow the lower frame (a SoyoSource needs about 6 s
    # from 900 W to 0 W), and a report in between is not a unit disobeying its frame
    dc_trip_grace_s: float = 8.0

    def problems(self) -> list[str]:
        out: list[str] = []
        # above the units' best efficiency (about 92 %) the clamp lets them draw more than DCL
        # at every load; at 0.92 against a real 0.87 the draw is DCL x 1.06, inside the trip
        if not (math.isfinite(self.efficiency) and 0.5 <= self.efficiency <= MAX_EFFICIENCY):
            out.append(
                f"inverter clamp: efficiency {self.efficiency} is outside 0.5..{MAX_EFFICIENCY}"
            )
        if not (math.isfinite(self.dcl_margin_pct) and 0 <= self.dcl_margin_pct <= 50):
            out.append(f"inverter clamp: dcl_margin_pct {self.dcl_margin_pct} is outside 0..50")
        if not (math.isfinite(self.dc_trip_hold_s) and 0 < self.dc_trip_hold_s <= 600):
            out.append(f"inverter clamp: dc_trip_hold_s {self.dc_trip_hold_s} is outside (0, 600]")
        if not (math.isfinite(self.dc_trip_grace_s) and 0 <= self.dc_trip_grace_s <= 30):
            out.append(f"inverter clamp: dc_trip_grace_s {self.dc_trip_grace_s} is outside 0..30 s")
        return out

    def dc_trip_a(self, dcl_a: float) -> float:
        """The reported DC current (all units together) above which every unit is cut."""
        # 0.2 A: two steps of the reply's 0.1 A resolution
        return dcl_a * (1.0 + self.dcl_margin_pct / 100.0) + 0.2


def usable(limits: BmsLimits) -> bool:
    """Finite, non-negative DCL and pack voltage (the contract checks this too; a second
    look costs nothing here)."""
    return (
        math.isfinite(limits.dcl_a)
        and math.isfinite(limits.pack_voltage_v)
        and limits.dcl_a >= 0
        and limits.pack_voltage_v >= 0
    )


def budget_w(limits: BmsLimits, efficiency: float) -> int:
    """AC watts all units together may feed: DCL x pack voltage x efficiency, rounded down."""
    return math.floor(limits.discharge_limit_a * limits.pack_voltage_v * efficiency)


@dataclass(frozen=True, slots=True)
class Command:
    """The controller's latest power command for one unit."""

    power_w: float
    received_s: float


def parse_power_command(value: object) -> float:
    """A command's watts, or ValueError naming what is wrong.

    Above-cap values are accepted here and clamped later; negative, NaN,
    infinite and non-numbers are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"power command {value!r} is not a number")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"power command {value!r} is not a finite number")
    if number < 0:
        raise ValueError(f"power command {value!r} W is negative; the inverter only discharges")
    return number


@dataclass(frozen=True, slots=True)
class LineDecision:
    """What one line gets now: ``demand_w`` (frame watts), its cap (frame watts), and why.

    ``requested_w``: the controller's command, AC watts for the whole line.
    """

    line_id: str
    demand_w: int
    cap_w: int
    reason: Reason
    requested_w: float | None

    @property
    def safe_state(self) -> bool:
        """True when the line is sent a few 0 W frames and then nothing."""
        return self.reason in SAFE_STATE_REASONS


def _gate(
    line: Line,
    command: Command | None,
    fresh_limits: FreshValue[BmsLimits] | None,
    timing: Timing,
    now_s: float,
    tripped: bool,
) -> Reason | None:
    """The reason a line gets 0 W whatever it is commanded, or None (first that applies)."""
    limits = None if fresh_limits is None else fresh_limits.value
    bms_ok = (
        fresh_limits is not None
        and limits is not None
        and usable(limits)
        and fresh_limits.fresh(now_s, timing.bms_stale_s)
    )
    checks = (
        (not line.enabled, Reason.DISABLED),
        (not bms_ok, Reason.STALE_BMS),
        (limits is not None and limits.alarm, Reason.ALARM),
        (
            command is None or not is_fresh(command.received_s, now_s, timing.command_stale_s),
            Reason.STALE_COMMAND,
        ),
        (limits is not None and not limits.discharge_allowed, Reason.NOT_ALLOWED),
        (tripped, Reason.DC_CURRENT),
        (
            limits is not None and not line.dc_min_v <= limits.pack_voltage_v <= line.dc_max_v,
            Reason.DC_WINDOW,
        ),
    )
    return next((reason for failed, reason in checks if failed), None)


def decide(
    lines: Sequence[Line],
    commands: Mapping[str, Command],
    limits: FreshValue[BmsLimits] | None,
    timing: Timing,
    now_s: float,
    *,
    clamp: Clamp | None = None,
    tripped: bool = False,
) -> dict[str, LineDecision]:
    """Every line's frame demand, cap and reason.

    A command (AC watts for the line) becomes the frame at which the line's units feed
    at most that, capped at ``Line.max_frame_w`` (no unit's runtime max power exceeded).
    Lines that may feed share the bms budget DCL x V x efficiency, counted as frame x the
    number of units on the line (each unit may feed the whole frame: a unit's own lower
    hardware limit is its own doing, not the frame's, so the budget does not rely on it).
    If the lines' frames exceed the budget, each is scaled down in proportion (rounded
    down, so the sum stays within it). ``tripped``: a unit reported a DC current above DCL; every line gets 0 W.
    """
    clamp = Clamp() if clamp is None else clamp
    decisions: dict[str, LineDecision] = {}
    wanted: dict[str, int] = {}  # frame watts after max power, before the shared budget
    by_id = {line.line_id: line for line in lines}
    for line in lines:
        command = commands.get(line.line_id)
        requested = None if command is None else command.power_w
        gate = _gate(line, command, limits, timing, now_s, tripped)
        if gate is not None:
            decisions[line.line_id] = LineDecision(line.line_id, 0, 0, gate, requested)
        else:
            assert command is not None
            wanted[line.line_id] = line.frame_for(command.power_w)
    if not wanted:
        return decisions
    assert limits is not None
    budget = max(0, budget_w(limits.value, clamp.efficiency))
    total_w = sum(w * by_id[lid].count for lid, w in wanted.items())
    granted = dict(wanted)
    if total_w > budget:
        granted = {lid: math.floor(w * budget / total_w) for lid, w in wanted.items()}
    used_w = sum(w * by_id[lid].count for lid, w in granted.items())
    for lid, demand_w in granted.items():
        line = by_id[lid]
        others_w = used_w - demand_w * line.count
        cap_w = min(line.max_frame_w, (budget - others_w) // line.count)
        requested = commands[lid].power_w
        if demand_w < wanted[lid]:
            reason = Reason.DCL
        elif math.floor(requested) > line.capacity_w():
            reason = Reason.MAX_POWER
        else:
            reason = Reason.CONTROLLER
        decisions[lid] = LineDecision(lid, demand_w, cap_w, reason, requested)
    return {line.line_id: decisions[line.line_id] for line in lines}


@dataclass(slots=True)
class SendSchedule:
    """When a unit's next frame is due; counts the 0 W frames of a safe state."""

    last_sent_s: float | None = None
    last_sent_w: int | None = None
    last_change_s: float | None = None  # when a frame last carried a new value
    zeros_in_safe_state: int = 0
    in_safe_state: bool = False

    def due(self, decision: LineDecision, timing: Timing, now_s: float) -> int | None:
        """The watts to send now, or None (not due yet, or silent in the safe state)."""
        if decision.safe_state:
            if not self.in_safe_state:
                self.in_safe_state = True
                self.zeros_in_safe_state = 0
            if self.zeros_in_safe_state >= timing.zero_frames:
                return None
        else:
            self.in_safe_state = False
        if self.last_sent_s is None or self.last_sent_w is None:
            return decision.demand_w
        since_s = now_s - self.last_sent_s
        if since_s >= timing.send_period_s:
            return decision.demand_w
        since_change_s = now_s - (
            self.last_change_s if self.last_change_s is not None else self.last_sent_s
        )
        # min_gap spaces changes only: a periodic repeat just before must not delay a new value
        if decision.demand_w != self.last_sent_w and since_change_s >= timing.min_gap_s:
            # a new demand is never held back for the period: the controller's own
            # model of the plant (services/controller/README.md) assumes the frame leaves at once
            return decision.demand_w
        return None

    def sent(self, power_w: int, now_s: float) -> None:
        """Record a frame that went out (call only after a successful write)."""
        if power_w != self.last_sent_w:
            self.last_change_s = now_s
        self.last_sent_s = now_s
        self.last_sent_w = power_w
        if self.in_safe_state:
            self.zeros_in_safe_state += 1

    def silent(self, timing: Timing) -> bool:
        """True once the safe state's 0 W frames are out and nothing more is sent."""
        return self.in_safe_state and self.zeros_in_safe_state >= timing.zero_frames


@dataclass(slots=True)
class LinkTracker:
    """Link state of one line from status replies and port results."""

    last_status_s: float | None = None
    port_error: str | None = None

    def status_received(self, now_s: float) -> None:
        self.last_status_s = now_s

    def port_failed(self, message: str) -> None:
        self.port_error = message

    def port_ok(self) -> None:
        self.port_error = None

    def state(self, timing: Timing, now_s: float) -> LinkState:
        if self.port_error is not None:
            return LinkState.PORT_ERROR
        if self.last_status_s is not None and now_s - self.last_status_s <= timing.status_timeout_s:
            return LinkState.OK
        return LinkState.NO_STATUS


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A demand frame to write now."""

    line_id: str
    port_url: str
    address: int
    power_w: int


@dataclass(slots=True)
class Dispatcher:
    """Holds the latest commands (per line) and bms limits; says which frames go out when."""

    units: tuple[UnitSettings, ...]
    timing: Timing = field(default_factory=Timing)
    clamp: Clamp = field(default_factory=Clamp)
    limits: FreshValue[BmsLimits] | None = None
    commands: dict[str, Command] = field(default_factory=dict)  # by line
    schedules: dict[str, SendSchedule] = field(default_factory=dict)  # by line
    links: dict[str, LinkTracker] = field(default_factory=dict)  # by line
    dc_currents: dict[str, tuple[float, float]] = field(default_factory=dict)  # A, received
    dcl_history: LimitHistory = field(default_factory=LimitHistory)  # for the DC trip
    tripped_until_s: float | None = None
    trip_reason: str = ""

    def __post_init__(self) -> None:
        problems = unit_set_problems(self.units) + self.timing.problems() + self.clamp.problems()
        if problems:
            raise ValueError("; ".join(problems))
        for line in self.lines:
            self.schedules.setdefault(line.line_id, SendSchedule())
            self.links.setdefault(line.line_id, LinkTracker())

    @property
    def lines(self) -> tuple[Line, ...]:
        return lines_of(self.units)

    def unit(self, unit_id: str) -> UnitSettings:
        for unit in self.units:
            if unit.unit_id == unit_id:
                return unit
        known = ", ".join(u.unit_id for u in self.units)
        raise KeyError(f"inverter unit {unit_id!r} is not configured (units: {known})")

    def line(self, line_id: str) -> Line:
        for line in self.lines:
            if line.line_id == line_id:
                return line
        known = ", ".join(line.line_id for line in self.lines)
        raise KeyError(f"inverter line {line_id!r} is not configured (lines: {known})")

    def set_command(self, line_id: str, value: object, now_s: float) -> float:
        """Store a line's command; ValueError/KeyError with the reason if refused (unchanged)."""
        self.line(line_id)
        power_w = parse_power_command(value)
        self.commands[line_id] = Command(power_w, now_s)
        return power_w

    def set_limits(self, limits: FreshValue[BmsLimits]) -> None:
        self.limits = limits
        if usable(limits.value):
            self.dcl_history = self.dcl_history.add(
                limits.at_s, limits.value.dcl_a, self.clamp.dc_trip_grace_s
            )

    def report_dc_current(self, line_id: str, current_a: float, now_s: float) -> str:
        """A line's own report of its DC current; trips every line if the total exceeds DCL.

        Returns the trip's reason ("" if none). The total counts every line's latest report
        younger than ``status_timeout_s``. Only a line of one inverter is asked for its
        status. Without usable bms limits the lines are at 0 W anyway.
        """
        line = self.line(line_id)
        self.dc_currents[line_id] = (max(0.0, current_a) * line.count, now_s)
        limits = None if self.limits is None else self.limits.value
        if limits is None or not usable(limits):
            return ""
        recent = [
            a
            for a, at_s in self.dc_currents.values()
            if is_fresh(at_s, now_s, self.timing.status_timeout_s)
        ]
        total_a = sum(recent)
        dcl_a = max(limits.dcl_a, self.dcl_history.highest())
        trip_a = self.clamp.dc_trip_a(dcl_a)
        if total_a <= trip_a:
            return ""
        self.tripped_until_s = now_s + self.clamp.dc_trip_hold_s
        self.trip_reason = (
            f"units report {total_a:.1f} A DC, above DCL {dcl_a:g} A "
            f"(+{self.clamp.dcl_margin_pct:g} % + 0.2 A = {trip_a:.1f} A): every unit at 0 W for "
            f"{self.clamp.dc_trip_hold_s:g} s"
        )
        # the reports from before the cut say nothing about the currents after it
        self.dc_currents.clear()
        return self.trip_reason

    def tripped(self, now_s: float) -> bool:
        return self.tripped_until_s is not None and now_s < self.tripped_until_s

    def update_unit(self, unit_id: str, **changes: object) -> UnitSettings:
        """Change a unit's runtime settings (max_power_w, enabled); ValueError if invalid."""
        allowed = {"max_power_w", "enabled"}
        if set(changes) - allowed:
            raise ValueError(f"inverter unit {unit_id!r}: only {sorted(allowed)} change at runtime")
        old = self.unit(unit_id)
        max_power = changes.get("max_power_w", old.max_power_w)
        enabled = changes.get("enabled", old.enabled)
        if isinstance(max_power, bool) or not isinstance(max_power, int):
            raise ValueError(
                f"inverter unit {unit_id!r}: max_power_w {max_power!r} is not whole watts"
            )
        if not isinstance(enabled, bool):
            raise ValueError(f"inverter unit {unit_id!r}: enabled {enabled!r} is not true/false")
        # the start-up max power stays the unit's hardware limit: a runtime value below it
        # is enforced by the line's frame (Line.max_frame_w)
        new = replace(old, max_power_w=max_power, enabled=enabled, own_limit_w=old.hardware_limit_w)
        problems = new.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.units = tuple(new if u.unit_id == unit_id else u for u in self.units)
        return new

    def decisions(self, now_s: float) -> dict[str, LineDecision]:
        """Every line's decision, by line id."""
        return decide(
            self.lines,
            self.commands,
            self.limits,
            self.timing,
            now_s,
            clamp=self.clamp,
            tripped=self.tripped(now_s),
        )

    def due(self, now_s: float) -> list[Outgoing]:
        """Frames to write now, one per line at most."""
        out: list[Outgoing] = []
        lines = {line.line_id: line for line in self.lines}
        for lid, decision in self.decisions(now_s).items():
            power_w = self.schedules[lid].due(decision, self.timing, now_s)
            if power_w is not None:
                line = lines[lid]
                out.append(Outgoing(lid, line.port_url, line.address, power_w))
        return out

    def sent(self, line_id: str, power_w: int, now_s: float) -> None:
        self.schedules[line_id].sent(power_w, now_s)
        self.links[line_id].port_ok()

    def link_state(self, line_id: str, now_s: float) -> LinkState:
        return self.links[line_id].state(self.timing, now_s)
