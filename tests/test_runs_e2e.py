"""End to end through the CLI with a toy app: MLflow runs read back, sweeps, runs management, re-runs."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import git

pytestmark = pytest.mark.slow


def _client(home: Path, uri: str | None = None):
    import mlflow

    return mlflow.MlflowClient(uri or f"sqlite:///{home / 'mlflow.db'}")


def _env(cli_env: dict, project: Path, **extra: str) -> dict:
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(project / "conf"), **extra}


def _registry_rows(home: Path) -> list[dict]:
    from maelstrom_run.launch.registry import Registry

    return [r.__dict__ for r in Registry(home / "registry.db").list(limit=None)]


def _run_id(output: str) -> str:
    match = re.search(r"(toy-\d{8}-\d{6}-[0-9a-f]{6})", output)
    assert match, output
    return match.group(1)


def test_local_run_is_tracked_in_the_embedded_store(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project, MY_TOKEN="s3cr3t-value")
    (toy_project / "toyapp.py").write_text((toy_project / "toyapp.py").read_text() + "\n# uncommitted\n")
    result = run_cli(
        ["app=toy", "train.epochs=3", "+backend.credentials.token=${secret:env:MY_TOKEN}"],
        cwd=toy_project,
        env=env,
        check=True,
    )
    run_id = _run_id(result.stderr)
    assert "succeeded" in result.stderr and "maelstrom runs info" in result.stderr

    client = _client(maelstrom_home)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.learning_rate"] == "0.001"
    assert run.data.params["train.epochs"] == "3"
    assert run.data.params["backend.credentials.token"] == "${secret:env:MY_TOKEN}"
    assert run.data.tags["maelstrom.run_id"] == run_id
    assert run.data.tags["label.framework"] == "tensorflow"
    assert run.data.tags["mlflow.source.git.commit"] == git(toy_project, "rev-parse", "HEAD").strip()
    assert run.data.tags["maelstrom.git.dirty"] == "true"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "phase.io.total_s")] == [1, 2, 3]
    assert "phase_total.forward.total_s" in run.data.metrics and "final.loss" in run.data.metrics
    assert not [name for name in run.data.metrics if name.endswith(("_ms", ".share", ".count"))]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "timing")}
    assert artifacts == {"timing/phases.csv", "timing/record.json"}  # the phase table, the benchmark record
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "maelstrom")}
    assert {"maelstrom/spec.yaml", "maelstrom/overrides.txt", "maelstrom/git.diff"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/training_curves.png",
        "plots/phase_times.png",
    }

    # the secret value is nowhere: not in the run dir, the registry, or the MLflow store
    for path in maelstrom_home.rglob("*"):
        if path.is_file():
            assert b"s3cr3t-value" not in path.read_bytes(), path

    (row,) = _registry_rows(maelstrom_home)
    assert row["state"] == "succeeded" and row["mlflow_run_id"] == run.info.run_id
    info = run_cli(["maelstrom", "runs", "info", run_id[:-2]], env=env, check=True).stdout
    assert run.info.run_id in info and "uncommitted diff" in info
    logs = run_cli(["maelstrom", "runs", "logs", run_id], env=env, check=True)
    assert logs.returncode == 0
    status = run_cli(["maelstrom", "runs", "status", run_id], env=env, check=True).stdout
    assert "succeeded" in status


def test_failing_app_fails_the_run_everywhere(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    result = run_cli(["app=toy", "model.learning_rate=0.5"], cwd=toy_project, env=env)
    assert result.returncode == 1
    assert "RuntimeError: diverged" in result.stderr
    client = _client(maelstrom_home)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["maelstrom.error"] == "RuntimeError: diverged"
    (row,) = _registry_rows(maelstrom_home)
    assert row["state"] == "failed" and row["exit_code"] == 1


def test_missing_entry_point_is_a_clear_failure(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    result = run_cli(["app=toy", "app.entry=toyapp:nope"], cwd=toy_project, env=env)
    assert result.returncode == 2  # a wrong app.entry is a mistake in the config
    assert "module 'toyapp' has no function 'nope'" in result.stderr


def test_unwritable_run_dir_is_a_clear_error(run_cli, cli_env, toy_project, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should go")
    result = run_cli(
        ["app=toy", f"backend.workdir={blocker}"], cwd=toy_project, env=_env(cli_env, toy_project)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run directory" in lines[0] and "backend.workdir" in lines[0], result.stderr


def test_dead_tracking_server_the_run_goes_on_and_keeps_its_tracking(
    run_cli, cli_env, toy_project, maelstrom_home
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = _env(cli_env, toy_project)
    result = run_cli(
        ["app=toy", f"tracking.uri=http://127.0.0.1:{port}", "tracking.timeout_s=2"],
        cwd=toy_project,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"tracking server http://127.0.0.1:{port} does not answer" in result.stderr
    (row,) = _registry_rows(maelstrom_home)
    assert row["state"] == "succeeded" and "maelstrom runs sync" in row["message"]
    assert (Path(row["run_dir"]) / "tracking" / "journal.jsonl").exists()


def test_sweep_has_a_parent_run_and_failed_jobs_can_be_rerun(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    result = run_cli(
        ["--multirun", "app=toy", "model.learning_rate=0.01,0.5,0.001", "train.epochs=1"],
        cwd=toy_project,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr  # one job diverged
    sweep_id = re.search(r"(sweep-toy-\d{8}-\d{6}-[0-9a-f]{6})", result.stderr).group(1)
    client = _client(maelstrom_home)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and parent.data.tags["maelstrom.sweep_id"] == sweep_id
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs.failed"] == 1

    listing = run_cli(["maelstrom", "runs", "list", "--sweep", sweep_id], env=env, check=True).stdout
    assert listing.count("succeeded") == 2 and listing.count("failed") == 1

    # fix the "code" (the recorded commit is re-run, so commit the fix) -- here: the rerun keeps the
    # config, so the failed job fails again; a rerun with a changed config is a new sweep
    rerun = run_cli(["maelstrom", "runs", "rerun", "--sweep", sweep_id, "--failed"], env=env, timeout=300)
    assert rerun.returncode == 1
    rows = [r for r in _registry_rows(maelstrom_home) if r["sweep_id"] == sweep_id]
    assert len(rows) == 4  # only the failed job was re-run
    (again,) = [r for r in rows if r["rerun_of"]]
    assert again["sweep_index"] == 1
    assert again["config_hash"] == next(r["config_hash"] for r in rows if r["run_id"] == again["rerun_of"])
    child = client.get_run(again["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id

    # a sweep where everything succeeded has nothing to re-run
    ok = run_cli(
        ["--multirun", "app=toy", "model.learning_rate=0.01,0.02", "train.epochs=1"],
        cwd=toy_project,
        env=env,
        check=True,
        timeout=300,
    )
    ok_id = re.search(r"(sweep-toy-\d{8}-\d{6}-[0-9a-f]{6})", ok.stderr).group(1)
    nothing = run_cli(["maelstrom", "runs", "rerun", "--sweep", ok_id, "--failed"], env=env, check=True)
    assert "nothing to re-run" in nothing.stdout


def test_rerun_uses_the_recorded_code_and_config(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    app = toy_project / "toyapp.py"
    app.write_text(app.read_text().replace('return {"loss": loss}', 'return {"loss": loss, "version": 1.0}'))
    first = run_cli(["app=toy", "train.epochs=1"], cwd=toy_project, env=env, check=True)
    run_id = _run_id(first.stderr)
    # the working tree moves on: a rerun still runs version 1 (commit + recorded diff)
    app.write_text(app.read_text().replace('"version": 1.0', '"version": 2.0'))
    git(toy_project, "commit", "-qam", "version 2")
    rerun = run_cli(["maelstrom", "runs", "rerun", run_id], env=env, check=True)
    rows = {r["run_id"]: r for r in _registry_rows(maelstrom_home)}
    (new,) = [r for r in rows.values() if r["rerun_of"] == run_id]
    assert new["config_hash"] == rows[run_id]["config_hash"]
    assert json.loads((Path(new["run_dir"]) / "result.json").read_text())["metrics"]["version"] == 1.0
    assert "re-run of" in rerun.stderr
    # one next step, naming the new run (no placeholder to fill in)
    assert [line for line in rerun.stderr.splitlines() if line.startswith("next:")] == [
        f"next: maelstrom runs info {new['run_id']}"
    ]
    current = run_cli(["maelstrom", "runs", "rerun", run_id, "--current-code"], env=env, check=True)
    assert current.returncode == 0
    latest = max(_registry_rows(maelstrom_home), key=lambda r: r["created"])
    assert json.loads((Path(latest["run_dir"]) / "result.json").read_text())["metrics"]["version"] == 2.0


def _start_slow_run(env: dict, project: Path) -> subprocess.Popen:
    """``maelstrom-run`` of an app that prints ``started`` and sleeps two minutes, in the background."""
    (project / "slow.py").write_text(
        "import time\n\ndef main(ctx):\n    print('started', flush=True)\n    time.sleep(120)\n    return {}\n"
    )
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "maelstrom-run"), "app=toy", "app.entry=slow:main"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cancel_a_running_local_job(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    proc = _start_slow_run(env, toy_project)
    try:
        deadline = time.monotonic() + 60
        while True:
            rows = _registry_rows(maelstrom_home) if (maelstrom_home / "registry.db").exists() else []
            if (
                rows
                and rows[0]["job_id"]
                and (Path(rows[0]["run_dir"]) / "stdout.log").exists()
                and "started" in (Path(rows[0]["run_dir"]) / "stdout.log").read_text()
            ):
                break
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        run_id = rows[0]["run_id"]
        out = run_cli(["maelstrom", "runs", "cancel", run_id], env=env, check=True)
        assert "cancelled" in out.stdout
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "cancelled" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    client = _client(maelstrom_home)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "KILLED"


def test_unknown_run_id_is_a_clear_error(run_cli, cli_env):
    for command in (
        ["runs", "info", "nope"],
        ["runs", "rerun", "nope"],
        ["runs", "cancel", "nope"],
        ["runs", "logs", "nope"],
        ["runs", "rerun", "--sweep", "nope", "--failed"],
    ):
        result = run_cli(["maelstrom", *command], env=cli_env)
        assert result.returncode == 2, command
        assert result.stderr.startswith("maelstrom: error:") and len(result.stderr.strip().splitlines()) == 1


def test_remote_tracking_server(run_cli, cli_env, toy_project, maelstrom_home, mlflow_server):
    env = _env(cli_env, toy_project, MLFLOW_TRACKING_URI=mlflow_server)
    result = run_cli(
        ["app=toy", "train.epochs=2", "tracking.experiment=remote-toy"], cwd=toy_project, env=env, check=True
    )
    assert mlflow_server in result.stderr
    client = _client(maelstrom_home, mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("remote-toy").experiment_id])
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert "plots/training_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert not (maelstrom_home / "mlflow.db").exists()
    spec = yaml.safe_load((Path(_registry_rows(maelstrom_home)[0]["run_dir"]) / "spec.yaml").read_text())
    assert spec["config"]["tracking"]["uri"] is None  # the environment chose the server, not the config


def test_sweep_without_waiting_is_followed_with_maelstrom_runs(run_cli, cli_env, toy_project, maelstrom_home):
    env = _env(cli_env, toy_project)
    result = run_cli(
        [
            "--multirun",
            "app=toy",
            "model.learning_rate=0.01,0.02",
            "train.epochs=1",
            "hydra.launcher.wait=false",
        ],
        cwd=toy_project,
        env=env,
        check=True,
    )
    sweep_id = re.search(r"(sweep-toy-\d{8}-\d{6}-[0-9a-f]{6})", result.stderr).group(1)
    assert "without waiting" in result.stderr and "maelstrom runs watch sweep-toy-" in result.stderr
    deadline = time.monotonic() + 120
    while True:
        status = run_cli(["maelstrom", "runs", "status", "--sweep", sweep_id], env=env, check=True).stdout
        if "succeeded: 2" in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    # the refresh that saw the last job finish closed the sweep's parent run
    client = _client(maelstrom_home)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs.succeeded"] == 2
    assert (maelstrom_home / "hydra").is_dir() and not (toy_project / "multirun").exists()


def test_sweep_with_dead_tracking_server_still_runs(run_cli, cli_env, toy_project, maelstrom_home):
    """Submitted all the same; each job keeps its tracking for `runs sync` (delivered, with the
    parent run made, in tests/test_faults.py)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(cli_env, toy_project)
    result = run_cli(
        [
            "--multirun",
            "app=toy",
            "train.epochs=1,2",
            f"tracking.uri=http://127.0.0.1:{port}",
            "tracking.timeout_s=2",
        ],
        cwd=toy_project,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if "parent run is not made yet" in line]
    assert len(warning) == 1 and f"127.0.0.1:{port}" in warning[0] and "runs sync --sweep" in warning[0]
    rows = _registry_rows(maelstrom_home)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"succeeded"}
    assert all("maelstrom runs sync" in (r["message"] or "") for r in rows)


# Ctrl-C on a run and on a sweep: tests/test_terminal.py (a real SIGINT, what is shown, KILLED runs)
