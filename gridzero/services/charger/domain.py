"""The charger's own safety clamp and state, pure: time is the parameter ``now_s``.

The controller asks for a charge current or power; the bms publishes the battery's limits.
`decide` turns both into what the rectifier is told: DC on or off, the online voltage
set-point and the online current fraction, and the reason for the effective limit. Whatever
the controller asks, the result never exceeds the bms limits (CVL, CCL, charge allowed), the
charger's own settings or the rectifier's ranges (research/devices.md A.5); stale inputs and
alarms turn the DC output off.

Times (``at_s``, ``now_s``) are local monotonic seconds: the service stamps each message with
its own clock when it arrives, so another host's clock never decides staleness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from gridzero.services.charger import codec
from gridzero.services.charger.codec import (
    FRACTION_MAX,
    FRACTION_MIN,
    VOLTAGE_MAX_V,
    VOLTAGE_MIN_V,
    CanFrame,
    Control,
    Quantity,
)


class Reason(StrEnum):
    """Why the effective limit is what it is (the first rule that decided it)."""

    CONTROLLER = "controller"
    CVL = "cvl"
    CCL = "ccl"
    MAX_POWER = "max_power"
    ALARM = "alarm"
    STALE_BMS = "stale_bms"
    STALE_COMMAND = "stale_command"
    BELOW_MIN_CURRENT = "below_min_current"
    DISABLED = "disabled"


class LinkState(StrEnum):
    """Whether the rectifier answers our polls (values as in the MQTT contract)."""

    UNKNOWN = "unknown"
    OK = "ok"
    LOST = "lost"


# 12 S NMC at 3.9 V per cell: about half charge, so a rectifier that falls back to its
# offline defaults (service dead for ~30 s) can never push any cell near 4.1-4.2 V, even
# with the pack's worst tolerated cell imbalance.
CELLS_IN_SERIES = 12
DEFAULT_OFFLINE_VOLTAGE_V = CELLS_IN_SERIES * 3.9


@dataclass(frozen=True, slots=True)
class Bound:
    """The allowed range of one setting."""

    low: float
    high: float
    unit: str


SETTING_BOUNDS: dict[str, Bound] = {
    "max_charge_power_w": Bound(50.0, 5000.0, "W"),
    "rated_current_a": Bound(1.0, 200.0, "A"),
    "fraction_at_rated": Bound(FRACTION_MIN, FRACTION_MAX, ""),
    "min_current_a": Bound(0.5, 50.0, "A"),
    "offline_voltage_v": Bound(VOLTAGE_MIN_V, VOLTAGE_MAX_V, "V"),
    "offline_current_fraction": Bound(FRACTION_MIN, FRACTION_MAX, ""),
    "bms_stale_s": Bound(0.5, 10.0, "s"),
    "command_stale_s": Bound(0.5, 60.0, "s"),
    "refresh_period_s": Bound(0.5, 15.0, "s"),
    "link_timeout_s": Bound(2.0, 120.0, "s"),
}


@dataclass(frozen=True, slots=True)
class ChargerSettings:
    """The charger's own limits and timings (defaults and sources in docs/charger.md)."""

    enabled: bool = True
    max_charge_power_w: float = 3000.0
    rated_current_a: float = codec.DEFAULT_RATED_CURRENT_A
    fraction_at_rated: float = codec.DEFAULT_FRACTION_AT_RATED
    min_current_a: float = 5.2
    offline_voltage_v: float = DEFAULT_OFFLINE_VOLTAGE_V
    offline_current_fraction: float = FRACTION_MIN
    bms_stale_s: float = 3.0
    command_stale_s: float = 5.0
    refresh_period_s: float = 5.0
    link_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        problems = settings_problems(self)
        if problems:
            raise ValueError("charger settings: " + "; ".join(problems))

    @property
    def max_current_a(self) -> float:
        """The most the rectifier delivers: the largest fraction it accepts, in amps."""
        return self.fraction_to_current(FRACTION_MAX)

    @property
    def usable_min_current_a(self) -> float:
        """The least the rectifier regulates: the setting, never below the smallest fraction."""
        return max(self.min_current_a, self.fraction_to_current(FRACTION_MIN))

    def current_to_fraction(self, current_a: float) -> float:
        return current_a / self.rated_current_a * self.fraction_at_rated

    def fraction_to_current(self, fraction: float) -> float:
        return fraction / self.fraction_at_rated * self.rated_current_a


