"""``maelstrom runs resume SWEEP``: finish a submission that was cut short, without duplicates.

Every job of a sweep is in the registry before anything is submitted. A job without a job id
was either never submitted, or accepted by the cluster just before the submitting process died.
The backend is asked which of them the cluster already has (Slurm: the sweep's array jobs by
name); those are adopted, and only the rest are submitted.
"""

from __future__ import annotations

from ..backends import get_backend
from ..core.errors import ConfigError
from ..core.spec import RunSpec
from .registry import Registry, RunRecord
from .submit import submit_group


def missing_jobs(registry: Registry, sweep_id: str) -> list[RunRecord]:
    """Jobs of a sweep that have no job id and were not cancelled (latest row per index)."""
    latest: dict[int, RunRecord] = {}
    for record in sorted(registry.list(sweep_id=sweep_id, limit=None), key=lambda r: r.created):
        latest[record.sweep_index if record.sweep_index is not None else -1] = record
    return [r for r in latest.values() if not r.job_id and r.state != "cancelled"]


def resume_sweep(registry: Registry, sweep_id: str) -> tuple[list[str], list[str]]:
    """Adopt what the cluster has, submit the rest; returns (adopted run ids, submitted run ids)."""
    sweep = registry.sweep(sweep_id)
    jobs = registry.list(sweep_id=sweep.sweep_id, limit=None)
    if not jobs:
        if sweep.mlflow_parent_run_id and sweep.tracking_uri and registry.close_parent(sweep.sweep_id):
            from ..tracking.mlflow_run import kill_parent_run

            kill_parent_run(sweep.mlflow_parent_run_id, sweep.tracking_uri)  # not left RUNNING
        raise ConfigError(
            f"sweep {sweep.sweep_id} has no recorded jobs (the submission stopped before recording them); "
            "run the sweep again"
        )
    missing = missing_jobs(registry, sweep.sweep_id)
    if not missing:
        return [], []
    specs = [RunSpec.parse(r.spec) for r in missing]
    backend = get_backend(specs[0].backend)
    adopted = backend.adopt(specs)
    registry.update_many(
        [
            (
                run_id,
                {"job_id": job_id, "state": "queued", "message": "adopted from the cluster", "ended": None},
            )
            for run_id, job_id in adopted.items()
        ]
    )
    rest = [s for s in specs if s.run_id not in adopted]
    registry.update_many(
        [(s.run_id, {"state": "queued", "message": "submitting", "ended": None}) for s in rest]
    )
    if rest:
        submit_group(registry, backend, rest)
    return sorted(adopted), [s.run_id for s in rest]
