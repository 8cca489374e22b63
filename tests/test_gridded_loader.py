"""The AP1 gridded loader on real generated NetCDF files: values, buffers, threads, front-ends, bad input."""

from __future__ import annotations

import shutil

import netCDF4
import numpy as np
import pytest

from maelstrom_run.config import ConfigError
from maelstrom_run.data import gridded
from maelstrom_run.data.gridded import BASE, GriddedLoader, GriddedOptions, LoaderError
from maelstrom_run.data.samples import generate_ap1

SIZES = {"runs": 2, "leadtimes": 3, "y": 40, "x": 48, "predictors": 8, "static_predictors": 6}
FEATURES = ("static_predictors", "coordinates", "leadtime")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return generate_ap1(tmp_path_factory.mktemp("ap1"), **SIZES, seed=3)


def options(**kw) -> GriddedOptions:
    return GriddedOptions(**{"batch_size": 5, "patch_size": 16, "shuffle": False, **kw})


def expected_batches(files, loader: GriddedLoader, features=FEATURES, target="difference"):
    """The loader's output computed the plain way: whole arrays with netCDF4, then numpy."""
    stats = loader.stats
    inputs, targets = [], []
    for path in files:
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_maskandscale(False)
            pred, mean = nc["predictors"][:], nc["target_mean"][:]
            static, hours = nc["static_predictors"][:], nc["leadtime"][:]
            latlon = np.stack([nc["latitude"][:], nc["longitude"][:]], -1)
            names = list(nc["predictor"][:])
        goal = mean - pred[..., names.index(BASE)] if target == "difference" else mean
        pred = (pred - stats.predictors[0]) / stats.predictors[1]
        static = (static - stats.static_predictors[0]) / stats.static_predictors[1]
        flat = latlon.reshape(-1, 2).astype(np.float64)
        latlon = (latlon - flat.mean(0)) / flat.std(0)
        lead = (hours - hours.mean()) / hours.std()
        for t in range(pred.shape[0]):
            for y in range(0, 40 - 15, 16):
                for x in range(0, 48 - 15, 16):
                    window = np.s_[y : y + 16, x : x + 16]
                    channels = [pred[t][window]]
                    if "static_predictors" in features:
                        channels.append(static[window])
                    if "coordinates" in features:
                        channels.append(latlon[window])
                    if "leadtime" in features:
                        channels.append(np.full((16, 16, 1), lead[t]))
                    inputs.append(np.concatenate(channels, -1))
                    targets.append(goal[t][window])
    return np.array(inputs, np.float32), np.array(targets, np.float32)


def collect(batches):
    inputs, targets = [], []
    for a, b in batches:
        inputs.append(np.array(a))
        targets.append(np.array(b))
    return np.concatenate(inputs), np.concatenate(targets)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("block_rows", [None, 3], ids=["whole-patches", "blocks-of-3-rows"])
def test_values_match_numpy(files, threads, block_rows, monkeypatch):
    if block_rows:  # patches copied in blocks of rows that do not divide the patch
        monkeypatch.setattr(gridded, "_BLOCK_BYTES", block_rows * 16 * 8 * 4)
    loader = GriddedLoader(files, options(threads=threads, features=FEATURES))
    got_x, got_t = collect(loader)
    want_x, want_t = expected_batches(files, loader)
    assert got_x.shape == (2 * 3 * 2 * 3, 16, 16, 8 + 6 + 2 + 1) == want_x.shape
    np.testing.assert_allclose(got_x, want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-5, atol=1e-5)


def test_selected_predictors_raw_values_and_absolute_target(files):
    chosen = ("bias_yesterday", BASE)
    loader = GriddedLoader(files, options(normalise=False, predictors=chosen, target="mean"))
    got_x, got_t = collect(loader)
    with netCDF4.Dataset(files[0]) as nc:
        names = list(nc["predictor"][:])
        pred, mean = nc["predictors"][0], nc["target_mean"][0]
    window = np.s_[16:32, 32:48]  # the sixth tile of the first field
    np.testing.assert_array_equal(got_x[5], pred[window][..., [names.index(n) for n in chosen]])
    np.testing.assert_array_equal(got_t[5], mean[window])
    assert loader.stats is None and loader.channels == 2


@pytest.mark.parametrize(
    "chosen", [("bias_yesterday", BASE), ("bias_yesterday",)], ids=["base-picked", "base-not-picked"]
)
def test_difference_target_with_picked_predictors_in_blocks(files, chosen, monkeypatch):
    monkeypatch.setattr(gridded, "_BLOCK_BYTES", 5 * 16 * len(chosen) * 4)  # blocks of 5 rows
    loader = GriddedLoader(files, options(normalise=False, predictors=chosen, target="difference"))
    got_x, got_t = collect(loader)
    with netCDF4.Dataset(files[1]) as nc:
        names = list(nc["predictor"][:])
        pred, mean = nc["predictors"][2], nc["target_mean"][2]
    window = np.s_[16:32, 0:16]  # the fourth tile of the last field
    np.testing.assert_array_equal(got_x[-3], pred[window][..., [names.index(n) for n in chosen]])
    np.testing.assert_allclose(got_t[-3], mean[window] - pred[window][..., names.index(BASE)], atol=1e-6)


