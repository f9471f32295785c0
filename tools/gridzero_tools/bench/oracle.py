"""The oracle: knows the house's future net load, obeys the same devices and limits.

It asks for the net load ``lead_s`` ahead (feed-forward through the known dead time, lag and
ramp of the plant), shapes the inverters' command with gridzero's own overdrive (so the output
ramps at its full slew rate; `law.Overdrive`), dispatches it through gridzero's own dispatcher
(same interlock, charger minimum current, bms bounds, the same device services), and trims the
small steady error that conversion losses leave with a slow integrator that is only active
while the load is steady.
The bench runs it with several leads and keeps the best: the physical limit. With lead 0
("oracle-causal") the load is known the instant it changes but nothing is anticipated: a
reference for what a causal controller can reach (not a strict bound: its only feedback is the
slow trim, so a good feedback controller can beat it slightly). "oracle-meter" knows the load
only as the meter shows it: exactly, but at the meter's samples and after its latency, which is
all the information any real controller has; what separates a controller from it is how well
it turns that into commands, and what separates it from the oracle is the meter itself.
"""

from __future__ import annotations

from gridzero_controller.core import Observation, SagTracker
from gridzero_controller.dispatch import Commands, Dispatcher, DispatchInput, InverterUnit
from gridzero_controller.law import Overdrive, PowerBounds
from gridzero_controller.settings import ControllerSettings
from gridzero_tools.sim.params import PlantParams
from gridzero_tools.sim.profile import Profile

ORACLE_LEADS_S = (0.75, 1.5, 2.5)
CAUSAL_LEAD_S = 0.0
METER_ONLY = "meter"


class OracleController:
    """Feed-forward on the true future load (see the module docstring)."""

    name = "oracle"
    trim_gain = 0.2
    trim_max_w = 150.0
    steady_w = 30.0

    def __init__(
        self,
        params: PlantParams,
        profile: Profile,
        settings: ControllerSettings,
        units: tuple[InverterUnit, ...],
        lead_s: float,
        meter_only: bool = False,
    ) -> None:
        self.profile = profile
        self.meter_only = meter_only
        self.meter_latency_s = params.meter.latency_s
        self.hold = params.house.interpolation == "hold"
        self.load_scale = params.house.load_scale
        self.pv_scale = params.house.pv_scale
        self.settings = settings.model_copy(
            update={"charger_efficiency": params.charger.efficiency}
        )
        self.dispatcher = Dispatcher(units)
        self.sag = SagTracker(units)  # the same measured-sag caps as gridzero's
        self.overdrive = Overdrive()
        self._last_discharge_w = 0.0
        self.lead_s = lead_s
        self.trim_w = 0.0
        self._last_meter_at_s: float | None = None

    def net_load_w(self, t_s: float) -> float:
        """True load − PV at ``t_s`` (as the plant computes it)."""
        load, pv = self.profile.at(t_s, hold=self.hold)
        return max(0.0, load * self.load_scale) - pv * self.pv_scale

    def _known_load_w(self, obs: Observation) -> float:
        if not self.meter_only:
            return self.net_load_w(obs.now_s + self.lead_s)
        if obs.meter is None:
            return 0.0
        # The instant the newest meter value was measured (it arrived `latency` later).
        return self.net_load_w(obs.meter.at_s - self.meter_latency_s)

    def _steady(self, now_s: float) -> bool:
        here = self.net_load_w(now_s)
        return all(
            abs(self.net_load_w(now_s + dt) - here) < self.steady_w for dt in (-8.0, -4.0, 2.0, 4.0)
        )

    def step(self, obs: Observation) -> Commands:
        """Set-point from the future, dispatched like gridzero's."""
        now = obs.now_s
        s = self.settings
        meter = obs.meter
        if meter is not None and (
            self._last_meter_at_s is None or meter.at_s > self._last_meter_at_s
        ):
            self._last_meter_at_s = meter.at_s
            err = meter.grid_w - s.target_grid_w
            # Only small steady errors are conversion losses; large ones are saturation
            # (load beyond the inverters, bms limits), where trimming would only wind up.
            unwinding = err * self.trim_w < 0
            if (abs(err) < self.trim_max_w / 2 or unwinding) and self._steady(now):
                self.trim_w = max(
                    -self.trim_max_w, min(self.trim_max_w, self.trim_w + self.trim_gain * err)
                )
        setpoint = self._known_load_w(obs) - s.target_grid_w + self.trim_w
        limits = obs.limits
        ok = limits is not None and not limits.value.alarm and limits.fresh(now, s.bms_stale_s)
        pack_v = obs.pack_voltage_v
        if obs.charger is not None and obs.charger.current_a > 1.0:
            pack_v = obs.charger.voltage_v  # the charger's own terminal voltage: exact power
        caps_w = self.sag.update(obs, obs.inverters)
        data = DispatchInput(
            pack_voltage_v=pack_v,
            soc_pct=obs.soc_pct,
            limits=limits.value if ok and limits is not None else None,
            inverter_output_w=tuple(None if r is None else r.output_w for r in obs.inverters),
            charger_current_a=None if obs.charger is None else obs.charger.current_a,
            unit_caps_w=caps_w,
        )
        self.overdrive.advance(now, self._last_discharge_w, s)
        wide = PowerBounds(max_discharge_w=s.max_discharge_w, max_charge_w=s.max_charge_w)
        commands = self.dispatcher.step(now, self.overdrive.command(setpoint, wide, s), data, s)
        self._last_discharge_w = commands.discharge_w
        return commands
