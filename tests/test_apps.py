"""The reference applications end to end: ``main(ctx)`` on the tiny tier with 2 epochs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from app_runner import run_entry
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {
    "ap1": {"loader": "ap1", "model": "ap1_unet"},
    "ap2": {"loader": "text", "model": "ap2_transformer"},
}
PHASES = ("io", "forward", "backward", "step")


def run_app(app: str, tmp_path: Path, **overrides: Any) -> tuple[dict[str, float], list, list]:
    """Compose the app's config as the defaults lists do, run its entry point; (result, metrics, artifacts)."""
    cfg = OmegaConf.create(
        {
            "app": OmegaConf.load(CONF / "app" / f"{app}.yaml").app,
            "train": OmegaConf.load(CONF / "train" / "tiny.yaml"),
            "dataset": OmegaConf.load(CONF / "dataset" / f"{app}.yaml"),
            **{group: OmegaConf.load(CONF / group / f"{name}.yaml") for group, name in GROUPS[app].items()},
        }
    )
    cfg = OmegaConf.merge(
        cfg, {"train": {"epochs": 2}}, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()])
    )
    return run_entry(tmp_path, cfg)


def check_epochs(metrics: list, keys: tuple[str, ...]) -> None:
    assert [step for step, _ in metrics] == [1, 2]  # epochs counted from 1
    for _, values in metrics:
        for key in keys:
            assert math.isfinite(values[key]), key
        for phase in PHASES:
            assert values[f"phase.{phase}.count"] >= 1
            assert values[f"phase.{phase}.total_s"] > 0
        assert values["phase.io.count"] == values["phase.step.count"]
        assert values["count.samples"] > 0
    assert metrics[0][1]["count.bytes_read"] > 0  # AP2 reads its CSV once, at the start


@pytest.mark.slow
def test_ap1_tiny(tmp_path):
    result, metrics, artifacts = run_app("ap1", tmp_path)
    check_epochs(metrics, ("loss", "val_loss", "val_mae"))
    assert set(result) >= {"loss", "val_loss", "val_mae"}
    assert metrics[-1][1]["val_loss"] < metrics[0][1]["val_loss"]
    weights = tmp_path / "run" / "model.weights.h5"
    assert artifacts == [weights] and weights.stat().st_size > 0

    import keras

    from maelstrom_run.apps.ap1.model import build_unet

    model = build_unet(8 + 6 + 1, filters=16, levels=2, kernel_size=3, dropout=0.0)
    model.load_weights(weights)
    assert model(keras.ops.zeros((1, 16, 16, 15))).shape == (1, 16, 16)


@pytest.mark.slow
def test_ap2_tiny(tmp_path):
    result, metrics, artifacts = run_app("ap2", tmp_path)
    check_epochs(metrics, ("loss", "val_loss", "accuracy", "val_accuracy"))
    assert result["val_accuracy"] > 0.65  # chance is about 0.5
    assert [p.name for p in artifacts] == ["model.pt", "vocab.txt"]

    import torch

    from maelstrom_run.apps.ap2.model import TweetClassifier

    vocab = (tmp_path / "run" / "vocab.txt").read_text().split()
    model = TweetClassifier(len(vocab), max_len=48, d_model=64, heads=4, layers=2, ff_dim=128, dropout=0.1)
    model.load_state_dict(torch.load(tmp_path / "run" / "model.pt"))


def test_ap2_pretrained_needs_transformers_and_weights(tmp_path):
    from maelstrom_run.apps.ap2.model import load_pretrained
    from maelstrom_run.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.pretrained: .*'transformers'.* weights at /no/such/dir"):
        load_pretrained("/no/such/dir", max_len=16)


@pytest.mark.slow
def test_ap1_rejects_patch_sizes_the_unet_cannot_take(tmp_path):
    with pytest.raises(ValueError, match="loader.patch_size"):
        run_app("ap1", tmp_path, **{"loader.patch_size": 10})
