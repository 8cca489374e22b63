"""Sample data in the layout of the MAELSTROM datasets, generated on the spot.

AP1 mimics climetlab-maelstrom-yr (MET Norway): one NetCDF4 file per forecast run with

    predictors(leadtime, y, x, predictor)       float32  raw forecast fields
    static_predictors(y, x, static_predictor)   float32  terrain
    target_mean(leadtime, y, x)                 float32  2 m temperature analysis (degC)
    target_std(leadtime, y, x)                  float32  its uncertainty (K)

and the coordinates ``time`` (forecast reference time), ``leadtime`` (hours), ``y``/``x``
(Lambert conformal metres), ``latitude``/``longitude`` and the names in ``predictor`` and
``static_predictor``. The analysis is the raw forecast ``air_temperature_2m`` corrected for a
persistent model bias (which ``bias_recent`` sees), the height difference between the model's
and the real terrain and a slightly weak diurnal cycle, plus error no model can predict.

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
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..launch.files import write_atomic

#: Version of the generators; part of the cache key, bump it when the generated data change.
VERSION = 1

#: Predictors of the real dataset in its order; files hold the first ``predictors`` of them.
AP1_PREDICTORS = (
    "air_temperature_2m",
    "air_temperature_0.1_2m",
    "air_temperature_0.9_2m",
    "bias_recent",
    "bias_yesterday",
    "cloud_area_fraction",
    "precipitation_amount",
    "x_wind_10m",
    "y_wind_10m",
    "analysis_std",
    "air_pressure_at_sea_level",
    "relative_humidity_2m",
    "wind_speed_of_gust",
    "surface_downwelling_shortwave_flux_in_air",
)
AP1_STATIC_PREDICTORS = ("altitude", "land_area_fraction", "model_altitude", "model_laf")
#: First forecast run of the real dataset; runs start at 03, 09, 15 or 21 UTC by the day.
AP1_START = dt.date(2020, 3, 1)

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
    """Yield ``(predictors[y, x, predictor], target_mean, target_std)`` per leadtime of a run."""
    ny, nx = lat.shape
    # pairs of fields blended over the leadtimes: the weather evolves smoothly
    lengths = {"anomaly": 150, "error": 8, "cloud": 20, "u": 40, "v": 40, "mslp": 200}
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
        declination = np.radians(23.44) * np.sin(2 * np.pi * (284 + day) / 365)
        phi, hour_angle = np.radians(lat), np.radians(15 * (solar_hour - 12))
        sun = np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.cos(hour_angle)
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
        fields = (
            raw,
            raw - 1.28 * spread,
            raw + 1.28 * spread,
            bias + 0.3 * rng.standard_normal((ny, nx)),
            bias + 0.5 * rng.standard_normal((ny, nx)),
            cloud,
            rain,
            u,
            v,
            target_std * (1 + 0.1 * rng.standard_normal((ny, nx))),
            101300 + 1200 * f["mslp"],
            np.clip(0.55 + 0.4 * cloud + 0.05 * rng.standard_normal((ny, nx)), 0, 1),
            1.5 * np.hypot(u, v) + 1,
            900 * np.maximum(sun, 0) * (1 - 0.75 * cloud),
        )
        yield np.stack(fields, axis=-1).astype(np.float32), truth.astype(np.float32), target_std


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts({"Conventions": "CF-1.8", "title": "MAELSTROM AP1 sample data", "source": __name__})
        sizes = {"time": 1, "leadtime": len(leadtimes), "y": len(y), "x": len(x)}
        sizes.update(predictor=predictors, static_predictor=static_predictors)
        for name, size in sizes.items():
            nc.createDimension(name, size)

        def add(name: str, dims: tuple[str, ...], data: object = None, dtype: str = "f4", **attrs: object):
            var = nc.createVariable(name, dtype, dims, contiguous=bool(dims), fill_value=False)
            var.setncatts(attrs)
            if data is not None:
                var[...] = data
            return var

        grid = {"grid_mapping": "projection", "coordinates": "latitude longitude"}
        epoch = {
            "units": "seconds since 1970-01-01 00:00:00 +00:00",
            "standard_name": "forecast_reference_time",
        }
        add("time", ("time",), [reference.timestamp()], "f8", **epoch)
        add("leadtime", ("leadtime",), leadtimes, "f8", units="hours", long_name="forecast lead time")
        add("y", ("y",), y, units="m", standard_name="projection_y_coordinate")
        add("x", ("x",), x, units="m", standard_name="projection_x_coordinate")
        add("latitude", ("y", "x"), lat, units="degrees_north", standard_name="latitude")
        add("longitude", ("y", "x"), lon, units="degrees_east", standard_name="longitude")
        add("projection", (), 0, "i4", **_PROJECTION)
        add("altitude", ("y", "x"), terrain["altitude"], units="m", standard_name="surface_altitude", **grid)
        add("land_area_fraction", ("y", "x"), terrain["land_area_fraction"], units="1", **grid)
        for name, names in (("predictor", AP1_PREDICTORS), ("static_predictor", AP1_STATIC_PREDICTORS)):
            nc.createVariable(name, str, (name,))[:] = np.array(names[: sizes[name]], dtype=object)
        static = np.stack([terrain[name] for name in AP1_STATIC_PREDICTORS[:static_predictors]], axis=-1)
        add("static_predictors", ("y", "x", "static_predictor"), static, **grid)

        dims = ("leadtime", "y", "x")
        pred = add("predictors", (*dims, "predictor"), **grid)
        mean = add("target_mean", dims, long_name="analysed air_temperature_2m", units="degC", **grid)
        std = add("target_std", dims, long_name="uncertainty of the analysis", units="K", **grid)
        for i, (p, t, s) in enumerate(_forecast(rng, terrain, lat, lon, reference, leadtimes)):
            pred[i] = p[..., :predictors]
            mean[i] = t
            std[i] = s
    os.replace(tmp, path)


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
    """Write one file per forecast run (daily from :data:`AP1_START`); returns their paths.

    With ``overwrite=False`` existing files are kept (the content only depends on the arguments).
    """
    if not 1 <= predictors <= len(AP1_PREDICTORS):
        raise ValueError(f"predictors: {predictors} is not in 1..{len(AP1_PREDICTORS)}")
    if not 1 <= static_predictors <= len(AP1_STATIC_PREDICTORS):
        raise ValueError(f"static_predictors: {static_predictors} is not in 1..{len(AP1_STATIC_PREDICTORS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    terrain = _terrain(np.random.default_rng([seed, 0]), y, x)
    ys = _CENTRE_XY[1] + _SPACING * (np.arange(y) - y // 2)
    xs = _CENTRE_XY[0] + _SPACING * (np.arange(x) - x // 2)
    hours = np.arange(leadtimes) * max(1, 48 // leadtimes)
    paths = []
    for run in range(runs):
        date = AP1_START + dt.timedelta(days=run)
        reference = dt.datetime(date.year, date.month, date.day, (21, 3, 9, 15)[date.day % 4], tzinfo=dt.UTC)
        path = directory / f"air_temperature_{reference:%Y%m%dT%HZ}.nc"
        if overwrite or not path.exists():
            rng = np.random.default_rng([seed, 1, run])
            _write_run(path, reference, hours, xs, ys, terrain, predictors, static_predictors, rng)
        paths.append(path)
    return paths


def ensure_ap1(cache_dir: str | os.PathLike[str], sizes: Mapping[str, int], seed: int = 0) -> list[Path]:
    """The sample files of ``sizes`` (a tier of ``conf/dataset/ap1.yaml``), generated if missing."""
    keys = ("runs", "leadtimes", "y", "x", "predictors", "static_predictors")
    runs, leadtimes, y, x, predictors, static = (int(sizes[k]) for k in keys)
    name = f"{runs}runs-{leadtimes}lt-{y}x{x}-{predictors}p{static}s-seed{seed}-v{VERSION}"
    directory = Path(cache_dir) / "samples" / "ap1" / name
    return generate_ap1(directory, runs, leadtimes, y, x, predictors, static, seed, overwrite=False)


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
