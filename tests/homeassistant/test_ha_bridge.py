"""The recipe for a Home Assistant that keeps its own broker (docs/homeassistant.md):
a second Mosquitto plays Home Assistant's broker and bridges to gridzero's broker with
the very file the doc shows. No Home Assistant is needed: what HA would read and write
is read and written on its broker."""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridzero.contract import HA_STATUS_TOPIC, Topics
from gridzero.runtime.broker import free_port
from gridzero.testing import Probe, TestBroker, wait_until

pytestmark = pytest.mark.broker
T = Topics()
DOC = Path(__file__).resolve().parents[2] / "docs" / "homeassistant.md"
SECTION = "## A Home Assistant that keeps its own broker (bridge)"


def bridge_file_from_doc() -> str:
    """The ```conf block of the bridge section, as a user copies it."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    found = re.search(r"```conf\n(.*?)```", section, re.S)
    assert found, f"no ```conf block in {DOC}, section {SECTION!r}"
    return "\n".join(line.strip() for line in found.group(1).splitlines()) + "\n"


class HaBroker:
    """A plain Mosquitto like Home Assistant's add-on, with ``conf.d`` for the bridge."""

    def __init__(self, root: Path, bridge: str) -> None:
        self.root = root
        self.port = free_port()
        (root / "share-mosquitto").mkdir(parents=True)
        (root / "share-mosquitto" / "gridzero-bridge.conf").write_text(bridge, encoding="utf-8")
        (root / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\nlog_type all\n"
            f"user {getpass.getuser()}\n"
            f"include_dir {root / 'share-mosquitto'}\n",
            encoding="utf-8",
        )
        self.log = root / "mosquitto.log"
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(root / "mosquitto.conf")],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening, 10, "Home Assistant's broker listening")

    def _listening(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def probe(self) -> Probe:
        return Probe.connect("127.0.0.1", self.port, "ha-side", "", "#")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def ha_broker(own_broker: TestBroker, tmp_path: Path) -> Iterator[HaBroker]:
    bridge = (
        bridge_file_from_doc()
        .replace("GRIDZERO_HOST:1883", f"127.0.0.1:{own_broker.port}")
        .replace("HOMEASSISTANT_PASSWORD", own_broker.passwords["homeassistant"])
    )
    # a careless extra: forward what Home Assistant must never write; gridzero's ACL refuses it
    bridge += "topic gridzero/charger/set out 1\ntopic gridzero/controller/state out 1\n"
    # the bridge takes the `homeassistant` login itself: no probe may take it from it
    own_broker.logins.services.add("homeassistant")
    broker = HaBroker(tmp_path / "ha-broker", bridge)
    yield broker
    broker.stop()


def test_the_bridge_from_the_doc_carries_states_discovery_settings_and_birth(
    own_broker: TestBroker, ha_broker: HaBroker
) -> None:
    gz_controller = own_broker.probe("controller", subscribe=None)
    gz_watch = own_broker.probe("operator")
    discovery = "homeassistant/device/gridzero_controller/config"
    # retained before the bridge is up, as a running gridzero has them
    gz_controller.publish(discovery, b'{"dev": {"ids": ["gridzero_controller"]}}', retain=True)
    gz_controller.publish(T.controller_state, b'{"grid_w": 1}', retain=True)
    ha = ha_broker.probe()
    try:
        # gridzero -> Home Assistant: the retained discovery and state, then a live state
        ha.wait_for(discovery, lambda p: b"gridzero_controller" in p, timeout_s=10)
        ha.wait_for(T.controller_state, lambda p: p == b'{"grid_w": 1}', timeout_s=10)
        before = time.monotonic()
        gz_controller.publish(T.controller_state, b'{"grid_w": 2}', retain=True)
        ha.wait_for(T.controller_state, lambda p: p == b'{"grid_w": 2}', after=before)
        # a Home Assistant connecting later still finds them retained on its own broker
        late = ha_broker.probe()
        late.wait_for(discovery, timeout_s=10)
        late.close()

        # Home Assistant -> gridzero: first what the ACL refuses, then a setting and the birth
        before = time.monotonic()
        ha.publish(T.charger_set, b'{"voltage_v": 58}')
        ha.publish(T.controller_state, b'{"grid_w": 666}')
        setting = T.setting_set("controller", "target_grid_w")
        ha.publish(setting, b"40")
        ha.publish(HA_STATUS_TOPIC, b"online")
        gz_watch.wait_for(setting, lambda p: p == b"40", after=before)
        gz_watch.wait_for(HA_STATUS_TOPIC, lambda p: p == b"online", after=before)
        # the refused messages were sent first on the same connection: had the broker taken
        # them, they would be here already
        assert T.charger_set not in gz_watch.last, "the bridge wrote the charger's command"
        assert gz_watch.last.get(T.controller_state) != b'{"grid_w": 666}'
    finally:
        ha.close()
        gz_watch.close()
        gz_controller.close()
