"""Deep500 timers: the stand-in API, its hand-over to an installed fork, and their capture into MLflow."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maelstrom_run.tracking import deep500_capture, record

DATA = Path(__file__).parent / "data" / "deep500"
ROOT = deep500_capture.FALLBACK_ROOT


@pytest.fixture()
def d500(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stand-in ``deep500.utils.timer`` imported as ``deep500`` (after site-packages)."""
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [n for n in sys.modules if n == "deep500" or n.startswith("deep500.")]:
        monkeypatch.delitem(sys.modules, name)
    deep500_capture.install()  # what the worker does before the entry point
    import deep500.utils.timer as timer

    yield timer
    for name in [n for n in sys.modules if n == "deep500" or n.startswith("deep500.")]:
        del sys.modules[name]
    deep500_capture.reset()


class Ticks:
    """A clock of known readings: the samples are the differences of the numbers it is given."""

    def __init__(self, readings: list[float]) -> None:
        self.readings = iter(readings)

    def mark(self) -> float:
        return next(self.readings)

    def elapsed(self, start: float, end: float) -> float:
        return end - start


def test_timer_api_and_report_format(d500: Any) -> None:
    tmr = d500.Timer(Ticks([0.0, 0.5, 1.0, 1.25, 2.0, 3.0, 10.0, 10.125]))
    for _ in range(3):
        tmr.start(d500.TimeType.BATCH)
        tmr.end(d500.TimeType.BATCH)
    tmr.start("SAVING_MODEL")  # an application's own key
    tmr.end("SAVING_MODEL")
    batch = [0.5, 0.25, 1.0]
    assert tmr.get_time(d500.TimeType.BATCH) == batch
    stats = tmr.get_time_stats(d500.TimeType.BATCH)
    # numpy as the oracle for the statistics
    expect = (min(batch), np.mean(batch), np.median(batch), max(batch), np.std(batch, ddof=1))
    assert tuple(stats) == pytest.approx(expect)
    out = io.StringIO()
    tmr.print_all_time_stats(file=out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "BATCH",
        f"min: {expect[0]:.5f} mean: {expect[1]:.5f} median: {expect[2]:.5f} max: {expect[3]:.5f} stdev: {expect[4]:.5f}",
        "SAVING_MODEL",
        "min: 0.12500 mean: 0.12500 median: 0.12500 max: 0.12500 stdev: 0.00000",
        "---",
    ]


def test_timer_rules(d500: Any, tmp_path: Path) -> None:
    tmr = d500.Timer()
    tmr.start(d500.TimeType.EPOCH)
    tmr.start(d500.TimeType.BATCH)  # other keys nest
    with pytest.raises(RuntimeError, match="nesting"):
        tmr.start(d500.TimeType.BATCH)
    tmr.end(d500.TimeType.BATCH)
    with pytest.raises(RuntimeError, match="without being started"):
        tmr.end(d500.TimeType.BATCH)
    with pytest.raises(ValueError):
        tmr.start(d500.TimeType.ALL)
    tmr.complete_all()  # the open epoch stays open
    assert len(tmr.times[d500.TimeType.BATCH]) == 1
    with pytest.raises(RuntimeError, match="still open"):
        tmr.get_time(d500.TimeType.EPOCH)
    tmr.end(d500.TimeType.EPOCH)
    assert len(tmr.get_time(d500.TimeType.EPOCH)) == 1
    target = tmp_path / "stats.txt"
    tmr.save_all_time_stats(str(target))
    assert target.read_text().splitlines()[0] == "EPOCH"
    with pytest.raises(FileExistsError):  # must not exist, as the fork requires
        tmr.save_all_time_stats(str(target))
    assert [m.name for m in d500.TimeType] == [
        "EPOCH",
        "BATCH",
        "FORWARD",
        "BACKWARD",
        "COMM",
        "IO",
        "OTHER",
        "ALL",
    ]