def settings_problems(settings: ChargerSettings) -> list[str]:
    """Every bad setting with its value and allowed range (empty when all are fine)."""
    problems: list[str] = []
    if settings.enabled not in (True, False):
        problems.append(f"enabled={settings.enabled!r} must be true or false")
    for f in fields(settings):
        bound = SETTING_BOUNDS.get(f.name)
        if bound is None:
            continue
        value = getattr(settings, f.name)
        unit = f" {bound.unit}" if bound.unit else ""
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{f.name}={value!r} is not a number")
        elif not (math.isfinite(value) and bound.low <= value <= bound.high):
            problems.append(
                f"{f.name}={value!r}{unit} is outside {bound.low:g}..{bound.high:g}{unit}"
            )
    return problems


@dataclass(frozen=True, slots=True)
class ChargeCommand:
    """What the controller asks: a current and/or a power (the smaller wins), an optional
    voltage (default: the bms CVL), whether to charge at all, and when the command arrived."""

    at_s: float
    current_a: float | None = None
    power_w: float | None = None
    voltage_v: float | None = None
    enable: bool = True


@dataclass(frozen=True, slots=True)
class BmsLimits:
    """The battery's limits as the bms published them, and when they arrived."""

    at_s: float
    cvl_v: float
    ccl_a: float
    charge_allowed: bool = True
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OfflineDefaults:
    """What the rectifier falls back to when it is no longer refreshed (EEPROM)."""

    voltage_v: float
    current_fraction: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rectifier is told now, and why."""

    dc_on: bool
    voltage_v: float
    current_a: float
    current_fraction: float
    reason: Reason
    voltage_reason: Reason

    @property
    def power_limit_w(self) -> float:
        return self.voltage_v * self.current_a if self.dc_on else 0.0


def _finite(*values: float | None) -> bool:
    return all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in values)


def _fresh(at_s: float, now_s: float, max_age_s: float) -> bool:
    # A timestamp from the future cannot come from our own monotonic clock: distrust it.
    age = now_s - at_s
    return math.isfinite(age) and 0.0 <= age <= max_age_s


def offline_defaults(settings: ChargerSettings) -> OfflineDefaults:
    """The EEPROM fallback written at start-up: a voltage that cannot overcharge the pack
    and the smallest current the rectifier accepts (or the setting, if higher)."""
    voltage_v = min(max(settings.offline_voltage_v, VOLTAGE_MIN_V), VOLTAGE_MAX_V)
    fraction = min(max(settings.offline_current_fraction, FRACTION_MIN), FRACTION_MAX)
    return OfflineDefaults(voltage_v, fraction)


def _off(
    reason: Reason, settings: ChargerSettings, limits: BmsLimits | None, now_s: float
) -> Decision:
    voltage_v = offline_defaults(settings).voltage_v
    if (
        limits is not None
        and _fresh(limits.at_s, now_s, settings.bms_stale_s)
        and _finite(limits.cvl_v)
        and limits.cvl_v >= VOLTAGE_MIN_V
    ):
        voltage_v = min(voltage_v, limits.cvl_v)
    return Decision(False, voltage_v, 0.0, FRACTION_MIN, reason, reason)


def _requested_current_a(command: ChargeCommand, voltage_v: float) -> float | None:
    wanted: list[float] = []
    if command.current_a is not None:
        wanted.append(command.current_a)
    if command.power_w is not None:
        wanted.append(command.power_w / voltage_v)
    return min(wanted) if wanted else None


# One early return per safety rule, in priority order: clearer than any table of lambdas.
def decide(  # noqa: PLR0911
    command: ChargeCommand | None,
    limits: BmsLimits | None,
    settings: ChargerSettings,
    now_s: float,
    pack_voltage_v: float | None = None,
) -> Decision:
    """The rectifier's state for ``now_s``; every rule is in docs/charger.md "Safety"."""
    if not settings.enabled:
        return _off(Reason.DISABLED, settings, limits, now_s)
    if (
        limits is None
        or not _fresh(limits.at_s, now_s, settings.bms_stale_s)
        or not _finite(limits.cvl_v, limits.ccl_a)
    ):
        return _off(Reason.STALE_BMS, settings, None, now_s)
    if limits.alarms:
        return _off(Reason.ALARM, settings, limits, now_s)
    if command is None or not _fresh(command.at_s, now_s, settings.command_stale_s):
        return _off(Reason.STALE_COMMAND, settings, limits, now_s)
    if not command.enable or not _finite(
        command.current_a, command.power_w, command.voltage_v, pack_voltage_v
    ):
        return _off(Reason.CONTROLLER, settings, limits, now_s)
    if not limits.charge_allowed or limits.ccl_a <= 0.0:
        return _off(Reason.CCL, settings, limits, now_s)

    voltage_v, voltage_reason = _voltage(command, limits)
    if voltage_v < VOLTAGE_MIN_V:
        return _off(voltage_reason, settings, limits, now_s)

    # Power -> current with the pack voltage when known (accurate); the power cap uses the
    # set-point, the highest voltage the output can reach, so V x I never exceeds it.
    basis_v = pack_voltage_v if pack_voltage_v is not None and pack_voltage_v > 0 else voltage_v
    requested_a = _requested_current_a(command, basis_v)
    if requested_a is None or requested_a <= 0.0:
        return _off(Reason.CONTROLLER, settings, limits, now_s)
    current_a, reason = min(
        (
            (requested_a, Reason.CONTROLLER),
            (limits.ccl_a, Reason.CCL),
            (settings.max_charge_power_w / voltage_v, Reason.MAX_POWER),
            (settings.max_current_a, Reason.MAX_POWER),
        ),
        key=lambda pair: pair[0],
    )
    if current_a < settings.usable_min_current_a:
        return _off(Reason.BELOW_MIN_CURRENT, settings, limits, now_s)
    fraction = min(max(settings.current_to_fraction(current_a), FRACTION_MIN), FRACTION_MAX)
    # The controller's own current/power is binding; name CVL if it also cut the voltage asked.
    if reason is Reason.CONTROLLER and _cvl_cut_voltage(command, limits):
        reason = Reason.CVL
    return Decision(True, voltage_v, current_a, fraction, reason, voltage_reason)


