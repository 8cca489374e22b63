"""The Slurm backend: ``sbatch`` on a login node (or any host of the cluster), shared filesystem.

Layout on the shared filesystem (``backend.workdir``, default ``$MAELSTROM_HOME/runs``):

- ``RUN_ID/``  the run directory: spec.yaml, job.sbatch (single runs), stdout.log, stderr.log,
  result.json, requeues.log, ``code/`` (the code snapshot of a single run)
- ``SWEEP_ID/``  a sweep's shared files: ``code/`` (one snapshot for all its jobs),
  ``arrays/NNN.txt`` (one run directory per array task), ``arrays/NNN.jsonl`` (the spec of each
  task, which the task writes into its run directory when it starts), ``arrays/NNN.sbatch``,
  ``slurm/`` (Slurm's own output of each task, before the job redirects to its run directory)

A sweep is one job array (several when it has more tasks than the cluster's ``MaxArraySize``),
named ``SWEEP_ID.NNN`` so that a later ``maelstrom runs resume`` finds what the cluster already
has. Job ids are ``ARRAYID_TASK`` for array tasks. Status of all jobs is one ``squeue`` and, for
those no longer queued, one ``sacct`` call (``scontrol show job`` when accounting is off).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from ..config.schema import SlurmConf
from ..config.secrets import job_environment
from ..core import paths
from ..core.errors import BackendError, ConfigError
from ..core.rundir import CANCELLED, RunDir, write_atomic
from ..core.spec import SPEC_FILE, RunSpec
from ..core.states import JobRef, JobState
from ..core.status import JobStatus, reconcile
from .base import Backend, Rendered, StatusCache, Submitted, wait_until_stopped
from .files import RemoteFiles
from .remote import MIRRORED, policy
from .script import Target, render_batch_script, worker_python
from .ssh import Connection, Mirror, SSHFiles
from .staging import repository_root, snapshot_files, stage

#: Slurm job states (``squeue %T`` / ``sacct State``) onto the contract's states, once.
STATES: dict[str, JobState] = {
    **dict.fromkeys(
        ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "PREEMPTED"),
        JobState.QUEUED,
    ),
    **dict.fromkeys(
        ("RUNNING", "COMPLETING", "STAGE_OUT", "SUSPENDED", "SIGNALING", "RESIZING", "STOPPED"),
        JobState.RUNNING,
    ),
    "COMPLETED": JobState.SUCCEEDED,
    **dict.fromkeys(
        (
            "FAILED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
            "SPECIAL_EXIT",
            "REVOKED",
        ),
        JobState.FAILED,
    ),
    "CANCELLED": JobState.CANCELLED,
}
WHY = {
    "TIMEOUT": "the time limit was reached (raise backend.resources.time)",
    "OUT_OF_MEMORY": "out of memory (raise backend.resources.memory)",
    "NODE_FAIL": "a node failed",
    "BOOT_FAIL": "a node failed to boot",
    "DEADLINE": "the deadline passed",
}
_MAX_ARRAY: dict[str, int] = {}


class SlurmError(BackendError):
    """Slurm refused a command or cannot be reached (one line, with what to do)."""


def base_id(job_id: str) -> str:
    return job_id.split("_", 1)[0]


#: ``job id -> (STATE, reason, exit code)`` as Slurm reports them.
States = dict[str, tuple[str, str, str]]


def slurm_error(backend: str, conf: SlurmConf, what: str, text: str, partitions: Sequence[str]) -> SlurmError:
    """Slurm's own refusal as one line naming the config key to change (same words from any transport)."""
    message = " ".join(line.strip() for line in text.strip().splitlines() if line.strip()) or "failed"
    res = conf.resources
    if "Unable to contact slurm controller" in message or "Connection refused" in message:
        cut = "; a sweep that was cut short continues with `maelstrom runs resume SWEEP_ID`"
        error = SlurmError(
            f"backend {backend}: the Slurm controller cannot be reached ({message}); check `sinfo` "
            "and retry" + (cut if what.startswith("sbatch") else "")
        )
        error.transient = True  # the controller restarts: watching goes on, see launch.monitor.wait
        return error
    if "Invalid partition" in message:
        return SlurmError(
            f"backend.resources.queue: partition {res.queue!r} does not exist on this cluster "
            f"(partitions: {', '.join(partitions) or '?'})"
        )
    if "Invalid account" in message:
        return SlurmError(
            f"backend.resources.account: {res.account!r} is not an account you may charge here "
            f"(or not on partition {res.queue or 'default'}); see `sacctmgr show assoc user=$USER`"
        )
    if "Invalid qos" in message:
        return SlurmError(f"backend.resources.qos: {res.qos!r} is not a QoS you may use here")
    if "time limit" in message.lower():
        return SlurmError(f"backend.resources.time: {res.time!r} is refused by the partition ({message})")
    if "Requested node configuration is not available" in message:
        return SlurmError(
            f"backend.resources: no node of partition {res.queue or 'default'} has what is asked "
            f"(nodes, cpus_per_task, gpus_per_node, memory, constraint): {message}"
        )
    return SlurmError(f"backend {backend}: `{what}` failed: {message}")


