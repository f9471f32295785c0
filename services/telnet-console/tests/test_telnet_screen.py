"""Snapshot ingest and the renderer: every value shown, widths respected, bus text made safe."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telnet_samples import (
    TOPICS,
    controller,
    full_snapshot,
    inverter,
    log_record,
    put,
    raw_frame,
    shunt,
)

from gridzero.contract import ControllerMode
from gridzero_telnet_console import screen
from gridzero_telnet_console.commands import ConsoleState, View
from gridzero_telnet_console.snapshot import (
    MAX_INVERTERS,
    Snapshot,
    ingest,
    subscriptions,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def visible_lines(frame_text: str) -> list[str]:
    return ANSI.sub("", frame_text).split("\r\n")


def status_text(snap: Snapshot, now_s: float = 101.0, width: int = 200) -> str:
    return "\n".join(screen.status_lines(snap, now_s, width))


# --- snapshot ----------------------------------------------------------------------


def test_ingest_keeps_every_state_topic() -> None:
    snap = full_snapshot()
    assert snap.controller is not None
    assert snap.limits is not None
    assert snap.pack is not None
    assert snap.charger is not None
    assert snap.shunt is not None
    assert set(snap.inverters) == {"gti1"}
    assert len(snap.modules) == 8
    assert snap.status["bms"] == "online"
    assert snap.settings["inverter.gti1.max_power_w"] == "900"
    assert snap.setting_names("controller") == [
        "charge_enabled",
        "discharge_enabled",
        "mode",
        "target_grid_w",
    ]
    assert snap.bad_payloads == 0


def test_ingest_rejects_invalid_payloads_and_foreign_topics() -> None:
    snap = Snapshot()
    assert not ingest(snap, TOPICS, TOPICS.controller_state, b"{not json", 1.0)
    assert not ingest(snap, TOPICS, TOPICS.status("bms"), b"maybe", 1.0)
    assert snap.bad_payloads == 2
    assert "bms/status" in snap.last_error
    assert not ingest(snap, TOPICS, "other/bms/state", b"{}", 1.0)
    assert not ingest(snap, TOPICS, "gridzero/nosuchservice/status", b"online", 1.0)
    assert not ingest(snap, TOPICS, "gridzero/bms/whatever", b"x", 1.0)
    assert snap.controller is None


def test_ingest_bounds_memory() -> None:
    snap = Snapshot()
    for n in range(MAX_INVERTERS + 10):
        put(snap, TOPICS.inverter_state(f"u{n}"), inverter(f"u{n}"))
    assert len(snap.inverters) == MAX_INVERTERS
    for n in range(2000):
        put(snap, TOPICS.log("bms"), log_record(f"line {n}"))
    assert len(snap.logs) == 500


def test_offline_status_forgets_the_data_age() -> None:
    snap = full_snapshot()
    assert "bms" in snap.last_seen_s
    put(snap, TOPICS.status("bms"), "offline")
    assert "bms" not in snap.last_seen_s
    assert snap.status["bms"] == "offline"


def test_subscriptions_cover_the_state_topics() -> None:
    filters = subscriptions(TOPICS)
    assert TOPICS.controller_state in filters
    assert "gridzero/+/ack" in filters
    assert "gridzero/+/+/settings/+" in filters


@settings(max_examples=200)
@given(st.text(max_size=60), st.binary(max_size=300))
def test_any_message_never_crashes_ingest(suffix: str, payload: bytes) -> None:
    snap = full_snapshot()
    for service in ("bms", "inverter", "controller"):
        ingest(snap, TOPICS, f"gridzero/{service}/{suffix}", payload, 5.0)
    for width in (20, 80):
        for view in View:
            state = ConsoleState(view=view)
            lines = screen.body(snap, state, 6.0, width=width, height=24)
            assert all(isinstance(line, str) for line in lines)


# --- status screen -----------------------------------------------------------------


def test_status_shows_every_group() -> None:
    text = status_text(full_snapshot())
    for expected in (
        "+123 W",  # grid
        "target +0 W",
        "auto (charge on, discharge on)",
        "set-point 850 W charging",
        "link ok  DC on  53.10 V  16.0 A  850 W",  # charger
        "gti1  demand 0 W (asked 0, cap 900 dcl)  link ok  sending",  # inverter
        "52.80 V  16.00 A charging  SoC 64.2 % (ocv)",  # pack
        "min 3.912 V (bus 0 mod 2 cell 7)",
        "max 3.968 V (bus 1 mod 3 cell 1)",
        "delta 56 mV",
        "min 18.0 C  max 22.5 C",
        "CVL 57.60 V  CCL 32.0 A  DCL 60.0 A",
        "Alarms    none",
        "on, 2 cell(s) bleeding",
        "bms online 1.0s",
        "telnet-console online",
    ):
        assert expected in text, expected


def test_status_shows_alarms_reasons_and_staleness() -> None:
    snap = full_snapshot(alarm=True)
    text = status_text(snap, now_s=120.0)
    assert "ALARM cell_over_voltage: cell 0-3-7 4.21 V > 4.20 V" in text
    assert "why: cell_high" in text
    assert "charge NO" in text
    assert "[STALE 20.0s]" in text


def test_status_shows_the_rule_in_force_its_reason_and_the_price() -> None:
    snap = Snapshot()
    state = controller().model_copy(
        update={
            "rule": "charge_below_price",
            "rule_why": "price 0.08 below 0.1: charge to 80 % at up to 2000 W; reached 80 %: "
            "holding",
            "price": 0.08,
        }
    )
    put(snap, TOPICS.controller_state, state)
    assert (
        "Rule      charge_below_price: price 0.08 below 0.1: charge to 80 % at up to 2000 W; "
        "reached 80 %: holding  price 0.08"
    ) in status_text(snap)
    # a controller from before schedules sends neither: no row
    old = controller().model_copy(update={"rule": "none", "rule_why": "", "price": None})
    put(snap, TOPICS.controller_state, old)
    assert "Rule" not in status_text(snap)


def test_status_with_nothing_received() -> None:
    text = status_text(Snapshot())
    assert "no controller state" in text
    assert "no bms limits" in text
    assert "bms --" in text


def test_mode_from_state_when_no_setting_echo() -> None:
    snap = Snapshot()
    put(snap, TOPICS.controller_state, controller(ControllerMode.CHARGE_ONLY))
    # the mode forbids discharging; whether charging is enabled is not known yet
    assert "charge_only (charge ?, discharge off)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "charge_enabled"), "true")
    assert "charge_only (charge on, discharge off)" in status_text(snap)


def test_status_combines_the_mode_and_the_enables() -> None:
    snap = full_snapshot()
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "false")
    assert "auto (charge on, discharge off)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "charge_enabled"), "false")
    assert "auto (charge off, discharge off)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "charge_enabled"), "true")
    put(snap, TOPICS.setting("controller", "mode"), "discharge_only")
    assert "discharge_only (charge off, discharge off)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "true")
    assert "discharge_only (charge off, discharge on)" in status_text(snap)
    for mode in ("hold", "off"):
        put(snap, TOPICS.setting("controller", "mode"), mode)
        assert f"{mode} (charge off, discharge off)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "mode"), "constant_power")
    assert "constant_power (charge on, discharge on)" in status_text(snap)
    put(snap, TOPICS.setting("controller", "charge_enabled"), "garbage")
    assert "constant_power (charge ?, discharge on)" in status_text(snap)


def test_bus_text_cannot_inject_escape_sequences() -> None:
    snap = full_snapshot()
    put(snap, TOPICS.log("bms"), log_record("evil \x1b[2J\x1b]0;title\x07 text\nsecond"))
    lines = screen.log_lines(snap, ConsoleState(view=View.LOG), rows=20)
    assert "\x1b" not in "".join(lines)
    assert any("evil ?[2J?]0;title? text | second" in line for line in lines)


# --- widths ------------------------------------------------------------------------


@pytest.mark.parametrize("width", [20, 40, 80, 132])
def test_frame_never_exceeds_the_width(width: int) -> None:
    snap = full_snapshot()
    for view in View:
        state = ConsoleState(view=view)
        lines = screen.body(snap, state, 101.0, width=width, height=50)
        text = screen.frame(lines, "> a very long message " * 10, width, 50)
        for line in visible_lines(text):
            assert len(line) <= width - 1, (view, line)


def test_header_wraps_the_key_line() -> None:
    narrow = screen.header(40, ConsoleState())
    wide = screen.header(200, ConsoleState())
    assert len(wide) == 2
    assert len(narrow) > 3
    joined = " | ".join(narrow[1:])
    assert "space pause" in joined
    assert "q quit" in joined


def test_frame_redraws_in_place() -> None:
    text = screen.frame(["one", "two"], "> msg", 80, 24)
    assert text.startswith("\x1b[H")
    assert "\x1b[2J" not in text
    assert text == "\x1b[Hone\x1b[K\r\ntwo\x1b[K\r\n> msg\x1b[K\x1b[J"
    assert screen.frame(["x"], "", 80, 24, full=True).startswith("\x1b[2J\x1b[H")


def test_frame_cuts_lines_to_the_height() -> None:
    text = screen.frame([f"line {n}" for n in range(30)], "prompt", 80, 10)
    lines = visible_lines(text)
    assert len(lines) == 10
    assert lines[-1] == "prompt"
    assert "22 more line(s)" in lines[-2]  # 8 shown + this marker + the prompt


def test_typed_line_keeps_its_end_visible() -> None:
    assert screen.fit_tail(":" + "x" * 100 + "END", 40).endswith("END")
    assert len(screen.fit_tail(":" + "x" * 100, 40)) == 39


# --- other views -------------------------------------------------------------------


def test_cell_table() -> None:
    lines = screen.cell_lines(full_snapshot(), 101.0)
    rows = [line for line in lines if line[:1].isdigit()]
    assert len(rows) == 8
    numbers = next(line for line in lines if line.startswith("module"))
    assert numbers.split()[1:] == [str(n) for n in range(1, 13)]
    # the mark follows its value, and a space keeps it off the next value
    assert " 3935  3912v 3937 " in rows[1]  # bus 0 module 2: the lowest cell, cell 7
    assert rows[6].startswith("1-3     3968^ 3931 ")  # bus 1 module 3: the highest, cell 1
    assert " 3932* 3933 " in rows[0]  # module 1 bleeds cell 3
    # each value sits under its cell number
    assert numbers.index(" 7 ") + 1 == rows[1].index("3912v") + 3
    assert all(len(line) <= 79 for line in lines)
    assert any(line.startswith("T in C: 0-1 20 21 | 0-2 20 21") for line in lines)


def test_log_view_filters_service_and_level() -> None:
    snap = full_snapshot()
    put(snap, TOPICS.log("bms"), log_record("bms debug", "DEBUG"))
    put(snap, TOPICS.log("bms"), log_record("bms warning", "WARNING"))
    put(snap, TOPICS.log("charger"), log_record("charger info"))
    text = "\n".join(screen.log_lines(snap, ConsoleState(log_service="bms", log_level="INFO"), 20))
    assert "bms warning" in text
    assert "bms debug" not in text
    assert "charger info" not in text
    everything = ConsoleState(log_service="all", log_level="DEBUG")
    text = "\n".join(screen.log_lines(snap, everything, 20))
    assert all(word in text for word in ("bms debug", "bms warning", "charger info"))


def test_raw_view() -> None:
    snap = full_snapshot()
    put(snap, TOPICS.raw("charger"), raw_frame())
    text = "\n".join(screen.raw_lines(snap, ConsoleState(view=View.RAW, raw_service="charger"), 10))
    assert "can0 rx 1b0 00 11" in text


def test_help_lists_every_key_and_command() -> None:
    text = "\n".join(screen.help_lines())
    for word in ("space", "C/B/I", "%", "!", ":set", ":get", ":mode", ":log"):
        assert word in text


def test_long_message_keeps_its_start_and_typed_line_its_end() -> None:
    message = "> " + "m" * 100 + "END"
    assert visible_lines(screen.frame([], message, 40, 24))[-1].startswith("> mmm")
    typed = ":" + "t" * 100 + "END"
    assert visible_lines(screen.frame([], typed, 40, 24, typing=True))[-1].endswith("END")


@pytest.mark.parametrize(
    ("current_a", "setpoint_w", "shown"),
    [
        (-3.22, -170.0, ("3.22 A discharging", "set-point 170 W discharging")),
        (16.0, 850.0, ("16.00 A charging", "set-point 850 W charging")),
        (-0.001, -0.4, ("0.00 A  SoC", "set-point 0 W\n")),
    ],
)
def test_battery_current_and_set_point_read_as_words(
    current_a: float, setpoint_w: float, shown: tuple[str, str]
) -> None:
    """Issue 21: `-3.22 A (+ charging)` read as if the battery were charging."""
    snap = full_snapshot()
    put(snap, TOPICS.shunt_state, shunt().model_copy(update={"current_a": current_a}), 100.0)
    control = controller().model_copy(update={"setpoint_w": setpoint_w})
    put(snap, TOPICS.controller_state, control, 100.0)
    text = status_text(snap) + "\n"
    for expected in shown:
        assert expected in text
    assert "+ charging" not in text
    assert "-3.22" not in text
