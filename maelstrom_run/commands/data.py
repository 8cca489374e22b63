"""``maelstrom data ...``: fetch, cache, copy and preprocess datasets (the commands; the work is in ``data/``)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError, did_you_mean
from .argtypes import nonneg_int, positive_int
from .confirm import add_yes, confirm

GET_HELP = """\
Generate (tiny/small tiers) or download (remote tiers) the files of a dataset into the cache,
and print where they are. Downloads run in parallel, resume where they stopped and are checked
against their checksums. Datasets: ap1 ... ap6 (conf/dataset/) and those of $MAELSTROM_CONFIG_PATH.

examples:
  maelstrom data get ap5                       # the tiny tier: generated sample data
  maelstrom data get ap1 --tier 5GB            # the public MET Norway files (ECMWF object store)
  maelstrom data get ap3 --tier tier-1 --jobs 8
"""

CACHE_HELP = """\
The cache lives in $MAELSTROM_CACHE (default $MAELSTROM_HOME/cache); MAELSTROM_CACHE_LIMIT
(e.g. 50GB) bounds the downloaded files, evicting the least recently used ones.
"""


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _cache(args: argparse.Namespace) -> Any:
    from ..core.retry import RetryPolicy
    from ..data.cache import Cache
    from ..data.sources import DOWNLOADS

    tries = getattr(args, "retries", DOWNLOADS.tries)
    return Cache(jobs=getattr(args, "jobs", 4), retry=RetryPolicy.tries_of(tries, delay=DOWNLOADS.delay))


def cmd_get(args: argparse.Namespace) -> int:
    from ..data.datasets import load_dataset
    from .console import ByteMeter, make_console

    cache = _cache(args)
    ds = load_dataset(
        args.dataset, args.tier, source=args.source, cache=cache, verify=args.verify, progress=ByteMeter()
    )
    console = make_console()
    common = ds.files[0].parent if len(ds.files) == 1 else _common_parent(ds.files)
    console.print(
        f"{ds.name} ({ds.kind}) tier {ds.tier} from {ds.source}: {len(ds.files)} file(s), "
        f"{_size(ds.nbytes)} in {common}",
        highlight=False,
    )
    for path in ds.files[: args.show]:
        console.print(f"  {path}", highlight=False)
    if len(ds.files) > args.show:
        console.print(f"  ... and {len(ds.files) - args.show} more", highlight=False)
    console.print(
        f'next: python -c "from maelstrom_run.data import load_dataset; '
        f"print(load_dataset('{args.dataset}', '{ds.tier}').to_xarray())\"   or   maelstrom data cache list",
        highlight=False,
    )
    return 0


def _common_parent(paths: list[Any]) -> Any:
    import os
    from pathlib import Path

    return Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")


def cmd_cache_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from .console import make_console

    cache = _cache(args)
    entries = cache.entries()
    samples = cache.sample_sets()
    console = make_console()
    table = Table(title=f"cache {cache.root}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("dataset", "size", "last access", "source", "sha256"):
        table.add_column(column, overflow="fold" if column == "source" else "ellipsis")
    for e in reversed(entries):  # most recently used first
        when = dt.datetime.fromtimestamp(e.last_access).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            e.dataset or "-", _size(e.size), when, e.source, e.checksum.removeprefix("sha256:")[:12]
        )
    for kind, item, size in samples:
        when = dt.datetime.fromtimestamp(item.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        table.add_row(kind, _size(size), when, f"sample: {item.name}", "-")
    console.print(table)
    downloaded = sum(e.size for e in entries)
    generated = sum(s for _, _, s in samples)
    limit = f" (limit {_size(cache.limit)})" if cache.limit else ""
    console.print(
        f"{len(entries)} downloaded file(s), {_size(downloaded)}{limit}; {len(samples)} sample set(s), "
        f"{_size(generated)}",
        highlight=False,
    )
    console.print("next: maelstrom data get DATASET   or   maelstrom data cache clear [--dataset NAME]")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from .console import make_console

    cache = _cache(args)
    files = [e for e in cache.entries() if args.dataset is None or e.dataset == args.dataset]
    sets = [] if args.downloads_only else [s for s in cache.sample_sets() if args.dataset in (None, s[0])]
    if args.dataset is not None and not files and not sets:
        from ..data.datasets import available

        cached = sorted(
            {e.dataset for e in cache.entries() if e.dataset} | {s[0] for s in cache.sample_sets()}
        )
        if args.dataset not in available():
            raise DataError(
                f"dataset {args.dataset!r} does not exist{did_you_mean(args.dataset, available(), noun='datasets')}"
                f" (cached: {', '.join(cached) or 'nothing'})"
            )
        raise DataError(
            f"nothing of dataset {args.dataset} is cached; cached: {', '.join(cached) or 'nothing'}"
        )
    if not files and not sets:
        make_console().print(f"the cache {cache.root} is empty; nothing to clear")
        return 0
    size = sum(e.size for e in files) + sum(s[2] for s in sets)
    names = sorted({e.dataset or "-" for e in files} | {s[0] for s in sets})
    confirm(
        f"remove {len(files)} downloaded file(s) and {len(sets)} sample set(s), {_size(size)}, "
        f"of {', '.join(names)} from {cache.root}",
        args.yes,
        "maelstrom data cache clear"
        + (f" --dataset {args.dataset}" if args.dataset else "")
        + (" --downloads-only" if args.downloads_only else ""),
    )
    removed, busy = cache.clear(args.dataset)
    samples = [] if args.downloads_only else cache.clear_samples(args.dataset)
    console = make_console()
    freed = sum(e.size for e in removed) + sum(s for _, _, s in samples)
    what = f"dataset {args.dataset}" if args.dataset else "the cache"
    console.print(
        f"cleared {what}: {len(removed)} downloaded file(s), {len(samples)} sample set(s), {_size(freed)} freed",
        highlight=False,
    )
    if busy:
        console.print(f"{len(busy)} file(s) in use by another process were kept; run it again later")
    console.print("next: maelstrom data get DATASET")
    return 0


COPY_HELP = """\
Copy files to, from or between backends. SRC and DST are local paths or BACKEND:PATH, where
BACKEND is a backend config (conf/backend/NAME.yaml, e.g. juwels, daint, slurm). A directory is
copied with everything under it: SRC/a/b lands at DST/a/b. A file already complete at the
destination is skipped and a partial one is resumed where the protocol allows, so running the
same command again continues an interrupted copy.

