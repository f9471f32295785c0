"""Settings and state that must survive: retained commands, whole-set restore, bad files, full
disks, and the freshness rule every consumer shares (issue 22 items 1, 2, 4, 6, 8; issue 16
item 10)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, model_validator

from gridzero.contract import Topics
from gridzero.runtime import store as store_module
from gridzero.runtime.freshness import Freshness, NotFreshError, Sequencer, Stamp
from gridzero.runtime.service import Context, ServiceRunner
from gridzero.runtime.store import Store
from gridzero.testing import TestBroker, wait_until

from .example_service import ExampleService, ExampleSettings

T = Topics()


def make_runner(broker: TestBroker, data_dir: Path) -> ServiceRunner:
    settings = ExampleSettings(
        mqtt=broker.mqtt_settings("controller"), data_dir=data_dir, store_flush_s=0.2
    )
    return ServiceRunner(ExampleService, settings)


def _acks(broker_probe: object, after: float) -> list[dict[str, object]]:
    messages = broker_probe.messages  # type: ignore[attr-defined]
    return [json.loads(p) for at, t, p, _r in messages if t == T.ack("controller") and at >= after]


# --------------------------------------------------------------------------- retained commands


@pytest.mark.broker
def test_a_retained_setting_change_is_refused_now_and_after_a_restart(
    broker: TestBroker, tmp_path: Path
) -> None:
    ha = broker.probe("homeassistant")
    topic = T.setting_set("controller", "target_w")
    try:
        runner = make_runner(broker, tmp_path)
        runner.start_thread()
        assert runner.ctx.conn.wait_connected(5)
        start = time.monotonic()
        ha.publish(topic, "500", retain=True)  # delivered live now: retain flag off
        ha.publish(topic, "100")  # the owner's later, live change
        wait_until(lambda: runner.service.runtime.value.target_w == 100, 5, "live change")  # type: ignore[attr-defined]
        runner.stop()
        runner.join()
        # the restart gets the planted retained message from the broker, with the retain flag
        again = make_runner(broker, tmp_path)
        again.start_thread()
        assert again.ctx.conn.wait_connected(5)
        ack = json.loads(
            ha.wait_for(T.ack("controller"), lambda p: b"retained" in p, after=start, timeout_s=5)
        )
        assert ack["ok"] is False
        assert ack["topic"] == topic
        assert again.service.runtime.value.target_w == 100  # type: ignore[attr-defined]
        again.stop()
        again.join()
    finally:
        ha.publish(topic, b"", retain=True)  # clear the planted message for later tests
        ha.close()


@pytest.mark.broker
def test_a_retained_button_press_is_refused(broker: TestBroker, tmp_path: Path) -> None:
    ha = broker.probe("homeassistant")
    topic = T.action_set("controller", "reset")
    try:
        runner = make_runner(broker, tmp_path)
        runner.start_thread()
        assert runner.ctx.conn.wait_connected(5)
        wait_until(lambda: runner.service.ticks >= 3, 5, "ticks")  # type: ignore[attr-defined]
        start = time.monotonic()
        ha.publish(topic, "press", retain=True)
        ha.wait_for(T.ack("controller"), lambda p: b'"ok":true' in p, after=start)
        runner.stop()
        runner.join()
        again = make_runner(broker, tmp_path)
        again.start_thread()
        assert again.ctx.conn.wait_connected(5)
        ack = json.loads(ha.wait_for(T.ack("controller"), lambda p: b"retained" in p, after=start))
        assert ack["ok"] is False
        again.stop()
        again.join()
        assert again.service.ticks > 0  # type: ignore[attr-defined]
    finally:
        ha.publish(topic, b"", retain=True)
        ha.close()


# --------------------------------------------------------------------------- whole-set restore


class Band(BaseModel):
    """Three settings whose valid combinations are not valid one at a time."""

    soc_min_pct: float = Field(40.0, ge=0, le=100)
    soc_hysteresis_pct: float = Field(10.0, ge=0, le=50)
    soc_max_pct: float = Field(95.0, ge=0, le=100)

    @model_validator(mode="after")
    def _band(self) -> Band:
        if self.soc_max_pct < self.soc_min_pct + self.soc_hysteresis_pct:
            raise ValueError("soc_max_pct must be >= soc_min_pct + soc_hysteresis_pct")
        return self


def _context(tmp_path: Path) -> Context:
    return Context("controller", ExampleSettings(data_dir=tmp_path))


def test_a_saved_valid_combination_comes_back_whole(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    saved = {"soc_min_pct": 1.0, "soc_hysteresis_pct": 20.0, "soc_max_pct": 45.0}
    ctx.store.set("settings", saved)
    ctx.store.flush()
    # one field at a time against the defaults, soc_max 45 < 40 + 20 would be refused
    restored = _context(tmp_path).runtime_settings(Band())
    assert restored.value.model_dump() == saved


def test_a_saved_set_that_widens_a_start_up_limit_is_not_restored(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.store.set("settings", {"soc_max_pct": 99.0})
    ctx.store.flush()

    def limit(value: Band) -> str:
        return "" if value.soc_max_pct <= 90 else f"soc_max_pct {value.soc_max_pct} > 90"

    restored = _context(tmp_path).runtime_settings(Band(soc_max_pct=90.0), limit=limit)
    assert restored.value.soc_max_pct == 90.0


# --------------------------------------------------------------------------- the state file


def test_a_state_file_of_erased_flash_is_moved_aside_and_defaults_are_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "controller.json"
    path.write_bytes(b"\xff" * 4096)
    store = Store(path)
    assert store.get("settings") is None
    assert not path.exists()
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == b"\xff" * 4096
    assert "moved it to" in caplog.text
    assert "started from defaults" in caplog.text
    store.set("ticks", 1)
    store.flush()
    assert json.loads(path.read_text()) == {"ticks": 1}


@pytest.mark.parametrize("content", [b"[1, 2]", b"{not json", b"\x00\x01"])
def test_any_unreadable_state_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "shunt.json"
    path.write_bytes(content)
    store = Store(path)
    assert store.moved_aside is not None
    assert store.moved_aside.name.startswith("shunt.json.corrupt-")
    assert store.moved_aside.read_bytes() == content


def test_the_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", spy)
    store = Store(tmp_path / "bms.json")
    store.set("a", 1)
    store.flush()
    assert synced == [False, True]  # the file, then the directory that holds the new name


# --------------------------------------------------------------------------- a full disk


@pytest.mark.broker
def test_a_setting_that_could_not_be_saved_is_not_acknowledged_as_saved(
    broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(broker, tmp_path)
    runner.start_thread()
    assert runner.ctx.conn.wait_connected(5)
    ha = broker.probe("homeassistant")

    def disk_full(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.tempfile, "mkstemp", disk_full)
    start = time.monotonic()
    ha.publish(T.setting_set("controller", "target_w"), "300")
    ack = json.loads(ha.wait_for(T.ack("controller"), after=start))
    assert ack["ok"] is False
    assert "NOT saved" in ack["reason"]
    runner.stop()
    runner.join()
    ha.close()


def test_a_failing_disk_is_retried_with_backoff_not_every_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "x.json")
    store.set("a", 1)
    attempts: list[float] = []

    def disk_full(*_args: object, **_kwargs: object) -> tuple[int, str]:
        attempts.append(1.0)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.tempfile, "mkstemp", disk_full)
    for tick in range(120):  # a flush timer every 0.5 s for a minute
        store.flush_with_backoff(tick * 0.5)
    assert 4 <= len(attempts) <= 8  # 1, 2, 4, 8, 16, 32 s apart: not 120 tracebacks
    monkeypatch.undo()
    store.flush_with_backoff(1000.0)
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


# --------------------------------------------------------------------------- freshness


NOW = 1000.0
WALL = 1_700_000_000.0


def _admit(gate: Freshness, **stamp: object) -> float:
    fields = {"retained": False, "ts": WALL, **stamp}
    return gate.admit(Stamp(**fields), now_s=NOW, wall_s=WALL)  # type: ignore[arg-type]


def test_arrival_time_not_the_publishers_stamp_decides_age() -> None:
    gate = Freshness("bms limits")
    assert _admit(gate, ts=WALL - 10.0, boot="b", seq=1) == NOW  # a clock 10 s behind
    assert _admit(gate, ts=WALL + 0.9, boot="b", seq=2) == NOW  # within the tolerance


@pytest.mark.parametrize("ahead_s", [1.5, 3600.0, float("inf"), float("nan")])
def test_a_stamp_from_the_future_is_refused(ahead_s: float) -> None:
    gate = Freshness("bms limits")
    with pytest.raises(NotFreshError, match="ahead of this host's clock"):
        _admit(gate, ts=WALL + ahead_s, boot="b", seq=1)
    assert gate.refused == 1


def test_a_retained_message_is_never_fresh() -> None:
    with pytest.raises(NotFreshError, match="retained"):
        _admit(Freshness("bms limits"), retained=True, boot="b", seq=1)


def test_repeats_and_replays_are_refused_and_a_new_boot_starts_a_new_count() -> None:
    gate = Freshness("bms limits")
    _admit(gate, boot="b", seq=5)
    for seq in (5, 4, 1):
        with pytest.raises(NotFreshError, match="not after 5"):
            _admit(gate, boot="b", seq=seq)
    _admit(gate, boot="b", seq=9)  # a gap (a lost QoS 0 message) is fine
    _admit(gate, boot="c", seq=1)  # the publisher restarted


def test_a_message_of_an_earlier_boot_already_seen_is_refused() -> None:
    gate = Freshness("bms limits")
    _admit(gate, boot="old", seq=7)
    _admit(gate, boot="new", seq=1)  # the publisher restarted
    with pytest.raises(NotFreshError, match="not after 7"):
        _admit(gate, boot="old", seq=7)  # replayed
    _admit(gate, boot="new", seq=2)  # the live stream goes on


def test_one_stray_message_with_another_boot_does_not_lock_the_publisher_out() -> None:
    gate = Freshness("bms limits")
    for seq in (1, 2, 3, 4):
        _admit(gate, boot="real", seq=seq)
    for seq in (1000, 1001, 1002, 1003):
        _admit(gate, boot="stray", seq=seq)
    for seq in (5, 6, 7):
        _admit(gate, boot="real", seq=seq)  # the real publisher goes on
    with pytest.raises(NotFreshError, match="not after 7"):
        _admit(gate, boot="real", seq=6)  # each boot still counts up on its own


def test_a_sequencer_counts_up_from_one_with_a_random_boot() -> None:
    a, b = Sequencer(), Sequencer()
    assert a.boot != b.boot
    assert [a.next(), a.next(), a.next()] == [1, 2, 3]
