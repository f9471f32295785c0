"""Persistent service state: a JSON document on the service's data volume.

Writes are debounced (``mark`` then ``flush`` from a timer) and atomic (temp
file, fsync, rename), so a crash leaves either the old or the new file, never a
torn one, and loses at most one debounce interval of changes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Store:
    """A dict persisted to ``<data_dir>/<name>.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = self._read()
        self._dirty = False
        self.writes = 0

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("state file %s unreadable (%s); starting from defaults", self.path, exc)
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # keep the bad file for a human, start clean
            backup = self.path.with_suffix(".corrupt")
            os.replace(self.path, backup)
            log.error("state file %s is not JSON (%s); moved to %s", self.path, exc, backup)
            return {}
        if not isinstance(data, dict):
            log.error(
                "state file %s holds %s, not an object; ignoring it", self.path, type(data).__name__
            )
            return {}
        return data

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
        """Write the document if anything changed."""
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
        self._dirty = False
        self.writes += 1
