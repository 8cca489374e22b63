"""``maelstrom runs ...``: list, inspect, follow, cancel, resume, download and re-run runs.

IDs may be abbreviated to a unique prefix. The registry lives in $MAELSTROM_HOME.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from ..core.errors import EXIT_FAILED, ConfigError
from .argtypes import nonneg_int, positive_float
from .confirm import add_yes, confirm


def _console(stderr: bool = False) -> Any:
    from .console import make_console

    return make_console(stderr)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


_COLOURS = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "queued": "blue"}


def _state(state: str) -> str:
    return f"[{_COLOURS.get(state, 'white')}]{state}[/]"


def _registry() -> Any:
    from ..launch.registry import Registry

    return Registry()


def _selected(registry: Any, args: argparse.Namespace) -> list[Any]:
    if getattr(args, "sweep", None) is not None:  # an empty --sweep '' is refused, not ignored
        sweep = registry.sweep(args.sweep)
        return registry.list(sweep_id=sweep.sweep_id, limit=None)
    if not args.id:
        raise ConfigError("give a run id, or --sweep SWEEP_ID; see `maelstrom runs list`")
    return [registry.get(args.id)]


def cmd_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from ..launch.monitor import refresh

    registry = _registry()
    sweep_id = registry.sweep(args.sweep).sweep_id if args.sweep is not None else None
    records = refresh(
        registry,
        registry.list(sweep_id=sweep_id, limit=args.limit, states=[args.state] if args.state else None),
    )
    table = Table(title=f"runs in {registry.path}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("run id", "app", "backend", "state", "sweep", "created", "MLflow"):
        table.add_column(
            column, no_wrap=column != "sweep", overflow="fold" if column == "sweep" else "ellipsis"
        )
    for r in records:
        sweep = f"{r.sweep_id}[{r.sweep_index}]" if r.sweep_id else "-"
        table.add_row(
            r.run_id,
            r.app,
            r.backend,
            _state(r.state),
            sweep,
            _when(r.created)[5:16],
            (r.mlflow_run_id or "-")[:8],
        )
    console = _console()
    console.print(table)
    if not records:
        console.print("no runs yet: start one with `maelstrom-run app=ap1`")
    else:
        console.print(f"{len(records)} run(s); details: maelstrom runs info RUN_ID")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..launch.monitor import refresh

    registry = _registry()
    records = refresh(registry, _selected(registry, args))
    console = _console()
    for r in records:
        extra = f" ({r.message})" if r.message else ""
        job = f"  job {r.job_id}" if r.job_id else "  never submitted"
        requeued = f"  requeued {r.requeues}x" if r.requeues else ""
        console.print(f"{r.run_id}  {_state(r.state)}{extra}{job}{requeued}")
    if len(records) > 1:
        counts = Counter(r.state for r in records)
        console.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import yaml

    from ..core.rundir import RunDir
    from ..launch.monitor import refresh

    registry = _registry()
    (r,) = refresh(registry, [registry.get(args.id)])
    spec = yaml.safe_load(r.spec)
    git = spec.get("git") or {}
    result = RunDir(r.run_dir).read_result()
    rows = [
        ("run id", r.run_id),
        ("state", _state(r.state)),
        ("message", r.message or "-"),
        ("app", f"{r.app} ({spec.get('entry')})"),
        ("backend", f"{r.backend} ({r.backend_kind}), job {r.job_id}"),
        ("sweep", f"{r.sweep_id} #{r.sweep_index}" if r.sweep_id else "-"),
        ("re-run of", r.rerun_of or "-"),
        ("overrides", " ".join(spec.get("overrides") or []) or "-"),
        ("config hash", r.config_hash),
        (
            "git",
            f"{git.get('commit') or '-'}{' + uncommitted diff' if git.get('dirty') else ''} in {git.get('root')}"
            if git
            else "-",
        ),
        ("created", _when(r.created)),
        ("started", _when(r.started)),
        ("ended", _when(r.ended)),
        ("exit code", "-" if r.exit_code is None else str(r.exit_code)),
        ("MLflow", f"run {r.mlflow_run_id} in {r.tracking_uri}" if r.mlflow_run_id else "-"),
        (
            "metrics",
            ", ".join(f"{k}={v:.4g}" for k, v in sorted((result.metrics if result else {}).items())) or "-",
        ),
        ("run dir", r.run_dir),
    ]
    console = _console()
    for key, value in rows:
        console.print(f"[bold]{key:>12}[/bold]  {value}", highlight=False)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from ..core.states import JobRef
    from ..launch.monitor import TERMINAL, backend_of, refresh

    registry = _registry()
    record = registry.get(args.id)
    if not record.job_id:
        print(f"run {record.run_id} was never submitted: no logs", file=sys.stderr)
        return EXIT_FAILED
    backend = backend_of(record)
    stream = "stderr" if args.stderr else "stdout"
    ref = JobRef(record.run_id, record.job_id, record.run_dir)
    offset = 0
    while True:
        text = backend.logs(ref, stream)
        sys.stdout.write(text[offset:])
        sys.stdout.flush()
        offset = len(text)
        if not args.follow:
            return 0
        (record,) = refresh(registry, [record])
        if record.state in TERMINAL:
            sys.stdout.write(backend.logs(ref, stream)[offset:])
            return 0
        time.sleep(0.5)


def cmd_cancel(args: argparse.Namespace) -> int:
    from ..launch.monitor import TERMINAL, cancel

    registry = _registry()
    selected = _selected(registry, args)
    if args.sweep is not None:
        live = [r for r in selected if r.state not in TERMINAL]
        if not live:
            _console().print(
                f"every job of sweep {selected[0].sweep_id if selected else args.sweep} has ended"
            )
            return 0
        shown = ", ".join(r.run_id for r in live[:5]) + (", ..." if len(live) > 5 else "")
        confirm(
            f"cancel {len(live)} unfinished job(s) of sweep {live[0].sweep_id} ({shown})",
            args.yes,
            f"maelstrom runs cancel --sweep {live[0].sweep_id}",
        )
    records = cancel(registry, selected)
    for r in records:
        _console().print(f"{r.run_id}  {_state(r.state)}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..launch.monitor import wait
    from .summaries import JobsBar

    registry = _registry()
    try:
        sweep = registry.sweep(args.id)
        records = registry.list(sweep_id=sweep.sweep_id, limit=None)
        what = f"sweep {sweep.sweep_id}"
        listing = f"maelstrom runs list --sweep {sweep.sweep_id}"
        rerun = f"maelstrom runs rerun --sweep {sweep.sweep_id} --failed"
    except ConfigError:
        records = [registry.get(args.id)]
        what = f"run {records[0].run_id}"
        listing = f"maelstrom runs info {records[0].run_id}"
        rerun = f"maelstrom runs rerun {records[0].run_id}"
    console = _console(stderr=True)
    console.print(f"watching {what} ({len(records)} job(s)); Ctrl-C stops watching, the jobs go on")
    try:
        records = wait(
            registry,
            [r.run_id for r in records],
            poll_s=args.interval,
            cancel_on_interrupt=False,
            view=JobsBar(),
        )
    except KeyboardInterrupt:
        console.print(f"stopped watching; the jobs go on. Again: maelstrom runs watch {args.id}")
        return 130
    counts = Counter(r.state for r in records)
    console.print(f"{what}: " + ", ".join(f"{n} {state}" for state, n in counts.most_common()))
    failed = counts["failed"] + counts["cancelled"] + counts["unknown"]
    console.print(f"next: {listing}" + (f" | {rerun}" if failed else ""))
    return EXIT_FAILED if failed else 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..launch.resume import resume_sweep

    registry = _registry()
    sweep = registry.sweep(args.sweep)
    adopted, submitted = resume_sweep(registry, sweep.sweep_id)
    console = _console()
    if not adopted and not submitted:
        console.print(f"sweep {sweep.sweep_id}: every job was submitted already; nothing to do")
    else:
        console.print(
            f"sweep {sweep.sweep_id}: {len(adopted)} job(s) found on the cluster and recorded, "
            f"{len(submitted)} submitted now"
        )
    console.print(f"next: maelstrom runs watch {sweep.sweep_id}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..core.states import JobRef
    from ..launch.monitor import backend_of

    dest = Path(args.dest).absolute()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest}: is a file; give a directory to download the run into")
    registry = _registry()
    record = registry.get(args.id)
    target = backend_of(record).download(JobRef(record.run_id, record.job_id or "", record.run_dir), dest)
    print(f"downloaded {record.run_id} to {target}")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from ..launch.rerun import rerun_one, rerun_sweep
    from ..launch.submit import submit

    registry = _registry()
    if args.sweep is not None:
        if not args.failed:
            raise ConfigError("rerun --sweep needs --failed (re-run the failed or missing jobs of the sweep)")
        specs = rerun_sweep(registry, args.sweep, current_code=args.current_code)
        if not specs:
            print(f"sweep {args.sweep}: every job succeeded, nothing to re-run")
            return 0
    elif args.id:
        specs = [rerun_one(registry, args.id, current_code=args.current_code)]
    else:
        raise ConfigError("give a run id, or --sweep SWEEP_ID --failed")
    from .summaries import wait_view

    records = submit(
        specs,
        wait=not args.no_wait,
        registry=registry,
        view=wait_view(follow=len(specs) == 1 and not args.no_wait),
    )
    if len(records) == 1 and not args.no_wait:
        from .console import print_run_summary

        print_run_summary(records[0])
    console = _console(stderr=True)
    for spec, record in zip(specs, records, strict=True):
        console.print(
            f"{record.run_id} (re-run of {spec.rerun_of}, config hash {spec.config_hash[:12]}) "
            f"{_state(record.state)}"
        )
    console.print(
        "next: maelstrom runs info RUN_ID   or   maelstrom runs list"
        + (f" --sweep {specs[0].sweep_id}" if specs[0].sweep_id else "")
    )
    return 0 if args.no_wait or all(r.state == "succeeded" for r in records) else EXIT_FAILED


def add_commands(groups: Any) -> None:
    """Add the ``runs`` command group to the ``maelstrom`` parser."""
    runs = groups.add_parser("runs", help="list, inspect, cancel and re-run runs")
    sub = runs.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="runs in the registry (newest first)")
    p.add_argument("--sweep", help="only the jobs of this sweep")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled", "unknown"])
    p.add_argument("--limit", type=nonneg_int, default=50)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("status", cmd_status, "current state of a run or sweep"),
        ("cancel", cmd_cancel, "cancel a run or every unfinished job of a sweep"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", nargs="?")
        p.add_argument("--sweep")
        if name == "cancel":
            add_yes(p)
        p.set_defaults(func=func)

    p = sub.add_parser("watch", help="live progress of a sweep or run until every job ends")
    p.add_argument("id", help="sweep id or run id (a unique prefix will do)")
    p.add_argument(
        "--interval", type=positive_float, default=2.0, help="seconds between refreshes (default 2)"
    )
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("resume", help="submit the jobs of a sweep that an interrupted submission left out")
    p.add_argument("sweep", help="sweep id")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("info", help="everything recorded about a run")
    p.add_argument("id")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("logs", help="a run's output")
    p.add_argument("id")
    p.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("download", help="copy a run's directory here")
    p.add_argument("id")
    p.add_argument("dest", nargs="?", default=".")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("rerun", help="run again with the recorded code and config (same config hash)")
    p.add_argument("id", nargs="?")
    p.add_argument("--sweep", help="re-run jobs of this sweep (with --failed)")
    p.add_argument("--failed", action="store_true", help="only failed, cancelled or never-submitted jobs")
    p.add_argument(
        "--current-code", action="store_true", help="use today's working tree, not the recorded commit"
    )
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.set_defaults(func=cmd_rerun)
