"""Faults of real components, each ending with nothing lost and nothing duplicated: a tracking
server that goes away (a real ``mlflow server`` killed and restarted), a full disk (a small
tmpfs), slurmctld restarted mid-sweep, many array tasks ending at once, a submitter killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TOY_CONF
from mlflow_server import MlflowServer
from slurm_cluster import slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

#: A toy app that waits at gates (files) the test opens, so the test decides when each epoch runs.
GATED_APP = '''\
"""Epoch 0, gate 1, epochs 1-2 and an artefact, gate 2, done."""

import json
import os
import time
from pathlib import Path


def _gate(name):
    gates = Path(os.environ["FAULTS_GATES"])
    (gates / f"at-{name}").touch()
    while not (gates / name).exists():
        time.sleep(0.05)


def main(ctx):
    loss = 1.0
    for epoch in range(3):
        if epoch == 1:
            _gate("g1")
        loss *= 0.5
        ctx.end_epoch(epoch, {"loss": loss})
    weights = ctx.run_dir / "weights.txt"
    weights.write_text("trained\\n")
    ctx.log_artifact(weights, "model")
    _gate("g2")
    return {"loss": loss}
'''

#: A toy app that writes a checkpoint until the disk is full.
FILLER_APP = '''\
"""Checkpoints until the run directory's disk is full."""


def main(ctx):
    ctx.end_epoch(0, {"loss": 1.0})
    with open(ctx.run_dir / "checkpoint.bin", "wb") as fh:
        while True:
            fh.write(b"x" * 65536)
            fh.flush()
