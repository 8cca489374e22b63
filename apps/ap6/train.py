"""AP6 training: forecast a wind turbine's production from the IFS forecast near it and the weather regime.

Two stages, as in the 4cast application. First the weather regimes: the anomalies of a
pressure-level field (``model.regime_variable`` at ``model.regime_level`` hPa, default the 500 hPa
geopotential) of the training hours are reduced by a PCA (``model.components``) and clustered by
k-means (``model.regimes``, scikit-learn); the cluster centres are logged as a plot. Then a small
PyTorch MLP forecasts the hourly production of turbine ``dataset.turbine``, normalised by its
largest training-period value, from the forecast fields around the turbine (wind speed and
components on the two lowest model levels, temperature, surface pressure, averaged over a square
of ``model.neighbourhood`` points), the time of day, the lead time and the regime. As the plugin's
merger does, each IFS run gives its first 12 hours, so newer runs replace older ones. The last
hours validate. Baselines on the same hours: persistence (the production of the hour before the
run started) and the turbine's training climatology for the hour of the day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.tracking.context import RunContext

from ..common import (
    check_finite,
    dataset_of,
    figure,
    log_figure,
    not_one_of,
    scores,
    seed_all,
    split_count,
    torch_device,
    torch_epoch,
    torch_optimizer,
)
from .model import ProductionMLP, Regimes

#: Hours of each IFS run that are used (the plugin's WeatherMerger keeps the first 12).
RUN_HOURS = 12
_G = 9.80665


@dataclass
class Hourly:
    """The hourly series the app trains on, all of the same length."""

    time: np.ndarray  # datetime64[h]
    lead: np.ndarray  # hours since the run started
    features: np.ndarray  # (hours, n) forecast fields around the turbine
    regime_field: np.ndarray  # (hours, y, x)
    production: np.ndarray  # kW, hourly mean of the 10-minute values (NaN where none)


def _files(files: list[Path]) -> tuple[list[tuple[Path, Path, Path]], dict[int, Path]]:
    """The ``(ml, pl, sfc)`` files of each IFS run, sorted by run, and the turbine files by id."""
    weather: dict[str, dict[str, Path]] = {"ml": {}, "pl": {}, "sfc": {}}
    turbines: dict[int, Path] = {}
    for path in files:
        if m := re.fullmatch(r"(ml|pl|sfc)_(\d{8}_\d{2})\.nc", path.name):
            weather[m.group(1)][m.group(2)] = path
        elif m := re.fullmatch(r"wind_turbine_(\d+)\.nc", path.name):
            turbines[int(m.group(1))] = path
    runs = sorted(set().union(*weather.values()))
    if not runs:
        raise ConfigError(
            "dataset: no ml_/pl_/sfc_YYYYMMDD_HH.nc files; check dataset.path or dataset.source"
        )
    for kind, found in weather.items():
        missing = [run for run in runs if run not in found]
        if missing:
            raise ConfigError(
                f"dataset: the IFS run {missing[0]} has no {kind}_{missing[0]}.nc (each run needs ml_, pl_, sfc_)"
            )
    return [(weather["ml"][r], weather["pl"][r], weather["sfc"][r]) for r in runs], turbines


def _nearest(values: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values, dtype=float) - value)))


def read(dataset: Any, cfg: Any) -> tuple[Hourly, dict[str, Any]]:
    """The hourly series of turbine ``dataset.turbine`` and the regime field over the domain."""
    m, turbine = cfg.model, int(cfg.dataset.turbine)
    weather, turbines = _files(sorted(dataset.files))
    if turbine not in turbines:
        raise not_one_of("dataset.turbine", turbine, sorted(turbines))
    prod = dataset.open(turbines[turbine])
    lat0 = float(np.asarray(prod["latitude"].values).ravel()[0])
    lon0 = float(np.asarray(prod["longitude"].values).ravel()[0])
    minutes = prod["time"].values.astype("datetime64[m]")
    production_10min = np.asarray(prod["production"].values, dtype=np.float64)
    info = {"production_units": str(prod["production"].attrs.get("units", "kW")), "site": (lat0, lon0)}
    prod.close()

    times, leads, features, regime = [], [], [], []
    half = int(m.neighbourhood) // 2
    for ml_path, pl_path, sfc_path in weather:
        ml, pl, sfc = dataset.open(ml_path), dataset.open(pl_path), dataset.open(sfc_path)
        if not info.get("grid"):
            lats, lons = ml["latitude"].values, ml["longitude"].values
            if m.neighbourhood < 1 or m.neighbourhood > min(len(lats), len(lons)):
                raise not_one_of(
                    "model.neighbourhood", m.neighbourhood, range(1, min(len(lats), len(lons)) + 1)
                )
            iy = min(max(_nearest(lats, lat0), half), len(lats) - half - 1)
            ix = min(max(_nearest(lons, lon0), half), len(lons) - half - 1)
            if m.regime_variable not in pl.data_vars:
                raise not_one_of("model.regime_variable", m.regime_variable, sorted(map(str, pl.data_vars)))
            levels = [int(v) for v in pl["level"].values]
            if int(m.regime_level) not in levels:
                raise not_one_of("model.regime_level", m.regime_level, levels)
            info.update(
                grid=True,
                box=(slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1)),
                level_index=levels.index(int(m.regime_level)),
                lats=np.asarray(pl["latitude"].values),
                lons=np.asarray(pl["longitude"].values),
                regime_units=str(pl[m.regime_variable].attrs.get("units", "")),
            )
        box = (slice(0, RUN_HOURS), slice(-2, None), *info["box"])  # the two lowest model levels
        u, v = (np.asarray(ml[name].values[box], dtype=np.float64) for name in ("u", "v"))
        t = np.asarray(ml["t"].values[box], dtype=np.float64)
        sp = np.asarray(sfc["sp"].values[(slice(0, RUN_HOURS), *info["box"])], dtype=np.float64)
        speed = np.hypot(u, v)
        axes = (2, 3)
        features.append(
            np.column_stack(
                [
                    speed.mean(axis=axes),  # both levels
                    (speed**3).mean(axis=axes)[:, -1:] ** (1 / 3),  # the power the wind carries
                    u.mean(axis=axes)[:, -1],
                    v.mean(axis=axes)[:, -1],
                    t.mean(axis=axes)[:, -1],
                    sp.mean(axis=(1, 2)) / 100,  # hPa
                ]
            )
        )
        regime.append(
            np.asarray(pl[m.regime_variable].values[:RUN_HOURS, info["level_index"]], dtype=np.float64)
        )
        run_times = ml["time"].values[:RUN_HOURS].astype("datetime64[h]")
        times.append(run_times)
        leads.append((run_times - run_times[0]).astype(float))
        for ds in (ml, pl, sfc):
            ds.close()
    time = np.concatenate(times)
    # hourly means of the 10-minute production, for the hour starting at each forecast time
    hour_of = minutes.astype("datetime64[h]")
    order = np.searchsorted(time, hour_of)
    valid = (order < len(time)) & (time[np.minimum(order, len(time) - 1)] == hour_of)
    sums = np.bincount(order[valid], production_10min[valid], minlength=len(time))
    counts = np.bincount(order[valid], minlength=len(time))
    with np.errstate(invalid="ignore", divide="ignore"):
        production = np.where(counts > 0, sums / counts, np.nan)
    series = Hourly(time, np.concatenate(leads), np.concatenate(features), np.concatenate(regime), production)
    return series, info


def persistence(production: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """For every hour, the production of the hour before its run started (the last one a forecaster
    knows); at the very start the first hour's."""
    index = np.arange(len(production)) - lead.astype(int) - 1
    return production[np.maximum(index, 0)]