class SlurmTransport(ABC):
    """How the Slurm backend reaches the cluster: its commands here (:class:`SlurmCommands`), its REST
    daemon (:mod:`.slurmrest`), or the commands on a login node over SSH. Everything else (staging,
    scripts, arrays, map files, states) is the backend's, the same for every transport."""

    #: Run the worker as a job step (``srun``) even for one task: signals sent to a job's steps reach it.
    steps = False
    #: None: the cluster's filesystem is this machine's. Else the run directories here mirror those
    #: on the cluster (SSH): what is written is sent, results and logs are fetched.
    mirror: Mirror | None = None

    def __init__(self, name: str, conf: SlurmConf) -> None:
        self.name, self.conf = name, conf

    def connect(self) -> None:
        """Credentials checked and the cluster reached, before anything is recorded."""
        return None

    def open(self) -> None:
        """What must hold before anything is staged for a submission (credentials present and usable)."""
        return None

    def error(self, what: str, text: str) -> SlurmError:
        return slurm_error(self.name, self.conf, what, text, self.partitions())

    @abstractmethod
    def submit(self, script: Path, secrets: dict[str, str]) -> str:
        """Submit a written batch script; ``secrets`` join the job's environment. Returns the job id."""

    @abstractmethod
    def query(self, job_ids: Sequence[str]) -> States:
        """States of these jobs: queued and running ones first, then accounting for the rest."""

    @abstractmethod
    def listing(self, names: Sequence[str]) -> list[str]:
        """``JOBID|NAME`` of the jobs with these names, queued or finished (for adopting)."""

    @abstractmethod
    def cancel(self, ids: Sequence[str]) -> None:
        """Cancel jobs; ids Slurm does not know, or jobs already ending, are no error."""

    @abstractmethod
    def partitions(self) -> list[str]: ...

    @abstractmethod
    def max_array_size(self) -> int:
        """Array task indices must stay below this."""

    def shown(self, rendered: Rendered, cwd: str, specs: Sequence[RunSpec]) -> Rendered:
        """What the dry run shows for a rendered batch script (the script itself, here)."""
        return rendered


