"""AP3, AP5 and AP6 through the CLI: each tiny tier trains locally and, with the same config, on the
local Slurm (skipped without one), and its MLflow run holds the model's and the baselines' scores
every epoch, the app's labels and its plots."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from app_runner import check_tracked, submit_to_slurm
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class App:
    name: str
    #: The model's score and the baselines' (the first is the one the tiny tier must beat).
    score: str
    baselines: tuple[str, ...]
    plots: frozenset[str]
    #: What the run prints about the baseline.
    verdict: str


APPS = [
    App(
        "ap3",
        "val_flux_rmse",
        ("val_meanprofile_flux_rmse", "val_linear_flux_rmse", "val_linear_hr_rmse.upper"),
        frozenset({"error_profiles"}),
        "meanprofile baseline: flux RMSE",
    ),
    App(
        "ap5",
        "val_rmse",
        ("val_baseline_rmse", "val_baseline_gradient_ratio"),
        frozenset({"downscaling_fields"}),
        "the interpolated input's",
    ),
    App(
        "ap6",
        "val_mae",
        ("val_persistence_mae", "val_climatology_mae"),
        frozenset({"weather_regimes", "production_forecast"}),
        "the better baseline",
    ),
]


@pytest.mark.parametrize("app", APPS, ids=[a.name for a in APPS])
def test_tiny_tier_locally_beats_its_baseline(app: App, run_cli, cli_env, tmp_path, maelstrom_home):
    result = run_cli([f"app={app.name}"], cwd=tmp_path, env=cli_env, check=True, timeout=300)
    assert "epoch 3/3" in result.stdout and app.verdict in result.stdout
    metrics = check_tracked(maelstrom_home, app.name, app.score, app.baselines, set(app.plots))
    assert metrics[app.score] < metrics[app.baselines[0]]


@pytest.mark.parametrize("app", APPS, ids=[a.name for a in APPS])
def test_tiny_tier_on_slurm(app: App, run_cli, cli_env, tmp_path, maelstrom_home, slurm: SlurmCluster):  # noqa: F811
    assert submit_to_slurm(run_cli, tmp_path, cli_env, app.name) == "succeeded"
    check_tracked(maelstrom_home, app.name, app.score, app.baselines, set(app.plots))
