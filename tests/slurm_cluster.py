"""The local single-node Slurm of ``scripts/local-slurm.sh`` as a pytest fixture.

``slurm`` (session scope) makes sure the cluster runs (starting it, installing the packages if
needed, when the tests run as root) and returns a :class:`SlurmCluster`. Its REST daemon
(slurmrestd) answers at :attr:`SlurmCluster.rest_url` to tokens from :meth:`SlurmCluster.token`.
The tests are skipped, with the reason, when there is no Slurm and the script cannot start one
(not root), or when ``MAELSTROM_TEST_SLURM=0``. CI always has it. Jobs submitted through
:meth:`SlurmCluster.submit` that are still queued or running at the end of the session are cancelled.

Import the fixture from ``conftest.py`` (``from slurm_cluster import slurm``) or from a test module.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local-slurm.sh"
#: slurmrestd of the local cluster (``LOCAL_SLURM_REST_PORT`` as in the script).
REST_URL = f"http://127.0.0.1:{os.environ.get('LOCAL_SLURM_REST_PORT', '6820')}"

#: sacct states after which a job (or array task) does not run again by itself.
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


def _slurm(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {result.returncode}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


#: Seconds between a requeue and the restart that ``make_eligible`` allows (instead of about 120).
_RESTART_DELAY_S = 5


@dataclass
class SlurmCluster:
    """The running local cluster: its partitions, accounts, limits and a few helpers for tests."""

    partitions: tuple[str, ...]
    default_partition: str
    accounts: tuple[str, ...]
    max_array_size: int
    cluster_name: str
    submitted: list[str] = field(default_factory=list)
    rest_url: str = REST_URL

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Slurm command (``sbatch``, ``squeue``, ...) and return its stdout."""
        return _slurm(*args, check=check, timeout=timeout).stdout

    def submit(self, *args: str, cwd: Path | str | None = None) -> str:
        """``sbatch --parsable ARGS`` (with ``--chdir=cwd`` when given); returns the job id."""
        extra = [f"--chdir={cwd}"] if cwd is not None else []
        job_id = self.run("sbatch", "--parsable", *extra, *args).strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    def states(self, job_id: str) -> dict[str, str]:
        """``{job or array task id: state}`` from ``sacct`` (``CANCELLED by 0`` reads ``CANCELLED``)."""
        out = self.run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State")
        states: dict[str, str] = {}
        for line in out.splitlines():
            if "|" in line:
                task, state = line.split("|", 1)
                states[task] = state.split()[0] if state else state
        return states

    def controller_states(self, job_id: str) -> dict[str, str]:
        """``{job or array task id: state}`` as ``slurmctld`` sees it now (``scontrol show job``)."""
        out = self.run("scontrol", "show", "job", "-o", job_id)
        states: dict[str, str] = {}
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobState" not in fields:
                continue
            array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            key = f"{array}_{task}" if array and task else fields["JobId"]
            states[key] = fields["JobState"]
        return states

    def wait(self, job_id: str, timeout: float = 120, poll: float = 0.5) -> dict[str, str]:
        """Wait until the job (every task of an array) has reached a terminal state and ``sacct``
        agrees with the controller; return :meth:`states`."""
        deadline = time.monotonic() + timeout
        while True:
            ctld = self.controller_states(job_id)
            if ctld and all(s in TERMINAL_STATES for s in ctld.values()):
                states = self.states(job_id)
                if states == ctld:
                    return states
            else:
                states = {}
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} did not finish within {timeout:.0f}s: slurmctld {ctld}, sacct {states}"
                )
            time.sleep(poll)

    def make_eligible(self, job_id: str, timeout: float = 60) -> None:
        """A requeued batch job waits about two minutes (reason ``BeginTime``) before it may start
        again: wait until it is back in the queue, then let it start a few seconds later."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False).strip()
            if state == "PENDING|BeginTime":
                # slurmd refuses to launch a job it killed moments ago ("already killed, do not
                # launch batch job"): let it start a few seconds from now, not at once
                self.run("scontrol", "update", f"JobId={job_id}", f"StartTime=now+{_RESTART_DELAY_S}")
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is not waiting for its begin time: {state!r}")
            time.sleep(0.2)

    def jobs_named(self, prefix: str) -> dict[str, str]:
        """Job id -> name of every job (queued or finished) whose name starts with ``prefix``."""
        lines = self.run("squeue", "-h", "-o", "%F|%j").splitlines()
        lines += self.run("sacct", "-X", "-P", "-n", "-S", "now-2hours", "-o", "JobID,JobName").splitlines()
        found = {}
        for line in lines:
            job_id, _, name = line.partition("|")
            if name.startswith(prefix):
                found[job_id.split("_")[0]] = name
        return found

    def cancel(self, *job_ids: str) -> None:
        if job_ids:
            self.run("scancel", *job_ids, check=False)

    def token(self, user: str | None = None, lifespan: int = 3600) -> str:
        """A JWT for slurmrestd (``scontrol token``) of ``user``, by default the current user."""
        out = self.run("scontrol", "token", f"username={user or getpass.getuser()}", f"lifespan={lifespan}")
        return out.strip().partition("SLURM_JWT=")[2]

    def config(self, key: str) -> str:
        """A value of ``scontrol show config`` (e.g. ``MaxArraySize``)."""
        return _show_config().get(key, "")


def _show_config() -> dict[str, str]:
    out = _slurm("scontrol", "show", "config").stdout
    config: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def _start_cluster() -> str | None:
    """Start the cluster if needed; return why the Slurm tests must be skipped, or ``None``."""
    if os.environ.get("MAELSTROM_TEST_SLURM", "1") == "0":
        return "MAELSTROM_TEST_SLURM=0"
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
    if status.returncode == 0:
        return None
    if os.geteuid() != 0:
        have = "sbatch is installed" if shutil.which("sbatch") else "sbatch is not installed"
        return f"no local Slurm running ({have}); start one as root with: bash {SCRIPT} start"
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if start.returncode != 0:
        if shutil.which("sbatch") is None:
            return f"sbatch is not installed and {SCRIPT.name} start failed: {start.stderr.strip()[-500:]}"
        pytest.fail(f"{SCRIPT} start failed:\n{start.stdout}\n{start.stderr}")
    return None


def _user_accounts() -> tuple[str, ...]:
    user = getpass.getuser()
    out = _slurm("sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account").stdout
    return tuple(sorted({a for a in out.split() if a}))


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """The local Slurm cluster (started on first use); skips when there is none and it cannot start."""
    reason = _start_cluster()
    if reason is not None:
        pytest.skip(reason)
    names = _slurm("sinfo", "-h", "-o", "%P").stdout.split()
    default = next((n.rstrip("*") for n in names if n.endswith("*")), names[0] if names else "")
    config = _show_config()
    cluster = SlurmCluster(
        partitions=tuple(n.rstrip("*") for n in names),
        default_partition=default,
        accounts=_user_accounts(),
        max_array_size=int(config.get("MaxArraySize", "1001")),
        cluster_name=config.get("ClusterName", ""),
    )
    yield cluster
    _cancel_leftovers(cluster.submitted)


def _cancel_leftovers(job_ids: Sequence[str]) -> None:
    if not job_ids:
        return
    queued = _slurm("squeue", "-h", "-j", ",".join(job_ids), "-o", "%A", check=False).stdout.split()
    if queued:
        _slurm("scancel", *sorted(set(queued)), check=False)
