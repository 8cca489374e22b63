"""The FirecREST backend: jobs and files through a site's FirecREST v2 API, with pyfirecrest.

- **Connecting.** ``backend.url`` is the FirecREST v2 base URL (``https://HOST/.../firecrest/v2``),
  ``backend.machine`` the system's name there, ``backend.token_url`` the OIDC token endpoint.
  ``backend.credentials`` holds secret references ``client_id`` and ``client_secret`` (the
  client-credentials grant; pyfirecrest renews the access token). They are resolved when the backend
  first talks to the gateway, never for a dry run. Connecting (``GET /status/systems``, then
  ``GET /status/SYSTEM/userinfo``) checks them, the system name, that the client may use the system
  and, when the gateway lists accounts, ``resources.account``, before anything is created.
- **The job directory** on the target is ``backend.workdir/RUN_ID``. Its inputs
  (:func:`remote.remote_inputs`: ``spec.yaml``, the Hydra payload, the code snapshot under ``code/``)
  travel as one gzip'd tar archive: ``mkdir``, upload (a file of 1 MiB or more goes through
  FirecREST's staged transfer, as pyfirecrest does it), ``extract``, ``rm`` of the archive.
- **The request** (:meth:`FirecrestBackend.render`, shown exactly by the dry run) is
  ``POST /compute/SYSTEM/jobs`` with the job directory as working directory, the Slurm backend's
  batch script for that directory (:func:`script.render_batch_script`: ``#SBATCH`` lines from
  ``backend.resources``, modules, venv, container, variables, the worker) and, in ``env``, the
  secrets the job needs: named by their references in the dry run, their values only in what is sent.
- **Submitting.** One job per run; a sweep has ``backend.max_parallel`` runs uploading and submitting
  at once. Each accepted job is reported as it is accepted; a refusal part-way raises once the jobs
  in flight are in, so ``maelstrom runs resume SWEEP_ID`` submits only the rest, after
  :meth:`FirecrestBackend.adopt` has found, by job name (= run id) in the job listing, the jobs
  the gateway accepted but the registry never recorded.
- **Job ids** are ``JOBID@JOBDIR``: the Slurm job id and the job directory on the target (see
  :func:`job_ref`), so status, logs, cancel and download need nothing else.
- **Status** is one ``GET /compute/SYSTEM/jobs`` per call (a job missing from it is asked for by
  id); Slurm states map through :data:`slurm.STATES`. Once a job has ended, the worker's
  :data:`remote.MIRRORED` files are copied into the local run directory (``spec.run_dir``). A job
  the gateway no longer knows is unknown, unless its result was mirrored before; a job cancelled
  from here (the ``cancelled`` marker in the local run directory) is cancelled.
- **Logs** are ``stdout.log`` and ``stderr.log`` of the job directory (``ops/view``, the first
  5 MiB); **cancel** is ``DELETE /compute/SYSTEM/jobs/JOBID``; **download** copies the job directory
  without ``code/``.
- **Files** (``maelstrom data copy daint:/scratch/...``): :class:`FirecrestFiles` over ``ls``,
  ``stat``, download and upload. A large download is staged by the gateway and fetched from its
  presigned URL with HTTP ``Range``, so it resumes; an upload always sends the whole file.

Only the v2 API is spoken: FirecREST v1 has other endpoints and an asynchronous task model for
every call, and the sites that ran it move to v2.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import posixpath
import shlex
import stat
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from ..config.schema import FirecrestConf
from ..config.secrets import job_environment, resolve_mapping
from ..core.errors import ConfigError
from ..core.retry import RETRY_STATUSES, Transient
from ..core.rundir import RunDir
from ..core.spec import SPEC_FILE, RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus, reconcile
from ..core.transfer import Progress
from . import remote
from .base import Rendered, wait_until_stopped
from .files import RemoteEntry, RemoteFiles
from .script import Target, render_batch_script, worker_python
from .slurm import STATES, WHY

T = TypeVar("T")

#: The archive of a job's inputs while it is uploaded (removed once unpacked).
ARCHIVE = ".maelstrom-inputs.tar.gz"
STDOUT, STDERR = "stdout.log", "stderr.log"
#: Seconds pyfirecrest waits on one HTTP request.
TIMEOUT_S = 60
#: How far back the job listing looks for jobs that have ended.
LISTING_WINDOW = "7d"


def job_ref(job_id: str, job_dir: str) -> str:
    """The job id the registry keeps: ``JOBID@JOBDIR``."""
    return f"{job_id}@{job_dir}"


def parse_job_ref(ref: str) -> tuple[str, str]:
    """``(Slurm job id, job directory on the target)`` of a job id made by :func:`job_ref`."""
    job_id, sep, job_dir = ref.partition("@")
    if not sep or not job_id or not job_dir.startswith("/"):
        raise ConfigError(f"job id {ref!r} is not a FirecREST job id of maelstrom-run (JOBID@/job/dir)")
    return job_id, job_dir


def _archive(inputs: Sequence[remote.Upload]) -> bytes:
    """The job's inputs as one gzip'd tar archive, paths relative to the job directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in inputs:
            if item.source is not None:
                tar.add(str(item.source), arcname=item.remote, recursive=False)
                continue
            data = item.read()
            info = tarfile.TarInfo(item.remote)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _native(info: Mapping[str, Any] | None) -> str:
    """The Slurm state of a job listing entry (``"CANCELLED by 0"`` -> ``CANCELLED``)."""
    return (str((info or {}).get("status", {}).get("state") or "").split() or [""])[0]


