"""The run registry: one SQLite row per job, the single source of truth for ``maelstrom runs``.

Only the submitting side opens it (never workers on compute nodes). WAL mode, short
transactions, every update atomic.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import ConfigError
from ..core.ids import by_prefix
from ..core.retry import RetryPolicy
from ..core.states import JobState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    sweep_id TEXT,
    sweep_index INTEGER,
    app TEXT NOT NULL,
    backend TEXT NOT NULL,
    backend_kind TEXT NOT NULL,
    job_id TEXT,
    state TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    mlflow_run_id TEXT,
    tracking_uri TEXT,
    config_hash TEXT,
    rerun_of TEXT,
    message TEXT,
    exit_code INTEGER,
    created REAL NOT NULL,
    submitted REAL,
    started REAL,
    ended REAL,
    spec TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep_id, sweep_index);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    size INTEGER NOT NULL,
    backend TEXT NOT NULL,
    mlflow_parent_run_id TEXT,
    tracking_uri TEXT,
    parent_closed INTEGER NOT NULL DEFAULT 0,
    overrides TEXT NOT NULL,
    created REAL NOT NULL
);
"""


#: Columns added after the first version, with their declarations.
_ADDED_COLUMNS = (("requeues", "INTEGER NOT NULL DEFAULT 0"),)


@dataclass
class RunRecord:
    run_id: str
    sweep_id: str | None
    sweep_index: int | None
    app: str
    backend: str
    backend_kind: str
    job_id: str | None
    state: str
    run_dir: str
    mlflow_run_id: str | None
    tracking_uri: str | None
    config_hash: str | None
    rerun_of: str | None
    message: str | None
    exit_code: int | None
    created: float
    submitted: float | None
    started: float | None
    ended: float | None
    #: The RunSpec as JSON (enough to re-run the job); read it with ``RunSpec.parse``.
    spec: str
    #: Times the cluster requeued the job (preemption, time limit) and started it again.
    requeues: int = 0


@dataclass
class SweepRecord:
    sweep_id: str
    app: str
    size: int
    backend: str
    mlflow_parent_run_id: str | None
    tracking_uri: str | None
    parent_closed: int
    overrides: str
    created: float


_RUN_FIELDS = [f.name for f in fields(RunRecord)]
#: Tries of a statement that SQLite refuses at once while another connection holds the file.
_LOCKED = RetryPolicy(retries=50, delay=0.02, backoff=1.5, max_delay=1.0)


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


#: A listing's columns: every field, the spec only of jobs that have not ended (``refresh`` needs it).
_ENDED = ", ".join(f"'{s.value}'" for s in JobState if s.terminal)
_LIGHT_COLUMNS = [
    f if f != "spec" else f"CASE WHEN state IN ({_ENDED}) THEN '' ELSE spec END AS spec" for f in _RUN_FIELDS
]


