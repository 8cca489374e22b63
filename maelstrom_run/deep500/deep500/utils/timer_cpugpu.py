"""A timer of CPU and GPU time together: ``start(key, gpu=True)`` times the region on both."""

from __future__ import annotations

from typing import Any

from .timer import Timer, TimeStats, WallClock


class CPUGPUTimerBase:
    """Two :class:`Timer` s; the CPU one times every region, the GPU one those with ``gpu=True``."""

    def __init__(self, cpu_timer_impl: Any = WallClock, gpu_timer_impl: Any = WallClock) -> None:
        self.cpu_timer = Timer(cpu_timer_impl)
        self.gpu_timer = Timer(gpu_timer_impl)

    def _timer(self, gpu: bool) -> Timer:
        return self.gpu_timer if gpu else self.cpu_timer

    def start(self, key: Any, gpu: bool = False) -> None:
        self.cpu_timer.start(key)
        if gpu:
            self.gpu_timer.start(key)

    def end(self, key: Any, gpu: bool = False) -> None:
        self.cpu_timer.end(key)
        if gpu:
            self.gpu_timer.end(key)

    def get_time(self, key: Any, gpu: bool = False) -> list[float]:
        return self._timer(gpu).get_time(key)

    def get_time_stats(self, key: Any, gpu: bool = False) -> TimeStats:
        return self._timer(gpu).get_time_stats(key)

    def complete_all(self) -> None:
        self.cpu_timer.complete_all()
        self.gpu_timer.complete_all()

    def print_all_time_stats(self, file: Any = None) -> None:
        print("CPU", file=file)
        self.cpu_timer.print_all_time_stats(file=file)
        print("GPU", file=file)
        self.gpu_timer.print_all_time_stats(file=file)

    def save_all_time_stats(self, filename: str) -> None:
        with open(filename, "x", encoding="utf-8") as fh:
            self.print_all_time_stats(file=fh)

    @staticmethod
    def _prefix(prefix: str) -> str:
        return prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def log_mlflow_all(self, prefix: str = "") -> None:
        """Means as ``prefix/CPU/KEY`` and ``prefix/GPU/KEY``."""
        self.cpu_timer.log_mlflow_all(self._prefix(prefix) + "CPU/")
        self.gpu_timer.log_mlflow_all(self._prefix(prefix) + "GPU/")

    def log_wb_all(self, prefix: str = "") -> None:
        self.cpu_timer.log_wb_all(self._prefix(prefix) + "CPU/")
        self.gpu_timer.log_wb_all(self._prefix(prefix) + "GPU/")
