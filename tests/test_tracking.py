"""Phase timer, a run's params, name and phase table, the plots, the sweep page."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from maelstrom_run.tracking import plots, sweep_page
from maelstrom_run.tracking.mlflow_run import (
    MAX_KEY,
    MAX_VALUE,
    EpochLog,
    flatten,
    run_name,
    run_params,
    varying,
)
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


def test_params_are_the_run_s_own_config() -> None:
    from maelstrom_run.config.compose import compose_config

    config = compose_config(["app=ap1", "train.tier=small"])
    params = run_params(config)
    full = flatten(config)
    assert len(params) < len(full) / 2 and len(params) < 60
    # every param is the config's own value; none is null or empty
    assert all(full[k] == v for k, v in params.items())
    assert not [k for k, v in params.items() if v in ("null", "{}", "[]")]
    assert [k for k in params if ".tiers." in k] == [k for k in full if k.startswith("dataset.tiers.small.")]
    assert not [k for k in params if k.startswith(("labels.", "dry_run", "run_name", "tags"))]
    assert params["model.learning_rate"] == full["model.learning_rate"]


def test_varying_overrides_and_run_names() -> None:
    jobs = [
        ["app=ap2", "model.learning_rate=0.01", "train.epochs=1", "+model.x=1"],
        ["app=ap2", "model.learning_rate=0.001", "train.epochs=1"],
    ]
    assert varying(jobs) == {"model.learning_rate": ["0.01", "0.001"], "model.x": ["1"]}
    child = SimpleNamespace(
        config={"run_name": None}, overrides=jobs[1], app="ap2", sweep_id="s", run_id="ap2-20261202-1-abc123"
    )
    assert run_name(child, ["model.learning_rate"]) == "ap2 model.learning_rate=0.001"
    single = SimpleNamespace(**{**child.__dict__, "sweep_id": None})
    assert run_name(single) == "ap2 model.learning_rate=0.001 train.epochs=1"
    assert run_name(SimpleNamespace(**{**single.__dict__, "overrides": ["app=ap2"]})) == "ap2 abc123"
    named = SimpleNamespace(**{**child.__dict__, "config": {"run_name": "mine"}})
    assert run_name(named, ["model.learning_rate"]) == "mine"


def test_phase_statistics_go_into_the_table_not_the_metrics() -> None:
    timer, log = PhaseTimer(), EpochLog()
    sent = []
    for epoch in range(2):
        for _ in range(3):
            for phase in ("step", "io", "forward"):
                with timer.phase(phase):
                    pass
        sent.append(log.add({"loss": 1.0 / (epoch + 1), **timer.epoch_metrics()}, epoch))
    for metrics in sent:
        assert sorted(metrics) == ["loss", "phase.forward.total_s", "phase.io.total_s", "phase.step.total_s"]
    rows = list(csv.DictReader(io.StringIO(log.phase_table(timer.run_summary()))))
    assert [(r["epoch"], r["phase"], r["calls"]) for r in rows if r["phase"] == "io"] == [
        ("1", "io", "3"),
        ("2", "io", "3"),
        ("all", "io", "6"),
    ]
    for row in rows:
        assert float(row["p50_ms"]) <= float(row["p90_ms"]) <= float(row["p99_ms"])
    assert log.history["loss"] == [(0, 1.0), (1, 0.5)]


def test_curve_panels_put_baselines_beside_the_model() -> None:
    names = ["loss", "val_loss", "val_mae", "val_mae_raw", "val_persistence_rmse", "val_rmse"]
    names += ["val_flux_rmse", "val_meanprofile_flux_rmse", "val_flux_rmse.upper", "phase.io.total_s"]
    panels = plots.curve_panels(names)
    assert panels["mae"] == {"model": ["val_mae"], "baseline": ["val_mae_raw"]}
    assert panels["rmse"] == {"model": ["val_rmse"], "baseline": ["val_persistence_rmse"]}
    assert panels["flux_rmse"] == {"model": ["val_flux_rmse"], "baseline": ["val_meanprofile_flux_rmse"]}
    assert sorted(panels) == ["flux_rmse", "loss", "mae", "rmse"]


def test_curves_one_epoch_units_baseline_and_title() -> None:
    history = {"loss": [(0, 1.0)], "val_loss": [(0, 1.1)], "val_mae": [(0, 0.9)], "val_mae_raw": [(0, 1.4)]}
    fig = plots.curves(history, app="ap1", run_id="ap1-x", units={"mae": "degC"})
    loss, mae = (ax for ax in fig.axes if ax.get_visible())
    assert "ap1" in fig._suptitle.get_text() and "ap1-x" in fig._suptitle.get_text()
    assert list(mae.get_xticks()) == [1] and list(loss.get_xticks()) == [1]  # counted from 1
    assert mae.get_ylabel() == "mae (degC)"
    styles = {line.get_label(): line.get_linestyle() for line in mae.lines}
    assert styles == {"validation": "-", "baseline: raw": "--"}


def test_phase_plot_in_pipeline_order_with_the_warm_up_apart() -> None:
    timer, log = PhaseTimer(), EpochLog()
    for epoch in range(2):
        for phase in ("validation", "step", "backward", "forward", "io"):
            timer.add(phase, 0.01 * (epoch + 1))
        log.add(timer.epoch_metrics(), epoch)
    fig = plots.phases(log.phase_rows, timer.samples(), app="ap2", run_id="ap2-x")
    left, right = fig.axes[:2]
    assert [t.get_text() for t in left.get_xticklabels()] == [
        "io",
        "forward",
        "backward",
        "step",
        "validation",
    ]
    assert [t.get_text() for t in right.get_xticklabels()] == ["1\nwarm-up", "2"]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["epoch 1 (warm-up)", "later epochs"]


def test_throughput_in_the_unit_that_fits() -> None:
    assert plots.rate_unit(5e6) == ("MB/s", 1e6) and plots.rate_unit(2.5e9) == ("GB/s", 1e9)
    assert plots.rate_unit(12.0) == ("B/s", 1.0)
    fig = plots.throughput({"rate.bytes_read.GBps": [(0, 0.004), (1, 0.006)]}, app="ap1", run_id="r")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "MB/s over the epoch"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([4.0, 6.0])


class _Page(HTMLParser):
    """What a reader of the page sees: the jobs table's cells per row, its links, the images."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.images = 0
        self.best: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
            if attrs.get("class") == "best":
                self.best = self.rows[-1]
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")  # a line break on the page
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img" and attrs["src"].startswith("data:image/png;base64,"):
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_sweep_page_table_links_best_and_plots() -> None:
    jobs = [
        sweep_page.SweepJob(
            0, "ap2-a", "succeeded", {"model.learning_rate": "0.01"}, {"val_loss": 0.6}, "m0"
        ),
        sweep_page.SweepJob(
            1, "ap2-b", "succeeded", {"model.learning_rate": "0.001"}, {"val_loss": 0.4}, "m1"
        ),
        sweep_page.SweepJob(
            2, "ap2-c", "failed", {"model.learning_rate": "1"}, {}, "m2", "RuntimeError: diverged"
        ),
    ]
    page = sweep_page.SweepPage(
        "sweep-ap2-x",
        "ap2",
        jobs,
        {"model.learning_rate": ["0.01", "0.001", "1"]},
        tracking_uri="http://127.0.0.1:5111",
        experiment_id="7",
        parent_run_id="p0",
        curves={"m0": [(0, 0.7), (1, 0.6)], "m1": [(0, 0.5), (1, 0.4)]},
    )
    assert page.best() is jobs[1] and page.main == ("val_loss", False)
    images = sweep_page.plots(page)
    assert sorted(images) == ["sweep_curves.png", "sweep_metric.png"]
    parser = _Page()
    parser.feed(sweep_page.render(page, images))
    head, *rows = parser.rows
    assert head == ["#", "run", "state", "model.learning_rate", "val_loss", "MLflow run"]
    assert [r[:5] for r in rows] == [
        ["0", "ap2-a", "succeeded", "0.01", "0.6"],
        ["1", "ap2-b", "succeeded", "0.001", "0.4"],
        ["2", "ap2-c", "failed RuntimeError: diverged", "1", ""],
    ]
    assert parser.best[:2] == ["1", "ap2-b"]
    assert parser.links == [
        f"http://127.0.0.1:5111/#/experiments/7/runs/{r}?workflowType=machine_learning"
        for r in ("m0", "m1", "m2", "p0")
    ]
    assert parser.images == 2
    rows = list(csv.DictReader(io.StringIO(sweep_page.summary_csv(page))))
    assert [(r["run_id"], r["state"], r["val_loss"]) for r in rows] == [
        ("ap2-a", "succeeded", "0.6"),
        ("ap2-b", "succeeded", "0.4"),
        ("ap2-c", "failed", ""),
    ]


