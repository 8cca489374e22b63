"""Generated sample data: the layout of the real datasets, determinism and the cache."""

from __future__ import annotations

import csv
import datetime as dt

import netCDF4
import numpy as np
import pytest
import xarray as xr

from maelstrom_run.data.samples import (
    AP1_PREDICTORS,
    AP1_STATIC_PREDICTORS,
    ap1_runs,
    ensure_ap1,
    ensure_ap2,
    generate_ap1,
    generate_ap2,
)

SIZES = {"runs": 3, "leadtimes": 4, "y": 20, "x": 24, "predictors": 8, "static_predictors": 6}

#: The variables of the real AP1 files (issue 12, read from files of the 5GB tier): dimensions,
#: dtype (``str``: a string variable) and units.
REAL_AP1 = {
    "predictors": (("leadtime", "y", "x", "predictor"), np.float32, None),
    "static_predictors": (("y", "x", "static_predictor"), np.float32, None),
    "target_mean": (("leadtime", "y", "x"), np.float32, "celsius"),
    "target_std": (("leadtime", "y", "x"), np.float32, "celsius"),
    "leadtime": (("leadtime",), np.float64, "seconds"),
    "time": ((), np.float64, "seconds since 1970-01-01 00:00:00 +00:00"),
    "projection_lcc": ((), np.int32, None),
    "x": (("x",), np.float32, "m"),
    "y": (("y",), np.float32, "m"),
    "altitude": (("y", "x"), np.float32, "m"),
    "land_area_fraction": (("y", "x"), np.float32, "1"),
    "latitude": (("y", "x"), np.float32, "degrees_north"),
    "longitude": (("y", "x"), np.float32, "degrees_east"),
    "predictor": (("predictor",), str, None),
    "predictor_units": (("predictor",), str, None),
    "static_predictor": (("static_predictor",), str, None),
    "static_predictor_units": (("static_predictor",), str, None),
}
REAL_PREDICTORS = [
    "air_temperature_0.1_2m", "air_temperature_0.9_2m", "air_temperature_2m", "bias_yesterday",
    "cloud_area_fraction", "precipitation_amount", "x_wind_10m", "y_wind_10m",
]  # fmt: skip
REAL_STATIC = ["altitude", "analysis_std", "bias_recent", "land_area_fraction", "model_altitude", "model_laf"]


@pytest.fixture(scope="module")
def ap1_files(tmp_path_factory):
    return generate_ap1(tmp_path_factory.mktemp("ap1"), **SIZES, seed=7)


def test_ap1_files_are_consecutive_runs_named_as_the_real_ones(ap1_files, tmp_path):
    assert [p.name for p in ap1_files] == ["20200301T03Z.nc", "20200302T09Z.nc", "20200303T15Z.nc"]
    # the real dataset has no file for 2020-05-22: run 82 is 2020-05-23 (day 21: 03 UTC, day 23: 15 UTC)
    assert ap1_runs(83)[-2:] == [
        dt.datetime(2020, 5, 21, 3, tzinfo=dt.UTC),
        dt.datetime(2020, 5, 23, 15, tzinfo=dt.UTC),
    ]


def test_ap1_has_exactly_the_variables_of_the_real_files(ap1_files):
    with netCDF4.Dataset(ap1_files[0]) as nc:
        assert {name: len(dim) for name, dim in nc.dimensions.items()} == {
            "leadtime": 4, "y": 20, "x": 24, "predictor": 8, "static_predictor": 6,
        }  # fmt: skip
        assert set(nc.variables) == set(REAL_AP1)
        for name, (dims, dtype, units) in REAL_AP1.items():
            var = nc[name]
            assert var.dimensions == dims, name
            assert var.dtype == dtype, name
            assert getattr(var, "units", None) == units, name
        assert list(nc["predictor"][:]) == REAL_PREDICTORS == list(AP1_PREDICTORS)
        assert list(nc["static_predictor"][:]) == REAL_STATIC == list(AP1_STATIC_PREDICTORS)
        assert len(nc["predictor_units"][:]) == 8 and len(nc["static_predictor_units"][:]) == 6
        assert nc["predictors"].chunking() == "contiguous" and not nc["predictors"].filters()["zlib"]


def test_ap1_values_with_xarray(ap1_files):
    with xr.open_dataset(ap1_files[1], decode_timedelta=False) as ds:
        assert ds["time"].values == np.datetime64("2020-03-02T09:00")
        assert list(ds["leadtime"].values) == [0, 12 * 3600, 24 * 3600, 36 * 3600]
        assert ds["static_predictors"].sel(static_predictor="bias_recent").shape == (20, 24)
        lat, lon = ds["latitude"].values, ds["longitude"].values
        assert 59 < lat.min() < lat.max() < 61 and 10 < lon.min() < lon.max() < 12  # around Oslo
        target, predictors = ds["target_mean"].values, ds["predictors"].values
        assert np.isfinite(target).all() and np.isfinite(predictors).all()
        assert -40 < target.min() < target.max() < 40
        assert (ds["target_std"].values > 0).all()
        cloud = ds["predictors"].sel(predictor="cloud_area_fraction").values
        assert 0 <= cloud.min() <= cloud.max() <= 1


def test_ap1_target_is_learnable(ap1_files):
    """The analysis is the raw forecast minus a model bias that the static ``bias_recent`` sees."""
    with xr.open_dataset(ap1_files[2]) as ds:
        raw = ds["predictors"].sel(predictor="air_temperature_2m").values
        correction = ds["target_mean"].values - raw
        bias_recent = ds["static_predictors"].sel(static_predictor="bias_recent").values
    assert (
        np.corrcoef(correction.ravel(), np.broadcast_to(bias_recent, correction.shape).ravel())[0, 1] < -0.5
    )
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
