"""Environment drift: this run's package versions against those a recorded result was produced with.

Every RunSpec records the versions of Python and the packages a run depends on
(:func:`~maelstrom_run.core.spec.package_versions`). A re-run, a run of a frozen experiment file
(whose header records the source run's versions) and a scheduled firing keep the record they
derive from in ``RunSpec.env_reference``; :func:`differences` compares the two, the command
shows one line and ``maelstrom runs info`` the details. ``--strict-env`` (``MAELSTROM_STRICT_ENV=1``
for the processes it starts) refuses to run on any difference.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import ConfigError
from ..core.spec import RunSpec

#: The line of a frozen experiment's header with the source run's versions (JSON).
PACKAGES_LINE = "#   packages: "
#: The header line naming the source run.
SOURCE_LINE = "#   source "
STRICT_ENV = "MAELSTROM_STRICT_ENV"


def requirements(packages: dict[str, str], source: str = "") -> str:
    """``packages`` as a pip requirements file, the Python version as a comment."""
    lines = [f"# recorded by maelstrom-run{f' for {source}' if source else ''}"]
    if "python" in packages:
        lines.append(f"# python=={packages['python']}")
    lines += [f"{name}=={version}" for name, version in sorted(packages.items()) if name != "python"]
    return "\n".join(lines) + "\n"


def differences(
    recorded: dict[str, str], current: dict[str, str]
) -> list[tuple[str, str | None, str | None]]:
    """``(package, recorded version, current version)`` of every package that differs (None: absent)."""
    names = sorted(set(recorded) | set(current), key=lambda n: (n != "python", n))
    return [(n, recorded.get(n), current.get(n)) for n in names if recorded.get(n) != current.get(n)]


def describe(changes: list[tuple[str, str | None, str | None]]) -> str:
    return ", ".join(f"{n} {old or '(none)'} -> {new or '(none)'}" for n, old, new in changes)


def reference(source: str, packages: dict[str, str]) -> dict[str, Any]:
    return {"source": source, "packages": dict(packages)}


def drift(spec: RunSpec) -> list[tuple[str, str | None, str | None]] | None:
    """The differences of ``spec`` from its reference; None when it has none to compare with."""
    ref = spec.env_reference
    if not ref:
        return None
    return differences(ref.get("packages") or {}, spec.packages)


def summary(spec: RunSpec) -> str | None:
    """One line: whether the environment matches the record the run derives from."""
    changes = drift(spec)
    if changes is None:
        return None
    source = spec.env_reference["source"]
    if not changes:
        return f"environment: the same package versions as {source}"
    return (
        f"environment: {len(changes)} package(s) differ from {source}: {describe(changes)}"
        f" (details: maelstrom runs info {spec.run_id}; --strict-env refuses)"
    )


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "no")


def enforce(spec: RunSpec, strict_env: bool | None = None) -> None:
    """Refuse ``spec`` (before anything is recorded) when strict and its environment differs."""
    if not (strict() if strict_env is None else strict_env):
        return
    changes = drift(spec)
    if changes:
        raise ConfigError(
            f"--strict-env: {len(changes)} package(s) differ from {spec.env_reference['source']}: "
            f"{describe(changes)}; install those versions (maelstrom runs env) or drop --strict-env"
        )


def header(packages: dict[str, str]) -> str:
    return f"{PACKAGES_LINE}{json.dumps(packages, sort_keys=True)}"


def read_header(path: Path) -> dict[str, Any] | None:
    """``{"source", "packages"}`` from a frozen experiment's header; None for any other file."""
    source, packages = None, None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if not line.startswith("#"):
            break
        if line.startswith(SOURCE_LINE):
            source = line[len(SOURCE_LINE) :].replace(":", "", 1).strip()
        elif line.startswith(PACKAGES_LINE):
            try:
                packages = json.loads(line[len(PACKAGES_LINE) :])
            except ValueError:
                return None
    if not isinstance(packages, dict):
        return None
    return reference(f"{source or 'the frozen run'} (experiment {path.stem})", packages)


def _experiment(overrides: list[str]) -> str | None:
    for text in overrides:
        key, _, value = text.lstrip("+").partition("=")
        if key == "experiment" and value:
            return value
    return None


def _search_dirs() -> list[Path]:
    """Config directories as the current composition searched them (Hydra's), else maelstrom-run's."""
    shipped = Path(__file__).resolve().parents[1] / "conf"
    sources: list[tuple[str, str]] = []
    try:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():  # a single run: the job's own record of its search path
            sources = [(s.schema, s.path) for s in HydraConfig.get().runtime.config_sources]
        elif GlobalHydra.instance().is_initialized():  # a sweep's launcher: Hydra's config loader
            sources = [(s.scheme(), s.path) for s in GlobalHydra.instance().config_loader().get_sources()]
    except Exception:  # noqa: BLE001 - no Hydra state: the fallback below
        sources = []
    dirs = []
    for schema, path in sources:
        if schema == "file":
            dirs.append(Path(path))
        elif schema == "pkg" and path.startswith("maelstrom_run.conf"):
            dirs.append(shipped)
    return dirs or [*paths.user_config_dirs(), shipped]


@functools.cache
def _cached(path: str, mtime: float) -> dict[str, Any] | None:
    return read_header(Path(path))


def experiment_reference(overrides: list[str]) -> dict[str, Any] | None:
    """The record of the frozen experiment ``overrides`` select (``+experiment=NAME``), if any."""
    name = _experiment(overrides)
    if name is None:
        return None
    for directory in _search_dirs():
        path = directory / "experiment" / f"{name}.yaml"
        if path.is_file():
            return _cached(str(path), path.stat().st_mtime)
    return None
