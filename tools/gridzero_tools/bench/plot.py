"""A tiny PNG line plot (zlib + struct only; matplotlib is not a dependency).

Three strips, one line per trace in each: the true grid power, the battery power delivered and
the state of charge over time. Light grey lines mark every 500 W (and 10 % SoC), 0 W darker.
There is no text in the image; the scales and the colour of each controller are printed by
`plot_traces` and listed in services/controller/README.md.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from gridzero_tools.bench.engine import RunTrace

COLOURS: dict[str, tuple[int, int, int]] = {
    "gridzero": (0, 90, 200),
    "housebatt": (220, 120, 0),
    "soyosource-meter": (0, 160, 60),
    "opendtu": (200, 0, 120),
    "oracle": (0, 0, 0),
    "oracle-causal": (130, 130, 130),
    "oracle-meter": (190, 190, 190),
}


def _png(width: int, height: int, rows: list[bytearray]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


class Canvas:
    """RGB pixels with line drawing."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.rows = [bytearray(b"\xff" * (3 * width)) for _ in range(height)]

    def dot(self, x: int, y: int, colour: tuple[int, int, int]) -> None:
        """One pixel (ignored outside the canvas)."""
        if 0 <= x < self.width and 0 <= y < self.height:
            self.rows[y][3 * x : 3 * x + 3] = bytes(colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int]) -> None:
        """Bresenham line."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx = 1 if x0 < x1 else -1
        sy = 1 if y0 < y1 else -1
        err = dx + dy
        while True:
            self.dot(x0, y0, colour)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def png(self) -> bytes:
        """Encoded image."""
        return _png(self.width, self.height, self.rows)


def _scale(series: Sequence[Sequence[float]], floor: float) -> tuple[float, float]:
    lo = min((min(x) for x in series if len(x)), default=0.0)
    hi = max((max(x) for x in series if len(x)), default=0.0)
    return min(lo, -floor), max(hi, floor)


def _panel(
    canvas: Canvas,
    top: int,
    height: int,
    series: Sequence[tuple[tuple[int, int, int], Sequence[float]]],
    bounds: tuple[float, float],
    step: float,
) -> None:
    """One strip of the figure: grid lines every ``step`` (0 darker), one line per series."""
    lo, hi = bounds
    pad = 6
    width = canvas.width

    def y_of(v: float) -> int:
        return round(top + pad + (hi - v) / (hi - lo) * (height - 2 * pad))

    level = (lo // step) * step
    while level <= hi:
        canvas.line(
            0, y_of(level), width - 1, y_of(level), (170,) * 3 if level == 0 else (235,) * 3
        )
        level += step
    canvas.line(0, top + height - 1, width - 1, top + height - 1, (90, 90, 90))
    for colour, data in series:
        n = len(data)
        prev: tuple[int, int] | None = None
        for x in range(width):
            i0 = x * n // width
            chunk = data[i0 : max(i0 + 1, (x + 1) * n // width)]
            if not chunk:
                break
            canvas.line(x, y_of(max(chunk)), x, y_of(min(chunk)), colour)
            y = y_of(sum(chunk) / len(chunk))
            if prev is not None:
                canvas.line(prev[0], prev[1], x, y, colour)
            prev = (x, y)


def plot_traces(
    path: Path, traces: Sequence[RunTrace], title: str = "", width: int = 1200, height: int = 900
) -> None:
    """Write a PNG of three strips, top to bottom: grid power (W, + import), battery power
    delivered (W, + discharge) and state of charge (%), one line per controller; the
    colours go to stderr."""
    if not traces:
        return
    colours = [COLOURS.get(t.controller, (100, 100, 100)) for t in traces]
    strip = height // 3
    canvas = Canvas(width, strip * 3)
    grid = _scale([t.grid_w for t in traces], 100.0)
    battery = _scale([t.battery_w for t in traces], 100.0)
    _panel(
        canvas, 0, strip, list(zip(colours, [t.grid_w for t in traces], strict=True)), grid, 500.0
    )
    _panel(
        canvas,
        strip,
        strip,
        list(zip(colours, [t.battery_w for t in traces], strict=True)),
        battery,
        500.0,
    )
    soc_lo = min((min(t.soc_pct) for t in traces if len(t.soc_pct)), default=0.0)
    soc_hi = max((max(t.soc_pct) for t in traces if len(t.soc_pct)), default=100.0)
    soc = (max(0.0, soc_lo - 1.0), min(100.0, soc_hi + 1.0))
    socs = list(zip(colours, [t.soc_pct for t in traces], strict=True))
    _panel(canvas, 2 * strip, strip, socs, soc, 10.0)
    path.write_bytes(canvas.png())
    legend = ", ".join(f"{t.controller}=rgb{c}" for t, c in zip(traces, colours, strict=True))
    print(
        f"plot {path}: {title}; top: grid W {grid[0]:.0f}..{grid[1]:.0f}; middle: battery W "
        f"{battery[0]:.0f}..{battery[1]:.0f} (+ discharge); bottom: SoC % {soc[0]:.1f}..{soc[1]:.1f}"
        f"; grid lines every 500 W and 10 %; {legend}",
        file=sys.stderr,
    )
