"""Building a RunSpec from a composed config: resolve, validate, record the code."""

from __future__ import annotations

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
    workdir = config["backend"].get("workdir")
    run_dir = Path(workdir).expanduser() / run_id if workdir else paths.runs_dir() / run_id
    code = Path(code_dir or Path.cwd()).absolute()
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
        run_dir=str(run_dir),
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
