"""The local backend: jobs are ``python -m maelstrom_run.worker spec.yaml`` subprocesses.

``submit_many`` starts one detached queue process that runs the jobs with at most
``backend.max_parallel`` at once, so submission returns at once and the jobs survive
the submitting command. Each job is identified by its run directory:

- ``queue.json``  pid of the queue process that will start the job
- ``job.json``    pid / process group of the running worker
- ``result.json`` the worker's report (or the queue's, when the worker died)
- ``cancelled``   marker written by cancel
- ``stdout.log``, ``stderr.log``
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..config.secrets import is_reference, job_environment
from ..core.rundir import Result, RunDir, write_atomic
from ..core.spec import SPEC_FILE, RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus, reconcile
from .base import Backend, Rendered, Submitted

QUEUE, JOB = "queue.json", "job.json"
#: Seconds a cancelled job has to close its MLflow run and draw its plots before it is killed.
_GRACE_S = 20.0


def _start_ticks(pid: int) -> int | None:
    """Process start time (clock ticks since boot), to tell a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(handle: dict | None) -> bool:
    if not handle:
        return False
    ticks = _start_ticks(handle["pid"])
    if ticks is None or ticks != handle.get("ticks"):
        return False
    state = Path(f"/proc/{handle['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _handle(pid: int) -> dict:
    return {"pid": pid, "ticks": _start_ticks(pid)}


def worker_command(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "maelstrom_run.worker", str(spec_path)]


class LocalBackend(Backend):
    def render(self, spec: RunSpec) -> Rendered:
        run_dir = Path(spec.run_dir)
        cmd = worker_command(run_dir / SPEC_FILE)
        env = self.conf.environment.variables
        prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items()) if not is_reference(v))
        text = (
            f"cd {shlex.quote(spec.code_dir or str(run_dir))} && "
            f"{prefix + ' ' if prefix else ''}{shlex.join(cmd)} "
            f"> {shlex.quote(str(run_dir / 'stdout.log'))} 2> {shlex.quote(str(run_dir / 'stderr.log'))}"
        )
        return Rendered(text=text, files=[str(run_dir / SPEC_FILE)])

    def submit_many(self, specs: Sequence[RunSpec], on_submitted: Submitted | None = None) -> list[str]:
        run_dirs = []
        for spec in specs:
            run_dir = Path(spec.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            spec.write(run_dir)
            run_dirs.append(str(run_dir))
        parallel = max(1, self.conf.max_parallel)
        variables = self.conf.environment.variables
        env = {
            **os.environ,
            **{k: str(v) for k, v in variables.items() if not is_reference(v)},
            **job_environment([s.config for s in specs]),
        }
        queue = subprocess.Popen(
            [sys.executable, "-m", "maelstrom_run.backends.local", str(parallel), *run_dirs],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
        handle = json.dumps(_handle(queue.pid))
        for run_dir in run_dirs:
            write_atomic(Path(run_dir) / QUEUE, handle)
        return [f"local:{queue.pid}:{i}" for i in range(len(run_dirs))]

    def status(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        return {job.run_id: self._status(Path(job.run_dir)) for job in jobs}

    def _status(self, run_dir: Path) -> JobStatus:
        """The processes' state (worker, queue), reconciled with the worker's report."""
        job = _read_json(run_dir / JOB)
        queue_alive = _alive(_read_json(run_dir / QUEUE))
        why = ""
        if job is not None:
            native = JobState.RUNNING if _alive(job) or queue_alive else JobState.FAILED
            report = RunDir(run_dir).read_result()
            if native is JobState.FAILED and not (report and report.terminal):  # else the report says why
                why = "the worker process died without reporting a result"
        elif RunDir(run_dir).cancelled:
            native = JobState.CANCELLED
        elif queue_alive:
            native = JobState.QUEUED
        else:
            native = JobState.FAILED
            why = "the local queue process died before starting the job"
        return reconcile(native, run_dir, why=why)

    def logs(self, job: JobRef, stream: str = "stdout") -> str:
        try:
            return (Path(job.run_dir) / f"{stream}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        run_dirs = [Path(job.run_dir) for job in jobs if not self._status(Path(job.run_dir)).state.terminal]
        for run_dir in run_dirs:  # mark all first, so the queue starts none of them while we kill
            RunDir(run_dir).mark_cancelled()
        running = [h for h in (_read_json(d / JOB) for d in run_dirs) if _alive(h)]
        for handle in running:
            os.killpg(handle["pgid"], signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_S
        for handle in running:
            while _alive(handle) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(handle):
                os.killpg(handle["pgid"], signal.SIGKILL)
        for run_dir in run_dirs:
            if not _alive(_read_json(run_dir / QUEUE)):  # no queue process left to record the outcome
                _finalise(run_dir, None)

    def download(self, job: JobRef, dest: Path) -> Path:
        target = Path(dest) / job.run_id
        if Path(job.run_dir).resolve() != target.resolve():
            shutil.copytree(job.run_dir, target, dirs_exist_ok=True)
        return target


def _finalise(run_dir: Path, returncode: int | None) -> None:
    """Write the result of a job whose worker could not (killed, cancelled, crashed)."""
    rd = RunDir(run_dir)
    result = rd.read_result() or Result(run_id=run_dir.name)
    if result.terminal:
        return
    cancelled = rd.cancelled
    result.state = JobState.CANCELLED if cancelled else JobState.FAILED
    result.exit_code, result.ended = returncode, time.time()
    result.error = (
        "cancelled" if cancelled else f"the worker exited with code {returncode} without reporting a result"
    )
    rd.write_result(result)


def _run_queue(parallel: int, run_dirs: list[str]) -> None:
    """The detached queue process: run the jobs, at most ``parallel`` at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pending = [Path(d) for d in run_dirs]
    running: dict[Path, subprocess.Popen] = {}
    while pending or running:
        for run_dir, proc in list(running.items()):
            code = proc.poll()
            if code is not None:
                del running[run_dir]
                _finalise(run_dir, code)
        while pending and len(running) < parallel:
            run_dir = pending.pop(0)
            if RunDir(run_dir).cancelled:
                _finalise(run_dir, None)
                continue
            spec = RunSpec.read(run_dir)
            cwd = spec.code_dir if spec.code_dir and Path(spec.code_dir).is_dir() else run_dir
            with open(run_dir / "stdout.log", "ab") as out, open(run_dir / "stderr.log", "ab") as err:
                proc = subprocess.Popen(
                    worker_command(run_dir / SPEC_FILE),
                    cwd=cwd,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            write_atomic(run_dir / JOB, json.dumps({**_handle(proc.pid), "pgid": proc.pid}))
            if RunDir(run_dir).cancelled:  # cancelled while it was being started
                os.killpg(proc.pid, signal.SIGTERM)
            running[run_dir] = proc
        time.sleep(0.05)


if __name__ == "__main__":
    _run_queue(int(sys.argv[1]), sys.argv[2:])
