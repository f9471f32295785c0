"""A tiny PNG line plot (zlib + struct only; matplotlib is not a dependency).

One line per trace: the true grid power over time. A light grey line marks 0 W, dark grey
lines mark ±500 W steps. There is no text in the image; the colour of each controller is
printed by `plot_traces` and listed in docs/controller.md.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from gridzero.bench.engine import RunTrace

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


def plot_traces(
    path: Path, traces: Sequence[RunTrace], title: str = "", width: int = 1200, height: int = 500
) -> None:
    """Write the grid power of each trace as a PNG line plot; colours go to stderr."""
    if not traces:
        return
    n = max(len(t.grid_w) for t in traces)
    lo = min(min(t.grid_w) for t in traces if len(t.grid_w))
    hi = max(max(t.grid_w) for t in traces if len(t.grid_w))
    lo, hi = min(lo, -100.0), max(hi, 100.0)
    pad = 10
    canvas = Canvas(width, height)

    def y_of(w: float) -> int:
        return round(pad + (hi - w) / (hi - lo) * (height - 2 * pad))

    for level in range(int(lo // 500) * 500, int(hi) + 1, 500):
        colour = (235, 235, 235) if level else (170, 170, 170)
        canvas.line(0, y_of(level), width - 1, y_of(level), colour)
    for trace in traces:
        colour = COLOURS.get(trace.controller, (100, 100, 100))
        data = trace.grid_w
        prev: tuple[int, int] | None = None
        for x in range(width):
            i0 = x * n // width
            i1 = max(i0 + 1, (x + 1) * n // width)
            chunk = data[i0:i1]
            if not chunk:
                break
            y_min, y_max = y_of(max(chunk)), y_of(min(chunk))
            canvas.line(x, y_min, x, y_max, colour)
            y = y_of(sum(chunk) / len(chunk))
            if prev is not None:
                canvas.line(prev[0], prev[1], x, y, colour)
            prev = (x, y)
    path.write_bytes(canvas.png())
    legend = ", ".join(
        f"{t.controller}=rgb{COLOURS.get(t.controller, (100, 100, 100))}" for t in traces
    )
    print(f"plot {path}: {title}; grid W from {lo:.0f} to {hi:.0f}; {legend}", file=sys.stderr)
