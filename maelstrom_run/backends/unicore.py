"""The UNICORE backend: jobs and files through a site's UNICORE/X REST API, with pyunicore 2.x.

- **Connecting.** ``backend.url`` is the site's base URL (``https://HOST:PORT/SITE/rest/core``).
  ``backend.credentials`` holds secret references: ``username`` and ``password``, or ``token`` (an
  OIDC or other bearer access token). They are resolved when the backend first talks to the
  gateway, never for a dry run.
- **The job description** (:func:`job_description`) is a pure function of the backend config, the
  spec and its uploads, shown exactly by the dry run: ``bash job.sh`` where ``job.sh`` travels inline
  in the description and is the Slurm backend's batch script without ``#SBATCH`` lines (modules,
  venv, container, variables, pre/post commands, the worker), run in the job's working directory;
  ``Resources`` from ``backend.resources`` (:func:`resources`), ``Project`` the account, the
  ``login_pre_commands``/``login_post_commands`` as the user pre/post command on a login node,
  ``stdout.log``/``stderr.log``, the tags ``maelstrom-run``, run id and sweep id, and the run id as
  the name. ``Environment`` holds the plain ``backend.environment.variables`` and the secrets the
  job needs: their references in the dry run, their values in what is sent.
- **Submitting.** A job is created with ``haveClientStageIn``, its inputs
  (:func:`remote.remote_inputs`: ``spec.yaml``, the Hydra payload, the code snapshot under
  ``code/``) are uploaded into its working directory, then it is started. A sweep submits
  ``backend.max_parallel`` jobs at once; each accepted job is reported as it is accepted, and a
  refusal part-way raises once the jobs in flight are in, so ``maelstrom runs resume SWEEP_ID``
  submits only the rest (after :meth:`UnicoreBackend.adopt` has found, by tag, the jobs the
  gateway accepted but the registry never recorded).
- **Job ids are job URLs** (``BASE/jobs/ID``): status, logs, cancel and download need nothing else.
  The local run directory (``spec.run_dir``) is the mirror: once a job has ended, the worker's
  :data:`remote.MIRRORED` files are copied into it from the working directory.
- **States** map once (:data:`STATES`); a successful job with a non-zero exit code failed; a job
  aborted from here (the ``cancelled`` marker in the local run directory) or reported aborted is
  cancelled; a job the gateway no longer knows (HTTP 404) is unknown, unless its result was
  mirrored before.
- **Files** (``maelstrom data copy juwels:/p/...``): :class:`UnicoreFiles`, an absolute path on the
  storage whose mount point is its longest prefix; downloads resume with HTTP ``Range``, an upload
  always sends the whole file (UNICORE's PUT replaces it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..config.schema import UnicoreConf
from ..config.secrets import is_reference, job_environment, resolve_mapping
from ..config.units import time_limit_seconds
from ..core.errors import ConfigError
from ..core.rundir import RunDir
from ..core.spec import SPEC_FILE, RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus, reconcile
from ..core.transfer import Progress
from . import remote
from .base import Rendered
from .files import RemoteEntry, RemoteFiles
from .script import Target, parallel, render_batch_script, worker_python

T = TypeVar("T")

#: UNICORE job states onto the contract's states, once.
STATES: dict[str, JobState] = {
    "UNDEFINED": JobState.UNKNOWN,
    "READY": JobState.QUEUED,
    "STAGINGIN": JobState.QUEUED,
    "QUEUED": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "STAGINGOUT": JobState.RUNNING,
    "SUCCESSFUL": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
}
#: Every job submitted from here carries this tag (and its run id, and its sweep id).
TAG = "maelstrom-run"
JOB_SCRIPT = "job.sh"
STDOUT, STDERR = "stdout.log", "stderr.log"
#: Seconds pyunicore waits on one HTTP operation.
TIMEOUT_S = 60


# -- the job description (pure) --------------------------------------------------------------------


def resources(conf: UnicoreConf) -> dict[str, str]:
    """UNICORE ``Resources`` from ``backend.resources`` (only what is set; values as strings).

    ``CPUsPerNode`` counts every CPU of a node's tasks (``tasks_per_node`` x ``cpus_per_task``);
    the job script lays the tasks out for ``srun`` itself (see :func:`job_script`).
    """
    res = conf.resources
    out: dict[str, str] = {}
    if res.queue:
        out["Queue"] = str(res.queue)
    if res.time:
        out["Runtime"] = str(time_limit_seconds(res.time))
    out["Nodes"] = str(res.nodes)
    tasks, cpus = res.tasks_per_node, res.cpus_per_task
    if cpus or tasks > 1:
        out["CPUsPerNode"] = str(tasks * (cpus or 1))
    if res.gpus_per_node:
        out["GPUsPerNode"] = str(res.gpus_per_node)
    for key, name in (
        ("memory", "Memory"),
        ("reservation", "Reservation"),
        ("constraint", "NodeConstraints"),
        ("qos", "QoS"),
    ):
        if value := getattr(res, key):
            out[name] = str(value)
    return out


def job_script(conf: UnicoreConf, job_name: str, code_dir: str) -> str:
    """``job.sh``: the Slurm backend's batch script for the job's working directory, without directives.

    ``code_dir`` is the uploaded snapshot (relative to the working directory), or the absolute
    directory of a spec that uploads no code (a Hydra task): the job runs there when the target
    has it (a shared filesystem), else in its working directory. UNICORE asks the batch system
    for ``CPUsPerNode`` tasks per node; when the worker runs as a job step (several tasks, or a
    container) the script tells ``srun`` the real task layout.
    """
    res = conf.resources
    first = []
    if os.path.isabs(code_dir):  # nothing uploaded: where the target shares the directory, run there
        first.append(f"[ -d {shlex.quote(code_dir)} ] && cd {shlex.quote(code_dir)}")
    if parallel(conf) or conf.environment.apptainer.image:
        nodes, tasks = res.nodes, res.tasks_per_node
        layout = f"export SLURM_NTASKS={nodes * tasks} SLURM_NTASKS_PER_NODE={tasks}"
        if res.cpus_per_task:
            cpus = res.cpus_per_task
            layout += f" SLURM_CPUS_PER_TASK={cpus} SRUN_CPUS_PER_TASK={cpus}"
        first.append(layout)
    env = dataclasses.replace(conf.environment, pre_commands=[*first, *conf.environment.pre_commands])
    return render_batch_script(
        dataclasses.replace(conf, environment=env),
        job_name=job_name,
        target=Target(),
        output="",
        code_dir="." if os.path.isabs(code_dir) else code_dir,
        python=worker_python(conf),
        sbatch=False,
    )


def job_description(
    conf: UnicoreConf,
    spec: RunSpec,
    inputs: Sequence[remote.Upload],
    environment: Mapping[str, str],
) -> dict[str, Any]:
    """The UNICORE job description of a spec; ``environment``: the secrets the job needs.

    ``inputs`` are the job's uploads (:func:`remote.remote_inputs`); the job script changes into
    the uploaded code snapshot, as the uploaded spec names it.
    """
    env = conf.environment
    account = conf.resources.account
    uploaded = next(u for u in inputs if u.remote == SPEC_FILE)
    code_dir = RunSpec.parse(uploaded.read().decode()).code_dir
    script = job_script(conf, spec.run_id, code_dir or ".")
    variables = {k: str(v) for k, v in env.variables.items() if not is_reference(v)}
    description: dict[str, Any] = {
        "Name": spec.run_id,
        "Executable": "bash",
        "Arguments": [JOB_SCRIPT],
        "Environment": dict(sorted({**variables, **environment}.items())),
        "Imports": [{"From": f"inline://{JOB_SCRIPT}", "To": JOB_SCRIPT, "Data": script.splitlines()}],
        "Resources": resources(conf),
        "Stdout": STDOUT,
        "Stderr": STDERR,
        "Tags": [TAG, spec.run_id, *([spec.sweep_id] if spec.sweep_id else [])],
        "haveClientStageIn": "true",
    }
    if account:
        description["Project"] = str(account)
    for key, name in (("login_pre_commands", "precommand"), ("login_post_commands", "postcommand")):
        commands = [str(c) for c in getattr(env, key)]
        if commands:
            description[f"User {name}"] = " && ".join(commands)
            description[f"RunUser{name.capitalize()}OnLoginNode"] = "true"
    return description


# -- talking to the gateway ------------------------------------------------------------------------


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused request (pyunicore raises ``HTTPError("401 Server Error: ...")``)."""
    response = getattr(exc, "response", None) if type(exc).__name__ == "HTTPStatusError" else None
    if response is not None:
        return int(response.status_code)
    m = re.match(r"^(\d{3}) Server Error", str(exc))
    return int(m.group(1)) if m else None


