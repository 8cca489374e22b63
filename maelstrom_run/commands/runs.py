"""``maelstrom runs ...``: list, inspect, follow, cancel, resume, download and re-run runs.

IDs may be abbreviated to a unique prefix. The registry lives in $MAELSTROM_HOME.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
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


#: Listings longer than this are written as plain aligned text.
_RICH_ROWS = 200


def _plain_table(console: Any, title: str, columns: Sequence[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def cmd_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from ..launch.monitor import refresh

    registry = _registry()
    if args.html and not args.sweep:
        from ..core.errors import ConfigError

        raise ConfigError("--html writes a sweep's page: give --sweep SWEEP_ID too")
    sweep_id = registry.sweep(args.sweep).sweep_id if args.sweep is not None else None
    states = [args.state] if args.state else None
    # a sweep is listed whole unless a limit is asked for; all runs, the newest 50
    limit = args.limit if args.limit is not None else (None if sweep_id else 50)
    records = refresh(registry, registry.list(sweep_id=sweep_id, limit=limit, states=states, specs=False))
    total = registry.count(sweep_id=sweep_id, states=states) if limit and len(records) >= limit else None
    columns = ("run id", "app", "backend", "state", "sweep", "created", "MLflow")
    rows = [
        (
            r.run_id,
            r.app,
            r.backend,
            r.state,
            f"{r.sweep_id}[{r.sweep_index}]" if r.sweep_id else "-",
            _when(r.created)[5:16],
            (r.mlflow_run_id or "-")[:8],
        )
        for r in records
    ]
    console = _console()
    if len(rows) > _RICH_ROWS:  # rich lays a table out cell by cell: 10,000 rows would take a minute
        _plain_table(console, f"runs in {registry.path}", columns, rows)
    else:
        table = Table(
            title=f"runs in {registry.path}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
        )
        for column in columns:
            table.add_column(
                column, no_wrap=column != "sweep", overflow="fold" if column == "sweep" else "ellipsis"
            )
        for row in rows:
            table.add_row(*row[:3], _state(row[3]), *row[4:])
        console.print(table)
    if not records:
        console.print("no runs yet: start one with `maelstrom-run app=ap1`")
    else:
        shown = f"{len(records)} of {total}" if total and total > len(records) else str(len(records))
        more = "; all of them: --limit 0" if total and total > len(records) else ""
        console.print(f"{shown} run(s){more}; details: maelstrom runs info RUN_ID")
    if args.html:
        _write_page(registry, sweep_id, Path(args.html))
        console.print(f"sweep page: {Path(args.html).resolve()}\nnext: open it in a browser")
    return 0


def _write_page(registry: Any, sweep_id: str, path: Path) -> None:
    from ..core.errors import ConfigError
    from ..launch.sweep_report import write_sweep_page

    try:
        write_sweep_page(registry, sweep_id, path)
    except OSError as exc:
        raise ConfigError(
            f"--html {path}: {exc.strerror or exc}; give a file in a writable directory"
        ) from None


def cmd_status(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..launch.monitor import refresh

    registry = _registry()
    if getattr(args, "sweep", None):  # specs only of the jobs that have not ended
        selected = registry.list(sweep_id=registry.sweep(args.sweep).sweep_id, limit=None, specs=False)
    else:
        selected = _selected(registry, args)
    records = refresh(registry, selected)
    console = _console()
    lines = []
    for r in records:
        extra = f" ({r.message})" if r.message else ""
        job = f"  job {r.job_id}" if r.job_id else "  never submitted"
        requeued = f"  requeued {r.requeues}x" if r.requeues else ""
        lines.append((r.run_id, r.state, f"{extra}{job}{requeued}"))
    if len(lines) > _RICH_ROWS:  # one write, not a rich render per line
        console.file.write("".join(f"{run}  {state}{rest}\n" for run, state, rest in lines))
    else:
        for run, state, rest in lines:
            console.print(f"{run}  {_state(state)}{rest}")
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
        ("environment", _environment(spec)),
        ("run dir", r.run_dir),
    ]
    console = _console()
    for key, value in rows:
        console.print(f"[bold]{key:>12}[/bold]  {value}", highlight=False)
    return 0


def _environment(spec: dict[str, Any]) -> str:
    """The run's packages against the record it derives from (a re-run's original, ...)."""
    from ..core.spec import RunSpec
    from ..launch.envdrift import describe, drift

    run = RunSpec.from_dict(spec)
    changes = drift(run)
    python = run.packages.get("python", "?")
    if changes is None:
        return f"python {python}, {len(run.packages) - 1} packages recorded (maelstrom runs env {run.run_id})"
    source = run.env_reference["source"]
    return f"same versions as {source}" if not changes else f"differs from {source}: {describe(changes)}"


def cmd_env(args: argparse.Namespace) -> int:
    from ..core.spec import RunSpec
    from ..launch.envdrift import requirements

    spec = RunSpec.parse(_registry().get(args.id).spec)
    sys.stdout.write(requirements(spec.packages, f"run {spec.run_id}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..launch.portable import export_run

    record, path = export_run(_registry(), args.id, Path(args.file), force=args.force)
    size = path.stat().st_size
    _console().print(
        f"exported run {record.run_id} ({record.state}) to {path} ({size / 1e3:.1f} kB)", highlight=False
    )
    _console().print(
        f"next: in another MAELSTROM_HOME or clone: maelstrom runs import {path.name}", highlight=False
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..launch.portable import import_run

    registry = _registry()
    imported = import_run(registry, Path(args.file))
    console = _console()
    code = f", code from {imported.repository}" if imported.repository else ""
    console.print(
        f"imported run {imported.run_id} ({imported.state}) into {registry.path}{code}; "
        f"run dir {imported.run_dir}",
        highlight=False,
    )
    console.print(
        f"next: maelstrom runs info {imported.run_id}   or   maelstrom runs rerun {imported.run_id}",
        highlight=False,
    )
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


def cmd_sync(args: argparse.Namespace) -> int:
    from ..launch.monitor import sync_tracking

    registry = _registry()
    done = sync_tracking(registry, _selected(registry, args), timeout=args.timeout)
    console = _console()
    waiting = 0
    for s in done:
        if not s.sent and not s.left:
            console.print(f"{s.record.run_id}: nothing waiting to be sent")
            continue
        run = f"; MLflow run {s.mlflow_run_id}" if s.mlflow_run_id else ""
        if s.left:
            waiting += 1
            console.print(
                f"{s.record.run_id}: sent {s.sent} call(s), {s.left} still waiting ({s.error}){run}"
            )
        else:
            console.print(f"{s.record.run_id}: sent {s.sent} tracking call(s){run}")
    if waiting:
        console.print(
            f"next: when the tracking server answers, maelstrom runs sync {args.id or '--sweep ' + args.sweep}"
        )
        return EXIT_FAILED
    console.print("next: maelstrom runs info RUN_ID")
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
    from ..launch.envdrift import enforce, summary

    for spec in specs:
        enforce(spec, args.strict_env)
    line = summary(specs[0]) if specs else None
    if line:
        _console(stderr=True).print(line, highlight=False, markup=False, soft_wrap=True)
    from .summaries import wait_view

    records = submit(
        specs,
        wait=not args.no_wait,
        registry=registry,
        view=wait_view(follow=len(specs) == 1 and not args.no_wait),
    )
    console = _console(stderr=True)
    for spec, record in zip(specs, records, strict=True):
        console.print(
            f"{record.run_id} (re-run of {spec.rerun_of}, config hash {spec.config_hash[:12]}) "
            f"{_state(record.state)}"
        )
    if len(records) == 1 and not args.no_wait:  # the run's summary ends with the next step
        from .console import print_run_summary

        print_run_summary(records[0])
        return 0 if records[0].state == "succeeded" else EXIT_FAILED
    if args.no_wait:
        step = f"maelstrom runs watch {specs[0].sweep_id or records[0].run_id}"
    elif specs[0].sweep_id:
        step = f"maelstrom runs list --sweep {specs[0].sweep_id}"
    else:
        step = f"maelstrom runs info {records[0].run_id}"
    console.print(f"next: {step}", soft_wrap=True)
    return 0 if args.no_wait or all(r.state == "succeeded" for r in records) else EXIT_FAILED


def cmd_freeze(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..launch.freeze import freeze

    dirs = [Path(d) for d in args.config_dir]
    out = Path(args.out) if args.out else (dirs[0] if dirs else Path("conf"))
    options = dict(name=args.name, out=out, config_dirs=dirs, force=args.force)
    if args.sweep or args.id:
        frozen = freeze(_registry(), args.sweep or args.id, sweep=bool(args.sweep), **options)
    else:
        raise ConfigError("give a run id, or --sweep SWEEP_ID; see `maelstrom runs list`")
    console = _console()
    what = f"sweep {frozen.source} ({len(frozen.hashes)} jobs)" if frozen.params else f"run {frozen.source}"
    console.print(
        f"froze {what} into {frozen.path} (config hash {frozen.hashes[0][:12]}"
        + (f", swept: {', '.join(frozen.params)}" if frozen.params else "")
        + ")",
        highlight=False,
    )
    console.print(
        f"next: git add {frozen.path} && git commit; then anywhere: {frozen.command}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    return 0


def _run_id(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """The ``id`` argument of a command about one run, completed from the registry."""
    from .completion import run_ids

    arg = p.add_argument("id", nargs="?" if optional else None, help="run id (a unique prefix will do)")
    arg.completer = run_ids  # type: ignore[attr-defined]


def add_commands(groups: Any) -> None:
    """Add the ``runs`` command group to the ``maelstrom`` parser."""
    from .completion import run_ids, run_or_sweep_ids, sweep_ids

    runs = groups.add_parser("runs", help="list, inspect, cancel and re-run runs")
    sub = runs.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="runs in the registry (newest first)")
    p.add_argument("--sweep", help="only the jobs of this sweep").completer = sweep_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--state",
        choices=["queued", "running", "succeeded", "failed", "cancelled", "unknown"],
        help="only runs in this state",
    )
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=None,
        help="at most this many (0: all; default 50, a whole --sweep)",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="with --sweep: write the sweep's summary page (jobs, varying overrides, metrics, plots) to FILE",
    )
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("status", cmd_status, "current state of a run or sweep"),
        ("cancel", cmd_cancel, "cancel a run or every unfinished job of a sweep"),
    ):
        p = sub.add_parser(name, help=text)
        _run_id(p, optional=True)
        p.add_argument("--sweep", help="every job of this sweep instead").completer = sweep_ids  # type: ignore[attr-defined]
        if name == "cancel":
            add_yes(p)
        p.set_defaults(func=func)

    p = sub.add_parser("watch", help="live progress of a sweep or run until every job ends")
    p.add_argument("id", help="sweep id or run id (a unique prefix will do)").completer = run_or_sweep_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--interval", type=positive_float, default=2.0, help="seconds between refreshes (default 2)"
    )
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("resume", help="submit the jobs of a sweep that an interrupted submission left out")
    p.add_argument("sweep", help="sweep id").completer = sweep_ids  # type: ignore[attr-defined]
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("sync", help="send the tracking a job kept while the MLflow server was away")
    _run_id(p, optional=True)
    p.add_argument("--sweep", help="every job of this sweep").completer = sweep_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds to keep trying while the server is away"
    )
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("info", help="everything recorded about a run")
    _run_id(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("logs", help="a run's output")
    _run_id(p)
    p.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("download", help="copy a run's directory here")
    _run_id(p)
    p.add_argument("dest", nargs="?", default=".", help="where to put it (default: here)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("rerun", help="run again with the recorded code and config (same config hash)")
    _run_id(p, optional=True)
    p.add_argument("--sweep", help="re-run jobs of this sweep (with --failed)").completer = sweep_ids  # type: ignore[attr-defined]
    p.add_argument("--failed", action="store_true", help="only failed, cancelled or never-submitted jobs")
    p.add_argument(
        "--current-code", action="store_true", help="use today's working tree, not the recorded commit"
    )
    p.add_argument("--no-wait", action="store_true", help="return once submitted")
    p.add_argument(
        "--strict-env", action="store_true", help="refuse when package versions differ from the original's"
    )
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser(
        "freeze", help="write a run's or sweep's config as an experiment file (+experiment=NAME)"
    )
    p.add_argument("id", nargs="?", help="run id (or --sweep SWEEP_ID)").completer = run_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--sweep", help="freeze a whole sweep (its swept values as hydra.sweeper.params)"
    ).completer = sweep_ids  # type: ignore[attr-defined]
    p.add_argument("--name", help="experiment name (default: the run or sweep id)")
    p.add_argument("--out", help="config directory to write experiment/NAME.yaml into (default: ./conf)")
    p.add_argument(
        "--config-dir",
        action="append",
        default=[],
        help="a config directory the run used (as maelstrom-run's)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing experiment file of that name")
    p.set_defaults(func=cmd_freeze)

    p = sub.add_parser("env", help="a run's package versions as a pip requirements file")
    _run_id(p)
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("export", help="write a run's record (spec, diff, packages, result) as one .tar.gz")
    _run_id(p)
    p.add_argument("file", help="FILE.tar.gz to write")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="record a run exported elsewhere (then runs info / rerun work here)")
    p.add_argument("file", help="FILE.tar.gz written by `maelstrom runs export`")
    p.set_defaults(func=cmd_import)
