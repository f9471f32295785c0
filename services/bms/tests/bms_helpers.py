"""Shared helpers for the bms tests: feed a pack with real encoded frames."""

from __future__ import annotations

from collections.abc import Sequence

from gridzero_bms.codec import (
    FrameDecoder,
    encode_module_cells,
    encode_temperature_frame,
)
from gridzero_bms.pack import Pack, PackSettings

DECODER = FrameDecoder()


def feed(
    pack: Pack,
    bus: int,
    module: int,
    cells_mv: Sequence[int | None],
    now_s: float,
    temps_c: Sequence[float | None] | None = (20.0, 21.0),
    *,
    trusted: bool = True,
) -> None:
    """Every frame one module sends in one poll cycle, through the real codec."""
    for arbitration_id, data in encode_module_cells(module, cells_mv):
        pack.apply(bus, DECODER.decode(arbitration_id, data), now_s, trusted=trusted)
    if temps_c is not None:
        arbitration_id, data = encode_temperature_frame(module, temps_c)
        pack.apply(bus, DECODER.decode(arbitration_id, data), now_s)


def feed_all(
    pack: Pack,
    now_s: float,
    mv: int = 3700,
    overrides: dict[tuple[int, int, int], int] | None = None,
    temps_c: Sequence[float | None] | None = (20.0, 21.0),
) -> None:
    """All expected modules at ``mv``, except (bus, module, cell) -> mV overrides."""
    overrides = overrides or {}
    settings = pack.settings
    for bus, numbers in enumerate(settings.modules):
        for module in numbers:
            cells = [
                overrides.get((bus, module, c + 1), mv) for c in range(settings.cells_per_module)
            ]
            feed(pack, bus, module, cells, now_s, temps_c)


def small_pack(**kwargs: object) -> Pack:
    """Two modules on one bus unless told otherwise."""
    values: dict[str, object] = {"modules": ((1, 2),)}
    values.update(kwargs)
    return Pack(PackSettings.model_validate(values))
