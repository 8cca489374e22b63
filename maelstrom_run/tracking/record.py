"""One timing record per run: maelstrom-run's phases and the Deep500 timers side by side.

The record (``timing/record.json`` in the run's artefacts) keeps every sample of every phase with
its source, the time to solution, and the Deep500 text report (``timing/deep500.txt``). Deep500
samples are also metric histories (``deep500.CPU.BATCH``, step = sample number) and every phase's
statistics are metrics (``timing.io.median_s`` ...). Reports read the record back with :func:`load`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..deep500.deep500.utils.timer import report_lines, time_stats

RECORD_PATH = "timing/record.json"
REPORT_PATH = "timing/deep500.txt"
MAELSTROM, DEEP500 = "maelstrom-run", "deep500"
#: MLflow takes at most 1000 metrics per batch.
BATCH = 1000


@dataclass
class Phase:
    name: str
    source: str
    samples: list[float]


@dataclass
class TimingRecord:
    phases: dict[str, Phase] = field(default_factory=dict)
    #: Seconds from the entry point's start to its return.
    time_to_solution_s: float | None = None
    deep500_report: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TimingRecord:
        data = json.loads(text)
        phases = {name: Phase(**p) for name, p in (data.get("phases") or {}).items()}
        return cls(phases, data.get("time_to_solution_s"), data.get("deep500_report") or "")


def deep500_name(timer: dict[str, Any], key: str) -> str:
    return ".".join(part for part in (DEEP500, timer.get("label") or "", key) if part)


def deep500_report(timers: list[dict[str, Any]]) -> str:
    """The text report Deep500 prints, per timer (a CPU/GPU timer as its ``CPU`` and ``GPU`` halves)."""
    lines: list[str] = []
    by_group: dict[str, list[dict[str, Any]]] = {}
    for timer in timers:
        by_group.setdefault(timer["group"], []).append(timer)
    for members in by_group.values():
        for timer in sorted(members, key=lambda t: t.get("label") or ""):
            if timer.get("label"):
                lines.append(timer["label"])
            lines += report_lines(timer["times"])
    return "\n".join(lines) + "\n" if lines else ""


def build(
    own: dict[str, list[float]], timers: list[dict[str, Any]], time_to_solution_s: float | None
) -> TimingRecord:
    record = TimingRecord(time_to_solution_s=time_to_solution_s, deep500_report=deep500_report(timers))
    for name, samples in own.items():
        record.phases[name] = Phase(name, MAELSTROM, [float(s) for s in samples])
    for timer in timers:
        for key, samples in timer["times"].items():
            name = deep500_name(timer, key)
            phase = record.phases.setdefault(name, Phase(name, DEEP500, []))
            phase.samples.extend(float(s) for s in samples)
    return record


def stats_metrics(record: TimingRecord) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, phase in record.phases.items():
        if not phase.samples:
            continue
        stats = time_stats(phase.samples)
        # the sample counts are in the record (timing/record.json), not more metrics per phase
        out.update({f"timing.{name}.{k}_s": float(v) for k, v in stats._asdict().items()})
    if record.time_to_solution_s is not None:
        out["bench.time_to_solution_s"] = float(record.time_to_solution_s)
    return out


def log(record: TimingRecord, tracking: Any) -> None:
    """Log the record, its statistics and the Deep500 sample histories to the run ``tracking`` logs
    to (the worker's outbox, or :class:`ClientSink`): ``log_metrics(metrics, step)``, ``log_text``."""
    tracking.log_metrics(stats_metrics(record))
    steps: dict[int, dict[str, float]] = {}
    for phase in record.phases.values():
        if phase.source == DEEP500:
            for i, s in enumerate(phase.samples):
                steps.setdefault(i, {})[phase.name] = s
    for i, metrics in sorted(steps.items()):
        tracking.log_metrics(metrics, step=i)
    tracking.log_text(record.to_json(), RECORD_PATH)
    if record.deep500_report:
        tracking.log_text(record.deep500_report, REPORT_PATH)


class ClientSink:
    """:func:`log`'s calls sent straight to run ``run_id`` with an ``MlflowClient``."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(rows), BATCH):
            self.client.log_batch(self.run_id, metrics=rows[i : i + BATCH])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)


def load(client: Any, run_id: str) -> TimingRecord | None:
    """The record of a run, or None for a run without one."""
    paths = {a.path for a in client.list_artifacts(run_id, os.path.dirname(RECORD_PATH))}
    if RECORD_PATH not in paths:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, RECORD_PATH, tmp)
        return TimingRecord.from_json(Path(local).read_text())
