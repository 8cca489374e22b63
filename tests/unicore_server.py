"""A small UNICORE/X server for the tests: the part of the UNICORE 9/10 REST API that pyunicore 2.x uses.

``BASE`` is ``http://127.0.0.1:PORT/TEST-SITE/rest/core``; JSON unless a file's bytes are asked for
(``Accept: application/octet-stream``), errors as ``{"errorMessage": ...}``.

- ``GET BASE``: the client (role, login), the server version, links to ``jobs`` and ``storages``.
- ``POST BASE/jobs``: submit a job description (201, ``Location``). ``Imports`` with inline ``Data``
  are written into the job's working directory; with ``haveClientStageIn`` the job waits in READY
  for ``POST BASE/jobs/ID/actions/start``. ``GET BASE/jobs[?tags=a,b&offset=&num=]``: the caller's
  jobs (with all the tags).
- ``GET BASE/jobs/ID``: ``status`` (READY, QUEUED, RUNNING, STAGINGOUT, SUCCESSFUL, FAILED),
  ``statusMessage``, ``exitCode``, ``name``, ``tags``, ``_links`` (``workingDirectory``,
  ``action:start``, ``action:abort``). ``DELETE``: abort, forget, remove the working directory.
  ``POST .../actions/abort``: ``scancel``; the job ends FAILED, "Job aborted.".
- ``GET BASE/storages[?filter=all]``: HOME and PROJECT (job directories too with ``filter=all``, as in
  UNICORE 10); ``GET BASE/storages/ID``: ``mountPoint``, ``resourceStatus``; each job's working
  directory is the storage ``ID-uspace``. ``BASE/storages/ID/files/PATH``: ``GET`` a directory
  listing or file properties (JSON), or the bytes (with ``Range``, 206); ``PUT`` bytes (parents
  created, the file replaced); ``POST`` a directory; ``DELETE``.
- Authentication: HTTP basic (``users``) or a bearer token (``tokens``: token -> user); a wrong one
  is refused with 401, a user in ``forbidden`` with 403.

A started job runs on the real local Slurm (``scripts/local-slurm.sh``): the user precommand on the
"login node" (this machine, in the working directory), then ``sbatch`` of a wrapper that runs
``Executable Arguments`` in the working directory with the job's ``Environment``, writes ``Stdout`` /
``Stderr`` and records the exit code; ``Resources`` become sbatch options as UNICORE's Slurm TSI
makes them. Status comes from ``squeue`` (PENDING -> QUEUED, RUNNING -> RUNNING) and the recorded
exit code; the user postcommand runs when the batch job has ended. Control files (the wrapper,
the exit code, Slurm's own output) stay outside the working directory, under ``ROOT/.unicore``.

Test switches: :meth:`UnicoreServer.fail_submission` answers the Nth ``POST /jobs`` with an HTTP
error, :meth:`UnicoreServer.vanish` makes the server forget a job (404 from then on).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SITE = "TEST-SITE"
VERSION = "10.1.0"
EXIT_CODE_FILE = "UNICORE_SCRIPT_EXIT_CODE"
#: sbatch options of the UNICORE resources (as UNICORE's Slurm TSI writes them).
_OPTIONS = {
    "Queue": "--partition",
    "Nodes": "--nodes",
    "CPUsPerNode": "--ntasks-per-node",
    "TotalCPUs": "--ntasks",
    "GPUsPerNode": "--gpus-per-node",
    "Memory": "--mem",
    "Reservation": "--reservation",
    "NodeConstraints": "--constraint",
    "QoS": "--qos",
}
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    id: str
    owner: str
    description: dict[str, Any]
    workdir: Path
    control: Path
    status: str = "READY"
    message: str = ""
    exit_code: int | None = None
    slurm_id: str | None = None
    aborted: bool = False
    submitted: float = field(default_factory=time.time)
    log: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [str(t) for t in self.description.get("Tags") or []]

    def environment(self) -> dict[str, str]:
        env = self.description.get("Environment") or {}
        if isinstance(env, list):  # ["NAME=value", ...]
            return dict(str(e).split("=", 1) for e in env if "=" in str(e))
        return {str(k): str(v) for k, v in env.items()}


class UnicoreServer:
    """The server, its jobs and storages under ``root`` (the "cluster filesystem")."""

    def __init__(
        self,
        root: Path,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        forbidden: set[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.users = users if users is not None else {"demouser": "test123"}
        self.tokens = tokens or {}
        self.forbidden = forbidden or set()
        self.storages = {"HOME": self.root / "home", "PROJECT": self.root / "project"}
        for path in self.storages.values():
            path.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.submissions = 0  # POST /jobs seen, accepted or not
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self._failures: dict[int, int] = {}
        self._lock = threading.RLock()
        self._squeue: tuple[float, set[str], dict[str, str]] = (0.0, set(), {})
        self._http: ThreadingHTTPServer | None = None

    # -- lifecycle and switches ------------------------------------------------------------------

    def start(self) -> UnicoreServer:
        server = self

        class Handler(_Handler):
            unicore = server

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}/{SITE}/rest/core"

    def stop(self) -> None:
        """Cancel what still runs on Slurm and stop serving."""
        with self._lock:
            running = [
                j.slurm_id for j in self.jobs.values() if j.slurm_id and j.status in ("QUEUED", "RUNNING")
            ]
        if running:
            subprocess.run(["scancel", *running], capture_output=True)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def fail_submission(self, nth: int, status: int = 500) -> None:
        """Answer the ``nth`` ``POST /jobs`` from now on (1 = the next) with HTTP ``status``."""
        with self._lock:
            self._failures[self.submissions + nth] = status

    def vanish(self, job_url: str) -> None:
        """Forget a job (its batch job is cancelled): the gateway answers 404 for it from now on."""
        with self._lock:
            job = self.jobs.pop(job_url.rstrip("/").rsplit("/", 1)[-1])
        if job.slurm_id:
            subprocess.run(["scancel", job.slurm_id], capture_output=True)

    def job(self, job_url: str) -> Job:
        return self.jobs[job_url.rstrip("/").rsplit("/", 1)[-1]]

    # -- authentication --------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> str:
        kind, _, value = (header or "").partition(" ")
        user = None
        if kind.lower() == "basic":
            try:
                name, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", None
            if name in self.users and self.users[name] == password:
                user = name
        elif kind.lower() == "bearer":
            user = self.tokens.get(value)
        if user is None:
            raise HttpError(401, "Authentication failed: wrong username, password or token")
        if user in self.forbidden:
            raise HttpError(403, f"Access denied: user {user} may not use site {SITE}")
        return user

    # -- jobs ------------------------------------------------------------------------------------

    def submit(self, user: str, description: dict[str, Any]) -> Job:
        with self._lock:
            self.submissions += 1
            status = self._failures.pop(self.submissions, None)
        if status is not None:
            raise HttpError(status, "Internal server error: the job could not be created")
        kind = str(description.get("Job type", "batch")).lower()
        if kind not in ("batch", "normal"):
            raise HttpError(400, f"Job type {kind!r} is not supported by this test site")
        unknown = sorted(
            set(description.get("Resources") or {}) - {*_OPTIONS, "Runtime", "Project", "Exclusive"}
        )
        if unknown:
            raise HttpError(400, f"Resource request {unknown[0]!r} is not known at this site")
        job_id = str(uuid.uuid4())
        job = Job(job_id, user, description, self.root / "jobs" / job_id, self.root / ".unicore" / job_id)
        job.workdir.mkdir(parents=True)
        job.control.mkdir(parents=True)
        for item in description.get("Imports") or []:
            source = str(item.get("From") or "inline://")
            if "Data" not in item or not source.startswith("inline:"):
                raise HttpError(400, f"Import from {source!r} is not supported by this test site")
            data = item["Data"]
            if isinstance(data, list):  # lines, each ending with a newline (as UNICORE joins them)
                data = "".join(str(line) if str(line).endswith("\n") else f"{line}\n" for line in data)
            target = self._inside(job.workdir, str(item["To"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(data))
        job.log.append(f"created by {user}")
        with self._lock:
            self.jobs[job_id] = job
        if str(description.get("haveClientStageIn", "false")).lower() != "true":
            self.start_job(job)
        return job

    def start_job(self, job: Job) -> None:
        with self._lock:
            if job.status != "READY":
                return
            job.status = "QUEUED"
        desc = job.description
        env = {**os.environ, **job.environment()}
        pre = desc.get("User precommand")
        if pre and _true(desc.get("RunUserPrecommandOnLoginNode", "true")):
            proc = subprocess.run(
                ["bash", "-c", str(pre)], cwd=job.workdir, env=env, capture_output=True, text=True
            )
            job.log.append(f"user precommand exited with {proc.returncode}")
            if proc.returncode != 0 and not _true(desc.get("UserPrecommandIgnoreNonZeroExitCode")):
                self._end(
                    job,
                    "FAILED",
                    f"User precommand failed with exit code {proc.returncode}: {proc.stderr.strip()}",
                )
                return
        wrapper = job.control / "bss.sh"
        command = " ".join([str(desc.get("Executable") or ""), *map(str, desc.get("Arguments") or [])])
        lines = ["#!/bin/bash", f"cd {_q(job.workdir)} || exit 1"]
        if pre and not _true(desc.get("RunUserPrecommandOnLoginNode", "true")):
            lines.append(str(pre))
        redirect = f"> {_q(desc.get('Stdout') or 'stdout')} 2> {_q(desc.get('Stderr') or 'stderr')}"
        if desc.get("Stdin"):
            redirect += f" < {_q(desc['Stdin'])}"
        lines += [f"{command} {redirect}", f"echo $? > {_q(job.control / EXIT_CODE_FILE)}", ""]
        wrapper.write_text("\n".join(lines))
        proc = subprocess.run(
            ["sbatch", "--parsable", *self._sbatch_options(job), str(wrapper)],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            self._end(job, "FAILED", f"Submission to the batch system failed: {proc.stderr.strip()}")
            return
        job.slurm_id = proc.stdout.strip().split(";")[0]
        job.log.append(f"submitted to Slurm as {job.slurm_id}")

    def _sbatch_options(self, job: Job) -> list[str]:
        desc = job.description
        res = {str(k): str(v) for k, v in (desc.get("Resources") or {}).items()}
        name = str(desc.get("Name") or "UNICORE_job")
        options = [
            f"--job-name={name if re.fullmatch(r'[0-9a-zA-Z.:=~/_-]+', name) else 'UNICORE_job'}",
            f"--chdir={job.workdir}",
            f"--output={job.control / 'bss.out'}",
            "--export=ALL",
        ]
        for key, option in _OPTIONS.items():
            if res.get(key):
                options.append(f"{option}={res[key]}")
        if res.get("Runtime"):
            options.append(f"--time={max(_seconds(res['Runtime']) // 60, 1)}")
        project = desc.get("Project") or res.get("Project")
        if project:
            options.append(f"--account={project}")
        if _true(res.get("Exclusive")):
            options.append("--exclusive")
        return options

    def refresh(self, job: Job) -> None:
        """Move a job on from what Slurm says (QUEUED -> RUNNING -> ended)."""
        with self._lock:
            if job.status not in ("QUEUED", "RUNNING") or job.slurm_id is None:
                return
            states = self._slurm_states()
            if states is None:
                return
            state = states.get(job.slurm_id)
            done = (job.control / EXIT_CODE_FILE).exists() or state is None or state not in _QUEUED | _RUNNING
            if not done:
                job.status = "QUEUED" if state in _QUEUED else "RUNNING"
                return
            job.status = "STAGINGOUT"
        self._finish(job)

    def _finish(self, job: Job) -> None:
        desc = job.description
        try:
            code: int | None = int((job.control / EXIT_CODE_FILE).read_text().strip())
        except (OSError, ValueError):
            code = None
        job.exit_code = code
        if job.aborted:
            self._end(job, "FAILED", "Job aborted.")
            return
        if code is None:
            self._end(job, "FAILED", f"The batch job {job.slurm_id} ended without an exit code")
            return
        post = desc.get("User postcommand")
        if post and _true(desc.get("RunUserPostcommandOnLoginNode", "true")):
            env = {**os.environ, **job.environment()}
            proc = subprocess.run(
                ["bash", "-c", str(post)], cwd=job.workdir, env=env, capture_output=True, text=True
            )
            job.log.append(f"user postcommand exited with {proc.returncode}")
            if proc.returncode != 0 and not _true(desc.get("UserPostcommandIgnoreNonZeroExitCode")):
                self._end(job, "FAILED", f"User postcommand failed with exit code {proc.returncode}")
                return
        if code != 0 and not _true(desc.get("IgnoreNonZeroExitCode")):
            self._end(job, "FAILED", f"User application exited with non-zero exit code: {code}")
            return
        self._end(job, "SUCCESSFUL", "")

    def _end(self, job: Job, status: str, message: str) -> None:
        with self._lock:
            job.status, job.message = status, message
            job.log.append(f"{status} {message}".strip())

    def _slurm_states(self) -> dict[str, str] | None:
        """``slurm id -> state`` of this server's unfinished batch jobs (one squeue, reused briefly)."""
        ids = {j.slurm_id for j in self.jobs.values() if j.slurm_id and j.status in ("QUEUED", "RUNNING")}
        when, asked, states = self._squeue
        if ids <= asked and time.monotonic() - when < 0.3:
            return states
        if not ids:
            return {}
        proc = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T", f"--jobs={','.join(sorted(ids))}"], capture_output=True, text=True
        )
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return None  # slurmctld busy: ask again later
        states = dict(line.split("|", 1) for line in proc.stdout.split() if "|" in line)
        self._squeue = (time.monotonic(), ids, states)
        return states

    def abort(self, job: Job) -> None:
        with self._lock:
            if job.status == "READY":
                self._end(job, "FAILED", "Job aborted.")
                return
            if job.status not in ("QUEUED", "RUNNING"):
                return
            job.aborted = True
            slurm_id = job.slurm_id
        if slurm_id:
            subprocess.run(["scancel", slurm_id], capture_output=True)
            self._squeue = (0.0, set(), {})

    def delete(self, job: Job) -> None:
        self.abort(job)
        with self._lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.workdir, ignore_errors=True)
        shutil.rmtree(job.control, ignore_errors=True)

    def owned(self, user: str, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.owner != user:
            raise HttpError(404, f"Job {job_id} not found")
        return job

    # -- representations -------------------------------------------------------------------------

    def client_info(self, user: str) -> dict[str, Any]:
        return {
            "client": {
                "dn": f"UID={user}",
                "role": {"selected": "user", "availableRoles": ["user"]},
                "xlogin": {"UID": user, "availableUIDs": [user], "availableGroups": []},
                "authenticationMethod": "PASSWORD",
            },
            "server": {"version": VERSION, "dn": f"CN={SITE}"},
            "_links": {
                name: {"href": f"{self.base}/{name}"}
                for name in ("jobs", "storages", "sites", "factories", "transfers")
            },
        }

    def job_properties(self, job: Job) -> dict[str, Any]:
        url = f"{self.base}/jobs/{job.id}"
        props: dict[str, Any] = {
            "status": job.status,
            "statusMessage": job.message,
            "name": str(job.description.get("Name") or "N/A"),
            "tags": job.tags,
            "owner": f"UID={job.owner}",
            "queue": str((job.description.get("Resources") or {}).get("Queue") or "N/A"),
            "batchSystemID": job.slurm_id or "N/A",
            "submissionTime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(job.submitted)),
            "log": list(job.log),
            "_links": {
                "self": {"href": url},
                "action:start": {"href": f"{url}/actions/start"},
                "action:abort": {"href": f"{url}/actions/abort"},
                "action:restart": {"href": f"{url}/actions/restart"},
                "workingDirectory": {"href": f"{self.base}/storages/{job.id}-uspace"},
                "parentTSS": {"href": f"{self.base}/sites/default"},
            },
        }
        if job.exit_code is not None:
            props["exitCode"] = str(job.exit_code)  # UNICORE sends it as a string
        return props

    def storage_dir(self, user: str, storage_id: str) -> Path:
        if storage_id in self.storages:
            return self.storages[storage_id]
        if storage_id.endswith("-uspace"):
            return self.owned(user, storage_id.removesuffix("-uspace")).workdir
        raise HttpError(404, f"Storage {storage_id} not found")

    def storage_properties(self, storage_id: str, directory: Path) -> dict[str, Any]:
        url = f"{self.base}/storages/{storage_id}"
        return {
            "mountPoint": f"{directory}/",
            "resourceStatus": "READY",
            "description": f"{storage_id} storage",
            "umask": "077",
            "tags": [],
            "_links": {"self": {"href": url}, "files": {"href": f"{url}/files"}},
        }

    @staticmethod
    def _inside(directory: Path, path: str) -> Path:
        target = (directory / path.lstrip("/")).resolve()
        if target != directory.resolve() and directory.resolve() not in target.parents:
            raise HttpError(403, f"Path {path} is outside the storage")
        return target

    def file_properties(self, directory: Path, path: str) -> dict[str, Any]:
        target = self._inside(directory, path)
        if not target.exists():
            raise HttpError(404, f"File {path} not found")
        props = _stat(target)
        if target.is_dir():
            props["content"] = {}
            for child in sorted(target.iterdir()):
                name = "/" + str(child.relative_to(directory.resolve()))
                props["content"][name + ("/" if child.is_dir() else "")] = _stat(child)
        props["metadata"] = {}
        return props


def _stat(path: Path) -> dict[str, Any]:
    info = path.stat()
    return {
        "isDirectory": path.is_dir(),
        "size": 0 if path.is_dir() else info.st_size,
        "lastAccessed": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(info.st_mtime)),
        "permissions": "rwx" if path.is_dir() else "rw-",
        "owner": "demouser",
        "group": "demouser",
    }