'''


@pytest.fixture
def gated_project(toy_project: Path, tmp_path: Path) -> Path:
    for name, code in (("gated", GATED_APP), ("filler", FILLER_APP)):
        (toy_project / f"{name}app.py").write_text(code)
        conf = TOY_CONF.replace("name: toy", f"name: {name}").replace("toyapp:", f"{name}app:")
        (toy_project / "conf" / "app" / f"{name}.yaml").write_text(conf)
    (tmp_path / "gates").mkdir()
    return toy_project


def _env(cli_env: dict, project: Path, **extra: str) -> dict:
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(project / "conf"), **extra}


def _rows(home: Path) -> dict[str, dict]:
    from maelstrom_run.launch.registry import Registry

    return {r.run_id: r.__dict__ for r in Registry(home / "registry.db").list(limit=None)}


def _wait_for(path: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"job ended before {path.name}:\n{proc.stderr.read() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _run_id(text: str) -> str:
    match = re.search(r"(gated-\d{8}-\d{6}-[0-9a-f]{6})", text)
    assert match, text
    return match.group(1)


def test_tracking_server_outage_is_buffered_and_delivered(
    run_cli, cli_env, gated_project, maelstrom_home, tmp_path
):
    import mlflow

    gates = tmp_path / "gates"
    server = MlflowServer(tmp_path)
    env = _env(cli_env, gated_project, MLFLOW_TRACKING_URI=server.uri, FAULTS_GATES=str(gates))
    try:
        # 1. the server is not there at all: the job trains and reports through its run directory
        (gates / "g1").touch()
        (gates / "g2").touch()
        alone = run_cli(
            ["app=gated", "tracking.timeout_s=2", "tracking.experiment=outage"],
            cwd=gated_project,
            env=env,
            timeout=120,
        )
        assert alone.returncode == 0, alone.stderr
        offline = _run_id(alone.stderr)
        row = _rows(maelstrom_home)[offline]
        assert row["state"] == "succeeded" and f"maelstrom runs sync {offline}" in row["message"]
        assert not row["mlflow_run_id"]

        # 2. the server goes away in the middle of a run and comes back before it ends
        server.start()
        for gate in ("g1", "g2"):
            (gates / gate).unlink()
        job = subprocess.Popen(
            [str(Path(sys.executable).parent / "maelstrom-run"), "app=gated", "tracking.experiment=outage"],
            cwd=gated_project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(gates / "at-g1", job)  # epoch 0 logged while the server answers
        server.stop()
        (gates / "g1").touch()  # epochs 1-2 and the artefact are logged during the outage
        _wait_for(gates / "at-g2", job)
        server.start()
        (gates / "g2").touch()
        out, err = job.communicate(timeout=180)
        assert job.returncode == 0, err
        outage = _run_id(err)

        # 3. what the first job kept is sent now
        sync = run_cli(["maelstrom", "runs", "sync", offline], env=env, timeout=120)
        assert sync.returncode == 0, sync.stderr
        assert re.search(rf"{offline}: sent \d+ tracking call", sync.stdout), sync.stdout
        again = run_cli(["maelstrom", "runs", "sync", offline], env=env, check=True)
        assert "nothing waiting" in again.stdout  # nothing is sent twice

        client = mlflow.MlflowClient(server.uri)
        rows = _rows(maelstrom_home)
        experiment = client.get_experiment_by_name("outage")
        runs = {r.data.tags["maelstrom.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {offline, outage}  # one MLflow run each, none created twice
        for run_id, run in runs.items():
            assert rows[run_id]["state"] == "succeeded" and rows[run_id]["mlflow_run_id"] == run.info.run_id
            assert run.info.status == "FINISHED", run_id
            history = client.get_metric_history(run.info.run_id, "loss")
            assert sorted((m.step, m.value) for m in history) == [
                (1, 0.5),
                (2, 0.25),
                (3, 0.125),
            ]  # epochs from 1
            assert run.data.params["app.name"] == "gated"
            assert run.data.metrics["final.loss"] == 0.125
            files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
            assert files == {"model/weights.txt"}
            path = client.download_artifacts(run.info.run_id, "model/weights.txt", str(tmp_path))
            assert Path(path).read_text() == "trained\n"
            assert "plots/training_curves.png" in {
                a.path for a in client.list_artifacts(run.info.run_id, "plots")
            }
        assert not rows[outage]["message"]
    finally:
        server.stop()


def test_sweep_submitted_while_the_tracking_server_is_down(
    run_cli, cli_env, toy_project, maelstrom_home, tmp_path
):
    """The jobs run and report through their run directories; once the server answers, `runs sync`
    delivers them and makes the sweep's parent run, with every job's run its child, closed."""
    import mlflow

    from maelstrom_run.launch.registry import Registry

    server = MlflowServer(tmp_path / "server")
    env = _env(cli_env, toy_project, MLFLOW_TRACKING_URI=server.uri)
    try:
        sweep = run_cli(
            [
                "-m",
                "app=toy",
                "tracking.timeout_s=2",
                "tracking.experiment=down",
                "model.learning_rate=0.01,0.02",
            ],
            cwd=toy_project,
            env=env,
            timeout=300,
        )
        assert sweep.returncode == 0, sweep.stdout + sweep.stderr
        assert "Traceback" not in sweep.stderr
        assert "parent run is not made yet" in sweep.stderr and "runs sync --sweep" in sweep.stderr
        registry = Registry(maelstrom_home / "registry.db")
        rows = registry.list(limit=None)
        assert sorted(r.state for r in rows) == ["succeeded", "succeeded"]
        sweep_id = rows[0].sweep_id
        assert registry.sweep(sweep_id).mlflow_parent_run_id is None
        # still down: nothing is made, nothing is lost
        again = run_cli(["maelstrom", "runs", "status", "--sweep", sweep_id], env=env, timeout=120)
        assert again.returncode == 0 and registry.sweep(sweep_id).mlflow_parent_run_id is None

        server.start()
        sync = run_cli(["maelstrom", "runs", "sync", "--sweep", sweep_id], env=env, timeout=180)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        run_cli(["maelstrom", "runs", "status", "--sweep", sweep_id], env=env, check=True)  # made once
        parent = registry.sweep(sweep_id).mlflow_parent_run_id
        assert parent
        client = mlflow.MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("down")
        runs = client.search_runs([experiment.experiment_id], f"tags.`maelstrom.sweep_id` = '{sweep_id}'")
        parents = [r for r in runs if r.data.tags.get("maelstrom.sweep.parent") == "true"]
        children = [r for r in runs if r.info.run_id != parent]
        assert [r.info.run_id for r in parents] == [parent]
        assert parents[0].info.status == "FINISHED" and parents[0].data.params["sweep.size"] == "2"
        assert sorted(r.data.tags["maelstrom.run_id"] for r in children) == sorted(r.run_id for r in rows)
        assert all(r.data.tags.get("mlflow.parentRunId") == parent for r in children)
        assert all(r.info.status == "FINISHED" for r in children)
        # a job's run is named after what the sweep varies, without asking the parent
        assert sorted(r.info.run_name for r in children) == [
            "toy model.learning_rate=0.01",
            "toy model.learning_rate=0.02",
        ]
    finally:
        server.stop()


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(path, size)`` mounts a small tmpfs at ``path`` (unmounted after the test)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_run_directory_fails_the_job_saying_so(run_cli, cli_env, gated_project, maelstrom_home, tmpfs):
    import mlflow

    tmpfs(maelstrom_home / "runs", "2m")
    env = _env(cli_env, gated_project)
    result = run_cli(["app=filler"], cwd=gated_project, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "No space left" in result.stderr and "disk I/O error" not in result.stderr
    (row,) = _rows(maelstrom_home).values()
    assert row["state"] == "failed" and "No space left" in row["message"]
    report = json.loads((Path(row["run_dir"]) / "result.json").read_text())
    assert report["state"] == "failed" and "No space left" in report["error"]
    client = mlflow.MlflowClient(f"sqlite:///{maelstrom_home / 'mlflow.db'}")
    run = client.get_run(row["mlflow_run_id"])
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["maelstrom.error"]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0]
    listing = run_cli(["maelstrom", "runs", "list"], env=env)
    assert listing.returncode == 0 and row["run_id"] in listing.stdout


def test_full_cache_keeps_nothing_half_written(tmp_path, tmpfs):
    from maelstrom_run.core.errors import DataError
    from maelstrom_run.data.cache import Cache

    root = tmpfs(tmp_path / "cache", "1m")
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(3 << 20))
    small.write_bytes(os.urandom(100_000))
    cache = Cache(root)
    with pytest.raises(DataError, match="No space left"):
        cache.fetch(str(big))
    assert cache.entries() == []  # the index says nothing of it
    assert not [p for p in (root / "files").rglob("*") if p.is_file()]  # no part, no file without entry
    served = cache.fetch(str(small))
    assert served.read_bytes() == small.read_bytes()
    assert [e.source for e in cache.entries()] == [str(small)]
    assert cache.fetch(str(small)) == served


# -- Slurm: the submitter killed, the controller restarted -----------------------------------------

CTLD_PID = Path("/run/slurm/slurmctld.pid")


def _restart_slurmctld(while_down) -> None:
    """Stop slurmctld (only it: slurmd and the jobs go on), call ``while_down()``, start it again and
    wait until it answers (other tests share this cluster)."""
    pid = int(CTLD_PID.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "slurmctld did not stop"
        time.sleep(0.1)
    try:
        while_down()
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") < 1:
            assert time.monotonic() < deadline, "slurmctld did not come back"
            time.sleep(0.3)


def test_killed_submitter_and_restarted_controller_lose_and_duplicate_nothing(
    run_cli,
    cli_env,
    gated_project,
    maelstrom_home,
    tmp_path,
    slurm,  # noqa: F811
):
    import mlflow

    from maelstrom_run.launch.registry import Registry

    gates = tmp_path / "gates"
    # an sbatch that submits for real and, after its second array, kills the submitting process
    # before it can record the job ids: the sweep is split over three arrays (max_array_size=1)
    shim, counter = tmp_path / "shim", tmp_path / "calls"
    shim.mkdir()
    (shim / "sbatch").write_text(
        "#!/bin/bash\n"
        f"echo x >> {counter}\n"
        '/usr/bin/sbatch "$@" || exit $?\n'
        f'if [ "$(wc -l < {counter})" -eq 2 ]; then kill -9 $PPID; fi\n'
    )
    (shim / "sbatch").chmod(0o700)
    env = _env(cli_env, gated_project, FAULTS_GATES=str(gates))
    killed = run_cli(
        [
            "-m",
            "app=gated",
            "backend=slurm",
            "backend.max_array_size=1",
            "backend.resources.cpus_per_task=1",
            "backend.resources.memory=1G",
            "train.seed=1,2,3",
        ],
        cwd=gated_project,
        env={**env, "PATH": f"{shim}:{env['PATH']}"},
        timeout=180,
    )
    assert killed.returncode == -9, killed.stderr
    registry = Registry(maelstrom_home / "registry.db")
    sweep_id = registry.list(limit=None)[0].sweep_id
    resumed = run_cli(["maelstrom", "runs", "resume", sweep_id], env=env, check=True)
    assert "1 job(s) found on the cluster and recorded, 1 submitted now" in resumed.stdout
    records = registry.list(sweep_id=sweep_id, limit=None)
    slurm.submitted.extend({r.job_id.split("_")[0] for r in records})
    assert sorted(r.sweep_index for r in records) == [0, 1, 2]
    assert len({r.job_id for r in records}) == 3  # exactly one cluster job per sweep index
    assert len(slurm.jobs_named(sweep_id)) == 3

    watch = subprocess.Popen(
        [str(Path(sys.executable).parent / "maelstrom"), "runs", "watch", sweep_id, "--interval", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(gates / "at-g1", watch, timeout=180)  # jobs are running

    def train_while_down() -> None:
        (gates / "g1").touch()  # the jobs train on while no controller hears of them
        time.sleep(8)  # the watch asks Slurm several times meanwhile

    _restart_slurmctld(train_while_down)
    (gates / "g2").touch()
    _, err = watch.communicate(timeout=240)
    assert watch.returncode == 0, err
    assert "still watching" in err and "runs resume" not in err  # the outage, and no wrong hint
    assert "3 succeeded" in err
    rows = registry.list(sweep_id=sweep_id, limit=None)
    assert [r.state for r in rows] == ["succeeded"] * 3
    assert len({r.job_id for r in rows}) == 3
    client = mlflow.MlflowClient(f"sqlite:///{maelstrom_home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gated")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(int(r.data.tags["maelstrom.sweep_index"]) for r in children) == [0, 1, 2]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs.succeeded"] == 3


def test_hundreds_of_results_at_once_all_reach_the_registry(
    cli_env,
    maelstrom_home,
    tmp_path,
    slurm,  # noqa: F811
):
    from concurrent.futures import ThreadPoolExecutor

    from maelstrom_run.core.rundir import Result, RunDir
    from maelstrom_run.core.spec import RunSpec
    from maelstrom_run.core.states import JobState
    from maelstrom_run.launch.registry import Registry

    n, sweep_id = 300, "sweep-faults-burst"
    specs = [
        RunSpec(
            run_id=f"{sweep_id}-{i:03d}",
            kind="app",
            app="toy",
            entry="toyapp:main",
            config={
                "app": {"name": "toy", "entry": "toyapp:main"},
                "backend": {"name": "slurm", "kind": "slurm", "resources": {"time": "10m"}},
                "tracking": {"uri": None},
            },
            overrides=[f"train.seed={i}"],
            run_dir=str(tmp_path / "runs" / f"{sweep_id}-{i:03d}"),
            config_hash="0" * 64,
            sweep_id=sweep_id,
            sweep_index=i,
        )
        for i in range(n)
    ]
    registry = Registry(maelstrom_home / "registry.db")
    registry.add_sweep(sweep_id, "toy", n, "slurm", [[s.overrides[0]] for s in specs], None, None)
    registry.add_runs(specs)
    # a real array of the sweep's size, held: Slurm says queued, the workers' reports say ended
    array = slurm.submit("--hold", f"--array=0-{n - 1}", "-J", sweep_id, "-o", "/dev/null", "--wrap=true")
    try:
        registry.update_many([(s.run_id, {"job_id": f"{array}_{i}"}) for i, s in enumerate(specs)])
        for spec in specs:
            Path(spec.run_dir).mkdir(parents=True)

        def report(spec: RunSpec) -> None:  # what each worker writes when it ends
            RunDir(spec.run_dir).write_result(
                Result(run_id=spec.run_id, state=JobState.SUCCEEDED, exit_code=0, ended=time.time())
            )

        maelstrom = str(Path(sys.executable).parent / "maelstrom")
        commands = [[maelstrom, "runs", "status", "--sweep", sweep_id]] * 4 + [
            [maelstrom, "runs", "list", "--sweep", sweep_id]
        ] * 2
        watchers = [
            subprocess.Popen(c, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        start = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(report, specs))
        written_s = time.monotonic() - start
        outputs = [w.communicate(timeout=120) for w in watchers]
        for w, (_out, err) in zip(watchers, outputs, strict=True):
            assert w.returncode == 0, err
            assert "locked" not in err and "Traceback" not in err, err
        final = subprocess.run(
            [maelstrom, "runs", "list", "--sweep", sweep_id], env=cli_env, capture_output=True, text=True
        )
        assert final.returncode == 0, final.stderr
        assert f"{n} run(s)" in final.stdout  # the whole sweep, not the first 50
        rows = registry.list(sweep_id=sweep_id, limit=None)
        assert len(rows) == n and {r.state for r in rows} == {"succeeded"}, written_s
        assert len({r.job_id for r in rows}) == n
    finally:
        slurm.cancel(array)


def test_a_job_revived_after_it_succeeded_keeps_its_success(tmp_path, maelstrom_home, cli_env):
    """Slurm may start a job again that had ended (a controller restored from older state) and
    then stop it at its time limit: the worker's report of success stands."""
    from maelstrom_run.backends.slurm import STATES, WHY
    from maelstrom_run.core.rundir import Result, RunDir
    from maelstrom_run.core.spec import RunSpec
    from maelstrom_run.core.states import JobState
    from maelstrom_run.core.status import reconcile

    run_dir = tmp_path / "runs" / "toy-revived"
    spec = RunSpec(
        run_id="toy-revived",
        kind="app",
        app="toy",
        entry="nowhere_to_be_found:main",  # running the app again would fail the job
        config={"app": {"name": "toy"}, "backend": {"name": "slurm", "kind": "slurm"}, "tracking": {}},
        overrides=[],
        run_dir=str(run_dir),
        config_hash="0" * 64,
    )
    run_dir.mkdir(parents=True)
    spec.write()
    done = Result(run_id=spec.run_id, state=JobState.SUCCEEDED, exit_code=0, metrics={"loss": 0.1}, ended=1.0)
    RunDir(run_dir).write_result(done)
    before = (run_dir / "result.json").read_text()
    worker = subprocess.run(
        [sys.executable, "-m", "maelstrom_run.worker", str(run_dir / "spec.yaml")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    assert "already succeeded; not run again" in worker.stderr
    assert (run_dir / "result.json").read_text() == before
    status = reconcile(STATES["TIMEOUT"], run_dir, name="Slurm state TIMEOUT", why=WHY["TIMEOUT"])
    assert status.state is JobState.SUCCEEDED


def test_a_journal_cut_short_is_delivered_once(tmp_path, maelstrom_home):
    """A job killed while its calls wait (no thread ever sent them), delivered in two goes: every
    call reaches the MLflow store once, in order."""
    import mlflow

    from maelstrom_run.tracking.outbox import Outbox, sync

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    script = textwrap.dedent(
        f"""
        import os, signal
        from maelstrom_run.tracking.outbox import Outbox
        box = Outbox({str(tmp_path / "run")!r}, {uri!r})
        box.lock()
        box.create("journal", {{"maelstrom.run_id": "r1"}}, "r1")
        box.log_params({{"a": "1"}})
        for step in range(5):
            box.log_metrics({{"loss": 1.0 / (step + 1)}}, step)
        box.log_text("hello", "notes/hello.txt")
        box.end("FINISHED")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client = mlflow.MlflowClient(uri)  # artefacts in the test's directory, not the working directory's
    client.create_experiment("journal", artifact_location=(tmp_path / "artifacts").as_uri())
    part = Outbox(tmp_path / "run", uri)
    part.lock()
    assert len(part.journalled()) == 9
    assert part.deliver(until=lambda: part.state["seq"] >= 1) == 8  # cut short again: the run only
    part.unlock()
    sent, left, box = sync(tmp_path / "run", uri)
    assert (sent, left) == (8, 0)
    assert sync(tmp_path / "run", uri)[:2] == (0, 0)
    run = client.get_run(box.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (s, 1.0 / (s + 1)) for s in range(5)
    ]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]
