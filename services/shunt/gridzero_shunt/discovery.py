"""Home Assistant discovery of the shunt service: its sensors, settings and buttons."""

from __future__ import annotations

from gridzero import ha
from gridzero.contract import Topics
from gridzero_shunt.settings import ShuntRuntime


def discovery(t: Topics, name: str) -> tuple[str, dict[str, object]]:
    """Home Assistant's device discovery of the shunt service."""
    state = t.shunt_state
    comps = [
        ha.sensor(
            "current",
            "Current",
            state,
            "current_a",
            unit="A",
            device_class="current",
            precision=2,
        ),
        ha.sensor("power", "Power", state, "power_w", unit="W", device_class="power", precision=0),
        ha.sensor(
            "soc",
            "State of charge",
            state,
            "soc_pct",
            unit="%",
            device_class="battery",
            precision=1,
        ),
        ha.sensor(
            "remaining_ah", "Remaining charge", state, "remaining_ah", unit="Ah", precision=1
        ),
        ha.sensor(
            "remaining_wh",
            "Remaining energy",
            state,
            "remaining_wh",
            unit="Wh",
            device_class="energy_storage",
            precision=0,
        ),
        ha.sensor(
            "energy_in",
            "Energy charged",
            state,
            "energy_in_kwh",
            unit="kWh",
            device_class="energy",
            state_class="total_increasing",
            precision=3,
        ),
        ha.sensor(
            "energy_out",
            "Energy discharged",
            state,
            "energy_out_kwh",
            unit="kWh",
            device_class="energy",
            state_class="total_increasing",
            precision=3,
        ),
        ha.sensor(
            "charge_in",
            "Charge in",
            state,
            "charge_in_ah",
            unit="Ah",
            state_class="total_increasing",
            entity_category="diagnostic",
            precision=2,
        ),
        ha.sensor(
            "charge_out",
            "Charge out",
            state,
            "charge_out_ah",
            unit="Ah",
            state_class="total_increasing",
            entity_category="diagnostic",
            precision=2,
        ),
        ha.text_sensor(
            "soc_source",
            "SoC source",
            state,
            # "unknown" would read like Home Assistant's own unknown state
            "{{ 'not estimated yet' if value_json.soc_source == 'unknown'"
            " else value_json.soc_source }}",
            entity_category="diagnostic",
        ),
        ha.text_sensor(
            "sensor", "Sensor", state, "{{ value_json.sensor }}", entity_category="diagnostic"
        ),
        ha.sensor(
            "zero_offset",
            "Zero offset (counts)",
            state,
            "offset_counts",
            entity_category="diagnostic",
            precision=2,
        ),
        ha.sensor(
            "current_gain",
            "Current gain (start-up)",
            state,
            "gain",
            entity_category="diagnostic",
            precision=3,
        ),
        *ha.settings_components(ShuntRuntime, t, name),
        ha.button("soc_full", "Set SoC to 100 %", t.action_set(name, "soc_full")),
        ha.button(
            "calibrate_zero",
            "Calibrate zero (no current!)",
            t.action_set(name, "calibrate_zero"),
        ),
    ]
    return ha.device_discovery(
        ha.service_device(name, "ADS1115 + 100 A / 75 mV shunt"),
        comps,
        t.status(name),
    )
