"""Fixtures shared by every test: a real mosquitto from the project's own config, and the
figures a test measures, printed at the end of the run."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
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


# Figures (build times, speeds) are printed at the end of the run, not by the test itself:
# under pytest-xdist a worker's own output never reaches the terminal, but a report's
# user_properties do.
FIGURE = "figure"
_FIGURES: list[tuple[str, str]] = []  # (test id, line), on the process that prints the summary


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with a line to show it under "measured figures" after the run (never asserted)."""

    def say(line: str) -> None:
        request.node.user_properties.append((FIGURE, line))

    return say


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # the teardown report carries every line, those said in a fixture's teardown included
    if report.when != "teardown":
        return
    lines = [str(value) for key, value in report.user_properties if key == FIGURE]
    if lines:
        _FIGURES.extend((report.nodeid, line) for line in lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("measured figures")
    for nodeid, line in _FIGURES:
        terminalreporter.write_line(f"{nodeid}: {line}")
