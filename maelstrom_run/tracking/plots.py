"""The figures logged with every run and sweep: training curves, phase times, data throughput, a sweep's
jobs side by side.

Each function takes plain data (metric histories, the phase table, a sweep's jobs) and returns a
matplotlib figure on the file-only Agg backend; the caller saves or logs it. Epochs are shown counted
from 1, every figure's title names the app and the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .timer import STANDARD_PHASES

History = Mapping[str, Sequence[tuple[int, float]]]

#: Byte rates, scaled to the largest unit that keeps the largest value at 1 or more.
_RATE_UNITS = (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3), ("B/s", 1.0))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epoch_offset(history: History) -> int:
    """1 when the history counts epochs from 0 (so the plots count from 1), else 0."""
    steps = [step for points in history.values() for step, _ in points]
    return 1 if steps and min(steps) == 0 else 0


def _epoch_axis(ax: Any, epochs: Iterable[int]) -> None:
    """Integer epoch ticks, also for a single epoch (a locator alone puts ticks at 0.96 .. 1.04)."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted(set(epochs))
    ax.set_xlabel("epoch")
    if not epochs:
        return
    if len(epochs) <= 12:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)


def title(app: str, run_id: str, what: str) -> str:
    return f"{what} — {app}, run {run_id}"


def curve_panels(names: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """Metric names grouped into panels: ``{family: {"model": [loss, val_loss], "baseline": [...]}}``.

    A validation metric ``val_A_B`` is a baseline's score when ``val_B`` (or ``val_A``) is the model's
    own (``val_mae_raw`` beside ``val_mae``, ``val_persistence_mae`` beside ``val_mae``) and not itself
    the score others are compared with; it is drawn
    dashed on that metric's panel. Per-band scores (``val_flux_rmse.upper``) and the timer's metrics
    stay out of the curves.
    """
    names = [n for n in names if "." not in n and not n.startswith(("phase", "count", "rate", "final"))]
    known = set(names)
    panels: dict[str, dict[str, list[str]]] = {}
    baselines: dict[str, str] = {}
    for name in names:
        if not name.startswith("val_"):
            continue
        parts = name.removeprefix("val_").split("_")
        for cut in range(1, len(parts)):
            head, tail = "_".join(parts[:cut]), "_".join(parts[cut:])
            if f"val_{tail}" in known:
                baselines[name] = tail
                break
            if f"val_{head}" in known:
                baselines[name] = head
                break
    # a score that others are compared with is the model's own (val_flux_rmse beside val_rmse)
    targets = {f"val_{family}" for family in baselines.values()}
    baselines = {name: family for name, family in baselines.items() if name not in targets}
    for name in names:
        if name in baselines:
            panels.setdefault(baselines[name], {"model": [], "baseline": []})["baseline"].append(name)
        else:
            family = name.removeprefix("val_")
            panels.setdefault(family, {"model": [], "baseline": []})["model"].append(name)
    return {family: panel for family, panel in panels.items() if panel["model"]}


def curves(history: History, *, app: str, run_id: str, units: Mapping[str, str] | None = None) -> Any:
    """Loss and metric curves per epoch, one panel per metric family, with the baselines dashed;
    ``units`` (family -> unit, e.g. ``{"mae": "degC"}``) label the y axes."""
    plt = _pyplot()
    units = units or {}
    offset = epoch_offset(history)
    panels = curve_panels(history)
    columns = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.5 * rows + 0.5), squeeze=False)
    epochs: set[int] = set()
    for ax, (family, panel) in zip(axes.flat, sorted(panels.items(), key=_panel_order), strict=False):
        for name in sorted(panel["model"], key=lambda n: n.startswith("val_")):
            steps, values = zip(*history[name], strict=True)
            shown = [s + offset for s in steps]
            epochs.update(shown)
            ax.plot(shown, values, marker="o", label="validation" if name.startswith("val_") else "training")
        for name in sorted(panel["baseline"]):
            steps, values = zip(*history[name], strict=True)
            label = f"baseline: {name.removeprefix('val_').replace(family, '').strip('_')}"
            if len(set(values)) == 1:  # the same validation data every epoch: one line across
                ax.axhline(values[0], linestyle="--", color="0.35", label=label)
            else:
                ax.plot([s + offset for s in steps], values, "--", color="0.35", label=label)
        unit = units.get(family)
        ax.set_ylabel(f"{family} ({unit})" if unit else family)
        ax.set_title(family)
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title(app, run_id, "training curves"))
    fig.tight_layout()
    return fig


def _panel_order(item: tuple[str, Any]) -> tuple[int, str]:
    return (0 if item[0] == "loss" else 1, item[0])


def pipeline_order(phases: Iterable[str]) -> list[str]:
    """The standard phases in the order a training step runs them (io, forward, backward, step), then
    the app's own in the order they first appear."""
    seen = list(dict.fromkeys(phases))
    return [p for p in STANDARD_PHASES if p in seen] + [p for p in seen if p not in STANDARD_PHASES]


