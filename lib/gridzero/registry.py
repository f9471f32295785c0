"""The one table of gridzero's parts: every service and tool, where its code lives and what
it is called on MQTT, the command line and in Docker.

Everything that needs a list of services derives it from here (the contract's topic names,
``gridzero run``, ``gridzero decode``, Home Assistant discovery, the console, the fault rig,
the ACL). A part's package is imported only when it is used, so an image that holds only the
library and one service still knows the names of the others (for topics and the ACL) without
carrying their code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["device", "bus", "tool"]


@dataclass(frozen=True, slots=True)
class Part:
    """One process on the bus."""

    name: str
    """As in topics, on the command line and in Docker (``telnet-console`` has a dash)."""
    package: str
    """The import name; it says where the code lives (see ``folder``)."""
    distribution: str
    folder: str
    """The folder of the repository that holds the part's code, tests, doc and Dockerfile."""
    kind: Kind
    """``device``: talks to hardware; ``bus``: MQTT only; ``tool``: never in a device image."""
    device: str | None = None
    """The device whose frames ``gridzero decode/encode <device>`` handle, if any."""
    units: bool = False
    """Its topics may carry a unit level (``<base>/inverter/<unit>/...``, one per device)."""
    optional: bool = False
    """Not part of the default system: started only on request (``gridzero up --with <name>``,
    a compose profile of its name); not in the hub, the fault rig or ``SYSTEM_SERVICES``."""
    own_topics: tuple[str, ...] | None = None
    """The kinds (the contract's ``TOPIC_SPECS`` names) of the every-service topics it writes
    under its own name (status, log, ack...); ``None``: all of them. The ACL gives it no more."""

    @property
    def service_module(self) -> str:
        """The module that defines ``SERVICE``."""
        return f"{self.package}.service"


PARTS: tuple[Part, ...] = (
    Part("bms", "gridzero_bms", "gridzero-bms", "services/bms", "device", "vw-module"),
    Part("charger", "gridzero_charger", "gridzero-charger", "services/charger", "device", "r48"),
    Part(
        "inverter",
        "gridzero_inverter",
        "gridzero-inverter",
        "services/inverter",
        "device",
        "soyosource",
        units=True,
    ),
    Part("shunt", "gridzero_shunt", "gridzero-shunt", "services/shunt", "device", "ads1115"),
    Part("controller", "gridzero_controller", "gridzero-controller", "services/controller", "bus"),
    # Python names cannot contain "-": the console's package uses an underscore.
    Part(
        "telnet-console",
        "gridzero_telnet_console",
        "gridzero-telnet-console",
        "services/telnet-console",
        "bus",
    ),
    # the original ESP32 project's MQTT topics (battery/..., goatshed/...) for an owner
    # switching over, on request only (services/housebatt-compat/README.md); it has no
    # settings, commands or discovery, so of its own topics it writes only status and log
    Part(
        "housebatt-compat",
        "gridzero_housebatt_compat",
        "gridzero-housebatt-compat",
        "services/housebatt-compat",
        "bus",
        optional=True,
        own_topics=("status", "log"),
    ),
    Part("sim", "gridzero_tools.sim", "gridzero-tools", "tools", "tool"),
)

SERVICES: tuple[str, ...] = tuple(p.name for p in PARTS)
"""Every process on the bus, by the name it uses in topics, the CLI and Docker."""

SYSTEM_SERVICES: tuple[str, ...] = tuple(
    p.name for p in PARTS if p.kind != "tool" and not p.optional
)
"""The services of a real installation by default (everything but the simulator and the
optional services)."""

OPTIONAL_SERVICES: tuple[str, ...] = tuple(p.name for p in PARTS if p.optional)
"""Services started only on request (``gridzero up --with``, their compose profile)."""

DEVICE_SERVICES: tuple[str, ...] = tuple(p.name for p in PARTS if p.kind == "device")
"""The services that talk to hardware (and publish raw frames)."""

UNIT_SERVICES: tuple[str, ...] = tuple(p.name for p in PARTS if p.units)
"""The services whose settings and discovery also exist per unit (the ACL allows those)."""

CODEC_DEVICES: dict[str, str] = {p.device: f"{p.package}.cli" for p in PARTS if p.device}
"""device name -> module with ``decode_main(argv)`` / ``encode_main(argv)``."""


def part(name: str) -> Part:
    """The part called ``name``; KeyError naming the known ones."""
    for p in PARTS:
        if p.name == name:
            return p
    raise KeyError(f"unknown service {name!r}; known services: {', '.join(SERVICES)}")


def writes_own(service: str, kind: str) -> bool:
    """Whether ``service`` writes the every-service topic ``kind`` (a ``TOPIC_SPECS`` name)
    under its own name; False for a name that is no service."""
    for p in PARTS:
        if p.name == service:
            return p.own_topics is None or kind in p.own_topics
    return False
