"""The slurmrest backend: Slurm through its own REST daemon (slurmrestd, OpenAPI ``v0.0.38``).

Everything but the transport is the Slurm backend's (:mod:`.slurm`): the run and sweep directories
on a filesystem shared with the cluster, the batch script, job arrays with their map files, result
files, requeue counting and the table of Slurm states. Job ids are Slurm's (``ARRAYID_TASK`` for
array tasks). What goes over HTTP instead of through the Slurm commands:

- **submit**: ``POST /slurm/VERSION/job/submit`` with ``{"script": ..., "job": {...}}``. slurmrestd
  does not read ``#SBATCH`` lines, so the script's directives are sent as job properties (one
  table, :data:`_PROPERTIES`); the job's environment is ``PATH``, maelstrom-run's own settings
  (``MAELSTROM_HOME``, and ``MAELSTROM_CACHE``, ``MLFLOW_TRACKING_URI`` when set) and the secrets
  the job needs (:func:`~maelstrom_run.config.secrets.job_environment`), never the whole environment
  of the submitting process. The dry run shows this payload with each secret as its reference.
- **status**: ``GET /slurm/VERSION/jobs`` (one call) and, for jobs slurmctld no longer holds,
  ``GET /slurmdb/VERSION/jobs?step=IDS`` (accounting).
- **cancel**: ``DELETE /slurm/VERSION/job/ID``; **adopt**: the same listings, by job name.
- **MaxArraySize** is not served by slurmrestd 22.05: ``backend.max_array_size``, else 1001
  (Slurm's default).

Authentication: the headers ``X-SLURM-USER-NAME`` (``backend.credentials.user``, default the
current user) and ``X-SLURM-USER-TOKEN`` (``backend.credentials.token``, a secret reference to a
JWT from ``scontrol token``). An expired or malformed token is refused before any request.
slurmrestd 22.05 answers a token that slurmctld refuses with HTTP 500 and no reason; such a
failure is followed by one accounting request that tells a refused token apart.

slurmrestd 22.05 cannot ask for the time-limit warning to reach the batch shell (``--signal=B:``):
the warning (``USR1``) goes to the job's steps, so the script runs the worker as a step (``srun``).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.schema import SlurmRestConf
from ..config.secrets import job_environment, resolve
from ..core import paths
from ..core.errors import ConfigError, UserError
from ..core.retry import RETRY_STATUSES, Transient
from ..core.spec import RunSpec
from .base import Rendered
from .remote import GatewayError, http_error, policy, with_retries
from .script import worker_python
from .slurm import SlurmBackend, SlurmTransport, States, base_id, expand

#: The OpenAPI version whose job description this module writes.
API_VERSION = "v0.0.38"
#: Slurm's default ``MaxArraySize`` (slurmrestd 22.05 does not tell the configured one).
DEFAULT_MAX_ARRAY_SIZE = 1001
#: ``sbatch`` long options whose job property is not the option's name with ``_`` for ``-``.
_PROPERTIES = {
    "job-name": "name",
    "mem": "memory_per_node",
    "mem-per-cpu": "memory_per_cpu",
    "mem-per-gpu": "memory_per_gpu",
    "time": "time_limit",
    "time-min": "time_minimum",
    "output": "standard_output",
    "error": "standard_error",
    "input": "standard_input",
    "constraint": "constraints",
    "chdir": "current_working_directory",
    "begin": "begin_time",
    "exclude": "exclude_nodes",
    "license": "licenses",
    "ntasks": "tasks",
    "ntasks-per-node": "tasks_per_node",
    "ntasks-per-core": "tasks_per_core",
    "ntasks-per-socket": "tasks_per_socket",
    "mincpus": "minimum_cpus_per_node",
    "use-min-nodes": "minimum_nodes",
    "tmp": "temporary_disk_per_node",
    "hint": "cpu_binding_hint",
    "mem-bind": "memory_binding",
    "gpu-bind": "gpu_binding",
    "gpu-freq": "gpu_frequency",
    "cpu-freq": "cpu_frequency",
    "core-spec": "core_specification",
    "thread-spec": "thread_specification",
    "kill-on-invalid-dep": "kill_on_invalid_dependency",
    "bb": "burst_buffer",
}
#: Job properties of OpenAPI v0.0.38 (``v0.0.38_job_properties``, and three more slurmrestd takes).
_KNOWN = frozenset(
    """account account_gather_frequency argv array batch_features begin_time burst_buffer
    cluster_constraint comment constraints container core_specification cores_per_socket
    cpu_binding cpu_binding_hint cpu_frequency cpus_per_gpu cpus_per_task
    current_working_directory deadline delay_boot dependency distribution environment
    exclude_nodes exclusive get_user_environment gpu_binding gpu_frequency gpus gpus_per_node
    gpus_per_socket gpus_per_task gres gres_flags hold kill_on_invalid_dependency licenses
    mail_type mail_user mcs_label memory_binding memory_per_cpu memory_per_gpu memory_per_node
    minimum_cpus_per_node minimum_nodes name nice no_kill nodelist nodes open_mode oversubscribe
    partition prefer priority qos requeue reservation signal sockets_per_node spread_job
    standard_error standard_input standard_output tasks tasks_per_core tasks_per_node
    tasks_per_socket temporary_disk_per_node thread_specification threads_per_core time_limit
    time_minimum wait_all_nodes wckey""".split()
)
#: Value of a property given as a bare flag (``--exclusive``).
_FLAGS = {"exclusive": "exclusive"}
#: What the submitting side hands the job of its own environment (when set).
_PASSED = ("MAELSTROM_CACHE", "MLFLOW_TRACKING_URI")
#: Slurm's answers to a cancel that are no error (unknown job, job already ending).
_CANCEL_OK = ("Invalid job id", "already completing", "already completed")


class SlurmRest(SlurmTransport):
    """Slurm's REST daemon as the Slurm backend's transport."""

    steps = True
    conf: SlurmRestConf

    def __init__(self, name: str, conf: SlurmRestConf) -> None:
        super().__init__(name, conf)
        self.version = conf.api_version
        if self.version != API_VERSION:
            raise ConfigError(
                f"backend.api_version: {self.version!r} is not supported; use {API_VERSION} "
                "(slurmrestd -s openapi/v0.0.38)"
            )
        self._http: Any = None

    # -- talking to slurmrestd -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.conf.url.rstrip("/")

    def _session(self) -> Any:
        """An HTTP session with the credentials resolved now (in memory only)."""
        if self._http is None:
            import requests

            creds = self.conf.credentials
            if not creds.get("token"):
                raise ConfigError(
                    "backend.credentials.token: not set; use a secret reference to a token from "
                    "`scontrol token`, e.g. ${secret:env:SLURM_JWT}"
                )
            user = resolve(creds["user"]) if creds.get("user") else getpass.getuser()
            token = resolve(creds["token"]).strip()
            self._check_token(token, user)
            session = requests.Session()
            session.headers.update(
                {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token, "Accept": "application/json"}
            )
            self._http = session
        return self._http

    def _check_token(self, token: str, user: str) -> None:
        """Refuse a token that is no JWT or has expired, before any request carries it."""
        parts = token.split(".")
        try:
            if len(parts) != 3:
                raise ValueError
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            if not isinstance(claims, dict):
                raise ValueError
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise GatewayError(
                f"backend {self.name}: backend.credentials.token is not a Slurm token (a JWT); get one "
                f"with `scontrol token username={user}` (nothing was submitted)"
            ) from None
        expires = claims.get("exp")
        if isinstance(expires, int | float) and expires < time.time():
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires))
            raise GatewayError(
                f"backend {self.name}: the token in backend.credentials.token expired at {when}; get a "
                f"new one with `scontrol token username={user} lifespan=SECONDS` (nothing was submitted)"
            )

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        body: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON answer)``; retried while slurmrestd cannot be reached."""
        session = self._session()
        headers = {"Content-Type": "application/json"} if body is not None else None

        def call() -> Any:
            response = session.request(
                method, self.url + path, params=params, data=body, headers=headers, timeout=(10, 120)
            )
            if response.status_code in RETRY_STATUSES:
                raise Transient(f"HTTP {response.status_code} from {self.url}")
            return response

        response = with_retries(call, backend=self.name, what=what, retry=policy(self.conf))
        if response.status_code in (401, 403):
            raise http_error(self.name, what, response.status_code, response.text)
        try:
            data = response.json()
        except ValueError:
            raise http_error(self.name, what, response.status_code, response.text) from None
        if not isinstance(data, dict):
            raise http_error(self.name, what, response.status_code, "the answer is not a JSON object")
        return response.status_code, data

    def _path(self, plugin: str, rest: str) -> str:
        return f"/{plugin}/{self.version}/{rest}"

    def _fail(self, method: str, path: str, what: str, status: int, data: dict[str, Any]) -> None:
        """Raise the clearest error for a refused request: a refused token, Slurm's reason, or HTTP's."""
        text = _error_text(data)
        if (status >= 500 or "authentication" in text.lower()) and self._token_refused():
            raise GatewayError(
                f"backend {self.name}: {what} was refused: Slurm does not accept the token in "
                "backend.credentials.token (wrong, expired or for another user; slurmrestd answered "
                f"HTTP {status}); get a new one with `scontrol token`"
                + (" (nothing was submitted)" if method == "POST" else "")
            )
        if status == 404 and not text:
            raise http_error(self.name, what, 404, f"{path}; is openapi/{self.version} loaded in slurmrestd?")
        if status >= 500 and not _slurm_reason(data):
            raise http_error(self.name, what, status, text)
        raise self.error(f"{method} {path}", text or f"HTTP {status}")

    def _token_refused(self) -> bool:
        """Whether Slurm refuses the token (asked of slurmdbd, which says so where slurmctld does not)."""
        try:
            status, data = self._request("GET", self._path("slurmdb", "tres"), what="checking the token")
        except GatewayError:
            return False
        text = _error_text(data)
        return "Protocol authentication error" in text or status in (401, 403)

    def _get(self, plugin: str, rest: str, *, what: str, params: dict[str, str] | None = None) -> dict:
        path = self._path(plugin, rest)
        status, data = self._request("GET", path, what=what, params=params)
        if status >= 400 or (data.get("errors") and not _nothing_found(data)):
            self._fail("GET", path, what, status, data)
        return data

    def connect(self) -> None:
        """The token is checked and slurmctld reached (a refused token is told apart, as in submit)."""
        self._get("slurm", "ping", what="connecting")

    def partitions(self) -> list[str]:
        try:
            data = self._get("slurm", "partitions", what="listing partitions")
        except UserError:
            return []
        return sorted(p["name"] for p in data.get("partitions") or [] if p.get("name"))

    def max_array_size(self) -> int:
        return self.conf.max_array_size or DEFAULT_MAX_ARRAY_SIZE

    # -- the payload -----------------------------------------------------------------------------

    def _environment(self, secrets: dict[str, str]) -> dict[str, str]:
        python = worker_python(self.conf, sys.executable)
        path = "/usr/local/bin:/usr/bin:/bin"
        if os.path.isabs(python):
            path = f"{Path(python).parent}:{path}"
        env = {"PATH": path, "MAELSTROM_HOME": str(paths.home())}
        env.update({name: os.environ[name] for name in _PASSED if os.environ.get(name)})
        return {**env, **secrets}

    def payload(self, script: str, cwd: str, environment: dict[str, str]) -> str:
        """The exact request body of ``job/submit`` for a batch script (JSON, keys sorted)."""
        job = job_properties(script, self.version)
        job.setdefault("current_working_directory", cwd)
        job["environment"] = environment
        return json.dumps({"script": script, "job": job}, indent=2, sort_keys=True) + "\n"

    def shown(self, rendered: Rendered, cwd: str, specs: Sequence[RunSpec]) -> Rendered:
        """The exact ``job/submit`` payload, with each secret as its reference."""
        shown = self._environment(job_environment([s.config for s in specs], resolved=False))
        text = self.payload(rendered.text, cwd, shown)
        return Rendered(text=text, files=rendered.files, meta={**rendered.meta, "syntax": "json"})

    # -- submitting ------------------------------------------------------------------------------

    def open(self) -> None:
        self._session()

    def submit(self, script: Path, secrets: dict[str, str]) -> str:
        body = self.payload(script.read_text(), str(script.parent), self._environment(secrets))
        path = self._path("slurm", "job/submit")
        what = f"submitting {script}"
        status, data = self._request("POST", path, what=what, body=body)
        job_id = data.get("job_id")
        if status >= 400 or not isinstance(job_id, int):  # errors beside a job id are notes
            self._fail("POST", path, what, status, data)
        return str(job_id)

    def listing(self, names: Sequence[str]) -> list[str]:
        wanted = set(names)
        lines = [
            f"{job.get('array_job_id') or job['job_id']}|{job['name']}"
            for job in self._jobs(what="listing jobs by name")
            if job.get("name") in wanted
        ]
        params = {"job_name": ",".join(sorted(wanted)), "start_time": "now-30days"}
        for job in self._accounted(params, what="listing finished jobs by name"):
            array = (job.get("array") or {}).get("job_id")
            lines.append(f"{array or job['job_id']}|{job.get('name', '')}")
        return lines

    # -- status ----------------------------------------------------------------------------------

    def _jobs(self, *, what: str) -> list[dict[str, Any]]:
        return list(self._get("slurm", "jobs", what=what).get("jobs") or [])

    def _accounted(self, params: dict[str, str], *, what: str) -> list[dict[str, Any]]:
        """Jobs from accounting (none when slurmrestd serves no ``openapi/dbVERSION``)."""
        path = self._path("slurmdb", "jobs")
        status, data = self._request("GET", path, what=what, params=params)
        if status == 404 or _nothing_found(data):
            return []
        if status >= 400 or data.get("errors"):
            self._fail("GET", path, what, status, data)
        return list(data.get("jobs") or [])

    def query(self, job_ids: Sequence[str]) -> States:
        """``job id -> (STATE, reason, exit code)``: slurmctld's listing, then accounting for the rest."""
        bases = {base_id(j) for j in job_ids}
        found: States = {}
        for job in self._jobs(what="job status"):
            array, task = job.get("array_job_id") or 0, job.get("array_task_id")
            if str(array or job["job_id"]) not in bases:
                continue
            raw = int(job.get("exit_code") or 0)
            entry = (str(job.get("job_state") or ""), str(job.get("state_reason") or ""), _status(raw))
            if array and job.get("array_task_string"):  # tasks not started yet, in one record
                for one in expand(f"{array}_[{job['array_task_string']}]"):
                    found.setdefault(one, entry)
            elif array and task is not None:
                found[f"{array}_{task}"] = entry
            else:
                found[str(job["job_id"])] = entry
        rest = sorted({base_id(j) for j in job_ids if j not in found})
        if rest:
            found.update(self._accounting(rest))
        return found

    def _accounting(self, bases: Sequence[str]) -> States:
        found: States = {}
        for job in self._accounted({"step": ",".join(bases)}, what="job status from accounting"):
            array = job.get("array") or {}
            key = f"{array['job_id']}_{array['task_id']}" if array.get("job_id") else str(job["job_id"])
            state = job.get("state") or {}
            current = str(state.get("current") or "")
            exit_code = job.get("exit_code") or {}
            code = ""
            # slurmdbd's plugin reports SUCCESS for every job in 22.05: trust it for completed ones only
            if exit_code.get("status") != "SUCCESS" or current == "COMPLETED":
                code = f"{int(exit_code.get('return_code') or 0)}:0"
            found[key] = (current, str(state.get("reason") or ""), code)
        return found

    # -- cancel ----------------------------------------------------------------------------------

    def cancel(self, ids: Sequence[str]) -> None:
        for job_id in ids:
            path = self._path("slurm", f"job/{job_id}")
            what = f"cancelling job {job_id}"
            status, data = self._request("DELETE", path, what=what)
            text = _error_text(data)
            if (status >= 400 or text) and not any(ok in text for ok in _CANCEL_OK):
                self._fail("DELETE", path, what, status, data)


