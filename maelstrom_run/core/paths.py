"""Where maelstrom-run keeps its state: ``$MAELSTROM_HOME`` (default ``~/.maelstrom``).

- ``registry.db``  the run registry (SQLite, WAL)
- ``runs/<run_id>/``  one directory per run: spec.yaml, stdout.log, stderr.log, result.json
- ``sweeps/<sweep_id>/``  the specs of every job of a sweep, written before submission
- ``mlflow.db`` and ``mlartifacts/``  the embedded MLflow store (when no tracking URI is set)
- ``cache/``  datasets and generated sample data
- ``worktrees/``  recorded code materialised for re-runs
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("MAELSTROM_HOME") or Path.home() / ".maelstrom").expanduser().absolute()


def registry_path() -> Path:
    return home() / "registry.db"


def runs_dir() -> Path:
    return home() / "runs"


def sweeps_dir() -> Path:
    return home() / "sweeps"


def cache_dir() -> Path:
    return Path(os.environ.get("MAELSTROM_CACHE") or home() / "cache").expanduser().absolute()


def worktrees_dir() -> Path:
    return home() / "worktrees"


def user_config_dirs() -> list[Path]:
    """Directories of ``$MAELSTROM_CONFIG_PATH``, searched before the shipped ``conf/``."""
    return [
        Path(d).expanduser().absolute()
        for d in os.environ.get("MAELSTROM_CONFIG_PATH", "").split(os.pathsep)
        if d
    ]


def default_tracking_uri() -> str:
    """The embedded MLflow store: a SQLite file with artefacts beside it."""
    return f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (home() / "mlartifacts").as_uri()
