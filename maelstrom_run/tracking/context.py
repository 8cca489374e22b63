"""What an application's entry point receives: ``def main(ctx: RunContext) -> dict[str, float]``.

The entry point trains, reports through ``ctx`` and returns its final metrics (they
become the job's result: the MLflow run's summary and what a Hydra sweep gets back).
Raising marks the run failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .timer import PhaseTimer


@dataclass
class RunContext:
    #: The resolved configuration of the run (an OmegaConf DictConfig, read-only).
    cfg: Any
    run_id: str
    #: The run's own directory: logs, spec, result; apps put checkpoints here.
    run_dir: Path
    #: Where datasets and generated sample data are cached.
    cache_dir: Path
    timer: PhaseTimer = field(default_factory=PhaseTimer)
    #: ``log_metrics({"loss": 0.3}, step=epoch)``; also records the history for plots.
    log_metrics: Callable[[dict[str, float], int | None], None] = lambda metrics, step=None: None
    #: ``log_artifact(path, artifact_path=None)``.
    log_artifact: Callable[..., None] = lambda path, artifact_path=None: None
    #: Times this run was requeued by the cluster (0 on the first start); resume from a checkpoint when > 0.
    requeues: int = 0
    #: This process's rank in a multi-task job (``RANK``); only rank 0 reports to MLflow.
    rank: int = 0
    #: Called when the cluster is about to stop the job (time limit, preemption), before it is requeued.
    checkpoint_hook: Callable[[], None] | None = None
    #: Units of the metric families for the plots' axes, from the data's attributes, e.g.
    #: ``{"mae": "degC", "loss": "degC2"}`` (a family is a metric's name without ``val_``).
    units: dict[str, str] = field(default_factory=dict)

    def on_checkpoint(self, hook: Callable[[], None]) -> None:
        """Register ``hook()`` to save a checkpoint when the job is stopped to be requeued (Slurm's USR1
        warning before the time limit or a preemption); the run resumes in the same MLflow run."""
        self.checkpoint_hook = hook

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the metrics of epoch ``epoch`` (counted from 0 by the app's loop) with the phase timer's
        epoch summary, and print one line of progress (the job's output: shown live for local runs,
        in the log file on clusters). Epochs are counted from 1 on the console, in MLflow and in plots."""
        seconds, samples = self.timer.epoch_elapsed(), self.timer.counted("samples")
        phases = self.timer.epoch_metrics()
        self.log_metrics({**metrics, **phases}, epoch + 1)
        epochs = self.cfg.train.epochs if self.cfg is not None and "train" in self.cfg else "?"
        values = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        shares = " ".join(
            f"{name.split('.')[1]} {value:.0%}" for name, value in phases.items() if name.endswith(".share")
        )
        rate = f", {samples / max(seconds, 1e-9):,.0f} samples/s" if samples else ""
        print(f"epoch {epoch + 1}/{epochs}  {values}  [{seconds:.2f} s{rate}; {shares}]", flush=True)
