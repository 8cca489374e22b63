"""A Python entry point that times with Deep500 (imported at the top) and with maelstrom-run's phase timer."""

from deep500.utils import timer


def main(ctx):
    tmr = timer.Timer()
    for epoch in range(2):
        tmr.start(timer.TimeType.EPOCH)
        for _ in range(3):
            with ctx.timer.phase("io"):
                tmr.start(timer.TimeType.IO)
                sum(range(10000))
                tmr.end(timer.TimeType.IO)
        tmr.end(timer.TimeType.EPOCH)
        ctx.end_epoch(epoch, {"loss": 1.0 / (epoch + 1)})
    tmr.log_mlflow_all("d5")
    return {"loss": 0.5}
