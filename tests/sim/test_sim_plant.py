"""Plant model: determinism, energy balance, rectifier, inverters, cells, balancing, meter."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.ocv import ocv_from_soc
from gridzero_tools.sim.inverters import Inverter
from gridzero_tools.sim.pack import cell_ocv_v
from gridzero_tools.sim.params import InverterParams, PlantParams, load_plant, parse_plant
from gridzero_tools.sim.plant import Plant
from gridzero_tools.sim.profile import Profile


def _plant(
    yaml_text: str = "", profile: Profile | None = None, seed: int = 1, start_s: float = 0.0
) -> Plant:
    params = parse_plant(yaml_text) if yaml_text else load_plant("default")
    return Plant(params, profile or Profile.constant(400.0, 0.0), seed=seed, start_s=start_s)


def _run(plant: Plant, until_s: float, dt_s: float = 0.1, demand_w: float | None = None) -> None:
    t = plant.now_s
    n = 0
    while t < until_s - 1e-9:
        t = round(t + dt_s, 9)
        if demand_w is not None and n % 10 == 0:
            plant.command_inverter(0, demand_w, t)
        plant.step(t)
        n += 1


# --- determinism ---------------------------------------------------------------------------


def _scripted(seed: int) -> Plant:
    plant = _plant("meter: {noise_w: 20}", Profile.constant(700.0, 300.0), seed=seed)
    plant.charger_dc(True, 0.0)
    plant.command_charger_online(50.0, 0.2, 0.0)
    _run(plant, 60.0, demand_w=300.0)
    return plant


def test_same_seed_same_results() -> None:
    a, b = _scripted(7), _scripted(7)
    assert a.truth() == b.truth()
    assert a.meter.latest(a.now_s) == b.meter.latest(b.now_s)
    assert a.energy == b.energy


def test_different_seed_different_cells() -> None:
    a, b = _scripted(7), _scripted(8)
    assert a.pack.cap_as != b.pack.cap_as
    assert a.truth().cell_voltages_v != b.truth().cell_voltages_v


# --- energy balance ------------------------------------------------------------------------


def test_grid_is_load_minus_pv_minus_inverter_plus_charger() -> None:
    plant = _plant(profile=Profile.constant(900.0, 250.0))
    plant.charger_dc(True, 0.0)
    for k in range(600):
        t = (k + 1) * 0.1
        if k % 10 == 0:
            plant.command_inverter(0, 500.0 if k < 300 else 0.0, t)
            plant.command_charger_online(49.5, 0.3 if k >= 300 else 0.1, t)
        plant.step(t)
        tr = plant.truth()
        expected = tr.load_w - tr.pv_w - sum(tr.inverter_ac_w) + tr.charger_ac_w
        assert tr.grid_w == pytest.approx(expected, abs=1e-9)
    e = plant.energy
    assert e.grid_import_wh - e.grid_export_wh == pytest.approx(
        e.load_wh - e.pv_wh - e.inverter_ac_wh + e.charger_ac_wh, abs=1e-9
    )
    assert e.inverter_ac_wh > 0.0
    assert e.charger_ac_wh > 0.0


def test_conversion_losses() -> None:
    plant = _plant(profile=Profile.constant(900.0, 0.0))
    _run(plant, 60.0, demand_w=800.0)
    e = plant.energy
    assert e.inverter_dc_wh == pytest.approx(e.inverter_ac_wh / 0.87, rel=1e-9)
    # DC current is taken at the previous sub-step's voltage: equal to ~1e-5
    assert e.battery_out_wh == pytest.approx(e.inverter_dc_wh, rel=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.05, 3.0),
            st.sampled_from(["inv", "online", "offline", "dc", "nothing"]),
            st.floats(-100.0, 5000.0),
        ),
        max_size=40,
    )
)
def test_energy_balance_under_any_command_sequence(
    script: list[tuple[float, str, float]],
) -> None:
    plant = _plant(profile=Profile.constant(600.0, 900.0))
    t = 0.0
    for gap, what, x in script:
        t += gap
        if what == "inv":
            plant.command_inverter(0, x, t)
        elif what == "online":
            plant.command_charger_online(41.0 + x / 5000.0 * 17.5, x / 5000.0, t)
        elif what == "offline":
            plant.command_charger_offline(None, x / 5000.0, t)
        elif what == "dc":
            plant.charger_dc(x > 2000.0, t)
        plant.step(t)
        tr = plant.truth()
        assert tr.grid_w == pytest.approx(
            tr.load_w - tr.pv_w - sum(tr.inverter_ac_w) + tr.charger_ac_w, abs=1e-9
        )
        assert 0.0 <= tr.inverter_ac_w[0] <= 900.0
        assert tr.charger_current_a >= 0.0


# --- rectifier -----------------------------------------------------------------------------


def test_rectifier_falls_back_to_offline_30s_after_last_online_setpoint() -> None:
    plant = _plant()
    assert plant.command_charger_offline(48.0, 0.15, 0.0)
    assert plant.command_charger_online(50.0, 0.5, 1.0)
    plant.step(30.9)
    tr = plant.truth()
    assert tr.charger_online
    assert tr.charger_voltage_setpoint_v == 50.0
    assert tr.charger_current_limit_a == pytest.approx(0.5 * 51.65)
    plant.step(31.1)
    tr = plant.truth()
    assert not tr.charger_online
    assert tr.charger_voltage_setpoint_v == 48.0
    assert tr.charger_current_limit_a == pytest.approx(0.15 * 51.65)


def test_rectifier_refreshed_setpoints_stay_online() -> None:
    plant = _plant()
    for k in range(10):
        plant.command_charger_online(50.0, 0.5, k * 15.0)
    plant.step(150.0)
    assert plant.truth().charger_online


def test_rectifier_rejects_out_of_range_setpoints() -> None:
    plant = _plant()
    assert not plant.command_charger_online(60.0, None, 0.0)
    assert not plant.command_charger_online(None, 1.5, 0.0)
    assert not plant.command_charger_online(math.nan, None, 0.0)
    assert not plant.command_charger_offline(40.0, None, 0.0)
    assert plant.truth().charger_voltage_setpoint_v == 53.5


def test_rectifier_minimum_current_and_walk_in_and_cc() -> None:
    plant = _plant("pack: {initial_soc_pct: 40}")
    plant.charger_dc(True, 0.0)
    plant.command_charger_online(50.4, 0.0, 0.0)  # 0 % still gives the minimum ~5.2 A
    plant.step(0.3)  # walk-in ceiling: 0.3 s / 8 s x 62.5 A = 2.3 A
    during_walk_in = plant.truth().charger_current_a
    assert 0.0 < during_walk_in < 5.165
    plant.step(12.0)
    assert plant.truth().charger_current_a == pytest.approx(0.10 * 51.65, rel=1e-6)
    plant.command_charger_online(50.4, 0.4, 12.0)
    plant.step(12.2)
    # current rises at 20 A/s: not there yet
    assert plant.truth().charger_current_a < 0.4 * 51.65 - 1.0
    plant.step(14.0)
    tr = plant.truth()
    assert tr.charger_current_a == pytest.approx(0.4 * 51.65, rel=1e-6)
    assert tr.battery_current_a == pytest.approx(0.4 * 51.65, rel=1e-6)
    assert tr.charger_ac_w == pytest.approx(tr.charger_voltage_v * tr.charger_current_a / 0.95)


def test_rectifier_cv_limits_voltage_and_current_tapers() -> None:
    plant = _plant("pack: {initial_soc_pct: 90, modules: 1}")
    ocv = plant.pack.e_th_v
    plant.charger_dc(True, 0.0)
    setpoint = ocv + 0.05
    for k in range(0, 120, 10):
        plant.command_charger_online(setpoint, 1.0, float(k))
    plant.step(120.0)
    tr = plant.truth()
    assert tr.charger_current_a < 0.05 / (0.0213 + 0.010) + 0.5  # limited by the voltage, not CC
    assert tr.charger_voltage_v == pytest.approx(setpoint, abs=0.02)


def test_rectifier_dc_off_gives_no_current() -> None:
    plant = _plant()
    plant.charger_dc(True, 0.0)
    plant.command_charger_online(50.0, 0.3, 0.0)
    plant.step(20.0)
    assert plant.truth().charger_current_a > 10.0
    plant.charger_dc(False, 20.0)
    plant.step(20.1)
    assert plant.truth().charger_current_a == 0.0
    assert plant.truth().charger_ac_w == 0.0


# --- inverters -----------------------------------------------------------------------------


def test_inverter_follows_demand_with_lag_and_caps_at_limit() -> None:
    plant = _plant()
    plant.command_inverter(0, 5000.0, 0.0)
    plant.step(0.5)
    early = plant.truth().inverter_ac_w[0]
    assert 0.0 < early < 200.0  # ramp 300 W/s
    for k in range(1, 30):
        plant.command_inverter(0, 5000.0, k * 1.0)
    plant.step(29.5)
    assert plant.truth().inverter_ac_w[0] == pytest.approx(900.0, abs=1e-6)


def test_inverter_stops_when_frames_stop() -> None:
    plant = _plant()
    for k in range(10):
        plant.command_inverter(0, 400.0, k * 1.0)
    plant.step(11.9)  # last frame at 9 s, timeout 3 s
    assert plant.truth().inverter_ac_w[0] > 300.0
    assert plant.truth().inverter_fed[0]
    plant.step(12.1)
    tr = plant.truth()
    assert tr.inverter_ac_w[0] == 0.0
    assert not tr.inverter_fed[0]


def _running(inv: Inverter) -> bool:
    # a call, so mypy does not keep the narrowing from an earlier assert
    return inv.running


def test_inverter_below_dc_cutoff_stops_and_restarts_after_delay() -> None:
    p = InverterParams(dc_shutdown_v=43.0, dc_start_v=44.0, start_delay_s=10.0, lag_s=0.0)
    inv = Inverter(p, 0.0, 48.0)
    inv.command(500.0, 0.0)
    assert inv.step(0.1, 0.1, 48.0) > 0.0
    inv.command(500.0, 0.2)
    assert inv.step(0.3, 0.1, 42.9) == 0.0
    assert not inv.running
    inv.command(500.0, 1.0)
    assert inv.step(1.1, 0.1, 43.5) == 0.0  # inside hysteresis: stays off
    inv.command(500.0, 2.0)
    assert inv.step(2.1, 0.1, 44.5) == 0.0  # start delay begins
    for k in range(3, 14):
        inv.command(500.0, float(k))
        inv.step(k + 0.1, 0.1, 44.5)
    assert _running(inv)
    assert inv.output_w > 0.0


def test_inverter_does_not_start_on_an_empty_pack() -> None:
    plant = _plant("pack: {initial_soc_pct: 2}")
    assert plant.pack_voltage_v < 43.0
    _run(plant, 20.0, demand_w=500.0)
    tr = plant.truth()
    assert tr.inverter_ac_w == (0.0,)
    assert tr.inverter_running == (False,)


def test_inverter_sag_under_load_trips_a_small_pack() -> None:
    plant = _plant(
        "pack: {modules: 1, initial_soc_pct: 50}\n"
        "inverters: [{dc_shutdown_v: 45.0, dc_start_v: 45.1, lag_s: 0.0, ramp_w_per_s: 5000}]"
    )
    assert plant.pack_voltage_v > 45.1
    tripped = False
    t = 0.0
    for _ in range(100):
        t += 0.1
        plant.command_inverter(0, 900.0, t)
        plant.step(t)
        tripped = tripped or not plant.truth().inverter_running[0]
    assert tripped


def test_inverter_bad_unit_raises() -> None:
    with pytest.raises(ValueError, match="unit 3"):
        _plant().command_inverter(3, 100.0, 0.0)


def test_two_inverters_are_independent() -> None:
    plant = _plant("inverters: [{name: a}, {name: b, lag_s: 5.0, ramp_w_per_s: 50}]")
    for k in range(5):
        plant.command_inverter(0, 400.0, float(k))
        plant.command_inverter(1, 400.0, float(k))
    plant.step(5.0)
    a, b = plant.truth().inverter_ac_w
    assert a > b > 0.0


# --- cells ---------------------------------------------------------------------------------


def test_cell_at_rest_reads_its_ocv() -> None:
    # one module: parallel modules at different voltages would circulate current
    plant = _plant("pack: {modules: 1}", Profile.constant(0.0))
    plant.step(5.0)
    tr = plant.truth()
    for m, row in enumerate(tr.cell_voltages_v):
        for c, v in enumerate(row):
            assert v == pytest.approx(ocv_from_soc(plant.pack.soc[m][c]), abs=1e-4)


def test_cell_voltage_rises_by_ir_when_charging() -> None:
    plant = _plant("pack: {modules: 1}")
    plant.charger_dc(True, 0.0)
    plant.command_charger_online(55.0, 0.4, 0.0)
    plant.step(20.0)
    tr = plant.truth()
    i = tr.battery_current_a
    assert i == pytest.approx(0.4 * 51.65, rel=1e-3)
    for c, v in enumerate(tr.cell_voltages_v[0]):
        ocv = cell_ocv_v(plant.pack.soc[0][c])
        assert v - ocv == pytest.approx(i * plant.pack.r_ohm[0][c], rel=0.02)


def test_cold_cells_have_higher_resistance() -> None:
    warm = _plant("thermal: {ambient_c: 25}")
    cold = _plant("thermal: {ambient_c: 0}")
    assert cold.pack.r_th_ohm > warm.pack.r_th_ohm * 1.2


def test_ocv_extrapolates_beyond_full_and_empty() -> None:
    assert cell_ocv_v(1.05) > 4.2
    assert cell_ocv_v(-0.05) < 3.0
    assert cell_ocv_v(0.5) == pytest.approx(ocv_from_soc(0.5))


def test_charging_raises_soc_and_temperature() -> None:
    plant = _plant("pack: {modules: 1}\nthermal: {module_heat_capacity_j_per_c: 500}")
    soc0 = plant.soc_pct
    plant.charger_dc(True, 0.0)
    for k in range(0, 600, 10):
        plant.command_charger_online(55.0, 1.0, float(k))
    plant.step(600.0)
    tr = plant.truth()
    charged_ah = 0.0
    # ~58 A (3 kW) into 24.46 Ah: about +38 % in 10 min
    assert tr.soc_pct > soc0 + 30.0
    assert tr.temperatures_c[0] > 20.5
    charged_ah = (tr.soc_pct - soc0) / 100.0 * 24.46
    assert charged_ah == pytest.approx(plant.energy.battery_in_wh / 46.0, rel=0.1)


def test_series_strings_add_cell_voltages() -> None:
    plant = _plant("pack: {modules: 4, modules_per_string: 2}")
    tr = plant.truth()
    string0 = sum(tr.cell_voltages_v[0]) + sum(tr.cell_voltages_v[1])
    assert tr.pack_voltage_v == pytest.approx(string0, rel=0.01)
    assert 80.0 < tr.pack_voltage_v < 100.0


def test_parallel_modules_share_current() -> None:
    plant = _plant()
    _run(plant, 30.0, demand_w=900.0)
    v = plant.pack_voltage_v
    currents = [plant.pack.string_current_a(k, v) for k in range(9)]
    assert sum(currents) == pytest.approx(plant.battery_current_a, rel=1e-9)
    assert all(i < 0 for i in currents)


# --- balancing -----------------------------------------------------------------------------


def test_balancing_bleed_lowers_one_cell() -> None:
    plant = _plant("pack: {initial_soc_spread_pct: 0, capacity_spread_pct: 0}", Profile.constant(0))
    plant.set_balancing(0, frozenset({3}), 0.0)
    assert plant.truth().balancing[0] == frozenset({3})
    plant.step(3600.0)
    soc = plant.pack.soc[0]
    drop = soc[2] - soc[3]
    assert drop == pytest.approx(0.1 * 3600.0 / (24.46 * 3600.0), rel=0.05)
    tr = plant.truth()
    assert tr.cell_voltages_v[0][3] < tr.cell_voltages_v[0][2]
    plant.set_balancing(0, frozenset(), 3600.0)
    assert plant.truth().balancing[0] == frozenset()
    plant.step(7200.0)
    assert soc[2] - soc[3] == pytest.approx(drop, rel=0.05)


def test_balancing_with_duration_ends_by_itself() -> None:
    plant = _plant("pack: {initial_soc_spread_pct: 0, capacity_spread_pct: 0}", Profile.constant(0))
    plant.set_balancing(1, frozenset({0, 11}), 0.0, duration_s=960.0)
    plant.step(959.0)
    assert plant.truth().balancing[1] == frozenset({0, 11})
    plant.step(3600.0)
    assert plant.truth().balancing[1] == frozenset()
    soc = plant.pack.soc[1]
    assert soc[5] - soc[0] == pytest.approx(0.1 * 960.0 / (24.46 * 3600.0), rel=0.05)


def test_balancing_bad_cell_raises() -> None:
    with pytest.raises(ValueError, match="cell"):
        _plant().set_balancing(0, frozenset({12}), 0.0)


# --- meter ---------------------------------------------------------------------------------


def test_meter_period_and_latency() -> None:
    profile = Profile(
        "step", (0.0, 10.0, 10.001, 100.0), (300.0, 300.0, 1300.0, 1300.0), (0, 0, 0, 0)
    )
    plant = _plant("meter: {period_s: 2.0, latency_s: 0.7}", profile)
    assert plant.meter.reading(0.0) is None
    plant.step(0.69)
    assert plant.meter.reading(0.69) is None
    plant.step(0.7)
    first = plant.meter.latest(0.7)
    assert first is not None
    assert (first.t_s, first.available_s, first.value_w, first.payload) == (0.0, 0.7, 300.0, "300")
    plant.step(12.69)
    latest = plant.meter.latest(12.69)
    assert latest is not None
    assert latest.t_s == 10.0
    assert latest.value_w == 300.0
    plant.step(12.7)
    latest = plant.meter.latest(12.7)
    assert latest is not None
    assert latest.t_s == 12.0
    assert latest.value_w == 1300.0


def test_meter_samples_every_half_second_by_default() -> None:
    plant = _plant()
    plant.step(10.0)
    times = [r.t_s for r in plant.meter.take_new(10.0)]
    assert times == pytest.approx([k * 0.5 for k in range(20)])


def test_meter_noise_is_seeded_and_rounded() -> None:
    text = "meter: {noise_w: 50, resolution_w: 10}"
    a = _plant(text, seed=3)
    b = _plant(text, seed=3)
    a.step(20.0)
    b.step(20.0)
    va = [r.value_w for r in a.meter.take_new(20.0)]
    vb = [r.value_w for r in b.meter.take_new(20.0)]
    assert va == vb
    assert len(set(va)) > 3
    assert all(v % 10 == 0 for v in va)


def test_plant_params_are_frozen() -> None:
    params = PlantParams()
    with pytest.raises(ValueError, match="frozen"):
        params.pack.modules = 3  # type: ignore[misc]


def test_inverter_dead_time_delays_each_demand_in_order() -> None:
    p = InverterParams(lag_s=0.0, ramp_w_per_s=1e6, dead_time_s=1.0)
    inv = Inverter(p, 0.0, 48.0)
    inv.command(500.0, 0.0)
    inv.command(200.0, 0.5)
    assert inv.step(0.9, 0.1, 48.0) == 0.0  # nothing has landed yet
    assert inv.step(1.0, 0.1, 48.0) == pytest.approx(500.0)
    assert inv.step(1.4, 0.1, 48.0) == pytest.approx(500.0)
    assert inv.step(1.5, 0.1, 48.0) == pytest.approx(200.0)
    # The frame watchdog counts frames as they arrive, not as they land.
    assert inv.fed(3.5)
    assert not inv.fed(3.6)
