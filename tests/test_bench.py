"""Benchmarking: hardware tags, energy sensors, run comparison and scheduled regression checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from maelstrom_run.tracking import energy, hardware

# -- hardware and energy ---------------------------------------------------------------------------


class FakeNvml:
    """Stands in for ``pynvml``: GPUs with an energy counter in mJ that the test advances."""

    def __init__(self, names: list[str], energy_mj: list[int | None]) -> None:
        self.names, self.energy = names, energy_mj

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return self.names[handle].encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        value = self.energy[handle]
        if value is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return value


def _zone(root: Path, name: str, label: str, energy_uj: int, range_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return zone


def test_energy_from_nvml_and_rapl_fixtures(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    package = _zone(root, "intel-rapl:0", "package-0", 262_000_000_000, 262_143_328_850)
    _zone(root, "intel-rapl:0:0", "core", 5, 262_143_328_850)  # inside package-0: not counted twice
    dram = _zone(root, "intel-rapl:1", "dram", 1_000_000, 65_712_999_613)
    (root / "intel-rapl:2").mkdir()  # a zone this user cannot read
    (root / "intel-rapl:2" / "energy_uj").mkdir()
    nvml = FakeNvml(["NVIDIA A100-SXM4-40GB", "Tesla K80"], [5_000_000, None])
    meter = energy.Meter(nvml, powercap=root)
    assert meter.sensors == ["nvml", "rapl"] and [z.name for z in meter.zones] == ["package-0", "dram"]
    meter.start()
    nvml.energy[0] += 1_500_000  # 1500 J
    (package / "energy_uj").write_text("1000000\n")  # wrapped past max_energy_range_uj
    (dram / "energy_uj").write_text("3500000\n")  # 2.5 J
    figures = energy.metrics(meter.stop())
    assert figures == pytest.approx(
        {
            "energy.nvml.gpu0_J": 1500.0,
            "energy.nvml.total_J": 1500.0,
            "energy.rapl.package-0_J": (262_143_328_850 - 262_000_000_000 + 1_000_000) / 1e6,
            "energy.rapl.dram_J": 2.5,
            "energy.rapl.total_J": (262_143_328_850 - 262_000_000_000 + 1_000_000) / 1e6 + 2.5,
        }
    )
    tags = hardware.tags(nvml=nvml, environ={"SLURM_JOB_ID": "42", "SLURM_JOB_PARTITION": "booster"})
    assert tags["host.gpu.count"] == "2" and tags["host.gpu.model"] == "NVIDIA A100-SXM4-40GB, Tesla K80"
    assert tags["host.slurm.job_id"] == "42" and tags["host.slurm.partition"] == "booster"


def test_no_sensor_no_figure(tmp_path: Path) -> None:
    meter = energy.Meter(None, powercap=tmp_path / "absent")
    assert meter.sensors == []
    meter.start()
    assert meter.stop() == []
    tags = hardware.tags(environ={})
    assert tags["host.gpu.count"] == "0" and int(tags["host.cpu.cores"]) >= 1
    assert float(tags["host.memory.gb"]) > 0 and "host.slurm.job_id" not in tags


def test_slurm_energy_parsing_and_the_real_sacct() -> None:
    def sacct(out: str) -> Any:
        return lambda *a, **k: subprocess.CompletedProcess(a, 0, out, "")

    assert energy.slurm_energy("7", sacct("7|123456\n7.batch|100000\n7.0|20000\n")) == energy.Reading(
        "slurm", "job", 123456.0
    )
    assert energy.slurm_energy("7", sacct("7|0\n7.batch|100\n7.0|20\n")).joules == 120.0
    # a cluster that gathers no energy reports zeros: nothing measured
    assert energy.slurm_energy("7", sacct("7|0\n7.batch|0\n")) is None
    if shutil.which("sacct") is None:
        pytest.skip("no sacct here")
    assert energy.slurm_energy("999999999") is None  # the real sacct: no such job, nothing measured


# -- comparing runs with known timings -------------------------------------------------------------


@pytest.fixture(scope="module")
def known_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """MLflow runs of known figures: ``base``; ``slow`` (io exactly twice the base's, BATCH from the
    same distribution, half the time to solution and energy); ``other`` (no energy); ``mild`` (io
    1.05 times the base's, outside the noise, within a tolerance of 0.1; not of the sweep)."""
    import mlflow
    import numpy as np

    from maelstrom_run.tracking import record

    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("bench-test", artifact_location=str(store / "artifacts"))
    rng = np.random.default_rng(1)
    io = list(rng.uniform(0.010, 0.012, 60))
    ids = {}
    for label, io_samples, tts, joules in (
        ("base-1", io, 10.0, 100.0),
        ("slow-1", [2 * s for s in io], 5.0, 50.0),
        ("other-1", io, 10.0, None),
        ("mild-1", [1.05 * s for s in io], 10.0, 100.0),
    ):
        group = {"maelstrom.schedule_id": "sched-x"} if label == "mild-1" else {"maelstrom.sweep_id": "sw-1"}
        run = client.create_run(experiment, tags={"maelstrom.run_id": label, **group})
        batch = list(rng.normal(0.1, 0.01, 80))  # the same distribution in every run: within noise
        timers = [{"group": "1.0", "label": "CPU", "times": {"BATCH": batch}}]
        record.log(record.build({"io": io_samples}, timers, tts), record.ClientSink(client, run.info.run_id))
        for epoch in range(3):
            client.log_metric(run.info.run_id, "count.samples", 100, step=epoch)
            client.log_metric(run.info.run_id, "val_acc", 0.5 + 0.1 * epoch, step=epoch)
        client.log_metric(run.info.run_id, "final.val_acc", 0.7)
        if joules is not None:
            client.log_metric(run.info.run_id, "energy.nvml.total_J", joules)
            client.log_metric(run.info.run_id, "energy.nvml.gpu0_J", joules)
        client.set_terminated(run.info.run_id)
        ids[label] = run.info.run_id
    return uri, ids


def test_compare_ratios_and_noise(known_runs: tuple[str, dict[str, str]]) -> None:
    import mlflow

    from maelstrom_run.core.errors import ConfigError
    from maelstrom_run.tracking import bench

    uri, ids = known_runs
    client = mlflow.MlflowClient(uri)
    assert bench.resolve(client, "sw-1") == [
        ids[k] for k in ("base-1", "slow-1", "other-1")
    ]  # a sweep: its runs, oldest first
    assert bench.resolve(client, "slo") == [ids["slow-1"]]  # a unique prefix of a run id
    runs = [bench.load_run(client, ids[k]) for k in ("base-1", "slow-1", "other-1")]
    comparison = bench.compare(runs, baseline=0)
    io = comparison.cell("phase.io.median_s", 1)
    assert io.ratio == pytest.approx(2.0) and io.verdict == "worse"
    assert 1 < io.ratio_low <= 2.0 <= io.ratio_high  # both runs resampled: outside the noise
    assert comparison.cell("phase.deep500.CPU.BATCH.median_s", 1).verdict == "noise"
    tts = comparison.cell(bench.TTS, 1)
    assert tts.ratio == pytest.approx(0.5) and tts.verdict == "better"
    assert comparison.cell("energy.nvml_J", 1).ratio == pytest.approx(0.5)
    assert comparison.cell("energy.nvml_J", 2).value is None
    assert comparison.cell("throughput.samples_per_s", 1).ratio == pytest.approx(2.0)
    assert comparison.cell("throughput.samples_per_s", 1).verdict == "better"
    assert comparison.cell("final.val_acc", 2).verdict == "same"
    with pytest.raises(ConfigError, match="no run, sweep or schedule"):
        bench.resolve(client, "nope")
    # a Slurm job's energy, once sacct has it, joins the run's figures with its source
    runs[2].tags["host.slurm.job_id"] = "77"
    out = "77|5400\n77.batch|5000\n"
    if shutil.which("sacct"):
        assert bench.add_slurm_energy(
            client, runs[2], lambda *a, **k: subprocess.CompletedProcess(a, 0, out, "")
        )
        logged = client.get_run(ids["other-1"]).data
        assert logged.metrics["energy.slurm.job_J"] == 5400 and logged.tags["energy.sensors"] == "slurm"
    header, rows = bench.table(comparison)
    energy_row = next(r for r in rows if r[0] == "energy.nvml_J")
    assert energy_row[3] == "not measured" and "0.50x better" in energy_row[2]


def _renders(page: Path, tmp_path: Path) -> None:
    """Headless Chromium loads the page: the table is there and every inlined image decodes."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return
    probe = tmp_path / "probe.html"
    check = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
        "document.body.setAttribute('data-images', imgs.length + ':' + imgs.every(i => i.naturalWidth > 0)); "
        "document.body.setAttribute('data-rows', document.querySelectorAll('tr').length); });</script>"
    )
    probe.write_text(page.read_text().replace("</body>", check + "</body>"))
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images="3:true"' in dom, dom[-500:]
    assert int(re.search(r'data-rows="(\d+)"', dom).group(1)) >= 6


@pytest.mark.slow
def test_bench_compare_and_report_commands(
    known_runs: tuple[str, dict[str, str]], tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    import mlflow

    uri, ids = known_runs
    out = tmp_path / "report"
    args = ["maelstrom", "bench", "compare", "slow-1", "other-1", "--baseline", "base-1"]
    result = run_cli([*args, "--tracking-uri", uri, "--out", str(out)], cwd=tmp_path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"2\.00x \[\d\.\d\d-\d\.\d\d\] worse", result.stdout), result.stdout
    assert "within noise" in result.stdout and "phase.io.median_s [maelstrom-run]" in result.stdout
    assert "not measured" in result.stdout and "next: mlflow ui" in result.stdout
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "base-1" in page
    assert {p.name for p in out.iterdir()} == {
        "report.html",
        "phase_times.png",
        "tts_energy.png",
        "accuracy_vs_time.png",
    }
    _renders(out / "report.html", tmp_path)
    client = mlflow.MlflowClient(uri)
    (report_run,) = client.search_runs([client.get_experiment_by_name("maelstrom-bench").experiment_id])
    assert {a.path for a in client.list_artifacts(report_run.info.run_id, "bench")} >= {"bench/report.html"}
    single = run_cli(
        ["maelstrom", "bench", "report", "base-1", "--tracking-uri", uri, "--out", str(tmp_path / "one")],
        cwd=tmp_path,
        env=cli_env,
    )
    assert single.returncode == 0, single.stderr
    assert "bench/report.html" in {a.path for a in client.list_artifacts(ids["base-1"], "bench")}
    missing = run_cli(
        ["maelstrom", "bench", "report", "nope", "--tracking-uri", uri], cwd=tmp_path, env=cli_env
    )
    assert missing.returncode == 2 and "no run, sweep or schedule" in missing.stderr


def test_scheduled_benchmark_verdicts_and_history(
    known_runs: tuple[str, dict[str, str]], tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    import mlflow

    from maelstrom_run.core.errors import ConfigError
    from maelstrom_run.schedule import benchmark

    uri, ids = known_runs
    client = mlflow.MlflowClient(uri)
    conf = {"baseline": "base-1", "metrics": ["phase.io.median_s", "time_to_solution_s"], "tolerance": 0.1}
    slow = benchmark.evaluate(client, ids["slow-1"], conf)
    assert slow.regression and slow.offending[0].startswith("phase.io.median_s=2.00x [")
    assert slow.ratios["time_to_solution_s"] == pytest.approx(0.5)  # faster: not a regression
    # worse than the baseline and outside the noise, but within the tolerance
    mild = benchmark.evaluate(client, ids["mild-1"], conf)
    assert not mild.regression and mild.ratios["phase.io.median_s"] == pytest.approx(1.05)
    strict = benchmark.evaluate(client, ids["mild-1"], {**conf, "tolerance": 0.01})
    assert strict.regression
    # inside the noise: never a regression, whatever the tolerance
    noisy = benchmark.evaluate(
        client, ids["other-1"], {**conf, "metrics": ["phase.deep500.CPU.BATCH.median_s"], "tolerance": 0}
    )
    assert not noisy.regression
    tags = client.get_run(ids["slow-1"]).data.tags
    assert tags["benchmark.regression"] == "true" and tags["benchmark.baseline"] == ids["base-1"]
    with pytest.raises(ConfigError, match="tolerance"):
        benchmark.check({"tolerance": "lots"})
    client.set_tag(ids["slow-1"], "maelstrom.schedule_id", "sched-x")
    shown = run_cli(
        ["maelstrom", "bench", "history", "sched-x", "--tracking-uri", uri], cwd=tmp_path, env=cli_env
    )
    assert shown.returncode == 0, shown.stderr
    assert "2 firing(s), 2 flagged as regressions" in shown.stdout  # mild-1 last judged strictly
    lines = {line.split()[2]: line for line in shown.stdout.splitlines() if "-1 " in line}
    assert "true" in lines["slow-1"] and "2.00x" in lines["slow-1"] and "true" in lines["mild-1"]
