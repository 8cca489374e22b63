"""AP3 training: emulate the radiation scheme (fluxes and heating rates) column by column (TensorFlow).

Each column becomes a sequence over its half levels (138 for the IFS's 137 levels): the
half-level inputs (``temperature_hl``, ``pressure_hl``), the level inputs (gases, clouds,
aerosols; the surface half level repeats the lowest level), ``overlap_param`` between levels and
the scalars (skin temperature, solar zenith angle, albedo and emissivity bands, solar irradiance)
on every level, each standardised with the training columns' statistics. The model predicts
``flux_dn_sw``, ``flux_up_sw``, ``flux_dn_lw`` and ``flux_up_lw`` on the half levels; the heating
rates (K d-1) follow from them as in the plugin, and the loss adds (``model.hr_weight``) the error
of the net flux each layer absorbs (the heating rate times the layer's mass) to that of the fluxes. The last files validate. Skill: RMSE and MAE of the fluxes (W m-2) and
heating rates (K d-1), overall and per level band (upper above 100 hPa, middle to 700 hPa, lower),
for the model and two baselines on the same columns: the training mean profile and a linear
regression per level (the inputs of a level to its fluxes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.tracking.context import RunContext

from ..ap1.model import make_optimizer
from ..ap1.train import _phase
from ..common import check_finite, dataset_of, figure, log_figure, not_one_of, split_count
from .model import build_cnn, build_rnn, heating_rate

#: Targets on half levels, in this order.
FLUXES = ("flux_dn_sw", "flux_up_sw", "flux_dn_lw", "flux_up_lw")
#: Level inputs (ecRad names, the plugin's ``icol_keys`` without the aerosols, which follow them).
LEVEL = ("q", "o3_mmr", "co2_vmr", "n2o_vmr", "ch4_vmr", "o2_vmr", "cfc11_vmr", "cfc12_vmr", "hcfc22_vmr")
LEVEL += ("ccl4_vmr", "cloud_fraction", "q_liquid", "q_ice", "re_liquid", "re_ice")
HALF = ("temperature_hl", "pressure_hl")
SCALARS = ("skin_temperature", "cos_solar_zenith_angle", "sw_albedo", "sw_albedo_direct", "lw_emissivity")
SCALARS += ("solar_irradiance",)
#: Level bands by pressure (Pa): upper atmosphere, free troposphere, lower troposphere.
BANDS = {"upper": (0.0, 1e4), "middle": (1e4, 7e4), "lower": (7e4, math.inf)}
#: Ridge penalty of the per-level linear baseline, per column.
RIDGE = 1e-3


@dataclass
class Columns:
    """``x`` (columns, half levels, channels), ``y`` fluxes (columns, half levels, 4) in W m-2 and
    ``pressure`` (columns, half levels) in Pa."""

    x: np.ndarray
    y: np.ndarray
    pressure: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def pairs(files: list[Path]) -> list[tuple[Path, Path]]:
    """``(inputs, outputs)`` files of the same date, timestep and patch."""
    outputs = {}
    for path in files:
        if m := re.fullmatch(r"(?!rad4NN_inputs_)\w+_outputs_(\d+_\d+c\d+\.nc)", path.name):
            outputs.setdefault(m.group(1), path)
    found = []
    for path in sorted(files):
        if m := re.fullmatch(r"rad4NN_inputs_(\d+_\d+c\d+\.nc)", path.name):
            if m.group(1) not in outputs:
                raise ConfigError(f"dataset: {path.name} has no outputs file (*_outputs_{m.group(1)})")
            found.append((path, outputs[m.group(1)]))
    if not found:
        raise ConfigError("dataset: no rad4NN_inputs_*.nc files; check dataset.path or dataset.source")
    return found


def read_pair(dataset: Any, inputs: Path, outputs: Path) -> Columns:
    """One pair of files as model inputs and targets."""
    ds, out = dataset.open(inputs), dataset.open(outputs)
    for names, where in ((LEVEL + HALF + SCALARS + ("aerosol_mmr", "overlap_param"), ds), (FLUXES, out)):
        for name in names:
            if name not in where.variables:
                raise not_one_of(
                    f"dataset ({Path(where.encoding['source']).name})", name, sorted(where.data_vars)
                )
    n, levels = ds.sizes["column"], ds.sizes["level"]

    def pad(field: np.ndarray) -> np.ndarray:  # (column, level, c) -> half levels, surface repeats the lowest
        return np.concatenate([field, field[:, -1:]], axis=1)

    level = np.stack([ds[k].values for k in LEVEL], axis=-1)
    aerosol = ds["aerosol_mmr"].transpose("column", "level", "aerosol_type").values
    half = np.stack([ds[k].values for k in HALF], axis=-1)
    overlap = np.zeros((n, levels + 1, 1), dtype=np.float32)
    overlap[:, 1:-1, 0] = ds["overlap_param"].values  # between level k-1 and k: half level k
    scalars = []
    for name in SCALARS:
        values = np.asarray(ds[name].values, dtype=np.float32)
        values = np.broadcast_to(values, (n,)) if values.ndim == 0 else values
        scalars.append(values.reshape(n, -1))
    scalar = np.concatenate(scalars, axis=1)
    x = np.concatenate(
        [
            half,
            pad(level),
            pad(aerosol),
            overlap,
            np.broadcast_to(scalar[:, None], (n, levels + 1, scalar.shape[1])),
        ],
        axis=-1,
    ).astype(np.float32)
    y = np.stack([out[k].values for k in FLUXES], axis=-1).astype(np.float32)
    pressure = np.asarray(ds["pressure_hl"].values, dtype=np.float64)
    ds.close()
    out.close()
    return Columns(x, y, pressure)


def join(parts: list[Columns]) -> Columns:
    return Columns(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("x", "y", "pressure")))


def heating_rates(fluxes: np.ndarray, pressure: np.ndarray) -> np.ndarray:
    """(columns, levels, 2): shortwave and longwave heating rates (K d-1) of (columns, half levels, 4) fluxes."""
    sw = heating_rate(fluxes[..., 0], fluxes[..., 1], pressure)
    lw = heating_rate(fluxes[..., 2], fluxes[..., 3], pressure)
    return np.stack([sw, lw], axis=-1)


def skill(fluxes: np.ndarray, columns: Columns, prefix: str) -> dict[str, float]:
    """Flux (W m-2) and heating-rate (K d-1) RMSE and MAE against ``columns``, overall and per band."""
    hr_error = heating_rates(fluxes, columns.pressure) - heating_rates(columns.y, columns.pressure)
    flux_error = fluxes.astype(np.float64) - columns.y
    half_p = columns.pressure.mean(axis=0)
    full_p = 0.5 * (half_p[1:] + half_p[:-1])
    out: dict[str, float] = {}
    for what, error, p in (("flux", flux_error, half_p), ("hr", hr_error, full_p)):
        out[f"{prefix}_{what}_rmse"] = float(np.sqrt(np.mean(error**2)))
        out[f"{prefix}_{what}_mae"] = float(np.mean(np.abs(error)))
        for band, (low, high) in BANDS.items():
            chosen = (p >= low) & (p < high)
            if chosen.any():
                out[f"{prefix}_{what}_rmse.{band}"] = float(np.sqrt(np.mean(error[:, chosen] ** 2)))
                out[f"{prefix}_{what}_mae.{band}"] = float(np.mean(np.abs(error[:, chosen])))
    return out


def standardisation(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over ``axis``; a channel that does not vary (a well-mixed gas, no
    cloud water at a level) gets an infinite deviation, so it standardises to 0, never to rounding noise."""
    mean = x.mean(axis=axis, dtype=np.float64)
    std = x.std(axis=axis, dtype=np.float64)
    return mean, np.where(std > 1e-6 * np.abs(mean) + 1e-30, std, np.inf)


