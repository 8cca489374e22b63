"""What the apps share: their files, one-line user errors, seeds, scores, plots, a PyTorch epoch.

Frameworks are imported inside the functions that need them, so an app that uses TensorFlow
never imports PyTorch and the other way round.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data import load_dataset
from maelstrom_run.data.cache import Cache
from maelstrom_run.data.datasets import Dataset
from maelstrom_run.tracking.context import RunContext
from maelstrom_run.tracking.timer import PhaseTimer


def dataset_of(ctx: RunContext) -> Dataset:
    """The files of ``cfg.dataset`` for ``train.tier``, generated, found or fetched as its source says.
    The data stay the same when a sweep varies ``train.seed`` (samples are generated with seed 0)."""
    return load_dataset(ctx.cfg.dataset, str(ctx.cfg.train.tier), cache=Cache(ctx.cache_dir))


def not_one_of(key: str, value: Any, valid: Iterable[Any]) -> ConfigError:
    """``key: VALUE is not there; valid: A, B`` (the one line a user sees)."""
    return ConfigError(f"{key}: {value!r} is not there; valid: {', '.join(map(str, valid))}")


def seed_all(seed: int) -> np.random.Generator:
    """Seed Python's and NumPy's global generators; returns a NumPy generator of the same seed.
    The framework's own seed is set by the app (``torch.manual_seed``, ``keras.utils.set_random_seed``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return np.random.default_rng(seed)


def scores(prediction: np.ndarray, truth: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}_rmse``, ``_mae`` and ``_bias`` (prediction minus truth) over every element."""
    error = np.asarray(prediction, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return {
        f"{prefix}_rmse": float(np.sqrt(np.mean(error**2))),
        f"{prefix}_mae": float(np.mean(np.abs(error))),
        f"{prefix}_bias": float(np.mean(error)),
    }


def figure() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (runs on cluster nodes without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_figure(ctx: RunContext, fig: Any, name: str) -> Path:
    """Save ``fig`` as ``<run_dir>/plots/<name>.png`` and log it as an artefact under ``plots``."""
    plt = figure()
    directory = ctx.run_dir / "plots"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    ctx.log_artifact(path, "plots")
    return path


def split_count(total: int, fraction: float, what: str) -> int:
    """How many of ``total`` items (files, times) validate: ``fraction`` of them, at least one, and
    at least one left to train on."""
    if total < 2:
        raise ConfigError(f"train.tier: {total} {what}, need at least 2 (training and validation)")
    return min(total - 1, max(1, round(total * fraction)))


def torch_device(timer: PhaseTimer) -> Any:
    """The GPU when there is one, else the CPU; on a GPU the timer waits for the queued kernels at the
    end of each phase, so their time lands in the phase that queued them."""
    import functools

    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda")
    timer.synchronize = functools.partial(torch.cuda.synchronize, device)
    return device


def torch_optimizer(m: Any, parameters: Iterable[Any]) -> Any:
    """``model.optimizer`` (adam, adamw or sgd) over ``parameters`` with the model's learning rate and
    weight decay."""
    import torch

    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    return kinds[m.optimizer](parameters, lr=m.learning_rate, weight_decay=m.weight_decay)


def torch_epoch(
    model: Any,
    optimizer: Any,
    batches: Sequence[Callable[[], tuple[Any, Any]]],
    loss_fn: Callable[[Any, Any], Any],
    timer: PhaseTimer,
) -> float:
    """One pass of PyTorch training; each of ``batches`` returns ``(inputs, target)`` (timed as io).
    Returns the mean training loss over the batches."""
    model.train()
    total = 0.0
    for load in batches:
        with timer.phase("io"):
            inputs, target = load()
        with timer.phase("forward"):
            loss = loss_fn(model(inputs), target)
        with timer.phase("backward"):
            loss.backward()
        with timer.phase("step"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.item())
        timer.count("samples", len(inputs))
    return total / max(1, len(batches))


def check_finite(metrics: dict[str, float], epoch: int) -> None:
    import math

    if not math.isfinite(metrics["loss"]):
        raise FloatingPointError(f"the training loss is {metrics['loss']} in epoch {epoch}")
