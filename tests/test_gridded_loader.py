"""The AP1 gridded loader on real generated NetCDF files: values, buffers, threads, front-ends, bad input."""

from __future__ import annotations

import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data import gridded
from maelstrom_run.data.gridded import BASE, GriddedLoader, GriddedOptions, Layout, LoaderError
from maelstrom_run.data.samples import ERA5_PREDICTORS, ERA5_STATIC, generate_ap1, generate_era5_like

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


# -- other layouts: ERA5-style files, packed, filled, compressed -------------------------------

ERA5_LAYOUT = {
    "sample_dim": "time", "y_dim": "latitude", "x_dim": "longitude", "predictors": list(ERA5_PREDICTORS),
    "predictor_names": None, "target": "t2m_next", "base": "t2m", "static": list(ERA5_STATIC),
    "static_names": None, "leadtime": None,
}  # fmt: skip


def era5_options(**kw) -> GriddedOptions:
    layout = Layout.from_config({**ERA5_LAYOUT, **kw.pop("layout", {})})
    values = {"batch_size": 4, "patch_size": 16, "shuffle": False, "normalise": False, "layout": layout}
    return GriddedOptions(**{**values, "features": ("static_predictors", "coordinates"), **kw})


def xarray_batches(paths, target="difference"):
    """What the loader must hand out, from xarray's decoded values: every 16 x 16 tile in order."""
    inputs, targets = [], []
    for path in paths:
        with xr.open_dataset(path) as ds:
            pred = np.stack([ds[n].values for n in ERA5_PREDICTORS], -1)
            goal = ds["t2m_next"].values - (ds["t2m"].values if target == "difference" else 0)
            static = np.stack([ds[n].values for n in ERA5_STATIC], -1)
            lon, lat = np.meshgrid(ds["longitude"].values, ds["latitude"].values)
        ny, nx = pred.shape[1:3]
        for t in range(pred.shape[0]):
            for y in range(0, ny - 15, 16):
                for x in range(0, nx - 15, 16):
                    w = np.s_[y : y + 16, x : x + 16]
                    inputs.append(np.concatenate([pred[t][w], static[w], np.stack([lat, lon], -1)[w]], -1))
                    targets.append(goal[t][w])
    return np.array(inputs, np.float32), np.array(targets, np.float32)


