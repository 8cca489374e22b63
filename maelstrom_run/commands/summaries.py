"""What the commands show of submissions: dry runs, the progress of jobs being waited for (a bar, or
the jobs' own output), and the summary of a sweep. The libraries in ``launch/`` return data or call
these through :class:`~maelstrom_run.launch.monitor.WaitView` and
:class:`~maelstrom_run.launch.sweep.SweepReporter`; they print nothing themselves."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .console import make_console

if TYPE_CHECKING:
    from ..core.spec import RunSpec
    from ..launch.registry import RunRecord
    from ..launch.sweep import SweepSummary

#: Rows of the sweep summary table before it only counts.
_SUMMARY_ROWS = 40


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
        out += [f"  {name}" for name in rendered.files]
    hashes = sorted({s.config_hash[:12] for s in specs})
    more = " ..." if len(hashes) > 3 else ""
    out.append(f"{len(specs)} job(s), config hash {', '.join(hashes[:3])}{more}; nothing was submitted")
    print("\n".join(out))


class JobsBar:
    """A :class:`~maelstrom_run.launch.monitor.WaitView`: one bar of finished jobs with their states."""

    def __init__(self) -> None:
        self.console = make_console(stderr=True)
        self.progress: Any = None
        self.task: Any = None

    def start(self, records: Sequence[RunRecord]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
        self.console.print("[yellow]interrupted: cancelling the unfinished jobs[/yellow]")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class FollowOutput(JobsBar):
    """A :class:`~maelstrom_run.launch.monitor.WaitView` that passes the jobs' own output through."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets: dict[tuple[str, str], int] = defaultdict(int)

    def start(self, records: Sequence[RunRecord]) -> None:
        pass

    def update(self, records: Sequence[RunRecord]) -> None:
        from ..launch.monitor import new_output

        for stream, text in new_output(records, self.offsets):
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(text)
            target.flush()

    done = update


def wait_view(follow: bool) -> JobsBar:
    """The jobs' output when following one run, else a progress bar."""
    return FollowOutput() if follow else JobsBar()


class SweepReport:
    """A :class:`~maelstrom_run.launch.sweep.SweepReporter` on the terminal (the Hydra launcher's)."""

    def dry_run(self, specs: Sequence[RunSpec]) -> None:
        print_dry_run(specs)

    def wait_view(self) -> JobsBar:
        return JobsBar()

    def summary(self, summary: SweepSummary) -> None:
        print_sweep_summary(summary)


def print_sweep_summary(summary: SweepSummary) -> None:
    """A table of the sweep's jobs (the first ones of a large sweep, then counts), and what to run next."""
    from rich.table import Table

    sweep_id, records, waited = summary.sweep_id, summary.records, summary.waited
    overrides, results = summary.overrides, summary.results
    console = make_console(stderr=True)
    table = Table(title=f"sweep {sweep_id}", title_justify="left")
    for column in ("#", "run id", "overrides", "state", "metrics / message"):
        table.add_column(column, no_wrap=column in ("run id", "state"), overflow="fold")
    shown = list(zip(records, overrides, results, strict=True))
    if len(shown) > _SUMMARY_ROWS:  # a large sweep: its first jobs, then the counts
        shown = shown[: _SUMMARY_ROWS // 2]
    for record, job, result in shown:
        metrics = result.metrics
        detail = (
            "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:4]) or (record.message or "")[:60]
        )
        table.add_row(str(record.sweep_index), record.run_id, " ".join(job), record.state, detail)
    console.print(table)
    if len(shown) < len(records):
        counts = Counter(r.state for r in records)
        console.print(
            f"... and {len(records) - len(shown)} more jobs; all {len(records)}: "
            + ", ".join(f"{n} {state}" for state, n in counts.most_common())
        )
    if waited:
        console.print(
            f"follow up: maelstrom runs list --sweep {sweep_id}   "
            f"re-run failures: maelstrom runs rerun --sweep {sweep_id} --failed"
        )
    else:
        job_ids = sorted({(r.job_id or "").split("_")[0] for r in records if r.job_id})
        where = f" (job {', '.join(job_ids[:4])}{' ...' if len(job_ids) > 4 else ''})" if job_ids else ""
        console.print(
            f"submitted {len(records)} jobs to {records[0].backend}{where}, without waiting.\n"
            f"follow it:  maelstrom runs watch {sweep_id}\n"
            f"list jobs:  maelstrom runs list --sweep {sweep_id}\n"
            f"cancel it:  maelstrom runs cancel --sweep {sweep_id}"
        )
