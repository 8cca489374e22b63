"""Both reference apps end to end through ``maelstrom-run``, read back with the MLflow client."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow

PHASES = ("io", "forward", "backward", "step")


def _runs(home, experiment):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.parametrize(
    ("app", "framework", "metrics", "weights"),
    [
        ("ap1", "tensorflow", ("loss", "val_loss", "val_mae"), "model.weights.h5"),
        ("ap2", "pytorch", ("loss", "val_loss", "accuracy", "val_accuracy"), "model.pt"),
    ],
)
def test_app_trains_locally_and_is_tracked(
    run_cli, cli_env, tmp_path, maelstrom_home, app, framework, metrics, weights
):
    result = run_cli([f"app={app}", "train.epochs=2"], cwd=tmp_path, env=cli_env, check=True, timeout=300)
    assert "epoch 2/2" in result.stdout and "succeeded" in result.stderr
    client, (run,) = _runs(maelstrom_home, app)
    assert run.info.status == "FINISHED"
    assert run.data.tags["maelstrom.app"] == app and run.data.tags["label.framework"] == framework
    assert run.data.params["app.entry"] == f"maelstrom_run.apps.{app}.train:main"
    for name in metrics:
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    for phase in PHASES:
        history = client.get_metric_history(run.info.run_id, f"phase.{phase}.total_s")
        assert len(history) == 2 and all(m.value > 0 for m in history), phase
    if app == "ap2":
        assert run.data.metrics["final.val_accuracy"] > 0.6
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert weights in artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/training_curves.png", "plots/phase_times.png"} <= plots
    if app == "ap1":  # the loader's bytes read and delivered per epoch, and its plot
        for name in ("rate.bytes_read.GBps", "rate.bytes_delivered.GBps"):
            assert [m.value > 0 for m in client.get_metric_history(run.info.run_id, name)] == [True, True]
        assert "plots/throughput.png" in plots


def test_ap1_learning_rate_sweep(run_cli, cli_env, tmp_path, maelstrom_home):
    result = run_cli(
        ["--multirun", "app=ap1", "model.learning_rate=0.01,0.001", "train.epochs=1"],
        cwd=tmp_path,
        env=cli_env,
        check=True,
        timeout=600,
    )
    sweep_id = re.search(r"(sweep-ap1-\d{8}-\d{6}-[0-9a-f]{6})", result.stderr).group(1)
    _, runs = _runs(maelstrom_home, "ap1")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["maelstrom.sweep_id"] == sweep_id
    assert sorted(c.data.params["model.learning_rate"] for c in children) == ["0.001", "0.01"]
    assert {c.info.status for c in children} == {"FINISHED"}
