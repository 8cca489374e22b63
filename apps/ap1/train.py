"""AP1 training: a U-Net corrects gridded 2 m temperature forecasts (TensorFlow, Keras 3).

The data are one NetCDF file per forecast run in the climetlab-maelstrom-yr layout. Like the
MET Norway benchmark (``predict_diff``), the model learns the correction from the raw forecast
``air_temperature_2m`` to the analysis ``target_mean``, on random patches of the training runs.
It is validated on tiles of the last runs: a split in time, as consecutive runs are alike.
"""

from __future__ import annotations

import glob
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import tensorflow as tf

from maelstrom_run.data.samples import ensure_ap1
from maelstrom_run.tracking.context import RunContext
from maelstrom_run.tracking.timer import PhaseTimer

from .model import build_unet, make_optimizer

#: The raw forecast the model corrects.
BASE = "air_temperature_2m"
FEATURES = ("static_predictors", "leadtime")

#: One training or validation sample: (file, leadtime index, y0, x0) of a patch.
Patch = tuple[int, int, int, int]
Stats = dict[str, tuple[np.ndarray, np.ndarray]]


class Fields:
    """Patches of the forecast fields of some runs, read with h5py and turned into model inputs.

    Inputs are the predictors, then the static predictors and the leadtime (in days) when
    ``features`` names them, normalised with ``stats`` when given. The target is ``target_mean``
    minus the raw forecast. Every read opens its file, so reader threads need not coordinate.
    """

    def __init__(self, files: Sequence[Path], features: Iterable[str], stats: Stats | None) -> None:
        features = list(features)
        if unknown := sorted(set(features) - set(FEATURES)):
            raise ValueError(f"loader.features: unknown {unknown}; valid are {', '.join(FEATURES)}")
        self.files = list(files)
        with h5py.File(self.files[0]) as f:
            names = list(f["predictor"].asstr()[:])
            self.leadtimes = f["leadtime"][:]
            self.shape = f["predictors"].shape  # (leadtime, y, x, predictor)
            static = f["static_predictors"][:] if "static_predictors" in features else None
        if BASE not in names:
            raise ValueError(f"{self.files[0]}: AP1 corrects the raw forecast, predictor {BASE!r} is missing")
        self.base = names.index(BASE)
        self.stats = stats
        self.static = None if static is None else self._normalise("static_predictors", static)
        self.with_leadtime = "leadtime" in features
        self.channels = self.shape[-1] + (0 if static is None else static.shape[-1]) + self.with_leadtime

    def _normalise(self, name: str, values: np.ndarray) -> np.ndarray:
        if self.stats is None:
            return values
        mean, std = self.stats[name]
        return (values - mean) / std

    def read(self, patch: Patch, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
        """``(inputs[y, x, channel], target[y, x], bytes read)`` of one patch."""
        index, lead, y0, x0 = patch
        window = slice(y0, y0 + size[0]), slice(x0, x0 + size[1])
        with h5py.File(self.files[index]) as f:
            raw = f["predictors"][(lead, *window)]
            target = f["target_mean"][(lead, *window)]
        channels = [self._normalise("predictors", raw)]
        if self.static is not None:
            channels.append(self.static[window])
        if self.with_leadtime:
            channels.append(np.full((*size, 1), self.leadtimes[lead] / 24))
        inputs = np.concatenate(channels, axis=-1).astype(np.float32)
        return inputs, target - raw[..., self.base], raw.nbytes + target.nbytes

    def batch(self, patches: Sequence[Patch], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
        reads = [self.read(patch, size) for patch in patches]
        return np.stack([r[0] for r in reads]), np.stack([r[1] for r in reads]), sum(r[2] for r in reads)

    def tiles(self, field: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
        """The whole tiles of ``size`` of a (run, leadtime) field as a batch; the edges left over are not."""
        rows, cols = self.shape[1] // size[0], self.shape[2] // size[1]
        inputs, target, nbytes = self.read((*field, 0, 0), (rows * size[0], cols * size[1]))

        def split(a: np.ndarray) -> np.ndarray:
            a = a.reshape(rows, size[0], cols, size[1], *a.shape[2:]).swapaxes(1, 2)
            return a.reshape(rows * cols, *size, *a.shape[4:])

        return split(inputs), split(target), nbytes


def _files(cfg: Any, cache_dir: Path) -> list[Path]:
    dataset = cfg.dataset
    if dataset.source == "sample":
        if cfg.train.tier not in dataset.tiers:
            raise ValueError(f"dataset.tiers: no sizes for the tier {cfg.train.tier!r}")
        # the data stay the same when a sweep varies train.seed
        return ensure_ap1(cache_dir, dataset.tiers[cfg.train.tier], seed=0)
    if not dataset.path:
        raise ValueError("dataset.path: set it to a directory or glob of NetCDF files for source 'files'")
    path = Path(dataset.path).expanduser()
    pattern = str(path / "*.nc") if path.is_dir() else str(path)
    files = sorted(Path(p) for p in glob.glob(pattern))
    if len(files) < 2:
        raise FileNotFoundError(f"dataset.path: {pattern} matches {len(files)} file(s), AP1 needs at least 2")
    return files


def _statistics(files: Sequence[Path], max_files: int = 8) -> tuple[Stats, int]:
    """Mean and standard deviation per predictor from a subsample of ``files``; and the bytes read."""
    values, nbytes = [], 0
    for path in files[:: math.ceil(len(files) / max_files)]:
        with h5py.File(path) as f:
            step = max(1, max(f["predictors"].shape[1:3]) // 128)
            values.append(f["predictors"][:, ::step, ::step, :].reshape(-1, f["predictors"].shape[-1]))
            static = f["static_predictors"][:]
        nbytes += values[-1].nbytes + static.nbytes
    arrays = {"predictors": np.concatenate(values), "static_predictors": static.reshape(-1, static.shape[-1])}
    return {k: (v.mean(axis=0), np.maximum(v.std(axis=0), 1e-6)) for k, v in arrays.items()}, nbytes


def _prefetch(fn: Callable[[Any], Any], items: Iterable[Any], threads: int, depth: int) -> Iterator[Any]:
    """``fn(item)`` for each item in order, computed by ``threads`` workers up to ``depth`` items ahead."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _plan(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    files: int,
    size: tuple[int, int],
    steps: int,
    batch: int,
    shuffle: bool,
) -> list[list[Patch]]:
    """``steps`` batches of patches at random places, taking the (run, leadtime) fields in turn."""
    leads, ny, nx = shape[:3]
    which = np.arange(steps * batch) % (files * leads)
    if shuffle:
        rng.shuffle(which)
    y0 = rng.integers(0, ny - size[0] + 1, which.size)
    x0 = rng.integers(0, nx - size[1] + 1, which.size)
    patches = [
        (int(w // leads), int(w % leads), int(y), int(x)) for w, y, x in zip(which, y0, x0, strict=True)
    ]
    return [patches[i : i + batch] for i in range(0, len(patches), batch)]


@contextmanager
def _phase(timer: PhaseTimer, name: str) -> Iterator[None]:
    """``timer.phase`` that waits for the kernels queued on a GPU, so their time lands in the phase."""
    with timer.phase(name):
        yield
        tf.test.experimental.sync_devices()


def _loss(name: str, target: Any, prediction: Any) -> Any:
    error = prediction - target
    return tf.reduce_mean(tf.abs(error) if name == "mae" else tf.square(error))


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    loader = cfg.loader
    keras.utils.set_random_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)

    files = _files(cfg, ctx.cache_dir)
    n_val = min(len(files) - 1, max(1, round(len(files) * cfg.dataset.validation_fraction)))
    stats = None
    if loader.normalise:
        stats, nbytes = _statistics(files[:-n_val])
        timer.count("bytes_read", nbytes)
    train = Fields(files[:-n_val], loader.features, stats)
    val = Fields(files[-n_val:], loader.features, stats)

    leads, ny, nx, _ = train.shape
    multiple = 2**cfg.model.levels
    if loader.patch_size and (loader.patch_size % multiple or loader.patch_size > min(ny, nx)):
        raise ValueError(
            f"loader.patch_size: {loader.patch_size} must divide by 2**model.levels = {multiple} "
            f"and fit the {ny}x{nx} grid"
        )
    size = (loader.patch_size,) * 2 if loader.patch_size else (ny - ny % multiple, nx - nx % multiple)
    batch_size = cfg.train.batch_size
    samples = len(train.files) * leads * (ny // size[0]) * (nx // size[1])  # an epoch covers the grid once
    steps = cfg.train.steps_per_epoch or math.ceil(samples / batch_size)
    val_fields = [(i, lead) for i in range(len(val.files)) for lead in range(leads)]

    m = cfg.model
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
    read_train = partial(train.batch, size=size)
    read_val = partial(val.tiles, size=size)

    def validate() -> dict[str, float]:
        absolute = square = raw = count = 0.0
        for inputs, target, nbytes in _prefetch(read_val, val_fields, loader.threads, loader.prefetch):
            for i in range(0, len(inputs), batch_size):
                error = predict(inputs[i : i + batch_size]).numpy() - target[i : i + batch_size]
                absolute += np.abs(error).sum()
                square += np.square(error).sum()
            raw += np.abs(target).sum()
            count += target.size
            timer.count("bytes_read", nbytes)
        mae = absolute / count
        val_loss = mae if m.loss == "mae" else square / count
        return {"val_loss": float(val_loss), "val_mae": float(mae), "val_mae_raw": float(raw / count)}

    metrics: dict[str, float] = {}
    for epoch in range(cfg.train.epochs):
        plan = _plan(rng, train.shape, len(train.files), size, steps, batch_size, loader.shuffle)
        losses = []
        with closing(_prefetch(read_train, plan, loader.threads, loader.prefetch)) as batches:
            for _ in plan:
                with timer.phase("io"):
                    inputs, target, nbytes = next(batches)
                with tf.GradientTape() as tape:
                    with _phase(timer, "forward"):
                        loss = _loss(m.loss, target, forward(inputs))
                with _phase(timer, "backward"):
                    gradients = tape.gradient(loss, model.trainable_variables)
                with _phase(timer, "step"):
                    step(gradients)
                losses.append(float(loss))
                timer.count("samples", len(inputs))
                timer.count("bytes_read", nbytes)
        with timer.phase("validation"):
            metrics = {"loss": float(np.mean(losses)), **validate()}
        ctx.end_epoch(epoch, metrics)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"the training loss is {metrics['loss']} in epoch {epoch}")

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.weights.h5"
    model.save_weights(weights)
    ctx.log_artifact(weights)
    return metrics
