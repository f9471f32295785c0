"""The gridzero command: subcommands, exit codes, messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gridzero.cli import COMMANDS, main


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gridzero.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in COMMANDS:
        assert command.name in out.stdout
    for name in ("run", "decode", "encode", "sim", "bench", "up"):
        assert name in out.stdout


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_run_unknown_service_exits_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "toaster"]) == 2
    err = capsys.readouterr().err
    assert "unknown service 'toaster'" in err
    assert "bms" in err
    assert "telnet-console" in err


def test_decode_unknown_device_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "toaster", "00"]) == 2
    assert "unknown device 'toaster'" in capsys.readouterr().err


def test_no_arguments_is_usage_error() -> None:
    assert main([]) == 2
