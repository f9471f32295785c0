"""The console's doc shows what the console prints: its screens and messages, copied.

The doc is found by its title, not by its path, so it can move. Each ```text block the
doc marks with a ``<!-- console: <name> -->`` line just above is compared with what a
session prints for that scene; a change to the wording fails here until the doc follows.
"""

from __future__ import annotations

import re
from pathlib import Path

from telnet_samples import TOPICS, ack, full_snapshot, put

from gridzero_telnet_console.auth import LoginGuard
from gridzero_telnet_console.protocol import IAC, OPT_NAWS, SB, SE
from gridzero_telnet_console.session import Output, Session, SessionConfig
from gridzero_telnet_console.snapshot import Snapshot

ROOT = Path(__file__).resolve().parents[2]
TITLE = "# The telnet console"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BLOCK = re.compile(r"<!-- console: ([\w-]+) -->\n```text\n(.*?)```", re.S)
CLOCK = "14:02:11"
WIDTH = 100  # the doc's screens are this wide (a maximised window)


def console_doc() -> Path:
    """The Markdown file whose title is the console's, wherever the layout puts it."""
    found = [
        p
        for p in ROOT.rglob("*.md")
        if ".venv" not in p.parts and p.read_text(encoding="utf-8").startswith(TITLE + "\n")
    ]
    assert len(found) == 1, f"expected one doc titled {TITLE!r}, found {found}"
    return found[0]


def doc_blocks() -> dict[str, str]:
    return dict(BLOCK.findall(console_doc().read_text(encoding="utf-8")))


def screen_of(out: Output) -> list[str]:
    """The lines a frame leaves on the terminal (the frame redraws from the top)."""
    text = out.data.decode("utf-8")
    last = text.rfind("\x1b[H")
    return [ANSI.sub("", line) for line in text[last:].split("\r\n")]


def started(width: int = WIDTH) -> tuple[Session, Snapshot]:
    snap = full_snapshot(now_s=100.0)
    config = SessionConfig(topics=TOPICS, need_password=False)
    session = Session(config, LoginGuard(), "192.0.2.7", now_s=100.0)
    session.start(100.0, snap)
    naws = bytes([IAC, SB, OPT_NAWS, 0, width, 0, 40, IAC, SE])
    session.feed(naws, 100.0, snap)
    return session, snap


def prompt(out: Output) -> str:
    return screen_of(out)[-1]


def test_the_status_screen_is_what_the_console_prints() -> None:
    session, snap = started()
    session.feed(b"i", 100.5, snap)
    topic = TOPICS.setting_set("controller", "discharge_enabled")
    put(snap, TOPICS.ack("controller"), ack(topic, True, "false"), 100.6)
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "false", 100.6)
    shown = screen_of(session.tick(101.0, snap, CLOCK))
    assert doc_blocks()["status"].splitlines() == shown


def test_the_cells_view_is_what_the_console_prints() -> None:
    session, snap = started(width=80)
    shown = screen_of(session.feed(b"p", 101.0, snap, CLOCK))
    assert doc_blocks()["cells"].splitlines() == [line for line in shown if line]


def test_the_messages_after_a_key_are_what_the_doc_shows() -> None:
    """``i`` twice (accepted, then refused) and ``l`` unanswered, as the doc lists them."""
    session, snap = started()
    topic = TOPICS.setting_set("controller", "discharge_enabled")
    seen = [prompt(session.feed(b"i", 101.0, snap))]
    put(snap, TOPICS.ack("controller"), ack(topic, True, "false"), 101.1)
    put(snap, TOPICS.setting("controller", "discharge_enabled"), "false", 101.1)
    seen.append(prompt(session.tick(101.5, snap)))
    seen.append(prompt(session.feed(b"i", 102.0, snap)))
    put(snap, TOPICS.ack("controller"), ack(topic, False, "true", "mode hold forbids it"), 102.1)
    seen.append(prompt(session.tick(102.5, snap)))
    seen.append(prompt(session.feed(b"l", 103.0, snap)))
    seen.append(prompt(session.tick(108.5, snap)))
    assert doc_blocks()["messages"].splitlines() == seen
