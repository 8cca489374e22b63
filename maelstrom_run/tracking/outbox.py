"""A run's MLflow calls, kept on local disk and delivered in order by a background thread.

The worker never waits for the tracking server: every call (create the run, metrics, params,
tags, artefacts, end the run) is appended to ``RUN_DIR/tracking/journal.jsonl`` and handed to a
thread that sends it. While the server is away the calls wait there, and go out in their order
(metrics with the time they were logged) when it answers again; what is left when the job ends is
sent by ``maelstrom runs sync RUN``. ``delivered.json`` holds how far delivery got, and the MLflow
run id once the run exists; one process at a time delivers (a lock file), so nothing goes twice.
A full disk only loses the durable copy: calls stay in memory and the thread still sends them.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.retry import RetryPolicy, first_line
from ..core.rundir import write_atomic

FOLDER = "tracking"
#: MLflow's limits on one ``log_batch`` call.
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
#: Waits between tries while the server is away (doubling up to 5 s: it is seen back quickly).
_POLICY = RetryPolicy(retries=0, delay=0.5, backoff=2.0, max_delay=5.0)
#: MLflow error codes that say the call itself is wrong: sending it again will not help.
_REFUSED = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "RESOURCE_DOES_NOT_EXIST"}


class Busy(UserError):
    """Another process (the job itself) is delivering this run's calls."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _refused(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", None)
    return code in _REFUSED or (code == "RESOURCE_ALREADY_EXISTS")


