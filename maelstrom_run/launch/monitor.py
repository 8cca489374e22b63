"""Refresh the registry from backend status + result files, and wait for jobs with progress."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ..backends import get_backend
from ..core.rundir import RunDir
from ..core.spec import RunSpec
from ..core.states import JobRef, JobState
from .registry import Registry, RunRecord

TERMINAL = {s.value for s in JobState if s.terminal}


_BACKENDS: dict[str, Any] = {}


def backend_of(record: RunRecord) -> Any:
    """The backend a run was submitted to (one instance per backend config and process)."""
    conf = RunSpec.parse(record.spec).backend
    key = json.dumps(conf, sort_keys=True)
    if key not in _BACKENDS:
        _BACKENDS[key] = get_backend(conf)
    return _BACKENDS[key]


def refresh(registry: Registry, records: Sequence[RunRecord]) -> list[RunRecord]:
    """Ask each backend once for all its unfinished jobs; write what changed; close finished sweeps."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        if record.state not in TERMINAL and record.job_id:
            groups[record.backend].append(record)
    sweeps = set()
    changes = []
    for group in groups.values():
        backend = backend_of(group[0])
        statuses = backend.status([JobRef(r.run_id, r.job_id, r.run_dir) for r in group])
        for record in group:
            status = statuses.get(record.run_id)
            if status is None:
                continue
            result = status.result
            values: dict[str, Any] = {"state": status.state.value, "message": status.message or None}
            if status.exit_code is not None:
                values["exit_code"] = status.exit_code
            if status.requeues:
                values["requeues"] = status.requeues
            for key in ("mlflow_run_id", "tracking_uri", "started", "ended"):
                if result is not None and getattr(result, key) is not None:
                    values[key] = getattr(result, key)
            if status.state.terminal and "ended" not in values:
                values["ended"] = time.time()
            changes.append((record.run_id, values))
            if record.sweep_id and status.state.terminal:
                sweeps.add(record.sweep_id)
    registry.update_many(changes)
    for sweep_id in sweeps:
        close_sweep_if_done(registry, sweep_id)
    return registry.get_many([r.run_id for r in records])


def close_sweep_if_done(registry: Registry, sweep_id: str) -> None:
    sweep = registry.sweep(sweep_id)
    if not sweep.mlflow_parent_run_id or sweep.parent_closed:
        return
    latest: dict[int, RunRecord] = {}
    for job in sorted(registry.list(sweep_id=sweep_id, limit=None), key=lambda r: r.created):
        latest[job.sweep_index] = job  # a re-run replaces the failed job of its index
    jobs = list(latest.values())
    if len(jobs) < sweep.size or any(j.state not in TERMINAL for j in jobs):
        return
    if registry.close_parent(sweep_id):
        from ..tracking.mlflow_run import end_parent_run

        metrics = {}
        for job in jobs:
            result = RunDir(job.run_dir).read_result()
            metrics[job.run_id] = result.metrics if result else {}
        try:
            end_parent_run(
                sweep.mlflow_parent_run_id, sweep.tracking_uri, {j.run_id: j.state for j in jobs}, metrics
            )
        except Exception as exc:  # noqa: BLE001 - closing the parent must not lose the jobs' states
            print(f"maelstrom: could not close the sweep's MLflow parent run: {exc}", file=sys.stderr)


def wait(
    registry: Registry,
    run_ids: Sequence[str],
    follow: bool = False,
    poll_s: float = 0.5,
    cancel_on_interrupt: bool = True,
) -> list[RunRecord]:
    """Block until every job is finished, showing a progress bar (or, with ``follow``, the job's output).

    Ctrl-C cancels the jobs that are still queued or running (unless ``cancel_on_interrupt`` is
    false: ``maelstrom runs watch``), then re-raises.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..console import make_console

    console = make_console(stderr=True)
    records = registry.get_many(list(run_ids))
    offsets: dict[tuple[str, str], int] = defaultdict(int)
    progress = None
    if not follow:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        task = progress.add_task("jobs", total=len(records), states="")
        progress.start()
    try:
        while True:
            records = refresh(registry, records)
            if follow:
                _print_new_output(records, offsets)
            else:
                counts = Counter(r.state for r in records)
                states = "  ".join(
                    f"{s}: {counts[s]}"
                    for s in ("queued", "running", "succeeded", "failed", "cancelled", "unknown")
                    if counts[s]
                )
                progress.update(task, completed=sum(r.state in TERMINAL for r in records), states=states)
            if all(r.state in TERMINAL for r in records):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        if not cancel_on_interrupt:
            raise
        console.print("[yellow]interrupted: cancelling the unfinished jobs[/yellow]")
        cancel(registry, [r for r in records if r.state not in TERMINAL])
        raise
    finally:
        if progress is not None:
            progress.stop()
    if follow:
        _print_new_output(records, offsets)
    return records


def _print_new_output(records: Sequence[RunRecord], offsets: dict[tuple[str, str], int]) -> None:
    for record in records:
        if not record.job_id:
            continue
        backend = backend_of(record)
        for stream, target in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            text = backend.logs(JobRef(record.run_id, record.job_id, record.run_dir), stream)
            new = text[offsets[(record.run_id, stream)] :]
            if new:
                target.write(new)
                target.flush()
                offsets[(record.run_id, stream)] = len(text)


def cancel(registry: Registry, records: Sequence[RunRecord]) -> list[RunRecord]:
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        if record.job_id and record.state not in TERMINAL:
            groups[record.backend].append(record)
        elif not record.job_id and record.state not in TERMINAL:
            registry.update(
                record.run_id, state="cancelled", message="cancelled before submission", ended=time.time()
            )
    for group in groups.values():
        backend_of(group[0]).cancel([JobRef(r.run_id, r.job_id, r.run_dir) for r in group])
    return refresh(registry, registry.get_many([r.run_id for r in records]))
