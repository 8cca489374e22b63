"""Freeze a recorded run (or sweep) into an experiment config: ``conf/experiment/NAME.yaml``.

The file follows Hydra's "configuring experiments" pattern (``# @package _global_``, a defaults
list of ``override /GROUP: OPTION``) and holds every config group choice of the run plus every
value of its resolved config that differs from what those choices compose to. Secret references
stay references. ``maelstrom-run +experiment=NAME`` then composes the run's config again; before
anything is written the file is composed here and its config hash compared with the run's, so a
frozen file that would not give the same config is never written.

A sweep is frozen as its common part plus the swept values in ``hydra.sweeper.params``, so
``maelstrom-run -m +experiment=NAME`` runs the same grid again.

The header records the source run, config hash, git commit (and whether its diff was clean) and
the package versions, which :mod:`.envdrift` compares with those of a later run of the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import secrets
from ..config.compose import resolve_config
from ..core import paths
from ..core.errors import ConfigError
from ..core.rundir import write_atomic
from ..core.spec import RunSpec, config_hash
from . import envdrift
from .gitinfo import repository_with
from .registry import Registry

GROUP = "experiment"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


@dataclass
class Frozen:
    """What :func:`freeze_run` / :func:`freeze_sweep` wrote."""

    path: Path
    name: str
    config_dir: Path
    #: The config hash of each job the file composes to (one for a run).
    hashes: list[str]
    source: str
    #: Parameters swept (``hydra.sweeper.params``); empty for a run.
    params: dict[str, str]
    #: The command that runs it again.
    command: str


@contextlib.contextmanager
def search_path(dirs: Sequence[Path]) -> Iterator[None]:
    """``dirs`` searched before ``$MAELSTROM_CONFIG_PATH`` and the shipped conf/ while composing."""
    previous = os.environ.get("MAELSTROM_CONFIG_PATH")
    if dirs:
        os.environ["MAELSTROM_CONFIG_PATH"] = os.pathsep.join(
            [*(str(Path(d).expanduser().absolute()) for d in dirs), *([previous] if previous else [])]
        )
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MAELSTROM_CONFIG_PATH", None)
        else:
            os.environ["MAELSTROM_CONFIG_PATH"] = previous


def compose(overrides: Sequence[str], dirs: Sequence[Path] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(resolved config, group choices)`` of ``overrides`` as ``maelstrom-run`` composes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config.resolvers import register

    register()
    GlobalHydra.instance().clear()
    with search_path(dirs):
        try:
            with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
                cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(
                f"{' '.join(overrides) or 'the defaults'}: {str(exc).splitlines()[0]}"
            ) from None
        finally:
            GlobalHydra.instance().clear()
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    return resolve_config(cfg), choices


def _groups(choices: dict[str, Any]) -> dict[str, str]:
    """The config group choices a frozen file pins (not Hydra's own, not the experiment itself)."""
    return {g: v for g, v in choices.items() if v is not None and not g.startswith("hydra/") and g != GROUP}


def _added(overrides: Sequence[str]) -> set[str]:
    """Groups the command line added (``+group=option``) rather than changed."""
    return {t[1:].split("=", 1)[0] for t in overrides if t.startswith("+") and not t.startswith("++")}


def _defaults(groups: dict[str, str], added: set[str]) -> list[dict[str, str]]:
    # Hydra wants the ``override`` entries after every plain one
    plain = [{f"/{g}": v} for g, v in groups.items() if g in added]
    return [*plain, *({f"override /{g}": v} for g, v in groups.items() if g not in added)]


def _escape(value: Any) -> Any:
    """A resolved value as text that composes back to itself (a plain ``${`` would be interpolated)."""
    if isinstance(value, str) and "${" in value and not secrets.is_reference(value):
        return value.replace("${", "\\${")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def diff(config: dict[str, Any], base: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The values of ``config`` that ``base`` does not have (nested, leaves and lists whole)."""
    out: dict[str, Any] = {}
    for key in base.keys() - config.keys():
        raise ConfigError(
            f"{where}{key}: the run removed this key (~{where}{key}); an experiment file cannot remove "
            "keys, so it cannot be frozen"
        )
    for key, value in config.items():
        if key not in base:
            out[key] = _escape(value)
        elif isinstance(value, dict) and isinstance(base[key], dict):
            nested = diff(value, base[key], f"{where}{key}.")
            if nested:
                out[key] = nested
        elif value != base[key] or type(value) is not type(base[key]):
            out[key] = _escape(value)
    return out


def _common(diffs: list[dict[str, Any]]) -> dict[str, Any]:
    """The part every one of ``diffs`` has, with the same value."""
    first, *rest = diffs
    out: dict[str, Any] = {}
    for key, value in first.items():
        others = [d.get(key, _MISSING) for d in rest]
        if isinstance(value, dict) and all(isinstance(o, dict) for o in others):
            nested = _common([value, *others])
            if nested:
                out[key] = nested
        elif all(o == value for o in others):
            out[key] = value
    return out


_MISSING = object()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '_' and '-' (it is a config name)")
    return name


def check_commit(spec: RunSpec, cwd: Path) -> None:
    """The run's commit must be in the repository here (or the one it was recorded in)."""
    commit = (spec.git or {}).get("commit")
    if commit and repository_with(commit, [cwd, Path((spec.git or {}).get("root") or cwd)]) is None:
        raise ConfigError(
            f"run {spec.run_id}: its commit {commit[:12]} is not in the repository at {cwd}; "
            "fetch it (git fetch) or freeze from a clone that has it"
        )


def _header(spec: RunSpec, name: str, out: Path, what: str) -> list[str]:
    git = spec.git or {}
    if git.get("commit"):
        state = "uncommitted diff recorded (not in this file: `maelstrom runs rerun` restores it)"
        code = f"{git['commit']} ({'clean' if not git.get('dirty') else state})"
    else:
        code = "none recorded (not a git repository)"
    return [
        "# @package _global_",
        f"# Frozen by `maelstrom runs freeze` on {time.strftime('%Y-%m-%d %H:%M:%S %z')}.",
        f"{envdrift.SOURCE_LINE}{what}: {spec.sweep_id if what == 'sweep' else spec.run_id}",
        f"#   config hash: {spec.config_hash}"
        if what == "run"
        else f"#   config hash of job 0: {spec.config_hash}",
        f"#   git commit: {code}",
        envdrift.header(spec.packages),
        f"# Run it again: {rerun_command(name, out, sweep=what == 'sweep')}",
    ]


def rerun_command(name: str, out: Path, *, sweep: bool) -> str:
    """``maelstrom-run [-m] +experiment=NAME [--config-dir OUT]`` (no flag when OUT is searched anyway)."""
    flag = "-m " if sweep else ""
    config_dir = "" if _on_search_path(out) else f" --config-dir {out}"
    return f"maelstrom-run {flag}+{GROUP}={name}{config_dir}"


def _on_search_path(directory: Path) -> bool:
    shipped = Path(__file__).resolve().parents[1] / "conf"
    known = [shipped.resolve(), *(d.resolve() for d in paths.user_config_dirs())]
    return directory.resolve() in known


def _document(header: list[str], defaults: list[dict[str, str]], values: dict[str, Any]) -> str:
    body = {"defaults": defaults, **values} if defaults else values
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join(header) + "\n" + text


def _target(out: Path, name: str, force: bool) -> Path:
    path = out / GROUP / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; choose another --name, or --force to replace it")
    return path


@contextlib.contextmanager
def _staged(name: str, text: str) -> Iterator[Path]:
    """A config directory with ``text`` as ``experiment/NAME.yaml`` (searched first while composing)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / GROUP).mkdir()
        (Path(tmp) / GROUP / f"{name}.yaml").write_text(text)
        yield Path(tmp)


def _hash_of(name: str, text: str, extra: Sequence[str], dirs: Sequence[Path]) -> str:
    """The config hash ``+experiment=name extra...`` composes to, with ``text`` as that file."""
    with _staged(name, text) as staged:
        config, _ = compose([f"+{GROUP}={name}", *extra], [staged, *dirs])
    return config_hash(config)


def _base_text(header: list[str], defaults: list[dict[str, str]]) -> str:
    return _document(header, defaults, {})


def freeze(
    registry: Registry,
    ident: str,
    *,
    sweep: bool = False,
    name: str | None = None,
    out: Path,
    config_dirs: Sequence[Path] = (),
    force: bool = False,
    cwd: Path | None = None,
) -> Frozen:
    """Write run ``ident`` (or with ``sweep``, sweep ``ident``) as ``out/experiment/NAME.yaml``; the
    file is composed first and written only when it gives the recorded config hash(es)."""
    if sweep:
        record = registry.sweep(ident)
        specs = _sweep_jobs(registry, record.sweep_id)
        source = record.sweep_id
    else:
        specs = [RunSpec.parse(registry.get(ident).spec)]
        source = specs[0].run_id
    if any(s.kind != "app" for s in specs):
        raise ConfigError(f"{source} ran a plain Hydra app; only maelstrom-run runs and sweeps freeze")
    name = check_name(name or source)
    check_commit(specs[0], Path(cwd or Path.cwd()))
    path = _target(out, name, force)
    dirs = [out, *config_dirs]
    if sweep:
        return _freeze_sweep(specs, source, name, path, out, dirs)
    return _freeze_run(specs[0], name, path, out, dirs)


def _sweep_jobs(registry: Registry, sweep_id: str) -> list[RunSpec]:
    """The latest spec of each index of a sweep (a re-run job replaces its original)."""
    latest: dict[int, Any] = {}
    for record in sorted(registry.list(sweep_id=sweep_id, limit=None), key=lambda r: r.created):
        latest[record.sweep_index] = record
    if not latest:
        raise ConfigError(f"sweep {sweep_id} has no jobs in the registry")
    return [RunSpec.parse(r.spec) for _, r in sorted(latest.items())]


def _freeze_run(spec: RunSpec, name: str, path: Path, out: Path, dirs: list[Path]) -> Frozen:
    _, choices = compose(spec.overrides, dirs)
    defaults = _defaults(_groups(choices), _added(spec.overrides))
    header = _header(spec, name, out, "run")
    with _staged(name, _base_text(header, defaults)) as staged:
        base, _ = compose([f"+{GROUP}={name}"], [staged, *dirs])
    text = _document(header, defaults, diff(spec.config, base))
    got = _hash_of(name, text, [], dirs)
    if got != spec.config_hash:
        raise ConfigError(
            f"run {spec.run_id}: the frozen file composes to config hash {got[:12]} here, not the run's "
            f"{spec.config_hash[:12]} (the configs changed since); freeze it on a checkout of its commit"
        )
    write_atomic(path, text)
    return Frozen(path, name, out, [got], spec.run_id, {}, rerun_command(name, out, sweep=False))


def _split(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def sweep_grid(jobs: list[list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """``(common overrides, swept key -> values in order)`` of a sweep's job overrides; a sweep that
    is not the full grid of its values is refused (the sweeper could not run it again)."""
    keys = list(dict.fromkeys(_split(t)[0] for job in jobs for t in job))
    values: dict[str, list[str]] = {k: [] for k in keys}
    for job in jobs:
        present = dict(_split(t) for t in job)
        for key in keys:
            if key not in present:
                raise ConfigError(f"{key}: set in some jobs of the sweep only; it cannot be frozen as a grid")
            if present[key] not in values[key]:
                values[key].append(present[key])
    common = [f"{k}={v[0]}" for k, v in values.items() if len(v) == 1]
    swept = {k: v for k, v in values.items() if len(v) > 1}
    combos = {tuple(dict(_split(t) for t in job)[k] for k in swept) for job in jobs}
    if len(combos) != len(jobs) or len(jobs) != math.prod(len(v) for v in swept.values()):
        raise ConfigError(
            f"the sweep's {len(jobs)} jobs are not the grid of {', '.join(swept) or 'its values'}; "
            "freeze its runs one by one"
        )
    return common, swept


def _freeze_sweep(
    specs: list[RunSpec], sweep_id: str, name: str, path: Path, out: Path, dirs: list[Path]
) -> Frozen:
    common, swept = sweep_grid([s.overrides for s in specs])
    _, choices = compose(specs[0].overrides, dirs)
    swept_groups = {k.lstrip("+") for k in swept} & set(choices)
    groups = {g: v for g, v in _groups(choices).items() if g not in swept_groups}
    defaults = _defaults(groups, _added(common))
    header = _header(specs[0], name, out, "sweep")
    params = {k: ",".join(v) for k, v in swept.items()}

    def extra(spec: RunSpec) -> list[str]:
        return [t for t in spec.overrides if _split(t)[0] in swept]

    with _staged(name, _base_text(header, defaults)) as staged:
        bases: dict[tuple[str, ...], dict[str, Any]] = {}
        diffs = []
        for spec in specs:
            structural = tuple(t for t in extra(spec) if _split(t)[0].lstrip("+") in swept_groups)
            if structural not in bases:
                bases[structural], _ = compose([f"+{GROUP}={name}", *structural], [staged, *dirs])
            diffs.append(diff(spec.config, bases[structural]))
    values = _common(diffs)
    for key in swept:  # the swept values come from the sweeper, never from the file
        _drop(values, key.lstrip("+~"))
    values.setdefault("hydra", {}).setdefault("sweeper", {})["params"] = params
    text = _document(header, defaults, values)
    hashes = []
    for spec in specs:
        got = _hash_of(name, text, extra(spec), dirs)
        if got != spec.config_hash:
            raise ConfigError(
                f"sweep {sweep_id}: job {spec.sweep_index} composes to config hash {got[:12]} from the "
                f"frozen file, not its {spec.config_hash[:12]}; freeze its runs one by one"
            )
        hashes.append(got)
    write_atomic(path, text)
    return Frozen(path, name, out, hashes, sweep_id, params, rerun_command(name, out, sweep=True))


def _drop(values: dict[str, Any], key: str) -> None:
    *parents, last = key.split(".")
    node: Any = values
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)