class SlurmCommands(SlurmTransport):
    """The Slurm commands on this machine (a login node, or a host of the cluster)."""

    def run(
        self, args: list[str], *, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        except FileNotFoundError:
            raise SlurmError(
                f"backend {self.name}: `{args[0]}` is not on PATH; run maelstrom-run on a login node of the "
                "cluster, or use a REST backend (slurmrest, unicore, firecrest)"
            ) from None
        except subprocess.TimeoutExpired:
            error = SlurmError(f"backend {self.name}: `{args[0]}` did not answer in 120 s; is slurmctld up?")
            error.transient = True
            raise error from None
        if check and proc.returncode != 0:
            raise self.error(" ".join(args[:2]), proc.stderr or proc.stdout)
        return proc

    def partitions(self) -> list[str]:
        proc = self.run(["sinfo", "-h", "-o", "%R"], check=False)
        return sorted(set(proc.stdout.split()))

    def max_array_size(self) -> int:
        if self.name not in _MAX_ARRAY:
            text = self.run(["scontrol", "show", "config"]).stdout
            m = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.M)
            _MAX_ARRAY[self.name] = int(m.group(1)) if m else 1001
        return _MAX_ARRAY[self.name]

    def submit(self, script: Path, secrets: dict[str, str]) -> str:
        env = {**os.environ, **secrets}
        proc = self.run(["sbatch", "--parsable", "--export=ALL", str(script)], env=env)
        return proc.stdout.strip().split(";")[0]

    def listing(self, names: Sequence[str]) -> list[str]:
        joined = ",".join(names)
        lines = self.run(["squeue", "-h", "-o", "%F|%j", f"--name={joined}"], check=False).stdout.splitlines()
        proc = self.run(
            ["sacct", "-X", "-P", "-n", "-o", "JobID,JobName", f"--name={joined}", "-S", "now-30days"],
            check=False,
        )
        return lines + (proc.stdout.splitlines() if proc.returncode == 0 else [])

    def query(self, job_ids: Sequence[str]) -> States:
        """One squeue and one sacct call. A terminal state in accounting is trusted over squeue's:
        after a controller restart squeue may show a job that had ended as running again."""
        bases = sorted({base_id(j) for j in job_ids})
        found: States = {}
        proc = self.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", f"--jobs={','.join(bases)}"], check=False)
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            raise self.error("squeue", proc.stderr)
        for line in proc.stdout.splitlines():
            job_id, state, reason = (line.split("|") + ["", ""])[:3]
            found[job_id.strip()] = (state.strip(), reason.strip(), "")
        accounting = self._accounting(bases)
        for job_id, entry in accounting.items():
            if job_id not in found or STATES.get(entry[0], JobState.UNKNOWN).terminal:
                found[job_id] = entry
        return found

    def _accounting(self, bases: Sequence[str]) -> States:
        proc = self.run(
            ["sacct", "-X", "-P", "-n", "-o", "JobID,State,ExitCode,Reason", f"--jobs={','.join(bases)}"],
            check=False,
        )
        found: States = {}
        if proc.returncode != 0:  # accounting disabled: what slurmctld still remembers
            for base in bases:
                text = self.run(["scontrol", "show", "-o", "job", base], check=False).stdout
                for line in text.splitlines():
                    fields = dict(re.findall(r"(\w+)=(\S*)", line))
                    task = fields.get("ArrayTaskId")
                    job = f"{fields.get('ArrayJobId')}_{task}" if task else fields.get("JobId", base)
                    found[job] = (
                        fields.get("JobState", ""),
                        fields.get("Reason", ""),
                        fields.get("ExitCode", ""),
                    )
            return found
        for line in proc.stdout.splitlines():
            job_id, state, exit_code, reason = (line.split("|") + ["", "", ""])[:4]
            state = state.split()[0] if state else ""
            for one in expand(job_id.strip()):
                found[one] = (state, reason, exit_code)
        return found

    def cancel(self, ids: Sequence[str]) -> None:
        proc = self.run(["scancel", *ids], check=False)
        if (
            proc.returncode != 0
            and "Invalid job id" not in proc.stderr
            and "already completing" not in proc.stderr
        ):
            raise self.error("scancel", proc.stderr)


class SlurmSSH(SlurmCommands):
    """The Slurm commands on a login node reached over SSH (``backend.ssh``); the run directories are
    mirrored there (:class:`~maelstrom_run.backends.ssh.Mirror`)."""

    def __init__(self, name: str, conf: SlurmConf) -> None:
        super().__init__(name, conf)
        assert conf.ssh is not None
        self.ssh = Connection(name, conf.ssh, policy(conf))
        self.mirror = Mirror(self.ssh)

    def connect(self) -> None:
        self.ssh.open()
        self.mirror.remote_root()

    def open(self) -> None:
        self.ssh.open()

    def run(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = self.ssh.run(shlex.join(args), input=input, what=f"`{' '.join(args[:2])}`")
        if proc.returncode == 127:
            raise SlurmError(
                f"backend {self.name}: `{args[0]}` is not on PATH on {self.ssh.where()}; is it a login node of "
                "a Slurm cluster (backend.ssh.host)?"
            )
        if check and proc.returncode != 0:
            raise self.error(" ".join(args[:2]), proc.stderr or proc.stdout)
        return proc

    def submit(self, script: Path, secrets: dict[str, str]) -> str:
        """``sbatch`` there; the secrets reach the job's environment through the connection's input
        (never a command line or a file)."""
        exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in secrets.items())
        # the login-node commands (Mantik's PreRunCommandOnLoginNode) run there, in the run's directory
        login = "".join(f"{command}\n" for command in self.conf.environment.login_pre_commands)
        if login:
            login = f"cd {shlex.quote(posixpath.dirname(str(script)))} || exit 2\nset -e\n{login}set +e\n"
        line = shlex.join(["sbatch", "--parsable", "--export=ALL", str(script)])
        proc = self.ssh.run("bash -s", input=f"{exports}{login}exec {line}\n", what="`sbatch`")
        if proc.returncode == 127:
            raise SlurmError(f"backend {self.name}: `sbatch` is not on PATH on {self.ssh.where()}")
        if proc.returncode != 0:
            raise self.error("sbatch", proc.stderr or proc.stdout)
        return proc.stdout.strip().split(";")[0]


