"""Search and recommendation across apps (their configs and label files), experiments and past runs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import taxonomy
from ..core.errors import ConfigError
from ..core.metrics import higher_is_better

Label = tuple[str, str, str]  # (scope, category, value)
Query = tuple[str | None, str, str]  # (scope or None for any, category, value)


@dataclass
class Item:
    #: ``app``, ``experiment`` or ``run``.
    kind: str
    name: str
    labels: list[Label]
    text: str
    app: str | None = None
    description: str = ""
    experiment: str | None = None
    #: ``(metric, value, run id)`` of the best recorded result, if any.
    best: tuple[str, float, str] | None = None
    score: float = 0.0
    matched: list[Label] = field(default_factory=list)


def better(name: str, a: float, b: float) -> bool:
    return a > b if higher_is_better(name) else a < b


def headline_metric(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """The metric a run is judged by: ``val_loss``, ``loss``, another loss, else the first one."""
    numeric = {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not numeric:
        return None
    for name in ("val_loss", "loss"):
        if name in numeric:
            return name, numeric[name]
    name = next((k for k in sorted(numeric) if "loss" in k), sorted(numeric)[0])
    return name, numeric[name]


def _best(runs: Iterable[Item]) -> tuple[str, float, str] | None:
    best: tuple[str, float, str] | None = None
    for run in runs:
        if run.best is None:
            continue
        name, value, run_id = run.best
        if best is None or (name == best[0] and better(name, value, best[1])):
            best = (name, value, run_id)
    return best


# -- apps ---------------------------------------------------------------------------------------
def _config_dirs() -> list[Path]:
    from ..core.paths import user_config_dirs

    return [*user_config_dirs(), Path(__file__).resolve().parents[1] / "conf"]


def _group_file(group: str, option: str, dirs: Sequence[Path]) -> Path | None:
    return next(
        (d / group / f"{option}.yaml" for d in dirs if (d / group / f"{option}.yaml").is_file()), None
    )


def app_items(dirs: Sequence[Path] | None = None) -> list[Item]:
    """Every app config on the search path with its labels (its ``/labels`` default and own ``labels``)."""
    dirs = list(dirs or _config_dirs())
    names: list[str] = []
    for d in dirs:
        names += [p.stem for p in sorted((d / "app").glob("*.yaml")) if p.stem not in names]
    items = []
    for name in names:
        path = _group_file("app", name, dirs)
        assert path is not None
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        labels_conf: dict[str, Any] = {}
        for entry in data.get("defaults") or []:
            if isinstance(entry, dict):
                for key, option in entry.items():
                    if str(key).lstrip("/").split("@")[0] == "labels" and option:
                        file = _group_file("labels", str(option), dirs)
                        if file is not None:
                            labels_conf.update(yaml.safe_load(file.read_text()) or {})
        labels_conf.update(data.get("labels") or {})
        try:
            labels = taxonomy.flatten(labels_conf)
        except ConfigError:
            labels = []
        app = data.get("app") or {}
        description = str(app.get("description") or "")
        text = " ".join([name, description, *(v for _, _, v in labels)])
        items.append(Item("app", name, labels, text, app=name, description=description))
    return items


# -- runs and experiments -----------------------------------------------------------------------
def run_items(registry: Any = None, limit: int | None = 2000) -> list[Item]:
    """Past runs from the registry: labels from ``run_labels``, best metric from their result files."""
    from ..core.rundir import RunDir
    from ..launch.labels import labels_of
    from ..launch.registry import Registry

    registry = registry or Registry()
    records = registry.list(limit=limit)
    with registry._connect() as db:
        labels = labels_of(db, [r.run_id for r in records])
    items = []
    for r in records:
        try:
            spec = yaml.safe_load(r.spec) or {}
        except yaml.YAMLError:
            spec = {}
        config = spec.get("config") or {}
        experiment = str((config.get("tracking") or {}).get("experiment") or r.app)
        overrides = " ".join(spec.get("overrides") or [])
        run_labels = sorted(labels.get(r.run_id, []))
        text = " ".join(
            [
                r.run_id,
                r.app,
                experiment,
                str(config.get("run_name") or ""),
                overrides,
                *(v for *_, v in run_labels),
            ]
        )
        description = f"{r.state}; {overrides}".strip("; ")
        item = Item(
            "run", r.run_id, run_labels, text, app=r.app, description=description, experiment=experiment
        )
        if r.state == "succeeded":
            metric = headline_metric(_metrics(RunDir(r.run_dir)))
            if metric:
                item.best = (metric[0], metric[1], r.run_id)
        items.append(item)
    return items


def experiment_items(runs: Sequence[Item]) -> list[Item]:
    """Experiments (the MLflow experiment of each run), labelled with the union of their runs' labels."""
    groups: dict[str, list[Item]] = {}
    for run in runs:
        groups.setdefault(run.experiment or run.app or "", []).append(run)
    items = []
    for name, members in sorted(groups.items()):
        labels = sorted({label for m in members for label in m.labels})
        apps = sorted({m.app for m in members if m.app})
        text = " ".join([name, *apps, *(v for *_, v in labels)])
        item = Item("experiment", name, labels, text, app=apps[0] if len(apps) == 1 else None)
        item.description = f"{len(members)} run(s) of {', '.join(apps)}"
        item.best = _best(members)
        items.append(item)
    return items


