"""Two SoyoSource units of different ratings, each on its own adapter (services/inverter/README.md).

The whole system as a user starts it (`gridzero up`), with the simulator's two serial
endpoints (`socket://`) standing in for two RS485 adapters: a 300 W unit on one, a
1000 W unit on the other. The inverter service alone is configured; the controller learns
the two lines from it and splits the house's load over them, each within its rating.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gridzero.contract import Topics
from gridzero.testing import System, free_port, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]
T = Topics()

PLANT = """\
name: two-adapters
description: the default pack, a 300 W and a 1000 W GTN, each on its own RS485 adapter
inverters:
  - {name: gtn300, max_power_w: 300}
  - {name: gtn1000, max_power_w: 1000}
"""


def test_two_lines_of_different_ratings_each_get_their_share(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(PLANT, encoding="utf-8")
    # a steady 1000 W load, no PV (within the pack's DCL): the controller splits it 500 / 500,
    # and the 300 W line at its cap passes 200 W to the other
    (tmp_path / "profile.csv").write_text("t_s,load_w,pv_w\n0,1000,0\n86400,1000,0\n")
    ports = [free_port(), free_port()]
    units = [
        {"id": "gtn300", "port": f"socket://127.0.0.1:{ports[0]}", "max_power_w": 300,
         "dc_min_v": 43.0, "dc_max_v": 60.0},
        {"id": "gtn1000", "port": f"socket://127.0.0.1:{ports[1]}", "max_power_w": 1000,
         "dc_min_v": 43.0, "dc_max_v": 60.0},
    ]  # fmt: skip
    sut = System(
        tmp_path / "sut",
        sim={
            "plant": str(tmp_path / "plant.yaml"),
            "profile": str(tmp_path / "profile.csv"),
            "inverter_listen": [f"127.0.0.1:{p}" for p in ports],
        },
        settings={"inverter": {"units": units}},
    )
    sut.start()
    probe = sut.probe()
    try:
        described = json.loads(probe.wait_for(T.inverter_units, timeout_s=60))
        assert [line["id"] for line in described["lines"]] == ["gtn300", "gtn1000"]

        def shares() -> tuple[float, float] | None:
            recent = [
                json.loads(p)
                for at, t, p, _r in list(probe.messages)
                if t == T.sim_truth and at >= time.monotonic() - 3
            ]
            if not recent:
                return None
            w300, w1000 = recent[-1]["inverter_w"]
            return float(w300), float(w1000)

        def both_feeding() -> bool:
            got = shares()
            return got is not None and got[0] > 250 and got[1] > 600

        try:
            took = wait_until(both_feeding, 90, "both lines feeding their share")
        except TimeoutError as exc:
            state = probe.last.get(T.controller_state)
            log = sut.log()[-3000:]
            raise AssertionError(f"shares {shares()}; controller {state!r}; {log}") from exc
        w300, w1000 = shares() or (0.0, 0.0)
        print(f"after {took:.0f} s: 300 W line {w300:.0f} W, 1000 W line {w1000:.0f} W")
        assert w300 <= 300 + 5
        assert w1000 <= 1000 + 5
        for line, cap in (("gtn300", 300), ("gtn1000", 1000)):
            state = json.loads(probe.last[T.inverter_state(line)])
            assert state["line"] == line
            assert 0 < state["demand_w"] <= cap
        assert "Traceback" not in sut.log()
    finally:
        probe.close()
        sut.stop()