def _true(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _q(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))


def _seconds(text: str) -> int:
    """A UNICORE ``Runtime``: seconds, or with ``min``, ``h``, ``d``."""
    m = re.fullmatch(r"\s*(\d+)\s*(min|h|d|s)?\s*", text)
    if not m:
        raise HttpError(400, f"Runtime {text!r} cannot be parsed")
    return int(m.group(1)) * {"min": 60, "h": 3600, "d": 86400, "s": 1, None: 1}[m.group(2)]


class _Handler(BaseHTTPRequestHandler):
    unicore: UnicoreServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        server = self.unicore
        url = urlsplit(self.path)
        server.requests.append((method, url.path, self.headers.get("Range") or ""))
        prefix = f"/{SITE}/rest/core"
        try:
            if not (url.path == prefix or url.path.startswith(prefix + "/")):
                raise HttpError(404, f"No resource at {url.path}")
            user = server.authenticate(self.headers.get("Authorization"))
            parts = [unquote(p) for p in url.path[len(prefix) :].split("/") if p]
            self._route(method, user, parts, parse_qs(url.query))
        except HttpError as exc:
            self._drain()
            self._json(exc.status, {"errorMessage": exc.message, "status": exc.status})

    def _route(self, method: str, user: str, parts: list[str], query: dict[str, list[str]]) -> None:
        server = self.unicore
        if not parts and method == "GET":
            return self._json(200, server.client_info(user))
        if parts[:1] == ["jobs"]:
            return self._jobs(method, user, parts[1:], query)
        if parts[:1] == ["storages"]:
            if len(parts) == 1 and method == "GET":
                ids = list(server.storages)
                if query.get("filter") == ["all"]:
                    ids += [f"{j.id}-uspace" for j in server.jobs.values() if j.owner == user]
                return self._json(200, {"storages": [f"{server.base}/storages/{i}" for i in ids]})
            directory = server.storage_dir(user, parts[1]) if len(parts) >= 2 else None
            if directory is not None and len(parts) == 2 and method == "GET":
                return self._json(200, server.storage_properties(parts[1], directory))
            if directory is not None and len(parts) >= 3 and parts[2] == "files":
                return self._files(method, directory, "/".join(parts[3:]))
        raise HttpError(404 if method == "GET" else 405, f"No {method} for /{'/'.join(parts)}")

    def _jobs(self, method: str, user: str, parts: list[str], query: dict[str, list[str]]) -> None:
        server = self.unicore
        if not parts and method == "GET":
            wanted = {t for value in query.get("tags", []) for t in value.split(",") if t}
            jobs = [j for j in server.jobs.values() if j.owner == user and wanted <= set(j.tags)]
            jobs.sort(key=lambda j: j.submitted)
            offset = int((query.get("offset") or ["0"])[0])
            num = int((query.get("num") or [str(len(jobs))])[0])
            urls = [f"{server.base}/jobs/{j.id}" for j in jobs[offset : offset + num]]
            return self._json(200, {"jobs": urls, "_links": {"self": {"href": f"{server.base}/jobs"}}})
        if not parts and method == "POST":
            description = self._body_json()
            job = server.submit(user, description)
            return self._json(201, {}, {"Location": f"{server.base}/jobs/{job.id}"})
        job = server.owned(user, parts[0])
        if len(parts) == 1 and method == "GET":
            server.refresh(job)
            return self._json(200, server.job_properties(job))
        if len(parts) == 1 and method == "DELETE":
            server.delete(job)
            return self._empty(204)
        if len(parts) == 3 and parts[1] == "actions" and method == "POST":
            self._drain()
            if parts[2] == "start":
                server.start_job(job)
            elif parts[2] == "abort":
                server.abort(job)
            else:
                raise HttpError(404, f"Action {parts[2]!r} not available")
            return self._json(200, {})
        raise HttpError(404 if method == "GET" else 405, f"No {method} for job resource {'/'.join(parts)}")

    def _files(self, method: str, directory: Path, path: str) -> None:
        server = self.unicore
        target = server._inside(directory, path)
        if method == "GET" and "application/octet-stream" in (self.headers.get("Accept") or ""):
            return self._send_file(target, path)
        if method == "GET":
            return self._json(200, server.file_properties(directory, path))
        if method == "PUT" and "application/json" in (self.headers.get("Content-Type") or ""):
            self._drain()
            return self._json(200, {})
        if method == "PUT":
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                for block in self._body():
                    out.write(block)
            return self._empty(204)
        if method == "POST":
            self._drain()
            target.mkdir(parents=True, exist_ok=True)
            return self._json(201, {})
        if method == "DELETE":
            if not target.exists():
                raise HttpError(404, f"File {path} not found")
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            return self._empty(204)
        raise HttpError(405, f"No {method} for files")

    def _send_file(self, target: Path, path: str) -> None:
        if not target.is_file():
            raise HttpError(404 if not target.exists() else 406, f"File {path} not found")
        size = target.stat().st_size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HttpError(416, f"Range header {wanted!r} cannot be parsed")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(size - int(m.group(2)), 0)
            if start >= size or end < start:
                raise HttpError(416, f"Range {wanted!r} is outside the file ({size} bytes)")
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(target, "rb") as fh:
            fh.seek(start)
            left = end - start + 1 if size else 0
            while left > 0:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)

    def _body(self) -> Any:
        """The request body in blocks (``Content-Length`` or chunked), read once."""
        if getattr(self, "_read", False):
            return
        self._read = True
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                return
            left -= len(block)
            yield block

    def _drain(self) -> None:
        for _ in self._body():
            pass

    def _body_json(self) -> dict[str, Any]:
        try:
            value = json.loads(b"".join(self._body()) or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"The request is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "The request is not a JSON object")
        return value

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, text in (headers or {}).items():
            self.send_header(name, text)
        self.end_headers()
        self.wfile.write(data)

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
