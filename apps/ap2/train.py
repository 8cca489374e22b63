"""AP2 training: classifies weather tweets as raining / not raining (PyTorch).

A small transformer encoder learns from scratch on a word-level vocabulary of the training
tweets, or a pretrained model (DeBERTa-v3) is fine-tuned when ``model.pretrained`` names its
local directory. The last ``validation_fraction`` of the tweets validates.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from maelstrom_run.data import load_dataset
from maelstrom_run.data.cache import Cache
from maelstrom_run.tracking.context import RunContext

from ..common import seed_all
from .model import Encoder, TweetClassifier, load_pretrained
from .text import WordTokenizer, read_tweets

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def _path(cfg: Any, cache_dir: Path) -> Path:
    dataset = cfg.dataset
    if dataset.source == "sample":
        if cfg.train.tier not in dataset.tiers:
            raise ValueError(f"dataset.tiers: no sizes for the tier {cfg.train.tier!r}")
    elif not dataset.path or not Path(dataset.path).expanduser().is_file():
        raise FileNotFoundError(f"dataset.path: {dataset.path!r} is not a CSV file (columns text, raining)")
    # through load_dataset, so the run records it as its input; samples are generated with seed 0,
    # so the data stay the same when a sweep varies train.seed
    return Path(load_dataset(dataset, str(cfg.train.tier), cache=Cache(cache_dir)).files[0])


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module, encode: Encoder, texts: list[str], labels: torch.Tensor, batch: int
) -> tuple[float, float]:
    """Mean cross entropy and accuracy."""
    model.eval()
    device = labels.device
    loss = correct = 0.0
    for start in range(0, len(texts), batch):
        logits = model(*(t.to(device) for t in encode(texts[start : start + batch])))
        target = labels[start : start + batch]
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()
    return loss / len(texts), correct / len(texts)


def main(ctx: RunContext) -> dict[str, float]:
    cfg, timer = ctx.cfg, ctx.timer
    m, batch = cfg.model, cfg.train.batch_size
    rng = seed_all(cfg.train.seed)  # Python, NumPy (global and the shuffling generator)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, cfg.loader.threads))

    path = _path(cfg, ctx.cache_dir)
    texts, labels = read_tweets(path)
    timer.count("bytes_read", path.stat().st_size)
    n_val = min(len(texts) - 1, max(1, round(len(texts) * cfg.dataset.validation_fraction)))
    train_texts, val_texts = texts[:-n_val], texts[-n_val:]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_labels, val_labels = torch.tensor(labels[:-n_val]), torch.tensor(labels[-n_val:], device=device)

    if m.pretrained:
        model, encode = load_pretrained(m.pretrained, m.max_len)
    else:
        encode = WordTokenizer(train_texts, m.vocab_size, m.max_len)
        model = TweetClassifier(
            len(encode.vocab), m.max_len, m.d_model, m.heads, m.layers, m.ff_dim, m.dropout
        )
    model.to(device)
    if device.type == "cuda":  # GPU kernels are counted in the phase that queued them
        timer.synchronize = partial(torch.cuda.synchronize, device)
    phase = timer.phase
    optimizer = OPTIMIZERS[m.optimizer](model.parameters(), lr=m.learning_rate, weight_decay=m.weight_decay)
    steps = cfg.train.steps_per_epoch or math.ceil(len(train_texts) / batch)

    metrics: dict[str, float] = {}
    for epoch in range(cfg.train.epochs):
        order = rng.permutation(len(train_texts)) if cfg.loader.shuffle else np.arange(len(train_texts))
        order = np.resize(order, steps * batch)  # repeats the epoch's order if steps_per_epoch asks for more
        model.train()
        loss_sum = correct = 0.0
        for step in range(steps):
            with phase("io"):
                index = order[step * batch : (step + 1) * batch]
                ids, mask = encode([train_texts[i] for i in index])
                ids, mask, target = ids.to(device), mask.to(device), train_labels[index].to(device)
            with phase("forward"):
                logits = model(ids, mask)
                loss = F.cross_entropy(logits, target)
            with phase("backward"):
                loss.backward()
            with phase("step"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(dim=1) == target).sum().item()
            timer.count("samples", len(index))
        with timer.phase("validation"):
            val_loss, val_accuracy = _evaluate(model, encode, val_texts, val_labels, batch)
        metrics = {"loss": loss_sum / order.size, "accuracy": correct / order.size}
        metrics.update(val_loss=val_loss, val_accuracy=val_accuracy)
        ctx.end_epoch(epoch, metrics)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"the training loss is {metrics['loss']} in epoch {epoch}")

    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    weights = ctx.run_dir / "model.pt"
    torch.save(model.state_dict(), weights)
    ctx.log_artifact(weights)
    if isinstance(encode, WordTokenizer):
        vocab = ctx.run_dir / "vocab.txt"
        vocab.write_text("\n".join(encode.vocab) + "\n", encoding="utf-8")
        ctx.log_artifact(vocab)
    return metrics
