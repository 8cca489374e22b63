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
