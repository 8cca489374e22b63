"""The status of a job as every command shows it, and the one rule that makes it from a target's own
state plus what the worker left in the run directory (:func:`reconcile`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .rundir import Result, RunDir
from .states import JobState


@dataclass
class JobStatus:
    state: JobState
    exit_code: int | None = None
    message: str = ""
    #: The worker's report when the backend could read it (MLflow run id, metrics, times).
    result: Result | None = None
    #: Times the job was requeued (preemption, time limit) and started again.
    requeues: int = 0


NO_RESULT = "the job ended without a result from the worker"


def reconcile(
    native: JobState | None,
    run_dir: RunDir | Path | str,
    *,
    name: str = "",
    exit_code: int | None = None,
    why: str = "",
    waiting: str = "",
    forgotten: str = "",
) -> JobStatus:
    """The status of a job from its target's state and its run directory.

    ``native`` is the target's state mapped onto :class:`JobState` (None: the target no longer
    knows the job), ``name`` the target's own word for it, ``why`` the target's explanation of a
    failure (a time limit, out of memory), ``waiting`` why a queued job waits, ``forgotten`` what to
    say of a job that neither the target nor the worker's report accounts for. The rules:

    - the worker's report of success wins: it ran to the end, whatever the target says afterwards
      (a job requeued after it finished, a controller restarted, an epilogue that failed);
    - a job asked to cancel (the marker) that ended otherwise, or was forgotten: cancelled;
    - the worker's report of a failure stands, named with the target's reason when the target
      says failed too; the target's word that it cancelled the job stands over it;
    - a target that forgot the job, without a report or the marker: unknown;
    - a target that says succeeded without a report from the worker: failed;
    - a failure names the target's reason and the worker's error.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    result = rd.read_result()
    requeues = rd.requeues()

    def status(state: JobState, code: int | None, message: str) -> JobStatus:
        return JobStatus(state, code, message, result, requeues)

    ended = result is not None and result.terminal
    if ended and result.succeeded:  # it ran to the end, whatever the target says afterwards
        code = result.exit_code if result.exit_code is not None else exit_code
        return status(JobState.SUCCEEDED, code, result.message or "")  # e.g. tracking left to sync
    if rd.cancelled and (ended or native is None or native.terminal or native is JobState.UNKNOWN):
        return status(JobState.CANCELLED, exit_code, "cancelled")
    if ended and native is not JobState.FAILED:
        if native is JobState.CANCELLED or result.state is JobState.CANCELLED:
            return status(JobState.CANCELLED, exit_code, "cancelled")
        code = result.exit_code if result.exit_code is not None else exit_code
        return status(result.state, code, result.error or "")
    if native is None or native is JobState.UNKNOWN:
        return status(JobState.UNKNOWN, exit_code, forgotten or "the target no longer knows the job")
    if native is JobState.SUCCEEDED:
        return status(JobState.FAILED, exit_code, NO_RESULT)
    if native is JobState.FAILED:
        error = result.error if result is not None else None
        if why and error and error not in why:
            message = f"{why}: {error}"
        else:
            message = why or error or f"{name or 'failed'} (exit code {exit_code})"
        return status(JobState.FAILED, exit_code, message)
    if native is JobState.CANCELLED:
        return status(JobState.CANCELLED, exit_code, "cancelled")
    if native is JobState.QUEUED and waiting:
        return status(native, exit_code, waiting)
    return status(native, exit_code, "")
