"""Shell completion (argcomplete) of ``maelstrom``: commands and options from the parser, and run,
sweep and schedule ids read from the registry as it is (opened read-only; nothing is created, and
no MLflow or Hydra is imported, so a Tab answers at once)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..core import paths

#: Ids offered at most (the newest first).
_LIMIT = 200


def _ids(table: str, column: str, prefix: str) -> list[str]:
    path = paths.registry_path()
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            rows = db.execute(
                f"SELECT {column} FROM {table} WHERE substr({column}, 1, ?) = ? ORDER BY created DESC LIMIT ?",
                (len(prefix), prefix, _LIMIT),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:  # an older registry without that table, or one being written: offer nothing
        return []
    return [row[0] for row in rows]


def run_ids(prefix: str, **_: Any) -> list[str]:
    return _ids("runs", "run_id", prefix)


def sweep_ids(prefix: str, **_: Any) -> list[str]:
    return _ids("sweeps", "sweep_id", prefix)


def run_or_sweep_ids(prefix: str, **_: Any) -> list[str]:
    return sweep_ids(prefix) + run_ids(prefix)


def schedule_ids(prefix: str, **_: Any) -> list[str]:
    return _ids("schedules", "schedule_id", prefix)


def complete(parser: Any) -> None:
    """Answer the shell's completion request, if this is one (argcomplete's hook sets _ARGCOMPLETE)."""
    import os

    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)
