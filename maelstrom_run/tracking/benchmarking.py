"""What the worker records for benchmarking, around the entry point of every run.

``Session.start(spec, run_dir, tracking)`` tags the run with where it runs and starts MLflow's
system metrics, the energy sensors and the Deep500 capture; ``session.finish(samples)`` logs the one
timing record of the run (the phase timer's samples and the Deep500 timers), the time to solution
and the energy measured. ``tracking`` is the run's outbox: what is logged waits there while the
tracking server is away.
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


def system_metrics(tracking: dict[str, Any], run_id: str | None, uri: str) -> Any:
    """MLflow's system metrics monitor (CPU, memory, GPU with nvidia-ml-py) of run ``run_id`` every
    ``tracking.system_metrics_interval_s`` seconds, started; None when switched off (null), without
    psutil, or before the run exists (the server away at the start)."""
    interval = tracking.get("system_metrics_interval_s", 10.0)
    if not interval or not run_id:
        return None
    try:
        import psutil  # noqa: F401 - MLflow's monitor needs it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        return None
    # the monitor's start and stop lines (and its failures while the server is away) are MLflow's
    # business, not the run's output
    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=float(interval), samples_before_logging=1, tracking_uri=uri
    )
    monitor.start()
    return monitor


@dataclass
class Session:
    run_id: str
    capture_dir: Path
    tracking: Any
    started: float = field(default_factory=time.perf_counter)
    meter: Any = None
    monitor: Any = None

    @classmethod
    def start(cls, spec: Any, run_dir: Path | str, tracking: Any) -> Session:
        session = cls(tracking.run_id or "", deep500_capture.prepare(run_dir), tracking)
        try:
            session.monitor = system_metrics(spec.tracking, tracking.run_id, tracking.uri)
        except Exception as exc:  # noqa: BLE001 - an odd machine must not fail the training
            print(f"maelstrom-run: system metrics not recorded: {exc}".splitlines()[0], file=sys.stderr)
        session._start_hardware(spec)
        session.started = time.perf_counter()
        return session

    def _start_hardware(self, spec: Any) -> None:
        try:
            nvml = hardware.load_nvml()
            self.meter = energy.Meter(nvml)
            tags = hardware.tags(spec, nvml=nvml)
            tags["energy.sensors"] = ",".join(self.meter.sensors) or "none"
            self.meter.start()
        except Exception as exc:  # noqa: BLE001 - an odd machine must not fail the training
            print(f"maelstrom-run: hardware not recorded: {exc}".splitlines()[0], file=sys.stderr)
            self.meter, tags = None, {"energy.sensors": "none"}
        self.tracking.set_tags(tags)

    def finish(self, samples: dict[str, list[float]]) -> record.TimingRecord:
        if self.monitor is not None:
            try:
                self.monitor.finish()
            except Exception:  # noqa: BLE001 - the last sample lost at most
                pass
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
        record.log(timing, self.tracking)
        if readings:
            self.tracking.log_metrics(energy.metrics(readings))
            self.tracking.set_tags({"energy.sensors": ",".join(sorted({r.sensor for r in readings}))})
        return timing
