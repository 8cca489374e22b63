"""A run directory and the files in it, and the worker's typed report (``result.json``).

The worker writes the result by atomic rename; the submitting side reads it. Nothing here touches
the registry: run directories live on whatever filesystem the job runs on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .states import JobState

SPEC = "spec.yaml"
RESULT = "result.json"
#: Marker a cancel leaves in the run directory; the worker checks it when it starts and when it fails.
CANCELLED = "cancelled"
#: One line per time the cluster requeued the job (written by the worker, counted by the backend).
REQUEUES = "requeues.log"
#: A Hydra job's pickled return value.
JOB_RETURN = "job_return.pkl"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    path = Path(path)
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    # named after the writing process and thread: two writers never share one (a sweep writes
    # thousands of these, and a random name costs more than the write)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Result:
    """What the worker reports of its job; ``state`` is a :class:`JobState` value."""

    run_id: str = ""
    state: JobState = JobState.RUNNING
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    #: The failure in one line (the app's own exception, or why the job could not start).
    error: str | None = None
    message: str | None = None
    #: Final metrics the entry point returned.
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    requeues: int | None = None
    #: Keys this version does not know (a newer worker's), kept so nothing is lost on a rewrite.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["state"] = str(self.state)
        return {**self.extra, **{k: v for k, v in out.items() if v is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["state"] = JobState(values.get("state", "running"))
        except ValueError:
            values["state"] = JobState.UNKNOWN
        if not isinstance(values.get("metrics"), dict):
            values["metrics"] = {}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


@dataclass(frozen=True)
class RunDir:
    """One job's directory: its spec, logs, result, cancel marker and requeue log."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def spec(self) -> Path:
        return self.path / SPEC

    @property
    def stdout(self) -> Path:
        return self.path / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.path / "stderr.log"

    @property
    def result_file(self) -> Path:
        return self.path / RESULT

    @property
    def job_return(self) -> Path:
        return self.path / JOB_RETURN

    def log(self, stream: str) -> Path:
        return self.path / f"{stream}.log"

    def read_result(self) -> Result | None:
        try:
            data = json.loads(self.result_file.read_text())
        except (OSError, ValueError):
            return None
        return Result.from_dict(data) if isinstance(data, dict) else None

    def write_result(self, result: Result) -> None:
        """The worker's report to the submitting side (never the registry itself)."""
        write_atomic(self.result_file, json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))

    @property
    def cancelled(self) -> bool:
        return (self.path / CANCELLED).exists()

    def mark_cancelled(self) -> None:
        # an array task that has not started has no run directory yet (the task makes it)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CANCELLED).touch()

    def requeues(self) -> int:
        try:
            text = (self.path / REQUEUES).read_text()
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if line.strip())

    def add_requeue(self, line: str) -> None:
        with open(self.path / REQUEUES, "a") as fh:
            fh.write(line.rstrip("\n") + "\n")
