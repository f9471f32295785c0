"""One session without sockets: login, lockout, idle and login timeouts, acks, redraws."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from telnet_samples import TOPICS, ack, full_snapshot, put

from gridzero_telnet_console.auth import LoginGuard
from gridzero_telnet_console.protocol import DO, OPT_ECHO, OPT_NAWS, OPT_SGA, WILL, command
from gridzero_telnet_console.session import Output, Phase, Session, SessionConfig
from gridzero_telnet_console.snapshot import Snapshot

CONFIG = SessionConfig(topics=TOPICS, idle_timeout_s=600.0, login_timeout_s=60.0)
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def text(out: Output) -> str:
    return ANSI.sub(b"", out.data).decode("utf-8", "replace")


def phase_of(session: Session) -> Phase:
    return session.phase  # a call, so mypy does not narrow across calls


def new_session(
    guard: LoginGuard | None = None, config: SessionConfig = CONFIG
) -> tuple[Session, Snapshot]:
    snap = full_snapshot()
    session = Session(config, guard or LoginGuard(), "192.0.2.7", now_s=0.0)
    return session, snap


def logged_in() -> tuple[Session, Snapshot]:
    session, snap = new_session()
    session.start(0.0, snap)
    out = session.feed(b"pw\r\n", 1.0, snap)
    assert out.check_password == "pw"
    session.login_result(True, 1.5, snap)
    return session, snap


def test_start_negotiates_and_asks_for_the_password() -> None:
    session, snap = new_session()
    out = session.start(0.0, snap)
    assert out.data.startswith(
        command(WILL, OPT_ECHO) + command(WILL, OPT_SGA) + command(DO, OPT_NAWS)
    )
    assert text(out).endswith("password: ")
    assert not out.close


def test_password_is_not_echoed_and_is_checked_once() -> None:
    session, snap = new_session()
    session.start(0.0, snap)
    out = session.feed(b"sec", 1.0, snap)
    assert out.data == b""  # nothing echoed
    out = session.feed(b"ret\r\n", 1.1, snap)
    assert out.check_password == "secret"
    assert phase_of(session) is Phase.CHECKING
    # keys typed while checking are dropped, not taken as a second password
    assert session.feed(b"again\r\n", 1.2, snap).check_password is None
    out = session.login_result(True, 1.5, snap)
    assert phase_of(session) is Phase.RUNNING
    assert "gridzero console" in text(out)
    assert "Grid" in text(out)


def test_cr_nul_and_backspace_in_the_password() -> None:
    session, snap = new_session()
    session.start(0.0, snap)
    out = session.feed(b"abx\x7fc\r\x00", 1.0, snap)
    assert out.check_password == "abc"


def test_wrong_password_three_times_locks_the_address() -> None:
    guard = LoginGuard(max_failures=3, lockout_s=300.0)
    session, snap = new_session(guard)
    session.start(0.0, snap)
    for attempt, now_s in enumerate((1.0, 2.0), start=1):
        session.feed(b"wrong\r\n", now_s, snap)
        out = session.login_result(False, now_s, snap)
        assert "wrong password" in text(out), attempt
        assert not out.close
    session.feed(b"wrong\r\n", 3.0, snap)
    out = session.login_result(False, 3.0, snap)
    assert out.close
    assert "locked for 300 s" in text(out)
    # a new connection from the same address is refused at once, another address is not
    again = Session(CONFIG, guard, "192.0.2.7", now_s=10.0)
    out = again.start(10.0, snap)
    assert out.close
    assert "try again in 293 s" in text(out)
    other = Session(CONFIG, guard, "192.0.2.8", now_s=10.0)
    assert not other.start(10.0, snap).close
    # after the lockout the address may try again
    later = Session(CONFIG, guard, "192.0.2.7", now_s=304.0)
    assert not later.start(304.0, snap).close


def test_lockout_also_stops_a_parallel_connection_with_the_right_password() -> None:
    guard = LoginGuard(max_failures=1, lockout_s=300.0)
    first, snap = new_session(guard)
    second = Session(CONFIG, guard, "192.0.2.7", now_s=0.0)
    first.start(0.0, snap)
    second.start(0.0, snap)
    second.feed(b"right\r\n", 1.0, snap)
    first.feed(b"wrong\r\n", 1.0, snap)
    assert first.login_result(False, 1.0, snap).close
    out = second.login_result(True, 1.1, snap)
    assert out.close
    assert phase_of(second) is Phase.CLOSED


def test_login_times_out() -> None:
    session, snap = new_session()
    session.start(0.0, snap)
    assert not session.tick(59.0, snap).close
    out = session.tick(60.0, snap)
    assert out.close
    assert "login timed out" in text(out)


def test_idle_session_times_out_and_keys_keep_it_alive() -> None:
    session, snap = logged_in()
    assert not session.tick(500.0, snap).close
    session.feed(b"h", 550.0, snap)
    assert not session.tick(1149.0, snap).close
    out = session.tick(1150.0, snap)
    assert out.close
    assert "idle" in text(out)


def test_negotiation_replies_do_not_count_as_activity() -> None:
    session, snap = logged_in()
    session.feed(command(WILL, OPT_NAWS), 500.0, snap)
    assert session.tick(601.5, snap).close


def test_no_password_mode_shows_the_screen_at_once() -> None:
    config = SessionConfig(topics=TOPICS, need_password=False)
    session, snap = new_session(config=config)
    out = session.start(0.0, snap)
    assert "password" not in text(out)
    assert "Grid" in text(out)


def test_quit_closes() -> None:
    session, snap = logged_in()
    out = session.feed(b"q", 2.0, snap)
    assert out.close
    assert "bye" in text(out)
    assert session.feed(b"p", 3.0, snap) == Output()


def test_rapid_keys_give_one_redraw() -> None:
    session, snap = logged_in()
    out = session.feed(b"pppppppppp" * 50, 2.0, snap)
    assert out.data.count(b"\x1b[H") == 1


def test_resize_redraws_to_the_new_width() -> None:
    session, snap = logged_in()
    naws = bytes((255, 250, 31, 0, 40, 0, 20, 255, 240))
    out = session.feed(naws, 2.0, snap)
    assert out.data.startswith(b"\x1b[2J")
    for line in text(out).split("\r\n"):
        assert len(line) <= 39


def test_pause_stops_the_periodic_redraw() -> None:
    session, snap = logged_in()
    assert session.tick(2.0, snap).data
    session.feed(b" ", 2.5, snap)
    assert session.tick(3.0, snap).data == b""
    session.feed(b" ", 3.5, snap)
    assert session.tick(4.0, snap).data


def test_command_ack_is_shown() -> None:
    session, snap = logged_in()
    out = session.feed(b":set controller.target_grid_w 900\r\n", 2.0, snap)
    topic = "gridzero/controller/settings/target_grid_w/set"
    assert [(p.topic, p.payload) for p in out.publish] == [(topic, "900")]
    put(snap, TOPICS.ack("controller"), ack(topic, False, "900", "target_grid_w=900: <= 500"))
    out = session.tick(3.0, snap)
    # the answer repeats what was asked (the line is cut at 80 columns)
    assert "> controller.target_grid_w = 900: REFUSED by controller: target_grid_w=900" in text(out)


def test_the_answer_to_a_key_is_in_the_words_of_the_key() -> None:
    """Issue 21: after `i` the line read `controller: accepted false on gridzero/...`."""
    session, snap = logged_in()
    topic = TOPICS.setting_set("controller", "discharge_enabled")
    out = session.feed(b"i", 2.0, snap)
    assert "> discharge off (controller.discharge_enabled -> false)" in text(out)
    put(snap, TOPICS.ack("controller"), ack(topic, True, "false"))
    out = session.tick(3.0, snap)
    assert "> discharge off: done (controller accepted)" in text(out)
    assert topic not in text(out)


def test_a_new_key_replaces_the_last_answer() -> None:
    session, snap = logged_in()
    topic = TOPICS.setting_set("controller", "discharge_enabled")
    session.feed(b"i", 2.0, snap)
    put(snap, TOPICS.ack("controller"), ack(topic, False, "false", "no"))
    assert "REFUSED" in text(session.tick(3.0, snap))
    out = session.feed(b"l", 4.0, snap)
    assert "> sent bms.force_balance pressed; waiting for the answer" in text(out)


def test_missing_ack_is_reported() -> None:
    session, snap = logged_in()
    session.feed(b"l", 2.0, snap)
    out = session.tick(7.5, snap)
    assert "bms.force_balance pressed: no answer within 5 s (service offline?)" in text(out)


def test_old_acks_are_not_shown_to_a_new_session() -> None:
    snap = full_snapshot()
    topic = "gridzero/bms/action/force_balance/set"
    put(snap, TOPICS.ack("bms"), ack(topic, True, "PRESS"))
    session = Session(CONFIG, LoginGuard(), "192.0.2.9", now_s=0.0)
    session.start(0.0, snap)
    session.feed(b"pw\r\n", 1.0, snap)
    session.login_result(True, 1.0, snap)
    session.feed(b"l", 2.0, snap)
    assert "accepted" not in text(session.tick(3.0, snap))


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_any_bytes_in_any_phase_never_crash(chunks: list[bytes]) -> None:
    session, snap = new_session(config=SessionConfig(topics=TOPICS, need_password=False))
    session.start(0.0, snap)
    now = 0.0
    for chunk in chunks:
        now += 0.1
        out = session.feed(chunk, now, snap)
        assert out.check_password is None
        session.tick(now, snap)
        if out.close:
            break


def test_ending_in_the_raw_view_switches_raw_debugging_off() -> None:
    session, snap = logged_in()
    out = session.feed(b"C", 2.0, snap)
    assert [(p.topic, p.payload) for p in out.publish] == [
        ("gridzero/charger/settings/raw_debug/set", "true")
    ]
    assert [(p.topic, p.payload) for p in session.end()] == [
        ("gridzero/charger/settings/raw_debug/set", "false")
    ]
    assert session.end() == []
