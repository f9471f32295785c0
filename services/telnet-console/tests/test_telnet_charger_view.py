"""The charger's row of the telnet console shows its own alarms (issue 16)."""

from __future__ import annotations

from telnet_samples import TOPICS, charger, full_snapshot, put

from gridzero.contract import Alarm
from gridzero_telnet_console import screen


def test_console_charger_row_shows_the_alarms() -> None:
    snap = full_snapshot()
    quiet = "\n".join(screen.status_lines(snap, 101.0, 200))
    assert "ALARM" not in quiet
    tripped = charger().model_copy(
        update={
            "dc_on": False,
            "limit_reason": "over_current",
            "alarms": [
                Alarm(
                    code="over_current_trip",
                    message="shunt measured 45.0 A, above CCL 30.0 A + margin (33.0 A)",
                    since_ts=1.0,
                )
            ],
        }
    )
    put(snap, TOPICS.charger_state, tripped, 100.0)
    lines = screen.status_lines(snap, 101.0, 200)
    at = next(i for i, line in enumerate(lines) if line.startswith("Charger"))
    assert "limit over_current" in lines[at]
    assert "ALARM shunt measured 45.0 A, above CCL 30.0 A" in lines[at + 1]