def mean_profile(train: Columns, n: int) -> np.ndarray:
    """Baseline: the training columns' mean flux profile, for each of ``n`` columns."""
    return np.broadcast_to(train.y.mean(axis=0), (n, *train.y.shape[1:]))


def linear_per_level(train: Columns, val: Columns, ridge: float = RIDGE) -> np.ndarray:
    """Baseline: per half level, a linear map (with intercept) of that level's standardised inputs to its
    4 fluxes, fitted on the training columns by ridge regression (penalty ``ridge`` times the number of
    columns, intercept not penalised): inputs rare in training (cloud water at some levels) would
    otherwise get wild weights."""
    mean, std = standardisation(train.x, (0,))
    channels = train.x.shape[-1]
    penalty = ridge * len(train) * np.diag([1.0] * channels + [0.0])
    out = np.empty(val.y.shape, dtype=np.float64)
    for k in range(train.x.shape[1]):
        a = np.column_stack([(train.x[:, k] - mean[k]) / std[k], np.ones(len(train))])
        coef, *_ = np.linalg.lstsq(a.T @ a + penalty, a.T @ train.y[:, k].astype(np.float64), rcond=None)
        out[:, k] = np.column_stack([(val.x[:, k] - mean[k]) / std[k], np.ones(len(val))]) @ coef
    return out