def phases(
    table: Sequence[Mapping[str, Any]], samples: Mapping[str, Sequence[float]], *, app: str, run_id: str
) -> Any:
    """Per-call phase times (ms, log scale) of the first epoch apart from the rest, and the seconds
    each epoch spent per phase; the first epoch is marked as warm-up (graph tracing, caches filling),
    so that it does not pass for the steady state.

    ``table``: rows of :func:`~maelstrom_run.tracking.mlflow_run.EpochLog.phase_rows` (``epoch``,
    ``phase``, ``calls``, ``total_s``), epochs as logged; ``samples``: every call's seconds per phase.
    """
    plt = _pyplot()
    rows = [r for r in table if r["epoch"] != "all"]
    epochs = sorted({int(r["epoch"]) for r in rows})
    offset = 1 if epochs and epochs[0] == 0 else 0
    order = pipeline_order([r["phase"] for r in rows] or list(samples))
    first = {r["phase"]: int(r["calls"]) for r in rows if epochs and int(r["epoch"]) == epochs[0]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    data, positions, colours, ticks = [], [], [], []
    for i, name in enumerate(order):
        values = [s * 1e3 for s in samples.get(name, [])]
        n = first.get(name, len(values))
        warm, rest = values[:n], values[n:]
        if warm:
            data.append(warm)
            positions.append(3 * i)
            colours.append("tab:orange")
        if rest:
            data.append(rest)
            positions.append(3 * i + 1)
            colours.append("tab:blue")
        ticks.append(3 * i + (0.5 if rest and warm else 0 if warm else 1))
    if data:
        boxes = left.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=True)
        for patch, colour in zip(boxes["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        left.set_yscale("log")
    left.set_xticks(ticks, order)
    left.set_ylabel("ms per call")
    left.set_title("time per call")
    from matplotlib.patches import Patch

    left.legend(
        handles=[
            Patch(color="tab:orange", alpha=0.6, label="epoch 1 (warm-up)"),
            Patch(color="tab:blue", alpha=0.6, label="later epochs"),
        ][: 2 if len(epochs) > 1 else 1],
        fontsize="small",
    )
    left.grid(alpha=0.3, axis="y")

    bottom = [0.0] * len(epochs)
    shown = [e + offset for e in epochs]
    for name in order:
        seconds = {int(r["epoch"]): float(r["total_s"]) for r in rows if r["phase"] == name}
        heights = [seconds.get(e, 0.0) for e in epochs]
        right.bar(shown, heights, bottom=bottom, label=name, width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _epoch_axis(right, shown)
    if shown:
        right.set_xticks(shown, [f"{shown[0]}\nwarm-up", *map(str, shown[1:])])
    right.set_ylabel("seconds")
    right.set_title("time per epoch, by phase")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(title(app, run_id, "where the time went"))
    fig.tight_layout()
    return fig


def rate_unit(peak_bytes_per_s: float) -> tuple[str, float]:
    """The unit (and its size in B/s) that shows ``peak_bytes_per_s`` as a number of 1 or more."""
    for unit, size in _RATE_UNITS:
        if peak_bytes_per_s >= size:
            return unit, size
    return _RATE_UNITS[-1]


def throughput(history: History, *, app: str, run_id: str) -> Any:
    """Bytes read and delivered per second of each epoch (``rate.<counter>.GBps``), in the unit that
    fits the largest value."""
    plt = _pyplot()
    offset = epoch_offset(history)
    names = sorted(n for n in history if n.startswith("rate.") and n.endswith(".GBps"))
    peak = max((v * 1e9 for n in names for _, v in history[n]), default=0.0)
    unit, size = rate_unit(peak)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    epochs: list[int] = []
    for name in names:
        steps, values = zip(*history[name], strict=True)
        shown = [s + offset for s in steps]
        epochs += shown
        label = name.removeprefix("rate.").removesuffix(".GBps").replace("_", " ")
        ax.plot(shown, [v * 1e9 / size for v in values], marker="o", label=label)
    _epoch_axis(ax, epochs)
    ax.set_ylabel(f"{unit} over the epoch")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(title(app, run_id, "data throughput"))
    fig.tight_layout()
    return fig


def sweep(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    metric: str,
    best: int | None,
    app: str,
    sweep_id: str,
) -> Any:
    """The main metric of each job of a sweep as a bar (labelled by its varying overrides); the best
    job's bar is highlighted, a job without the metric (failed, cancelled) is marked so."""
    plt = _pyplot()
    height = max(2.6, 0.45 * len(labels) + 1.4)
    fig, ax = plt.subplots(figsize=(8, height))
    positions = list(range(len(labels)))[::-1]
    shown = [v if v is not None else 0.0 for v in values]
    colours = ["tab:green" if i == best else "tab:blue" for i in range(len(labels))]
    ax.barh(positions, shown, color=colours, alpha=0.75)
    for y, value in zip(positions, values, strict=True):
        text = f"{value:.4g}" if value is not None else "no result"
        ax.text(value or 0.0, y, f" {text}", va="center", fontsize="small")
    ax.set_yticks(positions, labels)
    ax.set_xlabel(metric + (" (best in green)" if best is not None else ""))
    ax.margins(x=0.15)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title(app, sweep_id, f"{metric} per job").replace(", run ", ", sweep "))
    fig.tight_layout()
    return fig
