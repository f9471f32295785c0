"""House load and PV profiles: CSV ``t_s,load_w,pv_w``.

One row per sample, time in seconds from the start of the profile, strictly
increasing; load and PV in watts, finite and not negative. Extra columns are
ignored. Between rows the plant interpolates linearly or holds the previous
row (``house.interpolation`` in the plant file); before the first row it uses
the first row, after the last row the last.

``load_profile(path)`` turns every mistake into a ``gridzero.errors.UsageError``
naming the file, the line and the field. ``load_profile("sunny-day")`` (a bare
name) loads a bundled profile from tools/gridzero_tools/data/profiles.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from gridzero.errors import UsageError

PROFILES_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
COLUMNS = ("t_s", "load_w", "pv_w")


@dataclass(frozen=True, slots=True)
class Profile:
    """A load/PV time series; ``t_s`` strictly increasing."""

    name: str
    t_s: tuple[float, ...]
    load_w: tuple[float, ...]
    pv_w: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.t_s:
            raise ValueError(f"profile {self.name}: no rows")
        if not len(self.t_s) == len(self.load_w) == len(self.pv_w):
            raise ValueError(f"profile {self.name}: columns have different lengths")

    @property
    def start_s(self) -> float:
        """Time of the first row."""
        return self.t_s[0]

    @property
    def end_s(self) -> float:
        """Time of the last row."""
        return self.t_s[-1]

    @property
    def duration_s(self) -> float:
        """Time from the first to the last row."""
        return self.t_s[-1] - self.t_s[0]

    def at(self, t_s: float, *, hold: bool = False) -> tuple[float, float]:
        """(load W, PV W) at ``t_s``, linearly interpolated or held from the previous row."""
        times = self.t_s
        i = bisect.bisect_right(times, t_s)
        if i == 0:
            return self.load_w[0], self.pv_w[0]
        if i >= len(times):
            return self.load_w[-1], self.pv_w[-1]
        j = i - 1
        if hold:
            return self.load_w[j], self.pv_w[j]
        t0 = times[j]
        frac = (t_s - t0) / (times[i] - t0)
        load0, pv0 = self.load_w[j], self.pv_w[j]
        return (
            load0 + (self.load_w[i] - load0) * frac,
            pv0 + (self.pv_w[i] - pv0) * frac,
        )

    @classmethod
    def constant(cls, load_w: float, pv_w: float = 0.0, duration_s: float = 86400.0) -> Profile:
        """A flat profile (handy in tests)."""
        return cls("constant", (0.0, duration_s), (load_w, load_w), (pv_w, pv_w))


def bundled_profiles() -> list[str]:
    """Names of the profiles shipped in tools/gridzero_tools/data/profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.csv"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A path as given, or the bundled file for a bare name like ``sunny-day``."""
    path = Path(name_or_path)
    if path.suffix == ".csv" or path.parent != Path():
        return path
    bundled = PROFILES_DIR / f"{path.name}.csv"
    if not bundled.exists():
        raise UsageError(
            f"profile {str(name_or_path)!r}: no such bundled profile; "
            f"known: {', '.join(bundled_profiles())} (or give a .csv path)"
        )
    return bundled


def load_profile(name_or_path: str | Path) -> Profile:
    """Read and check a profile CSV file."""
    path = resolve_profile_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"profile {path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"profile {path}: not UTF-8 text ({exc.reason})") from exc
    return parse_profile(text, str(path), name=path.stem)


def parse_profile(text: str, source: str = "<profile>", name: str = "profile") -> Profile:
    """Check profile CSV text; ``source`` names it in error messages."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise UsageError(f"profile {source}: empty file, need a header {','.join(COLUMNS)}")
    columns = [c.strip() for c in header]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise UsageError(
            f"profile {source} line 1: missing column(s) {', '.join(missing)}; "
            f"header is {','.join(columns)!r}, need {','.join(COLUMNS)}"
        )
    idx = [columns.index(c) for c in COLUMNS]
    times: list[float] = []
    loads: list[float] = []
    pvs: list[float] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        t, load, pv = (_cell(row, i, COLUMNS[k], source, line) for k, i in enumerate(idx))
        if times and t <= times[-1]:
            raise UsageError(
                f"profile {source} line {line}: t_s = {t:g} is not after the previous "
                f"row's t_s = {times[-1]:g} (time must increase)"
            )
        times.append(t)
        loads.append(load)
        pvs.append(pv)
    if not times:
        raise UsageError(f"profile {source}: no data rows after the header")
    return Profile(name, tuple(times), tuple(loads), tuple(pvs))


def _cell(row: list[str], i: int, field: str, source: str, line: int) -> float:
    if i >= len(row) or not row[i].strip():
        raise UsageError(f"profile {source} line {line}: field {field} is missing")
    text = row[i].strip()
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"profile {source} line {line}: field {field} = {text!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise UsageError(f"profile {source} line {line}: field {field} = {text!r} is not finite")
    if value < 0:
        raise UsageError(f"profile {source} line {line}: field {field} = {value:g} is negative")
    return value
