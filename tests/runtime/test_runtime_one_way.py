"""One way to do each shared thing (issue 17 item 4): one bms limits model, one staleness
rule, one device link, settings declared once. These tests read the source (AST) so that a
second copy written later fails here, and check the shared pieces' behaviour."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from gridzero.contract import BmsLimits, ShuntState
from gridzero.registry import PARTS
from gridzero.runtime import link as link_module
from gridzero.runtime.freshness import Freshness, FreshValue, NotFreshError, is_fresh
from gridzero.runtime.link import DeviceLink
from gridzero_bms.protection import Limits
from gridzero_charger.domain import SETTING_BOUNDS, ChargerSettings
from gridzero_charger.service import ChargerRuntime, ChargerServiceSettings
from gridzero_controller.service import runtime_from
from gridzero_controller.settings import ControllerRuntime, ControllerSettings
from gridzero_inverter.domain import UNIT_BOUNDS
from gridzero_inverter.service import UnitConfig

REPO = Path(__file__).resolve().parents[2]
# every package of the workspace: the library, each service, the tools
SERVICE_PACKAGES = {p.name: REPO / p.folder / p.package for p in PARTS if p.kind != "tool"}
PACKAGES = [
    REPO / "lib" / "gridzero",
    *SERVICE_PACKAGES.values(),
    REPO / "tools" / "gridzero_tools",
]
# Field names of the old, parallel limits types: one set of names now (cvl_v, ccl_a, dcl_a).
OLD_LIMIT_NAMES = {
    "charge_voltage_v",
    "charge_current_a",
    "discharge_current_a",
    "discharge_current_limit_a",
}


def _modules(*folders: Path) -> list[tuple[Path, ast.Module]]:
    return [
        (p, ast.parse(p.read_text(), str(p)))
        for folder in folders
        for p in sorted(folder.rglob("*.py"))
    ]


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"


# ------------------------------------------------------------------ one bms limits model


def test_bms_limits_is_declared_once() -> None:
    """The contract's BmsLimits is the one model; no module declares its own copy."""
    copies = [
        _where(path, node)
        for path, tree in _modules(*PACKAGES)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and node.name.endswith("Limits")
        and path.name != "contract.py"
        and not (path.name == "protection.py" and node.name == "Limits")
    ]
    assert copies == [], f"a second bms limits type: {copies}"


def test_no_module_uses_the_old_limit_field_names() -> None:
    found = [
        f"{_where(path, node)} {name}"
        for path, tree in _modules(*PACKAGES)
        for node in ast.walk(tree)
        for name in (
            [node.attr]
            if isinstance(node, ast.Attribute)
            else [node.arg]
            if isinstance(node, ast.keyword) and node.arg
            else [node.target.id]
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            else []
        )
        if name in OLD_LIMIT_NAMES
    ]
    assert found == [], f"old limit field names: {found}"


def test_the_bms_producer_computes_the_contract_fields_by_their_names() -> None:
    producer = {f.name for f in dataclasses.fields(Limits)}
    shared = {"cvl_v", "ccl_a", "dcl_a", "charge_allowed", "discharge_allowed"}
    assert shared <= producer
    assert shared <= set(BmsLimits.model_fields)


@pytest.mark.parametrize("service", ["charger", "inverter", "controller"])
def test_every_consumer_of_bms_limits_imports_the_one_model(service: str) -> None:
    imported = {
        (node.module, alias.name)
        for path, tree in _modules(SERVICE_PACKAGES[service])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert ("gridzero.contract", "BmsLimits") in imported


def test_a_denied_side_is_a_zero_limit_and_any_alarm_an_alarm() -> None:
    limits = BmsLimits(
        ts=1.0, boot="b", seq=1, cvl_v=49.2, ccl_a=40.0, dcl_a=50.0, pack_voltage_v=48.0,
        charge_allowed=False, discharge_allowed=True,
    )  # fmt: skip
    assert (limits.charge_limit_a, limits.discharge_limit_a, limits.alarm) == (0.0, 50.0, False)


# ------------------------------------------------------------------ one staleness rule


def _age_comparisons(tree: ast.Module) -> list[ast.Compare]:
    """`now - x.at_s <= max_stale` written out by hand instead of `is_fresh`/`.fresh`."""

    def arrival(node: ast.AST) -> bool:
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
        # our own frames' send times (``sent_at_s``) are not messages from elsewhere
        return name.endswith(("at_s", "received_s", "arrived")) and not name.startswith("sent")

    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(word in ast.unparse(node).lower() for word in ("stale", "timeout"))
        for side in [node.left, *node.comparators]
        if isinstance(side, ast.BinOp) and isinstance(side.op, ast.Sub) and arrival(side.right)
    ]


def test_no_service_ages_a_message_by_hand() -> None:
    found = [
        _where(path, node)
        for path, tree in _modules(*SERVICE_PACKAGES.values())
        for node in _age_comparisons(tree)
    ]
    assert found == [], f"staleness written again (use runtime.freshness.is_fresh): {found}"


def test_no_service_defines_its_own_freshness_helper() -> None:
    found = [
        _where(path, node)
        for path, tree in _modules(*SERVICE_PACKAGES.values())
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and node.name.lstrip("_") in ("fresh", "is_fresh", "Seen", "FreshValue")
    ]
    assert found == [], found


