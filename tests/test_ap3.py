"""AP3 (radiation emulation): the generated layout against the plugin's, the models' shapes, the
baselines against independent fits, bad input, the tiny tier in this process
(tests/test_new_apps_end_to_end.py runs them through the CLI, locally and on Slurm)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from app_runner import check_epochs, run_main

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data.datasets import Dataset
from maelstrom_run.data.samples import generate_ap3

keras = pytest.importorskip("keras")

from maelstrom_run.apps.ap3 import train  # noqa: E402  (after the skip)
from maelstrom_run.apps.ap3.model import build_cnn, build_rnn  # noqa: E402


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    return generate_ap3(tmp_path_factory.mktemp("ap3"), files=2, columns=48, levels=137)


def test_generated_files_have_the_plugins_layout(pair_files):
    names = [p.name for p in pair_files]
    assert names == [
        "rad4NN_inputs_2020010100_0c0.nc",
        "triplecloud_outputs_2020010100_0c0.nc",
        "rad4NN_inputs_2020010100_0c2.nc",
        "triplecloud_outputs_2020010100_0c2.nc",
    ]
    with netCDF4.Dataset(pair_files[0]) as nc:
        sizes = {name: len(dim) for name, dim in nc.dimensions.items()}
        assert sizes["level"] == 137 and sizes["half_level"] == 138 and sizes["mid_level"] == 136
        # radiation.py's input groups; radiation_tf.py's features_size: col_inputs (137, 27), sca_inputs 17
        col = [k for k in train.LEVEL] + ["aerosol_mmr"]
        assert all(nc[k].dimensions[0] == "column" for k in col)
        assert len(train.LEVEL) + sizes["aerosol_type"] == 27
        scalars = sum(int(np.prod(nc[k].shape[1:])) if nc[k].ndim else 1 for k in train.SCALARS)
        assert scalars == 17
        assert nc["aerosol_mmr"].dimensions == ("column", "aerosol_type", "level")
        assert nc["temperature_hl"].dimensions == nc["pressure_hl"].dimensions == ("column", "half_level")
    with netCDF4.Dataset(pair_files[1]) as nc:
        assert set(train.FLUXES) | {"pressure_hl"} <= set(nc.variables)
        assert all(nc[k].dimensions == ("column", "half_level") for k in train.FLUXES)


@pytest.mark.parametrize("half_levels", [138, 61])
def test_models_map_every_half_level_to_four_fluxes(half_levels):
    x = np.zeros((3, half_levels, 47), dtype=np.float32)
    assert build_rnn(47, 4, "lstm", 8, 2)(x).shape == (3, half_levels, 4)
    assert build_rnn(47, 4, "gru", 8, 1)(x).shape == (3, half_levels, 4)
    assert build_cnn(47, 4, 8, 3, 5)(x).shape == (3, half_levels, 4)


def _columns(rng, n: int, levels: int = 6, channels: int = 4) -> train.Columns:
    x = rng.standard_normal((n, levels, channels)).astype(np.float32)
    weights = rng.standard_normal((levels, channels, 4))
    y = np.einsum("nlc,lcf->nlf", x, weights) + 0.1 * rng.standard_normal((n, levels, 4))
    pressure = np.sort(rng.uniform(1e3, 1e5, (n, levels)), axis=1)
    return train.Columns(x, y.astype(np.float32), pressure)


def test_baselines_match_numpy_and_sklearn():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    fit, val = _columns(rng, 300), _columns(rng, 50)
    np.testing.assert_allclose(train.mean_profile(fit, len(val))[7], np.mean(fit.y, axis=0), rtol=1e-6)
    predicted = train.linear_per_level(fit, val)
    for level in range(fit.x.shape[1]):
        scaler = StandardScaler().fit(fit.x[:, level])
        ridge = Ridge(alpha=train.RIDGE * len(fit)).fit(scaler.transform(fit.x[:, level]), fit.y[:, level])
        expected = ridge.predict(scaler.transform(val.x[:, level]))
        np.testing.assert_allclose(predicted[:, level], expected, rtol=1e-4, atol=1e-4)
    # heating rates as the plugin's get_heating_rate: -g/cp dF_net/dp in K per day
    hr = train.heating_rates(val.y, val.pressure)
    net = val.y[..., 0] - val.y[..., 1]
    by_hand = -9.80665 / 1004 * 86400 * (net[:, 3] - net[:, 2]) / (val.pressure[:, 3] - val.pressure[:, 2])
    np.testing.assert_allclose(hr[:, 2, 0], by_hand, rtol=1e-5)


def test_bad_input_names_the_key_and_the_choices(pair_files, tmp_path):
    from omegaconf import OmegaConf

    m = OmegaConf.create({"arch": "rnn", "levels": 60, "cell": "lstm", "units": 4, "layers": 1})
    with pytest.raises(
        ConfigError, match=r"^model.levels: 60 does not fit the data's 137 levels; valid: 137"
    ):
        train.build_model(m, 47, 137)
    with pytest.raises(ConfigError, match=r"rad4NN_inputs_2020010100_0c0.nc has no outputs file"):
        train.pairs([pair_files[0]])
    dataset = Dataset("radiation", "ap3", "tiny", "sample", list(pair_files))
    columns = train.read_pair(dataset, pair_files[0], pair_files[1])
    assert columns.x.shape == (48, 138, 47) and columns.y.shape == (48, 138, 4)


@pytest.mark.slow
def test_tiny_tier_trains_the_cnn(tmp_path):
    """The 1-D CNN in this process (the CLI test below trains the default RNN)."""
    result, metrics, artifacts = run_main(tmp_path, "app=ap3", "model=ap3_cnn", "train.epochs=2")
    check_epochs(metrics, 2, ("loss", "val_flux_rmse", "val_hr_rmse", "val_linear_flux_rmse"))
    assert metrics[-1][1]["val_flux_rmse"] < metrics[-1][1]["val_meanprofile_flux_rmse"]
    assert {p.name for p in artifacts} == {"error_profiles.png", "model.weights.h5"}
