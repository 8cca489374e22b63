"""Minimal timer with the installed fork's attribute layout (``times`` per key, ``complete_all``)."""

import enum
import time
from collections import defaultdict


class TimeType(enum.Enum):
    EPOCH = 1
    BATCH = 2


class Timer:
    def __init__(self):
        self.times = defaultdict(list)
        self._open = {}

    def start(self, key):
        self._open[key] = time.perf_counter()

    def end(self, key):
        self.times[key].append(time.perf_counter() - self._open.pop(key))

    def complete_all(self):
        pass
