"""Phase timer, parameter flattening within MLflow's limits, plots."""

from __future__ import annotations

import time

import pytest

from maelstrom_run.tracking.mlflow_run import MAX_KEY, MAX_VALUE, flatten, plot_history, plot_phases
from maelstrom_run.tracking.timer import PhaseTimer


def test_phase_timer_epoch_and_run_summaries() -> None:
    timer = PhaseTimer()
    for _ in range(4):
        with timer.phase("io"):
            time.sleep(0.002)
        with timer.phase("forward"):
            pass
    timer.count("bytes_read", 1e6)
    epoch = timer.epoch_metrics()
    assert epoch["phase.io.count"] == 4 and epoch["phase.forward.count"] == 4
    assert epoch["phase.io.total_s"] >= 0.008
    assert epoch["phase.io.p50_ms"] <= epoch["phase.io.p90_ms"] <= epoch["phase.io.p99_ms"]
    assert epoch["phase.io.share"] + epoch["phase.forward.share"] == pytest.approx(1.0)
    assert epoch["count.bytes_read"] == 1e6
    with timer.phase("io"):
        pass
    second = timer.epoch_metrics()
    assert second["phase.io.count"] == 1 and "phase.forward.count" not in second
    assert "count.bytes_read" not in second
    assert timer.run_summary()["phase_total.io.count"] == 5
    assert len(timer.samples()["io"]) == 5


def test_a_failing_phase_is_still_timed() -> None:
    timer = PhaseTimer()
    with pytest.raises(ValueError), timer.phase("step"):
        raise ValueError
    assert timer.epoch_metrics()["phase.step.count"] == 1


def test_flatten_dotted_keys_and_limits() -> None:
    config = {
        "model": {"learning_rate": 0.001, "layers": [1, 2], "pretrained": None},
        "tags": {},
        "long": "x" * (MAX_VALUE + 100),
        "k" * (MAX_KEY + 50): 1,
        "deep": {"a": {"b": {"c": True}}},
    }
    flat = flatten(config)
    assert flat["model.learning_rate"] == "0.001"
    assert flat["model.layers"] == "[1, 2]"
    assert flat["model.pretrained"] == "null"
    assert flat["tags"] == "{}"
    assert flat["deep.a.b.c"] == "True"
    assert len(flat["long"]) == MAX_VALUE and flat["long"].endswith("...")
    assert all(len(k) <= MAX_KEY for k in flat)
    assert len([k for k in flat if k.startswith("kkk")]) == 1


def test_plots_are_figures() -> None:
    history = {"loss": [(0, 1.0), (1, 0.5)], "val_loss": [(0, 1.1), (1, 0.7)], "phase.io.total_s": [(0, 1.0)]}
    fig = plot_history(history)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    fig = plot_phases({"io": [0.01, 0.02], "forward": [0.001, 0.002, 0.003]})
    assert len(fig.axes) == 2
