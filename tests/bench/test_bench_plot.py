"""`gridzero bench --plot`: grid power, battery power and SoC, one strip each."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from gridzero_tools.bench.cli import main
from gridzero_tools.bench.plot import COLOURS


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Decode the plot's own PNG (8-bit RGB, filter 0 on every row)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, width, height, data = 8, 0, 0, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = 1 + 3 * width
    rows = [raw[i * stride + 1 : (i + 1) * stride] for i in range(height)]
    return width, height, rows


def _has(rows: list[bytes], colour: tuple[int, int, int]) -> bool:
    needle = bytes(colour)
    return any(row[i : i + 3] == needle for row in rows for i in range(0, len(row), 3))


def test_plot_draws_grid_battery_and_soc_per_controller(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    assert (
        main(
            [
                "--profile",
                "load-steps",
                "--duration",
                "240",
                "--start",
                "700",
                "--controllers",
                "gridzero,opendtu",
                "--plot",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    width, height, rows = _pixels(out.read_bytes())
    assert (width, height) == (1200, 900)
    strips = [rows[0:300], rows[300:600], rows[600:900]]
    for colour in (COLOURS["gridzero"], COLOURS["opendtu"]):
        for strip in strips:
            assert _has(strip, colour)
