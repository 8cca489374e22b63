"""A sweep's summary page from the registry: its latest job per index, their states, the overrides that
vary, final metrics and MLflow runs (rendered by :mod:`maelstrom_run.tracking.sweep_page`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.rundir import RunDir
from ..core.spec import RunSpec
from ..tracking.mlflow_run import override_key, varying
from ..tracking.sweep_page import SweepJob, SweepPage, render
from .registry import Registry, RunRecord


def latest_jobs(registry: Registry, sweep_id: str) -> list[RunRecord]:
    """The sweep's jobs, a re-run in place of the job of its index, by index."""
    latest: dict[int, RunRecord] = {}
    for job in sorted(registry.list(sweep_id=sweep_id, limit=None), key=lambda r: r.created):
        latest[job.sweep_index if job.sweep_index is not None else len(latest)] = job
    return [latest[i] for i in sorted(latest)]


def sweep_page(registry: Registry, sweep_id: str, jobs: list[RunRecord] | None = None) -> SweepPage:
    """The page of ``sweep_id`` as the registry and the jobs' result files have it now."""
    sweep = registry.sweep(sweep_id)
    jobs = jobs if jobs is not None else latest_jobs(registry, sweep_id)
    overrides = json.loads(sweep.overrides or "[]")
    swept = varying(overrides or [RunSpec.parse(j.spec).overrides for j in jobs])
    rows, experiment_id, metric = [], None, None
    for position, job in enumerate(jobs):
        index = job.sweep_index if job.sweep_index is not None else position
        spec = RunSpec.parse(job.spec)
        metric = metric or (spec.config.get("app") or {}).get("metric")
        result = RunDir(job.run_dir).read_result() if Path(job.run_dir).exists() else None
        values = {override_key(o): o.split("=", 1)[1] for o in spec.overrides if "=" in o}
        rows.append(
            SweepJob(
                index=index,
                run_id=job.run_id,
                state=job.state,
                overrides={k: values.get(k, "") for k in swept},
                metrics=dict(result.metrics) if result else {},
                mlflow_run_id=job.mlflow_run_id or (result.mlflow_run_id if result else None),
                message=job.message or (result.error if result else None),
            )
        )
        experiment_id = experiment_id or (result.experiment_id if result else None)
    return SweepPage(
        sweep_id=sweep_id,
        app=sweep.app,
        jobs=rows,
        varying=swept,
        metric=metric,
        tracking_uri=sweep.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=sweep.mlflow_parent_run_id,
    )


def write_sweep_page(registry: Registry, sweep_id: str, path: Path, plots: bool = True) -> SweepPage:
    """Write the sweep's page to ``path`` (the same page as the parent run's ``sweep_summary.html``,
    its plots drawn here); returns the page."""
    from ..core.rundir import write_atomic
    from ..tracking import sweep_page as pages

    page = sweep_page(registry, sweep_id)
    if page.tracking_uri and plots:
        from ..tracking import mlflow_run

        try:  # each job's curve; without the tracking store the page still has the bars
            import mlflow

            mlflow_run.fill_sweep_page(mlflow.MlflowClient(page.tracking_uri), page)
        except Exception:  # noqa: BLE001 - a store that does not answer leaves the page without curves
            page.curves.clear()
    images = pages.plots(page) if plots else {}
    write_atomic(Path(path), render(page, images))
    mask = os.umask(0)
    os.umask(mask)
    Path(path).chmod(0o666 & ~mask)  # a page to share, not a private temporary file
    return page
