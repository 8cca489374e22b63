"""``maelstrom data ...``: fetch, cache, copy and preprocess datasets."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

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
    from .cache import Cache
    from .sources import DOWNLOADS

    tries = getattr(args, "retries", DOWNLOADS.tries)
    return Cache(jobs=getattr(args, "jobs", 4), retry=RetryPolicy.tries_of(tries, delay=DOWNLOADS.delay))


def cmd_get(args: argparse.Namespace) -> int:
    from ..console import make_console
    from .datasets import load_dataset

    cache = _cache(args)
    ds = load_dataset(args.dataset, args.tier, source=args.source, cache=cache, verify=args.verify)
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

    from ..console import make_console

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
    from ..console import make_console

    cache = _cache(args)
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
    p.add_argument("--jobs", type=int, default=4, help="parallel downloads (default: 4)")
    p.add_argument("--retries", type=int, default=5, help="attempts per file (default: 5)")
    p.add_argument("--verify", action="store_true", help="re-check the sha256 of files already cached")
    p.add_argument("--show", type=int, default=5, help="list at most this many files (default: 5)")
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
    p.set_defaults(func=cmd_cache_clear)


def add_commands(groups: Any) -> None:
    """Add the ``data`` command group to the ``maelstrom`` parser."""
    data: argparse.ArgumentParser = groups.add_parser("data", help="fetch, cache and preprocess datasets")
    sub = data.add_subparsers(dest="command", required=True)
    # subcommands, one line per module
    add_get(sub)
    add_cache(sub)
    from .copy import add_copy_command
    from .preprocess import add_preprocess_command

    add_copy_command(sub)
    add_preprocess_command(sub)
