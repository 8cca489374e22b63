"""CF decoding in every view of a dataset, against xarray's own decoding of files built here with
netCDF4: packed int16, fill values, unsigned bytes, NetCDF3 flavours, odd calendars, strings."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from maelstrom_run.core.errors import DataError
from maelstrom_run.data import load_dataset

FORMATS = ["NETCDF4", "NETCDF4_CLASSIC", "NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]


def write_file(path, fmt: str = "NETCDF4", calendar: str = "360_day", start: int = 0, zlib: bool = False):
    """Four time steps of packed, filled and unsigned fields on a 5 x 6 grid, plus a static field."""
    rng = np.random.default_rng(start)
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 5)
        nc.createDimension("lon", 6)
        nc.createDimension("nchar", 8)
        time = nc.createVariable("time", "f8", ("time",))
        time.units, time.calendar = "days since 2000-01-01", calendar
        time[:] = start + np.arange(4) * 1.0
        lat = nc.createVariable("lat", "f4", ("lat",))
        lat[:] = np.linspace(40, 60, 5)
        packed = nc.createVariable("t2m", "i2", ("time", "lat", "lon"), fill_value=-32767, zlib=zlib)
        packed.scale_factor, packed.add_offset, packed.units = np.float32(0.01), np.float32(273.15), "K"
        packed.set_auto_maskandscale(False)  # the raw integers written as they are
        raw = rng.integers(-3000, 3000, (4, 5, 6)).astype("i2")
        raw[0, 0, :3] = -32767
        packed[:] = raw
        filled = nc.createVariable("tp", "f4", ("time", "lat", "lon"), zlib=zlib)
        filled.missing_value = np.float32(-9999.0)
        filled.set_auto_maskandscale(False)
        values = rng.random((4, 5, 6)).astype("f4")
        values[1, 2, 3] = -9999.0
        filled[:] = values
        # NetCDF3 has no unsigned types: the _Unsigned convention on signed bytes
        cover = nc.createVariable("cover", "i1", ("time", "lat", "lon"))
        cover.setncattr("_Unsigned", "true")
        cover.set_auto_maskandscale(False)
        cover[:] = rng.integers(0, 256, (4, 5, 6)).astype("u1").view("i1")
        static = nc.createVariable("orography", "i2", ("lat", "lon"))
        static.scale_factor = np.float32(0.5)
        static.set_auto_maskandscale(False)
        static[:] = np.random.default_rng(99).integers(0, 1000, (5, 6)).astype("i2")  # same in every file
        name = nc.createVariable("station", "S1", ("nchar",))
        name[:] = netCDF4.stringtochar(np.array(["oslo"], "S8"))[0]
        if fmt == "NETCDF4":
            label = nc.createVariable("label", str, ("lat",))
            label[:] = np.array([f"row{i}" for i in range(5)], dtype=object)
    return path


def assert_same(got: xr.Dataset, want: xr.Dataset) -> None:
    assert set(got.variables) == set(want.variables)
    for name in want.variables:
        a, b = got[name].values, want[name].values
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)  # NaN in the same places
        else:
            assert (a == b).all(), name


@pytest.fixture(scope="module", params=FORMATS)
def one_file(request, tmp_path_factory):
    return write_file(tmp_path_factory.mktemp("fmt") / f"{request.param}.nc", request.param)


def test_open_equals_xarray_decoding(one_file):
    ds = load_dataset(str(one_file))
    assert ds.kind == "files" and ds.files == [one_file]
    with xr.open_dataset(one_file) as want:
        got = ds.open(one_file)
        assert_same(got, want)
        assert np.isnan(got["t2m"].values[0, 0, :3]).all() and np.isnan(got["tp"].values[1, 2, 3])
        assert got["cover"].values.min() >= 0 and got["cover"].values.max() > 127
        assert got["time"].values[0].calendar == "360_day"
        assert_same(ds.to_xarray(), want)


def test_decode_false_gives_the_stored_values(one_file):
    with xr.open_dataset(one_file, decode_cf=False) as want:
        got = load_dataset(str(one_file)).open(one_file, decode=False)
        assert got["t2m"].dtype == np.int16
        assert_same(got, want)


def test_samples_and_pytorch_are_decoded(one_file):
    pytest.importorskip("torch")
    ds = load_dataset(one_file)
    with xr.open_dataset(one_file) as want:
        index = ds.samples()
        assert len(index) == 4
        assert set(index[0]) == {"t2m", "tp", "cover"}  # numeric variables along time
        for i in range(4):
            for name, value in index[i].items():
                np.testing.assert_array_equal(value, want[name].values[i])
        torch_ds = ds.to_pytorch(["t2m", "orography"])
        sample = torch_ds[1]
        np.testing.assert_array_equal(sample["t2m"].numpy(), want["t2m"].values[1])
        # no sample dimension: the whole field in every sample
        np.testing.assert_array_equal(sample["orography"].numpy(), want["orography"].values)
        raw = ds.samples(["t2m"], decode=False)[0]["t2m"]
        assert raw.dtype == np.int16


def test_tfdataset_is_decoded(tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = write_file(tmp_path / "a.nc", calendar="noleap")
    with xr.open_dataset(path) as want:
        elements = list(load_dataset(path).to_tfdataset(["t2m", "tp"]))
        assert len(elements) == 4
        for i, element in enumerate(elements):
            np.testing.assert_array_equal(element["tp"].numpy(), want["tp"].values[i])
            assert element["t2m"].dtype == tf.float32


def test_glob_and_list_join_along_the_sample_dimension(tmp_path):
    paths = [write_file(tmp_path / f"part{i}.nc", calendar="noleap", start=4 * i) for i in range(3)]
    want = xr.concat([xr.open_dataset(p) for p in paths], dim="time", data_vars="minimal")
    for where in (str(tmp_path / "*.nc"), [str(p) for p in paths], tmp_path):
        ds = load_dataset(where)
        got = ds.to_xarray()
        assert got.sizes["time"] == 12
        for name in ("t2m", "tp", "cover", "time"):
            np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
        np.testing.assert_array_equal(got["orography"].values, want["orography"].values)
        assert len(ds.samples()) == 12


def test_ap1_forecasts_join_along_a_new_time(tmp_path):
    from maelstrom_run.data.samples import generate_ap1

    sizes = {"runs": 3, "leadtimes": 2, "y": 8, "x": 9, "predictors": 8, "static_predictors": 6}
    paths = generate_ap1(tmp_path, **sizes)
    ds = load_dataset({"kind": "ap1", "name": "ap1", "source": "files", "path": str(tmp_path / "*.nc")})
    got = ds.to_xarray(["predictors", "target_mean", "static_predictors"])
    assert got["predictors"].dims == ("time", "leadtime", "y", "x", "predictor")
    for i, path in enumerate(paths):
        with xr.open_dataset(path) as one:
            np.testing.assert_array_equal(got["predictors"].values[i], one["predictors"].values)
            np.testing.assert_array_equal(got["target_mean"].values[i], one["target_mean"].values)
            assert got["time"].values[i] == one["time"].values
    assert "time" in got["static_predictors"].dims  # bias_recent changes from run to run
    assert "time" not in ds.to_xarray(["latitude"])["latitude"].dims
    assert not np.array_equal(got["predictors"].values[0], got["predictors"].values[1])


def test_bad_files_say_which_and_what(tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("not a netcdf file\n")
    with pytest.raises(DataError, match=r"notes\.nc: not a NetCDF file"):
        load_dataset(text).open(text)
    good = write_file(tmp_path / "good.nc")
    cut = tmp_path / "cut.nc"
    cut.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(DataError, match=r"cut\.nc: a NetCDF4/HDF5 file that cannot be read .*truncated"):
        load_dataset(cut).open(cut)
    classic = write_file(tmp_path / "classic.nc", "NETCDF3_CLASSIC")
    cut3 = tmp_path / "cut3.nc"
    cut3.write_bytes(classic.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut3\.nc: a NetCDF3 \(CDF1\) file that cannot be read"):
        load_dataset(cut3).open(cut3)
    with pytest.raises(DataError, match=r"load_dataset: .*nothing-\*\.nc matches no file"):
        load_dataset(str(tmp_path / "nothing-*.nc"))
    with pytest.raises(DataError, match=r"load_dataset: .*absent\.nc: no such file"):
        load_dataset(str(tmp_path / "absent.nc"))
    with pytest.raises(DataError, match=r"good\.nc: no variable 'nope'"):
        load_dataset(good).to_xarray(["nope"])
    with pytest.raises(DataError, match=r"good\.nc: no dimension 'level'"):
        load_dataset(good).to_xarray(select={"level": 0})
