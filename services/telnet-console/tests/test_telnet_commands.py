"""Key and ':' line interpreter: each key's action, bad input gives one line and sends nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from telnet_samples import TOPICS, controller, full_snapshot, module, put

from gridzero.contract import ControllerMode
from gridzero_telnet_console.commands import (
    Action,
    Interpreter,
    Message,
    Publish,
    Quit,
    View,
)
from gridzero_telnet_console.protocol import Key, Named
from gridzero_telnet_console.screen import cell_lines
from gridzero_telnet_console.snapshot import Snapshot

ENTER = Key(named=Named.ENTER)


def press(interp: Interpreter, snap: Snapshot, text: str) -> list[Action]:
    actions: list[Action] = []
    for char in text:
        key = ENTER if char == "\n" else Key(char=char)
        actions += interp.key(key, snap)
    return actions


def published(actions: Sequence[Action]) -> list[tuple[str, str]]:
    return [(a.topic, a.payload) for a in actions if isinstance(a, Publish)]


def messages(actions: Sequence[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Message)]


def view_of(interp: Interpreter) -> View:
    return interp.state.view  # a call, so mypy does not narrow across key presses


def paused_of(interp: Interpreter) -> bool:
    return interp.state.paused


def line_of(interp: Interpreter) -> str | None:
    return interp.state.line


def fresh() -> tuple[Interpreter, Snapshot]:
    return Interpreter(TOPICS, max_line_chars=60), full_snapshot()


MODE_SET = "gridzero/controller/settings/mode/set"
CHARGE_SET = "gridzero/controller/settings/charge_enabled/set"
DISCHARGE_SET = "gridzero/controller/settings/discharge_enabled/set"


def test_views_and_pause() -> None:
    interp, snap = fresh()
    press(interp, snap, " ")
    assert paused_of(interp)
    press(interp, snap, " ")
    assert not paused_of(interp)
    for key, view in (("p", View.CELLS), ("h", View.HELP), ("d", View.LOG)):
        press(interp, snap, key)
        assert view_of(interp) is view
        press(interp, snap, key)
        assert view_of(interp) is View.STATUS
    press(interp, snap, "p")
    interp.key(Key(named=Named.ESCAPE), snap)
    assert view_of(interp) is View.STATUS


def test_quit_keys() -> None:
    interp, snap = fresh()
    assert any(isinstance(a, Quit) for a in press(interp, snap, "q"))
    assert any(isinstance(a, Quit) for a in interp.key(Key(named=Named.INTERRUPT), snap))
    assert any(isinstance(a, Quit) for a in interp.key(Key(named=Named.EOF), snap))


def test_charge_and_discharge_keys_toggle_the_enables() -> None:
    interp, snap = fresh()  # both enables echoed "true"
    actions = press(interp, snap, "c")
    assert published(actions) == [(CHARGE_SET, "false")]
    assert messages(actions) == ["charge off (controller.charge_enabled -> false)"]
    actions = press(interp, snap, "i")
    assert published(actions) == [(DISCHARGE_SET, "false")]
    assert messages(actions) == ["discharge off (controller.discharge_enabled -> false)"]
    put(snap, TOPICS.setting("controller", "charge_enabled"), "false")
    actions = press(interp, snap, "c")
    assert published(actions) == [(CHARGE_SET, "true")]
    assert messages(actions) == ["charge on (controller.charge_enabled -> true)"]
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "false")
    actions = press(interp, snap, "i")
    assert published(actions) == [(DISCHARGE_SET, "true")]
    assert messages(actions) == ["discharge on (controller.discharge_enabled -> true)"]


def test_toggles_read_the_echo_not_the_last_key() -> None:
    interp, snap = fresh()
    # no echo came back in between: the controller still says true, so both presses ask for false
    assert published(press(interp, snap, "cc")) == [(CHARGE_SET, "false")] * 2
    assert published(press(interp, snap, "ii")) == [(DISCHARGE_SET, "false")] * 2


def test_toggles_ignore_the_mode() -> None:
    for mode in ControllerMode:
        interp, snap = fresh()
        put(snap, TOPICS.setting("controller", "mode"), mode.value)
        put(snap, TOPICS.setting("controller", "discharge_enabled"), "false")
        actions = press(interp, snap, "ci")
        assert published(actions) == [(CHARGE_SET, "false"), (DISCHARGE_SET, "true")], mode
        assert all(MODE_SET not in topic for topic, _ in published(actions))


def test_enabling_says_when_the_mode_still_forbids_it() -> None:
    interp, snap = fresh()
    put(snap, TOPICS.setting("controller", "mode"), "charge_only")
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "false")
    assert messages(press(interp, snap, "i")) == [
        "discharge on (controller.discharge_enabled -> true); mode charge_only still forbids it"
    ]
    assert messages(press(interp, snap, "c")) == ["charge off (controller.charge_enabled -> false)"]


def test_toggles_send_nothing_when_the_enable_is_unknown() -> None:
    # no echo at all (even with the controller's state and mode known)
    snap = Snapshot()
    put(snap, TOPICS.controller_state, controller())
    put(snap, TOPICS.setting("controller", "mode"), "auto")
    for key, name in (("c", "charge_enabled"), ("i", "discharge_enabled")):
        actions = Interpreter(TOPICS).key(Key(char=key), snap)
        assert published(actions) == []
        assert messages(actions) == [
            f"controller.{name} unknown (no echo from the controller yet); nothing sent"
        ]
    # a cleared retained echo or a value that is not a boolean is not a value
    for text in ("", "maybe"):
        interp, snap = fresh()
        put(snap, TOPICS.setting("controller", "charge_enabled"), text)
        actions = press(interp, snap, "c")
        assert published(actions) == []
        assert "unknown" in messages(actions)[0]


def test_toggles_send_nothing_while_the_controller_is_offline() -> None:
    for status in ("offline", "stopped"):
        interp, snap = fresh()
        put(snap, TOPICS.status("controller"), status)
        for key in "ci":
            actions = press(interp, snap, key)
            assert published(actions) == []
            assert len(messages(actions)) == 1
            assert f"controller is {status}" in messages(actions)[0]
            assert "nothing sent" in messages(actions)[0]
        put(snap, TOPICS.status("controller"), "online")
        assert published(press(interp, snap, "c")) == [(CHARGE_SET, "false")]


def test_force_balance_button() -> None:
    interp, snap = fresh()
    assert published(press(interp, snap, "l")) == [
        ("gridzero/bms/action/force_balance/set", "PRESS")
    ]


def test_soc_keys_need_confirmation() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, "!")
    assert published(actions) == []
    assert "press y" in messages(actions)[0]
    # a line-mode client sends Enter after the key: that is not a cancel
    assert published(press(interp, snap, "\ny")) == [
        ("gridzero/shunt/action/soc_full/set", "PRESS")
    ]
    assert published(press(interp, snap, "%y")) == [
        ("gridzero/shunt/action/soc_from_voltage/set", "PRESS")
    ]
    actions = press(interp, snap, "%n")
    assert published(actions) == []
    assert messages(actions)[-1] == "cancelled; nothing sent"


def test_raw_debug_keys() -> None:
    interp, snap = fresh()
    assert published(press(interp, snap, "C")) == [
        ("gridzero/charger/settings/raw_debug/set", "true")
    ]
    assert view_of(interp) is View.RAW
    assert published(press(interp, snap, "B")) == [
        ("gridzero/charger/settings/raw_debug/set", "false"),
        ("gridzero/bms/settings/raw_debug/set", "true"),
    ]
    assert published(press(interp, snap, "B")) == [("gridzero/bms/settings/raw_debug/set", "false")]
    assert view_of(interp) is View.STATUS


def test_log_view_keys() -> None:
    interp, snap = fresh()
    press(interp, snap, "d>")
    assert interp.state.log_service == "bms"
    press(interp, snap, "++")
    assert interp.state.log_level == "DEBUG"
    press(interp, snap, "-----")
    assert interp.state.log_level == "ERROR"
    interp.key(Key(named=Named.LEFT), snap)
    assert interp.state.log_service == "all"


def test_key_then_enter_like_a_line_mode_client() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, "p\n")
    assert view_of(interp) is View.CELLS
    assert not messages(actions)


def test_unknown_key_says_so() -> None:
    interp, snap = fresh()
    assert messages(press(interp, snap, "z")) == ["key 'z' does nothing here; h for help"]


# --- the ':' line ------------------------------------------------------------------


def test_set_known_setting() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, ":set controller.target_grid_w 50\n")
    assert published(actions) == [("gridzero/controller/settings/target_grid_w/set", "50")]
    assert interp.state.line is None


def test_set_unit_setting() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, ":set inverter.gti1.max_power_w 800\n")
    assert published(actions) == [("gridzero/inverter/gti1/settings/max_power_w/set", "800")]


def test_set_refusals_send_nothing() -> None:
    interp, snap = fresh()
    cases = {
        ":set controller.nosuch 1\n": "unknown setting controller.nosuch",
        ":set shunt.x 1\n": "no settings seen from shunt",
        ":set nosvc.x 1\n": "unknown service 'nosvc'",
        ":set controller 1\n": "write <service>.<setting>",
        ":set controller.a$b 1\n": "names are letters",
        ":set controller.mode\n": "usage: :set",
        ":frobnicate\n": "unknown command 'frobnicate'",
    }
    for line, expected in cases.items():
        actions = press(interp, snap, line)
        assert published(actions) == [], line
        assert any(expected in m for m in messages(actions)), (line, messages(actions))


def test_mode_and_get() -> None:
    interp, snap = fresh()
    assert published(press(interp, snap, ":mode hold\n")) == [(MODE_SET, "hold")]
    assert messages(press(interp, snap, ":get controller.mode\n")) == ["controller.mode = auto"]
    assert messages(press(interp, snap, ":get controller\n")) == [
        "controller: charge_enabled, discharge_enabled, mode, target_grid_w"
    ]
    assert messages(press(interp, snap, ":get controller.charge_enabled\n")) == [
        "controller.charge_enabled = true"
    ]


def test_log_and_raw_commands() -> None:
    interp, snap = fresh()
    press(interp, snap, ":log bms debug\n")
    assert view_of(interp) is View.LOG
    assert (interp.state.log_service, interp.state.log_level) == ("bms", "DEBUG")
    assert "is not one of" in messages(press(interp, snap, ":log bms loud\n"))[0]
    actions = press(interp, snap, ":raw inverter\n")
    assert published(actions) == [("gridzero/inverter/settings/raw_debug/set", "true")]


def test_line_editing() -> None:
    interp, snap = fresh()
    press(interp, snap, ":mode hod")
    interp.key(Key(named=Named.BACKSPACE), snap)
    assert line_of(interp) == "mode ho"
    interp.key(Key(named=Named.ERASE_LINE), snap)
    assert line_of(interp) == ""
    interp.key(Key(named=Named.BACKSPACE), snap)
    assert line_of(interp) is None  # backspace on an empty line closes it
    press(interp, snap, ":quit")
    interp.key(Key(named=Named.ESCAPE), snap)
    assert line_of(interp) is None  # Esc closes without running


def test_line_length_is_capped() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, ":" + "x" * 100)
    assert line_of(interp) == "x" * 60
    assert "limited to 60" in messages(actions)[-1]


def test_control_characters_in_a_value_are_refused() -> None:
    interp, snap = fresh()
    interp.state.line = "set controller.mode a\u200bb"
    actions = interp.key(ENTER, snap)
    assert published(actions) == []


KEYS = st.one_of(
    st.builds(lambda c: Key(char=c), st.characters(codec="utf-8")),
    st.builds(lambda n: Key(named=n), st.sampled_from(list(Named))),
    st.just(Key(char=":")),
    st.just(ENTER),
)


@settings(max_examples=200)
@given(st.lists(KEYS, max_size=80))
def test_any_keys_never_crash_and_only_publish_known_topics(keys: list[Key]) -> None:
    interp, snap = fresh()
    for key in keys:
        for action in interp.key(key, snap):
            if isinstance(action, Publish):
                assert action.topic.startswith("gridzero/")
                assert action.topic.endswith("/set")
                assert "\n" not in action.payload
            if isinstance(action, Message):
                assert "\n" not in action.text
        assert interp.state.line is None or len(interp.state.line) <= 60


def test_capital_r_restarts_the_service_its_second_key_names() -> None:
    """housebatt's `R` rebooted the ESP32 (housebatt.ino line 887); here it restarts one
    service through its `restart` button, and only after a second key names it."""
    interp, snap = fresh()
    actions = press(interp, snap, "R")
    assert published(actions) == []
    assert messages(actions) == [
        "restart which service? b bms c charger i inverter s shunt o controller "
        "t telnet-console; any other key cancels"
    ]
    assert published(press(interp, snap, "\nb")) == [("gridzero/bms/action/restart/set", "PRESS")]
    assert published(press(interp, snap, "Ro")) == [
        ("gridzero/controller/action/restart/set", "PRESS")
    ]
    actions = press(interp, snap, "Ry")  # y is not a service: cancels
    assert published(actions) == []
    assert messages(actions)[-1] == "cancelled; nothing sent"


def test_small_r_restarts_charging_after_y() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, "r")
    assert published(actions) == []
    assert messages(actions)[0].startswith("press y to restart charging")
    assert published(press(interp, snap, "y")) == [
        (CHARGE_SET, "true"),
        ("gridzero/charger/action/reset_over_current/set", "PRESS"),
    ]
    assert published(press(interp, snap, "rn")) == []


def test_minus_explains_the_sign_is_a_start_up_setting_and_sends_nothing() -> None:
    interp, snap = fresh()
    actions = press(interp, snap, "-")
    assert published(actions) == []
    assert "start-up setting `invert`" in messages(actions)[0]


def test_the_cells_view_marks_a_suspect_cell_and_leaves_it_out_of_lowest() -> None:
    snap = full_snapshot()
    before = "\n".join(cell_lines(snap, 100.0))
    assert "3912v" in before
    suspect = module(0, 2).model_copy(update={"suspect_cells": [7]})  # the 3912 mV cell
    put(snap, TOPICS.bms_module(0, 2), suspect.model_dump_json(), 100.0)
    after = "\n".join(cell_lines(snap, 100.0))
    assert "3912?" in after
    assert re.search(r"\d{4}v", after)  # another cell is now the lowest
