"""The one way maelstrom-run writes to the terminal (rich), and what it leaves off it: the start-up
lines of frameworks (they stay in the job's log files)."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

#: Lines that frameworks write on their own (TensorFlow's and absl's C++ logging, oneDNN, MLflow's
#: store set-up, alembic's migrations): the job's log files keep them; the console shows them only
#: with ``--verbose``.
_NOISE = re.compile(
    r"(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] "  # absl / glog
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "  # TensorFlow's own C++ logging
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:DEBUG|INFO) (?:mlflow|alembic)"
    r"|(?:INFO|WARNING):(?:tensorflow|absl|alembic)"
    r"|INFO  \[alembic)"
)
#: A Python warning raised inside an installed package (``.../site-packages/x.py:12: FutureWarning: ...``);
#: the indented source line Python prints after it goes with it.
_DEPENDENCY_WARNING = re.compile(r"\S*[/\\](?:site|dist)-packages[/\\]\S+\.py:\d+: \w*Warning\b")


class NoiseFilter:
    """Drops framework lines from a stream of text that arrives in pieces (a job's growing log)."""

    def __init__(self) -> None:
        self._partial = ""
        self._in_warning = False

    def _keep(self, line: str) -> bool:
        if self._in_warning and line.startswith((" ", "\t")):
            return False
        self._in_warning = bool(_DEPENDENCY_WARNING.match(line))
        return not (self._in_warning or _NOISE.match(line))

    def feed(self, text: str) -> str:
        """The whole lines of ``text`` worth showing; an unfinished last line waits for the rest."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        return "".join(f"{line}\n" for line in lines if self._keep(line))

    def flush(self) -> str:
        """The unfinished last line, if worth showing (the job has ended)."""
        line, self._partial = self._partial, ""
        return line if line and self._keep(line) else ""


def make_console(stderr: bool = False) -> Any:
    """A rich console that colours only what maelstrom-run marks (ids, paths and numbers stay as they
    are); when piped (not a terminal) lines are kept whole instead of wrapped at 80 columns."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160
    return out


def byte_progress(show: bool = True, transient: bool = False) -> Any:
    """A rich progress bar for bytes moved (size, rate, time left), on stderr; ``show=False``: silent."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=make_console(stderr=True), disable=not show, transient=transient)


class ByteMeter:
    """A :class:`~maelstrom_run.core.transfer.Meter` drawn as one byte progress bar on stderr."""

    def __init__(self, show: bool = True) -> None:
        self._progress = byte_progress(show)
        self._task: Any = None
        self._lock = threading.Lock()

    def start(self, what: str, total: int | None) -> None:
        self._progress.start()
        self._task = self._progress.add_task(what, total=total)

    def advance(self, n: int) -> None:
        with self._lock:
            self._progress.advance(self._task, n)

    def finish(self, completed: int, total: int | None) -> None:
        self._progress.update(self._task, completed=completed, total=total)
        self._progress.stop()


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def mlflow_where(uri: str | None, experiment_id: str | None, run_id: str | None) -> str:
    """How to see an MLflow run: its URL on a server, or the ``mlflow ui`` command for a local store
    and the page to open there."""
    import shlex

    from ..tracking.sweep_page import run_url

    def page(base: str) -> str:  # the run in the classic view, or the server's front page
        return run_url(base, experiment_id, run_id) if experiment_id and run_id else base

    if uri and uri.startswith(("http://", "https://")):
        return page(uri)
    return (
        f"mlflow ui --backend-store-uri {shlex.quote(uri or '')}   then open {page('http://127.0.0.1:5000')}"
    )


def metric_text(metrics: dict[str, float], limit: int | None = None) -> str:
    items = sorted(metrics.items())[:limit]
    return "  ".join(f"{k}={v:.4g}" for k, v in items)


def print_run_summary(record: Any) -> None:
    """How a run ended: state, duration, final metrics, its MLflow run and how to see it, the run
    directory, and the one thing to run next."""
    from ..core.rundir import RunDir

    console = make_console(stderr=True)
    result = RunDir(record.run_dir).read_result()
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(record.state, "cyan")
    started = record.started or (result.started if result else None)
    ended = record.ended or (result.ended if result else None)
    took = f" after {duration(ended - started)}" if started and ended else ""
    console.rule(f"[bold {colour}]{record.run_id} {record.state}{took}[/]")
    metrics = result.metrics if result else {}
    if metrics:
        console.print(f"final metrics: {metric_text(metrics)}", soft_wrap=True)
    if record.message and record.state not in ("succeeded", "cancelled"):
        console.print(f"[{colour}]{record.message}[/]", soft_wrap=True, markup=False)
    if record.mlflow_run_id:
        experiment = result.experiment_id if result else None
        status = {"cancelled": " (KILLED)", "failed": " (FAILED)"}.get(record.state, "")
        console.print(f"MLflow run {record.mlflow_run_id}{status} in {record.tracking_uri}", soft_wrap=True)
        console.print(
            f"  see it: {mlflow_where(record.tracking_uri, experiment, record.mlflow_run_id)}", soft_wrap=True
        )
    console.print(f"run directory: {record.run_dir}", soft_wrap=True)
    if record.state in ("queued", "running", "unknown"):  # submitted to a cluster, not waited for
        console.print(f"submitted to {record.backend} as job {record.job_id}, without waiting")
        console.print(f"next: maelstrom runs watch {record.run_id}", soft_wrap=True)
        return
    step = {
        "succeeded": f"maelstrom runs info {record.run_id}",
        "failed": f"maelstrom runs logs {record.run_id} --stderr",
        "cancelled": f"maelstrom runs rerun {record.run_id}",
    }.get(record.state, f"maelstrom runs info {record.run_id}")
    console.print(f"next: {step}", soft_wrap=True)
