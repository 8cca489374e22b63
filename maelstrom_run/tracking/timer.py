"""Deep500-style phase timing: ``with timer.phase("io"): ...``.

The timer keeps every sample of the current epoch (a float per call, cheap) and the
totals of the whole run. ``epoch_metrics()`` turns the current epoch into MLflow
metrics (total seconds, count, p50/p90/p99 in milliseconds and share of the epoch's
timed time per phase) and starts a new epoch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

#: Phases every training loop is expected to report; apps may add their own.
STANDARD_PHASES = ("io", "forward", "backward", "step")


class PhaseTimer:
    def __init__(self) -> None:
        self._epoch: dict[str, list[float]] = defaultdict(list)
        self._run: dict[str, list[float]] = defaultdict(list)
        self._counters: dict[str, float] = defaultdict(float)
        self._epoch_start = time.perf_counter()
        #: Called at the end of each phase before the clock stops, e.g. ``torch.cuda.synchronize``
        #: so that kernels queued on a GPU are counted in the phase that queued them.
        self.synchronize: Callable[[], object] | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
            if self.synchronize is not None:
                self.synchronize()
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Record one sample of ``seconds`` for phase ``name`` (for externally timed work)."""
        self._epoch[name].append(seconds)
        self._run[name].append(seconds)

    def count(self, name: str, amount: float) -> None:
        """Add to a per-epoch counter, e.g. ``bytes_read`` or ``samples``."""
        self._counters[name] += amount

    @staticmethod
    def _summary(samples: dict[str, list[float]], prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        grand = sum(sum(v) for v in samples.values()) or 1.0
        for name, values in samples.items():
            arr = np.asarray(values, dtype=np.float64)
            total = float(arr.sum())
            p50, p90, p99 = np.percentile(arr, [50, 90, 99]) * 1e3
            out.update(
                {
                    f"{prefix}{name}.total_s": total,
                    f"{prefix}{name}.count": float(arr.size),
                    f"{prefix}{name}.p50_ms": float(p50),
                    f"{prefix}{name}.p90_ms": float(p90),
                    f"{prefix}{name}.p99_ms": float(p99),
                    f"{prefix}{name}.share": total / grand,
                }
            )
        return out

    def epoch_elapsed(self) -> float:
        """Wall-clock seconds since the current epoch began."""
        return time.perf_counter() - self._epoch_start

    def counted(self, name: str) -> float:
        """This epoch's counter ``name`` so far (0 when nothing was counted)."""
        return self._counters.get(name, 0.0)

    def epoch_metrics(self) -> dict[str, float]:
        """Metrics of the epoch that just ended (phases and counters); resets the epoch."""
        out = self._summary(self._epoch, "phase.")
        out.update({f"count.{k}": float(v) for k, v in self._counters.items()})
        now = time.perf_counter()
        # bytes counters as GB/s (GB = 1e9 bytes) over the epoch's wall time
        elapsed = max(now - self._epoch_start, 1e-9)
        out.update(
            {f"rate.{k}.GBps": v / 1e9 / elapsed for k, v in self._counters.items() if k.startswith("bytes_")}
        )
        self._epoch_start = now
        self._epoch = defaultdict(list)
        self._counters = defaultdict(float)
        return out

    def run_summary(self) -> dict[str, float]:
        """Metrics over the whole run (``phase_total.<name>.*``)."""
        return self._summary(self._run, "phase_total.")

    def samples(self) -> dict[str, list[float]]:
        """All samples of the run per phase, in seconds (for plots)."""
        return {k: list(v) for k, v in self._run.items()}
