"""What the commands show of submissions: dry runs, the progress of jobs being waited for (a bar, or
the jobs' own output), and the summary of a sweep. The libraries in ``launch/`` return data or call
these through :class:`~maelstrom_run.launch.monitor.WaitView` and
:class:`~maelstrom_run.launch.sweep.SweepReporter`; they print nothing themselves."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .console import NoiseFilter, make_console

if TYPE_CHECKING:
    from ..core.spec import RunSpec
    from ..launch.registry import RunRecord
    from ..launch.sweep import SweepSummary

#: Rows of the sweep summary table before it only counts.
_SUMMARY_ROWS = 40
#: Staged files a dry run names (a code snapshot has hundreds).
_STAGED_SHOWN = 8
#: How long a cancelled job is given to close its MLflow run before the summary is shown.
_CANCEL_WAIT_S = 20.0


def print_dry_run(specs: Sequence[RunSpec]) -> None:
    """Show exactly what ``submit`` would send (the backend's render) and submit nothing.

    Plain text, as it is sent: a script or request that can be copied and pasted (no wrapping, no
    colour), which also spares the start-up of the terminal library.
    """
    from ..backends import get_backend

    backend = get_backend(specs[0].backend)
    out = []
    for rendered in backend.render_many(specs):
        what = specs[0].sweep_id or specs[0].run_id
        out.append(f"── dry run: {what} on {specs[0].backend.get('name')} ──")
        out.append(rendered.text.rstrip("\n"))
        out.append(f"files staged ({len(rendered.files)}):")
        out += [f"  {name}" for name in rendered.files[:_STAGED_SHOWN]]
        if len(rendered.files) > _STAGED_SHOWN:
            out.append(f"  ... and {len(rendered.files) - _STAGED_SHOWN} more")
    hashes = sorted({s.config_hash[:12] for s in specs})
    more = " ..." if len(hashes) > 3 else ""
    out.append(f"{len(specs)} job(s), config hash {', '.join(hashes[:3])}{more}; nothing was submitted")
    print("\n".join(out))


class JobsBar:
    """A :class:`~maelstrom_run.launch.monitor.WaitView`: one bar of finished jobs with their states.

    After Ctrl-C (the jobs are being cancelled) it waits for them to end, shows what they had got to
    (the run's summary, or the sweep's), and exits with 130.
    """

    def __init__(self) -> None:
        self.console = make_console(stderr=True)
        self.progress: Any = None
        self.task: Any = None
        self.records: list[RunRecord] = []
        self.cancelling = False

    def start(self, records: Sequence[RunRecord]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.records = list(records)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("jobs", total=len(records), states="")
        self.progress.start()

    def update(self, records: Sequence[RunRecord]) -> None:
        from ..launch.monitor import TERMINAL

        self.records = list(records)
        counts = Counter(r.state for r in records)
        states = "  ".join(
            f"{s}: {counts[s]}"
            for s in ("queued", "running", "succeeded", "failed", "cancelled", "unknown")
            if counts[s]
        )
        self.progress.update(self.task, completed=sum(r.state in TERMINAL for r in records), states=states)

    def done(self, records: Sequence[RunRecord]) -> None:
        pass

    def interrupted(self) -> None:
        self.cancelling = True
        self.console.print("[yellow]interrupted: cancelling the unfinished jobs[/yellow]")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.cancelling and self.records:
            self.cancelling = False
            print_cancelled(_ended(self.records))
            raise SystemExit(130)


def _ended(records: Sequence[RunRecord]) -> list[RunRecord]:
    """``records`` once each cancelled job has closed its MLflow run (or after a while)."""
    import time

    from ..launch.monitor import TERMINAL, refresh
    from ..launch.registry import Registry

    registry = Registry()
    deadline = time.monotonic() + _CANCEL_WAIT_S
    records = refresh(registry, records)
    while any(r.state not in TERMINAL for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = refresh(registry, records)
    return records


def print_cancelled(records: Sequence[RunRecord]) -> None:
    """What cancelled jobs had got to: the sweep's summary, or each run's."""
    from ..core.rundir import Result, RunDir
    from ..core.spec import RunSpec
    from ..launch.sweep import SweepSummary

    sweeps = {r.sweep_id for r in records}
    if len(records) > 1 and len(sweeps) == 1 and None not in sweeps:
        overrides = [list(RunSpec.parse(r.spec).overrides) for r in records]
        results = [RunDir(r.run_dir).read_result() or Result() for r in records]
        print_sweep_summary(SweepSummary(records[0].sweep_id or "", list(records), overrides, results, True))
        return
    from .console import print_run_summary

    for record in records:
        print_run_summary(record)


class FollowOutput(JobsBar):
    """A :class:`~maelstrom_run.launch.monitor.WaitView` that passes the jobs' own output through,
    without the frameworks' start-up lines unless ``verbose``."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.offsets: dict[tuple[str, str], int] = defaultdict(int)
        self.verbose = verbose
        self.filters: dict[str, NoiseFilter] = {"stdout": NoiseFilter(), "stderr": NoiseFilter()}

    def start(self, records: Sequence[RunRecord]) -> None:
        self.records = list(records)

    def update(self, records: Sequence[RunRecord]) -> None:
        from ..launch.monitor import new_output

        self.records = list(records)
        for stream, text in new_output(records, self.offsets):
            self._write(stream, text if self.verbose else self.filters[stream].feed(text))

    def done(self, records: Sequence[RunRecord]) -> None:
        self.update(records)
        if not self.verbose:
            for stream, noise in self.filters.items():
                self._write(stream, noise.flush())

    @staticmethod
    def _write(stream: str, text: str) -> None:
        if text:
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(text)
            target.flush()


def wait_view(follow: bool, verbose: bool = False) -> JobsBar:
    """The jobs' output when following one run, else a progress bar."""
    return FollowOutput(verbose) if follow else JobsBar()


class SweepReport:
    """A :class:`~maelstrom_run.launch.sweep.SweepReporter` on the terminal (the Hydra launcher's)."""

    def dry_run(self, specs: Sequence[RunSpec]) -> None:
        print_dry_run(specs)

    def wait_view(self) -> JobsBar:
        return JobsBar()

    def summary(self, summary: SweepSummary) -> None:
        print_sweep_summary(summary)


def varying(overrides: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each job's overrides of only the keys whose values differ between the jobs (all of them for a
    sweep of one job)."""
    jobs = [dict(o.partition("=")[::2] for o in job) for job in overrides]
    if len(jobs) < 2:
        return [list(job) for job in overrides]
    keys = {k for job in jobs for k in job}
    vary = {k for k in keys if len({job.get(k) for job in jobs}) > 1}
    return [[o for o in job if o.partition("=")[0] in vary] for job in overrides]


def best_job(records: Sequence[RunRecord], results: Sequence[Any]) -> tuple[int, str, float] | None:
    """``(position, metric, value)`` of the best succeeded job by the app's main metric (its
    validation loss, else its loss, ...: the one ``maelstrom search`` ranks by)."""
    from ..labels.search import better, headline_metric

    best: tuple[int, str, float] | None = None
    for i, (record, result) in enumerate(zip(records, results, strict=True)):
        if record.state != "succeeded":
            continue
        metric = headline_metric(result.metrics)
        if metric is None:
            continue
        name, value = metric
        if best is None or (name == best[1] and better(name, value, best[2])):
            best = (i, name, value)
    return best


def _parent_run(sweep_id: str, results: Sequence[Any]) -> tuple[str, str, str | None] | None:
    """``(parent run id, tracking URI, experiment id)`` of a sweep of maelstrom-run apps."""
    from ..core.errors import UserError
    from ..launch.registry import Registry

    try:
        sweep = Registry().sweep(sweep_id)
    except UserError:
        return None
    if not sweep.mlflow_parent_run_id or not sweep.tracking_uri:
        return None
    experiment = next((r.experiment_id for r in results if getattr(r, "experiment_id", None)), None)
    return sweep.mlflow_parent_run_id, sweep.tracking_uri, experiment


def print_sweep_summary(summary: SweepSummary) -> None:
    """A table of the sweep's jobs by the overrides that vary (the first ones of a large sweep, then
    counts), the best job, the parent MLflow run, and what to run next."""
    from rich.table import Table

    from .console import metric_text, mlflow_where

    sweep_id, records, waited = summary.sweep_id, summary.records, summary.waited
    results = summary.results
    shown_overrides = varying(summary.overrides)
    console = make_console(stderr=True)
    table = Table(title=f"sweep {sweep_id}", title_justify="left")
    for column in ("#", "run id", "overrides that vary", "state", "final metrics / message"):
        table.add_column(column, no_wrap=column in ("run id", "state"), overflow="fold")
    shown = list(zip(records, shown_overrides, results, strict=True))
    if len(shown) > _SUMMARY_ROWS:  # a large sweep: its first jobs, then the counts
        shown = shown[: _SUMMARY_ROWS // 2]
    for record, job, result in shown:
        message = "" if record.message == record.state else (record.message or "")[:60]
        detail = metric_text(result.metrics, 3) if result.metrics else message
        table.add_row(str(record.sweep_index), record.run_id, " ".join(job), record.state, detail)
    console.print(table)
    counts = Counter(r.state for r in records)
    if len(shown) < len(records):
        console.print(f"... and {len(records) - len(shown)} more jobs")
    console.print(f"{len(records)} jobs: " + ", ".join(f"{n} {state}" for state, n in counts.most_common()))
    if waited:
        best = best_job(records, results)
        if best is not None:
            i, name, value = best
            console.print(
                f"best: {records[i].run_id}  {' '.join(shown_overrides[i])}  {name}={value:.4g}",
                soft_wrap=True,
            )
    parent = _parent_run(sweep_id, results)
    if parent is not None:
        run_id, uri, experiment = parent
        console.print(f"MLflow parent run {run_id} in {uri}", soft_wrap=True)
        console.print(f"  see it: {mlflow_where(uri, experiment, run_id)}", soft_wrap=True)
    if waited:
        failed = counts["failed"] + counts["cancelled"] + counts["unknown"]
        step = (
            f"maelstrom runs rerun --sweep {sweep_id} --failed   (re-runs the {failed} that did not succeed)"
            if failed
            else f"maelstrom runs list --sweep {sweep_id}"
        )
        console.print(f"next: {step}", soft_wrap=True)
    else:
        job_ids = sorted({(r.job_id or "").split("_")[0] for r in records if r.job_id})
        where = f" (job {', '.join(job_ids[:4])}{' ...' if len(job_ids) > 4 else ''})" if job_ids else ""
        console.print(
            f"submitted {len(records)} jobs to {records[0].backend}{where}, without waiting; "
            f"cancel them with: maelstrom runs cancel --sweep {sweep_id}",
            soft_wrap=True,
        )
        console.print(f"next: maelstrom runs watch {sweep_id}", soft_wrap=True)