class SlurmRestBackend(SlurmBackend):
    """The Slurm backend over slurmrestd."""

    Conf = SlurmRestConf

    def __init__(self, conf: SlurmRestConf) -> None:
        super().__init__(conf, SlurmRest(conf.name or conf.kind, conf))


def job_properties(script: str, version: str = API_VERSION) -> dict[str, Any]:
    """The script's ``#SBATCH`` directives as slurmrestd job properties."""
    job: dict[str, Any] = {}
    for line in script.splitlines():
        if not line.startswith("#SBATCH "):
            continue
        words = shlex.split(line[len("#SBATCH ") :])
        option = words[0] if words else ""
        if not option.startswith("--"):
            raise ConfigError(
                f"backend.sbatch_options: write {option!r} as a long option (--name=value) for slurmrestd"
            )
        name, eq, value = option[2:].partition("=")
        key = _PROPERTIES.get(name, name.replace("-", "_"))
        if key not in _KNOWN:
            raise ConfigError(
                f"backend.sbatch_options: {option} has no job property in slurmrestd's {version} API; "
                "leave it out for this backend"
            )
        if key == "signal":  # the warning goes to the job's steps (no ``B:`` through slurmrestd)
            value = value.split(":", 1)[1] if ":" in value else value
        job[key] = (int(value) if value.isdigit() else value) if eq else _FLAGS.get(key, True)
    return job


