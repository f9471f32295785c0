"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only).

``--remote-debugging-pipe`` makes Chromium read commands from fd 3 and write
answers and events to fd 4, each a JSON object ended by a NUL byte: no websocket
client needed. Used to log in to Home Assistant's frontend with a token, wait until
a dashboard has rendered its values, and take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _high_fd(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, executable: str, profile: Path, width: int, height: int) -> None:
        read_end, self._to_chrome = os.pipe()
        self._from_chrome, write_end = os.pipe()
        # the child's ends above fd 9, so bash (dash cannot name fds > 9) moves them to 3 and 4
        child_r, child_w = _high_fd(read_end), _high_fd(write_end)
        os.close(read_end)
        os.close(write_end)
        argv = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{child_r} 4>&{child_w}', *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(child_r, child_w),
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.page("Page.enable")
        self.page(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """One DevTools command; returns its result (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send(method, params, session=self._session)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def navigate(self, url: str) -> None:
        self.page("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.page(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Evaluate ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen within {timeout_s} s")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> int:
        data = base64.b64decode(self.page("Page.captureScreenshot", {"format": "png"})["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


# Text of the page including every open shadow root (HA's frontend is web components).
DEEP_TEXT_JS = """
(() => {
  const out = [];
  const walk = (node) => {
    if (!node || ['STYLE', 'SCRIPT', 'TEMPLATE'].includes(node.tagName)) return;
    if (node.nodeType === Node.TEXT_NODE) { const t = node.textContent.trim(); if (t) out.push(t); return; }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document.documentElement);
  return out.join('\\n');
})()
"""


def deep_contains_js(outer_tag: str, inner_tag: str) -> str:
    """JS: is there an ``inner_tag`` element inside an ``outer_tag`` element, through
    shadow roots (e.g. a drawn chart canvas inside a history-graph card)?"""
    return f"""
(() => {{
  const find = (node, tag, out) => {{
    if (!node) return out;
    if (node.tagName === tag) out.push(node);
    if (node.shadowRoot) find(node.shadowRoot, tag, out);
    for (const child of node.children || []) find(child, tag, out);
    return out;
  }};
  return find(document.documentElement, {json.dumps(outer_tag.upper())}, [])
    .some((el) => find(el, {json.dumps(inner_tag.upper())}, []).length > 0);
}})()
"""


def hass_tokens_js(url: str, token: str) -> str:
    """Store a login the frontend accepts (what it saves itself after a login), with a
    long-lived token that it uses until ``expires``; no refresh is ever needed."""
    tokens = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 1800,
        "hassUrl": url,
        "clientId": url + "/",
        "expires": int(time.time() * 1000) + 10 * 365 * 86400 * 1000,
        "refresh_token": "",
    }
    return (
        f"localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});"
        "localStorage.setItem('selectedLanguage', '\"en\"');"
        "true"
    )


# HA 2026 asks in the frontend to confirm HTTP settings that changed at a restart (ha-peer
# sets the port in configuration.yaml); the dialog covers the dashboard. Not something a
# user of gridzero sees: it comes from the test instance. Click its Confirm button.
CONFIRM_HTTP_DIALOG_JS = """
(() => {
  const buttons = [];
  let text = '';
  const walk = (node) => {
    if (!node) return;
    if (node.nodeType === Node.TEXT_NODE) { text += node.textContent; return; }
    if (node.nodeType === Node.ELEMENT_NODE && /BUTTON/.test(node.tagName)
        && node.textContent.trim() === 'Confirm') buttons.push(node);
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document.documentElement);
  if (!text.includes('Confirm new HTTP server configuration') || !buttons.length) return false;
  buttons[0].click();
  return true;
})()
"""
