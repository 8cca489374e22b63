"""Compose the jobs of a sweep: once per combination of config-group choices, not once per job.

Composing a config through Hydra costs tens of milliseconds; a 1,000-job sweep that only
varies values (``model.learning_rate=...``) would spend most of its submission there. Each job's
overrides are split into *structural* ones (a config group choice, ``+``/``~``/``++``, package
or ``hydra.`` overrides) and plain value changes of existing keys. The structural part is
composed, resolved and validated once; each job copies that result and sets its values, and only
those values are validated again. A value that an interpolation elsewhere in the config may read
(``${model.learning_rate}``) sends that job through Hydra's full composition, as does anything
unusual, so the outcome is always what Hydra itself would compose.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import validate
from ..config.compose import resolve_config
from ..config.validate import validate_changes

#: ``key.path=NUMBER``: the override of nearly every job of a sweep, typed here as Hydra types it.
_NUMBER = re.compile(
    r"^(?P<key>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)="
    r"(?P<value>[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|[+-]?\.[0-9]+(?:[eE][+-]?[0-9]+)?)$"
)


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"[+-]?(?:0|[1-9][0-9]*)", text) else float(text)


@dataclass
class Job:
    overrides: list[str]
    #: The job's resolved, validated config (no ``hydra`` node).
    config: dict[str, Any]
    #: The composed config the job derives from (full Hydra config, with ``hydra``).
    base: Any
    #: Values set on top of ``base`` (empty when the job was composed in full).
    changes: dict[str, Any]


@dataclass
class _Base:
    cfg: Any
    config: dict[str, Any]
    interpolations: list[str]


def _interpolations(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _interpolations(v)]
    if isinstance(node, list):
        return [s for v in node for s in _interpolations(v)]
    return [node] if isinstance(node, str) and "${" in node else []


def _has(config: dict[str, Any], key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def _copy(node: Any) -> Any:
    """A copy of plain config data (dicts, lists, scalars): several times faster than ``deepcopy``,
    which a 5,000-job sweep would call for every job."""
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def _with(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``config`` with ``key`` set to a copy of ``value``: only the mappings on the key's path are
    copied, the rest is shared with ``config`` (a job's config is read, never changed in place, and
    a 5,000-job sweep would otherwise copy every node of the config 5,000 times)."""
    *parents, last = key.split(".")
    top = dict(config)
    node = top
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    node[last] = _copy(value)
    return top


def compose_jobs(config_loader: Any, master: Any, job_overrides: Sequence[Sequence[str]]) -> Iterator[Job]:
    """Resolved, validated configs of a sweep's jobs (what ``load_sweep_config`` + validation gives),
    one at a time."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    parsed_texts: dict[str, Any] = {}

    def parse(text: str) -> Any:
        if text not in parsed_texts:  # the same override recurs in every job of a sweep
            parsed_texts[text] = parser.parse_override(text)
        return parsed_texts[text]

    repository = getattr(config_loader, "repository", None)
    bases: dict[tuple[str, ...], _Base] = {}
    groups: dict[str, bool] = {}

    def is_group(key: str) -> bool:
        if key not in groups:  # a search of every config source; the same keys recur in every job
            groups[key] = repository.group_exists(key)
        return groups[key]

    def base_of(structural: list[str]) -> _Base:
        key = tuple(structural)
        if key not in bases:
            cfg = config_loader.load_sweep_config(master, list(structural))
            config = resolve_config(cfg)
            validate(config)
            plain = OmegaConf.to_container(cfg, resolve=False)
            plain.pop("hydra", None)
            bases[key] = _Base(cfg, config, _interpolations(plain))
        return bases[key]

    # values every job sets alike are set once, on a config the jobs share: the most common first
    counts = collections.Counter(text for overrides in job_overrides for text in overrides)
    derived: dict[tuple[int, str], dict[str, Any]] = {}  # (id of config, override) -> config

    for overrides in job_overrides:
        overrides = list(overrides)
        structural: list[str] = []
        values: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for text in overrides:
            number = _NUMBER.match(text)
            if number and repository is not None and not is_group(number["key"]):
                values[number["key"]] = _number(number["value"])
                texts[number["key"]] = text
                continue
            o = parse(text)
            value = o.value() if not o.is_sweep_override() else None
            simple = (
                repository is not None
                and not (o.is_add() or o.is_delete() or o.is_force_add() or o.is_hydra_override())
                and not o.is_sweep_override()
                and o.package is None
                and not is_group(o.key_or_group)
                and not isinstance(value, dict)
                and not (isinstance(value, str) and "${" in value)
            )
            if simple:
                values[o.key_or_group] = value
                texts[o.key_or_group] = text
            else:
                structural.append(text)
        base = base_of(structural)
        fast = all(
            _has(base.config, key) and not any(key.rsplit(".", 1)[-1] in s for s in base.interpolations)
            for key in values
        )
        if not fast:
            cfg = config_loader.load_sweep_config(master, overrides)
            config = resolve_config(cfg)
            validate(config)
            yield Job(overrides, config, cfg, {})
            continue
        config = base.config
        for key in sorted(values, key=lambda k: -counts[texts[k]]):
            step = (id(config), texts[key])
            if step not in derived:  # each entry keeps its config alive: the id stays its own
                derived[step] = _with(config, key, values[key])
            config = derived[step]
        validate_changes(config, values)
        yield Job(overrides, config, base.cfg, values)


def job_config(job: Job, config_loader: Any, master: Any) -> Any:
    """The full Hydra config of a job (composed on demand, for the rare reader of a JobReturn's config)."""
    if not job.changes:
        return job.base
    return config_loader.load_sweep_config(master, job.overrides)
