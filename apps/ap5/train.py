"""AP5 training: downscale 2 m temperature from the coarse input to the fine grid (PyTorch).

The inputs are the coarse fields interpolated to the fine grid (``dataset.inputs``: ``t2m_in``,
``z_in``) and the fine grid's surface (``dataset.static``: ``z_tar``); the model predicts the
fine field (``dataset.target``) as a correction of ``dataset.baseline`` (``t2m_in``), the
interpolated coarse field itself, which is also the score to beat. ``model=ap5_unet`` trains a
U-Net on the MAE (or MSE); ``model=ap5_wgan`` trains the same U-Net as the generator of a
Wasserstein GAN with gradient penalty, with a reconstruction term that keeps it near the truth.
The last months validate (a split in time). Skill: RMSE, bias and the gradient ratio (mean
magnitude of the predicted field's horizontal gradient over the target's: 1 is the right spatial
variability, below 1 too smooth), for the model and for the baseline on the same fields.
"""

from __future__ import annotations

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
from .model import Critic, generator, gradient_penalty


@dataclass
class Split:
    """Samples of one split: ``inputs`` (n, channels, y, x) normalised, ``baseline`` and ``target``
    (n, y, x) in the target's units."""

    inputs: np.ndarray
    baseline: np.ndarray
    target: np.ndarray


def read(dataset: Any, files: list[Path], d: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The variables of ``dataset.inputs/static/target/baseline`` from ``files``, joined along time;
    static fields from their first time. ``info``: the target's units, grid coordinates and the number
    of times of each file."""
    wanted = {"dataset.inputs": list(d.inputs), "dataset.static": list(d.static)}
    wanted |= {"dataset.target": [d.target], "dataset.baseline": [d.baseline]}
    parts: dict[str, list[np.ndarray]] = {name: [] for names in wanted.values() for name in names}
    info: dict[str, Any] = {"times": []}
    for path in files:
        ds = dataset.open(path)
        for key, names in wanted.items():
            for name in names:
                if name not in ds.data_vars:
                    raise not_one_of(f"{key} ({Path(path).name})", name, sorted(map(str, ds.data_vars)))
        for name in parts:
            parts[name].append(np.asarray(ds[name].values, dtype=np.float32))
        info["times"].append(int(ds[d.target].shape[0]))
        if "units" not in info:
            y, x = ds[d.target].dims[-2:]
            units = str(ds[d.target].attrs.get("units", ""))
            info.update(units=units, y=(str(y), ds[y].values), x=(str(x), ds[x].values))
        ds.close()
    arrays = {
        name: (values[0][0] if values[0].ndim == 3 else values[0])
        if name in d.static
        else np.concatenate(values)
        for name, values in parts.items()
    }
    return arrays, info


def check_grid(levels: int, ny: int, nx: int) -> None:
    """Each of the U-Net's ``model.levels`` poolings halves the grid; at least 2 points must be left."""
    most = max(0, int(np.log2(min(ny, nx))) - 1)
    if levels < 1 or 2 ** (levels + 1) > min(ny, nx):
        raise ConfigError(
            f"model.levels: {levels} poolings do not fit the {ny} x {nx} grid of the data; valid: 1 to {most}"
        )


def prepare(arrays: dict[str, np.ndarray], d: Any, n_train: int) -> tuple[Split, Split, dict[str, float]]:
    """Normalise with the training times' statistics; the model's target is the normalised
    difference between the fine field and the baseline."""
    times = arrays[d.target].shape[0]
    channels = []
    for name in d.inputs:
        field = arrays[name]
        mean, std = field[:n_train].mean(), field[:n_train].std() + 1e-6
        channels.append((field - mean) / std)
    for name in d.static:
        field = arrays[name]
        channels.append(np.broadcast_to((field - field.mean()) / (field.std() + 1e-6), (times, *field.shape)))
    inputs = np.stack(channels, axis=1).astype(np.float32)
    residual = (arrays[d.target] - arrays[d.baseline])[:n_train]
    stats = {"residual_mean": float(residual.mean()), "residual_std": float(residual.std() + 1e-6)}
    train = Split(inputs[:n_train], arrays[d.baseline][:n_train], arrays[d.target][:n_train])
    val = Split(inputs[n_train:], arrays[d.baseline][n_train:], arrays[d.target][n_train:])
    return train, val, stats


def gradient_ratio(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean magnitude of the horizontal gradient of ``prediction`` over that of ``truth``
    (forward differences per grid step over the last two axes)."""

    def magnitude(field: np.ndarray) -> float:
        dy = np.diff(field, axis=-2)[..., :, :-1]
        dx = np.diff(field, axis=-1)[..., :-1, :]
        return float(np.mean(np.hypot(dy, dx)))

    return magnitude(prediction) / max(magnitude(truth), 1e-12)


def skill(prediction: np.ndarray, truth: np.ndarray, prefix: str) -> dict[str, float]:
    """RMSE, MAE, bias and gradient ratio of ``prediction`` against ``truth``."""
    out = scores(prediction, truth, prefix)
    out[f"{prefix}_gradient_ratio"] = gradient_ratio(prediction, truth)
    return out


def baseline_skill(val: Split) -> dict[str, float]:
    """The interpolated coarse input's skill on the validation fields: the score to beat."""
    return skill(val.baseline, val.target, "val_baseline")


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, stats: dict[str, float], batch: int) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(split.inputs), batch):
        x = torch.from_numpy(split.inputs[start : start + batch]).to(device)
        out.append(model(x)[:, 0].cpu().numpy())
    correction = np.concatenate(out) * stats["residual_std"] + stats["residual_mean"]
    return split.baseline + correction