@pytest.mark.parametrize(
    "storage",
    [{"packed": True}, {"packed": True, "zlib": True}, {"packed": False, "zlib": True}, {"packed": False}],
    ids=["int16", "int16-zlib", "float32-zlib", "float32-filled"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_era5_layout_equals_xarray_decoding(tmp_path, storage, threads):
    paths = [
        generate_era5_like(tmp_path / f"era5_{i}.nc", 3, 33, 40, fill_share=0.01, seed=i, **storage)
        for i in range(2)
    ]
    loader = GriddedLoader(paths, era5_options(threads=threads))
    got_x, got_t = collect(loader)
    want_x, want_t = xarray_batches(paths)
    assert got_x.shape == (2 * 3 * 2 * 2, 16, 16, 5 + 2 + 2) == want_x.shape
    assert np.isnan(want_x).any()  # fill values: NaN in the same places
    np.testing.assert_allclose(got_x, want_x, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("zlib", [False, True], ids=["int16", "int16-zlib"])
@pytest.mark.parametrize("chosen", [None, ("tcc", "t2m", "u10"), ("msl", "tcc")])
def test_packed_normalised_difference_equals_xarray(tmp_path, zlib, chosen):
    """Packed predictors, normalised (decoded and normalised in one multiply-add): xarray's decoded values
    normalised with the loader's statistics, the target the difference of the raw values, also
    when the raw forecast is not among the predictors picked."""
    paths = [
        generate_era5_like(tmp_path / f"e{i}.nc", 3, 33, 40, fill_share=0.01, seed=i, zlib=zlib)
        for i in range(2)
    ]
    loader = GriddedLoader(paths, era5_options(normalise=True, features=(), predictors=chosen, threads=2))
    got_x, got_t = collect(loader)
    want_x, want_t = xarray_batches(paths)
    picked = [ERA5_PREDICTORS.index(n) for n in (chosen or ERA5_PREDICTORS)]
    mean, std = (a[picked] for a in loader.stats.predictors)
    want_x = (want_x[..., picked] - mean) / std
    assert np.isnan(got_x).any() and np.array_equal(np.isnan(got_x), np.isnan(want_x))
    # (the reference normalises in another order: float32 rounding where msl's offset cancels)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-6, atol=1e-4)


def test_era5_statistics_skip_fill_values_and_normalise(tmp_path):
    path = generate_era5_like(tmp_path / "era5.nc", 4, 32, 32, fill_share=0.02, zlib=True)
    loader = GriddedLoader([path], era5_options(normalise=True, target="mean", features=()))
    with xr.open_dataset(path) as ds:
        for c, name in enumerate(ERA5_PREDICTORS):
            values = ds[name].values
            np.testing.assert_allclose(loader.stats.predictors[0][c], np.nanmean(values), rtol=1e-5)
            np.testing.assert_allclose(loader.stats.predictors[1][c], np.nanstd(values), rtol=1e-3)
    inputs = collect(loader)[0]
    assert abs(np.nanmean(inputs)) < 0.2 and 0.8 < np.nanstd(inputs) < 1.2


def test_leadtime_feature_reads_seconds(files):
    """AP1's leadtime is in seconds: the un-normalised feature is the lead time in days."""
    loader = GriddedLoader(files, options(features=("leadtime",), normalise=False))
    with netCDF4.Dataset(files[0]) as nc:
        assert nc["leadtime"].units == "seconds"
        seconds = nc["leadtime"][:]
    np.testing.assert_allclose(loader._lead_values, seconds / 86400)
    assert loader._lead_values[1] == pytest.approx(16 / 24)  # 3 lead times over 48 h: 0, 16, 32 h


def test_layouts_that_do_not_match_the_file(tmp_path, files):
    path = generate_era5_like(tmp_path / "era5.nc", 2, 20, 24)
    with pytest.raises(
        LoaderError, match=r"era5\.nc: variable 'predictors' not found \(loader.layout.predictors\)"
    ):
        GriddedLoader([path], options())
    with pytest.raises(LoaderError, match=r"variable 't2m' has dimensions \(time, latitude, longitude\), expected "
                       r"\(time, y, x\); set loader.layout"):  # fmt: skip
        GriddedLoader([path], era5_options(layout={"y_dim": "y", "x_dim": "x"}))
    with pytest.raises(
        ConfigError, match=r"loader.patch_size: 32 does not fit the 20x24 grid .*set it to at most 20"
    ):
        GriddedLoader([path], era5_options(patch_size=32))
    with pytest.raises(ConfigError, match="loader.layout.predictor: unknown key"):
        Layout.from_config({"predictor": "t2m"})
    with pytest.raises(ConfigError, match=r"loader.target: difference needs loader.layout.base"):
        era5_options(target="difference", layout={"base": None})

    channels_first = tmp_path / "cf.nc"
    with netCDF4.Dataset(channels_first, "w") as nc:
        for name, size in {"leadtime": 2, "predictor": 3, "y": 4, "x": 5}.items():
            nc.createDimension(name, size)
        nc.createVariable("predictors", "f4", ("leadtime", "predictor", "y", "x"))
        nc.createVariable("target_mean", "f4", ("leadtime", "y", "x"))
    with pytest.raises(LoaderError, match=r"cf\.nc: variable 'predictors' is channels-first"):
        GriddedLoader([channels_first], options(features=()))

    text = tmp_path / "names.nc"
    with netCDF4.Dataset(text, "w") as nc:
        for name, size in {"time": 2, "latitude": 4, "longitude": 5}.items():
            nc.createDimension(name, size)
        nc.createVariable("t2m", str, ("time", "latitude", "longitude"))
        nc.createVariable("t2m_next", "f4", ("time", "latitude", "longitude"))
    with pytest.raises(LoaderError, match=r"names\.nc: variable 't2m' holds strings, not numbers"):
        GriddedLoader([text], era5_options(layout={"predictors": ["t2m"], "static": None}, features=()))

    classic = tmp_path / "classic.nc"
    with netCDF4.Dataset(classic, "w", format="NETCDF3_CLASSIC") as nc:
        nc.createDimension("x", 2)
    with pytest.raises(LoaderError, match=r"classic\.nc: a NetCDF3 \(CDF1\) file; .*nccopy -k nc4"):
        GriddedLoader([classic], options())
    not_nc = tmp_path / "notes.nc"
    not_nc.write_text("hello")
    with pytest.raises(LoaderError, match=r"notes\.nc: not a NetCDF file"):
        GriddedLoader([not_nc], options())


def test_unsigned_bytes_big_endian_and_float64_equal_xarray(tmp_path):
    """Fields stored as ``_Unsigned`` bytes with a scale, big-endian floats and float64 doubles."""
    path = tmp_path / "odd.nc"
    rng = np.random.default_rng(5)
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in {"time": 2, "latitude": 16, "longitude": 20}.items():
            nc.createDimension(name, size)
        grid = ("time", "latitude", "longitude")
        cover = nc.createVariable("cover", "i1", grid, fill_value=np.int8(-1))  # 255 unsigned: missing
        cover.setncattr("_Unsigned", "true")
        cover.scale_factor, cover.add_offset = np.float32(0.5), np.float32(-10.0)
        cover.set_auto_maskandscale(False)
        cover[:] = rng.integers(0, 256, (2, 16, 20)).astype("u1").view("i1")
        nc.createVariable("big", ">f4", grid, endian="big")[:] = rng.standard_normal((2, 16, 20))
        nc.createVariable("double", "f8", grid)[:] = rng.standard_normal((2, 16, 20))
        nc.createVariable("target", "f4", grid)[:] = rng.standard_normal((2, 16, 20))
    layout = {"predictors": ["cover", "big", "double"], "target": "target", "base": None, "static": None}
    options = era5_options(layout=layout, features=(), target="mean", patch_size=None)
    got_x, got_t = collect(GriddedLoader([path], options))
    with xr.open_dataset(path) as ds:
        assert np.nanmax(ds["cover"].values) > 100 and np.isnan(ds["cover"].values).any()  # unsigned, masked
        want = np.stack([ds[n].values for n in ("cover", "big", "double")], -1).astype(np.float32)
        np.testing.assert_allclose(got_x, want, rtol=1e-6)
        np.testing.assert_allclose(got_t, ds["target"].values, rtol=1e-6)


def test_unsigned_packed_bytes_normalised_equal_xarray(tmp_path):
    """Bytes with ``_Unsigned`` (as satellite and radar products store them), packed and with a
    fill value, decoded and normalised in the patch: xarray's decoded values, normalised."""
    import netCDF4

    path, rng = tmp_path / "bytes.nc", np.random.default_rng(3)
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in (("time", 2), ("latitude", 20), ("longitude", 24)):
            nc.createDimension(name, size)
        dims = ("time", "latitude", "longitude")
        for name in ("a", "b"):
            var = nc.createVariable(name, "i1", dims, fill_value=np.int8(-1))
            var.set_auto_maskandscale(False)
            var._Unsigned, var.scale_factor, var.add_offset = "true", np.float32(0.5), np.float32(-20.0)
            var[:] = rng.integers(0, 256, (2, 20, 24)).astype(np.uint8).view(np.int8)  # 255 = the fill
        nc.createVariable("goal", "f4", dims)[:] = rng.normal(size=(2, 20, 24)).astype(np.float32)
    layout = {"sample_dim": "time", "y_dim": "latitude", "x_dim": "longitude", "predictors": ["a", "b"],
              "predictor_names": None, "target": "goal", "base": None, "static": None, "leadtime": None}  # fmt: skip
    options = GriddedOptions(batch_size=4, patch_size=8, shuffle=False, normalise=True, features=(),
                             target="mean", layout=Layout.from_config(layout))  # fmt: skip
    loader = GriddedLoader([path], options)
    assert loader._fused
    got_x, _ = collect(loader)
    with xr.open_dataset(path) as ds:
        values = np.stack([ds[n].values for n in ("a", "b")], -1)
    want = np.array([values[t, y : y + 8, x : x + 8] for t in range(2) for y in (0, 8) for x in (0, 8, 16)])
    mean, std = loader.stats.predictors
    want = ((want - mean) / std).astype(np.float32)
    assert np.isnan(want).any() and np.array_equal(np.isnan(got_x), np.isnan(want))
    np.testing.assert_allclose(got_x, want, rtol=1e-5, atol=1e-5)
