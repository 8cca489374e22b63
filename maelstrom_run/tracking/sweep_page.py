"""A sweep's summary page: one self-contained HTML file (jobs with their state, the overrides that vary,
final metrics, links to the child runs in the MLflow UI, the sweep's plots inline).

The same page is the parent run's ``sweep_summary.html`` artefact (the MLflow UI shows it in its
artefact view, in a sandboxed frame: no scripts, no external files) and what
``maelstrom runs list --sweep ID --html FILE`` writes.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Where ``mlflow ui`` serves an embedded (sqlite) store unless told otherwise.
DEFAULT_UI = "http://127.0.0.1:5000"
#: MLflow 3.x UIs open pages in the GenAI view unless the link asks for the classic one (newer ones
#: read the choice from the link, not the experiment's ``mlflow.experimentKind`` tag).
CLASSIC_VIEW = "workflowType=machine_learning"
#: Metrics where larger is better; for every other main metric smaller is.
_HIGHER_IS_BETTER = ("accuracy", "auc", "f1", "r2", "skill", "precision", "recall")
#: At most this many metric columns beside the main one (the rest are in each child run).
_MAX_METRIC_COLUMNS = 6


@dataclass
class SweepJob:
    index: int
    run_id: str
    state: str
    #: The job's values of the overrides that vary in the sweep.
    overrides: dict[str, str]
    #: Final metrics (the app's return value).
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    message: str | None = None


@dataclass
class SweepPage:
    sweep_id: str
    app: str
    jobs: list[SweepJob]
    #: The overrides that vary and their values, in the sweep's order.
    varying: dict[str, list[str]]
    #: The app's main metric when its config names one (``app.metric``), else chosen by :func:`main_metric`.
    metric: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    #: History of the main metric per job (MLflow run id -> [(step, value)]), for the curves plot.
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def main(self) -> tuple[str | None, bool]:
        """(the main metric, whether higher is better)."""
        name = self.metric or main_metric([n for j in self.jobs for n in j.metrics])
        return name, bool(name) and any(word in name for word in _HIGHER_IS_BETTER)

    def best(self) -> SweepJob | None:
        """The succeeded job with the best main metric."""
        name, higher = self.main
        scored = [j for j in self.jobs if j.state == "succeeded" and name in j.metrics]
        if not name or not scored:
            return None
        return (max if higher else min)(scored, key=lambda j: j.metrics[name])

    def ui_base(self) -> str:
        uri = self.tracking_uri or ""
        return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI

    def run_url(self, mlflow_run_id: str) -> str:
        return run_url(self.ui_base(), str(self.experiment_id), mlflow_run_id)

    def label(self, job: SweepJob) -> str:
        return " ".join(f"{k}={v}" for k, v in job.overrides.items()) or f"job {job.index}"


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI at ``ui``, in the classic (model training) view."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?{CLASSIC_VIEW}"


def run_url(ui: str, experiment_id: str, mlflow_run_id: str) -> str:
    """A run's page in the MLflow UI at ``ui``, in the classic view."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{mlflow_run_id}?{CLASSIC_VIEW}"


def main_metric(names: Sequence[str]) -> str | None:
    """The metric a sweep's jobs are ranked by when the app names none: ``val_loss``, else the first
    validation score of the model (not a baseline's), else ``loss``."""
    from .plots import curve_panels

    known = list(dict.fromkeys(names))
    if "val_loss" in known:
        return "val_loss"
    panels = curve_panels(known)
    model = sorted(n for p in panels.values() for n in p["model"] if n.startswith("val_"))
    if model:
        return model[0]
    return "loss" if "loss" in known else (sorted(known)[0] if known else None)


def sweep_figure(page: SweepPage) -> Any:
    """The main metric of each job, best highlighted."""
    from .plots import sweep

    name, _ = page.main
    best = page.best()
    return sweep(
        [page.label(j) for j in page.jobs],
        [j.metrics.get(name) if name else None for j in page.jobs],
        metric=name or "no metric",
        best=page.jobs.index(best) if best else None,
        app=page.app,
        sweep_id=page.sweep_id,
    )


def curves_figure(page: SweepPage) -> Any | None:
    """The main metric per epoch of every job that logged it, on one panel."""
    from .plots import _epoch_axis, _pyplot, epoch_offset, title

    name, _ = page.main
    if not page.curves or not name:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    offset = epoch_offset(page.curves)
    epochs: list[int] = []
    best = page.best()
    for job in page.jobs:
        points = page.curves.get(job.mlflow_run_id or "")
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        shown = [s + offset for s in steps]
        epochs += shown
        width = 2.6 if job is best else 1.4
        ax.plot(shown, values, marker="o", linewidth=width, label=page.label(job))
    _epoch_axis(ax, epochs)
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title(page.app, page.sweep_id, f"{name} per epoch").replace(", run ", ", sweep "))
    fig.tight_layout()
    return fig