def _detail(response: Any) -> str:
    """The gateway's own message of a refused request (FirecREST ``message``, OIDC ``error_description``)."""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - not JSON: the text is the message
        return str(getattr(response, "text", "") or "")[:300]
    if isinstance(body, dict):
        for key in ("message", "error_description", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:300]


class FirecrestSession(remote.GatewaySession):
    """The pyfirecrest v2 client of a backend, and the file requests through it."""

    conf: FirecrestConf

    @property
    def system(self) -> str:
        return self.conf.machine

    @property
    def account(self) -> str | None:
        account = self.conf.resources.account
        return str(account) if account else None

    def refusal(self, exc: BaseException) -> tuple[int, str] | Exception | None:
        from firecrest import FirecrestException
        from firecrest.FirecrestException import MultipartUploadException, TransferJobFailedException

        if isinstance(exc, FirecrestException):
            response = exc.responses[-1] if exc.responses else None
            status = int(getattr(response, "status_code", 0) or 0)
            return status, _detail(response) if response is not None else str(exc)
        if isinstance(exc, TransferJobFailedException | MultipartUploadException):
            return remote.GatewayError(
                f"backend {self.name}: a transfer failed in the gateway ({remote.first_line(exc)})"
            )
        return None

    def credentials(self) -> dict[str, str]:
        given = dict(self.conf.credentials)
        unknown = sorted(set(given) - {"client_id", "client_secret"})
        if unknown:
            raise ConfigError(
                f"backend.credentials.{unknown[0]}: unknown for a FirecREST backend; give client_id and "
                "client_secret"
            )
        values = resolve_mapping(given)
        if not (values.get("client_id") and values.get("client_secret")):
            raise ConfigError(
                f"backend.credentials: backend {self.name} needs client_id and client_secret as secret "
                "references (e.g. client_secret: ${secret:env:FIRECREST_CLIENT_SECRET})"
            )
        return values

    def open(self) -> Any:
        """The client, checked once: the system exists, the client may use it and charge the account."""
        from firecrest import ClientCredentialsAuth
        from firecrest.v2 import Firecrest

        url, token_url = self.conf.url.rstrip("/"), self.conf.token_url
        system = self.system
        credentials = self.credentials()
        # one line per request is httpx's business, not the output of a run (Hydra apps log INFO)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        auth = ClientCredentialsAuth(credentials["client_id"], credentials["client_secret"], token_url)
        auth.timeout = TIMEOUT_S
        auth.disable_client_logging = True
        client = Firecrest(firecrest_url=url, authorization=auth)
        client.timeout = TIMEOUT_S
        client.disable_client_logging = True
        client.num_retries_rate_limit = 5
        systems = self.call(f"connecting to {url} (signing in at {token_url})", client.systems)
        names = [str(s.get("name")) for s in systems or []]
        if system not in names:
            raise ConfigError(
                f"backend.machine: {system!r} is not a system of {url} (systems: "
                f"{', '.join(names) or 'none'})"
            )
        # the client may use the system (403 otherwise) and charge the account
        info = self.call(f"signing in to {system}", lambda: client.userinfo(system))
        accounts = sorted(str(a.get("name")) for a in info.get("accounts") or [])
        if accounts and self.account and self.account not in accounts:
            raise ConfigError(
                f"backend.resources.account: {self.account!r} is not an account you may charge on "
                f"{system} (accounts: {', '.join(accounts)})"
            )
        return client

    def put(
        self, open_data: Callable[[], IO[bytes]], size: int, directory: str, filename: str, what: str
    ) -> None:
        """Upload ``size`` bytes as ``directory/filename`` (staged by the gateway from 1 MiB on)."""
        client, system, account = self.client(), self.system, self.account

        def send() -> None:
            data = open_data()
            try:
                client.upload(system, data, directory, filename, account=account, file_size=size)
            finally:
                close = getattr(data, "close", None)
                if close is not None:
                    close()

        self.call(what, send)

    def fetch(self, path: str, dest: Path, offset: int, progress: Progress | None) -> None:
        """Copy ``path`` to ``dest``: a small file whole, a large one staged and read from ``offset`` on.

        A missing ``path`` raises FileNotFoundError.
        """
        client, system, account = self.client(), self.system, self.account
        dest.parent.mkdir(parents=True, exist_ok=True)
        operation = self.call(
            f"downloading {path}",
            lambda: client.download(system, path, str(dest), account=account, blocking=False),
        )
        if operation is None:  # small: pyfirecrest wrote the whole file
            if progress:
                progress(max(dest.stat().st_size - offset, 0))
            return
        self.call(f"staging {path} for download", operation.wait_for_transfer_job)
        info = operation.transfer_data
        directives = info.get("transferDirectives") or {}
        url = info.get("downloadUrl") or directives.get("download_url") or directives.get("downloadUrl")
        if not url:
            raise remote.GatewayError(
                f"backend {self.name}: downloading {path}: the gateway staged it but named no download URL"
            )
        self.call(f"downloading {path}", lambda: self.ranged_get(str(url), dest, offset, progress))

    def ranged_get(self, url: str, dest: Path, offset: int, progress: Progress | None) -> None:
        """GET a staged file's presigned URL into ``dest`` from ``offset`` (or whole when not served in part)."""
        import httpx

        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT_S) as response:
            if response.status_code in RETRY_STATUSES:
                raise Transient(f"HTTP {response.status_code} from the staging area")
            if response.status_code >= 400:
                response.read()
                raise remote.http_error(
                    self.name, "reading the staged file", response.status_code, response.text[:300]
                )
            remote.write_response(response, dest, offset, progress)

    def stat(self, path: str) -> dict[str, Any] | None:
        client, system = self.client(), self.system
        info: dict[str, Any] | None = self.call(
            f"reading {path}", lambda: client.stat(system, path, dereference=True), missing=None
        )
        return info


