"""A real Home Assistant for the end-to-end tests, started with ``ha-peer``.

``ha-peer`` (in ``../shared/tools`` beside the repository, or ``GRIDZERO_HA_PEER``)
installs Home Assistant Core in its own venv on first use (~75 s, needs PyPI), then
starts it headless against our broker. Everything here talks to it the way a user's
browser or script does: the REST API with a long-lived token, and websocket commands
through ``ha-peer ws`` (our venv has no websocket client).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HA_PEER = Path(os.environ.get("GRIDZERO_HA_PEER", REPO.parent / "shared" / "tools" / "ha-peer"))
DASHBOARD = REPO / "homeassistant" / "dashboard.yaml"
DASHBOARD_PATH = "gridzero-battery"  # the dashboard's URL path (docs/homeassistant.md)
# The Home Assistant release the suite runs: the current one by default (CI). ha-peer runs
# releases newer than the host's Python allows in a Debian root filesystem; the oldest one
# we support (docs/homeassistant.md) with HA_PEER_VERSION=2025.4.4.
CURRENT_HA = "2026.11.0"
OLDEST_HA = "2025.4.4"
HA_VERSION = os.environ.get("HA_PEER_VERSION") or CURRENT_HA


def _env() -> dict[str, str]:
    """ha-peer's environment: the version, and our repository visible inside its root
    filesystem (the dashboard file is named by its absolute path)."""
    binds = [p for p in os.environ.get("HA_PEER_BINDS", "").split(":") if p]
    return {
        **os.environ,
        "HA_PEER_VERSION": HA_VERSION,
        "HA_PEER_BINDS": ":".join([*binds, str(REPO)]),
    }


def extra_yaml(dashboard: Path = DASHBOARD) -> str:
    """What a user adds to configuration.yaml: the Energy dashboard (recorder, history)
    and our dashboard in YAML mode (docs/homeassistant.md)."""
    return (
        "energy:\n"
        "lovelace:\n"
        "  dashboards:\n"
        f"    {DASHBOARD_PATH}:\n"
        "      mode: yaml\n"
        f"      filename: {dashboard}\n"
        "      title: Battery\n"
        "      icon: mdi:home-battery\n"
        "      show_in_sidebar: true\n"
    )


def ensure_installed(timeout_s: float = 600.0) -> None:
    """Install Home Assistant's venv if it is missing (idempotent, quick when done)."""
    result = subprocess.run(
        [str(HA_PEER), "install"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=_env(),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"ha-peer install failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )


@dataclass
class HomeAssistant:
    """One running Home Assistant instance (REST + websocket helpers)."""

    url: str
    token: str
    config: Path
    started_s: float

    @classmethod
    def start(
        cls, config: Path, *, mqtt_port: int, password: str, extra: str = "", timeout_s: float = 240
    ) -> HomeAssistant:
        config.mkdir(parents=True, exist_ok=True)
        extra_file = config.parent / f"{config.name}-extra.yaml"
        extra_file.write_text(extra, encoding="utf-8")
        argv = [
            str(HA_PEER),
            "start",
            "--port",
            "auto",
            "--config",
            str(config),
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(mqtt_port),
            "--mqtt-username",
            "homeassistant",
            "--mqtt-password",
            password,
            "--extra-yaml",
            str(extra_file),
            "--timeout",
            str(int(timeout_s)),
        ]
        started = time.monotonic()
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
            check=False,
            env=_env(),
            cwd=REPO,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ha-peer start failed:\n{result.stderr[-4000:]}")
        env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        return cls(env["HA_URL"], env["HA_TOKEN"], Path(env["HA_CONFIG"]), started)

    def stop(self) -> None:
        subprocess.run(
            [str(HA_PEER), "stop", "--config", str(self.config)],
            capture_output=True,
            timeout=60,
            check=False,
            env=_env(),
        )

    # ------------------------------------------------------------------ REST

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        text = raw.decode("utf-8", "replace")
        if resp.headers.get_content_type() == "application/json":
            return json.loads(text)
        return text

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def state(self, entity_id: str) -> dict[str, Any] | None:
        result = self.request("GET", f"/api/states/{entity_id}")
        return result if isinstance(result, dict) else None

    def call(self, domain: str, service: str, **data: object) -> None:
        self.request("POST", f"/api/services/{domain}/{service}", data)

    def error_log(self) -> str:
        return str(self.request("GET", "/api/error_log"))

    # ------------------------------------------------------------------ websocket

    def ws(self, message: dict[str, Any]) -> Any:
        """One websocket command's result (``ha-peer ws``); raises on failure."""
        env = {**_env(), "HA_URL": self.url, "HA_TOKEN": self.token}
        result = subprocess.run(
            [str(HA_PEER), "ws", json.dumps(message)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ws {message}: {result.stdout[-2000:]} {result.stderr[-2000:]}")
        return json.loads(result.stdout)

    # ------------------------------------------------------------------ waiting

    def wait_for_state(
        self,
        entity_id: str,
        predicate: Callable[[str], bool],
        timeout_s: float = 15.0,
        what: str = "",
    ) -> str:
        """Poll one entity until its state satisfies ``predicate``; returns that state."""
        deadline = time.monotonic() + timeout_s
        last: str | None = None
        while True:
            state = self.state(entity_id)
            last = None if state is None else str(state["state"])
            if last is not None and predicate(last):
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{entity_id}: {what or 'expected state'} not reached in {timeout_s} s; "
                    f"last {last!r}"
                )
            time.sleep(0.1)
