"""AP1 training: a U-Net corrects gridded 2 m temperature forecasts (TensorFlow, Keras 3).

The data are one NetCDF file per forecast run in the climetlab-maelstrom-yr layout. Like the
MET Norway benchmark (``predict_diff``), the model learns the correction from the raw forecast
``air_temperature_2m`` to the analysis ``target_mean``, on random patches of the training runs.
It is validated on tiles of the last runs: a split in time, as consecutive runs are alike.
Batches come from the gridded loader (:mod:`maelstrom_run.data.gridded`) through tf.data; what
it reads and delivers is counted (``count.bytes_read``, ``count.bytes_delivered``) every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maelstrom_run.data import gridded_tf, load_dataset
from maelstrom_run.data.cache import Cache
from maelstrom_run.data.gridded import GriddedLoader, GriddedOptions
from maelstrom_run.tracking.context import RunContext
from maelstrom_run.tracking.timer import PhaseTimer

from .model import build_unet, make_optimizer


def _files(cfg: Any, cache_dir: Path) -> list[Path]:
    """The forecast files of ``cfg.dataset`` for ``train.tier``: generated (``source: sample``), found
    (``files``: ``dataset.path``) or fetched into the cache (``remote``: a tier of ``dataset.remote``)."""
    dataset = load_dataset(cfg.dataset, str(cfg.train.tier), cache=Cache(cache_dir))
    # the data stay the same when a sweep varies train.seed (samples are generated with seed 0)
    files = sorted(dataset.files)
    if len(files) < 2:
        raise FileNotFoundError(
            f"dataset {dataset.name} ({dataset.source}, tier {dataset.tier}): {len(files)} file(s), "
            "AP1 needs at least 2 (training and validation runs)"
        )
    return files


@contextmanager
def _phase(timer: PhaseTimer, name: str) -> Iterator[None]:
    """``timer.phase`` that waits for the kernels queued on a GPU, so their time lands in the phase."""
    with timer.phase(name):
        yield
        tf.test.experimental.sync_devices()


def _loss(name: str, target: Any, prediction: Any) -> Any:
    error = prediction - target
    return tf.reduce_mean(tf.abs(error) if name == "mae" else tf.square(error))


#: CF units as the plots' axes write them.
_UNITS = {"celsius": "degC", "degree_celsius": "degC", "degrees_celsius": "degC", "kelvin": "K"}


def target_units(path: Path, variable: str, loss: str) -> dict[str, str]:
    """Units of the scores (from the target's ``units`` attribute) by metric family, for the plots."""
    import h5py

    with h5py.File(path, "r") as f:
        units = f[variable].attrs.get("units", b"") if variable in f else b""
    units = units.decode() if isinstance(units, bytes) else str(units)
    if not units:
        return {}
    units = _UNITS.get(units.strip().lower(), units)
    return {"mae": units, "mae_raw": units, "loss": units if loss == "mae" else f"{units}²"}


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    keras.utils.set_random_seed(cfg.train.seed)

    files = _files(cfg, ctx.cache_dir)
    n_val = min(len(files) - 1, max(1, round(len(files) * cfg.dataset.validation_fraction)))
    m = cfg.model
    batch_size = cfg.train.batch_size
    options = GriddedOptions.from_config(cfg.loader, batch_size, cfg.train.seed, multiple=2**m.levels)
    ctx.units.update(target_units(files[0], options.layout.target, m.loss))
    train = GriddedLoader(files[:-n_val], options)
    val = GriddedLoader(files[-n_val:], replace(options, shuffle=False), stats=train.stats)
    steps = cfg.train.steps_per_epoch or math.ceil(train.patches_per_pass / batch_size)
    train_batches = gridded_tf.dataset(train, steps)

    model = build_unet(train.channels, m.filters, m.levels, m.kernel_size, m.dropout)
    optimizer = make_optimizer(m.optimizer, m.learning_rate, m.weight_decay)
    optimizer.build(model.trainable_variables)
    # graphs for speed (the first epoch's phases include tracing them); the tape records the forward
    # graph, so forward, backward and step stay apart
    forward = tf.function(lambda inputs: model(inputs, training=True))
    predict = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    step = tf.function(
        lambda grads: optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    )

    def validate() -> dict[str, float]:
        absolute = square = raw = count = 0.0
        for inputs, target in val:
            error = predict(inputs).numpy() - target
            absolute += np.abs(error).sum()
            square += np.square(error).sum()
            raw += np.abs(target).sum()
            count += target.size
        mae = absolute / count
        val_loss = mae if m.loss == "mae" else square / count
        return {"val_loss": float(val_loss), "val_mae": float(mae), "val_mae_raw": float(raw / count)}

    metrics: dict[str, float] = {}
    for epoch in range(cfg.train.epochs):
        losses = []
        batches = iter(train_batches)
        for _ in range(steps):
            with timer.phase("io"):
                inputs, target = next(batches)
            with tf.GradientTape() as tape:
                with _phase(timer, "forward"):
                    loss = _loss(m.loss, target, forward(inputs))
            with _phase(timer, "backward"):
                gradients = tape.gradient(loss, model.trainable_variables)
            with _phase(timer, "step"):
                step(gradients)
            losses.append(float(loss))
            timer.count("samples", len(inputs))
        del batches  # ends the pass: the loader's threads stop
        with timer.phase("validation"):
            metrics = {"loss": float(np.mean(losses)), **validate()}
        counts = [train.take_counts(), val.take_counts()]
        for name in ("bytes_read", "bytes_delivered"):
            timer.count(name, sum(c[name] for c in counts))
        ctx.end_epoch(epoch, metrics)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"the training loss is {metrics['loss']} in epoch {epoch}")
    train.close()
    val.close()

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.weights.h5"
    model.save_weights(weights)
    ctx.log_artifact(weights)
    return metrics
