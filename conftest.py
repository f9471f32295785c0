"""Fixtures shared by every test: a real mosquitto from the project's own config."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridzero.testing import TestBroker


def _require_mosquitto() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail(
            "mosquitto is not installed: run ./run.sh test (it installs it) or apt-get install mosquitto"
        )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    """One broker for the session (fast); tests must not kill it."""
    _require_mosquitto()
    b = TestBroker.create(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[TestBroker]:
    """A broker of the test's own, which the test may kill and restart."""
    _require_mosquitto()
    b = TestBroker.create(tmp_path)
    yield b
    b.stop()
