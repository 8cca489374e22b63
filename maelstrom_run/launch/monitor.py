"""Refresh the registry from backend status + result files, and wait for jobs (the caller shows progress)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..backends import get_backend
from ..core.errors import BackendError
from ..core.rundir import RunDir
from ..core.spec import RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus, reconcile
from .registry import Registry, RunRecord
from .sweep_report import latest_jobs, sweep_page

log = logging.getLogger(__name__)

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
    done: dict[str, JobStatus] = {}
    for record in records:
        if record.state not in TERMINAL and record.job_id:
            result = RunDir(record.run_dir).read_result()
            if result is not None and result.succeeded:  # the worker's success stands: no need to ask
                done[record.run_id] = reconcile(JobState.SUCCEEDED, record.run_dir)
            else:
                groups[record.backend].append(record)
    sweeps = set()
    changes = []
    batches = [([r for r in records if r.run_id in done], done)] if done else []
    for group in groups.values():
        batches.append(
            (group, backend_of(group[0]).status([JobRef(r.run_id, r.job_id, r.run_dir) for r in group]))
        )
    for group, statuses in batches:
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
    # read back only what changed: a listing of 10,000 ended runs is not read twice
    fresh = {r.run_id: r for r in registry.get_many([run_id for run_id, _ in changes])} if changes else {}
    return [fresh.get(r.run_id, r) for r in records]


def close_sweep_if_done(registry: Registry, sweep_id: str) -> None:
    """Close the MLflow parent run of a sweep whose jobs have all ended (making it first where the
    tracking server was away when the sweep was submitted), its jobs' runs its children."""
    sweep = registry.sweep(sweep_id)
    # a sweep of plain Hydra apps has no tracking URI: no parent run
    if sweep.parent_closed or not (sweep.mlflow_parent_run_id or sweep.tracking_uri):
        return
    jobs = latest_jobs(registry, sweep_id)  # a re-run replaces the failed job of its index
    if len(jobs) < sweep.size or any(j.state not in TERMINAL for j in jobs):
        return
    parent = sweep.mlflow_parent_run_id
    try:
        if parent is None:
            parent = _late_parent(registry, sweep, jobs)
        if parent is None or not registry.close_parent(sweep_id):
            return
        from ..tracking.mlflow_run import end_parent_run, link_children

        link_children(parent, sweep.tracking_uri, sweep_id)  # jobs that started before it existed
        metrics = {}
        for job in jobs:
            result = RunDir(job.run_dir).read_result()
            metrics[job.run_id] = result.metrics if result else {}
        end_parent_run(
            parent,
            sweep.tracking_uri,
            {j.run_id: j.state for j in jobs},
            metrics,
            page=sweep_page(registry, sweep_id, jobs),
        )
    except Exception as exc:  # noqa: BLE001 - closing the parent must not lose the jobs' states
        # a warning, not output: without logging configured Python writes the bare line to stderr
        log.warning("maelstrom: could not close the sweep's MLflow parent run: %s", exc)


def _late_parent(registry: Registry, sweep: Any, jobs: Sequence[RunRecord]) -> str | None:
    """The parent run of a sweep submitted while the tracking server was away (or by a process
    killed before it recorded the parent): found by its tags, else made now; None while the server
    is still away."""
    from ..tracking import mlflow_run

    spec = RunSpec.parse(jobs[0].spec).derive(sweep_id=sweep.sweep_id)
    swept = mlflow_run.varying(json.loads(sweep.overrides or "[]"))
    made = mlflow_run.late_parent_run(spec, sweep.size, swept)
    if made is None:
        return None  # the server is still away: tried again at the next refresh
    parent, uri = made
    registry.set_parent(sweep.sweep_id, parent, uri)
    return parent


@dataclass
class Synced:
    """What ``sync_tracking`` did for one run."""

    record: RunRecord
    sent: int
    left: int
    mlflow_run_id: str | None
    error: str = ""


