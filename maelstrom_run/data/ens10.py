"""AP4 (ENS-10): ensemble statistics in the layout of the ENS-10 dataset, generated or read.

ENS-10 (climetlab-maelstrom-ens10) holds ECMWF re-forecasts with 10 members, twice a week over
20 years (1998-2017), grouped by day of the year: the file of a date (``output.pl.2018MMDD`` for
pressure levels, ``output.sfc.2018MMDD`` for the surface) holds that date of every year, at lead
times (``step``) 0, 24 and 48 h, on a 0.5 degree grid of 361 x 720 points. The post-processing
task corrects the 48 h forecast of z500, t850 or t2m against the ERA5 analysis.

This module reads and writes those files as ensemble statistics, one NetCDF4 file per date:

    output.pl.2018MMDD.nc   {v}_mean, {v}_std (time, step, isobaricInhPa, latitude, longitude)
                            for v in z t q w d u v                        float32, deflate
    output.sfc.2018MMDD.nc  {v}_mean, {v}_std (time, step, latitude, longitude)
                            for v in sst tcw tcwv cp msl tcc u10 v10 t2m tp skt
    ERA5.2018MMDD.nc        z500, t850, t2m (time, latitude, longitude) at the valid time

``time`` is the forecast reference time of each year, ``step`` the lead time in hours,
``isobaricInhPa`` the pressure levels (10 ... 1000 hPa), ``latitude`` 90 ... -90 and ``longitude``
0 ... 359.5 (at the full size). The published GRIB files hold the 10 members instead; ``cdo -f nc4
ensmean`` / ``ensstd`` turn them into this layout. Fields are chunked one horizontal field at a time.

The generated data are plausible, not physical: smooth weather on a seasonal climatology, a
spread growing with the lead time, and an ERA5 "truth" that differs from the ensemble mean by a
fixed regional bias plus an error about 1.3 times the spread (the ensemble is under-dispersive),
so post-processing has something to learn.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from .samples import _smooth

#: Version of the generator; part of the cache key, bump it when the generated data change.
VERSION = 1

#: The dates (MMDD) of the ENS-10 files, twice a week.
DATES = (
    "0101 0104 0108 0111 0115 0118 0122 0125 0129 0201 0205 0208 0212 0215 0219 0222 0226 0301 0305 "
    "0308 0312 0315 0319 0322 0326 0329 0402 0405 0409 0412 0416 0419 0423 0426 0430 0503 0507 0510 "
    "0514 0517 0521 0524 0528 0531 0604 0607 0611 0614 0618 0621 0625 0628 0702 0705 0709 0712 0716 "
    "0719 0723 0726 0730 0802 0806 0809 0813 0816 0820 0823 0827 0830 0903 0906 0910 0913 0917 0920 "
    "0924 0927 1001 1004 1008 1011 1015 1018 1022 1025 1029 1101 1105 1108 1112 1115 1119 1122 1126 "
    "1129 1203 1206 1210 1213 1217 1220 1224 1227 1231"
).split()
FIRST_YEAR = 1998
#: Pressure levels of ENS-10 (hPa).
LEVELS = (10, 50, 100, 200, 300, 400, 500, 700, 850, 925, 1000)
STEPS = (0, 24, 48)
MEMBERS = 10

#: Pressure-level variables: name -> (long name, units).
PL_VARIABLES = {
    "z": ("Geopotential", "m**2 s**-2"),
    "t": ("Temperature", "K"),
    "q": ("Specific humidity", "kg kg**-1"),
    "w": ("Vertical velocity", "Pa s**-1"),
    "d": ("Divergence", "s**-1"),
    "u": ("U component of wind", "m s**-1"),
    "v": ("V component of wind", "m s**-1"),
}
SFC_VARIABLES = {
    "sst": ("Sea surface temperature", "K"),
    "tcw": ("Total column water", "kg m**-2"),
    "tcwv": ("Total column vertically-integrated water vapour", "kg m**-2"),
    "cp": ("Convective precipitation", "m"),
    "msl": ("Mean sea level pressure", "Pa"),
    "tcc": ("Total cloud cover", "(0 - 1)"),
    "u10": ("10 metre U wind component", "m s**-1"),
    "v10": ("10 metre V wind component", "m s**-1"),
    "t2m": ("2 metre temperature", "K"),
    "tp": ("Total precipitation", "m"),
    "skt": ("Skin temperature", "K"),
}


@dataclass(frozen=True)
class Target:
    """A post-processing target: the ERA5 field and where its forecast lives in the ENS-10 files."""

    name: str
    kind: str  # "pl" or "sfc"
    variable: str
    level: int | None


TARGETS = {
    "t850": Target("t850", "pl", "t", 850),
    "z500": Target("z500", "pl", "z", 500),
    "t2m": Target("t2m", "sfc", "t2m", None),
}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ConfigError(f"dataset.target: {name!r} is not one of {', '.join(TARGETS)}")
    return TARGETS[name]


def file_name(kind: str, date: str) -> str:
    """``output.pl.2018MMDD.nc``, ``output.sfc.2018MMDD.nc`` or ``ERA5.2018MMDD.nc``."""
    return f"ERA5.2018{date}.nc" if kind == "era5" else f"output.{kind}.2018{date}.nc"


# -- generation --------------------------------------------------------------------------------


def _climate(
    name: str, level: float | None, lat: np.ndarray, season: float
) -> tuple[np.ndarray, float, float]:
    """``(climatological mean field, weather anomaly scale, spread at 48 h)`` of a variable.

    ``lat`` is a column of latitudes (degrees), ``season`` the cosine of the day of the year
    (1 in northern winter); the fields vary with latitude only, the weather adds the rest.
    """
    s = np.sin(np.radians(lat))
    c = np.cos(np.radians(lat))
    winter = season * s  # > 0 in the winter hemisphere
    p = float(level or 1000.0)
    if name == "z":
        height = 7400.0 * np.log(1013.25 / p) - 400.0 * s**2 - 150.0 * winter
        return 9.80665 * height, 600.0 * (1 + p / 1000), 120.0
    if name in ("t", "t2m", "skt", "sst"):
        surface = 300.0 - 45.0 * s**2 - 12.0 * winter
        base = np.maximum(surface * (p / 1000.0) ** 0.19, 205.0 + 10 * s**2)
        if name == "sst":
            base = np.maximum(base, 271.5)
        return base, 4.0, 1.2
    if name == "q":
        return 0.016 * (p / 1000.0) ** 3 * c**4 + 1e-6, 0.002 * (p / 1000.0) ** 3, 0.0008 * (p / 1000) ** 3
    if name == "w":
        return 0.02 * np.cos(np.radians(3 * lat)) * (p / 1000), 0.15, 0.08
    if name == "d":
        return 1e-6 * np.cos(np.radians(3 * lat)), 1.5e-5, 8e-6
    if name in ("u", "u10"):
        jet = 30.0 * np.exp(-(((np.abs(lat) - 40) / 12) ** 2)) * min(1.0, (1000 - p + 150) / 800)
        return jet - 4.0 * c**8, 7.0, 2.5
    if name in ("v", "v10"):
        return np.zeros_like(lat), 5.0, 2.0
    if name in ("tcw", "tcwv"):
        return 3.0 + 45.0 * c**4 + (1.0 if name == "tcw" else 0.0), 5.0, 1.5
    if name in ("cp", "tp"):
        return 0.002 * c**6 + 0.0005, 0.002, 0.001
    if name == "msl":
        return 101325.0 - 1200.0 * np.cos(np.radians(4 * lat)), 900.0, 250.0
    if name == "tcc":
        return 0.6 + 0.1 * np.cos(np.radians(4 * lat)), 0.25, 0.12
    raise ValueError(f"no climatology for {name!r}")


_POSITIVE = {"q", "tcw", "tcwv", "cp", "tp"}
_UNIT_INTERVAL = {"tcc"}


def _bound(name: str, field: np.ndarray) -> np.ndarray:
    if name in _POSITIVE:
        return np.maximum(field, 0.0)
    if name in _UNIT_INTERVAL:
        return np.clip(field, 0.0, 1.0)
    return field


def _weather(rng: np.random.Generator, n_lat: int, n_lon: int, steps: Sequence[int]) -> dict[int, np.ndarray]:
    """A unit-variance weather anomaly at each step, evolving smoothly with the lead time."""
    length = max(2, n_lat // 8)
    a, b = _smooth(rng, n_lat, n_lon, length), _smooth(rng, n_lat, n_lon, length)
    return {s: np.cos(np.pi / 2 * s / 96) * a + np.sin(np.pi / 2 * s / 96) * b for s in steps}


def _write_nc(
    path: Path,
    kind: str,
    date: str,
    years: int,
    lat: np.ndarray,
    lon: np.ndarray,
    levels: Sequence[int],
    steps: Sequence[int],
    seed: int,
    complevel: int,
) -> None:
    import netCDF4

    n_lat, n_lon = len(lat), len(lon)
    month, day = int(date[:2]), int(date[2:])
    names = PL_VARIABLES if kind == "pl" else SFC_VARIABLES if kind == "sfc" else {}
    ref = [dt.datetime(FIRST_YEAR + y, month, day) for y in range(years)]
    valid = kind == "era5"
    epoch = dt.datetime(1970, 1, 1)
    hours = [((r + dt.timedelta(hours=48 if valid else 0)) - epoch).total_seconds() / 3600 for r in ref]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts(
            {
                "Conventions": "CF-1.7",
                "title": "MAELSTROM AP4 sample data in the ENS-10 layout"
                + ("" if valid else f" (statistics over {MEMBERS} ensemble members)"),
                "institution": "generated by maelstrom-run",
                "source": __name__,
            }
        )
        nc.createDimension("time", years)
        coords: dict[str, tuple[Any, str, dict[str, Any]]] = {
            "time": (
                hours,
                "f8",
                {"units": "hours since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian"},
            )
        }
        if not valid:
            nc.createDimension("step", len(steps))
            coords["step"] = (
                list(steps),
                "i4",
                {"units": "hours", "long_name": "time since forecast_reference_time"},
            )
        if kind == "pl":
            nc.createDimension("isobaricInhPa", len(levels))
            coords["isobaricInhPa"] = (
                list(levels),
                "f8",
                {"units": "hPa", "positive": "down", "stored_direction": "decreasing"},
            )
        nc.createDimension("latitude", n_lat)
        nc.createDimension("longitude", n_lon)
        coords["latitude"] = (lat, "f8", {"units": "degrees_north", "standard_name": "latitude"})
        coords["longitude"] = (lon, "f8", {"units": "degrees_east", "standard_name": "longitude"})
        for name, (data, dtype, attrs) in coords.items():
            var = nc.createVariable(name, dtype, (name,))
            var.setncatts(attrs)
            var[:] = data

        compression = {"zlib": complevel > 0, "complevel": max(complevel, 1)}
        out = {}
        if valid:
            for tname, t in TARGETS.items():
                units = (PL_VARIABLES if t.kind == "pl" else SFC_VARIABLES)[t.variable][1]
                var = nc.createVariable(
                    tname,
                    "f4",
                    ("time", "latitude", "longitude"),
                    chunksizes=(1, n_lat, n_lon),
                    **compression,
                )
                var.setncatts({"long_name": f"ERA5 analysis of {tname}", "units": units})
                out[tname] = var
        else:
            vertical = ("isobaricInhPa",) if kind == "pl" else ()
            dims = ("time", "step", *vertical, "latitude", "longitude")
            chunks = (1, 1, *(1 for _ in vertical), n_lat, n_lon)
            for name, (long_name, units) in names.items():
                for stat in ("mean", "std"):
                    var = nc.createVariable(f"{name}_{stat}", "f4", dims, chunksizes=chunks, **compression)
                    var.setncatts({"long_name": f"ensemble {stat} of {long_name.lower()}", "units": units})
                    out[f"{name}_{stat}"] = var

        lat_col = lat[:, None]
        season = np.cos(2 * np.pi * (dt.date(2018, month, day).timetuple().tm_yday - 15) / 365.25)
        for y in range(years):
            # keyed by date and year only: the ERA5 truth is the weather its forecast saw
            key = [seed, 4, DATES.index(date), y]
            if valid:
                for tname, t in TARGETS.items():
                    mean, std = _field(t.variable, t.level, lat_col, n_lon, season, key, (48,))
                    noise = np.random.default_rng([*key, 99, sum(map(ord, tname))]).standard_normal(
                        (n_lat, n_lon)
                    )
                    bias = _bias(t.variable, seed, n_lat, n_lon)
                    out[tname][y] = _bound(t.variable, mean[48] + (bias + 1.3 * noise) * std[48])
                continue
            for name in names:
                for li, level in enumerate(levels if kind == "pl" else [None]):
                    mean, std = _field(name, level, lat_col, n_lon, season, key, steps)
                    for si, s in enumerate(steps):
                        index = (y, si, li) if kind == "pl" else (y, si)
                        out[f"{name}_mean"][index] = mean[s]
                        out[f"{name}_std"][index] = std[s]
    os.replace(tmp, path)


def _bias(name: str, seed: int, n_lat: int, n_lon: int) -> np.ndarray:
    """The model's systematic error in units of the spread: fixed in space, the same every year."""
    rng = np.random.default_rng([seed, 5, sum(map(ord, name))])
    return 0.8 * _smooth(rng, n_lat, n_lon, max(2, n_lat // 6))


def _field(
    name: str,
    level: int | None,
    lat_col: np.ndarray,
    n_lon: int,
    season: float,
    key: list[int],
    steps: Sequence[int],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Ensemble mean and spread of one variable (and level) per step; deterministic in ``key``.

    The weather of a variable is shared by its levels (draws keyed without the level), so the
    truth of t850 written to ERA5 is the same weather as the forecast of t at 850 hPa.
    """
    n_lat = lat_col.shape[0]
    base, scale, spread48 = _climate(name, level, lat_col, season)
    rng = np.random.default_rng([*key, sum(map(ord, name))])
    weather = _weather(rng, n_lat, n_lon, STEPS)
    growth = _smooth(rng, n_lat, n_lon, max(2, n_lat // 5))
    means, stds = {}, {}
    for s in steps:
        mean = base + scale * weather[s]
        spread = spread48 * (0.15 + 0.85 * s / 48) * np.exp(0.3 * growth)
        means[s] = _bound(name, mean).astype(np.float32)
        stds[s] = spread.astype(np.float32)
    return means, stds


def generate_ap4(
    directory: str | os.PathLike[str],
    dates: int,
    years: int,
    lat: int,
    lon: int,
    levels: Sequence[int] = LEVELS,
    steps: Sequence[int] = STEPS,
    kinds: Sequence[str] = ("pl", "sfc"),
    seed: int = 0,
    *,
    complevel: int = 4,
    overwrite: bool = True,
) -> list[Path]:
    """Write the files of the first ``dates`` ENS-10 dates (``kinds`` plus ERA5); returns their paths.

    ``lat`` x ``lon`` points span the globe (361 x 720 is the 0.5 degree grid of ENS-10).
    With ``overwrite=False`` existing files are kept (the content only depends on the arguments).
    """
    if not 1 <= dates <= len(DATES):
        raise ValueError(f"dates: {dates} is not in 1..{len(DATES)}")
    if years < 1 or lat < 2 or lon < 2:
        raise ValueError(f"years, lat, lon: need at least 1, 2, 2 (got {years}, {lat}, {lon})")
    bad = sorted(set(levels) - set(LEVELS)) or sorted(set(steps) - set(STEPS))
    if bad:
        raise ValueError(f"levels/steps: {bad} not in ENS-10 (levels {LEVELS}, steps {STEPS})")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lats = np.linspace(90.0, -90.0, lat)
    lons = np.arange(lon) * (360.0 / lon)
    paths = []
    for date in DATES[:dates]:
        for kind in (*kinds, "era5"):
            path = directory / file_name(kind, date)
            if overwrite or not path.exists():
                _write_nc(path, kind, date, years, lats, lons, sorted(levels), sorted(steps), seed, complevel)
            paths.append(path)
    return paths


def sample_directory(cache_dir: str | os.PathLike[str], sizes: Mapping[str, Any], seed: int = 0) -> Path:
    levels = "-".join(str(v) for v in sizes.get("levels", LEVELS))
    steps = "-".join(str(v) for v in sizes.get("steps", STEPS))
    name = f"{sizes['dates']}d-{sizes['years']}y-{sizes['lat']}x{sizes['lon']}-l{levels}-s{steps}-seed{seed}-v{VERSION}"
    return Path(cache_dir) / "samples" / "ap4" / name


def ensure_ap4(
    cache_dir: str | os.PathLike[str],
    sizes: Mapping[str, Any],
    seed: int = 0,
    kinds: Sequence[str] = ("pl", "sfc"),
) -> Path:
    """The directory of sample files of ``sizes`` (a tier of ``conf/dataset/ap4.yaml``), generated if missing."""
    directory = sample_directory(cache_dir, sizes, seed)
    generate_ap4(
        directory,
        int(sizes["dates"]),
        int(sizes["years"]),
        int(sizes["lat"]),
        int(sizes["lon"]),
        [int(v) for v in sizes.get("levels", LEVELS)],
        [int(v) for v in sizes.get("steps", STEPS)],
        kinds,
        seed,
        overwrite=False,
    )
    return directory
