"""Topic shapes are written once, in the contract's TOPIC_SPECS: ``Topics``, docs/mqtt.md and
the broker ACL (mosquitto/config/acl) all come from that table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gridzero.contract import (
    DEFAULT_BASE,
    DEFAULT_METER_TOPIC,
    EACH_SERVICE,
    TOPIC_SPECS,
    ModuleState,
    Topics,
    TopicSpec,
)
from gridzero.registry import SERVICES, UNIT_SERVICES, writes_own
from gridzero.runtime.credentials import render_acl
from gridzero_tools.docs import render_mqtt_md

ROOT = Path(__file__).resolve().parents[2]

EXTRA = TopicSpec(
    "bms_string", "{base}/bms/string/{bus}-{string}", ("bms",), ModuleState, True, "one string"
)


def acl_writes(text: str) -> dict[str, list[str]]:
    """user -> its ``topic write`` patterns, from an ACL file's text."""
    out: dict[str, list[str]] = {}
    user = ""
    for line in text.splitlines():
        if line.startswith("user "):
            user = line[5:].strip()
            out[user] = []
        elif line.startswith("topic write ") and user:
            out[user].append(line.removeprefix("topic write "))
    return out


def test_a_topic_added_to_the_table_reaches_topics_the_docs_and_the_acl() -> None:
    specs = (*TOPIC_SPECS, EXTRA)
    assert Topics(specs=specs).topic("bms_string", bus=0, string=2) == "gridzero/bms/string/0-2"
    assert "| `{base}/bms/string/{bus}-{string}` | bms |" in render_mqtt_md(specs)
    assert "bms/string" not in render_mqtt_md()
    writes = acl_writes(render_acl(specs=specs))
    assert "gridzero/bms/string/+" in writes["bms"]
    assert [u for u, w in writes.items() if "gridzero/bms/string/+" in w] == ["bms"]
    assert "gridzero/bms/string/+" not in acl_writes(render_acl())["bms"]


def test_topics_methods_fill_the_table_patterns() -> None:
    t = Topics("home/bat")
    assert t.status("bms") == "home/bat/bms/status"
    assert t.setting("inverter", "max_w", unit="gtn1") == "home/bat/inverter/gtn1/settings/max_w"
    assert t.setting("shunt", "capacity_ah") == "home/bat/shunt/settings/capacity_ah"
    assert t.action_set("bms", "force_balance") == "home/bat/bms/action/force_balance/set"
    assert t.bms_module(1, 3) == "home/bat/bms/module/1-3"
    assert t.inverter_set("gtn1") == "home/bat/inverter/gtn1/set"
    assert t.sim_fault_set == "home/bat/sim/fault/set"
    with pytest.raises(ValueError, match=r"needs \{unit\}"):
        t.topic("inverter_state")
    with pytest.raises(KeyError, match="unknown topic kind 'nope'"):
        t.topic("nope")


def _explains(spec: TopicSpec, user: str, line: str) -> bool:
    """Whether ``spec`` gives ``user`` the ACL write ``line`` (a placeholder reads as ``+``)."""
    own = EACH_SERVICE in spec.writers and writes_own(user, spec.name)
    if not own and user not in spec.writers:
        return False
    if spec.pattern == "{meter}":
        return line == DEFAULT_METER_TOPIC
    levels = []
    for raw in spec.pattern.replace("[/", "/[").split("/"):
        optional = raw.startswith("[")
        level = raw.strip("[]").replace("{service}", user) if own else raw.strip("[]")
        text = DEFAULT_BASE if level == "{base}" else level
        regex = r"\+" if "{" in text else re.escape(text)
        levels.append(f"(/{regex})?" if optional else f"/{regex}")
    return re.fullmatch("".join(levels), "/" + line) is not None


def test_every_acl_write_line_is_explained_by_the_table() -> None:
    committed = acl_writes((ROOT / "mosquitto" / "config" / "acl").read_text(encoding="utf-8"))
    assert committed, "no users in mosquitto/config/acl"
    for user, lines in committed.items():
        for line in lines:
            assert any(_explains(s, user, line) for s in TOPIC_SPECS), (
                f"mosquitto/config/acl: user {user} writes {line}, which no TOPIC_SPECS row gives it"
            )


def test_every_writer_of_the_table_writes_its_topics_in_the_acl() -> None:
    committed = acl_writes((ROOT / "mosquitto" / "config" / "acl").read_text(encoding="utf-8"))
    for spec in TOPIC_SPECS:
        own = [s for s in SERVICES if writes_own(s, spec.name)]
        writers = own if EACH_SERVICE in spec.writers else spec.writers
        for user in writers:
            assert any(_explains(spec, user, line) for line in committed[user]), (spec, user)
    # a per-unit level only for the services that have units
    assert "gridzero/inverter/+/settings/+" in committed["inverter"]
    assert UNIT_SERVICES == ("inverter",)
    assert "gridzero/bms/+/settings/+" not in committed["bms"]


def test_an_optional_service_writes_only_the_own_topics_its_registry_entry_lists() -> None:
    """housebatt-compat has no settings, commands or discovery: of the every-service rows it
    gets status and log only, besides the original system's topics (its own rows)."""
    writes = acl_writes(render_acl())["housebatt-compat"]
    assert writes == [
        "gridzero/housebatt-compat/status",
        "gridzero/housebatt-compat/log",
        "battery/+",
        "goatshed/uptime",
        "goatshed/status",
    ]
    assert "gridzero/bms/ack" in acl_writes(render_acl())["bms"]
