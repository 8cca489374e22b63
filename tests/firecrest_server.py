"""A small FirecREST v2 server for the tests: the part of the FirecREST v2 REST API that pyfirecrest's v2
client (``firecrest.v2.Firecrest``) uses, with an OIDC token endpoint and an S3-like staging area.

``BASE`` is ``http://127.0.0.1:PORT/hpc/firecrest/v2``; answers are JSON (``{"output": ...}``,
``{"jobs": [...]}``), errors ``{"errorType": "error", "message": ...}``; every answer carries the
``F7T-AppVersion`` header (2.6.0).

- ``POST TOKEN_URL`` (``/auth/realms/test/protocol/openid-connect/token``): the client-credentials
  grant (``client_id``/``client_secret`` in the form, or HTTP basic) -> ``access_token``,
  ``expires_in``; a wrong secret or unknown client is refused with 401 (``unauthorized_client``).
- Every request to ``BASE`` needs ``Authorization: Bearer TOKEN``: none, an unknown or an expired
  token is refused with 401; a client in ``forbidden`` gets 403 from the system's endpoints.
- ``GET BASE/status/systems``: the one system (``SYSTEM``), its scheduler and filesystem;
  ``GET BASE/status/SYSTEM/userinfo``: the user, groups and Slurm accounts behind the client.
- ``POST BASE/compute/SYSTEM/jobs`` (``{"job": {"working_directory", "script" | "script_path",
  "env", "name", "account", "partition", ...}}`` -> ``{"jobId"}``, 201); ``GET BASE/compute/SYSTEM/jobs``
  (``name``, ``time_window``) and ``.../jobs/ID`` (404 ``Job not found.``): ``jobId``, ``name``,
  ``status {state, stateReason, exitCode, interruptSignal}``, ``workingDirectory``, ``time`` ...;
  ``DELETE .../jobs/ID``: ``scancel`` (204; a job that has ended: 500, as Slurm's error).
- ``BASE/filesystem/SYSTEM/ops/``: ``GET ls`` (``path``, ``showHidden``, ``recursive``,
  ``dereference``; names relative to a listed directory), ``GET stat``, ``GET view`` (up to 5 MiB),
  ``GET download`` (bytes, up to 5 MiB), ``POST upload?path=DIR`` (multipart ``file``), ``POST mkdir``
  (``sourcePath``, ``parent``), ``POST extract`` (``tar -x`` into ``target_path``), ``DELETE rm``.
  Paths are absolute and must lie under ``root`` (else 403); a missing one is 404 with the shell's
  ``No such file or directory``.
- ``POST BASE/filesystem/SYSTEM/transfer/upload`` and ``.../download`` (``transfer_method: s3``): as
  FirecREST does it, a transfer job on Slurm and presigned URLs of a staging area (``/s3/KEY``:
  ``PUT /s3/KEY/N`` a part (``ETag``), ``POST /s3/KEY/complete``, ``HEAD``/``GET /s3/KEY`` with
  ``Range``). An upload's job waits for the object and copies it to the target; a download's job
  sends the file in parts of ``max_part_size``. Its log (``transferJob.logs.outputLog``) says
  whether it succeeded.

Jobs run on the real local Slurm (``scripts/local-slurm.sh``): the script is ``sbatch``'d with
``--chdir`` the working directory and, as environment, a login shell's (``PATH``, ``HOME`` under
``root``, ``USER``) plus the request's ``env``. What the job listing says comes from ``sacct``
(ahead of ``squeue``, for jobs accounting has not seen yet), so the states are Slurm's own. The
listing holds the jobs this server submitted for the asking client (its "user").

Test switches: :meth:`FirecrestServer.fail_submission` answers the Nth ``POST .../jobs`` with an
HTTP error, :meth:`FirecrestServer.vanish` makes the server forget a job (404 from then on),
:meth:`FirecrestServer.expire_tokens` lets every issued access token expire.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import getpass
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SYSTEM = "testsys"
VERSION = "2.6.0"
PREFIX = "/hpc/firecrest/v2"
TOKEN_PATH = "/auth/realms/test/protocol/openid-connect/token"
#: Largest file ``ops/view``, ``ops/download`` and ``ops/upload`` handle (FirecREST's ``max_ops_file_size``).
MAX_OPS_FILE_SIZE = 5 * 1024 * 1024
_SACCT_FIELDS = (
    "JobID,JobName,State,ExitCode,Reason,WorkDir,Partition,Account,NodeList,AllocNodes,"
    "Submit,Start,End,TimelimitRaw,User,Group,Cluster,ElapsedRaw,Priority"
)
_SQUEUE_FORMAT = "%i|%j|%T|%r|%Z|%P|%a|%N|%D|%V|%S|%e|%l|%u|%g"
_SQUEUE_KEYS = (
    "JobID,JobName,State,Reason,WorkDir,Partition,Account,NodeList,AllocNodes,Submit,Start,End,Timelimit,User,Group"
).split(",")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    id: str
    client: str
    transfer: bool = False
    #: The request's ``env`` (what the job got beyond the login environment).
    env: dict[str, str] = field(default_factory=dict)
    submitted: float = field(default_factory=time.time)


class FirecrestServer:
    """The server; ``root`` is the system's filesystem (job directories, home, staging area)."""

    def __init__(
        self,
        root: Path,
        clients: dict[str, str] | None = None,
        forbidden: set[str] | None = None,
        max_part_size: int = 1024 * 1024,
        token_ttl: int = 300,
    ) -> None:
        self.root = Path(root).resolve()
        self.clients = clients if clients is not None else {"maelstrom-ci": "s3cret"}
        self.forbidden = forbidden or set()
        self.max_part_size = max_part_size
        self.token_ttl = token_ttl
        self.home = self.root / "home"
        self.f7t = self.root / ".f7t"  # transfer jobs, job scripts, the staging area
        for path in (self.home, self.f7t / "scripts", self.f7t / "s3"):
            path.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.submissions = 0  # POST .../jobs seen, accepted or not
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        self.tokens: dict[str, tuple[str, float]] = {}
        self._failures: dict[int, int] = {}
        self._lock = threading.RLock()
        self._slurm: tuple[float, frozenset[str], dict[str, dict[str, Any]]] = (0.0, frozenset(), {})
        self._http: ThreadingHTTPServer | None = None

    # -- lifecycle and switches ------------------------------------------------------------------

    def start(self) -> FirecrestServer:
        server = self

        class Handler(_Handler):
            firecrest = server

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    @property
    def origin(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def base(self) -> str:
        return self.origin + PREFIX

    @property
    def token_url(self) -> str:
        return self.origin + TOKEN_PATH

    def stop(self) -> None:
        """Cancel what still runs on Slurm and stop serving."""
        with self._lock:
            ids = list(self.jobs)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def fail_submission(self, nth: int, status: int = 500) -> None:
        """Answer the ``nth`` ``POST .../jobs`` from now on (1 = the next) with HTTP ``status``."""
        with self._lock:
            self._failures[self.submissions + nth] = status

    def vanish(self, job_id: str) -> None:
        """Forget a job (its batch job is cancelled): the gateway answers 404 for it from now on."""
        with self._lock:
            self.jobs.pop(job_id)
        subprocess.run(["scancel", job_id], capture_output=True)

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {t: (c, 0.0) for t, (c, _) in self.tokens.items()}

    def compute_jobs(self, client: str | None = None) -> list[str]:
        """Ids of the (non-transfer) jobs submitted through this server, oldest first."""
        with self._lock:
            return [j.id for j in self.jobs.values() if not j.transfer and client in (None, j.client)]

    # -- authentication --------------------------------------------------------------------------

    def issue_token(self, form: dict[str, str], header: str | None) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise HttpError(400, "unsupported_grant_type")
        client, secret = form.get("client_id"), form.get("client_secret")
        kind, _, value = (header or "").partition(" ")
        if kind.lower() == "basic":
            client, _, secret = base64.b64decode(value).decode().partition(":")
        if not client or self.clients.get(client) != secret:
            raise HttpError(401, "Invalid client or Invalid client credentials")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = (client, time.time() + self.token_ttl)
        return {
            "access_token": token,
            "expires_in": self.token_ttl,
            "token_type": "Bearer",
            "scope": "firecrest",
        }

    def authenticate(self, header: str | None) -> str:
        kind, _, token = (header or "").partition(" ")
        if kind.lower() != "bearer" or not token:
            raise HttpError(401, "Not authenticated")
        with self._lock:
            client, until = self.tokens.get(token, (None, 0.0))
        if client is None:
            raise HttpError(401, "Invalid token")
        if time.time() > until:
            raise HttpError(401, "Token expired")
        return client

    def authorize(self, client: str, system: str) -> None:
        if system != SYSTEM:
            raise HttpError(404, f"System '{system}' does not exist")
        if client in self.forbidden:
            raise HttpError(403, f"User '{client}' does not have access to system '{system}'")

    def systems(self) -> list[dict[str, Any]]:
        return [
            {
                "name": SYSTEM,
                "host": "127.0.0.1",
                "sshPort": 22,
                "scheduler": {"type": "slurm", "version": "22.05", "apiUrl": None, "apiVersion": None},
                "servicesHealth": [
                    {"serviceType": kind, "healthy": True, "message": None}
                    for kind in ("scheduler", "ssh", "filesystem", "s3")
                ],
                "fileSystems": [{"path": str(self.root), "dataType": "scratch", "defaultWorkDir": True}],
                "datatransferJobsDirectives": ["#SBATCH --time=00:10:00"],
            }
        ]

    def userinfo(self, client: str) -> dict[str, Any]:
        """The (unix) user behind a client on the system: its ids, groups and Slurm accounts."""
        user = getpass.getuser()
        proc = subprocess.run(
            ["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account"],
            capture_output=True,
            text=True,
        )
        accounts = sorted({a for a in proc.stdout.split() if a})
        ident = {"id": str(os.getuid()), "name": user}
        group = {"id": str(os.getgid()), "name": user}
        return {
            "user": ident,
            "group": group,
            "groups": [group],
            "accounts": [{"name": a, "default": i == 0} for i, a in enumerate(accounts)],
        }

    # -- jobs ------------------------------------------------------------------------------------

    def login_environment(self) -> dict[str, str]:
        """What a job starts with before the request's ``env``: a login shell's variables."""
        user = getpass.getuser()
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "HOME": str(self.home),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
        }

    def submit(self, client: str, job: dict[str, Any], *, transfer: bool = False) -> str:
        if not transfer:
            with self._lock:
                self.submissions += 1
                failure = self._failures.pop(self.submissions, None)
            if failure is not None:
                raise HttpError(failure, "Unable to submit new job")
        workdir = _key(job, "working_directory", "workingDirectory", "current_working_directory")
        if not workdir:
            raise HttpError(422, "job.working_directory: field required")
        script = _key(job, "script")
        script_path = _key(job, "script_path", "scriptPath")
        if bool(script) == bool(script_path):
            raise HttpError(422, "job: give one of script and script_path")
        if script_path:
            script = self.inside(script_path).read_text()
        path = self.f7t / "scripts" / f"{uuid.uuid4().hex}.sh"
        path.write_text(str(script))
        given = job.get("env") if job.get("env") is not None else {"F7T_version": "v2.0.0"}
        if isinstance(given, list):
            given = dict(str(e).split("=", 1) for e in given if "=" in str(e))
        env = {str(k): str(v) for k, v in given.items()}
        options = ["--parsable", "--export=ALL", f"--chdir={workdir}"]
        for key, option in (
            ("partition", "partition"),
            ("reservation", "reservation"),
            ("account", "account"),
            ("name", "job-name"),
            ("standard_error", "error"),
            ("standard_output", "output"),
            ("standard_input", "input"),
            ("constraints", "constraint"),
        ):
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), key)
            value = _key(job, key, camel)
            if value:
                options.append(f"--{option}={value}")
        proc = subprocess.run(
            ["sbatch", *options, str(path)],
            env={**self.login_environment(), **env},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise HttpError(
                500, f"Unexpected Slurm command response. exit_status:{proc.returncode} std_err:{proc.stderr}"
            )
        job_id = proc.stdout.strip().split(";")[0]
        with self._lock:
            self.jobs[job_id] = Job(job_id, client, transfer, env)
            self._slurm = (0.0, frozenset(), {})
        return job_id

    def slurm_info(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """``job id -> fields`` from ``sacct``, and ``squeue`` for what accounting has not (fully) seen yet.

        Accounting goes first, as in FirecREST; a record it has only begun (no working directory
        yet, a moment around a short job's start) takes the job's name and directory from the controller.
        """
        asked = frozenset(ids)
        with self._lock:
            when, seen, info = self._slurm
            if asked <= seen and time.monotonic() - when < 0.3:
                return info
        if not ids:
            return {}
        env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
        queued: dict[str, dict[str, str]] = {}
        proc = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", ",".join(sorted(ids)), "-o", _SQUEUE_FORMAT],
            capture_output=True,
            text=True,
            env=env,
        )
        for line in proc.stdout.splitlines():
            values = line.split("|")
            if len(values) == len(_SQUEUE_KEYS) and values[0] in asked:
                queued[values[0]] = {**dict(zip(_SQUEUE_KEYS, values, strict=True)), "ExitCode": ""}
        out: dict[str, dict[str, Any]] = dict(queued)
        names = _SACCT_FIELDS.split(",")
        proc = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-j", ",".join(sorted(ids)), "-o", _SACCT_FIELDS],
            capture_output=True,
            text=True,
            env=env,
        )
        for line in proc.stdout.splitlines():
            values = line.split("|")
            if len(values) == len(names) and values[0] in asked:
                fields = dict(zip(names, values, strict=True))
                if not fields["WorkDir"] and values[0] in queued:
                    fields.update({k: queued[values[0]][k] for k in ("JobName", "WorkDir")})
                out[values[0]] = fields
        with self._lock:
            self._slurm = (time.monotonic(), asked, out)
        return out

    def job_json(self, job_id: str, fields: dict[str, str]) -> dict[str, Any]:
        code, _, signal = (fields.get("ExitCode") or "").partition(":")
        return {
            "jobId": job_id,
            "name": fields.get("JobName", ""),
            "status": {
                "state": fields.get("State", ""),
                "stateReason": fields.get("Reason") or None,
                "exitCode": int(code) if code.isdigit() else None,
                "interruptSignal": int(signal) if signal.isdigit() else None,
            },
            "tasks": None,
            "time": {
                "elapsed": _int(fields.get("ElapsedRaw")),
                "start": _int(fields.get("Start")),
                "end": _int(fields.get("End")),
                "suspended": 0,
                "limit": _int(fields.get("TimelimitRaw")),
            },
            "account": fields.get("Account") or None,
            "allocationNodes": _int(fields.get("AllocNodes")) or 0,
            "cluster": fields.get("Cluster") or "maelstrom",
            "group": fields.get("Group") or None,
            "nodes": fields.get("NodeList", ""),
            "partition": fields.get("Partition", ""),
            "killRequestUser": None,
            "user": fields.get("User") or None,
            "workingDirectory": fields.get("WorkDir", ""),
            "priority": _int(fields.get("Priority")),
        }

    def list_jobs(self, client: str, name: str | None = None) -> list[dict[str, Any]]:
        ids = [j.id for j in list(self.jobs.values()) if j.client == client]
        info = self.slurm_info(ids)
        jobs = [self.job_json(i, info[i]) for i in ids if i in info]
        return [j for j in jobs if name is None or j["name"] == name]

    def job(self, client: str, job_id: str) -> dict[str, Any]:
        known = self.jobs.get(job_id)
        if known is None or known.client != client:
            raise HttpError(404, "Job not found.")
        info = self.slurm_info([job_id])
        if job_id not in info:
            raise HttpError(404, "Job not found.")
        return self.job_json(job_id, info[job_id])

    def cancel(self, client: str, job_id: str) -> None:
        known = self.jobs.get(job_id)
        if known is None or known.client != client:
            raise HttpError(404, "Job not found")
        proc = subprocess.run(["scancel", "--verbose", job_id], capture_output=True, text=True)
        with self._lock:
            self._slurm = (0.0, frozenset(), {})
        if proc.returncode != 0 or re.search(r".+error:.*", proc.stderr, re.IGNORECASE):
            raise HttpError(
                500, f"Unexpected Slurm command response. exit_status:{proc.returncode} std_err:{proc.stderr}"
            )

    # -- the filesystem --------------------------------------------------------------------------

    def inside(self, path: str | None) -> Path:
        """The local path of an absolute path on the system (403 outside ``root``)."""
        if not path or not str(path).startswith("/"):
            raise HttpError(400, f"Path {path!r} must be absolute")
        target = Path(os.path.normpath(str(path)))
        if target != self.root and self.root not in target.parents:
            raise HttpError(
                403, f"Remote process failed with exit status:1 and error message:{path}: Permission denied"
            )
        return target

    @staticmethod
    def missing(command: str, path: str) -> HttpError:
        return HttpError(
            404,
            f"Remote process failed with exit status:2 and error message:{command}: cannot access "
            f"'{path}': No such file or directory",
        )

    def entry(self, path: Path, name: str, dereference: bool = False) -> dict[str, Any]:
        info = path.stat() if dereference else path.lstat()
        kind = "d" if stat.S_ISDIR(info.st_mode) else "l" if stat.S_ISLNK(info.st_mode) else "-"
        return {
            "name": name,
            "type": kind,
            "linkTarget": os.readlink(path) if kind == "l" else None,
            "user": getpass.getuser(),
            "group": getpass.getuser(),
            "permissions": stat.filemode(info.st_mode)[1:],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(info.st_mtime)),
            "size": str(info.st_size),
        }

    def ls(self, path: str, hidden: bool, recursive: bool, dereference: bool) -> list[dict[str, Any]]:
        target = self.inside(path)
        if not (target.exists() or target.is_symlink()):
            raise self.missing("ls", path)
        if not target.is_dir():
            return [self.entry(target, path, dereference)]
        out = []
        for directory, dirs, files in os.walk(target, followlinks=dereference):
            dirs.sort()
            if not hidden:
                dirs[:] = [d for d in dirs if not d.startswith(".")]
            here = Path(directory)
            prefix = "" if here == target else f"{here.relative_to(target)}/"
            for name in sorted([*dirs, *files]):
                if hidden or not name.startswith("."):
                    out.append(self.entry(here / name, prefix + name, dereference))
            if not recursive:
                break
        return out

    def stat(self, path: str, dereference: bool) -> dict[str, int]:
        target = self.inside(path)
        try:
            info = target.stat() if dereference else target.lstat()
        except FileNotFoundError:
            raise self.missing("stat", path) from None
        return {
            "mode": info.st_mode,
            "ino": info.st_ino,
            "dev": info.st_dev,
            "nlink": info.st_nlink,
            "uid": info.st_uid,
            "gid": info.st_gid,
            "size": info.st_size,
            "atime": int(info.st_atime),
            "mtime": int(info.st_mtime),
            "ctime": int(info.st_ctime),
        }

    def read(self, path: str, command: str, offset: int = 0, size: int = MAX_OPS_FILE_SIZE) -> bytes:
        target = self.inside(path)
        if not target.exists():
            raise self.missing(command, path)
        if target.is_dir():
            raise HttpError(
                400, f"Remote process failed with exit status:1 and error message:{path}: Is a directory"
            )
        with open(target, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def mkdir(self, path: str, parents: bool) -> dict[str, Any]:
        target = self.inside(path)
        try:
            target.mkdir(parents=parents, exist_ok=parents)
        except FileExistsError:
            raise HttpError(
                400,
                f"Remote process failed with exit status:1 and error message:mkdir: cannot create "
                f"directory '{path}': File exists",
            ) from None
        except FileNotFoundError:
            raise self.missing("mkdir", path) from None
        return self.entry(target, path)

    def extract(self, source: str, target: str, compression: str) -> None:
        archive, directory = self.inside(source), self.inside(target)
        flag = {"gzip": "z", "bzip2": "j", "xz": "J", "none": ""}.get(compression)
        if flag is None:
            raise HttpError(422, f"compression: {compression!r} is not one of gzip, bzip2, xz, none")
        proc = subprocess.run(
            ["tar", f"-x{flag}f", str(archive), "-C", str(directory)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            status = 404 if "No such file or directory" in proc.stderr else 500
            raise HttpError(
                status,
                f"Remote process failed with exit status:{proc.returncode} and error message:{proc.stderr}",
            )

    def rm(self, path: str) -> None:
        target = self.inside(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            raise self.missing("rm", path)

    # -- staged transfers (S3 and a transfer job) -----------------------------------------------

    def _transfer_job(self, client: str, name: str, script: str, account: str | None) -> dict[str, Any]:
        workdir = self.f7t / client
        workdir.mkdir(parents=True, exist_ok=True)
        unique = uuid.uuid4()
        logs = {
            "outputLog": str(workdir / f".f7t_file_handling_job_{unique}.log"),
            "errorLog": str(workdir / f".f7t_file_handling_job_error_{unique}.log"),
        }
        job = {
            "name": name,
            "working_directory": str(workdir),
            "standard_input": "/dev/null",
            "standard_output": logs["outputLog"],
            "standard_error": logs["errorLog"],
            "env": {"PATH": "/bin:/usr/bin/:/usr/local/bin/"},
            "script": script,
            "account": account,
        }
        job_id = self.submit(client, job, transfer=True)
        return {"jobId": job_id, "system": SYSTEM, "workingDirectory": str(workdir), "logs": logs}

    def stage_upload(self, client: str, body: dict[str, Any]) -> dict[str, Any]:
        directives = _key(body, "transfer_directives", "transferDirectives") or {}
        if _key(directives, "transfer_method", "transferMethod") != "s3":
            raise HttpError(422, "transfer_directives.transfer_method: only s3 is offered here")
        path = _key(body, "path", "source_path", "sourcePath")
        target = self.inside(path)
        size = int(_key(directives, "file_size", "fileSize") or 0)
        key = uuid.uuid4().hex
        (self.f7t / "s3" / key).mkdir()
        parts = max(1, math.ceil(size / self.max_part_size))
        url = f"{self.origin}/s3/{key}"
        q = shlex.quote
        script = "\n".join(
            [
                "#!/bin/bash",
                'echo "$(date -u) Ingress File Transfer Job (id:$SLURM_JOB_ID)"',
                f"target={q(str(target))}",
                "for i in $(seq 3000); do",
                f"  if [ \"$(curl --silent --head -o /dev/null -w '%{{http_code}}' {q(url)})\" = 200 ]; then",
                f'    curl --silent --fail -o "$target.f7t-part" {q(url)} '
                '|| { echo "$(date -u) Download failed" >&2; exit 1; }',
                '    mv -f "$target.f7t-part" "$target"',
                '    echo "$(date -u) File was successfully downloaded (size: $(stat -c %s "$target") bytes)"',
                "    exit 0",
                "  fi",
                "  sleep 0.2",
                "done",
                'echo "$(date -u) the file never arrived in the staging area" >&2',
                "exit 2",
                "",
            ]
        )
        job = self._transfer_job(client, "IngressFileTransfer", script, _key(body, "account"))
        return {
            "transferJob": job,
            "transferDirectives": {
                "transferMethod": "s3",
                "partsUploadUrls": [f"{url}/{n}" for n in range(1, parts + 1)],
                "completeUploadUrl": f"{url}/complete",
                "maxPartSize": self.max_part_size,
            },
        }

    def stage_download(self, client: str, body: dict[str, Any]) -> dict[str, Any]:
        directives = _key(body, "transfer_directives", "transferDirectives") or {}
        if _key(directives, "transfer_method", "transferMethod") not in ("s3", None):
            raise HttpError(422, "transfer_directives.transfer_method: only s3 is offered here")
        path = _key(body, "source_path", "sourcePath", "path")
        size = self.stat(str(path), True)["size"]
        key = uuid.uuid4().hex
        (self.f7t / "s3" / key).mkdir()
        url = f"{self.origin}/s3/{key}"
        q = shlex.quote
        parts = max(1, math.ceil(size / self.max_part_size))
        lines = ["#!/bin/bash", 'echo "$(date -u) Upload File Job (id:$SLURM_JOB_ID)"']
        for n in range(parts):
            lines.append(
                f"dd if={q(str(path))} bs={self.max_part_size} skip={n} count=1 status=none | "
                f"curl --silent --fail -X PUT --data-binary @- -o /dev/null {q(f'{url}/{n + 1}')} "
                f'|| {{ echo "upload_failed_part_{n + 1}" >&2; exit 1; }}'
            )
        lines += [
            f"curl --silent --fail -X POST -o /dev/null {q(url + '/complete')} || exit 1",
            'echo "[INFO] Multipart file upload successfully completed"',
            "",
        ]
        job = self._transfer_job(client, "OutgressFileTransfer", "\n".join(lines), _key(body, "account"))
        return {"transferJob": job, "transferDirectives": {"transferMethod": "s3", "downloadUrl": url}}

    def s3_dir(self, key: str) -> Path:
        directory = self.f7t / "s3" / key
        if not re.fullmatch(r"[0-9a-f]{32}", key) or not directory.is_dir():
            raise HttpError(404, "NoSuchUpload")
        return directory


def _key(mapping: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` a request body has (FirecREST takes snake_case and camelCase)."""
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def _true(values: list[str] | None) -> bool:
    return bool(values) and str(values[0]).lower() == "true"


class _Handler(BaseHTTPRequestHandler):
    firecrest: FirecrestServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        server = self.firecrest
        url = urlsplit(self.path)
        server.requests.append((method, url.path, self.headers.get("Range") or ""))
        client = None
        try:
            if url.path == TOKEN_PATH and method == "POST":
                try:
                    form = {k: v[0] for k, v in parse_qs(self._read_body().decode()).items()}
                    return self._json(200, server.issue_token(form, self.headers.get("Authorization")))
                except HttpError as exc:
                    kind = "unauthorized_client" if exc.status == 401 else "invalid_request"
                    return self._json(exc.status, {"error": kind, "error_description": exc.message})
            if url.path.startswith("/s3/"):
                return self._s3(method, url.path.split("/")[2:])
            if not url.path.startswith(PREFIX + "/"):
                raise HttpError(404, f"No resource at {url.path}")
            client = server.authenticate(self.headers.get("Authorization"))
            parts = [unquote(p) for p in url.path[len(PREFIX) :].split("/") if p]
            self._route(method, client, parts, parse_qs(url.query))
        except HttpError as exc:
            self._read_body()
            if method == "HEAD":
                return self._headers(exc.status, "application/json", 0)
            self._json(exc.status, {"errorType": "error", "message": exc.message, "user": client})

    def _route(self, method: str, client: str, parts: list[str], query: dict[str, list[str]]) -> None:
        server = self.firecrest
        if parts == ["status", "systems"] and method == "GET":
            return self._json(200, {"systems": server.systems()})
        if len(parts) == 3 and parts[0] == "status" and parts[2] == "userinfo" and method == "GET":
            server.authorize(client, parts[1])
            return self._json(200, server.userinfo(client))
        if len(parts) >= 3 and parts[0] == "compute" and parts[2] == "jobs":
            server.authorize(client, parts[1])
            return self._jobs(method, client, parts[3:], query)
        if len(parts) == 4 and parts[0] == "filesystem" and parts[2] == "ops":
            server.authorize(client, parts[1])
            return self._ops(method, parts[3], query)
        if len(parts) == 4 and parts[0] == "filesystem" and parts[2] == "transfer" and method == "POST":
            server.authorize(client, parts[1])
            body = self._body_json()
            if parts[3] == "upload":
                return self._json(201, server.stage_upload(client, body))
            if parts[3] == "download":
                return self._json(201, server.stage_download(client, body))
        raise HttpError(404 if method == "GET" else 405, f"No {method} for /{'/'.join(parts)}")

    def _jobs(self, method: str, client: str, parts: list[str], query: dict[str, list[str]]) -> None:
        server = self.firecrest
        if not parts and method == "POST":
            job = self._body_json().get("job")
            if not isinstance(job, dict):
                raise HttpError(422, "job: field required")
            return self._json(201, {"jobId": server.submit(client, job)})
        if not parts and method == "GET":
            window = (query.get("time_window") or ["24h"])[0]
            if window not in ("1h", "8h", "24h", "3d", "7d"):
                raise HttpError(422, f"time_window: {window!r} is not one of 1h, 8h, 24h, 3d, 7d")
            name = (query.get("name") or [None])[0]
            return self._json(200, {"jobs": server.list_jobs(client, name)})
        if len(parts) == 1 and method == "GET":
            return self._json(200, {"jobs": [server.job(client, parts[0])]})
        if len(parts) == 1 and method == "DELETE":
            server.cancel(client, parts[0])
            return self._empty(204)
        raise HttpError(404 if method == "GET" else 405, f"No {method} for jobs/{'/'.join(parts)}")

    def _ops(self, method: str, op: str, query: dict[str, list[str]]) -> None:
        server = self.firecrest
        path = (query.get("path") or [None])[0]
        if method == "GET" and op == "ls":
            entries = server.ls(
                str(path),
                _true(query.get("showHidden")),
                _true(query.get("recursive")),
                _true(query.get("dereference")),
            )
            return self._json(200, {"output": entries})
        if method == "GET" and op == "stat":
            return self._json(200, {"output": server.stat(str(path), _true(query.get("dereference")))})
        if method == "GET" and op == "view":
            size = int((query.get("size") or [MAX_OPS_FILE_SIZE])[0])
            offset = int((query.get("offset") or [0])[0])
            if size > MAX_OPS_FILE_SIZE:
                raise HttpError(400, f"`size` value must be less than {MAX_OPS_FILE_SIZE} bytes")
            data = server.read(str(path), "dd", offset, size)
            return self._json(200, {"output": data.decode(errors="replace")})
        if method == "GET" and op == "download":
            data = server.read(str(path), "base64", 0, MAX_OPS_FILE_SIZE + 1)
            if len(data) > MAX_OPS_FILE_SIZE:
                raise HttpError(413, "File to download is too large.")
            return self._bytes(200, data)
        if method == "POST" and op == "upload":
            directory = server.inside(path)
            name, data = self._multipart_file()
            if len(data) > MAX_OPS_FILE_SIZE:
                raise HttpError(413, "File to upload is too large.")
            if not directory.is_dir():
                raise server.missing("base64", f"{path}/{name}")
            (directory / name).write_bytes(data)
            return self._empty(204)
        if method == "POST" and op == "mkdir":
            body = self._body_json()
            target = _key(body, "sourcePath", "source_path", "path")
            return self._json(201, {"output": server.mkdir(str(target), bool(body.get("parent")))})
        if method == "POST" and op == "extract":
            body = self._body_json()
            server.extract(
                str(_key(body, "source_path", "sourcePath", "path")),
                str(_key(body, "target_path", "targetPath")),
                str(body.get("compression") or "gzip"),
            )
            return self._empty(204)
        if method == "DELETE" and op == "rm":
            server.rm(str(path))
            return self._empty(204)
        raise HttpError(404 if method == "GET" else 405, f"No {method} for ops/{op}")

    def _s3(self, method: str, parts: list[str]) -> None:
        """The staging area's presigned URLs: whoever knows the key may use them."""
        server = self.firecrest
        directory = server.s3_dir(parts[0] if parts else "")
        obj = directory / "object"
        if method == "PUT" and len(parts) == 2 and parts[1].isdigit():
            data = self._read_body()
            (directory / f"part.{int(parts[1]):05d}").write_bytes(data)
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if method == "POST" and parts[1:] == ["complete"]:
            self._read_body()
            partial = directory / "object.part"
            with open(partial, "wb") as out:
                for part in sorted(directory.glob("part.*")):
                    out.write(part.read_bytes())
                    part.unlink()
            partial.rename(obj)
            return self._bytes(200, b"<CompleteMultipartUploadResult/>", "application/xml")
        if method in ("GET", "HEAD") and len(parts) == 1:
            if not obj.is_file():
                raise HttpError(404, "NoSuchKey")
            return self._send_object(obj, head=method == "HEAD")
        raise HttpError(405, f"No {method} here")

    def _send_object(self, path: Path, head: bool) -> None:
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if not m or int(m.group(1)) >= size:
                raise HttpError(416, "InvalidRange")
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1 if size else 0))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1 if size else 0
            while left > 0:
                block = fh.read(min(left, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)

    # -- bodies and answers ----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        """The request body (``Content-Length`` or chunked), read once."""
        if getattr(self, "_done", False):
            return b""
        self._done = True
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            blocks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(blocks)
                blocks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _body_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self._read_body() or b"{}")
        except ValueError as exc:
            raise HttpError(422, f"The request is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(422, "The request is not a JSON object")
        return value

    def _multipart_file(self) -> tuple[str, bytes]:
        """The ``file`` field of a ``multipart/form-data`` body: (file name, bytes)."""
        kind = self.headers.get("Content-Type") or ""
        raw = b"Content-Type: " + kind.encode() + b"\r\n\r\n" + self._read_body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        for part in message.iter_parts() if message.is_multipart() else []:
            if part.get_param("name", header="content-disposition") == "file":
                name = part.get_filename() or ""
                if not name or "/" in name or name in (".", ".."):
                    raise HttpError(422, f"file: {name!r} is not a file name")
                return name, part.get_payload(decode=True) or b""
        raise HttpError(422, "file: field required (multipart/form-data)")

    def _headers(self, status: int, kind: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.send_header("F7T-AppVersion", VERSION)
        self.send_header("F7T-Timestamp", str(time.time()))
        self.end_headers()

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self._headers(status, "application/json", len(data))
        self.wfile.write(data)

    def _bytes(self, status: int, data: bytes, kind: str = "application/octet-stream") -> None:
        self._headers(status, kind, len(data))
        self.wfile.write(data)

    def _empty(self, status: int) -> None:
        self._headers(status, "application/json", 0)