def build_model(m: Any, channels: int, levels: int) -> keras.Model:
    if m.levels is not None and int(m.levels) != levels:
        raise ConfigError(
            f"model.levels: {m.levels} does not fit the data's {levels} levels; valid: {levels} (or null)"
        )
    if m.arch == "rnn":
        return build_rnn(channels, len(FLUXES), m.cell, m.units, m.layers)
    if m.arch == "cnn1d":
        if m.kernel_size > levels + 1:
            raise ConfigError(f"model.kernel_size: {m.kernel_size} is more than the {levels + 1} half levels")
        return build_cnn(channels, len(FLUXES), m.filters, m.layers, m.kernel_size)
    raise not_one_of("model.arch", m.arch, ["rnn (model=ap3_rnn)", "cnn1d (model=ap3_cnn)"])


def plot_profiles(ctx: RunContext, val: Columns, predictions: dict[str, np.ndarray]) -> None:
    """RMSE profiles of the fluxes (W m-2) and heating rates (K d-1) against pressure (hPa)."""
    plt = figure()
    half_p = val.pressure.mean(axis=0) / 100
    full_p = 0.5 * (half_p[1:] + half_p[:-1])
    truth_hr = heating_rates(val.y, val.pressure)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.5), sharey=True)
    panels = [("shortwave flux", 0, "W m-2"), ("longwave flux", 1, "W m-2")]
    panels += [("shortwave heating rate", 2, "K d-1"), ("longwave heating rate", 3, "K d-1")]
    for ax, (title, i, units) in zip(axes, panels, strict=True):
        for name, fluxes in predictions.items():
            if i < 2:
                error = fluxes[..., 2 * i : 2 * i + 2] - val.y[..., 2 * i : 2 * i + 2]
                ax.plot(np.sqrt(np.mean(error**2, axis=(0, 2))), half_p, label=name)
            else:
                error = heating_rates(fluxes, val.pressure)[..., i - 2] - truth_hr[..., i - 2]
                ax.plot(np.sqrt(np.mean(error**2, axis=0)), full_p, label=name)
        ax.set_xscale("log")
        ax.set_title(f"{title} RMSE")
        ax.set_xlabel(f"RMSE ({units})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pressure (hPa)")
    axes[0].set_yscale("log")
    axes[0].invert_yaxis()
    axes[0].legend()
    fig.tight_layout()
    log_figure(ctx, fig, "error_profiles")


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    m, batch = cfg.model, cfg.train.batch_size
    keras.utils.set_random_seed(cfg.train.seed)  # Python, NumPy and TensorFlow
    rng = np.random.default_rng(cfg.train.seed)

    dataset = dataset_of(ctx)
    files = pairs(sorted(dataset.files))
    n_val = split_count(len(files), cfg.dataset.validation_fraction, "pairs of files")
    with timer.phase("read"):
        train = join([read_pair(dataset, *pair) for pair in files[:-n_val]])
        val = join([read_pair(dataset, *pair) for pair in files[-n_val:]])
    levels = train.x.shape[1] - 1
    model = build_model(m, train.x.shape[-1], levels)
    print(
        f"data: {len(train)} training and {len(val)} validation columns of {levels} levels, "
        f"{train.x.shape[-1]} inputs per half level, model {model.name} ({model.count_params()} weights)",
        flush=True,
    )
    x_mean, x_std = standardisation(train.x, (0, 1))
    y_mean, y_std = train.y.mean(axis=(0, 1)), train.y.std(axis=(0, 1)) + 1e-6
    net = np.stack([train.y[..., 0] - train.y[..., 1], train.y[..., 2] - train.y[..., 3]], axis=-1)
    absorbed_std = np.diff(net, axis=1).std(axis=(0, 1)) + 1e-6  # per band (sw, lw)

    def normalised(columns: Columns) -> np.ndarray:
        return ((columns.x - x_mean) / x_std).astype(np.float32)

    x_train, x_val = normalised(train), normalised(val)
    y_train = ((train.y - y_mean) / y_std).astype(np.float32)
    scale = tf.constant(y_std, tf.float32)
    offset = tf.constant(y_mean, tf.float32)
    absorbed_scale = tf.constant(absorbed_std, tf.float32)

    def loss_of(prediction: Any, target: Any) -> Any:
        error = prediction - target
        flux = tf.reduce_mean(tf.abs(error) if m.loss == "mae" else tf.square(error))
        if not m.hr_weight:
            return flux
        # the heating rate times the layer's mass: the net flux each layer absorbs (W m-2); weighted so,
        # the thin layers aloft (a heating rate per W m-2 a thousand times the surface's) do not swamp the rest
        fluxes, truth = prediction * scale + offset, target * scale + offset
        net = tf.stack([fluxes[..., 0] - fluxes[..., 1], fluxes[..., 2] - fluxes[..., 3]], axis=-1)
        net_true = tf.stack([truth[..., 0] - truth[..., 1], truth[..., 2] - truth[..., 3]], axis=-1)
        absorbed = ((net[:, 1:] - net[:, :-1]) - (net_true[:, 1:] - net_true[:, :-1])) / absorbed_scale
        hr_term = tf.reduce_mean(tf.abs(absorbed) if m.loss == "mae" else tf.square(absorbed))
        return flux + m.hr_weight * hr_term

    optimizer = make_optimizer(m.optimizer, m.learning_rate, m.weight_decay)
    optimizer.build(model.trainable_variables)
    # graphs for speed (the first epoch's phases include tracing them); the tape records the forward
    # graph, so forward, backward and step stay apart
    forward = tf.function(lambda x, y: loss_of(model(x, training=True), y))
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    step = tf.function(
        lambda grads: optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    )
    steps = cfg.train.steps_per_epoch or math.ceil(len(train) / batch)

    def validate() -> np.ndarray:
        out = [predict(x_val[i : i + 256]).numpy() for i in range(0, len(val), 256)]
        return np.concatenate(out) * y_std + y_mean

    reference = {
        **skill(mean_profile(train, len(val)), val, "val_meanprofile"),
        **skill(linear_per_level(train, val), val, "val_linear"),
    }
    metrics: dict[str, float] = {}
    fluxes = np.zeros_like(val.y)
    for epoch in range(cfg.train.epochs):
        order = np.resize(rng.permutation(len(train)), steps * batch)
        losses = []
        for i in range(steps):
            with timer.phase("io"):
                index = np.sort(order[i * batch : (i + 1) * batch])
                inputs, target = x_train[index], y_train[index]
            with tf.GradientTape() as tape:
                with _phase(timer, "forward"):
                    loss = forward(inputs, target)
            with _phase(timer, "backward"):
                gradients = tape.gradient(loss, model.trainable_variables)
            with _phase(timer, "step"):
                step(gradients)
            losses.append(float(loss))
            timer.count("samples", len(index))
        with timer.phase("validation"):
            fluxes = validate()
            metrics = {"loss": float(np.mean(losses)), **skill(fluxes, val, "val"), **reference}
        ctx.end_epoch(epoch, metrics)
        check_finite(metrics, epoch)
    for name in ("meanprofile", "linear"):
        verdicts = []
        for what, units in (("flux", "W m-2"), ("hr", "K d-1")):
            mine, theirs = metrics[f"val_{what}_rmse"], metrics[f"val_{name}_{what}_rmse"]
            verdict = "beats" if mine < theirs else "does not beat"
            verdicts.append(f"{what} RMSE {mine:.4g} vs {theirs:.4g} {units} ({verdict})")
        print(f"{name} baseline: {'; '.join(verdicts)}", flush=True)
    plot_profiles(
        ctx,
        val,
        {
            model.name: fluxes,
            "mean profile": mean_profile(train, len(val)),
            "linear per level": linear_per_level(train, val),
        },
    )
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.weights.h5"
    model.save_weights(weights)
    ctx.log_artifact(weights)
    return metrics
