"""Deep500's timers, as the MAELSTROM applications call them (``from deep500.utils import timer``).

A :class:`Timer` records regions of code by key: ``start(key)`` ... ``end(key)``, every sample kept,
in seconds. Regions of different keys may overlap or nest; one key may not nest in itself. Keys are
:class:`TimeType` members or any other hashable an application adds (a string, its own enum).
"""

from __future__ import annotations

import enum
import statistics
import time
from collections import defaultdict
from typing import Any, NamedTuple


class TimeType(enum.Enum):
    """What a timed region is."""

    EPOCH = enum.auto()
    BATCH = enum.auto()
    FORWARD = enum.auto()
    BACKWARD = enum.auto()
    COMM = enum.auto()
    IO = enum.auto()
    OTHER = enum.auto()
    #: Stands for every key; never timed itself.
    ALL = enum.auto()


class TimeStats(NamedTuple):
    min: float
    mean: float
    median: float
    max: float
    stdev: float

    def __str__(self) -> str:
        return " ".join(f"{name}: {getattr(self, name):.5f}" for name in self._fields)


def time_stats(samples: list[float]) -> TimeStats:
    """Statistics of a list of times (the standard deviation of one sample is 0)."""
    if not samples:
        raise ValueError("no times recorded for this key")
    return TimeStats(
        min(samples),
        statistics.mean(samples),
        statistics.median(samples),
        max(samples),
        statistics.stdev(samples) if len(samples) > 1 else 0.0,
    )


def key_name(key: Any) -> str:
    """How a key is written in reports and metric names (``EPOCH`` for ``TimeType.EPOCH``)."""
    return str(getattr(key, "name", key))


def report_lines(times: dict[str, list[float]]) -> list[str]:
    """The text report of one timer: per key its name and statistics, then ``---``."""
    lines: list[str] = []
    for name, samples in times.items():
        if samples:
            lines += [name, str(time_stats(samples))]
    return [*lines, "---"]


class WallClock:
    """Marks are ``time.perf_counter()`` readings."""

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed(self, start: float, end: float) -> float:
        return end - start


class Timer:
    """Times regions of code per key; see the module docstring."""

    def __init__(self, timer_impl: Any = WallClock) -> None:
        self.clock = timer_impl() if isinstance(timer_impl, type) else timer_impl
        #: Completed samples per key, in seconds.
        self.times: dict[Any, list[float]] = defaultdict(list)
        # marks not yet turned into samples (GPU events are only read when completing)
        self.starts: dict[Any, list[Any]] = defaultdict(list)
        self.ends: dict[Any, list[Any]] = defaultdict(list)

    @staticmethod
    def _check(key: Any) -> None:
        if key is TimeType.ALL:
            raise ValueError("TimeType.ALL stands for every key and cannot be timed")

    def start(self, key: Any) -> None:
        self._check(key)
        if len(self.starts[key]) != len(self.ends[key]):
            raise RuntimeError(f"timing region {key_name(key)} started again before it ended (nesting)")
        self.starts[key].append(self.clock.mark())

    def end(self, key: Any) -> None:
        self._check(key)
        if len(self.starts[key]) != len(self.ends[key]) + 1:
            raise RuntimeError(f"timing region {key_name(key)} ended without being started")
        self.ends[key].append(self.clock.mark())

    def _complete(self, key: Any, strict: bool) -> None:
        starts, ends = self.starts[key], self.ends[key]
        if strict and len(starts) != len(ends):
            raise RuntimeError(f"timing region {key_name(key)} is still open")
        done = len(ends)
        self.times[key].extend(self.clock.elapsed(s, e) for s, e in zip(starts[:done], ends, strict=True))
        # a region still open keeps its start for the end to come
        self.starts[key], self.ends[key] = starts[done:], []

    def _complete_every(self, strict: bool) -> None:
        for key in list(self.starts):
            self._complete(key, strict)

    def complete_all(self) -> None:
        """Turn every finished region into a sample (open regions stay open)."""
        self._complete_every(strict=False)

    def get_time(self, key: Any) -> list[float]:
        """Every sample of ``key`` in seconds (empty if none)."""
        self._complete(key, strict=True)
        return self.times[key]

    def get_time_stats(self, key: Any) -> TimeStats:
        return time_stats(self.get_time(key))

    def _named_times(self) -> dict[str, list[float]]:
        self._complete_every(strict=True)
        return {key_name(k): v for k, v in self.times.items()}

    def print_all_time_stats(self, file: Any = None) -> None:
        """Print the report of every key (to ``file``, a text stream, or stdout)."""
        for line in report_lines(self._named_times()):
            print(line, file=file)

    def save_all_time_stats(self, filename: str) -> None:
        """Write the report to ``filename``, which must not exist yet."""
        with open(filename, "x", encoding="utf-8") as fh:
            self.print_all_time_stats(file=fh)

    def _means(self, prefix: str) -> dict[str, float]:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return {prefix + name: statistics.mean(v) for name, v in self._named_times().items() if v}

    def log_mlflow_all(self, prefix: str = "") -> None:
        """One ``mlflow.log_metrics`` call: the mean of every key, named ``prefix/KEY``."""
        try:
            import mlflow
        except ImportError:
            raise RuntimeError("MLflow is not installed") from None
        mlflow.log_metrics(self._means(prefix))

    def log_wb_all(self, prefix: str = "") -> None:
        """As :meth:`log_mlflow_all`, to Weights & Biases."""
        try:
            import wandb
        except ImportError:
            raise RuntimeError("Weights & Biases is not installed") from None
        wandb.log(self._means(prefix))
