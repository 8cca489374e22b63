"""The backend contract: every backend (local, slurm, slurmrest, unicore, firecrest) implements it.

Backends receive RunSpecs and job references, never Hydra state. ``render`` is a pure
function of the spec and feeds both the dry run and the real submission.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import BackendConf
from ..core.spec import RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus
from .files import LocalFiles, RemoteFiles

#: ``on_submitted(specs, job_ids)``: called as each part of a submission is accepted.
Submitted = Callable[[Sequence[RunSpec], Sequence[str]], None]


@dataclass
class Rendered:
    """What a submission sends: the job script or description, and the files staged with it."""

    text: str
    files: list[str] = field(default_factory=list)
    #: ``syntax``: how the dry run highlights ``text`` (bash by default, json for job descriptions).
    meta: dict[str, Any] = field(default_factory=dict)


class StatusCache:
    """States of a set of jobs, queried again only after an interval that grows while nothing changes
    (1 s, then up to 30 s), so watching a sweep costs the target little."""

    def __init__(self) -> None:
        self._cached: dict[tuple[str, ...], tuple[float, dict[str, JobStatus]]] = {}
        self._interval = 1.0

    def get(self, jobs: Sequence[JobRef], query: Callable[[], dict[str, JobStatus]]) -> dict[str, JobStatus]:
        key = tuple(sorted(j.job_id for j in jobs))
        cached = self._cached.get(key)
        if cached and time.monotonic() - cached[0] < self._interval:
            return cached[1]
        out = query()
        changed = not cached or {k: v.state for k, v in cached[1].items()} != {
            k: v.state for k, v in out.items()
        }
        self._interval = 1.0 if changed else min(30.0, self._interval * 1.5)
        self._cached = {key: (time.monotonic(), out)}
        return out

    def clear(self) -> None:
        self._cached.clear()


def wait_until_stopped(states: Callable[[], Iterable[JobState | None]], seconds: float = 10.0) -> None:
    """After a cancel: scancel and the gateways answer before Slurm has moved the jobs on, so wait
    (briefly; jobs finishing their epilogue may take longer) until ``states()`` has none queued or running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(s in (JobState.QUEUED, JobState.RUNNING) for s in states()):
            return
        time.sleep(0.3)


class Backend(ABC):
    """One compute target, configured by a ``backend`` config group entry.

    ``Conf`` is the config dataclass of the kind: the backend receives its config as one, validated
    and with every default filled (:func:`maelstrom_run.backends.get_backend`).
    """

    Conf: type[BackendConf] = BackendConf

    def __init__(self, conf: BackendConf) -> None:
        self.conf = conf
        self.name: str = conf.name or conf.kind

    def connect(self) -> None:
        """Reach the target and have the credentials accepted; raise a clear error otherwise.

        Called before a submission is recorded, so refused credentials or a dead gateway leave
        the registry as it was. Nothing to do for targets without a login (local, sbatch).
        """
        return None

    @abstractmethod
    def render(self, spec: RunSpec) -> Rendered:
        """The exact job script / description that ``submit`` sends (the dry run)."""

    @abstractmethod
    def submit_many(self, specs: Sequence[RunSpec], on_submitted: Submitted | None = None) -> list[str]:
        """Submit jobs (a sweep in one go where the target allows); returns one job id per spec.

        A backend that submits in parts calls ``on_submitted(specs, job_ids)`` as each part is
        accepted, so an interrupted submission keeps what the cluster already has.
        """

    def adopt(self, specs: Sequence[RunSpec]) -> dict[str, str]:
        """Job ids the target already has for specs the registry never saw accepted (run id -> job id).

        Called by ``maelstrom runs resume`` before resubmitting, so a submission cut short between the
        target accepting a job and the registry recording it is never submitted twice.
        """
        return {}

    def render_many(self, specs: Sequence[RunSpec]) -> list[Rendered]:
        """What ``submit_many`` sends for these specs (one entry per submission)."""
        return [self.render(s) for s in specs]

    def submit(self, spec: RunSpec) -> str:
        return self.submit_many([spec])[0]

    @abstractmethod
    def status(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        """States of many jobs in one query, keyed by run id."""

    @abstractmethod
    def logs(self, job: JobRef, stream: str = "stdout") -> str:
        """The job's ``stdout`` or ``stderr`` so far."""

    @abstractmethod
    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Cancel jobs; cancelling a finished job does nothing."""

    @abstractmethod
    def download(self, job: JobRef, dest: Path) -> Path:
        """Copy the job's run directory to ``dest``; returns the local copy."""

    def files(self) -> RemoteFiles:
        """The target's files, for ``maelstrom data copy``; by default a filesystem shared with this machine."""
        return LocalFiles()