def _detail(exc: BaseException) -> str:
    """The gateway's own error message, without the URL pyunicore appends."""
    text = re.sub(r"^\d{3} Server Error: ", "", str(exc))
    return re.sub(r" for url: \S+$", "", text)


@contextmanager
def _stream(transport: Any, url: str, offset: int = 0) -> Iterator[Any]:
    """A streamed file download (``Range`` from ``offset``); errors raised as pyunicore raises them."""
    headers = {"Accept": "application/octet-stream"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with transport.get_stream(url=url, headers=headers) as response:
        if response.status_code >= 400:
            response.read()
            transport.check_error(response)
        yield response


class UnicoreSession(remote.GatewaySession):
    """The pyunicore site client of a backend, and the requests to its storages."""

    conf: UnicoreConf

    def refusal(self, exc: BaseException) -> tuple[int, str] | Exception | None:
        from pyunicore.credentials import AuthenticationFailedException

        if isinstance(exc, AuthenticationFailedException):
            return 401, "the gateway took the credentials as anonymous"
        status = _http_status(exc)
        return None if status is None else (status, _detail(exc))

    def credential(self) -> Any:
        from pyunicore import credentials

        given = dict(self.conf.credentials)
        unknown = sorted(set(given) - {"username", "password", "token"})
        if unknown:
            raise ConfigError(
                f"backend.credentials.{unknown[0]}: unknown for a UNICORE backend; give username and "
                "password, or token"
            )
        values = resolve_mapping(given)
        if values.get("token"):
            return credentials.OIDCToken(values["token"])
        if values.get("username") and "password" in values:
            return credentials.UsernamePassword(values["username"], values["password"])
        raise ConfigError(
            f"backend.credentials: backend {self.name} needs username and password, or token, as secret "
            "references (e.g. password: ${secret:env:JUDOOR_PASSWORD})"
        )

    def open(self) -> Any:
        """The site client (a refused login raises here, before any job)."""
        from pyunicore.client import Client, Transport

        url = self.conf.url.rstrip("/")
        import httpx

        # one line per request is httpx's business, not the output of a run (Hydra apps log INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # pyunicore opens a new httpx client per request: one TLS context for all of them
        # (verifying the gateway's certificate) instead of loading the CA bundle each time
        transport = Transport(self.credential(), verify=httpx.create_ssl_context(), timeout=TIMEOUT_S)
        return self.call(f"connecting to {url}", lambda: Client(transport, url))

    def read(self, storage: Any, name: str) -> bytes | None:
        """A file of a storage, None when there is none."""

        def fetch() -> bytes:
            with _stream(storage.transport, storage._to_file_url(name)) as response:
                return bytes(response.read())

        data: bytes | None = self.call(f"reading {name}", fetch, missing=None)
        return data

    def listing(self, storage: Any, path: str) -> list[tuple[str, int]]:
        """Every file under ``path`` of a storage: (path from the storage root, without the leading /, size)."""
        listing = self.call(f"listing {path}", lambda: storage.contents(path))
        out: list[tuple[str, int]] = []
        for name, meta in sorted((listing.get("content") or {}).items()):
            if meta.get("isDirectory"):
                out += self.listing(storage, name)
            else:
                out.append((name.strip("/"), int(meta.get("size") or 0)))
        return out

    def fetch(
        self, transport: Any, url: str, dest: Path, offset: int, progress: Progress | None, what: str
    ) -> None:
        """Download ``url`` into ``dest`` from ``offset`` (appending), or whole when the server sends all."""

        def once() -> bool:
            with _stream(transport, url, offset) as response:
                remote.write_response(response, dest, offset, progress)
            return True

        if self.call(f"downloading {what}", once, missing=None) is None:
            raise FileNotFoundError(2, "no such file on the gateway", what)


class UnicoreBackend(remote.GatewayBackend):
    Conf = UnicoreConf
    Session = UnicoreSession
    conf: UnicoreConf
    session: UnicoreSession

    def __init__(self, conf: UnicoreConf) -> None:
        super().__init__(conf)
        self._workdirs: dict[str, str] = {}

    # -- connection and errors -------------------------------------------------------------------

    def _properties(self, job_url: str) -> dict[str, Any] | None:
        """A job's properties, None when the gateway no longer knows it."""
        from pyunicore.client import Job

        job = Job(self.session.client().transport, job_url, cache_time=0)
        props = self.session.call(f"reading job {job_url}", lambda: job.properties, missing=None)
        if props is not None:
            self._workdirs[job_url] = props["_links"]["workingDirectory"]["href"]
        return props

    def _workdir(self, job: JobRef) -> Any:
        """The job's working directory (a pyunicore Storage); a job the gateway lost raises."""
        from pyunicore.client import Storage

        if job.job_id not in self._workdirs and self._properties(job.job_id) is None:
            raise remote.http_error(
                self.name, f"run {job.run_id}", 404, f"the gateway no longer knows job {job.job_id}"
            )
        return Storage(self.session.client().transport, self._workdirs[job.job_id], cache_time=0)

    # -- rendering -------------------------------------------------------------------------------

    def render(self, spec: RunSpec, snapshots: dict[Any, Any] | None = None) -> Rendered:
        inputs = remote.remote_inputs(spec, self.conf.exclude, snapshots)
        secrets = job_environment([spec.config], resolved=False)
        description = job_description(self.conf, spec, inputs, secrets)
        return Rendered(
            text=json.dumps(description, indent=2),
            files=[u.remote for u in inputs],
            meta={"syntax": "json"},
        )

    # -- submitting ------------------------------------------------------------------------------

    def _submit_one(self, spec: RunSpec, secrets: Mapping[str, str], snapshots: dict[Any, Any]) -> str:
        """Create the job, upload its inputs, start it; a job that cannot be started is removed."""
        from pyunicore.client import Storage

        client = self.session.client()
        inputs = remote.remote_inputs(spec, self.conf.exclude, snapshots)
        description = job_description(self.conf, spec, inputs, secrets)
        job = self.session.call(
            f"submitting {spec.run_id}", lambda: client.new_job(description, autostart=False)
        )
        try:
            props = self.session.call(f"reading job {job.resource_url}", lambda: job.properties)
            storage = Storage(client.transport, props["_links"]["workingDirectory"]["href"])
            for item in inputs:
                self.session.call(
                    f"uploading {item.remote} of {spec.run_id}", lambda item=item: self._put(storage, item)
                )
            start = props["_links"]["action:start"]["href"]
            self.session.call(f"starting {spec.run_id}", lambda: client.transport.post(url=start, json={}))
        except BaseException:
            try:
                job.delete()
            except Exception:  # noqa: BLE001 - the submission's own error is the one to report
                pass
            raise
        return str(job.resource_url)

    @staticmethod
    def _put(storage: Any, item: remote.Upload) -> None:
        if item.data is not None:
            storage.put(item.data, item.remote)
            return
        with open(str(item.source), "rb") as fh:
            storage.put(remote.Reading(fh, None), item.remote)

    def adopt(self, specs: Sequence[RunSpec]) -> dict[str, str]:
        """Jobs the gateway has for these runs (by the run id tag); a job never started is removed."""
        if not specs:
            return {}
        client = self.session.client()

        def find(spec: RunSpec) -> str | None:
            jobs = self.session.call(
                f"listing jobs of {spec.run_id}", lambda: client.get_jobs(tags=[spec.run_id])
            )
            found = None
            for job in jobs:
                props = self._properties(job.resource_url)
                if props is None or not (
                    props.get("name") == spec.run_id or spec.run_id in (props.get("tags") or [])
                ):
                    continue
                if props.get("status") == "READY":  # created, inputs perhaps incomplete, never started
                    self.session.call(f"removing {job.resource_url}", job.delete, missing=None)
                elif found is None:
                    found = str(job.resource_url)
            return found

        with ThreadPoolExecutor(max_workers=self.workers(len(specs))) as pool:
            found = list(pool.map(find, specs))
        return {s.run_id: url for s, url in zip(specs, found, strict=True) if url}

    # -- status ----------------------------------------------------------------------------------

    def status(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        if not jobs:
            return {}

        def query() -> dict[str, JobStatus]:
            with ThreadPoolExecutor(max_workers=self.workers(len(jobs))) as pool:
                out = dict(zip([j.run_id for j in jobs], pool.map(self._status_one, jobs), strict=True))
            return out

        return self._statuses.get(jobs, query)

    def _status_one(self, job: JobRef) -> JobStatus:
        props = self._properties(job.job_id)
        forgotten = f"the gateway no longer knows job {job.job_id}"
        if props is None:  # perhaps ended, then cleaned up
            return reconcile(None, job.run_dir, forgotten=forgotten)
        native = str(props.get("status") or "UNDEFINED")
        state = STATES.get(native, JobState.UNKNOWN)
        code = _exit_code(props.get("exitCode"))
        why = str(props.get("statusMessage") or "")
        if state.terminal:
            result = RunDir(job.run_dir).read_result()
            if not (result and result.terminal):
                self.mirror(job)
            if state is JobState.SUCCEEDED and code not in (None, 0):
                state, why = JobState.FAILED, f"exit code {code}"
            if "aborted" in why.lower():
                state = JobState.CANCELLED
        return reconcile(
            state,
            job.run_dir,
            name=native,
            exit_code=code,
            why=why if state is JobState.FAILED else "",
            forgotten=forgotten,
        )

    # -- logs, cancel, download ------------------------------------------------------------------

    def _fetch_job_file(self, job: JobRef, name: str, dest: Path) -> bool:
        data = self.session.read(self._workdir(job), name)
        if data is None:
            return False
        dest.write_bytes(data)
        return True

    def logs(self, job: JobRef, stream: str = "stdout") -> str:
        data = self.session.read(self._workdir(job), STDOUT if stream == "stdout" else STDERR)
        if data is None and self._properties(job.job_id) is None:  # no log yet, or no job any more
            raise remote.http_error(
                self.name, f"logs of {job.run_id}", 404, f"the gateway no longer knows job {job.job_id}"
            )
        return data.decode(errors="replace") if data else ""

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Abort the jobs that have not ended (marked cancelled in their local run directories)."""
        if not jobs:
            return
        transport = self.session.client().transport

        def abort(job: JobRef) -> None:
            props = self._properties(job.job_id)
            if props is None or STATES.get(str(props.get("status")), JobState.UNKNOWN).terminal:
                return
            url = props["_links"]["action:abort"]["href"]
            done = self.session.call(
                f"cancelling {job.run_id}", lambda: transport.post(url=url, json={}), missing=None
            )
            if done is not None:  # aborted (a job the gateway lost is not marked)
                Path(job.run_dir).mkdir(parents=True, exist_ok=True)
                RunDir(job.run_dir).mark_cancelled()

        with ThreadPoolExecutor(max_workers=self.workers(len(jobs))) as pool:
            list(pool.map(abort, jobs))
        self._statuses.clear()

    def download(self, job: JobRef, dest: Path) -> Path:
        """The job's working directory (without the ``code/`` snapshot) into ``dest/RUN_ID``."""
        storage = self._workdir(job)
        target = Path(dest) / job.run_id
        for name, _ in self.session.listing(storage, "/"):
            if name == "code" or name.startswith("code/"):
                continue
            url = storage._to_file_url(name)
            self.session.fetch(storage.transport, url, target / name, 0, None, name)
        target.mkdir(parents=True, exist_ok=True)
        return target

    def files(self) -> UnicoreFiles:
        return UnicoreFiles(self.session)


def _exit_code(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except ValueError:
        return None


class UnicoreFiles(RemoteFiles):
    """Files on a UNICORE site: an absolute path lies on the storage whose mount point is its longest prefix."""

    resumable_download = True
    resumable_upload = False  # a PUT replaces the whole file

    def __init__(self, session: UnicoreSession) -> None:
        self.session = session
        self._mounts: list[tuple[str, Any]] | None = None

    def mounts(self) -> list[tuple[str, Any]]:
        """``(mount point, storage)`` of the site's storages, longest mount point first."""
        if self._mounts is None:
            client = self.session.client()
            storages = self.session.call("listing the storages", lambda: client.get_storages())
            mounts = []
            for storage in storages:
                props = self.session.call(f"reading {storage.resource_url}", lambda s=storage: s.properties)
                if props.get("mountPoint"):
                    mounts.append((str(props["mountPoint"]).rstrip("/") or "/", storage))
            self._mounts = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
        return self._mounts

    def _locate(self, path: str) -> tuple[str, Any, str]:
        """(mount point, storage, path on the storage) of an absolute path."""
        for mount, storage in self.mounts():
            if mount == "/" or path == mount or path.startswith(mount + "/"):
                return mount, storage, path[len(mount) :].strip("/") if mount != "/" else path.strip("/")
        known = ", ".join(m for m, _ in self.mounts()) or "none"
        raise ConfigError(
            f"backend {self.session.name}: {path} is on none of the gateway's storages (mount points: "
            f"{known}); give a path under one of them"
        )

    def _stat(self, path: str) -> dict[str, Any] | None:
        _, storage, rel = self._locate(path)
        url = storage._to_file_url(rel)
        props: dict[str, Any] | None = self.session.call(
            f"reading {path}", lambda: storage.transport.get(url=url), missing=None
        )
        return props

    def walk(self, path: str) -> list[RemoteEntry]:
        props = self._stat(path)
        if props is None:
            raise FileNotFoundError(path)
        if not props.get("isDirectory"):
            return [RemoteEntry(path, int(props.get("size") or 0))]
        mount, storage, rel = self._locate(path)
        prefix = "" if mount == "/" else mount
        return [RemoteEntry(f"{prefix}/{name}", size) for name, size in self.session.listing(storage, rel)]

    def size(self, path: str) -> int | None:
        props = self._stat(path)
        return None if props is None or props.get("isDirectory") else int(props.get("size") or 0)

    def download(self, path: str, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> None:
        _, storage, rel = self._locate(path)
        self.session.fetch(storage.transport, storage._to_file_url(rel), Path(dest), offset, progress, path)

    def upload(self, source: Path, path: str, *, offset: int = 0, progress: Progress | None = None) -> None:
        _, storage, rel = self._locate(path)

        def send() -> None:
            with open(source, "rb") as fh:
                storage.put(remote.Reading(fh, progress), rel)

        self.session.call(f"uploading {path}", send)
