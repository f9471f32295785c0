"""Persistent service state: a JSON document on the service's data volume.

Writes are debounced (``set`` then ``flush`` from a timer) and atomic (temp
file, fsync, rename, fsync of the directory), so a crash or a power cut leaves
either the old or the new file, never a torn one, and loses at most one debounce
interval of changes. A file that cannot be read as a JSON object is moved aside
under a time-stamped name and the service starts from its defaults, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Store:
    """A dict persisted to ``<data_dir>/<name>.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.moved_aside: Path | None = None
        self._data: dict[str, Any] = self._read()
        self._dirty = False
        self.writes = 0
        self.failures = 0
        self._retry_s = 0.0
        self._backoff_s = 0.0

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("state file %s unreadable (%s); starting from defaults", self.path, exc)
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            # erased flash reads 0xFF, a torn card write reads anything: keep it for a human
            self._move_aside(f"is not UTF-8 JSON ({exc})")
            return {}
        if not isinstance(data, dict):
            self._move_aside(f"holds a JSON {type(data).__name__}, not an object")
            return {}
        return data

    def _move_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, backup)
        except OSError as exc:
            log.error(
                "state file %s %s and could not be moved aside (%s); starting from defaults",
                self.path,
                why,
                exc,
            )
            return
        self.moved_aside = backup
        log.error(
            "state file %s %s; moved it to %s and started from defaults "
            "(saved settings and counters of this service are NOT restored)",
            self.path,
            why,
            backup,
        )

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Change a value; it reaches the disk at the next flush."""
        if self._data.get(key) != value:
            self._data[key] = value
            self._dirty = True

    def delete(self, key: str) -> None:
        if key in self._data:
            del self._data[key]
            self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def flush(self) -> None:
        """Write the document if anything changed (raises OSError if it cannot)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._dirty = False
        self.writes += 1

    def flush_with_backoff(self, now_s: float) -> None:
        """The periodic flush: a failing disk is logged once per attempt, and attempts back
        off (up to ``MAX_BACKOFF_S``) instead of filling the log every few seconds."""
        if not self._dirty or now_s < self._retry_s:
            return
        try:
            self.flush()
        except OSError as exc:
            self.failures += 1
            self._backoff_s = min(MAX_BACKOFF_S, max(1.0, self._backoff_s * 2))
            self._retry_s = now_s + self._backoff_s
            log.error(
                "state not saved to %s: %s; next try in %.0f s", self.path, exc, self._backoff_s
            )
            return
        self._backoff_s = 0.0
        self._retry_s = 0.0


MAX_BACKOFF_S = 60.0


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable: without this a power cut (the Pi's usual way of
    stopping) can bring back the old file after an acknowledged change."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("could not fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)
