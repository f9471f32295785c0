"""Fuzz targets of the simulator: its fault parser and its MQTT handlers (fault commands
included), run by `gridzero fuzz` (groups contract and sim-handlers)."""

from __future__ import annotations

from typing import Any

from gridzero.contract import Topics
from gridzero.errors import UsageError
from gridzero.runtime.fuzz import fuzz_tag, service_targets
from gridzero.runtime.fuzzkit import Target
from gridzero_tools.sim import faults

# Valid fault commands as the sim's handler receives them on sim/fault/set.
SIM_FAULTS = (
    b'{"kind": "load_step", "value": 500, "duration_s": 1}',
    b'{"kind": "meter_junk", "duration_s": 2}',
    b'{"kind": "cell_drift", "target": "0:1:3", "value": 0.5}',
    b'{"kind": "module_silent", "target": "1:1", "duration_s": 3}',
    b'{"kind": "over_temperature", "target": "0:2", "value": 30}',
    b'{"kind": "clear", "target": ""}',
    b'{"kind": "cell_leak", "module": 0, "cell": 3, "current_a": 0.5}',
    b'{"kind": "gateway_restart", "target": "0"}',
)


def fault_targets() -> list[Target]:
    """`parse_fault` on its own (the handler below also gets these through MQTT)."""
    fault_corpus = (
        b'{"kind": "load_step", "extra_w": 1500, "duration_s": 120}',
        b'{"kind": "cell_drift", "module": 0, "cell": 3, "offset_v": 0.2}',
        b'{"kind": "gateway_restart", "unit": 0}',
        b'{"kind": "bus_garbage", "bus": "charger", "rate_hz": 50}',
    )

    def fault(data: bytes) -> object:
        return faults.parse_fault(data)

    return [Target("sim parse_fault", fault, (UsageError,), fault_corpus, True)]


def harness_settings() -> dict[str, Any]:
    """The simulator on virtual buses of its own and a free port."""
    tag = fuzz_tag()
    settings: dict[str, Any] = {
        "can_hub": "",
        "bms_buses": [
            {"interface": "virtual", "channel": f"{tag}s0"},
            {"interface": "virtual", "channel": f"{tag}s1"},
        ],
        "charger_bus": {"interface": "virtual", "channel": f"{tag}sc"},
        "inverter_listen": ["127.0.0.1:0"],
    }
    return settings


def handler_targets() -> list[Target]:
    """Every MQTT handler of the simulator, started on virtual buses and a free port."""

    def corpora(topics: Topics) -> dict[str, tuple[bytes, ...]]:
        return {topics.sim_fault_set: SIM_FAULTS}

    return service_targets("sim", harness_settings(), corpora)