def png(fig: Any) -> bytes:
    """A figure as PNG bytes (the figure is closed)."""
    from .plots import _pyplot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def plots(page: SweepPage) -> dict[str, bytes]:
    """The sweep's plots as PNG bytes by file name."""
    out = {"sweep_metric.png": png(sweep_figure(page))}
    curves = curves_figure(page)
    if curves is not None:
        out["sweep_curves.png"] = png(curves)
    return out


def _metric_columns(page: SweepPage) -> list[str]:
    name, _ = page.main
    names = list(dict.fromkeys(n for j in page.jobs for n in j.metrics))
    rest = [n for n in names if n != name and "." not in n]
    rest.sort(key=lambda n: (not n.startswith("val_"), n))
    return ([name] if name in names else []) + rest[:_MAX_METRIC_COLUMNS]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1a1a1a; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; } td.id { white-space: nowrap; font-family: monospace; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #e8f6e8; font-weight: 600; }
.state-failed, .state-cancelled, .state-unknown { color: #b00020; } .state-succeeded { color: #1b7f1b; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; display: block; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def render(page: SweepPage, images: Mapping[str, bytes] | None = None) -> str:
    """The page as one HTML document (plots inlined as PNG data)."""
    esc = html.escape
    name, higher = page.main
    best = page.best()
    states: dict[str, int] = {}
    for job in page.jobs:
        states[job.state] = states.get(job.state, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    metrics = _metric_columns(page)
    head = ["#", "run", "state", *page.varying, *metrics, "MLflow run"]
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Sweep {esc(page.sweep_id)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Sweep {esc(page.sweep_id)}</h1>",
        f'<p class="sub">app <b>{esc(page.app)}</b> &middot; {len(page.jobs)} jobs: {esc(counts)}'
        f" &middot; written {esc(time.strftime('%Y-%m-%d %H:%M %Z'))}</p>",
    ]
    if page.varying:
        swept = "; ".join(f"<code>{esc(k)}</code> = {esc(', '.join(v))}" for k, v in page.varying.items())
        lines.append(f'<p id="varying">varied: {swept}</p>')
    if best is not None and name:
        lines.append(
            f'<p id="best">best by {esc(name)} ({"higher" if higher else "lower"} is better): '
            f"job {best.index}, <b>{esc(page.label(best))}</b>, {esc(name)} = {_number(best.metrics[name])}</p>"
        )
    lines.append(
        '<table id="jobs"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
    )
    for job in page.jobs:
        cells = [
            f'<td class="num">{job.index}</td>',
            f'<td class="id">{esc(job.run_id)}</td>',
            f'<td class="state-{esc(job.state)}">{esc(job.state)}'
            + (f"<br><small>{esc(job.message)}</small>" if job.message and job.state != "succeeded" else "")
            + "</td>",
            *(f"<td>{esc(job.overrides.get(k, ''))}</td>" for k in page.varying),
            *(f'<td class="num">{_number(job.metrics.get(m))}</td>' for m in metrics),
        ]
        if job.mlflow_run_id and page.experiment_id:
            url = esc(page.run_url(job.mlflow_run_id), quote=True)
            cells.append(f'<td><a href="{url}">{esc(job.mlflow_run_id[:12])}</a></td>')
        else:
            cells.append("<td></td>")
        row_class = ' class="best"' if job is best else ""
        lines.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    if page.parent_run_id and page.experiment_id:
        url = esc(page.run_url(page.parent_run_id), quote=True)
        lines.append(f'<p>parent run: <a href="{url}">{esc(page.parent_run_id)}</a>')
        if not (page.tracking_uri or "").startswith(("http://", "https://")):
            lines.append(
                f" (links open in <code>mlflow ui --backend-store-uri {esc(page.tracking_uri or '')}</code>"
                f" at {esc(DEFAULT_UI)})"
            )
        lines.append("</p>")
    for file_name, data in (images or {}).items():
        encoded = base64.b64encode(data).decode()
        lines.append(f'<img alt="{esc(file_name)}" src="data:image/png;base64,{encoded}">')
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def summary_rows(page: SweepPage) -> list[dict[str, Any]]:
    """The jobs as table rows (index, run, state, varying overrides, final metrics, MLflow run)."""
    return [
        {
            "index": j.index,
            "run_id": j.run_id,
            "state": j.state,
            **j.overrides,
            **j.metrics,
            "mlflow_run_id": j.mlflow_run_id or "",
        }
        for j in page.jobs
    ]


def summary_csv(page: SweepPage) -> str:
    import csv

    rows = summary_rows(page)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()
