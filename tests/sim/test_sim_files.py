"""Plant files and profiles: bundled ones load; bad ones give errors naming file, line, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridzero.errors import UsageError
from gridzero_tools.sim.params import PlantParams, bundled_plants, load_plant, parse_plant
from gridzero_tools.sim.profile import Profile, bundled_profiles, load_profile, parse_profile

# --- plant files ---------------------------------------------------------------------------


def test_every_bundled_plant_loads() -> None:
    names = bundled_plants()
    assert "default" in names
    assert len(names) >= 7
    for name in names:
        assert load_plant(name).name == name


def test_default_yaml_states_the_model_defaults() -> None:
    loaded = load_plant("default")
    defaults = PlantParams()
    assert loaded.model_dump(exclude={"name", "description"}) == defaults.model_dump(
        exclude={"name", "description"}
    )


def test_variants_differ_where_they_say() -> None:
    assert load_plant("meter-2s").meter.period_s == 2.0
    assert load_plant("meter-latency").meter.latency_s > 1.0
    assert load_plant("meter-noise").meter.noise_w > 0.0
    assert load_plant("small-pack").pack.modules < load_plant("large-pack").pack.modules
    assert (
        load_plant("slow-inverter").inverters[0].lag_s
        > load_plant("fast-inverter").inverters[0].lag_s
    )
    assert len(load_plant("two-inverters").inverters) == 2
    assert load_plant("inverter-delay").inverters[0].dead_time_s == 1.0


def test_plant_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\npack:\n  modules: 9\ncharger:\n  max_power_w: 3000\n  efficiency: 1.7\n"
    )
    with pytest.raises(UsageError) as err:
        load_plant(path)
    text = str(err.value)
    assert str(path) in text
    assert "line 6" in text
    assert "charger.efficiency" in text
    assert "1.7" in text


def test_plant_error_in_a_list_item_names_its_line() -> None:
    text = "inverters:\n  - name: a\n  - name: b\n    max_power_w: -5\n"
    with pytest.raises(UsageError, match=r"<p> line 4: inverters\.1\.max_power_w = -5"):
        parse_plant(text, "<p>")


def test_plant_cross_field_error() -> None:
    with pytest.raises(UsageError, match=r"line 1: pack: .*modules = 9 is not a multiple"):
        parse_plant("pack:\n  modules: 9\n  modules_per_string: 2\n", "<p>")
    with pytest.raises(UsageError, match="offline_voltage_v = 70"):
        parse_plant("charger: {offline_voltage_v: 70}", "<p>")
    with pytest.raises(UsageError, match="DC window"):
        parse_plant("inverters: [{dc_shutdown_v: 50, dc_start_v: 45}]", "<p>")
    with pytest.raises(UsageError, match="unique"):
        parse_plant("inverters: [{name: a}, {name: a}]", "<p>")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("pack: {modules: 0}", "pack.modules = 0"),
        ("pack: {cell_capacity_ah: .nan}", "pack.cell_capacity_ah"),
        ("pack: {moduels: 3}", "pack.moduels"),
        ("meter: {period_s: -1}", "meter.period_s = -1"),
        ("house: {interpolation: cubic}", "house.interpolation = 'cubic'"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("pack: [1, 2", "not valid YAML"),
        ("inverters: []", "inverters"),
    ],
)
def test_impossible_plant_values(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_plant(text, "plants/x.yaml")
    assert needle in str(err.value)
    assert "plants/x.yaml" in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_bundled_plant() -> None:
    with pytest.raises(UsageError, match=r"known: .*default"):
        load_plant("no-such-plant")


def test_missing_plant_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_plant(tmp_path / "nope.yaml")


# --- profiles ------------------------------------------------------------------------------


def test_every_bundled_profile_loads() -> None:
    names = bundled_profiles()
    assert {"sunny-day", "cloudy-day", "evening-oven", "night-base", "load-steps"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.duration_s >= 3599.0
        assert all(b - a == 1.0 for a, b in zip(profile.t_s[:50], profile.t_s[1:51], strict=False))


def test_profile_interpolates_or_holds() -> None:
    profile = parse_profile("t_s,load_w,pv_w\n0,100,0\n10,200,50\n", "<p>")
    assert profile.at(5.0) == (150.0, 25.0)
    assert profile.at(5.0, hold=True) == (100.0, 0.0)
    assert profile.at(-1.0) == (100.0, 0.0)
    assert profile.at(99.0) == (200.0, 50.0)


def test_profile_extra_columns_and_order_are_fine() -> None:
    profile = parse_profile("pv_w,note,t_s,load_w\n5,x,0,100\n6,y,1,101\n", "<p>")
    assert profile.at(1.0) == (101.0, 6.0)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("t_s,load_w\n0,1\n", "line 1: missing column(s) pv_w"),
        ("", "empty file"),
        ("t_s,load_w,pv_w\n", "no data rows"),
        ("t_s,load_w,pv_w\n0,100,0\n1,-5,0\n", "line 3: field load_w = -5 is negative"),
        ("t_s,load_w,pv_w\n0,100,nan\n", "line 2: field pv_w = 'nan' is not finite"),
        ("t_s,load_w,pv_w\n0,100,0\n1,abc,0\n", "line 3: field load_w = 'abc' is not a number"),
        ("t_s,load_w,pv_w\n0,100,0\n1,100\n", "line 3: field pv_w is missing"),
        ("t_s,load_w,pv_w\n0,1,0\n5,1,0\n5,1,0\n", "line 4: t_s = 5 is not after"),
        ("t_s,load_w,pv_w\n0,1,0\n5,1,0\n3,1,0\n", "line 4: t_s = 3 is not after"),
        ("t_s,load_w,pv_w\n-1,1,0\n", "field t_s = -1 is negative"),
    ],
)
def test_bad_profiles(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_profile(text, "house.csv")
    assert needle in str(err.value)
    assert "house.csv" in str(err.value)


def test_profile_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("t_s,load_w,pv_w\n0,1,0\n1,1,inf\n")
    with pytest.raises(UsageError, match=rf"{path} line 3: field pv_w"):
        load_profile(path)
    with pytest.raises(UsageError, match="cannot read"):
        load_profile(tmp_path / "missing.csv")
    with pytest.raises(UsageError, match="no such bundled profile"):
        load_profile("no-such-profile")


def test_constant_profile() -> None:
    assert Profile.constant(300.0, 20.0).at(1234.0) == (300.0, 20.0)
