"""Key and ``:`` line interpreter: a key in, actions out.

Pure: the interpreter reads the `Snapshot` (for the controller's mode and the
settings the services announced) and returns actions; the session sends them.
Nothing here publishes by itself, so every key can be tested without a broker.

Every change goes to a topic of the MQTT contract and is validated again by
the service that owns it, which answers on ``<base>/<service>/ack``. The
console refuses what it can already tell is wrong (an unknown service or
setting, a value too long or with control characters) and sends nothing then.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gridzero.contract import SERVICES, Topics
from gridzero.registry import DEVICE_SERVICES
from gridzero_telnet_console.protocol import Key, Named
from gridzero_telnet_console.snapshot import Snapshot


class View(Enum):
    STATUS = "status"
    CELLS = "cells"
    HELP = "help"
    LOG = "log"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class Publish:
    """Send ``payload`` to ``topic``.

    ``what`` names the target for the log (``controller.discharge_enabled``); ``said`` is
    what the operator asked for in their words (``discharge off``), which the answer
    repeats: ``discharge off: done (controller accepted)``.
    """

    topic: str
    payload: str
    what: str
    said: str = ""

    @property
    def words(self) -> str:
        return self.said or f"{self.what} = {self.payload}"


@dataclass(frozen=True, slots=True)
class Message:
    """One line for the operator at the bottom of the screen."""

    text: str


@dataclass(frozen=True, slots=True)
class Quit:
    reason: str


@dataclass(frozen=True, slots=True)
class Redraw:
    """Draw now; ``full`` clears the screen first (after a view change)."""

    full: bool = False


Action = Publish | Message | Quit | Redraw


@dataclass(frozen=True, slots=True)
class KeyHelp:
    keys: str
    label: str  # for the header line
    help: str  # for the help screen


# The header line keeps the original system's layout (anikrooz/housebatt housebatt.ino readTelnet).
KEY_HELP: tuple[KeyHelp, ...] = (
    KeyHelp("space", "space pause", "pause/resume screen updates"),
    KeyHelp("d", "d debug", "follow service logs (< > service, + - level)"),
    KeyHelp("C/B/I", "C/B/I raw dbg", "raw CAN/serial traffic: charger / bms / inverter"),
    KeyHelp("c", "c charge on/off", "allow/forbid charging (controller.charge_enabled)"),
    KeyHelp("i", "i discharge on/off", "allow/forbid discharging (controller.discharge_enabled)"),
    KeyHelp("l", "l force balance", "bms: force balancing (button)"),
    KeyHelp("%", "% SoC from voltage", "shunt: recompute SoC from pack voltage (asks y)"),
    KeyHelp("!", "! SoC 100%", "shunt: set SoC to 100 % (asks y; the original set 95 %)"),
    KeyHelp("r", "r recharge", "charge on + reset the charger's over-current trip (asks y)"),
    KeyHelp("R", "R restart", "restart a service: then b c i s o t picks it, other keys cancel"),
    KeyHelp(
        "-", "- sign", "current sign: a shunt start-up setting (invert); explains, sends nothing"
    ),
    KeyHelp("p", "p cells", "cell table per module (? marks a suspect cell)"),
    KeyHelp("h", "h help", "this help"),
    KeyHelp("q", "q quit", "close the session (also Ctrl-C, Ctrl-D)"),
)

LINE_HELP: tuple[str, ...] = (
    ":set <service>.<setting> <value>     change a runtime setting (inverter.<unit>.<setting>)",
    ":get <service>.<setting>             show a setting; :get <service> lists them",
    ":mode <mode>                         controller mode (auto, charge_only, hold, off, ...)",
    ":log <service|all> [level]           follow logs; level DEBUG/INFO/WARNING/ERROR",
    ":raw <service>                       follow raw traffic",
    ":help  :quit                         Esc or Ctrl-C leaves the : line",
)

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_SERVICES: tuple[str, ...] = ("all", *SERVICES)
RAW_SERVICES: tuple[str, ...] = DEVICE_SERVICES  # the services that publish raw frames
RAW_KEYS: dict[str, str] = {"C": "charger", "B": "bms", "I": "inverter"}

# Names on the contract's settings/action topics that the keys use. The owning
# services define them; services/telnet-console/README.md lists them.
MODE_SETTING = "mode"
CHARGE_ENABLED_SETTING = "charge_enabled"
DISCHARGE_ENABLED_SETTING = "discharge_enabled"
RAW_DEBUG_SETTING = "raw_debug"
FORCE_BALANCE_ACTION = ("bms", "force_balance")
SOC_FROM_VOLTAGE_ACTION = ("shunt", "soc_from_voltage")
SOC_FULL_ACTION = ("shunt", "soc_full")
RESET_OVER_CURRENT_ACTION = ("charger", "reset_over_current")
RESTART_ACTION = "restart"  # every service's button (gridzero.runtime.service)
# R, then one of these keys: the service to restart (the second key is the confirmation).
RESTART_KEYS: dict[str, str] = {
    "b": "bms",
    "c": "charger",
    "i": "inverter",
    "s": "shunt",
    "o": "controller",
    "t": "telnet-console",
}
SIGN_TEXT = (
    "- does not flip the current sign here: it is the shunt's start-up setting `invert` "
    "(a wrong sign at runtime would turn every current limit around); set it in the shunt's "
    "settings and restart the shunt (services/shunt/README.md)"
)
BUTTON_PAYLOAD = "PRESS"  # Home Assistant's default button payload

# c / i flip the controller's charge/discharge enable, whatever the mode:
# key -> (setting, what the operator reads).
ENABLE_KEYS: dict[str, tuple[str, str]] = {
    "c": (CHARGE_ENABLED_SETTING, "charge"),
    "i": (DISCHARGE_ENABLED_SETTING, "discharge"),
}
_TRUE_TEXT = ("true", "on")  # the contract's boolean texts (parse_setting_text)
_FALSE_TEXT = ("false", "off")

USAGE: dict[str, str] = {
    "set": "set <service>.<setting> <value>",
    "get": "get <service>.<setting>  or  get <service>",
    "mode": "mode <mode>",
    "log": "log <service|all> [level]",
    "raw": "raw <service>",
    "help": "help",
    "quit": "quit",
}

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_VALUE_CHARS = 256
DEFAULT_MAX_LINE_CHARS = 200

_CONFIRM: dict[str, str] = {
    "%": "recompute SoC from the pack voltage",
    "!": "set SoC to 100 %",
    "r": "restart charging (controller.charge_enabled -> true, charger.reset_over_current)",
}


@dataclass(slots=True)
class ConsoleState:
    """What one session shows and is typing."""

    view: View = View.STATUS
    paused: bool = False
    line: str | None = None  # text after ':' while a command line is open
    confirm: str | None = None  # a key waiting for 'y'
    log_service: str = "all"
    log_level: str = "INFO"
    raw_service: str = "charger"


class Interpreter:
    """Turns keys into actions for one session."""

    def __init__(self, topics: Topics, max_line_chars: int = DEFAULT_MAX_LINE_CHARS) -> None:
        self.topics = topics
        self.max_line_chars = max_line_chars
        self.state = ConsoleState()

    # --- keys -----------------------------------------------------------------

    def key(self, key: Key, snap: Snapshot) -> list[Action]:
        if self.state.line is not None:
            return self._line_key(key, snap)
        if self.state.confirm is not None:
            return self._confirm_key(key)
        if key.named is not None:
            return self._named_key(key.named)
        return self._char_key(key.char, snap)

    def _named_key(self, named: Named) -> list[Action]:
        if named in (Named.INTERRUPT, Named.EOF):
            return [Quit("bye")]
        if named is Named.ESCAPE:
            return self._set_view(View.STATUS)
        if self.state.view in (View.LOG, View.RAW):
            arrows = {Named.LEFT: "<", Named.RIGHT: ">", Named.UP: "+", Named.DOWN: "-"}
            if named in arrows:
                return self._follow_key(arrows[named])
        return []  # Enter after a key (line-mode clients), Tab, other keys: nothing

    def _char_key(self, char: str, snap: Snapshot) -> list[Action]:
        state = self.state
        if char == ":":
            state.line = ""
            return [Redraw()]
        if char == " ":
            state.paused = not state.paused
            return [Message("paused: space resumes" if state.paused else "resumed"), Redraw()]
        if state.view in (View.LOG, View.RAW) and char in "<>+-":
            return self._follow_key(char)
        simple: dict[str, Callable[[], list[Action]]] = {
            "d": lambda: self._toggle_view(View.LOG),
            "p": lambda: self._toggle_view(View.CELLS),
            "h": lambda: self._toggle_view(View.HELP),
            "?": lambda: self._toggle_view(View.HELP),
            "q": lambda: [Quit("bye")],
            "c": lambda: self._toggle_enable(snap, *ENABLE_KEYS["c"]),
            "i": lambda: self._toggle_enable(snap, *ENABLE_KEYS["i"]),
            "l": lambda: [self._button(FORCE_BALANCE_ACTION)],
            "-": lambda: [Message(SIGN_TEXT)],
            "R": self._ask_restart,
        }
        if char in RAW_KEYS:
            simple[char] = lambda: self._toggle_raw(RAW_KEYS[char])
        if char in _CONFIRM:
            simple[char] = lambda: self._ask(char)
        handler = simple.get(char)
        if handler is None:
            return [Message(f"key {char!r} does nothing here; h for help")]
        return handler()

    def _ask(self, char: str) -> list[Action]:
        self.state.confirm = char
        return [Message(f"press y to {_CONFIRM[char]}, any other key cancels")]

    def _ask_restart(self) -> list[Action]:
        self.state.confirm = "R"
        keys = " ".join(f"{k} {name}" for k, name in RESTART_KEYS.items())
        return [Message(f"restart which service? {keys}; any other key cancels")]

    def _confirm_key(self, key: Key) -> list[Action]:
        pending = self.state.confirm
        if key.named is Named.ENTER:
            return []  # line-mode clients send Enter after the key itself
        self.state.confirm = None
        if pending == "R" and key.char in RESTART_KEYS:
            return [self._button((RESTART_KEYS[key.char], RESTART_ACTION))]
        if pending is None or pending == "R" or key.char not in ("y", "Y"):
            return [Message("cancelled; nothing sent")]
        return self._confirmed(pending)

    def _confirmed(self, pending: str) -> list[Action]:
        if pending == "r":
            # housebatt's `r` cleared its "fully charged" flag (housebatt.ino lines 896-899).
            # Here the bms's full state releases by itself below charge_end_v minus the
            # hysteresis; what a person can restart is the controller's charge enable and
            # the charger's latched over-current trip (refused if none is latched).
            topic = self.topics.setting_set("controller", CHARGE_ENABLED_SETTING)
            said = "charge on"
            return [
                Publish(topic, "true", f"controller.{CHARGE_ENABLED_SETTING}", said),
                self._button(RESET_OVER_CURRENT_ACTION),
            ]
        action = SOC_FROM_VOLTAGE_ACTION if pending == "%" else SOC_FULL_ACTION
        return [self._button(action)]

    def _button(self, action: tuple[str, str]) -> Publish:
        service, name = action
        topic = self.topics.action_set(service, name)
        return Publish(topic, BUTTON_PAYLOAD, f"{service}.{name}", f"{service}.{name} pressed")

    def _toggle_view(self, view: View) -> list[Action]:
        return self._set_view(View.STATUS if self.state.view is view else view)

    def _set_view(self, view: View) -> list[Action]:
        actions: list[Action] = []
        if self.state.view is View.RAW and view is not View.RAW:
            actions.append(self._raw_debug(self.state.raw_service, on=False))
        self.state.view = view
        actions.append(Redraw(full=True))
        return actions

    def leave(self) -> list[Publish]:
        """What to send when the session ends: switch raw traffic debugging back off."""
        if self.state.view is not View.RAW:
            return []
        self.state.view = View.STATUS
        return [self._raw_debug(self.state.raw_service, on=False)]

    def _toggle_raw(self, service: str) -> list[Action]:
        if self.state.view is View.RAW and self.state.raw_service == service:
            return self._set_view(View.STATUS)
        return self._open_raw(service)

    def _open_raw(self, service: str) -> list[Action]:
        actions = self._set_view(View.STATUS) if self.state.view is View.RAW else []
        self.state.raw_service = service
        self.state.view = View.RAW
        return [*actions, self._raw_debug(service, on=True), Redraw(full=True)]

    def _raw_debug(self, service: str, *, on: bool) -> Publish:
        topic = self.topics.setting_set(service, RAW_DEBUG_SETTING)
        payload, said = ("true", "on") if on else ("false", "off")
        what = f"{service}.{RAW_DEBUG_SETTING}"
        return Publish(topic, payload, what, f"{service} raw traffic {said}")

    def _follow_key(self, char: str) -> list[Action]:
        state = self.state
        if char in "<>":
            step = 1 if char == ">" else -1
            if state.view is View.RAW:
                known = state.raw_service in RAW_SERVICES
                index = RAW_SERVICES.index(state.raw_service) if known else 0
                return self._open_raw(RAW_SERVICES[(index + step) % len(RAW_SERVICES)])
            index = LOG_SERVICES.index(state.log_service)
            state.log_service = LOG_SERVICES[(index + step) % len(LOG_SERVICES)]
        elif state.view is View.LOG:
            index = LOG_LEVELS.index(state.log_level) + (-1 if char == "+" else 1)
            state.log_level = LOG_LEVELS[min(max(index, 0), len(LOG_LEVELS) - 1)]
        return [Redraw(full=True)]

    def _toggle_enable(self, snap: Snapshot, name: str, what: str) -> list[Action]:
        key = f"controller.{name}"
        status = snap.status.get("controller")
        if status in ("offline", "stopped"):
            return [Message(f"controller is {status}: {key} not changed; nothing sent")]
        current = enabled(snap, name)
        if current is None:
            return [Message(f"{key} unknown (no echo from the controller yet); nothing sent")]
        payload = "false" if current else "true"
        said = f"{what} {'off' if current else 'on'}"
        text = f"{said} ({key} -> {payload})"
        mode = current_mode(snap)
        if not current and mode is not None and not mode_allows(mode, what):
            text += f"; mode {mode} still forbids it"
        topic = self.topics.setting_set("controller", name)
        return [Publish(topic, payload, key, said), Message(text)]

    # --- the ':' line -----------------------------------------------------------

    def _line_key(self, key: Key, snap: Snapshot) -> list[Action]:
        state = self.state
        line = state.line or ""
        if key.named is None:
            if len(line) >= self.max_line_chars:
                return [Message(f"command line is limited to {self.max_line_chars} characters")]
            state.line = line + key.char
            return [Redraw()]
        if key.named is Named.ENTER:
            state.line = None
            return [*self.command(line.strip(), snap), Redraw()]
        if key.named in (Named.ESCAPE, Named.INTERRUPT, Named.EOF):
            state.line = None
            return [Message("command line closed"), Redraw()]
        edits = {Named.BACKSPACE: line[:-1] if line else None, Named.ERASE_LINE: ""}
        if key.named in edits:
            state.line = edits[key.named]
            return [Redraw()]
        return []

    def command(self, line: str, snap: Snapshot) -> list[Action]:
        """Run one ``:`` command line (without the colon)."""
        words = line.split()
        if not words:
            return []
        verb, args = words[0].lower(), words[1:]
        handlers: dict[str, Callable[[list[str], Snapshot], list[Action] | None]] = {
            "set": self._cmd_set,
            "get": self._cmd_get,
            "mode": self._cmd_mode,
            "log": self._cmd_log,
            "raw": self._cmd_raw,
            "help": self._cmd_help,
            "h": self._cmd_help,
            "?": self._cmd_help,
            "quit": self._cmd_quit,
            "q": self._cmd_quit,
            "exit": self._cmd_quit,
        }
        handler = handlers.get(verb)
        if handler is None:
            verbs = "set, get, mode, log, raw, help, quit"
            return [Message(f"unknown command {_shown(verb)}; try {verbs}")]
        actions = handler(args, snap)
        if actions is None:
            return [Message(f"usage: :{USAGE.get(verb, verb)}")]
        return actions

    def _cmd_set(self, args: list[str], snap: Snapshot) -> list[Action] | None:
        return self._set(args[0], " ".join(args[1:]), snap) if len(args) >= 2 else None

    def _cmd_get(self, args: list[str], snap: Snapshot) -> list[Action] | None:
        return [self._get(args[0], snap)] if len(args) == 1 else None

    def _cmd_mode(self, args: list[str], snap: Snapshot) -> list[Action] | None:
        return self._set(f"controller.{MODE_SETTING}", args[0], snap) if len(args) == 1 else None

    def _cmd_log(self, args: list[str], _snap: Snapshot) -> list[Action] | None:
        return self._log(args) if 1 <= len(args) <= 2 else None

    def _cmd_raw(self, args: list[str], _snap: Snapshot) -> list[Action] | None:
        if len(args) != 1:
            return None
        if args[0] not in RAW_SERVICES:
            return [Message(f"raw: {_shown(args[0])} is not one of {', '.join(RAW_SERVICES)}")]
        return self._open_raw(args[0])

    def _cmd_help(self, args: list[str], _snap: Snapshot) -> list[Action] | None:
        return None if args else self._set_view(View.HELP)

    def _cmd_quit(self, args: list[str], _snap: Snapshot) -> list[Action] | None:
        return None if args else [Quit("bye")]

    def _set(self, target: str, value: str, snap: Snapshot) -> list[Action]:
        parsed = _parse_target(target)
        if isinstance(parsed, str):
            return [Message(parsed)]
        service, unit, name = parsed
        if len(value) > MAX_VALUE_CHARS or not value.isprintable():
            limit = f"printable and at most {MAX_VALUE_CHARS} characters"
            return [Message(f"value of {_shown(target)} must be {limit}; nothing sent")]
        key = ".".join(p for p in (service, unit, name) if p)
        if key not in snap.settings:
            return [Message(_unknown_setting(service, key, snap))]
        topic = self.topics.setting_set(service, name, unit=unit)
        said = f"{key} = {value}"
        return [Publish(topic, value, key, said), Message(f"sent {said}; waiting for the answer")]

    def _get(self, target: str, snap: Snapshot) -> Message:
        if target in SERVICES:
            names = snap.setting_names(target)
            if not names:
                return Message(f"no settings seen from {target} (is it online?)")
            return Message(f"{target}: {', '.join(names)}")
        parsed = _parse_target(target)
        if isinstance(parsed, str):
            return Message(parsed)
        key = ".".join(p for p in parsed if p)
        if key not in snap.settings:
            return Message(_unknown_setting(parsed[0], key, snap))
        return Message(f"{key} = {snap.settings[key]}")

    def _log(self, args: list[str]) -> list[Action]:
        service = args[0]
        if service not in LOG_SERVICES:
            return [Message(f"log: {_shown(service)} is not one of {', '.join(LOG_SERVICES)}")]
        level = args[1].upper() if len(args) == 2 else self.state.log_level
        if level not in LOG_LEVELS:
            return [Message(f"log: level {_shown(level)} is not one of {', '.join(LOG_LEVELS)}")]
        self.state.log_service, self.state.log_level = service, level
        return self._set_view(View.LOG)


def current_mode(snap: Snapshot) -> str | None:
    """The controller's mode: its retained setting echo, else its state."""
    mode = snap.settings.get(f"controller.{MODE_SETTING}")
    if mode:
        return mode
    if snap.controller is not None:
        return str(snap.controller.value.mode.value)
    return None


