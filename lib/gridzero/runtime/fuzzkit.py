"""The fuzzing kit: a seeded input generator, the target type and the runner.

Each part of gridzero declares its own fuzz targets beside its codec or handlers (a
``fuzz.py`` module in each service package, `gridzero.runtime.fuzz` for the contract and the
service handlers, `gridzero_tools.sim.fuzz` for the simulator); `gridzero_tools.fuzz` (the command) finds
them through one table and runs them with `run_target`.

Inputs: mutations of valid examples (bit flips, interesting bytes, insertions, deletions,
truncation, splices), random bytes, and for JSON inputs structural mutations (a field set to
null, a huge or negative number, a wrong type, an unknown key, deep nesting, NaN/Infinity
tokens), all from stdlib ``random`` with a seed: the same seed always gives the same inputs.
"""

from __future__ import annotations

import json
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- generator

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x24, 0x56, 0xFD, 0xF0, 0x0A, 0x0D)
NASTY_JSON: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    -0.0,
    0.5,
    1e308,
    -1e308,
    2**63,
    -(2**63),
    2**200,
    "",
    "x" * 300,
    "nan",
    "1e999",
    "\u0000",
    "\udcff",
    [],
    {},
    [1, 2, 3],
    {"a": {"b": {"c": [None]}}},
    "online",
    "auto",
    "true",
)
JSON_NONFINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999")


class Mutator:
    """Seeded input generator: mutates a corpus of valid examples, sometimes makes noise."""

    def __init__(self, seed: int, corpus: tuple[bytes, ...], *, json_like: bool) -> None:
        self.rng = random.Random(seed)
        self.corpus = corpus or (b"",)
        self.json_like = json_like

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            return rng.randbytes(rng.randint(0, 64))
        seed = rng.choice(self.corpus)
        data = self._json_mutation(seed) if self.json_like and roll < 0.45 else seed
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3, 6))):
            data = self._byte_mutation(data)
        return data

    def _byte_mutation(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        op = rng.randrange(9)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # interesting byte
            buf[rng.randrange(len(buf))] = rng.choice(INTERESTING_BYTES)
        elif op == 2:  # insert random bytes
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:  # delete a run
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 8)]
        elif op == 4 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 5 and buf:  # duplicate a chunk
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 16)]
        elif op == 6:  # splice with another example
            other = rng.choice(self.corpus)
            buf = buf[: rng.randint(0, len(buf))] + bytearray(other[rng.randint(0, len(other)) :])
        elif op == 7 and buf:  # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 8 and self.json_like:  # a non-finite token somewhere
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.choice(JSON_NONFINITE)
        return bytes(buf)

    def _json_mutation(self, seed: bytes) -> bytes:
        rng = self.rng
        try:
            value = json.loads(seed)
        except ValueError:
            return seed
        if isinstance(value, dict) and value and rng.random() < 0.85:
            value = dict(value)
            key = rng.choice(list(value))
            op = rng.randrange(5)
            if op == 0:
                del value[key]
            elif op == 1:
                value[f"extra{rng.randrange(3)}"] = rng.choice(NASTY_JSON)
            elif (
                op == 2 and isinstance(value[key], int | float) and not isinstance(value[key], bool)
            ):
                value[key] = value[key] * rng.choice((-1, 10, 1e6, 1e300)) + rng.choice((0, 0.5))
            else:
                value[key] = rng.choice(NASTY_JSON)
        elif rng.random() < 0.5:
            value = rng.choice(NASTY_JSON)
        else:
            for _ in range(rng.randint(1, 300)):
                value = [value] if rng.random() < 0.5 else {"k": value}
        try:
            return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return seed


# --------------------------------------------------------------------------- targets


Runner = Callable[[bytes], object]


@dataclass(slots=True)
class Target:
    """One thing to fuzz: ``run(input)`` must return or raise one of ``allowed``."""

    name: str
    run: Runner
    allowed: tuple[type[BaseException], ...]
    corpus: tuple[bytes, ...]
    json_like: bool = False
    close: Callable[[], None] | None = None
    check: Callable[[], str | None] | None = None  # an invariant checked after every input


@dataclass(slots=True)
class Crash:
    """One input that raised something other than the target's documented errors."""

    data: bytes
    error: str


@dataclass(slots=True)
class TargetResult:
    """What one target did with its inputs."""

    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    crashes: list[Crash] = field(default_factory=list)
    crash_count: int = 0

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def run_target(target: Target, examples: int, seed: int) -> TargetResult:
    """Feed ``examples`` generated inputs (the corpus first) to ``target``."""
    result = TargetResult(target.name)
    mutator = Mutator(seed, target.corpus, json_like=target.json_like)
    inputs = list(target.corpus[:examples])
    start = time.perf_counter()
    for i in range(examples):
        data = inputs[i] if i < len(inputs) else next(mutator)
        try:
            target.run(data)
            result.accepted += 1
        except target.allowed:
            result.rejected += 1
        except Exception as exc:  # noqa: BLE001 - anything else is exactly what we look for
            _record(result, data, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        if target.check is not None:
            problem = target.check()
            if problem is not None:
                _record(result, data, problem, "")
    result.inputs = examples
    result.seconds = time.perf_counter() - start
    return result


def _record(result: TargetResult, data: bytes, error: str, trace: str) -> None:
    result.crash_count += 1
    if len(result.crashes) < 5:
        result.crashes.append(Crash(data, error + ("\n" + trace if trace else "")))


# --------------------------------------------------------------------------- CAN inputs


def can_input(arbitration_id: int, data: bytes, extended: bool) -> bytes:
    """One fuzz input for a CAN decoder: 4 bytes identifier, 1 byte flags, the data."""
    return arbitration_id.to_bytes(4, "big") + bytes((1 if extended else 0,)) + data


def split_can(data: bytes) -> tuple[int, bool, bytes]:
    """The identifier, the extended flag and the data of a (mutated) `can_input`."""
    arbitration_id = int.from_bytes(data[:4].ljust(4, b"\0"), "big")
    extended = bool(data[4] & 1) if len(data) > 4 else arbitration_id > 0x7FF
    return arbitration_id, extended, data[5:]
