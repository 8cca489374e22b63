"""Deep500's timers for PyTorch: GPU regions timed with CUDA events (wall clock without CUDA)."""

from __future__ import annotations

from typing import Any

import torch

from .timer import Timer, TimeStats, TimeType, WallClock, key_name, report_lines, time_stats
from .timer_cpugpu import CPUGPUTimerBase


class CudaEventClock:
    """Marks are CUDA events recorded on the current stream; reading one waits for it."""

    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed(self, start: Any, end: Any) -> float:
        end.synchronize()
        return start.elapsed_time(end) / 1000.0  # milliseconds


def gpu_clock() -> Any:
    """CUDA events where a GPU is usable, else the wall clock (a CPU-only run still works)."""
    return CudaEventClock() if torch.cuda.is_available() and torch.cuda.device_count() > 0 else WallClock()


class CPUGPUTimer(CPUGPUTimerBase):
    def __init__(self) -> None:
        super().__init__(WallClock, gpu_clock())


__all__ = ["CPUGPUTimer", "TimeStats", "TimeType", "Timer", "key_name", "report_lines", "time_stats"]