def _cvl_cut_voltage(command: ChargeCommand, limits: BmsLimits) -> bool:
    return command.voltage_v is not None and command.voltage_v > limits.cvl_v


def _voltage(command: ChargeCommand, limits: BmsLimits) -> tuple[float, Reason]:
    """The online voltage: the controller's wish, never above CVL nor the rectifier range."""
    if command.voltage_v is None or command.voltage_v > limits.cvl_v:
        voltage_v, reason = limits.cvl_v, Reason.CVL
    else:
        voltage_v, reason = command.voltage_v, Reason.CONTROLLER
    return min(voltage_v, VOLTAGE_MAX_V), reason


# --- refresh and frames -------------------------------------------------------------------


def needs_refresh(
    previous: Decision | None,
    last_sent_s: float | None,
    decision: Decision,
    now_s: float,
    settings: ChargerSettings,
) -> bool:
    """Send now? On any change, else every refresh period (online values expire ~30 s)."""
    if previous is None or last_sent_s is None:
        return True
    changed = (
        previous.dc_on != decision.dc_on
        or abs(previous.voltage_v - decision.voltage_v) > 0.005
        or abs(previous.current_fraction - decision.current_fraction) > 0.0005
    )
    return changed or not 0.0 <= now_s - last_sent_s < settings.refresh_period_s


def decision_frames(decision: Decision) -> tuple[CanFrame, ...]:
    """Frames that put a decision on the bus: off goes first when stopping, on goes last
    when starting, so the output never runs on the previous set-points."""
    setpoints = (
        codec.encode_voltage(decision.voltage_v),
        codec.encode_current_fraction(decision.current_fraction),
    )
    control = codec.encode_control(Control(dc_off=not decision.dc_on))
    return (*setpoints, control) if decision.dc_on else (control, *setpoints)