def _residual(split: Split, index: np.ndarray, stats: dict[str, float]) -> torch.Tensor:
    values = (split.target[index] - split.baseline[index] - stats["residual_mean"]) / stats["residual_std"]
    return torch.from_numpy(values[:, None].astype(np.float32))


def wgan_epoch(
    gen: torch.nn.Module,
    critic: Critic,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    loaders: list[Any],
    m: Any,
    timer: Any,
) -> float:
    """One pass of WGAN-GP training: ``model.critic_steps`` critic updates per generator update;
    the generator's loss is its reconstruction error times ``recon_weight`` minus the critic's score."""
    gen_opt, critic_opt = optimizers
    gen.train()
    total = 0.0
    recon = torch.nn.functional.l1_loss if m.loss == "mae" else torch.nn.functional.mse_loss
    for load in loaders:
        with timer.phase("io"):
            inputs, real = load()
        for _ in range(m.critic_steps):
            with timer.phase("forward"):
                with torch.no_grad():
                    fake = gen(inputs)
                critic_loss = critic(inputs, fake).mean() - critic(inputs, real).mean()
                critic_loss = critic_loss + m.gp_weight * gradient_penalty(critic, inputs, real, fake)
            with timer.phase("backward"):
                critic_loss.backward()
            with timer.phase("step"):
                critic_opt.step()
                critic_opt.zero_grad(set_to_none=True)
        with timer.phase("forward"):
            fake = gen(inputs)
            reconstruction = recon(fake, real)
            loss = m.recon_weight * reconstruction - critic(inputs, fake).mean()
        with timer.phase("backward"):
            loss.backward()
        with timer.phase("step"):
            gen_opt.step()
            gen_opt.zero_grad(set_to_none=True)
            critic_opt.zero_grad(set_to_none=True)  # the generator's backward reached the critic too
        total += float(reconstruction.item())
        timer.count("samples", len(inputs))
    return total / max(1, len(loaders))


