"""The fault matrix: each fault injected into the running system, measured from the truth.

For every scenario the runner brings the plant into the mode it needs
(charging on PV surplus, or discharging at the inverter's full power with a
load step), injects the fault, waits for the safe state, holds the fault,
ends it, and waits for the system to resume on its own. It measures:

- what the cells saw (the truth's ``cells_v``; a cell whose *measured* voltage
  a drift fault moves is reported separately, at the moment charge or
  discharge stopped);
- how long until charge or discharge stopped (the truth's ``charger_dc_a`` /
  ``inverter_w``), from the injection or from a named reference (a cell
  crossing its limit);
- what was published (bms alarms and limit reasons, inverter cap reasons,
  charger limit reasons, controller states, service status changes);
- whether, and how fast, the system resumed.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gridzero.contract import Topics
from gridzero_tools.faults.rig import Rig, Truth

T = Topics()
Mode = Literal["charging", "discharging"]

CELL_MIN_V = 3.0  # the bms limits (services/bms/README.md): under_voltage_v, over_voltage_v
CELL_MAX_V = 4.2
CHARGE_END_V = 4.10  # bms charge_end_v: CCL goes to 0 ("full")
DISCHARGE_CUTOFF_V = 3.20  # bms discharge_cutoff_v: DCL goes to 0 ("empty")
STOPPED_W = 5.0
STOPPED_A = 0.5
OFFLINE_A = 6.0  # the charger's offline default: fraction 0.10 ≈ 5.2 A at 46.8 V (services/charger/README.md)
FULL_POWER_W = 800.0  # the rig's inverter gtn1 is capped at 900 W
CHARGING_A = 10.0
LOAD_STEP_W = 3000.0  # on the rig's flat 400 W load / 2400 W PV: 1 kW import, inverter at 900 W
DRIFT_CELL = (0, 3)
RESOLUTION_S = 0.25  # the truth comes every 0.2 s: a stop is seen up to that late  # plant module 0 (bus 0, module 1), cell index 3 (cell 4)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long faults last; ``quick`` for CI, ``thorough`` for the report."""

    name: str
    broker_down_s: float
    system_down_s: float
    gateway_s: float
    hang_s: float
    hold_s: float
    settle_timeout_s: float = 120.0
    safe_timeout_s: float = 60.0
    watch_s: float = 20.0  # how long to look for a stop that is not required
    resume_timeout_s: float = 120.0


QUICK = Timing("quick", broker_down_s=10, system_down_s=12, gateway_s=5, hang_s=8, hold_s=3)
THOROUGH = Timing(
    "thorough", broker_down_s=30, system_down_s=40, gateway_s=10, hang_s=15, hold_s=10
)


def _total_w(t: Truth) -> float:
    return float(sum(t["inverter_w"]))


def discharge_stopped(t: Truth) -> bool:
    return _total_w(t) <= STOPPED_W


def charge_stopped(t: Truth) -> bool:
    return float(t["charger_dc_a"]) <= STOPPED_A


def charge_at_offline_default(t: Truth) -> bool:
    return float(t["charger_dc_a"]) <= OFFLINE_A


def active(mode: Mode, *, established: bool) -> Callable[[Truth], bool]:
    """Charging or discharging: ``established`` = at full strength, else merely going."""
    if mode == "charging":
        # resumed: above the rectifier's offline fall-back (≈ 5.2 A), i.e. commanded again
        floor_a = CHARGING_A if established else OFFLINE_A + 1.0
        return lambda t: float(t["charger_dc_a"]) > floor_a
    floor_w = FULL_POWER_W if established else 100.0
    return lambda t: _total_w(t) > floor_w


Action = Callable[[Rig, Timing], None]