class SlurmBackend(Backend):
    Conf = SlurmConf
    conf: SlurmConf

    def __init__(self, conf: SlurmConf, transport: SlurmTransport | None = None) -> None:
        super().__init__(conf)
        self.transport = transport or (SlurmSSH if conf.ssh else SlurmCommands)(self.name, conf)
        self._statuses = StatusCache()
        self._snapshots: dict[str, tuple[Path | None, list[str], str]] = {}
        self._sent: set[Path] = set()  # sweep directories whose code the cluster has (SSH)

    def connect(self) -> None:
        self.transport.connect()

    # -- rendering -------------------------------------------------------------------------------

    def _python(self) -> str:
        # over SSH this machine's interpreter is not there: the cluster's python3 (or the venv's)
        return worker_python(self.conf, "python3" if self.transport.mirror else sys.executable)

    def _staging(self, spec: RunSpec) -> tuple[Path | None, list[str], str]:
        """(repository root, files to stage, code dir relative to the snapshot) of a spec."""
        # over SSH nothing of this machine is there: the code of every kind of job is staged
        if (spec.kind != "app" and not self.transport.mirror) or not spec.code_dir:
            return None, [], ""
        if spec.code_dir not in self._snapshots:
            self._snapshots[spec.code_dir] = self._snapshot(Path(spec.code_dir))
        return self._snapshots[spec.code_dir]

    def _snapshot(self, code: Path) -> tuple[Path | None, list[str], str]:
        root = repository_root(code)
        if root is None and self.transport.mirror:
            # not a git repository: the directory itself, but never maelstrom-run's own state in it
            root = code.absolute()
            state = os.path.relpath(paths.home(), root)
            files = [f for f in snapshot_files(root, self.conf.exclude) if not f.startswith(state + os.sep)]
            return root, files, "."
        if root is None:  # not a git repository: nothing to snapshot, the job runs in place
            return None, [], ""
        return root, snapshot_files(root, self.conf.exclude), os.path.relpath(code, root)

    def _share_dir(self, spec: RunSpec) -> Path:
        """Where a spec's shared files go: the sweep's directory, or the run directory of a single run."""
        run_dir = Path(spec.run_dir)
        return run_dir.parent / spec.sweep_id if spec.sweep_id else run_dir

    def _code_dir(self, spec: RunSpec, share: Path) -> str:
        """Where the job runs: the staged snapshot of the repository, else the submitting directory."""
        root, _, relative = self._staging(spec)
        return str((share / "code" / relative).absolute()) if root is not None else (spec.code_dir or ".")

    def _remote(self, spec: RunSpec, path: str | Path) -> str:
        """Where a path of a spec's run (or sweep) directory is on the cluster."""
        mirror = self.transport.mirror
        return mirror.remote(path, Path(spec.run_dir).parent) if mirror else str(path)

    def _script(self, spec: RunSpec, target: Target, share: Path) -> str:
        code_dir = self._remote(spec, self._code_dir(spec, share))
        if target.array:
            output = str(share / "slurm" / "%A_%a.out")
            name = f"{spec.sweep_id}.{Path(str(target.map_file)).stem}"
        else:
            output = str(Path(spec.run_dir) / "slurm-%j.out")
            name = spec.run_id
        if self.transport.mirror:
            target = Target(
                run_dir=self._remote(spec, target.run_dir) if target.run_dir else None,
                map_file=self._remote(spec, target.map_file) if target.map_file else None,
                specs_file=self._remote(spec, target.specs_file) if target.specs_file else None,
                array=target.array,
            )
        return render_batch_script(
            self.conf,
            job_name=name,
            target=target,
            output=self._remote(spec, output),
            code_dir=code_dir,
            python=self._python(),
            steps=self.transport.steps,
        )

    def render(self, spec: RunSpec) -> Rendered:
        root, files, _ = self._staging(spec)
        share = self._share_dir(spec)
        text = self._script(spec, Target(run_dir=spec.run_dir), share)
        staged = [str(Path(spec.run_dir) / SPEC_FILE)] + [str(share / "code" / f) for f in files]
        staged = [self._remote(spec, f) for f in staged]
        rendered = Rendered(text=text, files=staged, meta={"source": str(root) if root else None})
        return self.transport.shown(rendered, spec.run_dir, [spec])

    def render_many(self, specs: Sequence[RunSpec]) -> list[Rendered]:
        out = [self.render(s) for s in specs if not s.sweep_id]
        for number, chunk in enumerate(self._chunks([s for s in specs if s.sweep_id])):
            _, files, _ = self._staging(chunk[0])
            share = self._share_dir(chunk[0])
            target = self._target(share, number, chunk)
            text = self._script(chunk[0], target, share)
            staged = [str(target.specs_file)] + [str(share / "code" / f) for f in files]
            staged = [self._remote(chunk[0], f) for f in staged]
            rendered = Rendered(text=text, files=staged, meta={"array": target.array, "map": target.map_file})
            out.append(self.transport.shown(rendered, str(Path(str(target.map_file)).parent), chunk))
        return out

    def _chunks(self, specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
        """Jobs with the same backend config go in one array, at most ``MaxArraySize`` tasks each."""
        if not specs:  # no sweep: the cluster need not be asked (a dry run of one job stays here)
            return []
        groups: dict[str, list[RunSpec]] = {}
        for spec in specs:
            groups.setdefault(repr(sorted(spec.backend.items())), []).append(spec)
        size = self.transport.max_array_size()
        if self.conf.max_array_size:
            size = min(size, self.conf.max_array_size)
        return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]

    def _target(self, share: Path, number: int, chunk: Sequence[RunSpec]) -> Target:
        throttle = max(1, self.conf.max_parallel)
        array = f"0-{len(chunk) - 1}" + (f"%{throttle}" if throttle < len(chunk) else "")
        arrays = share / "arrays"
        return Target(
            map_file=str(arrays / f"{number:03d}.txt"),
            specs_file=str(arrays / f"{number:03d}.jsonl"),
            array=array,
        )

    # -- submitting ------------------------------------------------------------------------------

    def submit_many(
        self,
        specs: Sequence[RunSpec],
        on_submitted: Submitted | None = None,
    ) -> list[str]:
        if not specs:
            return []
        self.transport.open()  # credentials first: nothing is staged for a token that cannot work
        secrets = job_environment([s.config for s in specs])
        staged: set[Path] = set()
        ids: dict[int, str] = {}
        for spec in (s for s in specs if not s.sweep_id):  # single runs: one job each
            Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
            # rendered from the spec as submitted, before staging
            text = self._script(spec, Target(run_dir=spec.run_dir), self._share_dir(spec))
            self._stage(spec, staged)
            spec.write()
            script = Path(spec.run_dir) / "job.sbatch"
            write_atomic(script, text)
            self._send(spec, [spec], [Path(spec.run_dir)])
            ids[id(spec)] = self.transport.submit(Path(self._remote(spec, script)), secrets)
            if on_submitted:
                on_submitted([spec], [ids[id(spec)]])
        for chunk in self._chunks([s for s in specs if s.sweep_id]):
            share = self._share_dir(chunk[0])
            target = self._target(share, _next_array_number(share / "arrays"), chunk)
            text = self._script(chunk[0], target, share)  # before staging points the specs at the copy
            for spec in chunk:
                self._stage(spec, staged)
            (share / "slurm").mkdir(parents=True, exist_ok=True)
            map_file, specs_file = Path(str(target.map_file)), Path(str(target.specs_file))
            write_atomic(map_file, "".join(f"{self._remote(s, s.run_dir)}\n" for s in chunk))
            write_atomic(specs_file, "".join(self._on_cluster(s).to_json() + "\n" for s in chunk))
            script = map_file.with_suffix(".sbatch")
            write_atomic(script, text)
            # the run directories exist here only for what a job takes along (a Hydra task's payload)
            sent = [Path(s.run_dir) for s in chunk if s.payload] + [
                map_file,
                specs_file,
                script,
                share / "slurm",
            ]
            if share not in self._sent:
                sent.append(share / "code")
            self._send(chunk[0], [], [p for p in sent if p.exists()])
            self._sent.add(share)
            array_id = self.transport.submit(Path(self._remote(chunk[0], script)), secrets)
            chunk_ids = [f"{array_id}_{i}" for i in range(len(chunk))]
            if on_submitted:
                on_submitted(chunk, chunk_ids)
            ids.update((id(s), j) for s, j in zip(chunk, chunk_ids, strict=True))
        return [ids[id(s)] for s in specs]

    def _send(self, first: RunSpec, specs: Sequence[RunSpec], paths: list[Path]) -> None:
        """Over SSH: what was just written for ``specs`` to the cluster, each ``spec.yaml`` in the form
        the worker reads there (its run directory ``.``, its code relative to it)."""
        mirror = self.transport.mirror
        if mirror is None:
            return
        root = Path(first.run_dir).parent
        data = {
            os.path.relpath(Path(spec.run_dir) / SPEC_FILE, root): self._on_cluster(spec).to_yaml().encode()
            for spec in specs
        }
        mirror.send(root, paths, data)

    def _on_cluster(self, spec: RunSpec) -> RunSpec:
        """The spec as the worker reads it on the cluster: over SSH its run directory ``.`` and its code
        relative to it (both resolved against the directory of its ``spec.yaml``)."""
        if self.transport.mirror is None:
            return spec
        code, root = spec.code_dir, Path(spec.run_dir).parent
        if code and not os.path.relpath(code, root).startswith(".."):
            code = os.path.relpath(code, spec.run_dir)
        return dataclasses.replace(spec, run_dir=".", code_dir=code)

    def _stage(self, spec: RunSpec, done: set[Path]) -> None:
        """Copy the snapshot (once per sweep) and point the spec at it."""
        share = self._share_dir(spec)
        root, files, _ = self._staging(spec)
        if root is not None and share not in done:
            stage(root, files, share / "code")
            (share / "code").mkdir(parents=True, exist_ok=True)  # the job cds there, even when empty
            done.add(share)
        spec.code_dir = self._code_dir(spec, share)

    def adopt(self, specs: Sequence[RunSpec]) -> dict[str, str]:
        """Array tasks (found by the arrays' job names) and single jobs (by run id) the cluster has."""
        wanted = {self._remote(s, s.run_dir): s.run_id for s in specs}
        found: dict[str, str] = {}
        for share in sorted({self._share_dir(s) for s in specs if s.sweep_id}):
            for map_file, job_ids in self.existing_arrays(share).items():
                lines = Path(map_file).read_text().splitlines()
                for index, run_dir in enumerate(lines):
                    if run_dir in wanted and wanted[run_dir] not in found:
                        found[wanted[run_dir]] = f"{job_ids[0]}_{index}"
        singles = [s.run_id for s in specs if not s.sweep_id]
        if singles:
            for line in self.transport.listing(singles):
                job_id, _, name = line.partition("|")
                if name in singles:
                    found.setdefault(name, base_id(job_id))
        return found

    def existing_arrays(self, share: Path) -> dict[str, list[str]]:
        """Array jobs the cluster has for a sweep directory: map file -> job ids."""
        names = {f"{share.name}.{p.stem}": p for p in sorted((share / "arrays").glob("*.txt"))}
        if not names:
            return {}
        found: dict[str, list[str]] = {}
        for line in self.transport.listing(list(names)):
            job_id, _, name = line.partition("|")
            if name in names:
                found.setdefault(str(names[name]), [])
                base = base_id(job_id.strip())
                if base not in found[str(names[name])]:
                    found[str(names[name])].append(base)
        return found

    # -- status ----------------------------------------------------------------------------------

    def status(self, jobs: Sequence[JobRef]) -> dict[str, JobStatus]:
        def query() -> dict[str, JobStatus]:
            states = self.transport.query([j.job_id for j in jobs])
            self._fetch(jobs, MIRRORED)  # after the states: a result written meanwhile is seen
            out = {job.run_id: self._combine(job, states) for job in jobs}
            return out

        return self._statuses.get(jobs, query)

    def _combine(self, job: JobRef, states: dict[str, tuple[str, str, str]]) -> JobStatus:
        entry = states.get(job.job_id) or states.get(base_id(job.job_id))
        forgotten = f"Slurm no longer knows job {job.job_id}"
        if entry is None:
            return reconcile(None, job.run_dir, forgotten=forgotten)
        slurm_state, reason, exit_code = entry
        waiting = ""
        if reason and reason not in ("None", "(null)"):
            waiting = "held" if "Held" in reason else f"waiting: {reason}"
        return reconcile(
            STATES.get(slurm_state, JobState.UNKNOWN),
            job.run_dir,
            name=f"Slurm state {slurm_state}",
            exit_code=_exit_code(exit_code),
            why=WHY.get(slurm_state, ""),
            waiting=waiting,
            forgotten=forgotten,
        )

    def _fetch(self, jobs: Sequence[JobRef], names: Sequence[str]) -> None:
        """Over SSH: these files of the jobs' run directories (``***``: all but the code) from the cluster."""
        mirror = self.transport.mirror
        if mirror is None or not jobs:
            return
        roots: dict[Path, list[str]] = {}
        for job in jobs:
            run = Path(job.run_dir)
            roots.setdefault(run.parent, []).extend(f"{run.name}/{name}" for name in names)
            if "slurm-*.out" in names and "_" in job.job_id:  # an array task's own Slurm output
                roots[run.parent].append(f"*/slurm/{job.job_id}.out")
        for root, patterns in roots.items():
            mirror.fetch(root, patterns, exclude=[f"/{Path(j.run_dir).name}/code/" for j in jobs])

    # -- logs, cancel, download ------------------------------------------------------------------

    def logs(self, job: JobRef, stream: str = "stdout") -> str:
        self._fetch([job], [f"{stream}.log", "slurm-*.out"])
        run_dir = Path(job.run_dir)
        text = ""
        try:
            text = (run_dir / f"{stream}.log").read_text(errors="replace")
        except FileNotFoundError:
            pass
        if stream == "stderr":  # what Slurm itself wrote before the job redirected its output
            for path in [*run_dir.glob("slurm-*.out"), *_array_outputs(job)]:
                extra = path.read_text(errors="replace")
                if extra.strip():
                    text = f"{extra}{text}"
        return text

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        if not jobs:
            return
        for job in jobs:  # a job that starts after this sees the marker and does nothing
            RunDir(job.run_dir).mark_cancelled()
        if self.transport.mirror:
            for root in {Path(j.run_dir).parent for j in jobs}:
                marks = [Path(j.run_dir) / CANCELLED for j in jobs if (Path(j.run_dir) / CANCELLED).exists()]
                self.transport.mirror.send(root, [m for m in marks if m.parent.parent == root])
        ids = sorted({j.job_id for j in jobs})
        self.transport.cancel(ids)
        self._statuses.clear()

        # scancel returns before slurmctld has moved the jobs on: wait (briefly) until it has
        def states() -> list[JobState | None]:
            found = self.transport.query(ids)
            return [STATES.get(found.get(i, ("",))[0]) for i in ids]

        wait_until_stopped(states)

    def download(self, job: JobRef, dest: Path) -> Path:
        self._fetch([job], ["***"])
        target = Path(dest) / job.run_id
        if not Path(job.run_dir).is_dir():
            raise ConfigError(
                f"run directory {job.run_dir} of {job.run_id} is gone from the shared filesystem"
            )
        if Path(job.run_dir).resolve() != target.resolve():
            shutil.copytree(job.run_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("code"))
        return target

    def files(self) -> RemoteFiles:
        """Over SSH the cluster's files; else this machine's (a shared filesystem)."""
        mirror = self.transport.mirror
        return SSHFiles(mirror.ssh) if mirror else super().files()


def _next_array_number(arrays: Path) -> int:
    numbers = [int(p.stem) for p in arrays.glob("*.txt") if p.stem.isdigit()]
    return max(numbers, default=-1) + 1


def expand(job_id: str) -> list[str]:
    """``12_[0-3,7%2]`` -> ``12_0 .. 12_3, 12_7``; other ids unchanged."""
    m = re.match(r"^(\d+)_\[([^\]]+)\]$", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        first, _, last = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(first), int(last or first) + 1)]
    return out


def _exit_code(text: str) -> int | None:
    m = re.match(r"^(\d+)(?::(\d+))?$", text.strip()) if text else None
    if not m:
        return None
    code, signal = int(m.group(1)), int(m.group(2) or 0)
    return code if code or not signal else 128 + signal


def _array_outputs(job: JobRef) -> list[Path]:
    if "_" not in job.job_id:
        return []
    base, task = job.job_id.split("_", 1)
    run_dir = Path(job.run_dir)
    return list(run_dir.parent.glob(f"*/slurm/{base}_{task}.out"))
