"""The label taxonomy and the check of a config's ``labels`` against it.

A config's labels are ``category: value`` (or a list of values), in the category's home scope,
or grouped by scope: ``labels: {data: {licence: cc-by-4.0}}``. Every label is also known in its
flat form ``(scope, category, value)``, which is what MLflow tags and the registry hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, did_you_mean
from ..core.paths import user_config_dirs
from .files import read_mapping

TAXONOMY_FILE = "taxonomy.yaml"


@dataclass
class Category:
    name: str
    scopes: list[str]
    weight: float = 1.0
    values: list[str] = field(default_factory=list)

    @property
    def home(self) -> str:
        return self.scopes[0]


@dataclass
class Taxonomy:
    scopes: dict[str, str]
    categories: dict[str, Category]
    sources: list[str]


def _files() -> list[Path]:
    shipped = Path(__file__).resolve().parents[1] / "conf" / TAXONOMY_FILE
    own = [d / TAXONOMY_FILE for d in user_config_dirs() if (d / TAXONOMY_FILE).is_file()]
    return [shipped, *reversed(own)]  # later files extend earlier ones; the first directory wins last


def _shaped(value: Any, kind: type, path: Path, key: str) -> Any:
    """``value`` (empty when absent) if it is a ``kind``; else one line naming the file and key."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        noun = "a mapping" if kind is dict else "a list"
        raise ConfigError(f"label taxonomy {path}: {key}: expected {noun}, got {value!r}"[:200])
    return value


@lru_cache(maxsize=8)
def _load(files: tuple[Path, ...]) -> Taxonomy:
    scopes: dict[str, str] = {}
    categories: dict[str, Category] = {}
    for path in files:
        data = read_mapping(path, "a mapping with scopes and categories", what="label taxonomy")
        scopes.update({str(k): str(v) for k, v in _shaped(data.get("scopes"), dict, path, "scopes").items()})
        for name, spec in _shaped(data.get("categories"), dict, path, "categories").items():
            spec = _shaped(spec, dict, path, f"categories.{name}")
            _shaped(spec.get("values"), list, path, f"categories.{name}.values")
            _shaped(spec.get("scopes"), list, path, f"categories.{name}.scopes")
            if not isinstance(spec.get("weight", 1.0), int | float):
                raise ConfigError(f"label taxonomy {path}: categories.{name}.weight: expected a number")
            old = categories.get(name)
            values = [str(v) for v in spec.get("values") or []]
            if old is not None:
                values = old.values + [v for v in values if v not in old.values]
            category = Category(
                name=str(name),
                scopes=[str(s) for s in spec.get("scopes") or (old.scopes if old else [])],
                weight=float(spec.get("weight", old.weight if old else 1.0)),
                values=values,
            )
            bad = [s for s in category.scopes if s not in scopes]
            if not category.scopes or bad:
                raise ConfigError(
                    f"label taxonomy {path}: categories.{name}.scopes: "
                    f"{'unknown scope ' + repr(bad[0]) if bad else 'missing'}; scopes: {', '.join(scopes)}"
                )
            categories[category.name] = category
    return Taxonomy(scopes, categories, [str(p) for p in files])


def load() -> Taxonomy:
    """The shipped taxonomy extended by the ``taxonomy.yaml`` files of ``$MAELSTROM_CONFIG_PATH``."""
    return _load(tuple(_files()))


def _values(raw: Any, path: str) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    for i, item in enumerate(items):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            where = f"{path}[{i}]" if isinstance(raw, list) else path
            raise ConfigError(f"{where}: expected a label value (a string), got {item!r}")
    return [str(v) for v in items]


def flatten(labels: dict[str, Any] | None, taxonomy: Taxonomy | None = None) -> list[tuple[str, str, str]]:
    """``(scope, category, value)`` of every label, after checking them; raises :class:`ConfigError`."""
    taxonomy = taxonomy or load()
    out: list[tuple[str, str, str]] = []
    for key, raw in (labels or {}).items():
        key = str(key)
        if key in taxonomy.scopes and key not in taxonomy.categories:
            if not isinstance(raw, dict):
                raise ConfigError(f"labels.{key}: a scope takes a mapping of category: value, got {raw!r}")
            for category, value in raw.items():
                out.extend(_check(key, str(category), value, f"labels.{key}.{category}", taxonomy))
        else:
            out.extend(_check(None, key, raw, f"labels.{key}", taxonomy))
    return out


def _check(
    scope: str | None, name: str, raw: Any, path: str, taxonomy: Taxonomy
) -> list[tuple[str, str, str]]:
    category = taxonomy.categories.get(name)
    if category is None:
        options = list(taxonomy.categories) + ([] if scope else list(taxonomy.scopes))
        hint = did_you_mean(name, options, noun="categories")
        raise ConfigError(f"{path}: unknown label category{hint} (see `maelstrom labels list`)")
    if scope is not None and scope not in category.scopes:
        valid = [f"'labels.{name}'", *(f"'labels.{s}.{name}'" for s in category.scopes[1:])]
        raise ConfigError(
            f"{path}: {name} labels describe {', '.join(category.scopes)}, not {scope}; "
            f"did you mean {' or '.join(valid)}?"
        )
    values = _values(raw, path)
    for value in values:
        if category.values and value not in category.values:
            hint = did_you_mean(value, category.values, noun="valid values")
            raise ConfigError(f"{path}: {value!r} is not a known {name}{hint} (see `maelstrom labels list`)")
    return [(scope or category.home, name, v) for v in values]


def check(labels: Any, key: str = "labels") -> None:
    """Validate a composed config's ``labels`` (registered with the config validator in the schema)."""
    if labels:
        flatten(labels)


def tag_name(scope: str, category: str, taxonomy: Taxonomy | None = None) -> str:
    """MLflow tag of a label: ``label.CATEGORY`` in its home scope, else ``label.SCOPE.CATEGORY``."""
    taxonomy = taxonomy or load()
    home = taxonomy.categories[category].home if category in taxonomy.categories else scope
    return f"label.{category}" if scope == home else f"label.{scope}.{category}"


def tags(labels: dict[str, Any] | None) -> dict[str, str]:
    """The MLflow tags of a config's labels (several values of one label joined by commas)."""
    out: dict[str, list[str]] = {}
    try:
        taxonomy = load()
        for scope, category, value in flatten(labels, taxonomy):
            out.setdefault(tag_name(scope, category, taxonomy), []).append(value)
    except ConfigError:  # checked when composed; a run never fails over a label
        out = {}
        for key, value in (labels or {}).items():
            out[f"label.{key}"] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return {k: ",".join(v) for k, v in out.items()}


def parse_query(items: list[str]) -> list[tuple[str | None, str, str]]:
    """``--label K=V`` (K: ``category`` or ``scope.category``) to ``(scope or None, category, value)``."""
    taxonomy = load()
    out: list[tuple[str | None, str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--label {item!r}: expected CATEGORY=VALUE, e.g. framework=pytorch")
        scope, _, category = key.rpartition(".")
        labels: dict[str, Any] = {scope: {category: value}} if scope else {category: value}
        for flat in flatten(labels, taxonomy):
            out.append((flat[0] if scope else None, flat[1], flat[2]))
    return out
