"""The Slurm backend against the real local Slurm (``scripts/local-slurm.sh``).

The shared contract suite, sbatch rendering, job-array sweeps through the CLI, non-blocking
submission and ``runs watch``, failure semantics, cancel, resume after an interrupted
submission, dry runs, requeue on USR1 and bad input.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from backend_contract import TESTS, BackendContract, wait_all, wait_state
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

from maelstrom_run.backends import get_backend
from maelstrom_run.backends.script import Target, render_batch_script
from maelstrom_run.config.validate import typed
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.launch.registry import Registry

pytestmark = pytest.mark.slow

SLURM = {"name": "slurm", "kind": "slurm", "max_parallel": 1, "resources": {"time": "10m"}}


class TestSlurmBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, slurm: SlurmCluster) -> dict:  # noqa: F811
        return dict(SLURM)


# -- the batch script -----------------------------------------------------------------------------


def _render(conf: dict, target: Target | None = None) -> str:
    return render_batch_script(
        typed({"name": "slurm", "kind": "slurm", **conf}, "backend"),  # the typed config a backend gets
        job_name="job",
        target=target or Target(run_dir="/scratch/runs/r1"),
        output="/scratch/runs/r1/slurm-%j.out",
        code_dir="/scratch/runs/r1/code",
        python="python",
    )


def test_script_has_every_resource_and_environment_setting() -> None:
    text = _render(
        {
            "resources": {
                "queue": "booster",
                "nodes": 2,
                "tasks_per_node": 4,
                "cpus_per_task": 12,
                "gpus_per_node": 4,
                "memory": "64G",
                "time": "1d12h",
                "reservation": "maelstrom",
                "constraint": "a100",
                "qos": "normal",
                "account": "deepacf",
            },
            "environment": {
                "modules": ["Stages/2024", "CUDA/12"],
                "venv": "/p/venv",
                "apptainer": {"image": "/p/ml.sif", "options": ["--nv", "-B", "/p/data"]},
                "variables": {"OMP_NUM_THREADS": "12", "TOKEN": "${secret:env:MY_TOKEN}"},
                "pre_commands": ["echo before"],
                "post_commands": ["echo after"],
            },
        }
    )
    for line in (
        "#SBATCH --partition=booster",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=12",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --mem=64G",
        "#SBATCH --time=1-12:00:00",
        "#SBATCH --reservation=maelstrom",
        "#SBATCH --constraint=a100",
        "#SBATCH --qos=normal",
        "#SBATCH --account=deepacf",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@90",
        "module load Stages/2024",
        "module load CUDA/12",
        'source "/p/venv"/bin/activate',
        "export OMP_NUM_THREADS=12",
        "echo before",
        "echo after",
        'export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}',
    ):
        assert line in text.splitlines(), line
    assert "srun --kill-on-bad-exit=1 bash -c" in text
    assert "apptainer exec --nv -B /p/data /p/ml.sif python -m maelstrom_run.worker" in text
    assert "RANK=$SLURM_PROCID" in text and "LOCAL_RANK=$SLURM_LOCALID" in text
    # a secret variable is named, never given a value in the script
    assert "TOKEN" in text and "MY_TOKEN" not in text and "export TOKEN" not in text
    assert text.index("echo before") < text.rindex("-m maelstrom_run.worker") < text.index("echo after")
    assert text.rstrip().endswith("exit $rc")


@pytest.mark.parametrize(
    "limit, expected",
    [("30m", "00:30:00"), ("2h", "02:00:00"), ("1d12h", "1-12:00:00"), ("01:30:00", "01:30:00")],
)
def test_time_limits(limit: str, expected: str) -> None:
    assert f"#SBATCH --time={expected}" in _render({"resources": {"time": limit}})


def test_single_task_runs_the_worker_directly_and_arrays_read_their_map() -> None:
    text = _render({"resources": {}})
    assert "srun" not in text and "python -m maelstrom_run.worker" in text
    array = _render({"resources": {}}, Target(map_file="/s/arrays/000.txt", array="0-9%2"))
    assert "#SBATCH --array=0-9%2" in array
    assert 'RUN_DIR=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$MAP")' in array


# -- end to end through the CLI -------------------------------------------------------------------


@pytest.fixture
def toy_env(cli_env: dict[str, str], toy_project: Path, slurm: SlurmCluster) -> dict[str, str]:  # noqa: F811
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}


def _mlflow_statuses(home: Path) -> dict[str, str]:
    db = sqlite3.connect(home / "mlflow.db")
    try:
        return dict(db.execute("SELECT run_uuid, status FROM runs").fetchall())
    finally:
        db.close()


def test_sweep_is_one_job_array_and_returns_at_once(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    maelstrom_home: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    result = run_cli(
        ["-m", "app=toy", "backend=slurm", "model.learning_rate=0.01,0.1,0.001", "train.epochs=2"],
        toy_project,
        toy_env,
        check=True,
    )
    assert "without waiting" in result.stderr and "maelstrom runs watch sweep-toy-" in result.stderr
    registry = Registry()
    records = sorted(registry.list(limit=None), key=lambda r: r.sweep_index)
    assert len(records) == 3
    arrays = {r.job_id.split("_")[0] for r in records}
    assert len(arrays) == 1, "a sweep is one job array"
    assert [r.job_id.split("_")[1] for r in records] == ["0", "1", "2"]
    slurm.submitted.extend(arrays)
    # the code snapshot is staged once, beside the sweep's array files
    share = Path(records[0].run_dir).parent / records[0].sweep_id
    assert (share / "code" / "toyapp.py").exists() and (share / "arrays" / "000.sbatch").exists()

    watch = run_cli(["maelstrom", "runs", "watch", records[0].sweep_id], toy_project, toy_env, timeout=180)
    assert watch.returncode == 1  # one job diverges
    assert "2 succeeded, 1 failed" in watch.stderr
    assert f"maelstrom runs rerun --sweep {records[0].sweep_id} --failed" in watch.stderr
    states = {r.sweep_index: r for r in registry.list(limit=None)}
    assert states[1].state == "failed" and "diverged" in states[1].message
    assert states[0].state == states[2].state == "succeeded"
    # Slurm, the registry and MLflow agree on the failure
    assert slurm.wait(arrays.pop())[states[1].job_id] == "FAILED"
    mlflow = _mlflow_statuses(maelstrom_home)
    assert mlflow[states[1].mlflow_run_id] == "FAILED"
    assert mlflow[states[0].mlflow_run_id] == "FINISHED"
    logs = run_cli(["maelstrom", "runs", "logs", states[1].run_id, "--stderr"], toy_project, toy_env)
    assert "RuntimeError: diverged" in logs.stdout


def test_sweep_larger_than_the_array_limit_is_split(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    rates = ",".join(str(0.001 * (i + 1)) for i in range(5))
    run_cli(
        [
            "-m",
            "app=toy",
            "backend=slurm",
            "backend.max_array_size=2",
            f"model.learning_rate={rates}",
            "train.epochs=0",
        ],
        toy_project,
        toy_env,
        check=True,
    )
    records = Registry().list(limit=None)
    arrays = {r.job_id.split("_")[0] for r in records}
    slurm.submitted.extend(arrays)
    assert len(records) == 5 and len(arrays) == 3
    assert get_backend(SLURM).transport.max_array_size() == slurm.max_array_size  # read from the cluster


def test_blocking_sweep_returns_real_results(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    result = run_cli(
        ["-m", "app=toy", "backend=slurm", "hydra.launcher.wait=true", "model.learning_rate=0.01,0.02"],
        toy_project,
        toy_env,
        check=True,
        timeout=180,
    )
    assert "succeeded" in result.stderr and "loss=" in result.stderr
    assert {r.state for r in Registry().list(limit=None)} == {"succeeded"}


def test_cancel_one_array_task_then_the_whole_sweep(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    run_cli(
        ["-m", "app=toy", "backend=slurm", "backend.max_parallel=1", "model.learning_rate=0.01,0.02,0.03"],
        toy_project,
        toy_env,
        check=True,
    )
    records = sorted(Registry().list(limit=None), key=lambda r: r.sweep_index)
    slurm.submitted.append(records[0].job_id.split("_")[0])
    one = run_cli(["maelstrom", "runs", "cancel", records[2].run_id], toy_project, toy_env, check=True)
    assert "cancelled" in one.stdout
    run_cli(
        ["maelstrom", "runs", "cancel", "--sweep", records[0].sweep_id, "--yes"],
        toy_project,
        toy_env,
        check=True,
    )
    watch = run_cli(["maelstrom", "runs", "watch", records[0].sweep_id], toy_project, toy_env, timeout=120)
    assert "cancelled" in watch.stderr and "queued" not in watch.stderr.splitlines()[-2]
    assert Registry().get(records[2].run_id).state == "cancelled"
    assert {r.state for r in Registry().list(limit=None)} <= {"cancelled", "succeeded"}
    queued = slurm.run(
        "squeue", "-h", "-r", "-o", "%i", f"--jobs={records[0].job_id.split('_')[0]}", check=False
    )
    assert queued.strip() == ""


def test_resume_after_the_submitting_process_was_killed(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    tmp_path: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    # an sbatch that submits for real, and on its second call kills the submitting process before
    # it can record the job id: the registry then knows part 1, the cluster has parts 1 and 2
    shim = tmp_path / "shim"
    shim.mkdir()
    counter = tmp_path / "calls"
    (shim / "sbatch").write_text(
        "#!/bin/bash\n"
        f"echo x >> {counter}\n"
        '/usr/bin/sbatch "$@" || exit $?\n'
        f'if [ "$(wc -l < {counter})" -eq 2 ]; then kill -9 $PPID; fi\n'
    )
    (shim / "sbatch").chmod(stat.S_IRWXU)
    env = {**toy_env, "PATH": f"{shim}:{toy_env['PATH']}"}
    rates = ",".join(str(0.001 * (i + 1)) for i in range(6))
    killed = run_cli(
        [
            "-m",
            "app=toy",
            "backend=slurm",
            "backend.max_array_size=2",
            f"model.learning_rate={rates}",
            "train.epochs=0",
        ],
        toy_project,
        env,
    )
    assert killed.returncode == -9
    registry = Registry()
    records = registry.list(limit=None)
    sweep_id = records[0].sweep_id
    assert len(records) == 6 and sum(1 for r in records if r.job_id) == 2  # the first array only

    resumed = run_cli(["maelstrom", "runs", "resume", sweep_id], toy_project, toy_env, check=True)
    assert "2 job(s) found on the cluster and recorded, 2 submitted now" in resumed.stdout
    records = registry.list(limit=None)
    job_ids = [r.job_id for r in records]
    assert all(job_ids) and len(set(job_ids)) == 6
    arrays = {j.split("_")[0] for j in job_ids}
    slurm.submitted.extend(arrays)
    assert len(arrays) == 3, "three arrays of two"
    on_cluster = slurm.jobs_named(sweep_id)
    assert set(on_cluster) == arrays, "no part of the sweep was submitted twice"
    assert sorted(on_cluster.values()) == [f"{sweep_id}.000", f"{sweep_id}.001", f"{sweep_id}.002"]
    again = run_cli(["maelstrom", "runs", "resume", sweep_id], toy_project, toy_env, check=True)
    assert "nothing to do" in again.stdout
    watch = run_cli(
        ["maelstrom", "runs", "watch", sweep_id, "--interval", "1"], toy_project, toy_env, timeout=180
    )
    assert "6 succeeded" in watch.stderr, watch.stderr


def test_dry_run_prints_the_script_and_staged_files_and_submits_nothing(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    result = run_cli(["app=toy", "backend=slurm", "dry_run=true"], toy_project, toy_env, check=True)
    assert "#SBATCH --job-name=toy-" in result.stdout and "maelstrom_run.worker" in result.stdout
    assert "code/toyapp.py" in result.stdout and "spec.yaml" in result.stdout
    assert "nothing was submitted" in result.stdout
    sweep = run_cli(
        ["-m", "app=toy", "backend=slurm", "model.learning_rate=0.1,0.2", "dry_run=true"],
        toy_project,
        toy_env,
        check=True,
    )
    assert sweep.stdout.count("#SBATCH --array=0-1") == 1
    assert Registry().list(limit=None) == []
    run_id = result.stdout.split("dry run: ", 1)[1].split()[0]
    sweep_id = sweep.stdout.split("dry run: ", 1)[1].split()[0]
    assert not slurm.jobs_named(run_id) and not slurm.jobs_named(sweep_id)


# -- requeue ------------------------------------------------------------------------------------


def test_usr1_checkpoints_and_requeues_into_the_same_mlflow_run(
    backend_spec: Callable[..., RunSpec],
    maelstrom_home: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    backend = get_backend(SLURM)
    spec = backend_spec("checkpointing")
    job_id = backend.submit(spec)
    slurm.submitted.append(job_id)
    ref = JobRef(spec.run_id, job_id, spec.run_dir)
    wait_state(backend, ref, JobState.RUNNING)
    deadline = time.monotonic() + 60
    while "working" not in backend.logs(ref):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first = json.loads((Path(spec.run_dir) / "result.json").read_text())["mlflow_run_id"]
    # what Slurm does 90 s before the time limit (--signal=B:USR1@90), now
    slurm.run("scancel", "--signal=USR1", "--batch", job_id)
    slurm.make_eligible(job_id)
    assert wait_all(backend, [ref], timeout=120) == {spec.run_id: JobState.SUCCEEDED}
    status = backend.status([ref])[spec.run_id]
    assert status.requeues == 1 and status.result.mlflow_run_id == first
    assert (Path(spec.run_dir) / "checkpoint.txt").read_text() == "epoch 0\n"
    assert "resumed after 1 requeue(s) from epoch 0" in backend.logs(ref)
    assert _mlflow_statuses(maelstrom_home)[first] == "FINISHED"


@pytest.fixture
def backend_spec(maelstrom_home: Path) -> Callable[..., RunSpec]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from maelstrom_run.launch.spec import build

    def make(entry: str) -> RunSpec:
        GlobalHydra.instance().clear()
        overrides = [f"app.entry=contract_app:{entry}", "tracking.plots=false", "backend=slurm"]
        with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        return build(cfg, overrides, code_dir=TESTS)

    return make


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_partition_and_account_are_named(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    bad = run_cli(["app=toy", "backend=slurm", "backend.resources.queue=nosuch"], toy_project, toy_env)
    assert bad.returncode == 2
    assert "backend.resources.queue: partition 'nosuch' does not exist" in bad.stderr
    assert "debug" in bad.stderr and "Traceback" not in bad.stderr
    (record,) = Registry().list(limit=None)
    assert record.state == "failed" and "'nosuch' does not exist" in record.message  # recorded, not lost
    bad = run_cli(["app=toy", "backend=slurm", "backend.resources.account=nobody"], toy_project, toy_env)
    assert bad.returncode == 2 and "backend.resources.account: 'nobody'" in bad.stderr


def test_time_limit_in_a_wrong_format(run_cli, toy_env: dict[str, str], toy_project: Path) -> None:
    bad = run_cli(["app=toy", "backend=slurm", "backend.resources.time=90x"], toy_project, toy_env)
    assert bad.returncode == 2
    assert "backend.resources.time: '90x' is not a time limit; write it like 30m" in bad.stderr
    assert Registry().list(limit=None) == []


def test_sbatch_not_on_path(run_cli, toy_env: dict[str, str], toy_project: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "bash", "sed"):
        (bin_dir / tool).symlink_to(Path("/usr/bin") / tool)
    env = {**toy_env, "PATH": f"{Path(sys.executable).parent}:{bin_dir}"}
    bad = run_cli(["app=toy", "backend=slurm"], toy_project, env)
    assert bad.returncode == 2
    assert "`sbatch` is not on PATH; run maelstrom-run on a login node" in bad.stderr


def test_controller_down(run_cli, toy_env: dict[str, str], toy_project: Path, tmp_path: Path) -> None:
    conf = Path("/etc/slurm/slurm.conf").read_text()
    dead = "\n".join(
        line for line in conf.splitlines() if not line.startswith(("SlurmctldPort", "SlurmctldHost"))
    )
    (tmp_path / "slurm.conf").write_text(dead + "\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\n")
    env = {**toy_env, "SLURM_CONF": str(tmp_path / "slurm.conf")}
    bad = run_cli(["app=toy", "backend=slurm"], toy_project, env, timeout=180)
    assert bad.returncode == 2
    assert "the Slurm controller cannot be reached" in bad.stderr and "maelstrom runs resume" in bad.stderr
    (record,) = Registry().list(limit=None)
    assert record.state == "failed" and record.job_id is None


def test_a_job_slurm_no_longer_knows(maelstrom_home: Path, slurm: SlurmCluster) -> None:  # noqa: F811
    backend = get_backend(SLURM)
    ref = JobRef("gone", "999999", str(maelstrom_home / "runs" / "gone"))
    status = backend.status([ref])["gone"]
    assert status.state == JobState.UNKNOWN and "no longer knows job 999999" in status.message
    backend.cancel([ref])  # nothing to cancel: no error


def test_unresolvable_secret_is_named_never_its_value(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    bad = run_cli(
        [
            "app=toy",
            "backend=slurm",
            "+backend.environment.variables.TOKEN=${secret:'vault:secret/none#key'}",
        ],
        toy_project,
        {k: v for k, v in toy_env.items() if k != "VAULT_ADDR"},
    )
    assert bad.returncode == 2
    assert "secret/none#key" in bad.stderr and "Traceback" not in bad.stderr


def test_multi_task_job_runs_every_rank_through_srun(
    backend_spec: Callable[..., RunSpec],
    maelstrom_home: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    spec = backend_spec("ranks")
    spec.config["backend"]["resources"].update(tasks_per_node=2, cpus_per_task=1)
    backend = get_backend(spec.backend)
    assert "srun --kill-on-bad-exit=1" in backend.render(spec).text
    job_id = backend.submit(spec)
    slurm.submitted.append(job_id)
    ref = JobRef(spec.run_id, job_id, spec.run_dir)
    assert wait_all(backend, [ref], timeout=120) == {spec.run_id: JobState.SUCCEEDED}
    out = backend.logs(ref)
    assert "rank 0 of 2 (ctx.rank 0)" in out and "rank 1 of 2 (ctx.rank 1)" in out
    assert ":29500" in out
    # only rank 0 reports: one MLflow run, one result
    assert len(_mlflow_statuses(maelstrom_home)) == 1