def plot_fields(ctx: RunContext, val: Split, prediction: np.ndarray, info: dict[str, Any]) -> None:
    """The last validation time: baseline, prediction, target and the prediction's error, in the
    target's units on the grid's coordinates."""
    plt = figure()
    (yname, y), (xname, x) = info["y"], info["x"]
    units = info["units"] or "K"
    fields = [val.baseline[-1], prediction[-1], val.target[-1]]
    low, high = min(f.min() for f in fields), max(f.max() for f in fields)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    titles = ["baseline (interpolated input)", "model", "target"]
    for ax, field, title in zip(axes, fields, titles, strict=False):
        image = ax.pcolormesh(x, y, field, vmin=low, vmax=high, cmap="RdYlBu_r", shading="auto")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label=f"2 m temperature ({units})")
    error = prediction[-1] - val.target[-1]
    limit = float(np.abs(error).max()) or 1.0
    image = axes[3].pcolormesh(x, y, error, vmin=-limit, vmax=limit, cmap="RdBu_r", shading="auto")
    axes[3].set_title("model - target")
    fig.colorbar(image, ax=axes[3], label=f"error ({units})")
    for ax in axes:
        ax.set_xlabel(f"{xname} (degrees)")
        ax.set_ylabel(f"{yname} (degrees)")
    fig.tight_layout()
    log_figure(ctx, fig, "downscaling_fields")


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    m, d, batch = cfg.model, cfg.dataset, cfg.train.batch_size
    if m.arch not in ("unet", "wgan"):
        raise not_one_of("model.arch", m.arch, ["unet (model=ap5_unet)", "wgan (model=ap5_wgan)"])
    rng = seed_all(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, cfg.loader.threads))

    dataset = dataset_of(ctx)
    files = sorted(dataset.files)
    n_val_files = split_count(len(files), d.validation_fraction, "monthly files")
    with timer.phase("read"):
        arrays, info = read(dataset, files, d)
    n_train = sum(info["times"][:-n_val_files])
    ny, nx = arrays[d.target].shape[-2:]
    check_grid(m.levels, ny, nx)
    train, val, stats = prepare(arrays, d, n_train)
    if info.get("units"):  # the scores are in the target's units (the loss is on normalised values)
        ctx.units.update(dict.fromkeys(("rmse", "mae", "bias"), str(info["units"])))
    print(
        f"data: {len(train.inputs)} training and {len(val.inputs)} validation times of {ny}x{nx} points, "
        f"{train.inputs.shape[1]} input channels ({', '.join([*d.inputs, *d.static])})",
        flush=True,
    )
    device = torch_device(timer)
    model = generator(train.inputs.shape[1], m).to(device)
    optimizer = torch_optimizer(m, model.parameters())
    critic, critic_opt = None, None
    if m.arch == "wgan":
        critic = Critic(train.inputs.shape[1], m.critic_filters).to(device)
        # Adam with beta1 = 0 and 0.9 as for WGAN-GP
        critic_opt = torch.optim.Adam(critic.parameters(), lr=m.learning_rate, betas=(0.0, 0.9))
    loss_fn = torch.nn.functional.l1_loss if m.loss == "mae" else torch.nn.functional.mse_loss
    steps = cfg.train.steps_per_epoch or -(-len(train.inputs) // batch)
    reference = baseline_skill(val)

    def loader(index: np.ndarray) -> Any:
        return lambda: (
            torch.from_numpy(train.inputs[index]).to(device),
            _residual(train, index, stats).to(device),
        )

    metrics: dict[str, float] = {}
    prediction = val.baseline
    for epoch in range(cfg.train.epochs):
        order = np.resize(rng.permutation(len(train.inputs)), steps * batch)
        loaders = [loader(np.sort(order[i : i + batch])) for i in range(0, steps * batch, batch)]
        if critic is None:
            loss = torch_epoch(model, optimizer, loaders, loss_fn, timer)
        else:
            loss = wgan_epoch(model, critic, (optimizer, critic_opt), loaders, m, timer)
        with timer.phase("validation"):
            prediction = predict(model, val, stats, batch)
            metrics = {"loss": loss, **skill(prediction, val.target, "val"), **reference}
        ctx.end_epoch(epoch, metrics)
        check_finite(metrics, epoch)
    beats = metrics["val_rmse"] < metrics["val_baseline_rmse"]
    print(
        f"val_rmse {metrics['val_rmse']:.4g} {info['units']} vs the interpolated input's "
        f"{metrics['val_baseline_rmse']:.4g}: {'beats' if beats else 'does not beat'} the baseline",
        flush=True,
    )
    plot_fields(ctx, val, prediction, info)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.pt"
    torch.save(model.state_dict(), weights)
    ctx.log_artifact(weights)
    return metrics