def _status(raw: int) -> str:
    """A wait status (``exit_code`` of slurmctld's job listing) as Slurm's ``CODE:SIGNAL``."""
    return f"{raw >> 8 & 0xFF}:{raw & 0x7F}"


def _error_text(data: dict[str, Any]) -> str:
    """Slurm's ``errors`` entries as one line."""
    parts = []
    for entry in data.get("errors") or []:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        words = [str(entry[k]) for k in ("error", "description") if entry.get(k)]
        if words:
            parts.append(": ".join(dict.fromkeys(words)))
    return "; ".join(parts)


def _slurm_reason(data: dict[str, Any]) -> bool:
    """Whether an error entry carries one of Slurm's own error numbers (a reason, not a failure)."""
    for entry in data.get("errors") or []:
        if isinstance(entry, dict):
            number = entry.get("error_code", entry.get("error_number", entry.get("errno")))
            if isinstance(number, int) and 0 < number < 5000:
                return True
    return False


def _nothing_found(data: dict[str, Any]) -> bool:
    """slurmdbd's answer to a query that matches no job (an ``errors`` entry, not an error)."""
    errors = data.get("errors") or []
    return bool(errors) and all(
        isinstance(e, dict) and (e.get("error_number") == 9003 or "Nothing found" in str(e.get("error")))
        for e in errors
    )


__all__ = ["SlurmRestBackend", "job_properties"]
