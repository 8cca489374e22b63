"""``maelstrom bench compare|report|history``: runs side by side, from MLflow.

maelstrom bench compare RUN_OR_SWEEP ... [--baseline RUN] [--out DIR] [--tracking-uri URI]
maelstrom bench report RUN_OR_SWEEP [--out DIR] [--tracking-uri URI]
maelstrom bench history SCHEDULE_ID [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def _console() -> Any:
    from .console import make_console

    return make_console()


def _uri(args: argparse.Namespace) -> str:
    """``--tracking-uri``, else where the registry says the first run tracked to, else the default."""
    from ..tracking.mlflow_run import tracking_uri

    if args.tracking_uri:
        return args.tracking_uri
    from ..core.errors import ConfigError
    from ..launch.registry import Registry

    registry = Registry()
    for ident in args.runs:
        for getter in (registry.get, registry.sweep):
            try:
                found = getter(ident)
            except ConfigError:
                continue
            if getattr(found, "tracking_uri", None):
                return found.tracking_uri
    return tracking_uri({})


def _client(args: argparse.Namespace) -> tuple[Any, str]:
    from ..tracking import mlflow_run

    uri = mlflow_run.connect({"uri": _uri(args), "timeout_s": 10})
    import mlflow

    return mlflow.MlflowClient(uri), uri


def _load(client: Any, idents: list[str]) -> list[Any]:
    from ..tracking import bench

    ids: list[str] = []
    for ident in idents:
        ids += [i for i in bench.resolve(client, ident) if i not in ids]
    runs = [bench.load_run(client, i) for i in ids]
    for run in runs:
        bench.add_slurm_energy(client, run)
    return runs


def _print_table(comparison: Any, title: str) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from ..tracking import bench

    header, rows = bench.table(comparison)
    rows = [[escape(cell) for cell in row] for row in rows]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def _write(comparison: Any, out: Path, title: str, client: Any, run_id: str) -> list[Path]:
    from ..tracking import bench_report

    files = bench_report.write(comparison, out, title)
    bench_report.log(client, run_id, files)
    return files


def _default_out(name: str) -> Path:
    from ..core import paths

    return paths.home() / "bench" / name


def cmd_compare(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..tracking import bench, mlflow_run

    client, uri = _client(args)
    runs = _load(client, args.runs)
    baseline = 0
    if args.baseline:
        (base_id,) = bench.resolve(client, args.baseline)[:1]
        matches = [i for i, r in enumerate(runs) if r.mlflow_run_id == base_id]
        if matches:
            baseline = matches[0]
        else:
            runs.insert(0, bench.load_run(client, base_id))
    if len(runs) < 2:
        raise ConfigError(
            "bench compare: name at least two runs (or a sweep of two jobs); one run: maelstrom bench report"
        )
    comparison = bench.compare(runs, baseline)
    title = f"{len(runs)} runs against {runs[baseline].label}"
    _print_table(comparison, title)
    experiment = mlflow_run.ensure_experiment("maelstrom-bench", uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_run = client.create_run(
        experiment,
        run_name=f"compare-{stamp}",
        tags={
            "bench.compared": ",".join(r.mlflow_run_id for r in runs),
            "bench.baseline": runs[baseline].mlflow_run_id,
        },
    )
    out = Path(args.out) if args.out else _default_out(f"compare-{stamp}")
    _write(comparison, out, f"maelstrom bench compare: {title}", client, report_run.info.run_id)
    client.set_terminated(report_run.info.run_id)
    _summary(comparison, out, uri, report_run.info.run_id)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..tracking import bench

    client, uri = _client(args)
    runs = _load(client, args.runs)
    comparison = bench.compare(runs, 0 if len(runs) > 1 else None)
    title = f"{args.runs[0]}: {len(runs)} run(s)"
    _print_table(comparison, title)
    # the report goes with the run itself, or with the sweep's parent run
    target = runs[0].tags.get("mlflow.parentRunId") if len(runs) > 1 else None
    target = target or runs[0].mlflow_run_id
    out = Path(args.out) if args.out else _default_out(args.runs[0])
    _write(comparison, out, f"maelstrom bench report: {title}", client, target)
    _summary(comparison, out, uri, target)
    return 0


def _summary(comparison: Any, out: Path, uri: str, run_id: str) -> None:
    console = _console()
    verdicts = [c.verdict for c in comparison.cells.values() if c.verdict not in ("", "baseline")]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("better", "worse", "noise") if verdicts.count(v))
    console.print(
        f"{len(comparison.runs)} run(s), {len(comparison.figures)} figures{'; ' + counts if counts else ''}",
        highlight=False,
    )
    console.print(
        f"report: {out / 'report.html'} (and in MLflow run {run_id}, artefacts bench/, at {uri})",
        highlight=False,
    )
    console.print(
        f"next: mlflow ui --backend-store-uri {uri}  # open the run, Artifacts, bench/report.html",
        highlight=False,
    )


def cmd_history(args: argparse.Namespace) -> int:
    from ..schedule import benchmark

    client, uri = _client(args)
    series = benchmark.history(client, args.schedule)
    console = _console()
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"schedule {args.schedule}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for column in ("started", "run", "state", "regression", *series.metrics, "offending"):
        table.add_column(column, overflow="fold")
    for row in series.rows:
        table.add_row(*row)
    console.print(table)
    flagged = sum(1 for r in series.rows if r[3] == "true")
    console.print(
        f"{len(series.rows)} firing(s), {flagged} flagged as regressions (baseline {series.baseline or '-'})",
        highlight=False,
    )
    console.print(
        f"next: maelstrom bench compare {series.baseline or 'BASELINE'} {series.rows[-1][1] if series.rows else 'RUN'}",
        highlight=False,
    )
    return 0


def add_commands(groups: Any) -> None:
    from .completion import run_or_sweep_ids, schedule_ids

    bench = groups.add_parser("bench", help="compare runs: phase times, throughput, time to solution, energy")
    sub = bench.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tracking-uri", help="MLflow tracking URI (default: the runs' own, else MLFLOW_TRACKING_URI)"
        )

    compare = sub.add_parser("compare", help="runs or sweeps side by side, ratios to a baseline")
    compare.add_argument(
        "runs", nargs="+", metavar="RUN_OR_SWEEP", help="runs, sweeps or schedules (ids or unique prefixes)"
    ).completer = run_or_sweep_ids  # type: ignore[attr-defined]
    compare.add_argument("--baseline", help="the run the ratios are against (default: the first)")
    compare.add_argument("--out", help="directory for report.html and the PNGs")
    common(compare)
    compare.set_defaults(func=cmd_compare)
    report = sub.add_parser("report", help="the report of one run or sweep, logged to its MLflow run")
    report.add_argument(
        "runs", nargs=1, metavar="RUN_OR_SWEEP", help="a run or sweep (id or unique prefix)"
    ).completer = run_or_sweep_ids  # type: ignore[attr-defined]
    report.add_argument("--out", help="directory for report.html and the PNGs")
    common(report)
    report.set_defaults(func=cmd_report)
    history = sub.add_parser("history", help="a benchmark schedule's firings against its baseline")
    history.add_argument(
        "schedule", metavar="SCHEDULE_ID", help="schedule id (a unique prefix will do)"
    ).completer = schedule_ids  # type: ignore[attr-defined]
    common(history)
    history.set_defaults(func=cmd_history, runs=[])