def enabled(snap: Snapshot, name: str) -> bool | None:
    """A controller boolean setting from its retained echo; None if unknown or not a boolean."""
    text = snap.settings.get(f"controller.{name}", "").strip().lower()
    if text in _TRUE_TEXT:
        return True
    if text in _FALSE_TEXT:
        return False
    return None


def mode_allows(mode: str, what: str) -> bool:
    """Whether a controller mode lets it ``charge`` or ``discharge`` (the enables aside)."""
    if what == "charge":
        return mode in ("auto", "charge_only", "constant_power")
    return mode in ("auto", "discharge_only", "constant_power")


def _parse_target(target: str) -> tuple[str, str | None, str] | str:
    """``service.name`` or ``service.unit.name``; a str is the error message."""
    parts = target.split(".")
    if len(parts) not in (2, 3):
        return f"{_shown(target)}: write <service>.<setting> or <service>.<unit>.<setting>"
    service = parts[0]
    if service not in SERVICES:
        return f"unknown service {_shown(service)}; services: {', '.join(SERVICES)}"
    if not all(_NAME.match(p) for p in parts[1:]):
        return f"{_shown(target)}: names are letters, digits, '_' and '-' (at most 64)"
    unit = parts[1] if len(parts) == 3 else None
    return service, unit, parts[-1]


def _unknown_setting(service: str, key: str, snap: Snapshot) -> str:
    names = snap.setting_names(service)
    if not names:
        return f"no settings seen from {service} (is it online?); nothing sent"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"unknown setting {key}; {service} has: {shown}; nothing sent"


def _shown(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))
