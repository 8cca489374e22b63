"""Entry points used by the backend contract suite (any backend must run them)."""

from __future__ import annotations

import time
from typing import Any


def ok(ctx: Any) -> dict[str, float]:
    print(f"hello from {ctx.run_id}", flush=True)
    with ctx.timer.phase("io"):
        time.sleep(0.01)
    ctx.end_epoch(0, {"loss": 0.25})
    return {"loss": 0.25, "started": time.time()}


def fail(ctx: Any) -> dict[str, float]:
    print("about to fail", flush=True)
    raise RuntimeError("contract app failed on purpose")


def sleep(ctx: Any) -> dict[str, float]:
    started = time.time()
    print("sleeping", flush=True)
    time.sleep(float(ctx.cfg.train.epochs))
    return {"started": started, "ended": time.time()}


def checkpointing(ctx: Any) -> dict[str, float]:
    """Works until the cluster stops it; checkpoints, and finishes at once when started again."""
    marker = ctx.run_dir / "checkpoint.txt"
    if ctx.requeues:
        print(f"resumed after {ctx.requeues} requeue(s) from {marker.read_text().strip()}", flush=True)
        ctx.end_epoch(1, {"loss": 0.5})
        return {"loss": 0.5}
    ctx.on_checkpoint(lambda: marker.write_text("epoch 0\n"))
    ctx.end_epoch(0, {"loss": 1.0})
    print("working", flush=True)
    time.sleep(300)
    return {"loss": 1.0}


def ranks(ctx: Any) -> dict[str, float]:
    """Prints its rank as torchrun/DDP would see it from the job's environment."""
    import os

    print(
        f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} (ctx.rank {ctx.rank}), "
        f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        flush=True,
    )
    return {"rank": float(ctx.rank)}