examples:
  maelstrom data copy ./data/ap1 juwels:/p/scratch/deepacf/ap1 --exclude '*.tmp'
  maelstrom data copy daint:/scratch/snx3000/me/runs/r1 ./r1
  maelstrom data copy juwels:/p/project/deepacf/ap5 daint:/scratch/snx3000/me/ap5
  maelstrom data copy ./x juwels:/p/home/me/x -o backend.url=https://gateway.example/rest/core
"""


def cmd_copy(args: argparse.Namespace) -> int:
    from ..data.copy import copy, parse_side
    from .console import byte_progress, make_console

    src = parse_side(args.src, args.override)
    dst = parse_side(args.dst, args.override)
    if src.backend is None and dst.backend is None:
        raise ConfigError("both SRC and DST are local; name a backend on one side (BACKEND:/path)")
    with byte_progress(not args.quiet, transient=True) as bar:
        task = bar.add_task(f"{src} -> {dst}", total=None)
        result = copy(
            src,
            dst,
            args.exclude,
            progress=lambda n: bar.advance(task, n),
            on_total=lambda total: bar.update(task, total=total),
        )
    console = make_console()
    console.print(
        f"copied {src} -> {dst}: {result.copied} file(s), {result.resumed} resumed, "
        f"{result.skipped} already there, {result.excluded} excluded; {_size(result.nbytes)} moved",
        highlight=False,
    )
    for source, why in result.failed:
        console.print(f"[red]failed[/] {source}: {why}", highlight=False)
    if result.failed:
        console.print(f"{len(result.failed)} file(s) failed; run the same command again to retry them")
        return 1
    console.print(
        f"next: the same command again checks the copy (complete files are skipped); the files are in {dst}",
        highlight=False,
    )
    return 0


def add_copy_command(sub: Any) -> None:
    p = sub.add_parser(
        "copy",
        help="copy files to, from or between backends (BACKEND:PATH)",
        description=COPY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="local path or BACKEND:/path")
    p.add_argument("dst", help="local path or BACKEND:/path")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip matching paths")
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the backends, e.g. backend.url=... (repeatable)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_copy)


class _PhaseBar:
    """The progress of ``maelstrom data preprocess``: one bar per phase, shown from the first report
    on (a complete output reports nothing and shows no bar)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int, mb_per_s: float | None) -> None:
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(
                phase, total=total, rate="files" if phase == "statistics" else ""
            )
        fields = {} if mb_per_s is None else {"rate": f"{mb_per_s:.0f} MB/s"}
        self.bar.update(self.tasks[phase], completed=done, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..data.preprocess import default_output, plan, preprocess
    from .console import make_console

    overrides = list(args.overrides)
    if not any(o.split("=", 1)[0].lstrip("+~") == "app" for o in overrides):
        overrides.insert(0, "app=ap4")
    from ..config.compose import compose_config

    config = compose_config(overrides)
    console = make_console(stderr=True)
    p = plan(config)
    output = Path(args.output).expanduser().absolute() if args.output else default_output(p)
    console.print(
        f"AP4 {p.target.name} at {p.step} h: {len(p.samples())} samples ({len(p.dates)} dates x "
        f"{len(p.years)} years, {p.shape[1]}x{p.shape[2]} grid, {len(p.channels)} channels) from {p.source}"
    )
    bar = _PhaseBar(console)
    try:
        result = preprocess(p, output, progress=None if args.quiet else bar)
    finally:
        bar.stop()
    skipped = result.samples - result.written
    done = (
        "nothing to do, already complete"
        if result.written == 0 and skipped == result.samples
        else (
            f"wrote {result.written} samples ({result.bytes_written / 1e6:.1f} MB)"
            + (f", {skipped} already done" if skipped else "")
        )
    )
    console.print(f"[green]preprocessed[/] {result.output}: {done} in {result.seconds:.1f} s")
    console.print(
        "next: maelstrom-run app=ap4" + "".join(f" {o}" for o in args.overrides if not o.startswith("app="))
    )
    return 0


def add_preprocess_command(sub: Any) -> None:
    """``maelstrom data preprocess [app=ap4] [KEY=VALUE ...]``."""
    p = sub.add_parser(
        "preprocess",
        help="turn AP4 (ENS-10) NetCDF files into normalised per-sample arrays",
        description=(
            "Compose the config as maelstrom-run would (app=ap4 unless given) and write normalised "
            "per-sample arrays with mean/std statistics per variable and level into "
            "$MAELSTROM_CACHE/preprocessed/ap4/. Interrupted runs resume: run the same command again. "
            "maelstrom-run app=ap4 does this by itself before training."
        ),
        epilog=(
            "examples:\n"
            "  maelstrom data preprocess app=ap4\n"
            "  maelstrom data preprocess app=ap4 train=small dataset.target=z500\n"
            "  maelstrom data preprocess app=ap4 dataset.source=files dataset.path=/data/ens10"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for maelstrom-run")
    p.add_argument("--output", help="directory of the arrays (default: in $MAELSTROM_CACHE/preprocessed/ap4)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_preprocess)


def add_get(sub: Any) -> None:
    p = sub.add_parser(
        "get",
        help="generate or download a dataset tier into the cache",
        description=GET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="dataset name: ap1, ap2, ap3, ap5, ap6 or one of your own")
    p.add_argument("--tier", default="tiny", help="sample tier (tiny, small) or remote tier (default: tiny)")
    p.add_argument(
        "--source",
        choices=["sample", "files", "remote"],
        help="generate, use local files or download (default: the dataset's source)",
    )
    p.add_argument("--jobs", type=positive_int, default=4, help="parallel downloads (default: 4)")
    p.add_argument("--retries", type=positive_int, default=5, help="attempts per file (default: 5)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-check the sha256 of downloaded files; open every sample or local file",
    )
    p.add_argument("--show", type=nonneg_int, default=5, help="list at most this many files (default: 5)")
    p.set_defaults(func=cmd_get)


def add_cache(sub: Any) -> None:
    cache = sub.add_parser(
        "cache",
        help="list or clear the dataset cache",
        description=CACHE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = cache.add_subparsers(dest="cache_command", required=True)
    p = commands.add_parser("list", help="cached files and sample sets, most recently used first")
    p.set_defaults(func=cmd_cache_list)
    p = commands.add_parser("clear", help="remove cached files and sample sets")
    p.add_argument("--dataset", help="only this dataset's files (its name, e.g. ap1)")
    p.add_argument("--downloads-only", action="store_true", help="keep the generated sample data")
    add_yes(p)
    p.set_defaults(func=cmd_cache_clear)


def add_commands(groups: Any) -> None:
    """Add the ``data`` command group to the ``maelstrom`` parser."""
    data: argparse.ArgumentParser = groups.add_parser("data", help="fetch, cache and preprocess datasets")
    sub = data.add_subparsers(dest="command", required=True)
    add_get(sub)
    add_cache(sub)
    add_copy_command(sub)
    add_preprocess_command(sub)