def catalogue(registry: Any = None) -> list[Item]:
    """Apps, experiments and runs, with each app's best recorded run."""
    runs = run_items(registry)
    apps = app_items()
    for app in apps:
        app.best = _best(r for r in runs if r.app == app.name)
    return [*apps, *experiment_items(runs), *runs]


# -- matching -----------------------------------------------------------------------------------
def matches(item: Item, query: Query) -> bool:
    scope, category, value = query
    return any(c == category and v == value and (scope is None or s == scope) for s, c, v in item.labels)


def search(items: Sequence[Item], labels: Sequence[Query], words: Sequence[str]) -> list[Item]:
    """Items with every label of ``labels`` and every word of ``words`` (case-insensitive, at the start
    of a word: ``rain`` finds "rain-rate" and "raining", not ``train.epochs``)."""
    patterns = [re.compile(rf"(?<![^\W_]){re.escape(w.lower())}") for w in words]
    out = []
    for item in items:
        text = item.text.lower()
        if all(matches(item, q) for q in labels) and all(p.search(text) for p in patterns):
            item.matched = [
                label for label in item.labels if any(matches(Item("", "", [label], ""), q) for q in labels)
            ]
            out.append(item)
    return out


def recommend(items: Sequence[Item], query: Sequence[Query], exclude_app: str | None = None) -> list[Item]:
    """Items ranked by label overlap with ``query``, each category weighted as the taxonomy says (0..1)."""
    tax = taxonomy.load()
    by_category: dict[str, list[Query]] = {}
    for q in query:
        by_category.setdefault(q[1], []).append(q)
    total = sum(tax.categories[c].weight for c in by_category if c in tax.categories)
    if not total:
        raise ConfigError("recommend: no labels to compare; give --label CATEGORY=VALUE or app=NAME")
    ranked = []
    for item in items:
        if exclude_app and item.app == exclude_app:
            continue
        score, matched = 0.0, []
        for category, wanted in by_category.items():
            hits = [q for q in wanted if matches(item, q)]
            if hits:
                score += tax.categories[category].weight * len(hits) / len(wanted)
                matched += [(q[0] or tax.categories[category].home, q[1], q[2]) for q in hits]
        if score > 0:
            item.score, item.matched = score / total, matched
            ranked.append(item)
    kind_order = {"app": 0, "experiment": 1, "run": 2}
    ranked.sort(key=lambda i: (-i.score, i.best is None, kind_order.get(i.kind, 3), i.name))
    return ranked


def app_query(name: str) -> list[Query]:
    """The labels of app ``name`` as a recommendation query."""
    apps = {a.name: a for a in app_items()}
    if name not in apps:
        from ..core.errors import did_you_mean

        hint = did_you_mean(name, apps, noun="apps")
        raise ConfigError(f"app={name}: no such app{hint}")
    return [(None, c, v) for _, c, v in apps[name].labels]


def _metrics(run_dir: Any) -> dict[str, float]:
    result = run_dir.read_result()
    return result.metrics if result else {}
