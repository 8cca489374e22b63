"""What the REST gateway backends share (slurmrest, unicore, firecrest).

- **Errors.** :class:`GatewayError` is one line that names the backend and what to do;
  :func:`http_error` turns a refused request (401/403/404/5xx) into one.
- **Retries.** :func:`with_retries` repeats a call by the one retry policy of
  :mod:`maelstrom_run.core.retry` (``backend.retries`` tries), then gives up with a clear error.
- **Jobs without a shared filesystem** (unicore, firecrest). The job runs in a directory on the
  target that the submitting side reaches only through the gateway. What is uploaded is
  :func:`remote_inputs`: a copy of the spec whose ``run_dir`` is ``.`` and whose ``code_dir`` is
  relative (the worker resolves both against the directory of ``spec.yaml``), the pickled task of a
  Hydra job, and the code snapshot under ``code/``. The local run directory (``spec.run_dir``) stays
  the mirror: once a job has ended, :data:`MIRRORED` files are copied into it, so ``RunDir.read_result``
  and the Hydra launcher work as with a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from ..config.secrets import job_environment
from ..core.errors import BackendError
from ..core.retry import (
    RETRY_STATUSES,
    GaveUp,
    RetryPolicy,
    Transient,
    first_line,
    is_dns_failure,
    is_transient,
)
from ..core.rundir import JOB_RETURN, REQUEUES, RESULT
from ..core.spec import SPEC_FILE, RunSpec
from ..core.states import JobRef
from ..core.transfer import Progress, write_from
from .base import Backend, Rendered, StatusCache, Submitted
from .staging import repository_root, snapshot_files

T = TypeVar("T")

#: Files copied from the remote run directory into the local one once a job has ended.
MIRRORED = (RESULT, JOB_RETURN, REQUEUES)


class GatewayError(BackendError):
    """A REST gateway refused a request or cannot be reached (one line, with what to do)."""


def policy(conf: Any) -> RetryPolicy:
    """The retry policy of a backend config: ``retries`` tries in all (at least one), the first wait
    ``retry_delay`` seconds, doubling."""
    return RetryPolicy.tries_of(conf.retries, delay=float(conf.retry_delay))


def with_retries(call: Callable[[], T], *, backend: str, what: str, retry: RetryPolicy) -> T:
    """``call()``, tried again (:mod:`maelstrom_run.core.retry`) while the gateway cannot be reached;
    then, or for a host name that does not resolve, one line naming the backend."""
    try:
        return retry.call(call)
    except GaveUp as exc:
        raise GatewayError(
            f"backend {backend}: {what} failed, the gateway could not be reached after "
            f"{exc.tries} tries ({first_line(exc.last)}); check backend.url and the network, then "
            "retry (a sweep cut short continues with `maelstrom runs resume SWEEP_ID`)"
        ) from None
    except Exception as exc:
        if is_dns_failure(exc):
            raise GatewayError(
                f"backend {backend}: {what} failed, the gateway's host name does not resolve "
                f"({first_line(exc)}); check backend.url"
            ) from None
        raise


def http_error(backend: str, what: str, status: int, detail: str = "") -> GatewayError:
    """One line for a refused request, by HTTP status."""
    detail = first_line(detail) if detail else ""
    tail = f" ({detail})" if detail else ""
    if status in (401, 403):
        return GatewayError(
            f"backend {backend}: {what} was refused, HTTP {status}{tail}; the credentials in "
            "backend.credentials are wrong, expired or not allowed here"
        )
    if status == 404:
        return GatewayError(f"backend {backend}: {what}: not found on the gateway, HTTP 404{tail}")
    if status >= 500:
        return GatewayError(
            f"backend {backend}: {what} failed on the gateway, HTTP {status}{tail}; retry later "
            "(a sweep cut short continues with `maelstrom runs resume SWEEP_ID`)"
        )
    return GatewayError(f"backend {backend}: {what} was rejected, HTTP {status}{tail}")


# -- jobs without a shared filesystem ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Upload:
    """One file of a job's inputs: ``remote`` is relative to the job's remote directory."""

    remote: str
    source: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else Path(str(self.source)).read_bytes()

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(str(self.source))


def remote_inputs(
    spec: RunSpec, exclude: Sequence[str], snapshots: dict[Any, Any] | None = None
) -> list[Upload]:
    """What a job uploads: ``spec.yaml`` for the remote side, the Hydra payload, the code snapshot.

    A pure function of the spec and the working tree (the dry run lists exactly these).
    ``snapshots``: a dict kept for one submission, so a sweep lists its repository once.
    """
    snapshots = {} if snapshots is None else snapshots
    code: Path | None = Path(spec.code_dir) if spec.code_dir else None
    key = (spec.code_dir, spec.kind, tuple(exclude))
    if key not in snapshots:
        root = repository_root(code) if code is not None and spec.kind == "app" else None
        snapshots[key] = (root, snapshot_files(root, exclude) if root is not None else [])
    root, files = snapshots[key]
    remote_code = None
    if root is not None and code is not None:
        remote_code = os.path.normpath(os.path.join("code", os.path.relpath(code, root)))
    remote = dataclasses.replace(spec, run_dir=".", code_dir=remote_code or spec.code_dir)
    out = [Upload(SPEC_FILE, data=remote.to_yaml().encode())]
    if spec.payload:
        out.append(Upload(spec.payload, source=Path(spec.run_dir) / spec.payload))
    out += [Upload(f"code/{name}", source=root / name) for name in files if root is not None]
    return out


def submit_each(
    specs: Sequence[RunSpec],
    submit_one: Callable[[RunSpec], str],
    *,
    width: int,
    on_submitted: Submitted | None = None,
) -> list[str]:
    """``submit_one(spec)`` for every spec, ``width`` at once; job ids in the order of ``specs``.

    Each accepted job is reported through ``on_submitted`` in this (the calling) thread as it is
    accepted. After a refusal nothing new starts; the jobs in flight are waited for and reported,
    then the first error is raised, so ``maelstrom runs resume`` submits only the rest.
    """
    ids: dict[str, str] = {}
    errors: list[Exception] = []
    waiting = iter(specs)
    width = max(1, width)
    with ThreadPoolExecutor(max_workers=width) as pool:
        running: dict[Future[str], RunSpec] = {}
        while True:
            while len(running) < width and not errors and (spec := next(waiting, None)) is not None:
                running[pool.submit(submit_one, spec)] = spec
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec = running.pop(future)
                try:
                    job_id = future.result()
                except Exception as exc:  # raised once the jobs in flight are in
                    errors.append(exc)
                    continue
                ids[spec.run_id] = job_id
                if on_submitted:
                    on_submitted([spec], [job_id])
    if errors:
        raise errors[0]
    return [ids[s.run_id] for s in specs]


def write_response(response: Any, dest: Path, offset: int, progress: Progress | None) -> None:
    """An httpx streamed response into ``dest``: appended at ``offset`` when the server answered a
    Range request (206), else the whole file."""
    start = offset if response.status_code == 206 else 0
    write_from(dest, response.iter_bytes(1 << 20), offset=start, progress=progress)


class Reading:
    """A local file handed to an HTTP client as an upload body, counting what is read."""

    def __init__(self, fh: Any, progress: Progress | None = None) -> None:
        self.fh, self.progress = fh, progress

    def fileno(self) -> int:
        return int(self.fh.fileno())

    def read(self, size: int = -1) -> bytes:
        block = self.fh.read(size)
        if block and self.progress:
            self.progress(len(block))
        return block

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(1 << 20):
            yield block

    def close(self) -> None:
        self.fh.close()


#: ``missing=`` default of :meth:`GatewaySession.call`: a 404 raises.
RAISE: Any = object()


class GatewaySession(ABC):
    """One gateway as both a backend and its files class use it: the client, made once under a lock
    (refused credentials raise there, before any job is recorded), and every request through it,
    retried by the retry policy (``backend.retries``), a refusal as one line naming the backend.

    A gateway says how to make its client (:meth:`open`) and how to read a refusal (:meth:`refusal`).
    """

    def __init__(self, name: str, conf: Any) -> None:
        self.name, self.conf = name, conf
        self.retry = policy(conf)
        self._client: Any = None
        self._lock = threading.Lock()

    @abstractmethod
    def open(self) -> Any:
        """The connected client (requests through :meth:`call`); raise a clear error when refused."""

    @abstractmethod
    def refusal(self, exc: BaseException) -> tuple[int, str] | Exception | None:
        """``(HTTP status, the gateway's message)`` of a refused request, an error to raise instead,
        or None when ``exc`` is no refusal (it is raised as it is, or retried when transient)."""

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.open()
            return self._client

    def call(self, what: str, fn: Callable[[], T], *, missing: Any = RAISE) -> T:
        """``fn()``; retried while the gateway cannot be reached or says "later" (429, 502-504); a
        refusal as one line. With ``missing``, an HTTP 404 returns it instead of raising."""

        def once() -> T:
            try:
                return fn()
            except Exception as exc:
                refused = None if is_transient(exc) else self.refusal(exc)
                if refused is None:
                    raise
                if isinstance(refused, Exception):
                    raise refused from None
                status, detail = refused
                if status in RETRY_STATUSES:
                    raise Transient(f"HTTP {status}: {detail}") from None
                if status == 404 and missing is not RAISE:
                    return missing  # type: ignore[no-any-return]
                raise http_error(self.name, what, status, detail) from None

        return with_retries(once, backend=self.name, what=what, retry=self.retry)


class GatewayBackend(Backend):
    """What the UNICORE and FirecREST backends share: connecting before anything is recorded,
    retries with the backend's ``retries``/``retry_delay``, and a sweep submitted ``max_parallel``
    jobs at a time, each job's inputs from one listing of the repository.

    A subclass makes its :class:`GatewaySession` (``self.session``), renders with
    ``render(spec, snapshots)``, submits one job with ``_submit_one(spec, secrets, snapshots)`` and
    copies one file of an ended job into its local run directory with ``_fetch_job_file``.
    """

    #: The gateway's session class; each backend has one session, shared with its files.
    Session: type[GatewaySession]
    session: GatewaySession

    def __init__(self, conf: Any) -> None:
        super().__init__(conf)
        self.session = self.Session(self.name, conf)
        self._statuses = StatusCache()

    def connect(self) -> None:
        self.session.client()

    def _fetch_job_file(self, job: JobRef, name: str, dest: Path) -> bool:
        """Copy the job's ``name`` (relative to its directory on the target) to ``dest``; False when absent."""
        raise NotImplementedError

    def mirror(self, job: JobRef) -> None:
        """Copy the worker's result files of an ended job into the local run directory (each atomically)."""
        for name in MIRRORED:
            target = Path(job.run_dir) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{name}.part")
            if self._fetch_job_file(job, name, partial):
                os.replace(partial, target)

    def workers(self, n: int) -> int:
        """Threads for ``n`` requests: at most ``backend.max_parallel``."""
        return max(1, min(n, self.conf.max_parallel))

    def render(self, spec: RunSpec, snapshots: dict[Any, Any] | None = None) -> Rendered:
        raise NotImplementedError

    def render_many(self, specs: Sequence[RunSpec]) -> list[Rendered]:
        snapshots: dict[Any, Any] = {}  # the repository listed once
        return [self.render(s, snapshots) for s in specs]

    def _submit_one(self, spec: RunSpec, secrets: dict[str, str], snapshots: dict[Any, Any]) -> str:
        raise NotImplementedError

    def submit_many(self, specs: Sequence[RunSpec], on_submitted: Submitted | None = None) -> list[str]:
        if not specs:
            return []
        self.connect()  # refused credentials or an unreachable gateway: nothing is created
        secrets = job_environment([s.config for s in specs])
        snapshots: dict[Any, Any] = {}  # the repository listed once per submission
        for spec in specs:
            Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
            spec.write()
        return submit_each(
            specs,
            lambda spec: self._submit_one(spec, secrets, snapshots),
            width=self.workers(len(specs)),
            on_submitted=on_submitted,
        )
