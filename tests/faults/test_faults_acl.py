"""Access control against the real broker config, the full matrix generated from USERS.

tests/runtime/test_runtime_broker.py checks anonymous and wrong-password logins and a few
hand-picked pairs; this file checks every user against every topic every other user may
write (each of them made concrete), so a new user or topic is covered without editing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from paho.mqtt.client import topic_matches_sub

from gridzero.contract import DEFAULT_METER_TOPIC, Topics
from gridzero.runtime.credentials import ALL_USERS, USERS, User
from gridzero.testing import Probe, TestBroker, wait_until

pytestmark = pytest.mark.broker
T = Topics()
BASE = T.base
# the committed ACL (the test broker's) is rendered for the default meter topic
SLOTS = {"base": BASE, "meter": DEFAULT_METER_TOPIC}


def concrete(pattern: str) -> str:
    """A topic a pattern of the ACL table matches (``+`` made a plausible name)."""
    return pattern.format(**SLOTS).replace("+", "gtn1")


def writes(user: User) -> list[str]:
    return [w.format(**SLOTS) for w in user.writes]


def may_write(user: User, topic: str) -> bool:
    return any(topic_matches_sub(pattern, topic) for pattern in writes(user))


def foreign_topics(user: User) -> list[str]:
    """Every concrete topic another user may write and this one may not."""
    topics = {concrete(w) for other in ALL_USERS if other is not user for w in other.writes}
    topics |= {T.charger_set, T.inverter_set("gtn1"), T.inverter_set("any"), T.bms_limits}
    return sorted(t for t in topics if not may_write(user, t))


def marker(user: User) -> str:
    """A topic the user may write, to prove the denied messages had their chance to arrive."""
    return user.writes[0].format(**SLOTS).replace("+", "marker")


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    broker = TestBroker.create(tmp_path_factory.mktemp("acl-broker"))
    yield broker
    broker.stop()


def _published(broker: TestBroker, user: str, topics: list[str], last: str) -> set[str]:
    """Publish a token to each topic as ``user``, then to ``last``; return what arrived.

    The sender logs in under the user's own name (not a numbered login), so the ACL
    section under test is the committed one; the watcher is another all-reading user."""
    watcher = broker.probe("homeassistant" if user == "operator" else "operator")
    sender = broker.probe(user, subscribe="")
    token = f"acl-{time.monotonic_ns()}".encode()
    try:
        assert sender.login == user
        for topic in topics:
            sender.publish(topic, token)
        sender.publish(last, token)
        watcher.wait_for(last, lambda p: p == token, timeout_s=10)
        return {t for _a, t, p, _r in list(watcher.messages) if p == token}
    finally:
        sender.close()
        watcher.close()


def test_every_user_is_in_the_generated_acl() -> None:
    acl = (Topics().base, [u.name for u in ALL_USERS])
    assert {u.name for u in USERS} >= {"bms", "charger", "inverter", "shunt", "controller"}
    assert len(acl[1]) == len(set(acl[1]))


@pytest.mark.parametrize("user", ALL_USERS, ids=lambda u: u.name)
def test_user_cannot_write_any_other_users_topics(acl_broker: TestBroker, user: User) -> None:
    denied = foreign_topics(user)
    assert denied, f"{user.name}: nothing to deny?"
    mark = marker(user)
    assert may_write(user, mark), mark
    arrived = _published(acl_broker, user.name, denied, mark)
    assert mark in arrived
    assert not (arrived & set(denied)), f"{user.name} could write {sorted(arrived & set(denied))}"


@pytest.mark.parametrize("user", ALL_USERS, ids=lambda u: u.name)
def test_user_can_write_its_own_topics(acl_broker: TestBroker, user: User) -> None:
    own = sorted({concrete(w) for w in user.writes})
    arrived = _published(acl_broker, user.name, own[:-1], own[-1])
    assert arrived >= set(own), f"{user.name} could not write {sorted(set(own) - arrived)}"


def test_only_the_controller_commands_the_devices() -> None:
    commanders = [
        u.name
        for u in ALL_USERS
        if may_write(u, T.charger_set) or may_write(u, T.inverter_set("gtn1"))
    ]
    assert commanders == ["controller"]


@pytest.mark.parametrize(
    "user", [u for u in ALL_USERS if u.name != "controller"], ids=lambda u: u.name
)
def test_device_commands_are_refused_by_the_broker(acl_broker: TestBroker, user: User) -> None:
    commands = [T.charger_set, T.inverter_set("gtn1"), T.inverter_set("u2")]
    arrived = _published(acl_broker, user.name, commands, marker(user))
    assert not (arrived & set(commands))


def test_anonymous_and_unknown_users_are_refused(acl_broker: TestBroker) -> None:
    for user, password in (("", ""), ("nobody", "x"), ("controller", "")):
        probe = Probe.connect(
            acl_broker.host, acl_broker.port, user, password, subscribe=None, timeout_s=2
        )
        answered = _answered(probe)
        wait_until(answered, 5, "CONNACK")
        assert probe.connect_rc != 0, user
        probe.close()


def _answered(probe: Probe) -> Callable[[], bool]:
    return lambda: probe.connect_rc is not None


def test_readers_see_only_what_they_may_read(acl_broker: TestBroker) -> None:
    # the meter may read gridzero/# (it is harmless) but not homeassistant discovery
    publisher = acl_broker.probe("bms", subscribe="")
    meter = acl_broker.probe("meter", subscribe="homeassistant/#")
    token = f"disc-{time.monotonic_ns()}".encode()
    publisher.publish("homeassistant/device/gridzero_bms/config", token)
    publisher.publish(T.status("bms"), token)
    time.sleep(0.5)  # nothing must arrive: absence is all there is to wait for
    assert not any(p == token for _a, _t, p, _r in meter.messages)
    publisher.close()
    meter.close()


@pytest.mark.parametrize("victim", ALL_USERS, ids=lambda u: u.name)
def test_no_user_can_take_over_another_users_connection(
    acl_broker: TestBroker, victim: User
) -> None:
    """Issue 22 item 5: any user could close a service's session by connecting with its
    client id. Every other user now connects with the victim's own client id, its user
    name and a service-style id as client id; the victim's connection stays up."""
    holder = acl_broker.probe(victim.name, subscribe="")
    assert holder.login == victim.name
    held_id = holder.client._client_id.decode()  # the id it asked for
    try:
        for other in ALL_USERS:
            if other is victim:
                continue
            for client_id in (held_id, victim.name, f"gridzero-{victim.name}-host-1234"):
                thief = Probe.connect(
                    acl_broker.host,
                    acl_broker.port,
                    other.name,
                    acl_broker.passwords[other.name],
                    subscribe=None,
                    client_id=client_id,
                )
                assert thief.connect_rc == 0, other.name
                thief.close()
        # a QoS 1 round trip on the victim's connection: a socket the broker closed
        # cannot carry the PUBACK, so by now a takeover would have been noticed
        holder.publish(marker(victim), b"still here")
        assert holder.disconnects == 0
    finally:
        holder.close()
