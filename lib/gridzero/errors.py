"""The exception root of gridzero and how each kind maps to an exit code."""

from __future__ import annotations


class GridzeroError(Exception):
    """Root of gridzero's own errors."""

    exit_code = 1


class UsageError(GridzeroError):
    """Bad command-line usage or bad input given on the command line (exit 2)."""

    exit_code = 2


class SettingsError(GridzeroError):
    """Invalid settings: the message lists every bad setting, its value and what is allowed (exit 2)."""

    exit_code = 2
