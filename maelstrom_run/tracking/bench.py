"""Compare runs for benchmarking: read their figures from MLflow, put them side by side, with ratios
to a baseline and the noise of each ratio.

Figures of a run (names as ``schedule.benchmark.metrics`` use them):

- ``time_to_solution_s``: the entry point's wall time (``bench.time_to_solution_s``; for older runs
  the MLflow run's own duration);
- ``phase.<name>.median_s``: the median step time of every phase of the timing record, maelstrom-run's
  (``io``, ``forward`` ...) and Deep500's (``deep500.CPU.BATCH`` ...);
- ``throughput.samples_per_s`` (samples counted over the time to solution) and ``throughput.GBps``
  (the loader's median delivered rate per epoch);
- ``energy.<sensor>_J``, only where a sensor measured it;
- ``final.<metric>``: the final metrics the app returned.

A phase median's ratio to the baseline carries a bootstrap interval (resampling both runs' samples);
a ratio whose interval holds 1 is within the noise. Lower is better except for throughputs and
accuracy-like metrics (:func:`maelstrom_run.core.metrics.higher_is_better`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.metrics import higher_is_better
from . import record as timing

TTS = "time_to_solution_s"
#: Bootstrap resamples and the interval's coverage.
RESAMPLES, COVERAGE = 2000, 0.95
_MLFLOW_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RunFigures:
    mlflow_run_id: str
    label: str
    tags: dict[str, str]
    #: Figure name -> value.
    values: dict[str, float] = field(default_factory=dict)
    #: Phase figure name -> its samples (seconds), for intervals and plots.
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: Phase figure name -> ``maelstrom-run`` or ``deep500``.
    sources: dict[str, str] = field(default_factory=dict)
    #: (seconds since the run started, value) of the headline metric, for accuracy against time.
    curve: tuple[str, list[tuple[float, float]]] | None = None
    #: Energy sensors named by the run (``none`` when it had none).
    sensors: str = ""


def phase_figure(name: str) -> str:
    return f"phase.{name}.median_s"


def _history(client: Any, run_id: str, name: str) -> list[Any]:
    return sorted(client.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp))


def load_run(client: Any, run_id: str) -> RunFigures:
    """The figures of one MLflow run."""
    run = client.get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    label = tags.get("maelstrom.run_id") or run.info.run_name or run_id
    figures = RunFigures(run_id, label, dict(tags), sensors=tags.get("energy.sensors", ""))
    rec = timing.load(client, run_id)
    tts = metrics.get("bench.time_to_solution_s")
    if tts is None and rec is not None:
        tts = rec.time_to_solution_s
    if tts is None and run.info.end_time and run.info.start_time:
        tts = (run.info.end_time - run.info.start_time) / 1000.0
    if tts is not None:
        figures.values[TTS] = float(tts)
    for phase in rec.phases.values() if rec is not None else []:
        if phase.samples:
            name = phase_figure(phase.name)
            figures.samples[name] = list(phase.samples)
            figures.sources[name] = phase.source
            figures.values[name] = float(np.median(phase.samples))
    if "count.samples" in metrics and tts:
        total = sum(m.value for m in _history(client, run_id, "count.samples"))
        figures.values["throughput.samples_per_s"] = total / tts
    for counter in ("bytes_delivered", "bytes_read"):
        if f"rate.{counter}.GBps" in metrics:
            rates = [m.value for m in _history(client, run_id, f"rate.{counter}.GBps")]
            figures.values["throughput.GBps"] = float(np.median(rates))
            break
    for key, value in metrics.items():
        if key.startswith("energy.") and key.endswith(".total_J"):
            figures.values[f"energy.{key.split('.')[1]}_J"] = float(value)
        elif key.startswith("final."):
            figures.values[key] = float(value)
    headline = _headline(metrics)
    if headline is not None:
        start = run.info.start_time or 0
        points = [((m.timestamp - start) / 1000.0, m.value) for m in _history(client, run_id, headline)]
        figures.curve = (headline, points)
    return figures


def add_slurm_energy(client: Any, figures: RunFigures, run: Any = None) -> bool:
    """A Slurm job's energy is known once the job has ended: for a run of a job that has no Slurm
    figure yet, ask ``sacct`` (where the cluster gathers energy) and log it to the run. True if logged."""
    import shutil

    from . import energy

    job = figures.tags.get("host.slurm.job_id")
    if not job or "energy.slurm_J" in figures.values or shutil.which("sacct") is None:
        return False
    reading = energy.slurm_energy(job) if run is None else energy.slurm_energy(job, run)
    if reading is None:
        return False
    for key, value in energy.metrics([reading]).items():
        client.log_metric(figures.mlflow_run_id, key, value)
    sensors = sorted({*filter(None, figures.sensors.replace("none", "").split(",")), "slurm"})
    figures.sensors = ",".join(sensors)
    client.set_tag(figures.mlflow_run_id, "energy.sensors", figures.sensors)
    figures.values["energy.slurm_J"] = reading.joules
    return True


def _headline(metrics: dict[str, float]) -> str | None:
    """The metric an accuracy-against-time plot follows: a validation score, else the loss."""
    for name in ("val_acc", "val_accuracy", "val_loss", "loss"):
        if name in metrics:
            return name
    finals = sorted(k.removeprefix("final.") for k in metrics if k.startswith("final."))
    return next((f for f in finals if f in metrics), None)


# -- which runs --------------------------------------------------------------------------------


def _search(client: Any, filter_string: str) -> list[Any]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    return list(client.search_runs(experiments, filter_string, max_results=5000, order_by=["start_time ASC"]))


def resolve(client: Any, ident: str) -> list[str]:
    """MLflow run ids named by ``ident``: an MLflow run id, a maelstrom-run run id (or a unique prefix
    of one), a sweep id (its job runs) or a schedule id (its firings), oldest first."""
    if _MLFLOW_ID.match(ident):
        try:
            return [client.get_run(ident).info.run_id]
        except Exception:  # noqa: BLE001, S110 - may still be a prefix of one of ours
            pass
    quoted = ident.replace("'", "")
    for tag in ("maelstrom.run_id", "maelstrom.sweep_id", "maelstrom.schedule_id"):
        runs = [r for r in _search(client, f"tags.`{tag}` = '{quoted}'") if "maelstrom.run_id" in r.data.tags]
        if runs:
            return [r.info.run_id for r in runs]
    runs = _search(client, f"tags.`maelstrom.run_id` LIKE '{quoted}%'")
    ids = {r.data.tags["maelstrom.run_id"] for r in runs}
    if len(ids) == 1:
        return [runs[0].info.run_id]
    if len(ids) > 1:
        raise ConfigError(
            f"{ident!r} is the start of {len(ids)} runs ({', '.join(sorted(ids)[:4])}, ...); give more of it"
        )
    raise ConfigError(
        f"{ident!r}: no run, sweep or schedule of that id in MLflow at {client.tracking_uri}; "
        "see `maelstrom runs list`, or pass --tracking-uri"
    )


# -- comparing -----------------------------------------------------------------------------------


@dataclass
class Cell:
    value: float | None
    #: The bootstrap interval of the value (phase medians only).
    low: float | None = None
    high: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    #: ``baseline``, ``better``, ``worse``, ``noise`` (the interval holds 1), ``same`` or ``""``.
    verdict: str = ""


@dataclass
class Comparison:
    runs: list[RunFigures]
    baseline: int | None
    figures: list[str]
    cells: dict[tuple[str, int], Cell]

    def cell(self, figure: str, index: int) -> Cell:
        return self.cells.get((figure, index), Cell(None))


def _order(name: str) -> tuple[int, str]:
    for rank, prefix in enumerate((TTS, "phase.", "throughput.", "energy.", "final.")):
        if name.startswith(prefix):
            return rank, name
    return 9, name


def bootstrap_median(
    samples: list[float], rng: np.random.Generator, resamples: int = RESAMPLES
) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float64)
    picks = rng.integers(0, data.size, size=(resamples, data.size))
    return np.median(data[picks], axis=1)


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - COVERAGE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def compare(runs: list[RunFigures], baseline: int | None = 0, seed: int = 0) -> Comparison:
    """Every figure of every run, with ratios to ``runs[baseline]`` (none when ``baseline`` is None)."""
    rng = np.random.default_rng(seed)
    names = sorted({n for r in runs for n in r.values}, key=_order)
    cells: dict[tuple[str, int], Cell] = {}
    medians: dict[tuple[str, int], np.ndarray] = {}
    for index, run in enumerate(runs):
        for name, value in run.values.items():
            cell = Cell(value)
            if len(run.samples.get(name, [])) > 1:
                medians[name, index] = bootstrap_median(run.samples[name], rng)
                cell.low, cell.high = _interval(medians[name, index])
            cells[name, index] = cell
    if baseline is not None:
        for name in names:
            base = cells.get((name, baseline))
            for index in range(len(runs)):
                cell = cells.get((name, index))
                if cell is None or base is None or cell.value is None or not base.value:
                    continue
                if index == baseline:
                    cell.ratio, cell.verdict = 1.0, "baseline"
                    continue
                cell.ratio = cell.value / base.value
                if (name, index) in medians and (name, baseline) in medians:
                    ratios = medians[name, index] / np.maximum(medians[name, baseline], 1e-300)
                    cell.ratio_low, cell.ratio_high = _interval(ratios)
                cell.verdict = verdict(name, cell)
    return Comparison(runs, baseline, names, cells)


def verdict(name: str, cell: Cell) -> str:
    if cell.ratio is None:
        return ""
    if cell.ratio_low is not None and cell.ratio_high is not None and cell.ratio_low <= 1 <= cell.ratio_high:
        return "noise"
    if cell.ratio == 1:
        return "same"
    return "better" if (cell.ratio > 1) == higher_is_better(name) else "worse"


def energy_sensors(runs: list[RunFigures]) -> list[str]:
    return sorted({n for r in runs for n in r.values if n.startswith("energy.")})


# -- presenting ----------------------------------------------------------------------------------


def format_value(name: str, value: float | None) -> str:
    if value is None:
        return "not measured" if name.startswith("energy") else "-"
    if name.endswith("_s") and name.startswith("phase."):
        return f"{value * 1e3:.3g} ms"
    if name == TTS:
        return f"{value:.3g} s"
    if name.startswith("energy."):
        return f"{value:.4g} J"
    return f"{value:.4g}"


def format_ratio(cell: Cell) -> str:
    if cell.ratio is None or cell.verdict == "baseline":
        return "baseline" if cell.verdict == "baseline" else ""
    text = f"{cell.ratio:.2f}x"
    if cell.ratio_low is not None:
        text += f" [{cell.ratio_low:.2f}-{cell.ratio_high:.2f}]"
    return f"{text} {'within noise' if cell.verdict == 'noise' else cell.verdict}".strip()


def table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table (a row per figure; energy rows say "not measured")."""
    runs = comparison.runs
    header = ["figure", *(run.label for run in runs)]
    names = list(comparison.figures)
    if not energy_sensors(runs):
        names.append("energy")
    rows = []
    for name in names:
        row = [_figure_label(name, runs)]
        for index in range(len(runs)):
            cell = comparison.cell(name, index)
            text = format_value(name, cell.value)
            if cell.low is not None:
                text += f" ({format_value(name, cell.low)}-{format_value(name, cell.high)})"
            ratio = format_ratio(cell)
            row.append(f"{text}  {ratio}" if ratio and ratio != "baseline" else text)
        rows.append(row)
    rows.append(["where", *(_where(run) for run in runs)])
    return header, rows


def _figure_label(name: str, runs: list[RunFigures]) -> str:
    if name.startswith("phase."):
        source = next((r.sources[name] for r in runs if name in r.sources), "")
        return f"{name} [{source}]" if source else name
    return name


def _where(run: RunFigures) -> str:
    tags = run.tags
    parts = [tags.get("host.site") or tags.get("maelstrom.backend", ""), tags.get("host.gpu.model", "")]
    parts.append(tags.get("host.cpu.model", "") if not parts[1] else "")
    return ", ".join(p for p in parts if p) or "-"
