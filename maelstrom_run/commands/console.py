"""The one way maelstrom-run writes to the terminal (rich)."""

from __future__ import annotations

import os
import threading
from typing import Any


def make_console(stderr: bool = False) -> Any:
    """A rich console; when piped (not a terminal) lines are kept whole instead of wrapped at 80 columns."""
    from rich.console import Console

    out = Console(stderr=stderr)
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


def print_run_summary(record: Any) -> None:
    """How a run ended: state, metrics, MLflow run, run directory, and what to run next."""
    from ..core.rundir import RunDir

    console = make_console(stderr=True)
    result = RunDir(record.run_dir).read_result()
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(record.state, "cyan")
    console.rule(f"[bold {colour}]{record.run_id} {record.state}[/]")
    metrics = result.metrics if result else {}
    if metrics:
        console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    if record.message and record.state != "succeeded":
        console.print(f"[{colour}]{record.message}[/]")
    if record.mlflow_run_id:
        console.print(f"MLflow run {record.mlflow_run_id} in {record.tracking_uri}")
    console.print(f"run directory: {record.run_dir}")
    if record.state in ("queued", "running", "unknown"):  # submitted to a cluster, not waited for
        console.print(f"submitted to {record.backend} as job {record.job_id}, without waiting")
        console.print(
            f"next: maelstrom runs watch {record.run_id} | maelstrom runs logs {record.run_id} --follow | "
            f"maelstrom runs cancel {record.run_id}"
        )
        return
    console.print(
        f"next: maelstrom runs info {record.run_id} | maelstrom runs logs {record.run_id} | "
        f"maelstrom runs rerun {record.run_id}"
    )