def _where(sweep_id: str | None, states: list[str] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) of a listing by sweep and states."""
    where, args = [], []
    if sweep_id:
        where.append("sweep_id = ?")
        args.append(sweep_id)
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        args.extend(states)
    return (" WHERE " + " AND ".join(where)) if where else "", args


class Registry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or paths.registry_path())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
                for name, decl in _ADDED_COLUMNS:
                    if name not in columns:  # a registry written by an earlier version
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {decl}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"run registry {self.path}: {exc}; set MAELSTROM_HOME to a writable directory"
            ) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                # switching needs the only connection and SQLite does not wait for it (no busy
                # timeout): commands opening a new registry together try again
                _LOCKED.call(lambda: db.execute("PRAGMA journal_mode=WAL"), transient=_locked)
            db.row_factory = sqlite3.Row
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- writes -------------------------------------------------------------------------
    def add_runs(self, specs: list[Any], state: str = "queued", message: str = "submitting") -> None:
        """Record jobs before they are submitted (one transaction), so an interrupted submission leaves
        rows without a job id that ``maelstrom runs resume``/``rerun --failed`` can find."""
        now = time.time()
        rows = [
            (
                s.run_id,
                s.sweep_id,
                s.sweep_index,
                s.app,
                s.backend.get("name", "local"),
                s.backend.get("kind", "local"),
                state,
                s.run_dir,
                s.tracking.get("uri"),
                s.config_hash,
                s.rerun_of,
                message,
                now,
                s.to_json(),
            )
            for s in specs
        ]
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO runs (run_id, sweep_id, sweep_index, app, backend, backend_kind, state,"
                " run_dir, tracking_uri, config_hash, rerun_of, message, created, spec)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            from .labels import record as record_labels

            record_labels(db, specs)  # the runs' labels as rows of run_labels, same transaction

    def add_sweep(
        self,
        sweep_id: str,
        app: str,
        size: int,
        backend: str,
        overrides: list[list[str]],
        parent_run_id: str | None,
        tracking_uri: str | None,
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO sweeps (sweep_id, app, size, backend, mlflow_parent_run_id,"
                " tracking_uri, overrides, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sweep_id,
                    app,
                    size,
                    backend,
                    parent_run_id,
                    tracking_uri,
                    json.dumps(overrides),
                    time.time(),
                ),
            )

    def update(self, run_id: str, **values: Any) -> None:
        self.update_many([(run_id, values)])

    def update_many(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """Several ``update``s in one transaction (a sweep's job ids as they are accepted)."""
        # consecutive changes of the same columns as one statement, in the order given
        batches: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
        for run_id, values in changes:
            unknown = set(values) - set(_RUN_FIELDS)
            if unknown:
                raise KeyError(f"unknown registry fields {sorted(unknown)}")
            if not values:
                continue
            if not batches or batches[-1][0] != tuple(values):
                batches.append((tuple(values), []))
            batches[-1][1].append((*values.values(), run_id))
        with self._connect() as db:
            for columns, rows in batches:
                cols = ", ".join(f"{k} = ?" for k in columns)
                db.executemany(f"UPDATE runs SET {cols} WHERE run_id = ?", rows)

    def set_parent(self, sweep_id: str, parent_run_id: str, tracking_uri: str) -> None:
        """Record the sweep's MLflow parent run (created once the sweep itself was recorded)."""
        with self._connect() as db:
            db.execute(
                "UPDATE sweeps SET mlflow_parent_run_id = ?, tracking_uri = ? WHERE sweep_id = ?",
                (parent_run_id, tracking_uri, sweep_id),
            )

    def close_parent(self, sweep_id: str) -> bool:
        """Mark a sweep's parent run closed; True for the one caller that closed it."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE sweeps SET parent_closed = 1 WHERE sweep_id = ? AND parent_closed = 0", (sweep_id,)
            )
            return cur.rowcount == 1

    def reopen_parent(self, sweep_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE sweeps SET parent_closed = 0 WHERE sweep_id = ?", (sweep_id,))

    # -- reads --------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        """A run by id or unique id prefix."""
        with self._connect() as db:
            row = by_prefix(
                db,
                "runs",
                "run_id",
                run_id,
                "run",
                "maelstrom runs list",
                f"is not in the registry {self.path}",
            )
        return RunRecord(**dict(row))

    def get_many(self, run_ids: list[str]) -> list[RunRecord]:
        """Runs by exact id, in the order given (one query)."""
        with self._connect() as db:
            rows = {}
            for i in range(0, len(run_ids), 500):
                part = run_ids[i : i + 500]
                query = f"SELECT * FROM runs WHERE run_id IN ({', '.join('?' * len(part))})"
                rows.update((r["run_id"], r) for r in db.execute(query, part).fetchall())
        missing = [r for r in run_ids if r not in rows]
        if missing:
            raise ConfigError(
                f"run {missing[0]!r} is not in the registry {self.path}; see `maelstrom runs list`"
            )
        return [RunRecord(**dict(rows[r])) for r in run_ids]

    def list(
        self,
        sweep_id: str | None = None,
        limit: int | None = 50,
        states: list[str] | None = None,
        *,
        specs: bool = True,
    ) -> list[RunRecord]:
        """Runs newest first (a sweep's in index order); ``specs=False`` leaves each ``spec`` empty
        for the jobs that have ended (a listing of 10,000 runs need not read 50 MB of specs)."""
        where, args = _where(sweep_id, states)
        columns = "*" if specs else ", ".join(_LIGHT_COLUMNS)
        query = f"SELECT {columns} FROM runs" + where
        query += " ORDER BY sweep_index, created" if sweep_id else " ORDER BY created DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        with self._connect() as db:
            return [RunRecord(**dict(r)) for r in db.execute(query, args).fetchall()]

    def count(self, sweep_id: str | None = None, states: list[str] | None = None) -> int:
        """How many runs ``list`` would return without a limit."""
        where, args = _where(sweep_id, states)
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM runs" + where, args).fetchone()[0])

    def sweep(self, sweep_id: str) -> SweepRecord:
        """A sweep by id or unique id prefix."""
        with self._connect() as db:
            row = by_prefix(
                db, "sweeps", "sweep_id", sweep_id, "sweep", "maelstrom runs list", "is not in the registry"
            )
        return SweepRecord(**dict(row))
