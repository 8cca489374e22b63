"""Automated benchmark cycles: ``schedule.benchmark: {baseline, metrics, tolerance}``.

When a run with a baseline ends (each firing of such a schedule), :func:`evaluate` compares it with
the baseline on the named figures (those of :mod:`maelstrom_run.tracking.bench`) and tags its MLflow
run ``benchmark.regression=true|false``, ``benchmark.offending`` (the figures that regressed, with
their ratios) and ``benchmark.baseline``; the ratios are metrics ``benchmark.ratio.<figure>``. A
figure regresses when it is worse than the baseline by more than ``tolerance`` (a fraction) and
outside the noise (its bootstrap interval excludes 1). :func:`history` is the series of a schedule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.metrics import higher_is_better

DEFAULT_METRICS = ("time_to_solution_s",)


def check(conf: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``schedule.benchmark``; returns it with defaults filled."""
    conf = dict(conf or {})
    tolerance = conf.get("tolerance", 0.1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        raise ConfigError(
            f"schedule.benchmark.tolerance: expected a fraction >= 0 such as 0.1, got {tolerance!r}"
        )
    metrics = conf.get("metrics") or list(DEFAULT_METRICS)
    if isinstance(metrics, str) or not all(isinstance(m, str) and m for m in metrics):
        raise ConfigError(
            f"schedule.benchmark.metrics: expected a list of figure names such as "
            f"[time_to_solution_s, phase.io.median_s], got {metrics!r}"
        )
    baseline = conf.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or not baseline.strip()):
        raise ConfigError(f"schedule.benchmark.baseline: expected a run id, got {baseline!r}")
    return {"baseline": baseline, "metrics": list(metrics), "tolerance": float(tolerance)}


@dataclass
class Verdict:
    regression: bool
    baseline_run_id: str
    ratios: dict[str, float] = field(default_factory=dict)
    offending: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def judge(comparison: Any, metrics: list[str], tolerance: float) -> Verdict:
    """Judge run 1 of a two-run comparison against run 0."""
    from ..tracking import bench

    verdict = Verdict(False, comparison.runs[0].mlflow_run_id)
    for name in metrics:
        cell = comparison.cell(name, 1)
        if cell.ratio is None:
            verdict.missing.append(name)
            continue
        verdict.ratios[name] = cell.ratio
        change = (1 - cell.ratio) if higher_is_better(name) else (cell.ratio - 1)
        if cell.verdict == "worse" and change > tolerance:
            verdict.offending.append(f"{name}={bench.format_ratio(cell)}")
    verdict.regression = bool(verdict.offending)
    return verdict


def evaluate(client: Any, run_id: str, conf: dict[str, Any]) -> Verdict:
    """Compare MLflow run ``run_id`` with the configured baseline and tag it with the verdict."""
    from ..tracking import bench

    conf = check(conf)
    (baseline_id,) = bench.resolve(client, str(conf["baseline"]))[:1]
    runs = [bench.load_run(client, baseline_id), bench.load_run(client, run_id)]
    verdict = judge(bench.compare(runs, 0), conf["metrics"], conf["tolerance"])
    tags = {
        "benchmark.regression": str(verdict.regression).lower(),
        "benchmark.baseline": baseline_id,
        "benchmark.tolerance": f"{conf['tolerance']:g}",
        "benchmark.offending": "; ".join(verdict.offending) or "none",
    }
    if verdict.missing:
        tags["benchmark.missing"] = ", ".join(verdict.missing)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for name, ratio in verdict.ratios.items():
        client.log_metric(run_id, f"benchmark.ratio.{name}", ratio)
    return verdict


@dataclass
class Series:
    baseline: str | None
    metrics: list[str]
    #: started, run, state, regression, ratio per metric..., offending
    rows: list[list[str]]


def history(client: Any, schedule_id: str) -> Series:
    """The firings of a schedule that reached MLflow, oldest first, with their verdicts."""
    from ..tracking import bench

    ids = bench.resolve(client, schedule_id)
    runs = [client.get_run(i) for i in ids]
    if not any(r.data.tags.get("maelstrom.schedule_id") == schedule_id for r in runs):
        raise ConfigError(
            f"{schedule_id!r} is not a schedule with runs in MLflow; see `maelstrom schedules list`"
        )
    metrics = sorted(
        {
            k.removeprefix("benchmark.ratio.")
            for r in runs
            for k in r.data.metrics
            if k.startswith("benchmark.ratio.")
        }
    )
    rows = []
    for run in runs:
        tags, values = run.data.tags, run.data.metrics
        started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
        ratios = [
            f"{values[f'benchmark.ratio.{m}']:.2f}x" if f"benchmark.ratio.{m}" in values else "-"
            for m in metrics
        ]
        rows.append(
            [
                started,
                tags.get("maelstrom.run_id", run.info.run_id),
                run.info.status.lower(),
                tags.get("benchmark.regression", "-"),
                *ratios,
                tags.get("benchmark.offending", "-"),
            ]
        )
    baseline = next(
        (r.data.tags["benchmark.baseline"] for r in reversed(runs) if "benchmark.baseline" in r.data.tags),
        None,
    )
    return Series(baseline, metrics, rows)