def _nothing(_rig: Rig, _timing: Timing) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the matrix."""

    key: str
    title: str
    mode: Mode
    start: Action
    end: Action = _nothing
    safe: Callable[[Truth], bool] | None = None  # None: the mode's stop (charge/discharge = 0)
    stop_required: bool = True
    bound_s: float | None = None
    bound_doc: str = ""
    fault_lasts: Callable[[Timing], float] | None = None  # end() this long after the start
    drifted: tuple[int, int] | None = None  # a cell whose *measured* voltage the fault moves
    judge_drifted: bool = True  # False: the fault puts it past its limit on purpose
    reference: Callable[[Truth], bool] | None = None  # time the stop from this truth, not t0
    reference_doc: str = ""
    restarted: str = ""  # a service whose return (status online) is timed

    def is_safe(self, t: Truth) -> bool:
        if self.safe is not None:
            return self.safe(t)
        return charge_stopped(t) if self.mode == "charging" else discharge_stopped(t)


@dataclass(slots=True)
class Result:
    """The measured row."""

    key: str
    title: str
    mode: Mode
    reached_mode: bool = False
    stopped_after_s: float | None = None  # from the reference (or the injection)
    stopped_from_injection_s: float | None = None
    bound_s: float | None = None
    bound_doc: str = ""
    reference_doc: str = ""
    stop_required: bool = True
    cell_min_v: float | None = None
    cell_max_v: float | None = None
    drifted_cell_at_stop_v: float | None = None
    restarted_after_s: float | None = None
    resumed_after_s: float | None = None  # from the end of the fault
    alarms: list[str] = field(default_factory=list)
    bms_reasons: list[str] = field(default_factory=list)
    inverter_reasons: list[str] = field(default_factory=list)
    charger_reasons: list[str] = field(default_factory=list)
    controller_states: list[str] = field(default_factory=list)
    status_changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def cells_ok(self) -> bool:
        return (
            self.cell_min_v is not None
            and self.cell_max_v is not None
            and self.cell_min_v >= CELL_MIN_V
            and self.cell_max_v <= CELL_MAX_V
            and (self.drifted_cell_at_stop_v is None or self.drifted_cell_at_stop_v <= CELL_MAX_V)
            and (self.drifted_cell_at_stop_v is None or self.drifted_cell_at_stop_v >= CELL_MIN_V)
        )

    @property
    def stopped_ok(self) -> bool:
        return not self.stop_required or self.stopped_after_s is not None

    @property
    def within_bound(self) -> bool:
        if self.bound_s is None or self.stopped_after_s is None:
            return self.stopped_ok
        return self.stopped_after_s <= self.bound_s + RESOLUTION_S

    @property
    def passed(self) -> bool:
        return (
            self.reached_mode
            and self.cells_ok
            and self.stopped_ok
            and self.within_bound
            and self.resumed_after_s is not None
        )


# --------------------------------------------------------------------------- the actions


def _fault(payload: dict[str, object]) -> Action:
    def start(rig: Rig, _timing: Timing) -> None:
        rig.inject(payload)

    return start


def _clear(kind: str) -> Action:
    def end(rig: Rig, _timing: Timing) -> None:
        rig.clear(kind)

    return end


def _kill(name: str) -> Action:
    def start(rig: Rig, _timing: Timing) -> None:
        rig.kill(name)

    return start


def _hang_controller(rig: Rig, _timing: Timing) -> None:
    rig.kill("controller", signal.SIGSTOP)


def _resume_controller(rig: Rig, _timing: Timing) -> None:
    rig.kill("controller", signal.SIGCONT)


def _broker_down(rig: Rig, _timing: Timing) -> None:
    rig.kill_broker()


def _broker_up(rig: Rig, _timing: Timing) -> None:
    rig.start_broker()


def _system_down(rig: Rig, _timing: Timing) -> None:
    rig.kill_system()


def _system_up(rig: Rig, _timing: Timing) -> None:
    rig.start_system()


def _drifted_at(cell: tuple[int, int]) -> Callable[[Truth], float]:
    return lambda t: float(t["cells_v"][cell[0]][cell[1]])


def _crossed_up(threshold_v: float) -> Callable[[Truth], bool]:
    at = _drifted_at(DRIFT_CELL)
    return lambda t: at(t) >= threshold_v


def _crossed_down(threshold_v: float) -> Callable[[Truth], bool]:
    at = _drifted_at(DRIFT_CELL)
    return lambda t: at(t) <= threshold_v


def _step_to(target_v: float) -> Action:
    """The cell reads ``target_v`` at once (an offset from its present value)."""
    module, cell = DRIFT_CELL

    def start(rig: Rig, _timing: Timing) -> None:
        now = rig.latest_truth()
        present = float(now["cells_v"][module][cell]) if now else 3.7
        rig.inject(
            {
                "kind": "cell_drift",
                "module": module,
                "cell": cell,
                "offset_v": round(target_v - present, 3),
            }
        )

    return start


DRIFT_V_PER_H = 50.0  # the plant's fastest drift, 13.9 mV/s: past the limit in about 3.6 s
DRIFT_LEAD_V = 0.05


def _drift_to(target_v: float, rising: bool) -> Action:
    """The cell reads ``DRIFT_LEAD_V`` short of ``target_v``, then drifts through it.

    A single cell moved away from the others also trips the bms's cell_delta alarm
    (0.2 V for 5 s); the lead and the rate are chosen so the cell crosses the limit
    in about 3.6 s, before that alarm, so the limit itself is what stops the flow.
    """
    module, cell = DRIFT_CELL

    def start(rig: Rig, _timing: Timing) -> None:
        now = rig.latest_truth()
        present = float(now["cells_v"][module][cell]) if now else 3.7
        reads = target_v - DRIFT_LEAD_V if rising else target_v + DRIFT_LEAD_V
        rig.inject(
            {
                "kind": "cell_drift",
                "module": module,
                "cell": cell,
                "offset_v": round(reads - present, 4),
                "v_per_h": DRIFT_V_PER_H if rising else -DRIFT_V_PER_H,
            }
        )

    return start


class _ForgedClock:
    """The bms hangs and "its" limits keep coming, permissive and stamped an hour ahead.

    As a bms whose clock jumped (or a forger holding the bms password) would send them:
    live, numbered, counting up. The consumers must judge them by the freshness rule
    (a stamp more than 1 s in the future is not trusted) and go to their safe state as if
    the limits had stopped; before that rule, such limits stayed fresh for an hour.
    """

    AHEAD_S = 3600.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, rig: Rig, _timing: Timing) -> None:
        rig.kill("bms", signal.SIGSTOP)
        self._stop.clear()
        self._thread = threading.Thread(target=self._forge, args=(rig,), daemon=True)
        self._thread.start()

    def end(self, rig: Rig, _timing: Timing) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        rig.kill("bms", signal.SIGCONT)

    def _forge(self, rig: Rig) -> None:
        sender = rig.system.probe("bms", subscribe="")
        try:
            for seq in itertools.count(1):
                if self._stop.wait(0.5) or seq > 10_000:
                    return
                limits = {
                    "ts": time.time() + self.AHEAD_S,
                    "boot": "forged",
                    "seq": seq,
                    "cvl_v": 49.2,
                    "ccl_a": 30.0,
                    "dcl_a": 30.0,
                    "charge_allowed": True,
                    "discharge_allowed": True,
                    "pack_voltage_v": 45.0,
                    "reasons": [],
                    "alarms": [],
                }
                sender.publish(T.bms_limits, json.dumps(limits), qos=0)
        finally:
            sender.close()


_FORGED_CHARGING = _ForgedClock()
_FORGED_DISCHARGING = _ForgedClock()


# The SoyoSource model (1 s lag, 300 W/s ramp) takes about 6.1 s from 900 W to below 5 W
# after a 0 W frame; the R48 drops its current at once when DC goes off.
INVERTER_STOP_S = 6.5
CHARGER_STOP_S = 0.5


# ---------------------------------------------------------------- bms: boards and deep discharge
# The bms polls every 0.5 s; a module's frames reach it at the next poll after a fault.
BMS_POLL_S = 0.5
DEEP_DISCHARGE_TRIP_S = 1.0  # bms deep_discharge_trip_s
DEEP_CELL_V = 2.30  # below the bms's deep_discharge_v 2.50 V
RELEASE_ACTION = T.action_set("bms", "release_deep_discharge")


def _release_deep_discharge(rig: Rig, timing: Timing) -> None:
    """The cell reads healthy again, then a person presses release. The bms refuses the
    press until it sees the whole pack healthy (its alarms released), so it is repeated."""
    rig.clear("cell_drift")
    deadline = time.monotonic() + timing.resume_timeout_s
    while time.monotonic() < deadline:
        since = time.time()
        rig.publish(RELEASE_ACTION, "press")
        answer = rig.wait_message(
            T.ack("bms"), lambda p: json.loads(p).get("topic") == RELEASE_ACTION, 5.0, since=since
        )
        if answer is not None and json.loads(answer).get("ok"):
            return
        time.sleep(1.0)


BMS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "deep_discharge",
        "deep discharge while charging (a cell reads 2.30 V at once; latched until released)",
        "charging",
        _step_to(DEEP_CELL_V),
        _release_deep_discharge,
        bound_s=BMS_POLL_S + DEEP_DISCHARGE_TRIP_S + 0.1 + CHARGER_STOP_S,
        bound_doc="next poll 0.5 s; pre-charge limit (1 A) at once, the deep_discharge latch after 1 s published at once; charger DC off on receipt; resumes only after the release button",
        drifted=DRIFT_CELL,
        judge_drifted=False,
    ),
    Scenario(
        "duplicate_module",
        "a second board numbered 3 on bus 0 while charging (its cells at 4.30 V)",
        "charging",
        _fault({"kind": "duplicate_module", "target": "0:3", "value": 4.30}),
        _clear("duplicate_module"),
        bound_s=2 * BMS_POLL_S + 0.1 + 0.5 + CHARGER_STOP_S,
        bound_doc="interleaved counters: 3 bad steps within 2 polls (1 s); frame_sanity blocks both, published at once; charger DC off on receipt",
    ),
    Scenario(
        "frozen_module",
        "bus 0 module 3's board frozen, repeating its last frames, while discharging",
        "discharging",
        _fault({"kind": "frozen_module", "target": "0:3"}),
        _clear("frozen_module"),
        bound_s=3 * BMS_POLL_S + 0.1 + 0.1 + INVERTER_STOP_S,
        bound_doc="3 repeated counters (3 polls, 1.5 s): frame_sanity blocks both, published at once; inverter 0 W, then the SoyoSource's decay",
    ),
)


# --- the charger's own barriers (issue 16): measured over-current, unconfirmed fallback ---
# The R48's output current is polled every 1 s and the shunt publishes about every 1 s; the
# charger trips after 2 s above CCL + max(2 A, 10 %) and checks every 0.5 s.
OVER_CURRENT_TRIP_S = 2.0
CHARGER_POLL_S = 1.0
CHARGER_CONTROL_S = 0.5
UP_RESTART_S = 2.0  # `gridzero up` restarts a service that died after 2 s (first restart)
SERVICE_START_S = 5.0  # a Python service's import and connect on the shared 2-core machine


def _over_current(rig: Rig, _timing: Timing) -> None:
    rig.inject({"kind": "rectifier_over_current", "value": 20})


def _over_current_fixed_and_reset(rig: Rig, _timing: Timing) -> None:
    # the trip is latched: a person resets it after the rectifier was seen to (here: the
    # fault ends); a reset while current still flows would be refused
    rig.clear("rectifier_over_current")
    rig.publish(T.action_set("charger", "reset_over_current"), "press")


def _refuse_stored_then_restart_charger(rig: Rig, _timing: Timing) -> None:
    rig.inject({"kind": "rectifier_refuses_stored"})
    rig.kill("charger")


CHARGER_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "rectifier_over_current",
        "rectifier over-current while charging (it delivers 20 A above its limit)",
        "charging",
        _over_current,
        _over_current_fixed_and_reset,
        bound_s=0.5 + CHARGER_POLL_S + OVER_CURRENT_TRIP_S + CHARGER_CONTROL_S,
        bound_doc="the current passes CCL + 10 % within 0.5 s (20 A/s), is measured within 1 s "
        "(R48 poll, shunt), trips after 2 s, checked every 0.5 s; DC off at once; latched until "
        "a person resets it",
    ),
    Scenario(
        "failed_fallback_write",
        "stored fallback writes refused (error reply), charger restarted while charging",
        "charging",
        _refuse_stored_then_restart_charger,
        _clear("rectifier_refuses_stored"),
        bound_s=UP_RESTART_S + SERVICE_START_S,
        bound_doc="`gridzero up` restarts the killed charger after 2 s; its first frame is DC "
        "off and, with the stored fallback refused, DC stays off (fallback_unconfirmed) until "
        "a retry is acknowledged",
        restarted="charger",
    ),
)


MATRIX: tuple[Scenario, ...] = (
    # ---------------------------------------------------------------- while charging
    Scenario(
        "cell_ov_drift",
        "cell over-voltage while charging (a cell drifts up through 4.10 V)",
        "charging",
        _drift_to(CHARGE_END_V, rising=True),
        _clear("cell_drift"),
        bound_s=0.1 + 0.5 + CHARGER_STOP_S,
        bound_doc="bms 'full' at charge_end_v 4.10 V (evaluated every 0.1 s), limits within 0.5 s, charger DC off on receipt",
        drifted=DRIFT_CELL,
        reference=_crossed_up(CHARGE_END_V),
        reference_doc="the cell crossing 4.10 V",
    ),
    Scenario(
        "cell_ov_step",
        "cell over-voltage while charging (a cell reads 4.25 V at once)",
        "charging",
        _step_to(4.25),
        _clear("cell_drift"),
        bound_s=0.1 + 0.5 + CHARGER_STOP_S,
        bound_doc="'full' at once (over_voltage alarm 0.5 s later), limits within 0.5 s, charger DC off on receipt",
        drifted=DRIFT_CELL,
        judge_drifted=False,
    ),
    Scenario(
        "rectifier_silent",
        "rectifier silent while charging (CAN dead both ways)",
        "charging",
        _fault({"kind": "rectifier_silent"}),
        _clear("charger_silent"),
        safe=charge_at_offline_default,
        bound_s=30.0 + 1.0,
        bound_doc="online set-points expire after 30 s; the rectifier falls back to the offline 46.8 V / 5.2 A the charger service wrote",
    ),
    Scenario(
        "controller_kill_charging",
        "controller killed (SIGKILL) while charging",
        "charging",
        _kill("controller"),
        stop_required=False,
        bound_doc="charger stops after command_stale_s 5 s unless the restarted controller commands first",
        restarted="controller",
    ),
    Scenario(
        "system_restart",
        "whole system killed (up, services, broker) mid-day while charging, then restarted",
        "charging",
        _system_down,
        _system_up,
        safe=charge_at_offline_default,
        stop_required=False,
        bound_s=30.0 + 1.0,
        bound_doc="nothing commands the rectifier: online set-points expire after 30 s, then it holds 46.8 V / 5.2 A (3.9 V per cell)",
        fault_lasts=lambda t: t.system_down_s,
    ),
    Scenario(
        "bms_clock_ahead_charging",
        "bms hangs while charging; its limits keep coming stamped 1 h in the future",
        "charging",
        _FORGED_CHARGING.start,
        _FORGED_CHARGING.end,
        bound_s=3.0 + 0.5 + CHARGER_STOP_S,
        bound_doc="future stamps are refused, so the limits age from their last real arrival: charger bms_stale_s 3 s (checked every 0.5 s), DC off",
    ),
    # ---------------------------------------------------------------- while discharging
    Scenario(
        "cell_uv_drift",
        "cell under-voltage while discharging (a cell drifts down through 3.20 V)",
        "discharging",
        _drift_to(DISCHARGE_CUTOFF_V, rising=False),
        _clear("cell_drift"),
        bound_s=0.1 + 0.5 + 0.1 + INVERTER_STOP_S,
        bound_doc="bms 'empty' at discharge_cutoff_v 3.20 V, limits within 0.5 s, inverter 0 W frame within a tick, then the SoyoSource's own decay (~6 s from 900 W)",
        drifted=DRIFT_CELL,
        reference=_crossed_down(DISCHARGE_CUTOFF_V),
        reference_doc="the cell crossing 3.20 V",
    ),
    Scenario(
        "over_temperature",
        "over-temperature while discharging (module 1 reads +50 °C, ~70 °C)",
        "discharging",
        _fault({"kind": "over_temperature", "target": "0:1", "value": 50}),
        _clear("temperature_offset"),
        bound_s=0.1 + 0.5 + 0.1 + INVERTER_STOP_S,
        bound_doc="hot derate: DCL 0 above 65 °C at once (alarm after 2 s), limits within 0.5 s, inverter 0 W, then the SoyoSource's decay",
    ),
    Scenario(
        "meter_silent",
        "meter silent while discharging",
        "discharging",
        _fault({"kind": "meter_silent"}),
        _clear("meter_silent"),
        bound_s=5.0 + 0.5 + 1.8 + INVERTER_STOP_S,
        bound_doc="controller meter_stale_s 5 s (checked every 0.5 s), a 500 W/s ramp to 0 (1.8 s from 900 W), then the SoyoSource's decay",
    ),
    Scenario(
        "meter_junk",
        "meter sending junk while discharging",
        "discharging",
        _fault({"kind": "meter_junk"}),
        _clear("meter_junk"),
        bound_s=5.0 + 0.5 + 1.8 + INVERTER_STOP_S,
        bound_doc="junk is refused, so the meter goes stale: as 'meter silent'",
    ),
    Scenario(
        "module_silent",
        "a module silent while discharging (bus 0, module 3)",
        "discharging",
        _fault({"kind": "module_silent", "target": "0:3"}),
        _clear("module_silent"),
        bound_s=3.0 + 0.5 + 0.1 + INVERTER_STOP_S,
        bound_doc="bms stale_after_s 3 s: module_missing, CCL = DCL = 0 published at once; inverter 0 W, then the SoyoSource's decay",
    ),
    Scenario(
        "bms_kill",
        "bms killed (SIGKILL) while discharging, restarted by the supervisor",
        "discharging",
        _kill("bms"),
        stop_required=False,
        bound_s=3.0 + 0.1 + INVERTER_STOP_S,
        bound_doc="inverter bms_stale_s 3 s (checked every 0.1 s), then 0 W; a restarted bms ramps its limits up from 0",
        restarted="bms",
    ),
    Scenario(
        "gateway_restart",
        "inverter serial gateway restarting while discharging",
        "discharging",
        _fault({"kind": "gateway_restart", "target": "0"}),
        stop_required=True,
        bound_s=3.0 + 0.5,
        bound_doc="the SoyoSource stops at once when frames stop for frame_timeout_s 3 s",
    ),
    Scenario(
        "controller_kill_discharging",
        "controller killed (SIGKILL) while discharging at full power",
        "discharging",
        _kill("controller"),
        stop_required=False,
        bound_doc="inverter command_stale_s 3 s, then 0 W, unless the restarted controller commands first",
        restarted="controller",
    ),
    Scenario(
        "controller_hang",
        "controller hung (SIGSTOP) while discharging at full power",
        "discharging",
        _hang_controller,
        _resume_controller,
        bound_s=3.0 + 0.1 + INVERTER_STOP_S,
        bound_doc="inverter command_stale_s 3 s, then 0 W, then the SoyoSource's decay",
        fault_lasts=lambda t: t.hang_s,
    ),
    Scenario(
        "bms_clock_ahead_discharging",
        "bms hangs while discharging; its limits keep coming stamped 1 h in the future",
        "discharging",
        _FORGED_DISCHARGING.start,
        _FORGED_DISCHARGING.end,
        bound_s=3.0 + 0.1 + INVERTER_STOP_S,
        bound_doc="future stamps are refused: inverter bms_stale_s 3 s from the last real limits, then 0 W, then the SoyoSource's decay",
    ),
    Scenario(
        "broker_down",
        "broker killed while discharging, restarted later",
        "discharging",
        _broker_down,
        _broker_up,
        bound_s=3.0 + 0.1 + INVERTER_STOP_S,
        bound_doc="inverter bms_stale_s 3 s (the limits stop arriving), then 0 W, then the SoyoSource's decay",
        fault_lasts=lambda t: t.broker_down_s,
    ),
    *BMS_SCENARIOS,
    *CHARGER_SCENARIOS,
)
SCENARIOS = {s.key: s for s in MATRIX}


# --------------------------------------------------------------------------- running


def _at_or_after(ts: float) -> Callable[[Truth], bool]:
    return lambda t: float(t["ts"]) >= ts


def set_mode(rig: Rig, mode: Mode, timing: Timing, notes: list[str] | None = None) -> bool:
    """Bring the plant into ``mode`` (a load step for discharging) and wait until it has been
    in it for three seconds, within ``timing.settle_timeout_s``.

    A plant that reaches the mode and leaves it again (e.g. a bms just restarted by the
    scenario before) is waited for again, and the drop is written to ``notes``.
    """
    rig.clear("load_step")
    if mode == "discharging":
        rig.inject({"kind": "load_step", "value": LOAD_STEP_W})
    reached = active(mode, established=True)
    deadline = time.time() + timing.settle_timeout_s
    since = time.time()
    while True:
        truth = rig.wait_truth(reached, max(0.0, deadline - time.time()), since=since)
        if truth is None:
            return False
        # three seconds of it, so a fault does not meet a plant still switching over
        steady = rig.wait_truth(
            _at_or_after(float(truth["ts"]) + 3.0),
            max(0.0, deadline - time.time()),
            since=truth["ts"],
        )
        if steady is None:
            return False
        if reached(steady):
            return True
        if notes is not None:
            notes.append(f"reached '{mode}' and left it again within 3 s; waited again")
        since = steady["ts"]


def run_scenario(rig: Rig, scenario: Scenario, timing: Timing) -> Result:
    """Inject, measure, end, wait for recovery. Never raises for a failed expectation."""
    result = Result(
        scenario.key,
        scenario.title,
        scenario.mode,
        bound_s=scenario.bound_s,
        bound_doc=scenario.bound_doc,
        reference_doc=scenario.reference_doc,
        stop_required=scenario.stop_required,
    )
    result.reached_mode = set_mode(rig, scenario.mode, timing, result.notes)
    if not result.reached_mode:
        result.notes.append(f"the plant did not reach '{scenario.mode}' before the fault")
        return result
    t0 = time.time()
    scenario.start(rig, timing)
    look_s = timing.safe_timeout_s
    if not scenario.stop_required:  # look a while, and for as long as the fault lasts
        lasts = scenario.fault_lasts(timing) if scenario.fault_lasts else 0.0
        look_s = max(timing.watch_s, lasts)
    safe = rig.wait_truth(scenario.is_safe, look_s, since=t0)
    if safe is not None:
        result.stopped_from_injection_s = safe["ts"] - t0
        ref_ts = t0
        if scenario.reference is not None:
            ref = next((t for t in rig.truths(t0) if scenario.reference(t)), None)
            ref_ts = ref["ts"] if ref is not None else t0
        result.stopped_after_s = max(0.0, safe["ts"] - ref_ts)
        if scenario.drifted is not None and scenario.judge_drifted:
            # the drift goes on after the stop; what counts is what the bms saw until then
            result.drifted_cell_at_stop_v = _drifted_at(scenario.drifted)(safe)
    # hold the fault: its fixed length, or a while in the safe state
    end_at = (
        t0 + scenario.fault_lasts(timing) if scenario.fault_lasts else time.time() + timing.hold_s
    )
    _sleep_until(end_at)
    scenario.end(rig, timing)
    t_end = time.time()
    # resumed = going again after the fault ended and after the stop (if it stopped)
    since = max(t_end, safe["ts"] + 0.01) if safe is not None else t_end
    resumed = rig.wait_truth(
        active(scenario.mode, established=False), timing.resume_timeout_s, since=since
    )
    if resumed is not None:
        result.resumed_after_s = max(0.0, resumed["ts"] - t_end)
    t_last = time.time()
    _cells(result, rig.truths(t0, t_last), scenario.drifted)
    _published(result, rig, t0, t_last)
    if scenario.restarted:
        status = T.status(scenario.restarted)
        back = [at for at, _t, p in rig.messages(lambda t: t == status, t0) if p == b"online"]
        if back:
            result.restarted_after_s = back[0] - t0
    if scenario.drifted is not None:
        rig.clear("cell_drift")
    return result


def _sleep_until(wall_s: float) -> None:
    # the length of a fault is what is being tested, not a synchronisation
    delay = wall_s - time.time()
    if delay > 0:
        time.sleep(delay)


def _cells(result: Result, truths: list[Truth], drifted: tuple[int, int] | None) -> None:
    lows, highs = [], []
    for truth in truths:
        for m, row in enumerate(truth["cells_v"]):
            for c, v in enumerate(row):
                if drifted == (m, c):
                    continue
                lows.append(v)
                highs.append(v)
    if lows:
        result.cell_min_v = min(lows)
        result.cell_max_v = max(highs)


def _add(items: list[str], value: str) -> None:
    if value and value not in items:
        items.append(value)


def _published(result: Result, rig: Rig, since: float, until: float) -> None:
    for _at, topic, payload in rig.messages(lambda t: t.startswith("gridzero/"), since, until):
        try:
            if topic == T.bms_limits:
                data = json.loads(payload)
                for alarm in data["alarms"]:
                    _add(result.alarms, alarm["code"])
                for reason in data["reasons"]:
                    _add(result.bms_reasons, reason.split(":")[0])
            elif topic.startswith("gridzero/inverter/") and topic.endswith("/state"):
                _add(result.inverter_reasons, json.loads(payload)["cap_reason"])
            elif topic == T.charger_state:
                _add(result.charger_reasons, json.loads(payload)["limit_reason"])
            elif topic == T.controller_state:
                _add(result.controller_states, json.loads(payload)["state"])
            elif topic.endswith("/status") and payload in (b"offline", b"stopped"):
                _add(result.status_changes, f"{topic.split('/')[1]} {payload.decode()}")
        except (ValueError, KeyError, TypeError):
            result.notes.append(f"unreadable {topic} payload")


def run_matrix(
    rig: Rig,
    timing: Timing,
    keys: list[str] | None = None,
    progress: Callable[[str], None] = lambda _s: None,
) -> list[Result]:
    """Run scenarios in matrix order (charging ones first, the whole-system restart among them)."""
    chosen = [s for s in MATRIX if keys is None or s.key in keys]
    results = []
    for scenario in chosen:
        progress(f"{scenario.key}: {scenario.title}")
        result = run_scenario(rig, scenario, timing)
        progress(summary_line(result))
        results.append(result)
    return results


def summary_line(r: Result) -> str:
    stop = "-" if r.stopped_after_s is None else f"{r.stopped_after_s:.1f} s"
    resume = "never" if r.resumed_after_s is None else f"{r.resumed_after_s:.1f} s"
    cells = (
        "?"
        if r.cell_min_v is None or r.cell_max_v is None
        else f"{r.cell_min_v:.3f}..{r.cell_max_v:.3f} V"
    )
    verdict = "PASS" if r.passed else "FAIL"
    return (
        f"  {verdict} {r.key}: stopped {stop}, resumed {resume}, cells {cells}, alarms {r.alarms}"
    )
