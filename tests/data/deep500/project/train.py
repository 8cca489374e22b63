"""A training loop timed with the Deep500 API, as the MAELSTROM applications time theirs."""

import sys
import time

from deep500.utils import timer_torch as timer

batches = int(sys.argv[1])
tmr = timer.CPUGPUTimer()
for _epoch in range(2):
    tmr.start(timer.TimeType.EPOCH)
    for _batch in range(batches):
        tmr.start(timer.TimeType.BATCH, gpu=True)
        tmr.start(timer.TimeType.IO)
        time.sleep(0.002)
        tmr.end(timer.TimeType.IO)
        tmr.start("SAVING_MODEL")  # a key of the application's own
        tmr.end("SAVING_MODEL")
        tmr.end(timer.TimeType.BATCH, gpu=True)
    tmr.end(timer.TimeType.EPOCH)
tmr.print_all_time_stats()
tmr.log_mlflow_all("train")
