"""Labels of runs as rows of the run registry (table ``run_labels``), written when a run is recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_labels (
    run_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    category TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, scope, category, value)
)
"""


def record(db: sqlite3.Connection, specs: Sequence[Any]) -> None:
    """Write the labels of ``specs`` inside the registry's open transaction (replacing earlier rows)."""
    import json

    from ..config.taxonomy import flatten, load
    from ..core.errors import ConfigError

    db.execute(_SCHEMA)
    try:
        taxonomy = load()
    except ConfigError:  # validated when composed; a taxonomy broken since must not lose the runs
        return
    flat: dict[str, list[tuple[str, str, str]] | None] = {}  # a sweep's jobs share their labels
    ids, rows = [], []
    for spec in specs:
        if getattr(spec, "kind", "app") != "app" or not isinstance(spec.labels, dict):
            continue  # a plain Hydra app's ``labels`` (if any) are its own
        key = json.dumps(spec.labels, sort_keys=True, default=str)
        if key not in flat:
            try:
                flat[key] = flatten(spec.labels, taxonomy)
            except ConfigError:  # validated when composed; a taxonomy changed since must not lose the run
                flat[key] = None
        if flat[key] is None:
            continue
        ids.append((spec.run_id,))
        rows += [(spec.run_id, *row) for row in flat[key]]
    db.executemany("DELETE FROM run_labels WHERE run_id = ?", ids)
    db.executemany(
        "INSERT OR IGNORE INTO run_labels (run_id, scope, category, value) VALUES (?, ?, ?, ?)", rows
    )


def labels_of(
    db: sqlite3.Connection, run_ids: Sequence[str] | None = None
) -> dict[str, list[tuple[str, str, str]]]:
    """``run_id -> [(scope, category, value)]`` (every run when ``run_ids`` is None)."""
    db.execute(_SCHEMA)
    if run_ids is None:
        rows = db.execute("SELECT run_id, scope, category, value FROM run_labels").fetchall()
    else:
        rows = []
        ids = list(run_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows += db.execute(
                "SELECT run_id, scope, category, value FROM run_labels"
                f" WHERE run_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for run_id, scope, category, value in rows:
        out.setdefault(run_id, []).append((scope, category, value))
    return out