def test_cpugpu_timer_without_cuda_logs_prefixed_means(d500: Any, tmp_path: Path) -> None:
    import mlflow
    from deep500.utils import timer_torch

    tmr = timer_torch.CPUGPUTimer()  # no CUDA here: GPU regions on the wall clock
    tmr.start(timer_torch.TimeType.EPOCH)
    for _ in range(3):
        tmr.start(timer_torch.TimeType.BATCH, gpu=True)
        tmr.end(timer_torch.TimeType.BATCH, gpu=True)
    tmr.end(timer_torch.TimeType.EPOCH)
    assert len(tmr.get_time(timer_torch.TimeType.BATCH, gpu=True)) == 3
    out = io.StringIO()
    tmr.print_all_time_stats(file=out)
    text = out.getvalue().splitlines()
    assert text[0] == "CPU" and text[text.index("---") + 1] == "GPU" and text[-1] == "---"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        tmr.log_mlflow_all("train")
    metrics = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert set(metrics) == {"train/CPU/EPOCH", "train/CPU/BATCH", "train/GPU/BATCH"}
    expect = float(np.mean(tmr.get_time(timer_torch.TimeType.BATCH, gpu=True)))
    assert metrics["train/GPU/BATCH"] == pytest.approx(expect)
    # the capture knows both halves of the timer
    captured = {t["label"]: t for t in deep500_capture.snapshot()}
    assert set(captured["GPU"]["times"]) == {"BATCH"} and captured["CPU"]["group"] == captured["GPU"]["group"]


def _python(code: str, pythonpath: list[Path], env: dict[str, str] | None = None) -> str:
    environ = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    proc = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_installed_fork_is_used_and_captured(tmp_path: Path) -> None:
    code = (
        "import deep500, deep500.utils.timer as t; tm = t.Timer(); tm.start(t.TimeType.BATCH); "
        "tm.end(t.TimeType.BATCH); print(getattr(deep500, 'INSTALLED', False))"
    )
    env = {
        deep500_capture.DIR_ENV: str(tmp_path),
        deep500_capture.OBSERVER_ENV: "maelstrom_run.tracking.deep500_capture:install",
    }
    # the stand-in comes first on the path, yet hands over to the installed package
    assert _python(code, [ROOT, DATA / "fakefork"], env).strip() == "True"
    (written,) = deep500_capture.collect(tmp_path)[-1:]
    assert list(written["times"]) == ["BATCH"] and len(written["times"]["BATCH"]) == 1
    # without one, the stand-in is the package
    (tmp_path / "none").mkdir()
    env[deep500_capture.DIR_ENV] = str(tmp_path / "none")
    assert _python(code, [ROOT], env).strip() == "False"
    assert len(deep500_capture.collect(tmp_path / "none")) == 1


def test_record_merges_phases_and_deep500_timers() -> None:
    timers = [
        {"group": "1.0", "label": "CPU", "times": {"BATCH": [0.5, 0.25]}},
        {"group": "1.0", "label": "GPU", "times": {"BATCH": [0.75]}},
    ]
    rec = record.build({"io": [0.125, 0.375]}, timers, 2.0)
    assert {name: p.source for name, p in rec.phases.items()} == {
        "io": "maelstrom-run",
        "deep500.CPU.BATCH": "deep500",
        "deep500.GPU.BATCH": "deep500",
    }
    metrics = record.stats_metrics(rec)
    assert metrics["timing.io.median_s"] == 0.25 and metrics["bench.time_to_solution_s"] == 2.0
    assert rec.deep500_report.splitlines()[:2] == ["CPU", "BATCH"]
    assert record.TimingRecord.from_json(rec.to_json()) == rec


def _only_run(maelstrom_home: Path) -> tuple[Any, str]:
    """The MLflow client and run id of the one run under ``maelstrom_home``."""
    import mlflow

    (run_dir,) = (maelstrom_home / "runs").iterdir()
    outcome = json.loads((run_dir / "result.json").read_text())
    return mlflow.MlflowClient(tracking_uri=outcome["tracking_uri"]), outcome["mlflow_run_id"]


