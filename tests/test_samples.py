"""Generated sample data: the layout of the real datasets, determinism and the cache."""

from __future__ import annotations

import csv

import netCDF4
import numpy as np
import pytest
import xarray as xr

from maelstrom_run.data.samples import (
    AP1_PREDICTORS,
    AP1_STATIC_PREDICTORS,
    ensure_ap1,
    ensure_ap2,
    generate_ap1,
    generate_ap2,
)

SIZES = {"runs": 3, "leadtimes": 4, "y": 20, "x": 24, "predictors": 8, "static_predictors": 3}


@pytest.fixture(scope="module")
def ap1_files(tmp_path_factory):
    return generate_ap1(tmp_path_factory.mktemp("ap1"), **SIZES, seed=7)


def test_ap1_files_are_consecutive_runs(ap1_files):
    assert [p.name for p in ap1_files] == [
        "air_temperature_20200301T03Z.nc",
        "air_temperature_20200302T09Z.nc",
        "air_temperature_20200303T15Z.nc",
    ]


def test_ap1_layout_with_netcdf4(ap1_files):
    with netCDF4.Dataset(ap1_files[0]) as nc:
        nc.set_auto_maskandscale(False)
        assert {name: len(dim) for name, dim in nc.dimensions.items()} == {
            "time": 1, "leadtime": 4, "y": 20, "x": 24, "predictor": 8, "static_predictor": 3,
        }  # fmt: skip
        expected = {
            "predictors": (("leadtime", "y", "x", "predictor"), np.float32),
            "static_predictors": (("y", "x", "static_predictor"), np.float32),
            "target_mean": (("leadtime", "y", "x"), np.float32),
            "target_std": (("leadtime", "y", "x"), np.float32),
            "latitude": (("y", "x"), np.float32),
            "longitude": (("y", "x"), np.float32),
            "leadtime": (("leadtime",), np.float64),
            "time": (("time",), np.float64),
            "x": (("x",), np.float32),
            "y": (("y",), np.float32),
        }
        for name, (dims, dtype) in expected.items():
            assert nc[name].dimensions == dims, name
            assert nc[name].dtype == dtype, name
        assert nc["predictors"].chunking() == "contiguous" and not nc["predictors"].filters()["zlib"]
        assert list(nc["predictor"][:]) == list(AP1_PREDICTORS[:8])
        assert list(nc["static_predictor"][:]) == list(AP1_STATIC_PREDICTORS[:3])
        assert nc["leadtime"].units == "hours"
        assert list(nc["leadtime"][:]) == [0, 12, 24, 36]
        assert netCDF4.num2date(nc["time"][0], nc["time"].units).isoformat().startswith("2020-03-01T03:00")
        lat, lon = nc["latitude"][:], nc["longitude"][:]
        assert 59 < lat.min() < lat.max() < 61 and 10 < lon.min() < lon.max() < 12  # around Oslo
        target, predictors = nc["target_mean"][:], nc["predictors"][:]
        assert np.isfinite(target).all() and np.isfinite(predictors).all()
        assert -40 < target.min() < target.max() < 40
        assert (nc["target_std"][:] > 0).all()
        cloud = predictors[..., list(AP1_PREDICTORS).index("cloud_area_fraction")]
        assert 0 <= cloud.min() <= cloud.max() <= 1


def test_ap1_layout_with_xarray(ap1_files):
    with xr.open_dataset(ap1_files[1]) as ds:
        assert ds["predictors"].dims == ("leadtime", "y", "x", "predictor")
        assert ds["target_mean"].dims == ("leadtime", "y", "x")
        assert list(ds["predictor"].values[:2]) == ["air_temperature_2m", "air_temperature_0.1_2m"]
        assert ds["time"].values[0] == np.datetime64("2020-03-02T09:00")
        assert ds["predictors"].sel(predictor="bias_recent").shape == (4, 20, 24)


def test_ap1_target_is_learnable(ap1_files):
    """The analysis is the raw forecast minus a model bias that ``bias_recent`` sees."""
    with netCDF4.Dataset(ap1_files[2]) as nc:
        predictors, target = nc["predictors"][:], nc["target_mean"][:]
    correction = target - predictors[..., 0]
    bias_recent = predictors[..., AP1_PREDICTORS.index("bias_recent")]
    assert np.corrcoef(correction.ravel(), bias_recent.ravel())[0, 1] < -0.5
    assert 0.2 < np.abs(correction).mean() < 3.0


def test_ap1_is_deterministic_in_the_seed(tmp_path):
    sizes = {**SIZES, "runs": 1}
    first = generate_ap1(tmp_path / "a", **sizes, seed=1)[0]
    again = generate_ap1(tmp_path / "b", **sizes, seed=1)[0]
    other = generate_ap1(tmp_path / "c", **sizes, seed=2)[0]
    read = [netCDF4.Dataset(p)["predictors"][:] for p in (first, again, other)]
    assert np.array_equal(read[0], read[1])
    assert not np.array_equal(read[0], read[2])


def test_ap1_rejects_unknown_sizes(tmp_path):
    with pytest.raises(ValueError, match="predictors"):
        generate_ap1(tmp_path, **{**SIZES, "predictors": len(AP1_PREDICTORS) + 1})


def test_ensure_ap1_generates_only_what_is_missing(tmp_path):
    files = ensure_ap1(tmp_path, SIZES, seed=3)
    assert len(files) == 3 and all(p.is_relative_to(tmp_path / "samples" / "ap1") for p in files)
    mtimes = [p.stat().st_mtime_ns for p in files]
    with netCDF4.Dataset(files[1]) as nc:
        before = nc["target_mean"][:]
    files[1].unlink()

    assert ensure_ap1(tmp_path, SIZES, seed=3) == files
    assert files[0].stat().st_mtime_ns == mtimes[0] and files[2].stat().st_mtime_ns == mtimes[2]
    with netCDF4.Dataset(files[1]) as nc:
        assert np.array_equal(nc["target_mean"][:], before)
    assert sorted(p.name for p in files[0].parent.iterdir()) == sorted(p.name for p in files)  # no temp files
    assert ensure_ap1(tmp_path, {**SIZES, "runs": 2}, seed=3)[0].parent != files[0].parent


def test_ap2_csv(tmp_path):
    path = generate_ap2(tmp_path / "tweets.csv", 1000, seed=5)
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert reader.fieldnames == ["text", "raining"]
    assert len(rows) == 1000
    labels = [int(row["raining"]) for row in rows]
    assert set(labels) == {0, 1}
    assert 0.4 < np.mean(labels) < 0.6
    texts = [row["text"] for row in rows]
    assert all(texts) and len(set(texts)) > 500
    assert any(text.startswith("no rain") for text in texts)  # negations are in there
    # the word "rain" alone does not give the label away
    with_rain = [label for text, label in zip(texts, labels, strict=True) if "rain" in text.split()]
    assert 0.2 < np.mean(with_rain) < 0.8


def test_ensure_ap2_is_idempotent(tmp_path):
    path = ensure_ap2(tmp_path, 50, seed=1)
    mtime = path.stat().st_mtime_ns
    assert ensure_ap2(tmp_path, 50, seed=1) == path
    assert path.stat().st_mtime_ns == mtime
    assert ensure_ap2(tmp_path, 60, seed=1) != path
