"""The grid meter: presets, parsing of the real payload shapes, settings, the stale and
unparseable faults (pure), and the broker ACL derived from the controller's settings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gridzero.contract import DEFAULT_METER_TOPIC, PayloadError
from gridzero.errors import SettingsError
from gridzero.meter import (
    PRESETS,
    MeterPreset,
    MeterSettings,
    MeterSource,
    MeterWatch,
    read_controller_meter,
)
from gridzero.runtime.broker import BrokerProcess
from gridzero.runtime.credentials import main as credentials_main
from gridzero.runtime.credentials import render_acl, render_acl_for
from gridzero.runtime.settings import load_settings
from gridzero_controller.service import ControllerServiceSettings
from tests.system.meter_payloads import GOLDEN, Golden

ROOT = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- presets, parsing


@pytest.mark.parametrize("golden", GOLDEN, ids=[g.preset for g in GOLDEN])
def test_golden_payloads_parse_with_the_docs_settings(golden: Golden) -> None:
    source = MeterSettings.model_validate(golden.settings).meter_source()
    assert source.topic == golden.topic
    assert source.parse(golden.payload) == pytest.approx(golden.grid_w), golden.source


def test_every_preset_has_a_golden_payload() -> None:
    assert {g.preset for g in GOLDEN} == {p.value for p in MeterPreset}


def test_the_presets_shapes() -> None:
    assert PRESETS[MeterPreset.METERBOX] == MeterSource(DEFAULT_METER_TOPIC)
    assert PRESETS[MeterPreset.SHELLY_PRO_3EM].json_path == "total_act_power"
    assert PRESETS[MeterPreset.SHELLY_PRO_3EM].topic.endswith("/status/em:0")
    assert PRESETS[MeterPreset.SHELLY_EM].topic.endswith("/emeter/0/power")
    assert PRESETS[MeterPreset.TASMOTA_SML].json_path == "SML.Power_curr"
    assert all(p.sign == 1 and p.unit == "W" for p in PRESETS.values())  # all + import, W


def test_explicit_settings_override_the_preset() -> None:
    s = MeterSettings(
        meter_preset=MeterPreset.TASMOTA_SML,
        meter_topic="tele/keller/SENSOR",
        meter_json_path="MT631.Power_in",
        meter_sign=-1,
        meter_unit="kW",
    )
    source = s.meter_source()
    assert source == MeterSource("tele/keller/SENSOR", "MT631.Power_in", -1, "kW")
    assert source.parse(b'{"MT631":{"Power_in":0.25}}') == pytest.approx(-250.0)
    # an empty path overrides a preset's path: the payload is then a bare number
    bare = MeterSettings(meter_preset=MeterPreset.SHELLY_PRO_3EM, meter_json_path="")
    assert bare.meter_source().parse(b"12") == 12.0


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b'{"id":0,"a_act_power":5}', ["total_act_power", "not found"]),
        (b"unavailable", ["not JSON"]),
        (b'{"total_act_power":"x"}', ["not a number"]),
        (b'{"total_act_power":true}', ["not a number"]),
        (b'{"total_act_power":NaN}', ["outside"]),
        (b'{"total_act_power":1e9}', ["outside"]),
        (b"[1,2]", ["not found"]),
        (b'{"total_act_power":' + b"9" * 400 + b"}", ["not a number"]),  # OverflowError
        (b'{"total_act_power":' + b"9" * 5000 + b"}", ["not JSON"]),  # > 4300 digits
        (b"[" * 100_000 + b"]" * 100_000, ["not JSON"]),  # RecursionError
    ],
    ids=range(10),
)
def test_malformed_payloads_are_refused_naming_topic_and_path(
    payload: bytes, words: list[str]
) -> None:
    source = MeterSource("shellies/em/status", "total_act_power")
    with pytest.raises(PayloadError) as err:
        source.parse(payload)
    assert "shellies/em/status" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_a_home_assistant_unavailable_state_is_no_reading() -> None:
    with pytest.raises(PayloadError, match="gridzero/meter/grid"):
        PRESETS[MeterPreset.HOME_ASSISTANT].parse(b"unavailable")


@settings(max_examples=400, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["SML", "Power_curr", "total_act_power", "x"]),
                    inner,
                    max_size=3,
                )
            ),
            max_leaves=8,
        ).map(lambda v: __import__("json").dumps(v).encode()),
    ),
    preset=st.sampled_from(list(MeterPreset)),
    unit=st.sampled_from(["W", "kW"]),
)
def test_fuzz_the_parser_gives_a_bounded_reading_or_a_payload_error(
    payload: bytes, preset: MeterPreset, unit: str
) -> None:
    source = MeterSettings(meter_preset=preset, meter_unit=unit).meter_source()
    try:
        watts = source.parse(payload)
    except PayloadError as exc:
        error = str(exc)
    else:
        assert isinstance(watts, float)
        assert math.isfinite(watts)
        assert abs(watts) <= 1_000_000
        return
    assert source.topic in error  # every refusal names the topic


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("topic", ["shellies/#", "tele/+/SENSOR", "$SYS/x", "a b", ""])
def test_a_meter_topic_must_be_a_plain_topic(topic: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(ControllerServiceSettings, None, meter_topic=topic)
    assert "meter_topic" in str(err.value)


def test_meter_settings_from_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRIDZERO_METER_TOPIC", "shellies/em/status")
    with pytest.raises(SettingsError) as err:
        load_settings(ControllerServiceSettings)
    assert "GRIDZERO_METER_TOPIC" in str(err.value)
    assert "settings file" in str(err.value)


def test_the_controller_reads_the_file_the_acl_is_made_from(tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text(
        "meter_preset: shelly-pro-3em\nmeter_topic: shellies/em/status\n", encoding="utf-8"
    )
    controller = load_settings(ControllerServiceSettings, path).meter_source()
    assert read_controller_meter(path) == ("gridzero", controller)
    assert controller.topic == "shellies/em/status"


def test_a_bad_meter_setting_in_the_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text("meter_preset: shelly-3em-pro\n", encoding="utf-8")
    with pytest.raises(SettingsError) as err:
        read_controller_meter(path)
    assert str(path) in str(err.value)
    assert "meter_preset" in str(err.value)
    assert "shelly-3em-pro" in str(err.value)


# --------------------------------------------------------------------------- the ACL


def _section(acl: str, user: str) -> list[str]:
    text = acl.split(f"\nuser {user}\n", 1)[1]
    return text.split("\n\n", 1)[0].splitlines()


def _writes(acl: str, user: str) -> list[str]:
    return [line for line in _section(acl, user) if line.startswith("topic write")]


def test_the_acl_lets_the_meter_write_the_configured_topic_and_the_services_read_it() -> None:
    acl = render_acl(meter_topic="shellies/em/status")
    assert _writes(acl, "meter") == ["topic write shellies/em/status"]
    assert "topic write shellies/em/status" in _section(acl, "homeassistant")
    for user in ("controller", "bms", "telnet-console"):
        assert "topic read shellies/em/status" in _section(acl, user)
    assert "topic write meterbox/grid" not in _writes(acl, "meter")
    assert "# Meter topic: shellies/em/status" in acl


def test_a_meter_topic_under_the_base_is_read_through_the_base_pattern() -> None:
    acl = render_acl(meter_topic="gridzero/meter/grid")
    assert _section(acl, "controller").count("topic read gridzero/meter/grid") == 0
    assert "topic read gridzero/#" in _section(acl, "controller")
    assert _writes(acl, "meter") == ["topic write gridzero/meter/grid"]


def test_credentials_acl_renders_from_the_controller_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text("base_topic: house\nmeter_preset: tasmota-sml\n", encoding="utf-8")
    assert credentials_main(["acl", "--controller-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == render_acl_for(path) == render_acl("house", "tele/tasmota/SENSOR")
    assert "topic read house/#" in out
    assert "topic write tele/tasmota/SENSOR" in out


def test_gridzero_up_gives_its_broker_the_acl_it_rendered(tmp_path: Path) -> None:
    acl = render_acl(meter_topic="shellies/em/status")
    broker = BrokerProcess(tmp_path / "broker", 1, acl=acl)
    broker.prepare({"meter": "pw"})
    assert (tmp_path / "broker" / "config" / "acl").read_text(encoding="utf-8") == acl


def test_compose_credentials_writes_the_acl_from_the_controllers_file() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    creds = compose["services"]["credentials"]
    controller = compose["services"]["controller"]
    assert (
        "gridzero credentials acl --controller-config /config/settings.yaml "
        "--write /mosquitto/config/acl" in creds["command"][0]
    )
    config_mount = "./services/controller/config:/config"
    assert f"{config_mount}:ro" in creds["volumes"]
    assert f"{config_mount}:ro" in controller["volumes"]
    assert "/config/settings.yaml" in controller["command"]


# --------------------------------------------------------------------------- the watch (pure)


def test_a_silent_meter_is_a_fault_naming_the_topic_logged_once() -> None:
    watch = MeterWatch("shellies/em/status", started_s=100.0)
    assert watch.check(104.0, 5.0) == []
    assert watch.faults(104.0, 5.0) == []
    events = watch.check(105.5, 5.0)
    assert len(events) == 1
    assert events[0].level == "warning"
    assert events[0].text.startswith("meter_stale: no reading on shellies/em/status for 6 s")
    assert watch.faults(112.0, 5.0) == ["meter_stale: no reading on shellies/em/status for 12 s"]
    assert watch.check(112.0, 5.0) == []  # the same episode: nothing more to log
    back = watch.reading(113.0)
    assert [e.level for e in back] == ["info"]
    assert "meter back" in back[0].text
    assert watch.faults(113.0, 5.0) == []
    assert watch.check(118.5, 5.0)[0].text.startswith(
        "meter_stale: no new reading on shellies/em/status"
    )  # a new episode is logged again


def test_an_unparseable_meter_is_a_fault_until_a_good_reading() -> None:
    watch = MeterWatch("shellies/em/status", started_s=0.0)
    watch.reading(1.0)
    first = watch.unparseable("shellies/em/status: json path 'total_act_power' not found")
    assert len(first) == 1
    assert first[0].text.startswith("meter_unparseable: shellies/em/status")
    assert watch.unparseable("shellies/em/status: another") == []  # once per episode
    assert watch.faults(2.0, 5.0) == ["meter_unparseable: shellies/em/status: another"]
    assert [e.text for e in watch.reading(3.0)] == ["meter readable again on shellies/em/status"]
    assert watch.faults(3.0, 5.0) == []