def startup_frames(settings: ChargerSettings) -> tuple[CanFrame, ...]:
    """DC off first, then the offline (EEPROM) defaults, then the same values online."""
    defaults = offline_defaults(settings)
    return (
        codec.encode_control(Control(dc_off=True)),
        codec.encode_voltage(defaults.voltage_v, offline=True),
        codec.encode_current_fraction(defaults.current_fraction, offline=True),
        codec.encode_voltage(defaults.voltage_v),
        codec.encode_current_fraction(defaults.current_fraction),
    )


POLL_QUANTITIES: tuple[Quantity, ...] = (
    Quantity.OUTPUT_VOLTAGE,
    Quantity.OUTPUT_CURRENT,
    Quantity.CURRENT_LIMIT,
    Quantity.TEMPERATURE,
    Quantity.INPUT_VOLTAGE,
    Quantity.STATUS,
)


def poll_frames() -> tuple[CanFrame, ...]:
    """One read request per quantity we publish."""
    return tuple(codec.encode_read_request(q) for q in POLL_QUANTITIES)


# --- link and readings --------------------------------------------------------------------


def link_state(
    started_s: float, last_reply_s: float | None, now_s: float, settings: ChargerSettings
) -> LinkState:
    """OK while replies keep coming; LOST after ``link_timeout_s`` without one."""
    if last_reply_s is None:
        return LinkState.UNKNOWN if now_s - started_s <= settings.link_timeout_s else LinkState.LOST
    return LinkState.OK if _fresh(last_reply_s, now_s, settings.link_timeout_s) else LinkState.LOST


@dataclass(frozen=True, slots=True)
class Readings:
    """What the rectifier last reported; None until it has answered."""

    output_voltage_v: float | None = None
    output_current_a: float | None = None
    current_limit_fraction: float | None = None
    temperature_c: float | None = None
    input_voltage_v: float | None = None
    status_raw: int | None = None
    status_active: tuple[str, ...] = ()
    last_reply_s: float | None = None
    last_error: str | None = None
    error_count: int = 0
    acks: int = 0

    @property
    def power_w(self) -> float | None:
        if self.output_voltage_v is None or self.output_current_a is None:
            return None
        return self.output_voltage_v * self.output_current_a

    def current_limit_a(self, settings: ChargerSettings) -> float | None:
        if self.current_limit_fraction is None:
            return None
        return settings.fraction_to_current(self.current_limit_fraction)

    def apply(self, message: codec.Message, now_s: float) -> Readings:
        """These readings updated by one decoded reply (requests and others are ignored)."""
        if isinstance(message, codec.Reading):
            changes: dict[str, Any] = {_READING_FIELDS[message.quantity]: message.value}
            return replace(self, last_reply_s=now_s, **changes)
        if isinstance(message, codec.StatusReading):
            return replace(
                self, last_reply_s=now_s, status_raw=message.raw, status_active=message.active
            )
        if isinstance(message, codec.WriteAck):
            return replace(self, last_reply_s=now_s, acks=self.acks + 1)
        if isinstance(message, codec.ErrorReply):
            error = (
                f"error {message.error_code:#04x} ({message.error_name}) for message type "
                f"{message.msgtype:#04x} register {message.register:#04x}"
            )
            return replace(
                self, last_reply_s=now_s, last_error=error, error_count=self.error_count + 1
            )
        if isinstance(message, codec.OtherReading):
            return replace(self, last_reply_s=now_s)
        return self


_READING_FIELDS: dict[Quantity, str] = {
    Quantity.OUTPUT_VOLTAGE: "output_voltage_v",
    Quantity.OUTPUT_CURRENT: "output_current_a",
    Quantity.CURRENT_LIMIT: "current_limit_fraction",
    Quantity.TEMPERATURE: "temperature_c",
    Quantity.INPUT_VOLTAGE: "input_voltage_v",
}
