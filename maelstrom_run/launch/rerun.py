"""Re-runs: the recorded code (commit + diff in a separate worktree), the same resolved config."""

from __future__ import annotations

import time
from pathlib import Path

from ..core import paths
from ..core.errors import ConfigError
from ..core.spec import RunSpec, new_id, package_versions
from .envdrift import reference
from .gitinfo import materialise
from .monitor import TERMINAL, refresh
from .registry import Registry, RunRecord


def _code_dir(original: RunSpec, worktree: Path) -> str:
    root = Path(original.git["root"])
    code = Path(original.code_dir or root)
    try:
        return str(worktree / code.relative_to(root))
    except ValueError:
        return str(worktree)


def respec(
    original: RunSpec, *, current_code: bool, worktree: Path | None = None, keep_sweep: bool = False
) -> RunSpec:
    """A new RunSpec of the same job: same config (same hash), new id, recorded code restored."""
    run_id = new_id(original.app)
    code_dir = original.code_dir
    if original.git and original.git.get("commit") and not current_code:
        if worktree is None:
            worktree = materialise(original.git, paths.worktrees_dir() / run_id)
        code_dir = _code_dir(original, worktree)
    changes = dict(
        run_id=run_id,
        run_dir=str(Path(original.run_dir).parent / run_id),
        code_dir=code_dir,
        rerun_of=original.run_id,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # this environment's versions, compared with those the original ran with
        packages=package_versions(),
        env_reference=reference(f"run {original.run_id}", original.packages),
    )
    if not keep_sweep:
        changes.update(sweep_id=None, sweep_index=None, sweep_size=None, parent_run_id=None)
    return original.derive(**changes)


def rerun_one(registry: Registry, run_id: str, *, current_code: bool) -> RunSpec:
    record = registry.get(run_id)
    if record.backend_kind == "hydra" or RunSpec.parse(record.spec).kind == "hydra":
        raise ConfigError(f"run {record.run_id} is a job of a plain Hydra app; re-run it with that app")
    return respec(RunSpec.parse(record.spec), current_code=current_code)


def failed_jobs(registry: Registry, sweep_id: str) -> list[RunRecord]:
    """The latest job of each index of a sweep that failed, was cancelled or never got submitted."""
    records = refresh(registry, registry.list(sweep_id=sweep_id, limit=None))
    latest: dict[int, RunRecord] = {}
    for record in sorted(records, key=lambda r: r.created):
        latest[record.sweep_index] = record
    return [
        r
        for _, r in sorted(latest.items())
        if r.job_id is None or (r.state in TERMINAL and r.state != "succeeded") or r.state == "unknown"
    ]


def rerun_sweep(registry: Registry, sweep_id: str, *, current_code: bool) -> list[RunSpec]:
    """New specs for the failed, cancelled and never-submitted jobs of a sweep (same sweep and index)."""
    sweep = registry.sweep(sweep_id)
    originals = [RunSpec.parse(r.spec) for r in failed_jobs(registry, sweep.sweep_id)]
    if any(o.kind == "hydra" for o in originals):
        raise ConfigError(f"sweep {sweep.sweep_id} is a plain Hydra app's sweep; re-run it with that app")
    worktree = None
    if originals and not current_code and (git := originals[0].git) and git.get("commit"):
        # every job of a sweep ran the same code: restore it once
        worktree = materialise(git, paths.worktrees_dir() / new_id(sweep.sweep_id))
    specs = [respec(o, current_code=current_code, worktree=worktree, keep_sweep=True) for o in originals]
    if specs and sweep.mlflow_parent_run_id and sweep.parent_closed:
        from ..tracking.mlflow_run import reopen_parent_run

        reopen_parent_run(sweep.mlflow_parent_run_id, sweep.tracking_uri)
        registry.reopen_parent(sweep.sweep_id)
    return specs
