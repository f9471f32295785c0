"""``gridzero run <service>``: start one service in this process."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from gridzero.errors import UsageError
from gridzero.registry import PARTS
from gridzero.runtime.service import Service, run_service
from gridzero.runtime.settings import (
    ServiceSettings,
    load_settings,
    redact,
    scrub,
    secret_values,
)

# service name (as on MQTT, in Docker, on the CLI) -> module defining SERVICE
SERVICE_MODULES: dict[str, str] = {p.name: p.service_module for p in PARTS}


def service_class(name: str) -> type[Service[Any]]:
    """The Service subclass for a service name, or UsageError listing the known names."""
    if name not in SERVICE_MODULES:
        raise UsageError(f"unknown service {name!r}; known services: {', '.join(SERVICE_MODULES)}")
    try:
        module = importlib.import_module(SERVICE_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == SERVICE_MODULES[name]:
            raise UsageError(f"service {name!r} is not built yet (no module {exc.name})") from exc
        raise
    cls: type[Service[Any]] = module.SERVICE
    return cls


def run_main(argv: list[str]) -> int:
    """Entry of ``gridzero run``."""
    parser = argparse.ArgumentParser(prog="gridzero run", description="Run one gridzero service.")
    parser.add_argument("service", help="one of: " + ", ".join(SERVICE_MODULES))
    parser.add_argument(
        "--config", type=Path, help="YAML settings file (environment variables take precedence)"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the settings, print them and exit"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    cls = service_class(args.service)
    settings = load_settings(cls.settings_class, args.config)
    if args.check:
        print(check_text(settings))
        return 0
    return run_service(cls, settings)


def check_text(settings: ServiceSettings) -> str:
    """What ``--check`` prints: every setting, with each password, hash, secret or token
    (any setting named like one, at any depth) shown as ``<hidden>`` (empty when unset)."""
    data = settings.model_dump(mode="json")
    return scrub(json.dumps(redact(data), indent=2), secret_values(data))
