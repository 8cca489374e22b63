"""Building a RunSpec from a composed config: resolve, validate, record the code."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from ..config import validate
from ..config.compose import resolve_config
from ..core import paths
from ..core.spec import RunSpec, config_hash, new_id, package_versions
from .envdrift import enforce, experiment_reference


def build(cfg: Any, overrides: list[str], **options: Any) -> RunSpec:
    """RunSpec of a maelstrom-run application from a composed config (validated here); ``options``
    are those of :func:`from_config`."""
    config = resolve_config(cfg)
    validate(config)
    return from_config(config, overrides, **options)


@functools.lru_cache(maxsize=64)
def _runs_root(workdir: str | None, home: str | None, user_home: str | None, cwd: str) -> str:
    """Where run directories go, for the environment named in the arguments (a sweep asks 5,000 times)."""
    return str(Path(workdir).expanduser() if workdir else paths.runs_dir())


@functools.lru_cache(maxsize=64)
def _absolute(code_dir: str | None, cwd: str) -> Path:
    return Path(code_dir or cwd).absolute()


def from_config(
    config: dict[str, Any],
    overrides: list[str],
    *,
    run_id: str | None = None,
    sweep_id: str | None = None,
    sweep_index: int | None = None,
    sweep_size: int | None = None,
    code_dir: Path | None = None,
    git: dict[str, Any] | None | object = ...,
) -> RunSpec:
    """RunSpec of a resolved, validated config container.

    The user's code is recorded from ``code_dir`` (default: the current directory) unless ``git``
    (a :func:`~maelstrom_run.launch.gitinfo.capture` result, or None) is given.
    """
    app = config["app"]
    run_id = run_id or new_id(app["name"])
    env = os.environ.get("MAELSTROM_HOME"), os.environ.get("HOME"), os.getcwd()
    run_dir = os.path.join(_runs_root(config["backend"].get("workdir"), *env), run_id)
    code = _absolute(str(code_dir) if code_dir else None, env[2])
    if git is ...:  # not captured by the caller (a sweep captures once for all its jobs)
        from .gitinfo import capture

        git = capture(code)
    spec = RunSpec(
        run_id=run_id,
        kind="app",
        app=app["name"],
        entry=app["entry"],
        config=config,
        overrides=list(overrides),
        run_dir=run_dir,
        config_hash=config_hash(config),
        code_dir=str(code),
        git=git,
        packages=package_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        sweep_id=sweep_id,
        sweep_index=sweep_index,
        sweep_size=sweep_size,
        env_reference=experiment_reference(overrides),
    )
    enforce(spec)  # --strict-env: refused before anything is recorded
    return spec