def test_fresh_is_by_arrival_here_and_a_later_arrival_is_not_fresh() -> None:
    value = FreshValue("x", at_s=100.0)
    assert value.fresh(103.0, 3.0)
    assert not value.fresh(103.01, 3.0)
    assert not value.fresh(99.0, 3.0)  # arrived "after now": not from our monotonic clock
    assert not is_fresh(float("nan"), 100.0, 3.0)
    assert value.age(101.5) == 1.5


def test_take_keeps_the_payload_with_its_arrival_and_applies_every_rule() -> None:
    gate = Freshness("bms limits")
    limits = BmsLimits(
        ts=1000.0, boot="b", seq=5, cvl_v=49.2, ccl_a=40.0, dcl_a=50.0,
        charge_allowed=True, discharge_allowed=True, pack_voltage_v=48.0,
    )  # fmt: skip
    taken = gate.take(limits, retained=False, now_s=7.0, wall_s=1000.5)
    assert (taken.value, taken.at_s) == (limits, 7.0)
    with pytest.raises(NotFreshError, match="sequence 5 is not after 5"):
        gate.take(limits, retained=False, now_s=8.0, wall_s=1000.5)
    with pytest.raises(NotFreshError, match="retained"):
        gate.take(limits.model_copy(update={"seq": 6}), retained=True, now_s=8.0, wall_s=1000.5)
    shunt = ShuntState.model_construct(ts=5000.0)
    with pytest.raises(NotFreshError, match="ahead"):
        Freshness("shunt").take(shunt, retained=False, now_s=8.0, wall_s=1000.0)


# ------------------------------------------------------------------ settings declared once


def _range(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    meta = model.model_fields[name].metadata
    ge = next((m.ge for m in meta if hasattr(m, "ge")), None)
    le = next((m.le for m in meta if hasattr(m, "le")), None)
    return ge, le


def test_controller_runtime_and_start_up_defaults_and_bounds_agree() -> None:
    """The runtime subset is the start-up model's own fields (it was a copy, deadband 5 vs 1)."""
    assert runtime_from(ControllerSettings()) == ControllerRuntime()
    for name in ControllerRuntime.model_fields:
        assert _range(ControllerRuntime, name) == _range(ControllerSettings, name), name


@pytest.mark.parametrize("model", [ChargerServiceSettings, ChargerRuntime])
def test_charger_settings_take_their_bounds_and_defaults_from_the_domain(
    model: type[BaseModel],
) -> None:
    defaults = ChargerSettings()
    names = set(SETTING_BOUNDS) & set(model.model_fields)
    assert names
    for name in names:
        bound = SETTING_BOUNDS[name]
        assert _range(model, name) == (bound.low, bound.high), name
        default = model.model_fields[name].default
        assert default is None or default == getattr(defaults, name), name


def test_inverter_unit_settings_take_their_bounds_from_the_domain() -> None:
    for name, bound in UNIT_BOUNDS.items():
        assert _range(UnitConfig, name) == (bound.low, bound.high), name


# ------------------------------------------------------------------ one device link


@pytest.mark.parametrize("service", ["bms", "charger", "inverter"])
def test_every_device_service_uses_the_one_link_and_starts_no_thread_of_its_own(
    service: str,
) -> None:
    source = (SERVICE_PACKAGES[service] / "service.py").read_text()
    tree = ast.parse(source)
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "gridzero.runtime.link"
        for alias in node.names
    }
    assert "DeviceLink" in names
    assert "threading.Thread(" not in source


def test_the_link_thread_touches_no_state_and_hands_items_through_the_queue() -> None:
    """Items and state changes reach the 'service' only as calls posted to its queue; a
    failed read closes the handle and the link opens a new one."""
    inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    seen: list[object] = []
    opened: list[int] = []
    closed: list[int] = []
    loop_thread = threading.current_thread()

    def on_item(item: int) -> None:
        assert threading.current_thread() is loop_thread
        seen.append(item)

    def on_state(error: str | None) -> None:
        assert threading.current_thread() is loop_thread
        seen.append(error)

    def open_handle() -> int:
        opened.append(len(opened))
        if len(opened) == 1:
            raise OSError("not there yet")
        return len(opened)

    reads = iter([7, None, OSError("gone")])

    def read(handle: int) -> int | None:
        step = next(reads, None)
        if isinstance(step, OSError):
            raise step
        time.sleep(0.01)
        return None if step is None else step * handle

    link: DeviceLink[int, int] = DeviceLink(
        "dev",
        open_handle=open_handle,
        read=read,
        close_handle=closed.append,
        post=inbox.put,
        on_item=on_item,
        on_state=on_state,
        errors=(OSError,),
        backoff_min_s=0.01,
        backoff_max_s=0.02,
    )
    link.start()
    try:
        deadline = time.monotonic() + 10.0
        while len([s for s in seen if s is None]) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                inbox.get(timeout=0.1)()
    finally:
        link.stop()
    assert seen[:5] == ["dev: cannot open: not there yet", None, 14, "dev: read failed: gone", None]
    assert closed[0] == 2  # the failed handle was closed before the next one opened
    assert link.write(lambda handle: None) == "dev is not open"


def test_the_link_reader_assigns_no_attribute_but_its_own() -> None:
    """The reader thread's code (DeviceLink._run and what it calls) assigns only the link's
    own attributes: it cannot reach into a service (the charger's thread once set self.bus)."""
    tree = ast.parse(Path(link_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DeviceLink")
    own = {"_handle"}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name not in ("_run", "_drop", "_post_state"):
            continue
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Attribute):
                        assert isinstance(leaf.value, ast.Name)
                        assert leaf.value.id == "self"
                        assert leaf.attr in own, f"{fn.name} assigns {leaf.attr}"