def test_shuffle_is_deterministic_in_the_seed_and_covers_every_field(files):
    def run(seed):
        loader = GriddedLoader(files, options(shuffle=True, seed=seed, threads=2))
        return collect(loader)

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert len(a[0]) == 2 * 3 * 6  # as many patches as tiles fit


def test_buffers_are_reused_and_prefetch_bounds_fields(files):
    loader = GriddedLoader(files, options(threads=2, prefetch=2, patch_size=None, batch_size=1, multiple=8))
    addresses = set()
    for _ in range(3):
        for batch in loader:
            addresses.add(batch.inputs.ctypes.data)
    assert loader.buffers == {"fields": 2, "batches": 3}  # threads + 1
    assert len(addresses) == loader.buffers["batches"]
    assert loader.patch == (40, 48)
    counts = loader.take_counts()
    field = 40 * 48 * 9 * 4
    assert counts["fields"] == 3 * 6 and counts["batches"] == 3 * 6
    assert counts["bytes_read"] >= 3 * 6 * field  # and the statistics' sample
    assert counts["bytes_delivered"] == 3 * 6 * 40 * 48 * (8 + 1) * 4


def test_steps_continue_into_the_next_pass(files):
    loader = GriddedLoader(files, options(shuffle=True))
    assert sum(1 for _ in loader.iter_batches(steps=11)) == 11  # a pass has 8 batches (36 patches)
    batches = loader.iter_batches(steps=3)
    next(batches)
    batches.close()  # stops the threads early


def test_tf_and_torch_front_ends_feed_the_same_batches(files):
    from maelstrom_run.data import gridded_tf, gridded_torch

    loader = GriddedLoader(files, options(threads=2, features=("leadtime",)))
    want = collect(loader)
    tf_x, tf_t = collect((x.numpy(), t.numpy()) for x, t in gridded_tf.dataset(loader))
    np.testing.assert_array_equal(tf_x, want[0])
    np.testing.assert_array_equal(tf_t, want[1])

    import torch

    data = torch.utils.data.DataLoader(gridded_torch.GriddedDataset(loader, copy=True), batch_size=None)
    torch_x, torch_t = collect((x.numpy(), t.numpy()) for x, t in data)
    np.testing.assert_array_equal(torch_x, want[0])
    np.testing.assert_array_equal(torch_t, want[1])


def test_missing_and_truncated_files(files, tmp_path):
    with pytest.raises(LoaderError, match=r"nope\.nc: no such file"):
        GriddedLoader([tmp_path / "nope.nc"], options())
    cut = tmp_path / "cut.nc"
    data = files[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoaderError, match=r"cut\.nc: .*truncated"):
        GriddedLoader([cut], options())


def test_missing_variable_and_wrong_dimensions(files, tmp_path):
    broken = tmp_path / "broken.nc"
    shutil.copy(files[0], broken)
    with netCDF4.Dataset(broken, "a") as nc:
        nc.renameVariable("target_mean", "analysis")
    with pytest.raises(LoaderError, match=r"broken\.nc: variable 'target_mean' not found"):
        GriddedLoader([broken], options())

    odd = tmp_path / "odd.nc"
    with netCDF4.Dataset(odd, "w") as nc:
        for name, size in {"leadtime": 2, "y": 4, "x": 4, "predictor": 1, "static_predictor": 1}.items():
            nc.createDimension(name, size)
            if name != "static_predictor":
                nc.createVariable(name, "f8" if name != "predictor" else str, (name,))
        nc.createVariable("predictors", "f4", ("leadtime", "x", "y", "predictor"))
        nc.createVariable("target_mean", "f4", ("leadtime", "y", "x"))
        nc.createVariable("static_predictors", "f4", ("y", "x", "static_predictor"))
    with pytest.raises(LoaderError, match=r"odd\.nc: variable 'predictors' has dimensions \(leadtime, x, y"):
        GriddedLoader([odd], options())


def test_bad_options(files):
    with pytest.raises(ConfigError, match="loader.threads: 0 must be an integer >= 1"):
        options(threads=0)
    with pytest.raises(ConfigError, match="loader.features: unknown 'orography'"):
        options(features=("orography",))
    with pytest.raises(ConfigError, match="loader.patch_size: 10 .* divide by 4"):
        options(patch_size=10, multiple=4)
    with pytest.raises(LoaderError, match=r"loader.predictors: 'snow' not in"):
        GriddedLoader(files, options(predictors=("snow",)))
    with pytest.raises(ConfigError, match="loader.patch_size: 64 does not fit the 40x48 grid"):
        GriddedLoader(files, options(patch_size=64))
