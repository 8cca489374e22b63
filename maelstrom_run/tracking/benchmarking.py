"""What the worker records for benchmarking, around the entry point of every run.

``before_start(tracking)`` switches MLflow's system metrics on (before the run starts);
``Session.start(spec, run_dir)`` tags the run with where it runs and starts the energy sensors and
the Deep500 capture; ``session.finish(samples)`` logs the one timing record of the run (the phase
timer's samples and the Deep500 timers), the time to solution and the energy measured.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import deep500_capture, energy, hardware, record


def before_start(tracking: dict[str, Any]) -> None:
    """MLflow system metrics (CPU, memory, GPU with nvidia-ml-py) every
    ``tracking.system_metrics_interval_s`` seconds; null switches them off."""
    interval = tracking.get("system_metrics_interval_s", 10.0)
    if not interval:
        return
    try:
        import psutil  # noqa: F401 - MLflow's monitor needs it
    except ImportError:
        return
    import mlflow

    # the monitor's start and stop lines are MLflow's business, not the run's output
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    mlflow.set_system_metrics_sampling_interval(float(interval))
    mlflow.set_system_metrics_samples_before_logging(1)
    mlflow.enable_system_metrics_logging()


@dataclass
class Session:
    run_id: str
    capture_dir: Path
    started: float = field(default_factory=time.perf_counter)
    meter: Any = None

    @classmethod
    def start(cls, spec: Any, run_dir: Path | str) -> Session:
        import mlflow

        run = mlflow.active_run()
        # the run's monitor runs; the processes the job starts must not start monitors of their own
        mlflow.disable_system_metrics_logging()
        session = cls(run.info.run_id if run else "", deep500_capture.prepare(run_dir))
        session._start_hardware(spec)
        session.started = time.perf_counter()
        return session

    def _start_hardware(self, spec: Any) -> None:
        import mlflow

        try:
            nvml = hardware.load_nvml()
            self.meter = energy.Meter(nvml)
            tags = hardware.tags(spec, nvml=nvml)
            tags["energy.sensors"] = ",".join(self.meter.sensors) or "none"
            self.meter.start()
        except Exception as exc:  # noqa: BLE001 - an odd machine must not fail the training
            print(f"maelstrom-run: hardware not recorded: {exc}".splitlines()[0], file=sys.stderr)
            self.meter, tags = None, {"energy.sensors": "none"}
        mlflow.set_tags(tags)

    def finish(self, samples: dict[str, list[float]]) -> record.TimingRecord:
        import mlflow

        elapsed = time.perf_counter() - self.started
        try:
            readings = self.meter.stop() if self.meter is not None else []
        except Exception as exc:  # noqa: BLE001 - a sensor gone away: no figure rather than a failed run
            print(f"maelstrom-run: energy not measured: {exc}".splitlines()[0], file=sys.stderr)
            readings = []
        if os.environ.get("SLURM_JOB_ID"):  # measured by Slurm only where the cluster gathers energy
            slurm = energy.slurm_energy(os.environ["SLURM_JOB_ID"])
            readings += [slurm] if slurm is not None else []
        timing = record.build(samples, deep500_capture.collect(self.capture_dir), elapsed)
        if self.run_id:
            client = mlflow.MlflowClient()
            record.log(timing, self.run_id, client)
            if readings:
                mlflow.log_metrics(energy.metrics(readings))
                mlflow.set_tag("energy.sensors", ",".join(sorted({r.sensor for r in readings})))
        return timing
