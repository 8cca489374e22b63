"""Sample data in the layout of the MAELSTROM datasets, generated on the spot.

AP1 mimics climetlab-maelstrom-yr (MET Norway): one NetCDF4 file per forecast run, named
``YYYYMMDDTHHZ.nc``, in the layout of the real files (see :func:`generate_ap1` for each fact and
where it comes from). The analysis is the raw forecast ``air_temperature_2m`` corrected for a
persistent model bias (which the static ``bias_recent`` sees), the height difference between the
model's and the real terrain and a slightly weak diurnal cycle, plus error no model can predict.

AP2 mimics climetlab-maelstrom-social-media: a CSV of tweets, ``text`` and ``raining`` (0/1),
from a small grammar of rain and dry phrases, negations ("no rain today"), places and noise.

Generation is deterministic in the seed. ``ensure_*`` generate into a cache only what is
missing, each file under a temporary name that is then renamed atomically, so concurrent runs
never read half a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.rundir import write_atomic

#: Version of the generators; part of the cache key, bump it when the generated data change.
VERSION = 1

#: Version of the AP1 generator (its own: the layout follows the real files since version 2).
AP1_VERSION = 2
#: Predictors of the real files in their order; files hold the first ``predictors`` of them.
AP1_PREDICTORS = (
    "air_temperature_0.1_2m",
    "air_temperature_0.9_2m",
    "air_temperature_2m",
    "bias_yesterday",
    "cloud_area_fraction",
    "precipitation_amount",
    "x_wind_10m",
    "y_wind_10m",
)
AP1_STATIC_PREDICTORS = (
    "altitude",
    "analysis_std",
    "bias_recent",
    "land_area_fraction",
    "model_altitude",
    "model_laf",
)
#: Units of each predictor in ``predictor_units`` / ``static_predictor_units``.
AP1_UNITS = {
    "air_temperature_0.1_2m": "celsius",
    "air_temperature_0.9_2m": "celsius",
    "air_temperature_2m": "celsius",
    "bias_yesterday": "celsius",
    "cloud_area_fraction": "1",
    "precipitation_amount": "mm",
    "x_wind_10m": "m/s",
    "y_wind_10m": "m/s",
    "altitude": "m",
    "analysis_std": "celsius",
    "bias_recent": "celsius",
    "land_area_fraction": "1",
    "model_altitude": "m",
    "model_laf": "1",
}
#: First forecast run of the real dataset; runs start at 03, 09, 15 or 21 UTC by the day.
AP1_START = dt.date(2020, 3, 1)
#: Days without a file in the real dataset (``Yr.get_all_dates`` of climetlab-maelstrom-yr 0.6.3).
AP1_MISSING_DATES = frozenset(
    dt.date.fromisoformat(d)
    for d in ("2020-05-22", "2020-05-26", "2020-05-30", "2020-08-05", "2021-08-05", "2022-01-15")
)

_LAPSE_RATE = -0.0065  # K/m
#: The MET Nordic grid (1 km); sample grids are centred on Oslo.
_PROJECTION = {
    "grid_mapping_name": "lambert_conformal_conic",
    "standard_parallel": 63.3,
    "longitude_of_central_meridian": 15.0,
    "latitude_of_projection_origin": 63.3,
    "earth_radius": 6371000.0,
}
_CENTRE_XY = (-237e3, -369e3)
_SPACING = 1000.0


def _smooth(rng: np.random.Generator, ny: int, nx: int, length: int) -> np.ndarray:
    """Random field of about unit variance with features of ``length`` grid points."""
    coarse = rng.standard_normal((ny // length + 2, nx // length + 2))
    fy, fx = np.arange(ny) / length, np.arange(nx) / length
    iy, ix = fy.astype(int), fx.astype(int)
    wy, wx = (fy - iy)[:, None], (fx - ix)[None, :]
    rows = coarse[iy] * (1 - wy) + coarse[iy + 1] * wy
    # bilinear interpolation of white noise has a standard deviation of about 2/3
    return 1.5 * (rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx)


def _box(field: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` x ``width`` points: how a coarser model sees the field."""
    padded = np.pad(field, width // 2, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, (width, width)).mean(axis=(-2, -1))


def _latlon(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the (spherical, one standard parallel) Lambert conformal projection."""
    phi = np.radians(_PROJECTION["standard_parallel"])
    n = np.sin(phi)
    radius_f = _PROJECTION["earth_radius"] * np.cos(phi) * np.tan(np.pi / 4 + phi / 2) ** n / n
    rho0 = _PROJECTION["earth_radius"] / np.tan(phi)
    lat = 2 * np.arctan((radius_f / np.hypot(x, rho0 - y)) ** (1 / n)) - np.pi / 2
    lon = np.radians(_PROJECTION["longitude_of_central_meridian"]) + np.arctan2(x, rho0 - y) / n
    return np.degrees(lat), np.degrees(lon)


def _terrain(rng: np.random.Generator, ny: int, nx: int) -> dict[str, np.ndarray]:
    laf = 1 / (1 + np.exp(-4 * (_smooth(rng, ny, nx, 24) + 0.5)))
    hills = 300 + 400 * _smooth(rng, ny, nx, 16) + 150 * _smooth(rng, ny, nx, 3)
    altitude = laf * np.maximum(hills, 0.0)
    return {
        "altitude": altitude,
        "land_area_fraction": laf,
        "model_altitude": _box(altitude, 5),
        "model_laf": _box(laf, 5),
    }


def _forecast(
    rng: np.random.Generator,
    terrain: dict[str, np.ndarray],
    lat: np.ndarray,
    lon: np.ndarray,
    reference: dt.datetime,
    leadtimes: np.ndarray,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``({predictor: field}, target_mean, target_std)`` per leadtime (hours) of a run."""
    ny, nx = lat.shape
    # pairs of fields blended over the leadtimes: the weather evolves smoothly
    lengths = {"anomaly": 150, "error": 8, "cloud": 20, "u": 40, "v": 40}
    pairs = {name: (_smooth(rng, ny, nx, n), _smooth(rng, ny, nx, n)) for name, n in lengths.items()}
    bias = _smooth(rng, ny, nx, 12)  # the model's persistent error (K)
    altitude, laf = terrain["altitude"], terrain["land_area_fraction"]
    target_std = 0.3 + altitude / 2000 + 0.3 * (1 - laf)
    for hours in leadtimes:
        angle = np.pi / 2 * min(hours / 48, 1.0)
        f = {name: np.cos(angle) * a + np.sin(angle) * b for name, (a, b) in pairs.items()}
        valid = reference + dt.timedelta(hours=float(hours))
        day = valid.timetuple().tm_yday
        solar_hour = valid.hour + lon / 15
        cloud = 1 / (1 + np.exp(-2 * f["cloud"]))
        diurnal = 4 * (1 - 0.6 * cloud) * laf * np.sin(2 * np.pi * (solar_hour - 9) / 24)
        sea_level = 6 - 10 * np.cos(2 * np.pi * (day - 15) / 365) - 0.6 * (lat - 60) + 3 * f["anomaly"]

        truth = sea_level + diurnal + _LAPSE_RATE * altitude + 0.2 * rng.standard_normal((ny, nx))
        raw = (
            sea_level
            + 0.85 * diurnal
            + _LAPSE_RATE * terrain["model_altitude"]
            + bias
            + 0.3 * np.sqrt(1 + hours / 24) * f["error"]
        )
        spread = 0.5 + hours / 48 + 0.5 * cloud
        u, v = 5 * f["u"], 5 * f["v"]
        rain = np.where(cloud > 0.8, 20 * (cloud - 0.8) * rng.gamma(2.0, 0.5, (ny, nx)), 0.0)
        fields = {
            "air_temperature_0.1_2m": raw - 1.28 * spread,
            "air_temperature_0.9_2m": raw + 1.28 * spread,
            "air_temperature_2m": raw,
            "bias_yesterday": bias + 0.5 * rng.standard_normal((ny, nx)),
            "cloud_area_fraction": cloud,
            "precipitation_amount": rain,
            "x_wind_10m": u,
            "y_wind_10m": v,
        }
        yield fields, truth.astype(np.float32), target_std


def _write_run(
    path: Path,
    reference: dt.datetime,
    leadtimes: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    terrain: dict[str, np.ndarray],
    predictors: int,
    static_predictors: int,
    rng: np.random.Generator,
) -> None:
    import netCDF4

    lat, lon = _latlon(*np.meshgrid(x, y))
    names = AP1_PREDICTORS[:predictors]
    static_names = AP1_STATIC_PREDICTORS[:static_predictors]
    runs = list(_forecast(rng, terrain, lat, lon, reference, leadtimes))
    # per run, not per leadtime in the real files: the model's recent bias and the analysis' uncertainty
    static_fields = {
        **terrain,
        "bias_recent": runs[0][0]["bias_yesterday"] + 0.3 * rng.standard_normal(lat.shape),
        "analysis_std": np.mean([std for _, _, std in runs], axis=0),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts({"Conventions": "CF-1.6", "title": "MAELSTROM AP1 sample data", "source": __name__})
        sizes = {"leadtime": len(leadtimes), "y": len(y), "x": len(x)}
        sizes.update(predictor=predictors, static_predictor=static_predictors)
        for name, size in sizes.items():
            nc.createDimension(name, size)

        def add(name: str, dims: tuple[str, ...], data: object = None, dtype: str = "f4", **attrs: object):
            var = nc.createVariable(name, dtype, dims, contiguous=bool(dims), fill_value=False)
            var.setncatts(attrs)
            if data is not None:
                var[...] = data
            return var

        def strings(name: str, dim: str, values: Sequence[str]) -> None:
            nc.createVariable(name, str, (dim,))[:] = np.array(list(values), dtype=object)

        grid = {"grid_mapping": "projection_lcc", "coordinates": "latitude longitude"}
        epoch = {
            "units": "seconds since 1970-01-01 00:00:00 +00:00",
            "standard_name": "forecast_reference_time",
        }
        add("time", (), reference.timestamp(), "f8", **epoch)
        add(
            "leadtime",
            ("leadtime",),
            leadtimes * 3600.0,
            "f8",
            units="seconds",
            long_name="forecast lead time",
        )
        add("y", ("y",), y, units="m", standard_name="projection_y_coordinate")
        add("x", ("x",), x, units="m", standard_name="projection_x_coordinate")
        add("latitude", ("y", "x"), lat, units="degrees_north", standard_name="latitude")
        add("longitude", ("y", "x"), lon, units="degrees_east", standard_name="longitude")
        add("projection_lcc", (), 0, "i4", **_PROJECTION)
        add("altitude", ("y", "x"), terrain["altitude"], units="m", standard_name="surface_altitude", **grid)
        add("land_area_fraction", ("y", "x"), terrain["land_area_fraction"], units="1", **grid)
        strings("predictor", "predictor", names)
        strings("predictor_units", "predictor", [AP1_UNITS[n] for n in names])
        strings("static_predictor", "static_predictor", static_names)
        strings("static_predictor_units", "static_predictor", [AP1_UNITS[n] for n in static_names])
        static = np.stack([static_fields[name] for name in static_names], axis=-1)
        add("static_predictors", ("y", "x", "static_predictor"), static, **grid)

        dims = ("leadtime", "y", "x")
        pred = add("predictors", (*dims, "predictor"), **grid)
        mean = add("target_mean", dims, long_name="analysed air_temperature_2m", units="celsius", **grid)
        std = add("target_std", dims, long_name="uncertainty of the analysis", units="celsius", **grid)
        for i, (fields, t, sd) in enumerate(runs):
            pred[i] = np.stack([fields[n] for n in names], axis=-1).astype(np.float32)
            mean[i] = t
            std[i] = sd
    os.replace(tmp, path)


def ap1_runs(runs: int) -> list[dt.datetime]:
    """Reference times of the first ``runs`` forecast runs of the real dataset: one a day from
    :data:`AP1_START` (days of :data:`AP1_MISSING_DATES` skipped) at 03/09/15/21 UTC by the day."""
    out, date = [], AP1_START
    while len(out) < runs:
        if date not in AP1_MISSING_DATES:
            hour = (21, 3, 9, 15)[date.day % 4]  # Yr.get_hour_from_date
            out.append(dt.datetime(date.year, date.month, date.day, hour, tzinfo=dt.UTC))
        date += dt.timedelta(days=1)
    return out


def generate_ap1(
    directory: str | os.PathLike[str],
    runs: int,
    leadtimes: int,
    y: int,
    x: int,
    predictors: int,
    static_predictors: int,
    seed: int = 0,
    *,
    overwrite: bool = True,
) -> list[Path]:
    """Write one file per forecast run (see :func:`ap1_runs`); returns their paths.

    The layout is that of the real files. Where each fact comes from: (issue) read from real
    files of the 5GB tier, as reported in issue 12; (plugin) the code of climetlab-maelstrom-yr
    0.6.3, ``climetlab_maelstrom_yr/yr.py``; (assumed) neither says it, chosen here.

    - file names ``YYYYMMDDTHHZ.nc``: plugin (``pattern="{parameter}/{size}/{datestr}.nc"``,
      ``datestr`` is ``"%sT%02dZ" % (date, hour)``); run hours 03/09/15/21 by the day of the
      month: plugin (``get_hour_from_date``); first run 2020-03-01 and the missing days: plugin
      (``get_all_dates``).
    - dimensions ``leadtime, y, x, predictor, static_predictor`` and no ``time`` dimension:
      issue; ``time`` a scalar (seconds since 1970): issue, and plugin (``preprocess`` copies
      ``time`` with its dims; ``Merger`` joins the files along a new ``time``).
    - ``predictors(leadtime, y, x, predictor)`` float32 with the 8 predictors of
      :data:`AP1_PREDICTORS` in that order: issue; the same names: plugin (``get_normalization``).
    - ``static_predictors(y, x, static_predictor)`` with :data:`AP1_STATIC_PREDICTORS`: issue and
      plugin (``preprocess`` appends ``static_predictor`` to ``predictor``); float32: assumed.
    - ``target_mean``, ``target_std`` (leadtime, y, x) in celsius: issue; the target is
      ``target_mean`` (minus ``air_temperature_2m`` with ``predict_diff``): plugin.
    - ``leadtime`` float64 in seconds: issue; how far apart the lead times are: assumed (up to
      48 h).
    - ``projection_lcc``; ``x``, ``y`` float32 metres; ``altitude``, ``land_area_fraction``,
      ``latitude``, ``longitude`` on (y, x): issue. The projection's parameters (MET Nordic):
      assumed.
    - string variables ``predictor``, ``predictor_units``, ``static_predictor``,
      ``static_predictor_units``: issue (the plugin opens them with ``concat_characters=False``);
      the unit strings themselves (:data:`AP1_UNITS`): assumed.

    With ``overwrite=False`` existing files are kept (the content only depends on the arguments).
    """
    if not 1 <= predictors <= len(AP1_PREDICTORS):
        raise ValueError(f"predictors: {predictors} is not in 1..{len(AP1_PREDICTORS)}")
    if not 1 <= static_predictors <= len(AP1_STATIC_PREDICTORS):
        raise ValueError(f"static_predictors: {static_predictors} is not in 1..{len(AP1_STATIC_PREDICTORS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    terrain = _terrain(np.random.default_rng([seed, 0]), y, x)
    ys = (_CENTRE_XY[1] + _SPACING * (np.arange(y) - y // 2)).astype(np.float32)
    xs = (_CENTRE_XY[0] + _SPACING * (np.arange(x) - x // 2)).astype(np.float32)
    hours = np.arange(leadtimes) * max(1, 48 // leadtimes)
    paths = []
    for run, reference in enumerate(ap1_runs(runs)):
        path = directory / f"{reference:%Y%m%dT%HZ}.nc"
        if overwrite or not path.exists():
            rng = np.random.default_rng([seed, 1, run])
            _write_run(path, reference, hours, xs, ys, terrain, predictors, static_predictors, rng)
        paths.append(path)
    return paths


def ensure_ap1(cache_dir: str | os.PathLike[str], sizes: Mapping[str, int], seed: int = 0) -> list[Path]:
    """The sample files of ``sizes`` (a tier of ``conf/dataset/ap1.yaml``), generated if missing."""
    keys = ("runs", "leadtimes", "y", "x", "predictors", "static_predictors")
    runs, leadtimes, y, x, predictors, static = (int(sizes[k]) for k in keys)
    name = f"{runs}runs-{leadtimes}lt-{y}x{x}-{predictors}p{static}s-seed{seed}-v{AP1_VERSION}"
    directory = Path(cache_dir) / "samples" / "ap1" / name
    return generate_ap1(directory, runs, leadtimes, y, x, predictors, static, seed, overwrite=False)


#: Variables of :func:`generate_era5_like`: the predictors, the target and the static fields.
ERA5_PREDICTORS = ("t2m", "msl", "u10", "v10", "tcc")
ERA5_STATIC = ("z", "lsm")


def generate_era5_like(
    path: str | os.PathLike[str],
    times: int,
    lat: int,
    lon: int,
    *,
    packed: bool = True,
    zlib: bool = False,
    fill_share: float = 0.0,
    seed: int = 0,
) -> Path:
    """One file in the layout of ERA5 from the Copernicus CDS, for the loader's
    ``conf/loader/gridded_era5.yaml``: :data:`ERA5_PREDICTORS` and ``t2m_next`` (six hours
    later) on ``(time, latitude, longitude)``, packed int16 with ``scale_factor``/``add_offset``
    (float64) and ``_FillValue`` -32767 (``packed=False``: float32, a ``_FillValue`` only with
    ``fill_share``), optionally zlib-compressed in chunks of one time step; ``fill_share`` of the
    points missing; :data:`ERA5_STATIC` on (latitude, longitude). Written one step at a time."""
    import netCDF4

    path = Path(path)
    rng = np.random.default_rng(seed)
    lats = np.linspace(72, 72 - 0.25 * (lat - 1), lat, dtype=np.float32)
    lons = np.linspace(-10, -10 + 0.25 * (lon - 1), lon, dtype=np.float32)
    fields = {  # name: (first field, change per step, units)
        "t2m": (280 - 0.5 * (lats[:, None] - 50) + 3 * _smooth(rng, lat, lon, 16), 1.0, "K"),
        "msl": (101300 + 800 * _smooth(rng, lat, lon, 40), 150.0, "Pa"),
        "u10": (3 * _smooth(rng, lat, lon, 20), 0.5, "m s**-1"),
        "v10": (3 * _smooth(rng, lat, lon, 20), 0.5, "m s**-1"),
        "tcc": (0.6 + 0.2 * _smooth(rng, lat, lon, 12), 0.05, "(0 - 1)"),
    }
    land = (_smooth(rng, lat, lon, 24) > 0).astype(np.float64)
    static = {
        "z": (9.81 * np.maximum(0, 400 * _smooth(rng, lat, lon, 16)) * land, "m**2 s**-2"),
        "lsm": (land, "(0 - 1)"),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts({"Conventions": "CF-1.6", "title": "ERA5-like sample data", "source": __name__})
        for name, size in (("time", times), ("latitude", lat), ("longitude", lon)):
            nc.createDimension(name, size)
        for name, values, units in (("latitude", lats, "degrees_north"), ("longitude", lons, "degrees_east")):
            nc.createVariable(name, "f4", (name,))[:] = values
            nc[name].units = units
        time = nc.createVariable("time", "i4", ("time",))
        time.units, time.calendar = "hours since 1900-01-01 00:00:00.0", "gregorian"
        time[:] = 1_051_896 + 6 * np.arange(times)
        grid = ("time", "latitude", "longitude")

        def add(name: str, dims: tuple[str, ...], low: float, high: float, units: str) -> Any:
            storage = {
                "zlib": zlib,
                "shuffle": zlib,
                "chunksizes": (1, lat, lon) if zlib and len(dims) == 3 else None,
            }
            if packed:
                var = nc.createVariable(name, "i2", dims, fill_value=np.int16(-32767), **storage)
                # as the CDS packs: the range over 16 bits, float64 attributes
                var.scale_factor = np.float64((high - low) / (2**16 - 3) or 1.0)
                var.add_offset = np.float64(low + (high - low) / 2)
            else:
                fill = np.float32(-32767) if fill_share else False
                var = nc.createVariable(name, "f4", dims, fill_value=fill, **storage)
            var.units = units
            var.set_auto_maskandscale(False)
            return var

        def stored(var: Any, values: np.ndarray) -> np.ndarray:
            if not packed:
                return np.where(np.isnan(values), -32767, values).astype(np.float32)
            packed_values = np.round((values - var.add_offset) / var.scale_factor)
            return np.where(np.isnan(values), -32767, np.clip(packed_values, -32766, 32767)).astype(np.int16)

        for name, (values, units) in static.items():
            var = add(name, ("latitude", "longitude"), values.min(), values.max(), units)
            var[:] = stored(var, values)
        for name, (first, change, units) in fields.items():
            reach = 4 * change * np.sqrt(times + 1)  # a random walk stays within this, nearly always
            var = add(name, grid, first.min() - reach, first.max() + reach, units)
            after = (
                add("t2m_next", grid, first.min() - reach, first.max() + reach, units)
                if name == "t2m"
                else None
            )
            step_rng = np.random.default_rng([seed, len(name), sum(map(ord, name))])
            current = first
            for t in range(times):
                following = current + change * step_rng.standard_normal((lat, lon))
                shown = current.copy()
                if fill_share:
                    shown[step_rng.random((lat, lon)) < fill_share] = np.nan
                var[t] = stored(var, shown)
                if after is not None:
                    after[t] = stored(after, following)
                current = following
    os.replace(tmp, path)
    return path


# -- AP2 ---------------------------------------------------------------------------------------

#: Slots of the templates below: ``|``-separated options.
_WORDS = {
    "intensity": "heavy|light|steady|torrential|freezing|constant|proper",
    "raining": "raining|pouring|drizzling|bucketing down|chucking it down|spitting|lashing down",
    "soaked": "soaked|drenched|wet through|soaked to the bone|dripping wet",
    "downpour": "downpour|cloudburst|rainstorm|shower|thunderstorm",
    "showers": "showers|drizzle|rain|sleet",
    "when": "today|this morning|this afternoon|tonight|right now|again|all day||",
    "period": "day|morning|afternoon|week|weekend",
    "dest": "work|school|the station|the shops|the gym|uni",
    "dry": "sunny|clear|dry|warm|bright|cloudy|overcast|foggy|hot|grey|mild",
    "nice": "lovely|beautiful|gorgeous|really|so|quite",
    "stopped": "has stopped|finally stopped|cleared up|is over|moved on",
    "later": "later|tomorrow|this weekend|tonight|friday",
    "windy": "windy|breezy|blustery|still",
    "cold": "cold|freezing|chilly|icy|humid",
    "place": "Oslo|Bergen|Trondheim|London|Manchester|Glasgow|Dublin|Cardiff|Leeds|Hamburg|Amsterdam|Bonn|"
    "Seattle|Vancouver|Reading|Galway",
    "opener": "ugh|wow|omg|honestly|well|typical|great|so|lol|@metoffice|@yrno",
    "tail": "#weather|lol|:(|:)|as usual|send help|#monday|again|what a day|!!",
}
# Pairs of templates with the same words in another order keep a bag of words from solving it.
_RAINING = (
    "{intensity} rain {when}",
    "it's {raining} {when}",
    "{raining} {when} and i forgot my umbrella",
    "got {soaked} walking to {dest}",
    "caught in a {downpour} on the way to {dest}",
    "{intensity} {showers} all {period}",
    "it was {dry} this morning but now it's {raining}",
    "thought it would stay {dry} but it's {raining}",
    "no sun {when}, just {showers}",
    "{raining} again, so much for the {dry} forecast",
)
_DRY = (
    "{nice} {dry} {when}",
    "{windy} and {cold} {when}",
    "no rain {when}",
    "the rain {stopped}",
    "hope it doesn't rain {later}",
    "it was {raining} this morning but now it's {dry}",
    "thought it would be {raining} but it's {dry}",
    "no {showers} {when}, just sun",
    "{dry} again, so much for the rain forecast",
    "snow {when}, proper winter",
)


def _tweet(rng: np.random.Generator, raining: bool) -> str:
    template = str(rng.choice(_RAINING if raining else _DRY))
    words = {key: str(rng.choice(options.split("|"))) for key, options in _WORDS.items()}
    parts = [words["opener"]] if rng.random() < 0.3 else []
    parts.append(template.format(**words))
    if rng.random() < 0.6:
        parts.append(f"in {words['place']}")
    if rng.random() < 0.4:
        parts.append(words["tail"])
    return " ".join(" ".join(parts).split()).replace(" ,", ",")


def generate_ap2(
    path: str | os.PathLike[str], samples: int, seed: int = 0, label_noise: float = 0.05
) -> Path:
    """Write ``samples`` tweets (``text``, ``raining``) as CSV; a fraction ``label_noise`` is mislabelled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["text", "raining"])
    for _ in range(samples):
        raining = bool(rng.random() < 0.5)
        text = _tweet(rng, raining)
        writer.writerow([text, int(raining != (rng.random() < label_noise))])
    write_atomic(path, buffer.getvalue())
    return path


def ensure_ap2(cache_dir: str | os.PathLike[str], samples: int, seed: int = 0) -> Path:
    """The sample CSV of ``samples`` tweets, generated if missing."""
    path = Path(cache_dir) / "samples" / "ap2" / f"tweets-{samples}-seed{seed}-v{VERSION}.csv"
    return path if path.exists() else generate_ap2(path, samples, seed)


# -- AP3, AP5, AP6 -----------------------------------------------------------------------------


def _write_netcdf(
    path: Path,
    dims: Mapping[str, int],
    variables: Mapping[str, tuple[tuple[str, ...], np.ndarray, Mapping[str, object]]],
    attrs: Mapping[str, object],
) -> Path:
    """One NetCDF4 file (uncompressed, contiguous), written under a temporary name then renamed."""
    import netCDF4

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            nc.setncatts({"Conventions": "CF-1.8", "source": __name__, **attrs})
            for name, size in dims.items():
                nc.createDimension(name, size)
            for name, (var_dims, data, var_attrs) in variables.items():
                data = np.asarray(data)
                var = nc.createVariable(
                    name, data.dtype, var_dims, contiguous=bool(var_dims), fill_value=False
                )
                var.setncatts(dict(var_attrs))
                var[...] = data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _f4(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


#: Column variables of the radiation inputs (ecRad names) on full levels.
AP3_LEVEL_VARIABLES = (
    "q",
    "o3_mmr",
    "co2_vmr",
    "n2o_vmr",
    "ch4_vmr",
    "o2_vmr",
    "cfc11_vmr",
    "cfc12_vmr",
    "hcfc22_vmr",
    "ccl4_vmr",
    "cloud_fraction",
    "q_liquid",
    "q_ice",
    "re_liquid",
    "re_ice",
)
_AP3_GASES = {
    "co2_vmr": 4.1e-4,
    "n2o_vmr": 3.3e-7,
    "ch4_vmr": 1.9e-6,
    "o2_vmr": 0.2095,
    "cfc11_vmr": 2.3e-10,
    "cfc12_vmr": 5.0e-10,
    "hcfc22_vmr": 2.5e-10,
    "ccl4_vmr": 8.0e-11,
}
_SIGMA = 5.670374e-8


def _ap3_names(files: int) -> list[tuple[int, int]]:
    """``(timestep, patch)`` of the first ``files`` files: even patches, then the next timestep."""
    return [(125 * (i // 8), 2 * (i % 8)) for i in range(files)]


def generate_ap3(
    directory: str | os.PathLike[str],
    files: int,
    columns: int,
    levels: int = 137,
    seed: int = 0,
    *,
    outputs: str = "triplecloud_outputs",
    overwrite: bool = True,
) -> list[Path]:
    """Radiation (climetlab-maelstrom-radiation) pairs ``rad4NN_inputs_<date>00_<timestep>c<patch>.nc``
    and ``<outputs>_...``: ecRad column inputs and the fluxes of a simple two-stream scheme.

    Inputs: ``q`` .. ``re_ice`` (column, level), ``aerosol_mmr`` (column, aerosol_type, level),
    ``temperature_hl``/``pressure_hl`` (column, half_level), ``overlap_param`` (column, mid_level),
    ``skin_temperature``, ``cos_solar_zenith_angle`` (column), ``sw_albedo``/``sw_albedo_direct``
    (column, sw_albedo_band), ``lw_emissivity`` (column, lw_emissivity_band), ``solar_irradiance``
    (scalar), ``lat``/``lon`` (column). Outputs: ``flux_{dn,up}_{sw,lw}`` (column, half_level).
    """
    directory = Path(directory)
    paths = []
    for i, (timestep, patch) in enumerate(_ap3_names(files)):
        tag = f"2020010100_{timestep}c{patch}.nc"
        inputs, outs = directory / f"rad4NN_inputs_{tag}", directory / f"{outputs}_{tag}"
        paths += [inputs, outs]
        if not overwrite and inputs.exists() and outs.exists():
            continue
        rng = np.random.default_rng([seed, 3, i])
        n, nl = columns, levels
        lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
        lon = rng.uniform(0, 360, n)
        hour = timestep / 3600 * 24 % 24  # timesteps of the model in the real data; here just a phase
        mu = np.sin(np.radians(lat)) * 0.4 + np.cos(np.radians(lat)) * np.cos(
            np.radians(15 * hour + lon - 180)
        )
        mu = np.clip(mu, 0, 1)
        ps = 101325 + 1500 * rng.standard_normal(n)
        eta = np.linspace(0, 1, nl + 1)
        # thin layers aloft as in the IFS's 137 levels (the top layer ~2 Pa thick, not a fraction of 1 Pa)
        p_hl = 1.0 + (ps[:, None] - 1.0) * eta[None, :] ** 2.2
        t_surface = 288 - 40 * (np.abs(lat) / 90) ** 2 + 3 * rng.standard_normal(n)
        t_hl = np.maximum(t_surface[:, None] * (p_hl / ps[:, None]) ** 0.19, 200.0)
        p_full = 0.5 * (p_hl[:, 1:] + p_hl[:, :-1])
        sigma = p_full / ps[:, None]
        cloudy = (sigma > 0.3) & (sigma < 0.95)
        cloud = np.clip(rng.uniform(-0.6, 1, (n, 1)) + 0.3 * rng.standard_normal((n, nl)), 0, 1) * cloudy
        warm = np.interp(p_full, [3e4, 7e4], [0.0, 1.0])
        level = {
            "q": 0.015 * sigma**3 * rng.uniform(0.3, 1, (n, 1)),
            "o3_mmr": 1.2e-5 * np.exp(-((np.log(p_full) - np.log(1000)) ** 2) / 2),
            **{k: np.full((n, nl), v) for k, v in _AP3_GASES.items()},
            "cloud_fraction": cloud,
            "q_liquid": 2e-4 * cloud * warm,
            "q_ice": 5e-5 * cloud * (1 - warm),
            "re_liquid": np.full((n, nl), 1e-5),
            "re_ice": np.full((n, nl), 6e-5),
        }
        albedo = np.clip(
            0.15 + 0.6 * (np.abs(lat[:, None]) > 65) + 0.05 * rng.standard_normal((n, 1)), 0.05, 0.9
        )
        dp = np.diff(p_hl, axis=1)
        # optical depth of each layer: clouds by their water path, plus a little from the gases
        tau = 1.5e3 * (level["q_liquid"] + 0.5 * level["q_ice"]) * dp / 9.81 + 2e-6 * dp
        cum = np.concatenate([np.zeros((n, 1)), np.cumsum(tau, axis=1)], axis=1)
        s0 = 1361.0
        dn_sw = s0 * mu[:, None] * np.exp(-cum / np.maximum(mu[:, None], 0.05) * 0.5)
        up_sw = albedo * dn_sw[:, -1:] * np.exp(-(cum[:, -1:] - cum) * 0.5)
        emit = _SIGMA * t_hl**4
        dn_lw = emit * (1 - np.exp(-(cum + 2e-6 * p_hl)))
        up_lw = emit[:, -1:] * np.exp(-(cum[:, -1:] - cum) * 0.3) + 0.3 * emit * (1 - np.exp(-tau.mean()))
        dims = {
            "column": n,
            "level": nl,
            "half_level": nl + 1,
            "mid_level": nl - 1,
            "sw_albedo_band": 6,
            "lw_emissivity_band": 2,
            "aerosol_type": 12,
        }
        col, lev = ("column",), ("column", "level")
        variables: dict[str, tuple[tuple[str, ...], np.ndarray, Mapping[str, object]]] = {
            "lat": (col, _f4(lat), {"units": "degrees_north"}),
            "lon": (col, _f4(lon), {"units": "degrees_east"}),
            "solar_irradiance": ((), np.float32(s0), {"units": "W m-2"}),
            "skin_temperature": (col, _f4(t_surface + 2), {"units": "K"}),
            "cos_solar_zenith_angle": (col, _f4(mu), {"units": "1"}),
            "sw_albedo": (("column", "sw_albedo_band"), _f4(np.repeat(albedo, 6, axis=1)), {"units": "1"}),
            "sw_albedo_direct": (
                ("column", "sw_albedo_band"),
                _f4(np.repeat(albedo, 6, axis=1)),
                {"units": "1"},
            ),
            "lw_emissivity": (("column", "lw_emissivity_band"), _f4(np.full((n, 2), 0.98)), {"units": "1"}),
            **{k: (lev, _f4(level[k]), {}) for k in AP3_LEVEL_VARIABLES},
            "aerosol_mmr": (
                ("column", "aerosol_type", "level"),
                _f4(1e-9 * sigma[:, None, :] * rng.uniform(0.5, 2, (n, 12, 1))),
                {"units": "kg kg-1"},
            ),
            "temperature_hl": (("column", "half_level"), _f4(t_hl), {"units": "K"}),
            "pressure_hl": (("column", "half_level"), _f4(p_hl), {"units": "Pa"}),
            "overlap_param": (("column", "mid_level"), _f4(np.full((n, nl - 1), 0.7)), {"units": "1"}),
        }
        attrs = {"title": "MAELSTROM AP3 sample data (radiation inputs)"}
        _write_netcdf(inputs, dims, variables, attrs)
        half = ("column", "half_level")
        fluxes = {
            "flux_dn_sw": (half, _f4(dn_sw), {"units": "W m-2"}),
            "flux_up_sw": (half, _f4(up_sw), {"units": "W m-2"}),
            "flux_dn_lw": (half, _f4(dn_lw), {"units": "W m-2"}),
            "flux_up_lw": (half, _f4(up_lw), {"units": "W m-2"}),
            "pressure_hl": (half, _f4(p_hl), {"units": "Pa"}),
        }
        out_dims = {"column": n, "half_level": nl + 1}
        _write_netcdf(outs, out_dims, fluxes, {"title": f"MAELSTROM AP3 sample data ({outputs})"})
    return paths


def ensure_ap3(cache_dir: str | os.PathLike[str], sizes: Mapping[str, int], seed: int = 0) -> list[Path]:
    files, columns, levels = int(sizes["files"]), int(sizes["columns"]), int(sizes.get("levels", 137))
    name = f"{files}files-{columns}col-{levels}lev-l137grid-seed{seed}-v{VERSION}"
    return generate_ap3(
        Path(cache_dir) / "samples" / "ap3" / name, files, columns, levels, seed, overwrite=False
    )


#: First month of the AP5 tier-1 data; only April to September are in it.
AP5_START = dt.date(2016, 4, 1)
#: First month of the AP5 tier-2 data (ERA5 to COSMO-REA6, every month 1995-2018).
AP5_TIER2_START = dt.date(1995, 1, 1)
_G = 9.80665


def _ap5_months(months: int, variant: str = "tier-1") -> list[dt.date]:
    """The first ``months`` months of a variant: tier 1 has April to September of 2016-2020 only
    (``dates_all`` of downscaling_tier1.py), tier 2 every month from 1995 (downscaling_tier2.py)."""
    found: list[dt.date] = []
    if variant == "tier-2":
        year, month = AP5_TIER2_START.year, AP5_TIER2_START.month
        while len(found) < months:
            found.append(dt.date(year, month, 1))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return found
    year, month = AP5_START.year, AP5_START.month
    while len(found) < months:
        found.append(dt.date(year, month, 1))
        year, month = (year + 1, 4) if month == 9 else (year, month + 1)
    return found


def generate_ap5(
    directory: str | os.PathLike[str],
    months: int,
    times: int,
    lat: int,
    lon: int,
    seed: int = 0,
    *,
    variant: str = "tier-1",
    overwrite: bool = True,
) -> list[Path]:
    """Downscaling (climetlab-maelstrom-downscaling 0.4) files of one month each, float32.

    Tier 1 (``downscaling_tier1.py``: ``tier-1/downscaling_tier1_{date}.nc``, ``%Y-%m`` dates of
    April to September 2016-2020): ``t2m_in``, ``z_in`` (coarse IFS, remapped to the fine grid),
    ``t2m_tar``, ``z_tar`` on (time, lat, lon), 0.1 degree over central Europe (128 x 96 points,
    conf/dataset/ap5.yaml), at 00 and 12 UTC.

    Tier 2 (``downscaling_tier2.py``: ``tier-2/downscaling_tier2_{date}.nc``, every month of
    1995-2018): the COSMO-REA6 target ``t_2m_tar`` with its surface height ``hsurf_tar`` (m) on
    the rotated grid ``rlat``/``rlon`` of 96 x 120 points (issue 12). The plugin's code does not
    name the ERA5 inputs; they are ``t2m_in`` and ``z_in`` here, as in tier 1. The time steps
    (12-hourly) are ours; the plugin does not say.
    """
    directory = Path(directory)
    tier2 = variant == "tier-2"
    rng0 = np.random.default_rng([seed, 5, 0])
    if tier2:  # rotated-pole coordinates of COSMO-REA6 (0.0625 degree spacing, ~6 km)
        lats = -4.0 + 0.0625 * np.arange(lat)
        lons = -6.0 + 0.0625 * np.arange(lon)
    else:
        lats = 44.0 + 0.1 * np.arange(lat)
        lons = 3.0 + 0.1 * np.arange(lon)
    hills = np.maximum(400 + 700 * _smooth(rng0, lat, lon, 12) + 250 * _smooth(rng0, lat, lon, 3), 0.0)
    z_tar = hills * _G
    z_in = _box(z_tar, 9)  # what a coarser model sees
    paths = []
    prefix = "downscaling_tier2" if tier2 else "downscaling_tier1"
    for m, month in enumerate(_ap5_months(months, variant)):
        path = directory / f"{prefix}_{month:%Y-%m}.nc"
        paths.append(path)
        if not overwrite and path.exists():
            continue
        rng = np.random.default_rng([seed, 5, m + 1])
        start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
        hours = np.arange(times) * 12.0
        t2m_tar = np.empty((times, lat, lon))
        t2m_in = np.empty((times, lat, lon))
        season = 10 * np.sin(np.pi * (month.month - 3) / 7)
        for i, h in enumerate(hours):
            weather = 4 * _smooth(rng, lat, lon, 40) + 1.5 * _smooth(rng, lat, lon, 6)
            day_night = 4 if (h % 24) == 12 else -3
            base = 278 + season + day_night - 0.6 * (lats[:, None] - lats.mean()) + weather
            t2m_tar[i] = base - 0.0065 * hills
            t2m_in[i] = _box(base, 9) - 0.0065 * z_in / _G
        time_attrs = {"units": f"hours since {start:%Y-%m-%d %H:%M:%S}", "calendar": "standard"}
        y, x = ("rlat", "rlon") if tier2 else ("lat", "lon")
        field3 = ("time", y, x)
        variables: dict[str, tuple[tuple[str, ...], np.ndarray, Mapping[str, object]]] = {
            "time": (("time",), hours, time_attrs),
        }
        if tier2:
            variables.update(
                {
                    "rlat": ((y,), lats, {"units": "degrees", "standard_name": "grid_latitude"}),
                    "rlon": ((x,), lons, {"units": "degrees", "standard_name": "grid_longitude"}),
                    "t2m_in": (field3, _f4(t2m_in), {"units": "K", "long_name": "2m temperature (ERA5)"}),
                    "z_in": (field3, _f4(np.broadcast_to(z_in, (times, lat, lon))), {"units": "m**2 s**-2"}),
                    "t_2m_tar": (
                        field3,
                        _f4(t2m_tar),
                        {"units": "K", "long_name": "2m temperature (COSMO-REA6)"},
                    ),
                    "hsurf_tar": (field3, _f4(np.broadcast_to(hills, (times, lat, lon))), {"units": "m"}),
                }
            )
        else:
            variables.update(
                {
                    "lat": ((y,), lats, {"units": "degrees_north", "standard_name": "latitude"}),
                    "lon": ((x,), lons, {"units": "degrees_east", "standard_name": "longitude"}),
                    "t2m_in": (field3, _f4(t2m_in), {"units": "K", "long_name": "2m temperature (input)"}),
                    "z_in": (field3, _f4(np.broadcast_to(z_in, (times, lat, lon))), {"units": "m**2 s**-2"}),
                    "t2m_tar": (field3, _f4(t2m_tar), {"units": "K", "long_name": "2m temperature (target)"}),
                    "z_tar": (
                        field3,
                        _f4(np.broadcast_to(z_tar, (times, lat, lon))),
                        {"units": "m**2 s**-2"},
                    ),
                }
            )
        title = f"MAELSTROM AP5 sample data ({variant})"
        _write_netcdf(path, {"time": times, y: lat, x: lon}, variables, {"title": title})
    return paths


def ensure_ap5(cache_dir: str | os.PathLike[str], sizes: Mapping[str, int], seed: int = 0) -> list[Path]:
    months, times, lat, lon = (int(sizes[k]) for k in ("months", "times", "lat", "lon"))
    variant = str(sizes.get("variant", "tier-1"))
    prefix = "" if variant == "tier-1" else f"{variant}-"  # tier-1 sets keep the names they had
    name = f"{prefix}{months}m-{times}t-{lat}x{lon}-seed{seed}-v{VERSION}"
    return generate_ap5(
        Path(cache_dir) / "samples" / "ap5" / name,
        months,
        times,
        lat,
        lon,
        seed,
        variant=variant,
        overwrite=False,
    )


#: First day of the AP6 weather data (IFS runs at 00 and 12 UTC, 48 hourly steps each).
AP6_START = dt.date(2017, 1, 1)


def generate_ap6(
    directory: str | os.PathLike[str],
    days: int,
    turbines: int,
    levels: int,
    lat: int,
    lon: int,
    seed: int = 0,
    *,
    overwrite: bool = True,
) -> list[Path]:
    """Power production (climetlab-maelstrom-power-production 0.2.2) of the layout its code reads.

    Weather (``weather/abc.py``: ``{type}_{YYYYMMDD}_{00|12}.nc`` for the types ``ml``, ``pl`` and
    ``sfc`` of ``model_level.py``, ``pressure_level.py``, ``surface_level.py``; every day of
    2017-2020; runs at 00 and 12 UTC of 48 hourly steps, of which the plugin's merger keeps the
    first 12 so newer runs replace older ones): ``ml_*`` with ``t``, ``q``, ``u``, ``v`` on (time,
    level, latitude, longitude), ``pl_*`` with ``z``, ``t``, ``u``, ``v`` on (time, level [hPa],
    latitude, longitude), ``sfc_*`` with ``sp``. Production (``production/production.py``:
    ``production_data/wind_turbine_{id}.nc``, ids 1 to 4): ``production`` (kW) and ``wind_speed``
    every 10 minutes. The variable names inside the files come from the 4cast application
    (maelstrom-a6), not from the plugin, which only names the files.

    The weather has regimes: the 500 hPa height is a mixture of ``4`` fixed patterns whose weights
    drift, and the wind at every level carries the geostrophic wind of that mixture, so the regime
    tells something about a turbine's production.
    """
    directory = Path(directory)
    rng0 = np.random.default_rng([seed, 6, 0])
    lats = 55.0 - 0.1 * np.arange(lat)
    lons = 6.0 + 0.1 * np.arange(lon)
    model_levels = np.arange(138 - levels, 138)
    pressure_levels = np.array([500, 700, 850, 1000], dtype=np.int32)
    sites = [(int(rng0.integers(lat)), int(rng0.integers(lon))) for _ in range(turbines)]
    hours_total = days * 24
    n_hist = hours_total // 6 + 10
    # one weather history, so consecutive runs and the turbines agree
    patterns = np.stack([_smooth(rng0, lat, lon, max(lat, lon) // 3) for _ in range(4)])
    walk = np.cumsum(rng0.standard_normal((n_hist, 4)), axis=0)
    weights = np.exp(walk - walk.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    z_hist = 5500 + 150 * np.einsum("tk,kyx->tyx", weights, patterns)  # 500 hPa height (m)
    dz_dy, dz_dx = np.gradient(z_hist, axis=(1, 2))
    # a wind along the height contours as the geostrophic wind blows (latitude falls with the row,
    # so -dZ/dnorth is +dz_dy), scaled to about 4 m/s: the domain is too small for the real balance
    scale = 4 / max(float(np.std(np.hypot(dz_dy, dz_dx))), 1e-9)
    u_hist = scale * dz_dy + 3 + 2 * np.stack([_smooth(rng0, lat, lon, 30) for _ in range(n_hist)])
    v_hist = scale * dz_dx + 2 * np.stack([_smooth(rng0, lat, lon, 30) for _ in range(n_hist)])

    def interpolate(history: np.ndarray, hour: float) -> np.ndarray:
        k, w = int(hour // 6), (hour % 6) / 6
        return (1 - w) * history[k] + w * history[k + 1]

    def wind(hour: float) -> tuple[np.ndarray, np.ndarray]:
        return interpolate(u_hist, hour), interpolate(v_hist, hour)

    grid = ("latitude", "longitude")
    coords: dict[str, tuple[tuple[str, ...], np.ndarray, Mapping[str, object]]] = {
        "latitude": (("latitude",), lats, {"units": "degrees_north"}),
        "longitude": (("longitude",), lons, {"units": "degrees_east"}),
    }
    paths = []
    for day in range(days):
        date = AP6_START + dt.timedelta(days=day)
        for run in (0, 12):
            ml, pl, sfc = (directory / f"{kind}_{date:%Y%m%d}_{run:02d}.nc" for kind in ("ml", "pl", "sfc"))
            paths += [ml, pl, sfc]
            if not overwrite and ml.exists() and pl.exists() and sfc.exists():
                continue
            rng = np.random.default_rng([seed, 6, 1, day, run])
            start = dt.datetime(date.year, date.month, date.day, run, tzinfo=dt.UTC)
            steps = np.arange(48.0)
            base_hour = day * 24 + run
            shape = (48, levels, lat, lon)
            scale = np.log(np.maximum(138 - model_levels, 1))[None, :, None, None]
            u = np.empty(shape)
            v = np.empty(shape)
            for i, h in enumerate(steps):
                uh, vh = wind(min(base_hour + h, hours_total + 40))
                u[i] = uh[None] * (1 + 0.15 * scale[0]) + 0.5 * rng.standard_normal((levels, lat, lon))
                v[i] = vh[None] * (1 + 0.15 * scale[0])
            t = 275 + 0.5 * scale + rng.standard_normal(shape)
            q = 0.005 * np.exp(-0.1 * scale) * np.ones(shape)
            field = ("time", "level", *grid)
            time = (("time",), steps, {"units": f"hours since {start:%Y-%m-%d %H:%M:%S}"})
            variables = {
                "time": time,
                "level": (("level",), model_levels.astype(np.int32), {"long_name": "model_level_number"}),
                **coords,
                "t": (field, _f4(t), {"units": "K"}),
                "q": (field, _f4(q), {"units": "kg kg**-1"}),
                "u": (field, _f4(u), {"units": "m s**-1"}),
                "v": (field, _f4(v), {"units": "m s**-1"}),
            }
            dims = {"time": 48, "level": levels, "latitude": lat, "longitude": lon}
            _write_netcdf(ml, dims, variables, {"title": "MAELSTROM AP6 sample data (model levels)"})
            hours = [min(base_hour + h, hours_total + 40) for h in steps]
            height = np.stack([interpolate(z_hist, h) for h in hours])  # 500 hPa
            # the other levels: thinner layers below, by the hypsometric equation with ~260 K
            thickness = 29.3 * 260 * np.log(500 / pressure_levels.astype(float))[None, :, None, None]
            z = (height[:, None] + thickness) * _G + 20 * rng.standard_normal((48, 4, lat, lon))
            winds = [wind(h) for h in hours]
            aloft = (pressure_levels / 500.0)[None, :, None, None] ** -0.5  # stronger wind higher up
            u_pl = np.stack([w[0] for w in winds])[:, None] * aloft
            v_pl = np.stack([w[1] for w in winds])[:, None] * aloft
            t_pl = 288 - 0.0065 * (z / _G) + rng.standard_normal(z.shape)
            plev = (("level",), pressure_levels, {"units": "hPa", "long_name": "pressure_level"})
            pfield = ("time", "level", *grid)
            pressure = {
                "time": time,
                "level": plev,
                **coords,
                "z": (pfield, _f4(z), {"units": "m**2 s**-2", "long_name": "Geopotential"}),
                "t": (pfield, _f4(t_pl), {"units": "K"}),
                "u": (pfield, _f4(u_pl), {"units": "m s**-1"}),
                "v": (pfield, _f4(v_pl), {"units": "m s**-1"}),
            }
            pdims = {"time": 48, "level": 4, "latitude": lat, "longitude": lon}
            _write_netcdf(pl, pdims, pressure, {"title": "MAELSTROM AP6 sample data (pressure levels)"})
            sp = 101000 + 800 * _smooth(rng, lat, lon, 40)[None] + np.zeros((48, 1, 1))
            surface = {"time": time, **coords, "sp": (("time", *grid), _f4(sp), {"units": "Pa"})}
            _write_netcdf(
                sfc, {"time": 48, "latitude": lat, "longitude": lon}, surface, {"title": "AP6 surface"}
            )
    for n, (iy, ix) in enumerate(sites, start=1):
        path = directory / "production_data" / f"wind_turbine_{n}.nc"
        paths.append(path)
        if not overwrite and path.exists():
            continue
        rng = np.random.default_rng([seed, 6, 2, n])
        minutes = np.arange(hours_total * 6) * 10.0
        speed = np.array([np.hypot(*(a[iy, ix] for a in wind(m / 60))) for m in minutes])
        speed = np.maximum(speed * 1.1 + 0.6 * rng.standard_normal(len(minutes)), 0)
        # a 3 MW power curve: cut in 3 m/s, rated 12 m/s, cut out 25 m/s
        production = np.where(
            speed < 3,
            0.0,
            np.where(speed < 12, 3000 * ((speed - 3) / 9) ** 3, np.where(speed < 25, 3000.0, 0.0)),
        )
        start = dt.datetime(AP6_START.year, AP6_START.month, AP6_START.day, tzinfo=dt.UTC)
        variables = {
            "time": (("time",), minutes, {"units": f"minutes since {start:%Y-%m-%d %H:%M:%S}"}),
            "latitude": (("latitude",), lats[iy : iy + 1], {"units": "degrees_north"}),
            "longitude": (("longitude",), lons[ix : ix + 1], {"units": "degrees_east"}),
            "production": (("time",), _f4(production), {"units": "kW"}),
            "wind_speed": (("time",), _f4(speed), {"units": "m s**-1"}),
        }
        dims = {"time": len(minutes), "latitude": 1, "longitude": 1}
        _write_netcdf(path, dims, variables, {"title": f"MAELSTROM AP6 sample data (wind turbine {n})"})
    return paths


def ensure_ap6(cache_dir: str | os.PathLike[str], sizes: Mapping[str, int], seed: int = 0) -> list[Path]:
    days, turbines, levels, lat, lon = (int(sizes[k]) for k in ("days", "turbines", "levels", "lat", "lon"))
    name = f"{days}d-{turbines}wt-{levels}lev-{lat}x{lon}-regimes-seed{seed}-v{VERSION}"
    directory = Path(cache_dir) / "samples" / "ap6" / name
    return generate_ap6(directory, days, turbines, levels, lat, lon, seed, overwrite=False)
