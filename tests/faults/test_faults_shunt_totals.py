"""The shunt's energy totals never go back across a crash.

Found by the continuity run (SIGKILL of the shunt): the totals were published every second
but written every `store_flush_s`, so a restart restored values below what Home Assistant
had already seen; a `total_increasing` sensor that decreases reads as a meter reset and the
whole total is counted again. Now the published totals are the ones on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from gridzero.contract import ShuntState, Topics
from gridzero.runtime.service import Context
from gridzero_shunt.service import STORE_KEY, Shunt, ShuntSettings

T = Topics()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _shunt(data_dir: Path, clock: _Clock, states: list[ShuntState]) -> Shunt:
    settings = ShuntSettings(i2c_bus="sim", data_dir=data_dir, store_flush_s=2.0)
    ctx = Context("shunt", settings, clock=clock)

    def capture(topic: str, payload: object, **_kw: object) -> None:
        if topic == T.shunt_state and isinstance(payload, ShuntState):
            states.append(payload)

    ctx.publish = capture  # type: ignore[method-assign]
    shunt = Shunt(settings, ctx)
    shunt.start()
    assert shunt.model is not None
    shunt.model.input_v = 20.0 * shunt.current_settings.shunt_ohm  # 20 A charging
    return shunt


def _run(shunt: Shunt, clock: _Clock, seconds: int, on_disk: list[float], path: Path) -> None:
    for _ in range(seconds):
        for _ in range(8):
            clock.now += 0.125
            shunt.sample()
        shunt.publish_state()
        on_disk.append(json.loads(path.read_text())[STORE_KEY]["ah_in"] if path.exists() else 0.0)


def test_published_totals_are_never_ahead_of_the_disk(tmp_path: Path) -> None:
    clock = _Clock()
    states: list[ShuntState] = []
    shunt = _shunt(tmp_path, clock, states)
    path = tmp_path / "shunt.json"
    on_disk: list[float] = []
    _run(shunt, clock, 9, on_disk, path)
    stored = json.loads(path.read_text())[STORE_KEY]
    published = [s.charge_in_ah for s in states]
    assert published[-1] > 0.02  # 20 A for 9 s ≈ 0.05 Ah
    assert all(p <= d + 1e-12 for p, d in zip(published, on_disk, strict=True))
    assert published[-1] <= stored["ah_in"]
    # SIGKILL now: the counters the next process starts from
    again: list[ShuntState] = []
    restarted = _shunt(tmp_path, clock, again)
    restarted.publish_state(integrate=False)
    assert again[-1].charge_in_ah >= published[-1]
    assert again[-1].energy_in_kwh >= states[-1].energy_in_kwh
    # and they keep increasing from there
    _run(restarted, clock, 3, [], path)
    values = [s.charge_in_ah for s in states + again]
    assert values == sorted(values)
