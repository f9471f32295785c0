"""Password hashes, lockout and idle timers with explicit times, the hashpw tool, settings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gridzero.errors import SettingsError, UsageError
from gridzero.runtime.settings import load_settings
from gridzero_telnet_console import hashpw
from gridzero_telnet_console.auth import (
    IdleTimer,
    LoginGuard,
    client_key,
    default_gateways,
    hash_password,
    parse_hash,
    parse_networks,
    verify_password,
)
from gridzero_telnet_console.settings import (
    TelnetConsoleSettings,
    effective_bind_host,
    shared_networks,
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
    assert guard.tracked() == 10


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


def test_an_active_lockout_survives_failures_from_many_other_addresses() -> None:
    # before: the oldest entry was forgotten first, so 1,024 other addresses (cheap over
    # IPv6) cleared an attacker's own lockout
    guard = LoginGuard(max_failures=3, lockout_s=300.0, max_tracked=8)
    for t in (0.0, 1.0, 2.0):
        guard.failure("198.51.100.9", t)
    for n in range(1000):
        guard.failure(f"10.{n // 250}.{n % 250}.1", 3.0 + n * 0.01)
    assert guard.locked_for_s("198.51.100.9", 20.0) == pytest.approx(282.0)
    assert guard.tracked() <= 8


def test_when_every_entry_is_a_lockout_untracked_clients_are_limited_together() -> None:
    guard = LoginGuard(max_failures=1, lockout_s=300.0, max_tracked=3, overflow_spacing_s=1.0)
    for n in range(3):
        assert guard.failure(f"10.0.0.{n}", 0.0) == pytest.approx(300.0)
    assert guard.locked_for_s("10.9.9.9", 10.0) == 0.0  # nobody failed from outside yet
    assert guard.failure("10.0.0.99", 10.0) == pytest.approx(1.0)  # not stored: no room
    assert guard.locked_for_s("10.9.9.9", 10.5) == pytest.approx(0.5)
    assert guard.locked_for_s("10.9.9.9", 11.0) == 0.0
    assert all(guard.locked_for_s(f"10.0.0.{n}", 11.0) > 0 for n in range(3))
    assert guard.tracked() == 3
    # once a lockout has expired its entry makes room again
    assert guard.failure("10.0.0.99", 301.0) == pytest.approx(300.0)
    assert guard.tracked() == 3


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


def test_ipv6_failures_count_per_64() -> None:
    # before: each IPv6 address was its own client, and a host has 2**64 of them
    guard = LoginGuard(max_failures=3, lockout_s=300.0)
    guard.failure("2001:db8:1:2::1", 0.0)
    guard.failure("2001:db8:1:2:aaaa::7", 1.0)
    assert guard.failure("2001:db8:1:2:ffff:ffff:ffff:ffff", 2.0) == pytest.approx(300.0)
    assert guard.locked_for_s("2001:db8:1:2::42", 3.0) == pytest.approx(299.0)
    assert guard.locked_for_s("2001:db8:1:3::1", 3.0) == 0.0  # the next /64 is someone else
    guard.failure("192.0.2.7", 4.0)
    assert guard.failures("::ffff:192.0.2.7") == 1  # dual-stack sockets report IPv4 so


def test_a_shared_address_is_locked_briefly_and_does_not_touch_other_clients() -> None:
    # Docker's userland proxy: every client arrives from the bridge gateway
    guard = LoginGuard(
        max_failures=3,
        lockout_s=300.0,
        shared=parse_networks(["172.17.0.1"]),
        shared_lockout_s=30.0,
    )
    for t in (0.0, 1.0):
        guard.failure("172.17.0.1", t)
    assert guard.failure("172.17.0.1", 2.0) == pytest.approx(30.0)
    assert guard.locked_for_s("172.17.0.1", 32.0) == 0.0  # the owner behind it waits 30 s, not 300
    assert guard.locked_for_s("192.0.2.7", 3.0) == 0.0
    for t in (3.0, 4.0):
        guard.failure("192.0.2.7", t)
    assert guard.failure("192.0.2.7", 5.0) == pytest.approx(300.0)  # a real address: as before


# /proc/net/route and /proc/net/ipv6_route as a Docker bridge container sees them
ROUTE_V4 = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)
ROUTE_V6 = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def test_default_gateways_from_proc() -> None:
    assert default_gateways(ROUTE_V4, ROUTE_V6) == ("172.17.0.1", "fd00::1")
    assert default_gateways("", "") == ()
    assert default_gateways("Iface\nbroken line\n", "junk\n") == ()


def test_shared_addresses_setting(tmp_path: Path) -> None:
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    v4.write_text(ROUTE_V4)
    v6.write_text(ROUTE_V6)
    settings = load_settings(TelnetConsoleSettings)
    assert settings.shared_addresses == ["gateway", "127.0.0.0/8", "::1"]
    nets = shared_networks(settings, (v4, v6))
    assert [str(n) for n in nets] == ["127.0.0.0/8", "::1/128", "172.17.0.1/32", "fd00::1/128"]
    mine = load_settings(TelnetConsoleSettings, shared_addresses=["10.1.2.3"])
    assert [str(n) for n in shared_networks(mine, (v4, v6))] == ["10.1.2.3/32"]
    missing = (tmp_path / "none", tmp_path / "none6")  # not Linux: no gateway, no error
    assert [str(n) for n in shared_networks(settings, missing)] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(SettingsError, match="'nope' is not an IP address or network"):
        load_settings(TelnetConsoleSettings, shared_addresses=["gateway", "nope"])