def climatology(production: np.ndarray, hour_of_day: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The training hours' mean production for each hour of the day (the overall mean where an hour
    of the day is not in the training hours)."""
    overall = float(np.nanmean(production[train]))
    means = np.full(24, overall)
    for hour in range(24):
        chosen = train & (hour_of_day == hour) & np.isfinite(production)
        if chosen.any():
            means[hour] = production[chosen].mean()
    return means[hour_of_day]


def design(series: Hourly, labels: np.ndarray, regimes: int) -> np.ndarray:
    """Model inputs: the forecast fields, time of day (sin, cos), lead time and the regime (one-hot)."""
    hour = series.time.astype("datetime64[h]").astype(int) % 24
    angle = 2 * np.pi * hour / 24
    return np.column_stack(
        [series.features, np.sin(angle), np.cos(angle), series.lead / RUN_HOURS, np.eye(regimes)[labels]]
    )


def plot_regimes(ctx: RunContext, regimes: Regimes, info: dict[str, Any], m: Any, counts: np.ndarray) -> None:
    """The cluster centres as maps of the regime field's anomaly (geopotential as height in m)."""
    plt = figure()
    centres = regimes.centres()
    units = info["regime_units"]
    if m.regime_variable == "z":  # geopotential (m2 s-2) shown as geopotential height
        centres, units = centres / _G, "m"
    limit = float(np.abs(centres).max()) or 1.0
    fig, axes = plt.subplots(
        1, len(centres), figsize=(3.8 * len(centres) + 1, 3.6), squeeze=False, layout="constrained"
    )
    for k, (ax, centre) in enumerate(zip(axes[0], centres, strict=True)):
        image = ax.pcolormesh(info["lons"], info["lats"], centre, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.plot(info["site"][1], info["site"][0], "k^", label=f"turbine {ctx.cfg.dataset.turbine}")
        ax.set_title(f"regime {k}: {counts[k]} training hours", fontsize=10)
        ax.set_xlabel("longitude (degrees east)")
        ax.set_ylabel("latitude (degrees north)")
    axes[0][0].legend(loc="lower left")
    what = "height" if m.regime_variable == "z" else m.regime_variable
    fig.colorbar(image, ax=axes[0].tolist(), label=f"{m.regime_level} hPa {what} anomaly ({units})")
    log_figure(ctx, fig, "weather_regimes")


def plot_forecast(ctx: RunContext, time: np.ndarray, curves: dict[str, np.ndarray]) -> None:
    plt = figure()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for name, values in curves.items():
        ax.plot(
            time.astype("datetime64[m]").astype(object), values, label=name, lw=2 if name == "observed" else 1
        )
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("production (1 = largest training value)")
    ax.set_title(f"turbine {ctx.cfg.dataset.turbine}, validation hours")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    log_figure(ctx, fig, "production_forecast")


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    m, batch = cfg.model, cfg.train.batch_size
    if m.arch != "regimes":
        raise not_one_of("model.arch", m.arch, ["regimes (model=ap6_regimes)"])
    rng = seed_all(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, cfg.loader.threads))

    with timer.phase("read"):
        series, info = read(dataset_of(ctx), cfg)
    hours = len(series.time)
    n_val = split_count(hours, cfg.dataset.validation_fraction, "forecast hours")
    train = np.arange(hours) < hours - n_val
    known = np.isfinite(series.production)
    capacity = float(np.nanmax(series.production[train])) or 1.0
    production = series.production / capacity

    with timer.phase("regimes"):
        regimes = Regimes.fit(series.regime_field[train], m.components, m.regimes, cfg.train.seed)
        labels = regimes.predict(series.regime_field)
    counts = np.bincount(labels[train], minlength=m.regimes)
    plot_regimes(ctx, regimes, info, m, counts)

    x = design(series, labels, m.regimes)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    fit, val = np.flatnonzero(train & known), np.flatnonzero(~train & known)
    hour_of_day = series.time.astype("datetime64[h]").astype(int) % 24
    truth = production[val]
    reference = {
        **scores(persistence(production, series.lead)[val], truth, "val_persistence"),
        **scores(climatology(production, hour_of_day, train)[val], truth, "val_climatology"),
    }
    print(
        f"data: turbine {cfg.dataset.turbine}, {len(fit)} training and {len(val)} validation hours, "
        f"{x.shape[1]} inputs, {m.regimes} regimes of {m.regime_variable} {m.regime_level} hPa",
        flush=True,
    )

    device = torch_device(timer)
    model = ProductionMLP(x.shape[1], [int(h) for h in m.hidden]).to(device)
    optimizer = torch_optimizer(m, model.parameters())
    loss_fn = torch.nn.functional.l1_loss if m.loss == "mae" else torch.nn.functional.mse_loss
    steps = cfg.train.steps_per_epoch or -(-len(fit) // batch)
    # the whole series fits on the device; batches are slices of it
    inputs = torch.from_numpy(x).to(device)
    target = torch.from_numpy(np.nan_to_num(production).astype(np.float32)).to(device)

    def loader(index: np.ndarray) -> Any:
        return lambda: (inputs[index], target[index])

    metrics: dict[str, float] = {}
    forecast = np.zeros(len(val))
    for epoch in range(cfg.train.epochs):
        order = np.resize(rng.permutation(fit), steps * batch)
        loaders = [loader(order[i : i + batch]) for i in range(0, steps * batch, batch)]
        loss = torch_epoch(model, optimizer, loaders, loss_fn, timer)
        with timer.phase("validation"), torch.no_grad():
            model.eval()
            forecast = model(inputs[val]).cpu().numpy()
            metrics = {"loss": loss, **scores(forecast, truth, "val"), **reference}
        ctx.end_epoch(epoch, metrics)
        check_finite(metrics, epoch)
    best = min(("persistence", "climatology"), key=lambda b: metrics[f"val_{b}_mae"])
    beats = metrics["val_mae"] < metrics[f"val_{best}_mae"]
    print(
        f"val_mae {metrics['val_mae']:.4g} vs {best} {metrics[f'val_{best}_mae']:.4g} (normalised production): "
        f"{'beats' if beats else 'does not beat'} the better baseline",
        flush=True,
    )
    plot_forecast(
        ctx,
        series.time[val],
        {
            "observed": truth,
            "model": forecast,
            "persistence": persistence(production, series.lead)[val],
            "climatology": climatology(production, hour_of_day, train)[val],
        },
    )
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.pt"
    torch.save(model.state_dict(), weights)
    ctx.log_artifact(weights)
    return metrics
