"""Helpers of the AP3, AP5 and AP6 tests: run an app's entry point on a composed config, or the
whole CLI locally or on the local Slurm, and read what it logged to MLflow."""

from __future__ import annotations

import importlib
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from maelstrom_run.tracking.context import RunContext

PHASES = ("io", "forward", "backward", "step")


def run_main(tmp_path: Path, *overrides: str) -> tuple[dict[str, float], list, list[Path]]:
    """Compose ``overrides`` as ``maelstrom-run`` does and call the app's entry point in this process;
    returns (result, [(epoch, metrics)], logged artefacts)."""
    from maelstrom_run.config.compose import compose_config

    return run_entry(tmp_path, OmegaConf.create(compose_config(list(overrides))))


def run_entry(tmp_path: Path, cfg: Any) -> tuple[dict[str, float], list, list[Path]]:
    """Call the entry point of ``cfg.app.entry`` in this process with a RunContext that records what
    it logs; returns (result, [(epoch, metrics)], logged artefacts)."""
    OmegaConf.set_readonly(cfg, True)
    metrics: list = []
    artifacts: list[Path] = []
    ctx = RunContext(
        cfg=cfg,
        run_id="test",
        run_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        log_metrics=lambda values, step=None: metrics.append((step, values)),
        log_artifact=lambda path, artifact_path=None: artifacts.append(Path(path)),
    )
    module, function = cfg.app.entry.split(":")
    return getattr(importlib.import_module(module), function)(ctx), metrics, artifacts


def check_epochs(metrics: list, epochs: int, keys: tuple[str, ...]) -> None:
    """Every epoch logged the keys (finite) and the four standard phases."""
    assert [step for step, _ in metrics] == list(range(1, epochs + 1))  # epochs counted from 1
    for _, values in metrics:
        for key in keys:
            assert math.isfinite(values[key]), key
        for phase in PHASES:
            assert values[f"phase.{phase}.count"] >= 1 and values[f"phase.{phase}.total_s"] > 0
        assert values["count.samples"] > 0


def mlflow_run(home: Path, experiment: str) -> Any:
    """The only MLflow run of ``experiment`` in the test's ``MAELSTROM_HOME``."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def check_tracked(
    home: Path, app: str, model_key: str, baseline_keys: tuple[str, ...], plots: set[str]
) -> dict:
    """The app's MLflow run finished with the model's and the baselines' scores every epoch, its
    labels as tags and its plots; returns the last epoch's metrics."""
    client, run = mlflow_run(home, app)
    assert run.info.status == "FINISHED"
    assert run.data.tags["label.framework"] in ("tensorflow", "pytorch")
    history = client.get_metric_history(run.info.run_id, model_key)
    assert len(history) == 3  # the tiny tier's epochs
    for key in baseline_keys:
        assert len(client.get_metric_history(run.info.run_id, key)) == 3, key
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/{p}.png" for p in plots} <= logged, logged
    return run.data.metrics


def submit_to_slurm(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], cwd: Path, env: dict, app: str
) -> str:
    """Submit ``app``'s tiny tier with ``backend=slurm`` and wait until it ends; returns its state."""
    from maelstrom_run.launch.registry import Registry

    result = run_cli([f"app={app}", "backend=slurm", "backend.resources.time=10m"], cwd, env, check=True)
    assert "submitted to slurm as job" in result.stderr + result.stdout
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        (record,) = Registry().list(limit=None)
        run_cli(["maelstrom", "runs", "status", record.run_id], cwd, env)
        (record,) = Registry().list(limit=None)
        if record.state in ("succeeded", "failed", "cancelled"):
            return record.state
        time.sleep(3)
    raise AssertionError(f"{app} on Slurm did not end within 400 s")