class Outbox:
    """The journal of one run's tracking calls and the delivery of them to ``uri``."""

    def __init__(self, run_dir: Path | str, uri: str) -> None:
        self.dir = Path(run_dir) / FOLDER
        self.uri = uri
        self.journal = self.dir / "journal.jsonl"
        self.state_file = self.dir / "delivered.json"
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._lock_fd: int | None = None
        self._client: Any = None
        self._progress = time.monotonic()
        #: The last delivery failure (shown when calls are left undelivered).
        self.last_error = ""
        #: Deliveries that failed (the server away) since this process started.
        self.failures = 0
        #: Whether the journal lost calls (a full disk): only this process can deliver them.
        self.journal_broken = False
        self.state = self._read_state()
        self._seq = self.state.get("seq", 0)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full disk: calls stay in memory (see ``record``)
            self.journal_broken, self.last_error = True, first_line(exc)

    # -- state --------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"seq": 0}
        return data if isinstance(data, dict) else {"seq": 0}

    def _save_state(self) -> None:
        try:
            write_atomic(self.state_file, json.dumps(self.state))
        except OSError as exc:  # a full disk: delivery goes on, a later sync may repeat little
            self.last_error = first_line(exc)

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the run was created on the server."""
        return self.state.get("run_id")

    @property
    def experiment_id(self) -> str | None:
        return self.state.get("experiment_id")

    def journalled(self) -> list[dict[str, Any]]:
        """The calls in the journal not yet delivered, in order."""
        done = self.state.get("seq", 0)
        out = []
        try:
            lines = self.journal.read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                op = json.loads(line)
            except ValueError:  # a line cut short by a full disk or a kill: the last one
                continue
            if isinstance(op, dict) and op.get("seq", 0) > done:
                out.append(op)
        return out

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- recording ----------------------------------------------------------------------
    def lock(self, wait: bool = False) -> None:
        """Become the one process that delivers (raises :class:`Busy` when another one is)."""
        try:
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # no journal here either (a full disk): this process alone delivers
            return self._load()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if not isinstance(exc, BlockingIOError):  # a filesystem without locks: deliver anyway
                return self._load()
            raise Busy(
                f"{self.dir}: another process delivers these calls (the job is still running); "
                "try again when it has ended"
            ) from None
        self._lock_fd = fd
        self._load()

    def _load(self) -> None:
        """Take up what the journal holds beyond the delivered mark."""
        self.state = self._read_state()
        self._queue.extend(self.journalled())
        self._seq = max([self.state.get("seq", 0), *(op["seq"] for op in self._queue)])

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def record(self, op: str, **fields: Any) -> None:
        """Journal one call and hand it to the delivery thread."""
        with self._cond:
            self._seq += 1
            entry = {"seq": self._seq, "op": op, **fields}
            try:
                with open(self.journal, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, default=str) + "\n")
            except OSError as exc:
                self.journal_broken, self.last_error = True, first_line(exc)
            self._queue.append(entry)
            self._cond.notify_all()

    def _keep(self, source: Path, seq_hint: int) -> str | None:
        """A copy of an artefact file or folder as it is now (the app may change it later)."""
        target = self.dir / "artifacts" / str(seq_hint) / source.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target)
        except OSError as exc:  # a full disk: send the file as it is when its turn comes
            shutil.rmtree(target.parent, ignore_errors=True)
            self.last_error = first_line(exc)
            return str(source.absolute())
        return str(target.relative_to(self.dir))

    def create(
        self, experiment: str, tags: dict[str, str], run_name: str, sweep_id: str | None = None
    ) -> None:
        """The run, made when it is delivered; with ``sweep_id``, a child of the sweep's parent run
        if the parent exists by then."""
        fields = {"sweep": sweep_id} if sweep_id else {}
        self.record("create", experiment=experiment, tags=tags, run_name=run_name, start=_now_ms(), **fields)

    def reopen(self, requeues: int) -> None:
        """The job started again after a requeue: the same MLflow run goes on."""
        self.record("status", status="RUNNING")
        self.set_tags({"maelstrom.requeues": str(requeues)})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = _now_ms()
        rows = [[k, float(v), now, int(step or 0)] for k, v in metrics.items()]
        for i in range(0, len(rows), _BATCH_METRICS):
            self.record("batch", metrics=rows[i : i + _BATCH_METRICS])

    def has_run(self) -> bool:
        """Whether this run directory already has an MLflow run (created, or waiting to be)."""
        return self.run_id is not None or any(op["op"] == "create" for op in self._queue)

    def log_params(self, params: dict[str, str]) -> None:
        items = [(str(k), str(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.record("batch", params=dict(items[i : i + _BATCH_PARAMS]))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.record("batch", tags={str(k): str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        self.record("text", text=text, path=artifact_file)

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        source = Path(local_path)
        kept = self._keep(source, self._seq + 1)
        self.record("artifact", file=kept, dir=source.is_dir(), artifact_path=artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        name = Path(artifact_file)
        target = self.dir / "artifacts" / str(self._seq + 1) / name.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(target)
        except OSError as exc:
            self.last_error = first_line(exc)
            return
        parent = str(name.parent) if str(name.parent) != "." else None
        self.record("artifact", file=str(target.relative_to(self.dir)), dir=False, artifact_path=parent)

    def log_input(self, dataset: Any, context: str) -> None:
        """An MLflow dataset (``mlflow.data``) as an input of the run, in ``context`` (training...)."""
        entity = dataset._to_mlflow_entity()
        fields = {
            k: getattr(entity, k) for k in ("name", "digest", "source_type", "source", "schema", "profile")
        }
        self.record("input", dataset=fields, context=context)

    def end(self, status: str) -> None:
        self.record("status", status=status, end=_now_ms())

    # -- delivery -----------------------------------------------------------------------
    def _mlflow(self) -> Any:
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.uri)
        return self._client

    def _send(self, ops: list[dict[str, Any]]) -> None:
        """Deliver ``ops`` (consecutive batches merged into one call, or one other call)."""
        client = self._mlflow()
        op = ops[0]
        if op["op"] == "create":
            from .mlflow_run import ensure_experiment, find_sweep_parent

            experiment_id = ensure_experiment(op["experiment"], self.uri)
            tags = dict(op["tags"])
            if op.get("sweep") and "mlflow.parentRunId" not in tags:
                parent = find_sweep_parent(client, op["sweep"], [experiment_id])
                if parent:
                    tags["mlflow.parentRunId"] = parent
            run = client.create_run(experiment_id, start_time=op["start"], tags=tags, run_name=op["run_name"])
            self.state.update(run_id=run.info.run_id, experiment_id=experiment_id)
            return
        run_id = self.run_id
        if run_id is None:
            raise RuntimeError("journal has calls before the run was created")
        if op["op"] == "batch":
            from mlflow.entities import Metric, Param, RunTag

            metrics, params, tags = [], {}, {}
            for each in ops:
                metrics += [Metric(k, v, ts, step) for k, v, ts, step in each.get("metrics", [])]
                params.update(each.get("params", {}))
                tags.update(each.get("tags", {}))
            client.log_batch(
                run_id,
                metrics=metrics,
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
        elif op["op"] == "text":
            client.log_text(run_id, op["text"], op["path"])
        elif op["op"] == "artifact":
            path = self.dir / op["file"]
            if not path.exists():
                return  # gone (a full disk kept no copy and the app removed it): nothing to send
            if op.get("dir"):
                client.log_artifacts(run_id, str(path), op.get("artifact_path"))
            else:
                client.log_artifact(run_id, str(path), op.get("artifact_path"))
            if self.dir in path.parents:
                shutil.rmtree(path.parent, ignore_errors=True)
        elif op["op"] == "input":
            from mlflow.entities import Dataset, DatasetInput, InputTag

            tag = InputTag(key="mlflow.data.context", value=op["context"])
            client.log_inputs(run_id, datasets=[DatasetInput(dataset=Dataset(**op["dataset"]), tags=[tag])])
        elif op["op"] == "status":
            if op["status"] == "RUNNING":
                client.update_run(run_id, status="RUNNING")
            else:
                client.set_terminated(run_id, op["status"], end_time=op.get("end"))

    def _next(self) -> list[dict[str, Any]]:
        """The calls the next request carries (batches merged within MLflow's limits)."""
        first = self._queue[0]
        if first["op"] != "batch":
            return [first]
        ops, counts = [], [0, 0, 0]
        for op in self._queue:
            if op["op"] != "batch":
                break
            add = [len(op.get("metrics", [])), len(op.get("params", {})), len(op.get("tags", {}))]
            new = [c + a for c, a in zip(counts, add, strict=True)]
            if ops and (new[0] > _BATCH_METRICS or new[1] > _BATCH_PARAMS or new[2] > _BATCH_TAGS):
                break
            ops.append(op)
            counts = new
        return ops

    def deliver(self, until: Callable[[], bool] | None = None) -> int:
        """Send queued calls in order until none is left or ``until()`` says stop; returns how many
        are left. A failure waits (doubling) and tries again; a refused call is set aside."""
        attempt = 0
        while True:
            with self._cond:
                if not self._queue:
                    return 0
                ops = self._next()
            try:
                self._send(ops)
            except Exception as exc:  # noqa: BLE001 - the server away, or a call it refuses
                if _refused(exc):
                    self._set_aside(ops, exc)
                else:
                    self.last_error = first_line(exc)
                    self.failures += 1
                    attempt += 1
                    if until is not None and until():
                        return self.pending
                    with self._cond:
                        self._cond.wait(_POLICY.wait(attempt))
                    continue
            attempt = 0
            with self._cond:
                for _ in ops:
                    self._queue.popleft()
                self.state["seq"] = ops[-1]["seq"]
                self._progress = time.monotonic()
            self._save_state()
            if until is not None and until():
                return self.pending

    def _set_aside(self, ops: list[dict[str, Any]], exc: BaseException) -> None:
        self.last_error = first_line(exc)
        print(f"maelstrom-run: tracking refused a call: {self.last_error}", file=sys.stderr, flush=True)
        try:
            with open(self.dir / "refused.jsonl", "a", encoding="utf-8") as fh:
                for op in ops:
                    fh.write(json.dumps({**op, "error": self.last_error}, default=str) + "\n")
        except OSError:
            pass

    def start(self) -> None:
        """Deliver in a background thread from now on (the worker's side)."""
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="maelstrom-tracking", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop and not self._queue:
                    return
            self.deliver(until=lambda: self._stop)
            if self._stop:
                return

    def wait(self, timeout: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait up to ``timeout`` s for the queue to empty (or ``until()``); True when it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue and not (until is not None and until()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return True

    def close(self, timeout: float) -> int:
        """Let delivery go on while it makes progress (``timeout`` s without any: the server is
        away), stop the thread; returns calls left undelivered (kept for ``maelstrom runs sync``)."""
        with self._cond:
            self._progress = time.monotonic()
            while self._queue and time.monotonic() - self._progress < timeout:
                self._cond.wait(0.2)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, timeout))
        left = self.pending
        if not left:
            shutil.rmtree(self.dir / "artifacts", ignore_errors=True)
        self.unlock()
        return left


def sync(run_dir: Path | str, uri: str, timeout: float = 30.0) -> tuple[int, int, Outbox]:
    """Deliver what a finished job left in its journal; returns (sent, left, outbox)."""
    box = Outbox(run_dir, uri)
    box.lock()
    try:
        total = len(box._queue)
        deadline = time.monotonic() + timeout
        left = box.deliver(until=lambda: time.monotonic() > deadline)
        if not left:
            shutil.rmtree(box.dir / "artifacts", ignore_errors=True)
        return total - left, left, box
    finally:
        box.unlock()


def has_journal(run_dir: Path | str) -> bool:
    return (Path(run_dir) / FOLDER / "journal.jsonl").exists()
