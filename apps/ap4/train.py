"""AP4 training: corrects ENS-10 ensemble forecasts (PyTorch MLP or U-Net, CRPS loss).

The samples are the ensemble mean and spread of each variable at the target's level and lead
time; the model turns them into a Gaussian forecast ``N(mu, sigma^2)`` of the ERA5 truth
(``mu = mean + a * spread``, ``sigma = exp(b) * spread``) and trains on its CRPS, as the ENS-10
baselines do. With ``loader.preprocessed: true`` (the default) the NetCDF files are first turned
into normalised arrays (``maelstrom data preprocess``; skipped when already done) and memory-mapped;
otherwise every step reads and normalises the NetCDF files. The last years validate; the raw
ensemble's CRPS (``val_crps_ensemble``) is the score to beat.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from maelstrom_run.data.preprocess import (
    NetCDFENS10,
    PreprocessedENS10,
    compute_stats,
    default_output,
    plan,
    preprocess,
)
from maelstrom_run.tracking.context import RunContext
from maelstrom_run.tracking.timer import PhaseTimer

from ..common import seed_all
from .model import PointMLP, UNet, correct, crps_gaussian, location_features

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_model(m: Any, channels: int) -> torch.nn.Module:
    if m.loss != "crps":
        raise ValueError(f"model.loss: AP4 trains on the CRPS; got {m.loss!r} (set model.loss=crps)")
    if m.arch == "mlp":
        return PointMLP(channels, [int(h) for h in m.hidden])
    if m.arch == "unet":
        return UNet(channels, m.filters, m.levels, m.kernel_size, m.dropout)
    raise ValueError(
        f"model.arch: AP4 has an MLP (model=ap4_mlp) and a U-Net (model=ap4_unet), not {m.arch!r}"
    )


def open_data(cfg: Any, cache_dir: Any) -> tuple[Any, Any, dict[str, float]]:
    """``(train, validation, info)`` loaders as ``loader.preprocessed`` asks; preprocesses when needed."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    p = plan(config, cache_dir)
    output = default_output(p, cache_dir)
    start = time.perf_counter()
    if cfg.loader.get("preprocessed", False):
        result = preprocess(p, output)
        info = {"preprocess_s": time.perf_counter() - start, "preprocessed_samples": float(result.written)}
        return PreprocessedENS10(output, "train"), PreprocessedENS10(output, "validation"), info
    stats = compute_stats(p, output)
    info = {"statistics_s": time.perf_counter() - start}
    return NetCDFENS10(p, stats, "train"), NetCDFENS10(p, stats, "validation"), info


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: Any, location: torch.Tensor, n_in: int, batch: int, device: torch.device
) -> dict[str, float]:
    """Mean CRPS of the model and of the raw ensemble, and the RMSE of the corrected mean."""
    model.eval()
    crps = crps_raw = squared = 0.0
    count = 0
    buffer = None
    for start in range(0, len(data), batch):
        buffer = data.batch(range(start, min(start + batch, len(data))), out=buffer)
        x = torch.from_numpy(buffer).to(device)
        truth, mean, spread = x[:, n_in], x[:, n_in + 1], x[:, n_in + 2]
        mu, sigma = correct(model(x[:, :n_in], location), mean, spread)
        crps += crps_gaussian(mu, sigma, truth).sum().item()
        crps_raw += crps_gaussian(mean, spread + 1e-6, truth).sum().item()
        squared += ((mu - truth) ** 2).sum().item()
        count += truth.numel()
    return {
        "val_crps": crps / count,
        "val_crps_ensemble": crps_raw / count,
        "val_rmse": math.sqrt(squared / count),
    }


def run_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    order: np.ndarray,
    batch: int,
    location: torch.Tensor,
    points: int | None,
    rng: np.random.Generator,
    timer: PhaseTimer,
    device: torch.device,
) -> float:
    """One pass over ``order`` (positions in ``data``) in batches; returns the summed training CRPS."""
    if device.type == "cuda":  # GPU kernels are counted in the phase that queued them
        timer.synchronize = partial(torch.cuda.synchronize, device)
    phase = timer.phase
    n_in = len(data.channels) - 3
    grid = data.shape[1] * data.shape[2]
    model.train()
    loss_sum, buffer = 0.0, None
    for start in range(0, len(order), batch):
        with phase("io"):
            index = order[start : start + batch]
            before = data.bytes_read
            if points:
                chosen = np.sort(rng.choice(grid, size=points, replace=False))
                buffer = data.batch_points(index, chosen, out=buffer)
                where = location.reshape(3, -1)[:, torch.from_numpy(chosen).to(device)]
            else:
                buffer = data.batch(index, out=buffer)
                where = location
            x = torch.from_numpy(buffer).to(device)
            timer.count("bytes_read", data.bytes_read - before)
        with phase("forward"):
            mu, sigma = correct(model(x[:, :n_in], where), x[:, n_in + 1], x[:, n_in + 2])
            loss = crps_gaussian(mu, sigma, x[:, n_in]).mean()
        with phase("backward"):
            loss.backward()
        with phase("step"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.item() * len(index)
        timer.count("samples", len(index))
    return loss_sum


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    m, batch = cfg.model, cfg.train.batch_size
    rng = seed_all(cfg.train.seed)  # Python, NumPy (global and the shuffling generator)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, cfg.loader.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train, validation, info = open_data(cfg, ctx.cache_dir)
    n_in = len(train.channels) - 3
    what = "memory-mapped arrays" if isinstance(train, PreprocessedENS10) else "NetCDF files"
    print(
        f"data: {len(train)} training and {len(validation)} validation samples of "
        f"{train.shape[1]}x{train.shape[2]} points, {n_in} inputs, from {what} "
        f"({', '.join(f'{k} {v:.3g}' for k, v in info.items())})",
        flush=True,
    )
    model = build_model(m, n_in).to(device)
    optimizer = OPTIMIZERS[m.optimizer](model.parameters(), lr=m.learning_rate, weight_decay=m.weight_decay)
    location = location_features(torch.from_numpy(train.latitude), torch.from_numpy(train.longitude)).to(
        device
    )
    grid = train.shape[1] * train.shape[2]
    points = m.get("points") if m.arch == "mlp" else None
    points = min(int(points), grid) if points else None
    steps = cfg.train.steps_per_epoch or math.ceil(len(train) / batch)

    metrics: dict[str, float] = {}
    for epoch in range(cfg.train.epochs):
        order = rng.permutation(len(train)) if cfg.loader.shuffle else np.arange(len(train))
        order = np.resize(order, steps * batch)  # repeats the epoch's order if steps_per_epoch asks for more
        loss_sum = run_epoch(model, optimizer, train, order, batch, location, points, rng, timer, device)
        with timer.phase("validation"):
            scores = evaluate(model, validation, location, n_in, batch, device)
        metrics = {"loss": loss_sum / order.size, **scores}
        ctx.end_epoch(epoch, metrics)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"the training loss is {metrics['loss']} in epoch {epoch}")
    for data in (train, validation):
        if isinstance(data, NetCDFENS10):
            data.close()

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.pt"
    torch.save(model.state_dict(), weights)
    ctx.log_artifact(weights)
    return metrics
