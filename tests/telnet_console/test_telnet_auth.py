"""Password hashes, lockout and idle timers with explicit times, the hashpw tool, settings."""

from __future__ import annotations

import io

import pytest

from gridzero.errors import SettingsError, UsageError
from gridzero.runtime.settings import load_settings
from gridzero.services.telnet_console import hashpw
from gridzero.services.telnet_console.auth import (
    IdleTimer,
    LoginGuard,
    hash_password,
    parse_hash,
    verify_password,
)
from gridzero.services.telnet_console.settings import (
    TelnetConsoleSettings,
    effective_bind_host,
)

SALT = bytes(range(16))
FAST = 1000  # iterations: tests only


def test_hash_round_trip_and_verify() -> None:
    stored = hash_password("correct horse", SALT, FAST)
    text = str(stored)
    assert text.startswith("pbkdf2_sha256$1000$")
    parsed = parse_hash(text)
    assert parsed == stored
    assert verify_password("correct horse", parsed)
    assert not verify_password("correct hors", parsed)
    assert not verify_password("x" * 1000, parsed)


def test_known_vector() -> None:
    # RFC 7914 section 11 PBKDF2-HMAC-SHA256 vector: P="passwd", S="salt", c=1 (we allow >= 1000,
    # so check the primitive through hash_password's output length and determinism instead)
    first = hash_password("passwd", b"saltsalt", FAST)
    assert first == hash_password("passwd", b"saltsalt", FAST)
    assert len(first.digest) == 32


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must look like"),
        ("md5$1000$AAAAAAAAAAA=$" + "A" * 44, "must look like"),
        ("pbkdf2_sha256$ten$AAAAAAAAAAA=$" + "A" * 44, "not an integer"),
        ("pbkdf2_sha256$10$AAAAAAAAAAA=$" + "A" * 44, "outside 1000"),
        ("pbkdf2_sha256$1000$!!!$" + "A" * 44, "base64"),
        ("pbkdf2_sha256$1000$AAAA$AAAA", "need >= 8"),
    ],
)
def test_bad_hashes_are_named(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_hash(text)


def test_lockout_after_three_failures_with_explicit_times() -> None:
    guard = LoginGuard(max_failures=3, lockout_s=300.0)
    assert guard.failure("10.0.0.5", 0.0) == 0.0
    assert guard.failure("10.0.0.5", 1.0) == 0.0
    assert guard.failure("10.0.0.5", 2.0) == pytest.approx(300.0)
    assert guard.locked_for_s("10.0.0.5", 100.0) == pytest.approx(202.0)
    assert guard.locked_for_s("10.0.0.6", 100.0) == 0.0  # other addresses are not affected
    assert guard.locked_for_s("10.0.0.5", 302.0) == 0.0
    # after the lockout a fresh count starts
    assert guard.failure("10.0.0.5", 303.0) == 0.0
    assert guard.failures("10.0.0.5") == 1


def test_success_clears_the_count() -> None:
    guard = LoginGuard(max_failures=3, lockout_s=300.0)
    guard.failure("a", 0.0)
    guard.failure("a", 1.0)
    guard.success("a")
    assert guard.failure("a", 2.0) == 0.0


def test_guard_memory_is_bounded() -> None:
    guard = LoginGuard(max_failures=3, lockout_s=300.0, max_tracked=10)
    for n in range(100):
        guard.failure(f"10.0.{n}.1", float(n))
    assert len(guard._by_address) == 10


def test_idle_timer() -> None:
    timer = IdleTimer(timeout_s=600.0, last_activity_s=0.0)
    assert not timer.expired(599.9)
    timer.touch(500.0)
    assert not timer.expired(1099.0)
    assert timer.expired(1100.0)


def test_hashpw_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert hashpw.main(["--stdin", "--iterations", "1000"]) == 0
    out = capsys.readouterr().out.strip()
    assert verify_password("a long password", parse_hash(out))
    assert "a long password" not in out


def test_hashpw_refuses_short_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(UsageError, match="5 characters") as info:
        hashpw.main(["--stdin", "--iterations", "1000"])
    assert "short" not in str(info.value)


def test_hashpw_refuses_bad_iterations() -> None:
    with pytest.raises(UsageError, match="--iterations 5"):
        hashpw.main(["--stdin", "--iterations", "5"])


def test_no_password_refuses_to_start() -> None:
    settings = load_settings(TelnetConsoleSettings)
    with pytest.raises(SettingsError, match="password_hash") as info:
        effective_bind_host(settings)
    assert info.value.exit_code == 2


def test_insecure_mode_binds_loopback_only() -> None:
    settings = load_settings(
        TelnetConsoleSettings, insecure_loopback_no_password=True, bind_host="0.0.0.0"
    )
    assert effective_bind_host(settings) == "127.0.0.1"


def test_with_password_binds_the_setting() -> None:
    text = str(hash_password("a long password", SALT, FAST))
    settings = load_settings(TelnetConsoleSettings, password_hash=text)
    assert effective_bind_host(settings) == "0.0.0.0"
    assert settings.stored_hash() == parse_hash(text)
    assert text not in repr(settings)


def test_bad_hash_setting_is_a_settings_error_without_the_hash() -> None:
    broken = "pbkdf2_sha256$1000$AAAA$secretish"
    settings = load_settings(TelnetConsoleSettings, password_hash=broken)
    with pytest.raises(SettingsError, match="base64") as info:
        effective_bind_host(settings)
    assert info.value.exit_code == 2
    assert "secretish" not in str(info.value)