class FirecrestBackend(remote.GatewayBackend):
    Conf = FirecrestConf
    Session = FirecrestSession
    conf: FirecrestConf
    session: FirecrestSession

    # -- configuration ---------------------------------------------------------------------------

    @property
    def system(self) -> str:
        return self.conf.machine

    def job_dir(self, spec: RunSpec) -> str:
        """The job directory on the target: ``backend.workdir/RUN_ID``."""
        workdir = self.conf.workdir or ""
        if not workdir.startswith("/"):
            raise ConfigError(
                f"backend.workdir: backend {self.name} needs an absolute directory on {self.conf.machine} "
                f"for the job directories (e.g. /scratch/USER/maelstrom), not {workdir or 'null'!r}"
            )
        return posixpath.join(posixpath.normpath(workdir), spec.run_id)

    # -- connection and errors -------------------------------------------------------------------

    # -- rendering -------------------------------------------------------------------------------

    def _script(self, spec: RunSpec, job_dir: str, inputs: Sequence[remote.Upload]) -> str:
        """The batch script for the job directory; it changes into the uploaded code snapshot.

        A spec that uploads no code (a Hydra task) names an absolute directory: the job runs
        there when the target has it (a shared filesystem), else in its job directory.
        """
        uploaded = next(u for u in inputs if u.remote == SPEC_FILE)
        code_dir = RunSpec.parse(uploaded.read().decode()).code_dir or "."
        env = self.conf.environment
        if posixpath.isabs(code_dir):
            first = f"[ -d {shlex.quote(code_dir)} ] && cd {shlex.quote(code_dir)}"
            env = dataclasses.replace(env, pre_commands=[first, *env.pre_commands])
            code_dir = job_dir
        return render_batch_script(
            dataclasses.replace(self.conf, environment=env),
            job_name=spec.run_id,
            target=Target(run_dir=job_dir),
            output=posixpath.join(job_dir, "slurm-%j.out"),
            code_dir=posixpath.normpath(posixpath.join(job_dir, code_dir)),
            python=worker_python(self.conf),
        )

    def render(self, spec: RunSpec, snapshots: dict[Any, Any] | None = None) -> Rendered:
        job_dir = self.job_dir(spec)
        inputs = remote.remote_inputs(spec, self.conf.exclude, snapshots)
        script = self._script(spec, job_dir, inputs)
        secrets = job_environment([spec.config], resolved=False)
        url = self.conf.url.rstrip("/")
        lines = [
            "# The FirecREST v2 request (secrets by reference here, by value in what is sent):",
            f"#   POST {url}/compute/{self.conf.machine}/jobs",
            f"#   job.working_directory: {job_dir}",
            "#   job.env: " + (", ".join(f"{k}={v}" for k, v in sorted(secrets.items())) or "(none)"),
            "#   job.script: the batch script below",
            f"# Before it the files listed below are uploaded to {job_dir} as one archive and unpacked there.",
            "",
        ]
        return Rendered(
            text="\n".join(lines) + script,
            files=[posixpath.join(job_dir, u.remote) for u in inputs],
            meta={"job_dir": job_dir},
        )

    # -- submitting ------------------------------------------------------------------------------

    def _submit_one(self, spec: RunSpec, secrets: Mapping[str, str], snapshots: dict[Any, Any]) -> str:
        """Upload the inputs into the job directory, then submit the batch script there."""
        client, system, account = self.session.client(), self.system, self.session.account
        job_dir = self.job_dir(spec)
        inputs = remote.remote_inputs(spec, self.conf.exclude, snapshots)
        script = self._script(spec, job_dir, inputs)
        self.session.call(f"creating {job_dir}", lambda: client.mkdir(system, job_dir, create_parents=True))
        archive = _archive(inputs)
        self.session.put(
            lambda: io.BytesIO(archive),
            len(archive),
            job_dir,
            ARCHIVE,
            f"uploading the inputs of {spec.run_id}",
        )
        packed = posixpath.join(job_dir, ARCHIVE)
        self.session.call(
            f"unpacking the inputs of {spec.run_id}",
            lambda: client.extract(system, packed, job_dir, compression="gzip", account=account),
        )
        self.session.call(
            f"removing {packed}", lambda: client.rm(system, packed, account=account), missing=None
        )
        env = dict(secrets)
        answer = self.session.call(
            f"submitting {spec.run_id}",
            lambda: client.submit(system, working_dir=job_dir, script_str=script, env_vars=env or None),
        )
        return job_ref(str(answer["jobId"]), job_dir)

    def adopt(self, specs: Sequence[RunSpec]) -> dict[str, str]:
        """Jobs the gateway lists for these runs (by job name = run id), the latest of each."""
        if not specs:
            return {}
        wanted = {s.run_id: self.job_dir(s) for s in specs}
        found: dict[str, tuple[int, str]] = {}
        for job_id, info in self._listing().items():
            name = str(info.get("name") or "")
            if name in wanted and job_id.isdigit():
                if name not in found or int(job_id) > found[name][0]:
                    found[name] = (int(job_id), job_ref(job_id, wanted[name]))
        return {run_id: ref for run_id, (_, ref) in found.items()}

    # -- status ----------------------------------------------------------------------------------

    def _listing(self) -> dict[str, dict[str, Any]]:
        """The caller's jobs on the system (one request): job id -> job."""
        from firecrest import NotImplementedOnAPIversion

        client, system = self.session.client(), self.system

        def ask() -> list[dict[str, Any]]:
            try:
                return list(client.job_info(system, time_window=LISTING_WINDOW))
            except (NotImplementedOnAPIversion, TypeError):  # a gateway before 2.6, an older pyfirecrest
                return list(client.job_info(system))

        jobs = self.session.call(f"listing the jobs on {system}", ask)
        return {str(j.get("jobId")): j for j in jobs}

    def _job_info(self, job_id: str) -> dict[str, Any] | None:
        client, system = self.session.client(), self.system
        jobs = self.session.call(
            f"reading job {job_id}", lambda: client.job_info(system, job_id), missing=None
        )
        return jobs[0] if jobs else None

    def status(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        if not jobs:
            return {}

        def query() -> dict[str, JobStatus]:
            listing = self._listing()
            out = {job.run_id: self._status_one(job, listing) for job in jobs}
            return out

        return self._statuses.get(jobs, query)

    def _status_one(self, job: JobRef, listing: Mapping[str, dict[str, Any]]) -> JobStatus:
        job_id, _ = parse_job_ref(job.job_id)
        result = RunDir(job.run_dir).read_result()
        ended = bool(result and result.terminal)
        info = listing.get(job_id)
        if info is None and not ended:  # older than the listing looks back, or gone
            info = self._job_info(job_id)
        forgotten = f"the gateway no longer knows job {job_id}"
        if info is None:  # perhaps ended, mirrored, then forgotten by the gateway
            return reconcile(None, job.run_dir, forgotten=forgotten)
        status = info.get("status") or {}
        native = _native(info) or "UNKNOWN"
        state = STATES.get(native, JobState.UNKNOWN)
        code = status.get("exitCode")
        code = int(code) if isinstance(code, int | str) and str(code).lstrip("-").isdigit() else None
        if state.terminal and not ended:
            self.mirror(job)
        reason = str(status.get("stateReason") or "")
        waiting = ""
        if reason and reason not in ("None", "(null)"):
            waiting = "held" if "Held" in reason else f"waiting: {reason}"
        return reconcile(
            state,
            job.run_dir,
            name=native,
            exit_code=code,
            why=WHY.get(native, ""),
            waiting=waiting,
            forgotten=forgotten,
        )

    # -- logs, cancel, download ------------------------------------------------------------------

    def _fetch_job_file(self, job: JobRef, name: str, dest: Path) -> bool:
        _, job_dir = parse_job_ref(job.job_id)
        try:
            self.session.fetch(posixpath.join(job_dir, name), dest, 0, None)
        except FileNotFoundError:
            return False
        return True

    def logs(self, job: JobRef, stream: str = "stdout") -> str:
        client, system = self.session.client(), self.system
        job_id, job_dir = parse_job_ref(job.job_id)
        names = [STDOUT if stream == "stdout" else STDERR]
        if stream == "stderr":  # what Slurm itself wrote before the job redirected its output
            names.insert(0, f"slurm-{job_id}.out")
        text = ""
        for name in names:
            path = posixpath.join(job_dir, name)
            part = self.session.call(
                f"reading {path}", lambda path=path: client.view(system, path), missing=None
            )
            text += part or ""
        return text

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Cancel the jobs that have not ended (marked cancelled in their local run directories)."""
        if not jobs:
            return
        client, system = self.session.client(), self.system
        listing = self._listing()
        asked: list[str] = []
        for job in jobs:
            job_id, _ = parse_job_ref(job.job_id)
            info = listing.get(job_id)
            native = _native(info)
            if info is None or STATES.get(native, JobState.UNKNOWN).terminal:
                continue
            Path(job.run_dir).mkdir(parents=True, exist_ok=True)
            RunDir(job.run_dir).mark_cancelled()
            try:
                self.session.call(
                    f"cancelling {job.run_id}",
                    lambda job_id=job_id: client.cancel_job(system, job_id),
                    missing=None,
                )
            except remote.GatewayError:
                # ended meanwhile ("already completing or completed"): nothing to cancel
                again = self._job_info(job_id)
                if again is not None and not STATES.get(_native(again), JobState.UNKNOWN).terminal:
                    raise
            asked.append(job_id)
        self._statuses.clear()

        def states() -> list[JobState | None]:
            listing = self._listing()
            return [STATES.get(_native(listing[i])) for i in asked if i in listing]

        if asked:
            wait_until_stopped(states)

    def download(self, job: JobRef, dest: Path) -> Path:
        """The job directory (without the ``code/`` snapshot) into ``dest/RUN_ID``."""
        client, system = self.session.client(), self.system
        _, job_dir = parse_job_ref(job.job_id)
        entries = self.session.call(
            f"listing {job_dir}",
            lambda: client.list_files(system, job_dir, show_hidden=True, recursive=True),
            missing=None,
        )
        if entries is None:
            raise remote.GatewayError(
                f"backend {self.name}: the job directory {job_dir} of {job.run_id} is gone from {system}"
            )
        target = Path(dest) / job.run_id
        target.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            name = str(entry.get("name"))
            if entry.get("type") != "-" or name == "code" or name.startswith("code/"):
                continue
            self.session.fetch(posixpath.join(job_dir, name), target / name, 0, None)
        return target

    def files(self) -> FirecrestFiles:
        return FirecrestFiles(self.session)


class FirecrestFiles(RemoteFiles):
    """Files on a FirecREST system, by absolute path."""

    resumable_download = True  # large files: staged by the gateway, read with HTTP Range
    resumable_upload = False  # an upload replaces the whole file

    def __init__(self, session: FirecrestSession) -> None:
        self.session = session

    def walk(self, path: str) -> list[RemoteEntry]:
        info = self.session.stat(path)
        if info is None:
            raise FileNotFoundError(path)
        if not stat.S_ISDIR(int(info["mode"])):
            return [RemoteEntry(path, int(info["size"]))]
        client, system = self.session.client(), self.session.system
        entries = self.session.call(
            f"listing {path}",
            lambda: client.list_files(system, path, show_hidden=True, recursive=True),
            missing=None,
        )
        if entries is None:
            raise FileNotFoundError(path)
        return sorted(
            (
                RemoteEntry(posixpath.join(path, str(e["name"])), int(e.get("size") or 0))
                for e in entries
                if e.get("type") == "-"
            ),
            key=lambda e: e.path,
        )

    def size(self, path: str) -> int | None:
        info = self.session.stat(path)
        return None if info is None or not stat.S_ISREG(int(info["mode"])) else int(info["size"])

    def download(self, path: str, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> None:
        self.session.fetch(path, Path(dest), offset, progress)

    def upload(self, source: Path, path: str, *, offset: int = 0, progress: Progress | None = None) -> None:
        session = self.session
        client, system = session.client(), session.system
        directory, filename = posixpath.split(path)
        session.call(f"creating {directory}", lambda: client.mkdir(system, directory, create_parents=True))
        size = os.path.getsize(source)
        session.put(
            lambda: remote.Reading(open(source, "rb"), progress),
            size,
            directory,
            filename,
            f"uploading {path}",
        )
