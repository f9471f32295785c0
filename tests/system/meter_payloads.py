"""Golden meter payloads of the real shapes, each with its public source.

Shared by the parser unit tests (services/controller/tests/test_controller_meter.py) and the system
tests that publish them to the running system (tests/system/test_system_meter.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Golden:
    """A payload a meter publishes, where, and the grid power it means (W, + import)."""

    preset: str
    topic: str  # where that meter publishes with the doc's settings (docs/meter.md)
    payload: bytes
    grid_w: float
    source: str
    settings: dict[str, object]  # the controller settings docs/meter.md gives for it
    user: str = "meter"  # the broker user that publishes it


# Shelly Pro 3EM (Gen2): the whole `em:0` status on <topic_prefix>/status/em:0 with "Generic
# status update over MQTT" on; keys as in the EM component's status example.
# https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/EM (status),
# https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt (topic). The issue's
# installation uses the topic `shellies/em/status` (set with meter_topic).
SHELLY_PRO_3EM = (
    b'{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,"a_aprt_power":951.9,'
    b'"a_pf":1,"a_freq":50,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,'
    b'"b_aprt_power":951.8,"b_pf":1,"b_freq":50,"c_current":3.03,"c_voltage":236.402,'
    b'"c_act_power":715.4,"c_aprt_power":716.2,"c_pf":1,"c_freq":50,"n_current":null,'
    b'"total_current":11.086,"total_act_power":715.5,"total_aprt_power":2619.9,'
    b'"user_calibrated_phase":[]}'
)

# Shelly EM (Gen1): shellies/<id>/emeter/<i>/power, instantaneous power in W as a bare number.
# https://shelly-api-docs.shelly.cloud/gen1/#shelly-em-mqtt
SHELLY_EM = b"-456.78"

# Tasmota Smart Meter Interface with an SML script naming the meter `SML` and the power
# `Power_curr` (the usual script, e.g. evcc's "Tasmota SML IR reader" page), on tele/<topic>/SENSOR.
# https://tasmota.github.io/docs/Smart-Meter-Interface/
TASMOTA_SML = (
    b'{"Time":"2024-05-01T12:00:00","SML":{"Total_in":12345.6789,"Total_out":2345.6789,'
    b'"Power_curr":-123}}'
)

# Home Assistant automation (docs/meter.md): mqtt.publish of states('sensor.grid_power'),
# a state string such as "789.0" (HA states are text).
HOME_ASSISTANT = b"789.0"

# The original housebatt's meterbox: meterbox/grid, a plain integer W, + import.
METERBOX = b"321"

GOLDEN: tuple[Golden, ...] = (
    Golden(
        "shelly-pro-3em",
        "shellies/em/status",
        SHELLY_PRO_3EM,
        715.5,
        "shelly-api-docs gen2 EM status",
        {"meter_preset": "shelly-pro-3em", "meter_topic": "shellies/em/status"},
    ),
    Golden(
        "shelly-em",
        "shellies/shellyem/emeter/0/power",
        SHELLY_EM,
        -456.78,
        "shelly-api-docs gen1 Shelly EM MQTT",
        {"meter_preset": "shelly-em"},
    ),
    Golden(
        "tasmota-sml",
        "tele/tasmota/SENSOR",
        TASMOTA_SML,
        -123.0,
        "tasmota Smart Meter Interface",
        {"meter_preset": "tasmota-sml"},
    ),
    Golden(
        "home-assistant",
        "gridzero/meter/grid",
        HOME_ASSISTANT,
        789.0,
        "Home Assistant mqtt.publish of a sensor state",
        {"meter_preset": "home-assistant"},
        user="homeassistant",
    ),
    Golden("meterbox", "meterbox/grid", METERBOX, 321.0, "original housebatt", {}),
)