@pytest.mark.slow
def test_mlproject_using_deep500_runs_and_reaches_mlflow(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str], maelstrom_home: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(DATA / "project", project)
    env = {**cli_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cli_env.get('PATH', '')}"}
    imported = run_cli(["maelstrom", "import", "mantik", "."], cwd=project, env=env)
    assert imported.returncode == 0, imported.stderr
    import mlflow

    from maelstrom_run.core import paths

    # a baseline that solved it in a millisecond: this run is a regression of its time to solution
    store = mlflow.MlflowClient(paths.default_tracking_uri())
    baseline = store.create_run(store.create_experiment("baselines"), tags={"maelstrom.run_id": "fast-1"})
    store.log_metric(baseline.info.run_id, "bench.time_to_solution_s", 0.001)
    result = run_cli(
        [
            "--config-dir",
            "conf",
            "app=deep500-demo",
            "app.params.batches=4",
            "tracking.system_metrics_interval_s=1",
            "schedule.benchmark.baseline=fast-1",
        ],
        cwd=project,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "benchmark against fast-1: time_to_solution_s=" in result.stdout
    assert "CPU\nEPOCH\nmin: " in result.stdout  # the script's own report
    client, run_id = _only_run(maelstrom_home)
    run = client.get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    # where it ran, MLflow's system metrics, and no energy figure without a sensor
    assert tags["host.name"] and int(tags["host.cpu.cores"]) >= 1 and tags["host.backend"] == "local"
    assert tags["energy.sensors"] == "none" and not any(k.startswith("energy.") for k in metrics)
    assert "system/cpu_utilization_percentage" in metrics
    assert tags["benchmark.regression"] == "true" and tags["benchmark.baseline"] == baseline.info.run_id
    # log_mlflow_all as the application expects, beside the captured samples and statistics
    assert {"train/CPU/EPOCH", "train/CPU/BATCH", "train/GPU/BATCH", "train/CPU/SAVING_MODEL"} <= set(metrics)
    history = client.get_metric_history(run_id, "deep500.CPU.BATCH")
    assert [m.step for m in history] == list(range(8))
    assert "timing.deep500.GPU.BATCH.median_s" in metrics
    assert metrics["train/CPU/BATCH"] == pytest.approx(np.mean([m.value for m in history]))
    rec = record.load(client, run_id)
    assert rec is not None and len(rec.phases["deep500.CPU.EPOCH"].samples) == 2
    assert len(rec.phases["deep500.GPU.BATCH"].samples) == 8
    report = Path(client.download_artifacts(run_id, record.REPORT_PATH, str(tmp_path))).read_text()
    assert report.startswith("CPU\nEPOCH\nmin: ") and "\nGPU\nBATCH\n" in report


@pytest.mark.slow
def test_keras_timer_callback(d500: Any) -> None:
    import tensorflow as tf
    from deep500.utils import timer_tf

    tmr = timer_tf.CPUGPUTimer()
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((12, 2), dtype="float32")
    model.fit(
        x, x[:, :1], batch_size=4, epochs=2, verbose=0, callbacks=[timer_tf.TimerCallback(tmr, gpu=True)]
    )
    assert len(tmr.get_time(timer_tf.TimeType.EPOCH)) == 2
    assert len(tmr.get_time(timer_tf.TimeType.BATCH)) == 6  # 3 batches per epoch
    assert len(tmr.get_time(timer_tf.TimeType.BATCH, gpu=True)) == 6  # wall clock without a GPU


@pytest.mark.slow
def test_python_entry_point_feeds_one_record(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str], maelstrom_home: Path
) -> None:
    shutil.copytree(DATA / "inproc", tmp_path / "inproc")
    result = run_cli(["--config-dir", "conf", "app=toyd"], cwd=tmp_path / "inproc", env=cli_env)
    assert result.returncode == 0, result.stderr
    client, run_id = _only_run(maelstrom_home)
    rec = record.load(client, run_id)
    assert rec is not None
    assert {n: (p.source, len(p.samples)) for n, p in rec.phases.items()} == {
        "io": ("maelstrom-run", 6),
        "deep500.EPOCH": ("deep500", 2),
        "deep500.IO": ("deep500", 6),
    }
    assert {"d5/EPOCH", "d5/IO"} <= set(client.get_run(run_id).data.metrics)
