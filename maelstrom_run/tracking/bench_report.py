"""The shareable benchmark report: PNGs and one self-contained HTML page (images inlined, so the
MLflow UI shows it as it is), written to a directory and logged as MLflow artefacts under ``bench/``.

- ``phase_times.png``: violins of every phase's step times per run (log scale);
- ``tts_energy.png``: time to solution and, where measured, energy per run;
- ``accuracy_vs_time.png``: each run's headline metric against the seconds since it started.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from . import bench

ARTIFACT_DIR = "bench"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_phases(comparison: bench.Comparison) -> Any:
    plt = _pyplot()
    names = [n for n in comparison.figures if any(n in r.samples for r in comparison.runs)]
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        data = [
            (r.label, [s * 1e3 for s in r.samples[name] if s > 0])
            for r in comparison.runs
            if name in r.samples
        ]
        data = [(label, values) for label, values in data if values]
        if not data:
            continue
        ax.violinplot([v for _, v in data], showmedians=True)
        ax.set_xticks(range(1, len(data) + 1), [_short(label) for label, _ in data], rotation=20, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(name.removeprefix("phase.").removesuffix(".median_s"), fontsize=9)
        ax.set_ylabel("ms per step")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_tts_energy(comparison: bench.Comparison) -> Any:
    plt = _pyplot()
    sensors = bench.energy_sensors(comparison.runs)
    panels = [bench.TTS, *sensors]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    labels = [_short(r.label) for r in comparison.runs]
    for ax, name in zip(axes[0], panels, strict=True):
        values = [r.values.get(name, 0.0) for r in comparison.runs]
        bars = ax.bar(range(len(values)), values, color="tab:blue" if name == bench.TTS else "tab:orange")
        for bar, run in zip(bars, comparison.runs, strict=True):
            if name not in run.values:
                ax.annotate("not measured", (bar.get_x() + bar.get_width() / 2, 0), ha="center", fontsize=7)
        ax.set_xticks(range(len(values)), labels, rotation=20, fontsize=7)
        ax.set_title("time to solution (s)" if name == bench.TTS else f"{name} (joules)", fontsize=9)
    if not sensors:
        axes[0][0].set_xlabel("energy: not measured (no sensor)")
    fig.tight_layout()
    return fig


def plot_accuracy(comparison: bench.Comparison) -> Any:
    curves = [(r, r.curve) for r in comparison.runs if r.curve and r.curve[1]]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for run, (metric, points) in curves:
        ax.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label=f"{_short(run.label)} {metric}"
        )
    ax.set_xlabel("seconds since the run started")
    ax.set_title("metric against time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _short(label: str) -> str:
    return label if len(label) <= 28 else label[:12] + "..." + label[-12:]


def write(comparison: bench.Comparison, out: Path, title: str) -> list[Path]:
    """Write the PNGs and ``report.html`` into ``out``; returns the files written."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    for name, make in (
        ("phase_times.png", plot_phases),
        ("tts_energy.png", plot_tts_energy),
        ("accuracy_vs_time.png", plot_accuracy),
    ):
        fig = make(comparison)
        if fig is None:
            continue
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        images.append(out / name)
    page = out / "report.html"
    page.write_text(render_html(comparison, title, images))
    return [*images, page]


def render_html(comparison: bench.Comparison, title: str, images: list[Path]) -> str:
    header, rows = bench.table(comparison)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [f"<th>{esc(row[0])}</th>"]
        for index, text in enumerate(row[1:]):
            verdict = comparison.cell(row[0].split(" [")[0], index).verdict
            cells.append(f'<td class="{esc(verdict)}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    pictures = "".join(
        f'<h2>{esc(p.stem.replace("_", " "))}</h2><img alt="{esc(p.stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    baseline = (
        f"baseline: {esc(comparison.runs[comparison.baseline].label)}; "
        if comparison.baseline is not None
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
td.better {{ background: #e3f6e3; }} td.worse {{ background: #fbe3e3; }} td.noise {{ color: #777; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{baseline}ratios are run / baseline with a {int(bench.COVERAGE * 100)}% bootstrap interval of the
median where there are step samples; a ratio whose interval holds 1 is within noise. Energy only from
real sensors (NVML, RAPL, Slurm); "not measured" where none was there.</p>
<table><tr>{head}</tr>
{"".join(body)}
</table>
{pictures}
</body></html>
"""


def log(client: Any, run_id: str, files: list[Path]) -> None:
    for path in files:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