def test_main_metric_of_a_sweep() -> None:
    assert sweep_page.main_metric(["loss", "val_loss", "val_accuracy"]) == "val_loss"
    assert sweep_page.main_metric(["loss", "val_crps", "val_crps_ensemble"]) == "val_crps"
    assert sweep_page.main_metric(["loss"]) == "loss"


def test_experiments_are_created_as_classic_ml_experiments(tmp_path: Path) -> None:
    import mlflow

    from maelstrom_run.tracking.mlflow_run import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment("ap2", uri)
    client = mlflow.MlflowClient(uri)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("made-before")  # without the tag
    assert ensure_experiment("made-before", uri) == older
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_loaded_dataset_is_the_run_s_mlflow_input(tmp_path: Path) -> None:
    import mlflow

    from maelstrom_run.data.cache import Cache
    from maelstrom_run.data.datasets import load_dataset, loaded
    from maelstrom_run.tracking.mlflow_run import dataset_input, ensure_experiment

    dataset = load_dataset("ap2", "tiny", cache=Cache(tmp_path / "cache"))
    assert dataset in loaded()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(ensure_experiment("ap2", uri))
    entity = dataset_input(dataset)._to_mlflow_entity()
    client.log_inputs(run.info.run_id, [mlflow.entities.DatasetInput(entity, [])])
    (logged,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert logged.dataset.name == f"{dataset.name} (sample, tiny)"
    assert str(Path(dataset.files[0]).parent) in logged.dataset.source
    before = logged.dataset.digest
    with open(dataset.files[0], "a") as fh:  # other bytes: another digest
        fh.write("\n")
    assert dataset_input(dataset).digest != before


@pytest.mark.slow
def test_jobs_starting_together_on_a_new_store_all_connect(tmp_path: Path) -> None:
    """Four processes connecting at once to an embedded store that does not exist yet: one creates it,
    the others wait for it (MLflow's own table creation is not safe to run twice at once)."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = (
        "import sys; from maelstrom_run.tracking.mlflow_run import connect, ensure_experiment; "
        "uri = connect({'uri': sys.argv[1]}); print(ensure_experiment('together', uri))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outcomes), [err[-500:] for rc, _, err in outcomes if rc]
    assert len({out.strip() for _, out, _ in outcomes}) == 1  # one experiment, found by all