def sync_tracking(registry: Registry, records: Sequence[RunRecord], timeout: float = 30.0) -> list[Synced]:
    """Deliver the tracking calls that jobs kept in their run directories while the server was away
    (``maelstrom runs sync``); records each run's MLflow run id once it exists."""
    from ..core.errors import ConfigError
    from ..tracking import mlflow_run
    from ..tracking.outbox import has_journal, sync

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # the outbox tries again by itself
    out = []
    for record in records:
        if not has_journal(record.run_dir):
            out.append(Synced(record, 0, 0, record.mlflow_run_id))
            continue
        result = RunDir(record.run_dir).read_result()
        tracking = dict(RunSpec.parse(record.spec).tracking)
        tracking["uri"] = (result and result.tracking_uri) or record.tracking_uri or tracking.get("uri")
        try:
            uri = mlflow_run.connect(tracking)
        except mlflow_run.TrackingError as exc:
            raise ConfigError(f"{exc}; then `maelstrom runs sync {record.run_id}` again") from None
        sent, left, box = sync(record.run_dir, uri, timeout=timeout)
        values: dict[str, Any] = {"tracking_uri": uri}
        if box.run_id:
            values["mlflow_run_id"] = box.run_id
        if not left and record.message and record.message.startswith("tracking:"):
            values["message"] = None
        registry.update(record.run_id, **values)
        out.append(Synced(record, sent, left, box.run_id, box.last_error if left else ""))
    for sweep_id in sorted({r.sweep_id for r in records if r.sweep_id}):
        close_sweep_if_done(registry, sweep_id)  # a parent run the server missed is made now
    return out


class WaitView(Protocol):
    """What a caller shows while :func:`wait` blocks (the commands layer: a progress bar, or the
    jobs' own output); ``wait`` itself writes nothing to the terminal."""

    def start(self, records: Sequence[RunRecord]) -> None: ...

    def update(self, records: Sequence[RunRecord]) -> None: ...

    def done(self, records: Sequence[RunRecord]) -> None: ...

    def interrupted(self) -> None: ...

    def stop(self) -> None: ...


def wait(
    registry: Registry,
    run_ids: Sequence[str],
    poll_s: float = 0.5,
    cancel_on_interrupt: bool = True,
    view: WaitView | None = None,
) -> list[RunRecord]:
    """Block until every job is finished; ``view`` is told of each refresh.

    Ctrl-C cancels the jobs that are still queued or running (unless ``cancel_on_interrupt`` is
    false: ``maelstrom runs watch``), then re-raises.
    """
    records = registry.get_many(list(run_ids))
    if view is not None:
        view.start(records)
    outage = 0
    try:
        while True:
            try:
                records = refresh(registry, records)
            except BackendError as exc:
                if not getattr(exc, "transient", False):
                    raise
                # a controller restarting: the jobs go on, so watching does too (less often)
                if not outage:
                    log.warning("maelstrom: %s; still watching", exc)
                outage += 1
                time.sleep(min(30.0, poll_s * 2**outage))
                continue
            outage = 0
            if view is not None:
                view.update(records)
            if all(r.state in TERMINAL for r in records):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        if not cancel_on_interrupt:
            raise
        if view is not None:
            view.interrupted()
        cancel(registry, [r for r in records if r.state not in TERMINAL])
        raise
    finally:
        if view is not None:
            view.stop()
    if view is not None:
        view.done(records)
    return records


def new_output(
    records: Sequence[RunRecord], offsets: dict[tuple[str, str], int]
) -> Iterator[tuple[str, str]]:
    """``(stream, text)`` of each job's output written since ``offsets`` (which it moves on)."""
    for record in records:
        if not record.job_id:
            continue
        backend = backend_of(record)
        for stream in ("stdout", "stderr"):
            text = backend.logs(JobRef(record.run_id, record.job_id, record.run_dir), stream)
            new = text[offsets[(record.run_id, stream)] :]
            if new:
                yield stream, new
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
