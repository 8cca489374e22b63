"""Deep500's timers for TensorFlow: GPU regions timed with CuPy's CUDA events where CuPy and a GPU
are there (else the wall clock), and :class:`TimerCallback` for ``model.fit``."""

from __future__ import annotations

from typing import Any

from tensorflow import keras

from .timer import Timer, TimeStats, TimeType, WallClock, key_name, report_lines, time_stats
from .timer_cpugpu import CPUGPUTimerBase


class CupyEventClock:
    """Marks are CuPy events on the default stream; an end mark waits for the GPU, since
    TensorFlow's own stream is not exposed."""

    def __init__(self, cupy: Any) -> None:
        self.cupy = cupy

    def mark(self) -> Any:
        event = self.cupy.cuda.Event()
        event.record()
        return event

    def elapsed(self, start: Any, end: Any) -> float:
        end.synchronize()
        return self.cupy.cuda.get_elapsed_time(start, end) / 1000.0  # milliseconds


def gpu_clock() -> Any:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return CupyEventClock(cupy)
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: time on the wall clock
        pass
    return WallClock()


class CPUGPUTimer(CPUGPUTimerBase):
    def __init__(self) -> None:
        super().__init__(WallClock, gpu_clock())


class TimerCallback(keras.callbacks.Callback):
    """Times each epoch (CPU) and each training batch (on the GPU too with ``gpu=True``)."""

    def __init__(self, timer: Any, gpu: bool = False) -> None:
        super().__init__()
        self.timer, self.gpu = timer, gpu

    def _args(self) -> dict[str, bool]:
        # a plain Timer has no gpu argument
        return {"gpu": self.gpu} if isinstance(self.timer, CPUGPUTimerBase) else {}

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.timer.start(TimeType.EPOCH)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.timer.end(TimeType.EPOCH)
        self.timer.complete_all()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.timer.start(TimeType.BATCH, **self._args())

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.timer.end(TimeType.BATCH, **self._args())
        if batch % 10 == 0:  # read the GPU events now and then rather than holding them all
            self.timer.complete_all()


__all__ = [
    "CPUGPUTimer",
    "TimeStats",
    "TimeType",
    "Timer",
    "TimerCallback",
    "key_name",
    "report_lines",
    "time_stats",
]
