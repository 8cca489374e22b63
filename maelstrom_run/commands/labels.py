"""``maelstrom labels list``, ``maelstrom search`` and ``maelstrom recommend``."""

from __future__ import annotations

import argparse
from typing import Any

from .argtypes import positive_int


def _console() -> Any:
    from .console import make_console

    return make_console()


def _labels_text(labels: list[tuple[str, str, str]], home: dict[str, str]) -> str:
    return ", ".join(
        f"{c}={v}" if home.get(c) == s else f"{s}.{c}={v}" for s, c, v in sorted(labels, key=lambda x: x[1:])
    )


def _best_text(best: tuple[str, float, str] | None) -> str:
    return f"{best[0]}={best[1]:.4g} ({best[2]})" if best else "-"


def cmd_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from ..config.taxonomy import load

    tax = load()
    console = _console()
    scopes = Table(title="label scopes", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    scopes.add_column("scope")
    scopes.add_column("describes")
    for name, text in tax.scopes.items():
        scopes.add_row(name, text)
    console.print(scopes)
    table = Table(title="label categories", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("category", "scopes (first: home)", "weight", "values"):
        table.add_column(column, overflow="fold")
    categories = [c for c in tax.categories.values() if not args.category or c.name == args.category]
    if args.category and not categories:
        from ..core.errors import ConfigError, did_you_mean

        hint = did_you_mean(args.category, tax.categories, noun="categories")
        raise ConfigError(f"--category {args.category}: unknown label category{hint}")
    for c in categories:
        table.add_row(c.name, ", ".join(c.scopes), f"{c.weight:g}", ", ".join(c.values))
    console.print(table)
    console.print(f"taxonomy: {', '.join(tax.sources)}", highlight=False)
    console.print(
        "label an app in conf/labels/APP.yaml (`framework: pytorch`, or by scope `data: {licence: cc-by-4.0}`),"
        " a run with `maelstrom-run ... labels.run.hardware=gpu`; then: maelstrom search --label framework=pytorch",
        highlight=False,
    )
    return 0


def _table(items: list[Any], title: str, score: bool) -> Any:
    from rich import box
    from rich.table import Table

    from ..config.taxonomy import load

    home = {c.name: c.home for c in load().categories.values()}
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["kind", "name", *(["score"] if score else []), "labels", "best recorded", "about"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("kind", "score"))
    for item in items:
        labels = _labels_text(item.matched if score else item.labels, home)
        row = [item.kind, item.name, *([f"{item.score:.0%}"] if score else []), labels, _best_text(item.best)]
        table.add_row(*row, item.description)
    return table


def cmd_search(args: argparse.Namespace) -> int:
    from ..config.taxonomy import parse_query
    from ..labels.search import catalogue, search

    query = parse_query(args.label or [])
    words = " ".join(args.text or []).split()
    items = [i for i in catalogue() if not args.kind or i.kind in args.kind]
    found = search(items, query, words)[: args.limit]
    console = _console()
    what = (
        " ".join([*(f"{c}={v}" if s is None else f"{s}.{c}={v}" for s, c, v in query), *words])
        or "everything"
    )
    console.print(_table(found, f"search: {what}", score=False))
    counts = {k: sum(i.kind == k for i in found) for k in ("app", "experiment", "run")}
    console.print(
        f"{counts['app']} app(s), {counts['experiment']} experiment(s), {counts['run']} run(s) found; "
        + (
            "next: maelstrom runs info RUN_ID | maelstrom recommend --label ..."
            if found
            else "try fewer labels"
        ),
        highlight=False,
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from ..config.taxonomy import parse_query
    from ..core.errors import ConfigError
    from ..labels.search import app_query, catalogue, recommend

    query = parse_query(args.label or [])
    exclude = None
    for target in args.target or []:
        key, sep, value = target.partition("=")
        if key != "app" or not sep or not value:
            raise ConfigError(f"recommend {target!r}: expected app=NAME (or --label CATEGORY=VALUE)")
        query += app_query(value)
        exclude = value
    if not query:
        raise ConfigError(
            "recommend: give --label CATEGORY=VALUE ... or app=NAME; see `maelstrom labels list`"
        )
    items = [i for i in catalogue() if not args.kind or i.kind in args.kind]
    ranked = recommend(items, query, exclude_app=exclude)[: args.limit]
    console = _console()
    what = f"app={exclude}" if exclude else " ".join(f"{c}={v}" for _, c, v in query)
    console.print(_table(ranked, f"recommended for {what} (score: weighted label overlap)", score=True))
    if ranked:
        top = ranked[0]
        hint = f"maelstrom-run app={top.name}" if top.kind == "app" else f"maelstrom runs info {top.name}"
        if top.kind == "experiment":
            hint = f"maelstrom search --text {top.name}"
        console.print(f"{len(ranked)} recommendation(s); next: {hint}", highlight=False)
    else:
        console.print("nothing shares these labels; see `maelstrom labels list`", highlight=False)
    return 0


def add_commands(groups: Any) -> None:
    """Add ``labels``, ``search`` and ``recommend`` to the ``maelstrom`` parser."""
    labels = groups.add_parser("labels", help="the label taxonomy (scopes, categories, values)")
    sub = labels.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="label scopes and categories with their valid values")
    p.add_argument("--category", help="only this category")
    p.set_defaults(func=cmd_list)

    kinds = ["app", "experiment", "run"]
    p = groups.add_parser(
        "search",
        help="find apps, experiments and runs by label and text",
        description="Find apps (their configs and label files), experiments and runs (the registry) "
        "having every --label and every word of --text, e.g. "
        "`maelstrom search --label framework=pytorch --label task=classification --text rain`.",
    )
    p.add_argument("--label", action="append", metavar="CATEGORY=VALUE", help="also SCOPE.CATEGORY=VALUE")
    p.add_argument(
        "--text",
        nargs="+",
        metavar="WORD",
        help="whole words in names, descriptions, overrides (all must match)",
    )
    p.add_argument("--kind", action="append", choices=kinds, help="only apps, experiments or runs")
    p.add_argument(
        "--limit", type=positive_int, default=50, help="show at most this many results (default: 50)"
    )
    p.set_defaults(func=cmd_search)

    p = groups.add_parser(
        "recommend",
        help="apps and past runs ranked by label overlap",
        description="Rank apps, experiments and past runs by how many labels they share with the query, "
        "each category weighted as in the taxonomy (`maelstrom labels list`), with their best recorded "
        "metric. The query is --label CATEGORY=VALUE ... or app=NAME (that app's labels).",
    )
    p.add_argument("target", nargs="*", metavar="app=NAME", help="recommend for this app's labels")
    p.add_argument(
        "--label",
        action="append",
        metavar="CATEGORY=VALUE",
        help="recommend for this label (also SCOPE.CATEGORY=VALUE)",
    )
    p.add_argument("--kind", action="append", choices=kinds, help="only apps, experiments or runs")
    p.add_argument(
        "--limit", type=positive_int, default=20, help="show at most this many results (default: 20)"
    )
    p.set_defaults(func=cmd_recommend)
