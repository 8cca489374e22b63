"""The local Slurm of ``scripts/local-slurm.sh`` works: batch jobs, arrays, accounting, accounts, requeue."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from slurm_cluster import SCRIPT, SlurmCluster, slurm  # noqa: F401  (fixture)


def test_status_reports_the_cluster(slurm: SlurmCluster) -> None:  # noqa: F811
    out = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, check=True).stdout
    assert f"MaxArraySize={slurm.max_array_size}" in out
    assert {"debug", "long"} <= set(slurm.partitions)
    assert slurm.default_partition == "debug"
    assert {"maelstrom", "other"} <= set(slurm.accounts)
    assert slurm.config("JobRequeue") == "1"
    assert int(slurm.config("MaxJobCount")) >= 20000


def test_batch_job_and_array_reach_sacct(slurm: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    single = slurm.submit("--job-name=hello", "-o", "hello.out", "--wrap", "echo hi", cwd=tmp_path)
    array = slurm.submit(
        "--array=0-3",
        "-p",
        "long",
        "-A",
        "other",
        "-o",
        "task-%a.out",
        "--wrap",
        "echo task $SLURM_ARRAY_TASK_ID",
        cwd=tmp_path,
    )
    failing = slurm.submit("--wrap", "exit 3", cwd=tmp_path)

    assert slurm.wait(single) == {single: "COMPLETED"}
    assert slurm.wait(array) == {f"{array}_{i}": "COMPLETED" for i in range(4)}
    assert slurm.wait(failing) == {failing: "FAILED"}
    assert (tmp_path / "hello.out").read_text() == "hi\n"
    assert [(tmp_path / f"task-{i}.out").read_text() for i in range(4)] == [f"task {i}\n" for i in range(4)]

    rows = slurm.run("sacct", "-j", array, "-X", "-n", "-P", "-o", "JobID,Partition,Account,ExitCode")
    assert sorted(rows.split()) == [f"{array}_{i}|long|other|0:0" for i in range(4)]
    exit_code = slurm.run("sacct", "-j", failing, "-X", "-n", "-P", "-o", "ExitCode").strip()
    assert exit_code == "3:0"


def test_unknown_account_and_partition_are_rejected(slurm: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    for option in ("--account=nosuchaccount", "--partition=nosuchpartition"):
        result = subprocess.run(
            ["sbatch", "--parsable", f"--chdir={tmp_path}", option, "--wrap", "true"],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        assert "error" in result.stderr.lower()


def test_array_larger_than_max_array_size_is_rejected(slurm: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    result = subprocess.run(
        ["sbatch", "--hold", f"--chdir={tmp_path}", f"--array=0-{slurm.max_array_size}", "--wrap", "true"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "array" in result.stderr.lower()


@pytest.mark.slow
def test_requeue_keeps_the_job_and_counts_restarts(slurm: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    script = 'echo "run ${SLURM_RESTART_COUNT:-0}"; [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] || sleep 60'
    job = slurm.submit(
        "--requeue",
        "--signal=B:USR1@90",
        "-o",
        "out.txt",
        "--open-mode=append",
        "--wrap",
        script,
        cwd=tmp_path,
    )
    state = ""
    for _ in range(240):
        state = slurm.run("squeue", "-h", "-j", job, "-o", "%T").strip()
        if state == "RUNNING":
            break
        time.sleep(0.25)
    assert state == "RUNNING"
    slurm.run("scontrol", "requeue", job)
    slurm.make_eligible(job)
    assert slurm.wait(job) == {job: "COMPLETED"}
    assert "Restarts=1" in slurm.run("scontrol", "show", "job", job)
    runs = [line for line in (tmp_path / "out.txt").read_text().splitlines() if line.startswith("run ")]
    assert runs == ["run 0", "run 1"]
