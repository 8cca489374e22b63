"""AP5 (downscaling): the generated tier-1 and tier-2 layouts against the plugin's, the networks'
shapes, the baseline's scores against NumPy, bad input, the tiny tier in this process
(tests/test_new_apps_end_to_end.py runs them through the CLI, locally and on Slurm)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from app_runner import check_epochs, run_main
from omegaconf import OmegaConf

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data.datasets import Dataset
from maelstrom_run.data.samples import generate_ap5

torch = pytest.importorskip("torch")

from maelstrom_run.apps.ap5 import train  # noqa: E402  (after the skip)
from maelstrom_run.apps.ap5.model import Critic, generator  # noqa: E402

UNET = OmegaConf.create({"filters": 4, "levels": 2, "kernel_size": 3, "dropout": 0.0})


def test_generated_files_have_the_plugins_layout(tmp_path):
    tier1 = generate_ap5(tmp_path / "t1", months=7, times=2, lat=12, lon=16)
    # downscaling_tier1.py: April to September of each year only
    assert [p.name for p in tier1] == [f"downscaling_tier1_2016-{m:02d}.nc" for m in range(4, 10)] + [
        "downscaling_tier1_2017-04.nc"
    ]
    with netCDF4.Dataset(tier1[0]) as nc:
        assert list(nc.dimensions) == ["time", "lat", "lon"]
        for name in ("t2m_in", "z_in", "t2m_tar", "z_tar"):
            assert nc[name].dimensions == ("time", "lat", "lon") and nc[name].dtype == np.float32
        assert nc["t2m_tar"].units == "K"
    tier2 = generate_ap5(tmp_path / "t2", months=13, times=2, lat=96, lon=120, variant="tier-2")
    # downscaling_tier2.py: every month from 1995-01
    assert (
        tier2[0].name == "downscaling_tier2_1995-01.nc" and tier2[-1].name == "downscaling_tier2_1996-01.nc"
    )
    with netCDF4.Dataset(tier2[0]) as nc:
        assert {k: len(v) for k, v in nc.dimensions.items()} == {"time": 2, "rlat": 96, "rlon": 120}
        assert nc["t_2m_tar"].dimensions == ("time", "rlat", "rlon") and nc["hsurf_tar"].units == "m"


@pytest.mark.parametrize("grid", [(96, 128), (50, 70)])
def test_generator_and_critic_shapes(grid):
    x = torch.zeros((2, 3, *grid))
    assert generator(3, UNET)(x).shape == (2, 1, *grid)
    assert Critic(3, 4)(x, torch.zeros((2, 1, *grid))).shape == (2,)


def test_baseline_scores_match_numpy():
    rng = np.random.default_rng(1)
    target = rng.normal(285, 5, (4, 20, 30))
    baseline = target + rng.normal(0.5, 1.0, target.shape)
    val = train.Split(np.zeros((4, 3, 20, 30), np.float32), baseline, target)
    scores = train.baseline_skill(val)
    error = baseline - target
    assert scores["val_baseline_rmse"] == pytest.approx(np.sqrt(np.mean(error**2)))
    assert scores["val_baseline_bias"] == pytest.approx(np.mean(error))
    assert scores["val_baseline_mae"] == pytest.approx(np.mean(np.abs(error)))
    # the gradient ratio scales with the field's variations and ignores offsets
    assert train.gradient_ratio(0.5 * target + 3, target) == pytest.approx(0.5)
    assert train.gradient_ratio(target, target) == pytest.approx(1.0)


def test_bad_input_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^model.levels: 6 poolings do not fit the 96 x 128 grid .*valid: 1 to 5$"
    ):
        train.check_grid(6, 96, 128)
    files = generate_ap5(tmp_path, months=1, times=2, lat=8, lon=8)
    dataset = Dataset("downscaling", "ap5", "tiny", "sample", files)
    d = OmegaConf.create(
        {"inputs": ["t2m_in", "tp_in"], "static": ["z_tar"], "target": "t2m_tar", "baseline": "t2m_in"}
    )
    with pytest.raises(
        ConfigError,
        match=r"dataset.inputs \(downscaling_tier1_2016-04.nc\): 'tp_in' is not there; valid: t2m_in",
    ):
        train.read(dataset, files, d)


@pytest.mark.slow
def test_wgan_and_tier_2_train(tmp_path):
    result, metrics, artifacts = run_main(
        tmp_path / "wgan", "app=ap5", "model=ap5_wgan", "train.epochs=2", "train.steps_per_epoch=2"
    )
    check_epochs(metrics, 2, ("loss", "val_rmse", "val_gradient_ratio", "val_baseline_rmse"))
    assert {p.name for p in artifacts} == {"downscaling_fields.png", "model.pt"}
    result, metrics, _ = run_main(
        tmp_path / "t2", "app=ap5", "dataset=ap5_tier2", "train.epochs=1", "train.steps_per_epoch=2"
    )
    check_epochs(metrics, 1, ("loss", "val_rmse", "val_baseline_rmse"))
    assert next((tmp_path / "t2" / "cache" / "samples" / "ap5").glob("tier-2-*/downscaling_tier2_1995-01.nc"))
