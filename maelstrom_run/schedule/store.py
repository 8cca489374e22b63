"""Schedules and their firings, in the run registry's SQLite file (``$MAELSTROM_HOME/registry.db``).

A firing is claimed (``INSERT`` into ``firings``, unique per schedule and slot) in one transaction
before anything is submitted, so a slot is never fired twice, also after a crash and restart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..core.ids import by_prefix
from ..launch.registry import Registry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    preset TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    catchup TEXT NOT NULL,
    max_concurrent INTEGER NOT NULL,
    pinned_commit TEXT,
    state TEXT NOT NULL,
    checked_until REAL NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0,
    code_dir TEXT,
    overrides TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS firings (
    schedule_id TEXT NOT NULL,
    slot TEXT NOT NULL,
    due REAL NOT NULL,
    run_id TEXT,
    state TEXT NOT NULL,
    message TEXT,
    recorded REAL NOT NULL,
    PRIMARY KEY (schedule_id, slot)
);
CREATE INDEX IF NOT EXISTS firings_run ON firings (run_id);
"""

#: Firing states: ``claimed`` (recorded, not yet submitted), ``submitted``, ``skipped``, ``failed``.
CLAIMED, SUBMITTED, SKIPPED, FAILED = "claimed", "submitted", "skipped", "failed"


@dataclass
class ScheduleRecord:
    schedule_id: str
    app: str
    preset: str
    cron: str
    timezone: str
    start: float
    end: float | None
    catchup: str
    max_concurrent: int
    pinned_commit: str | None
    #: ``active``, ``paused`` or ``ended``.
    state: str
    #: Slots due up to here (UTC timestamp) have been considered.
    checked_until: float
    skipped: int
    code_dir: str | None
    overrides: str
    #: The RunSpec template (YAML) every firing is made from.
    spec: str
    created: float

    @property
    def override_list(self) -> list[str]:
        return json.loads(self.overrides)


@dataclass
class FiringRecord:
    schedule_id: str
    slot: str
    due: float
    run_id: str | None
    state: str
    message: str | None
    recorded: float


_SCHEDULE_FIELDS = [f.name for f in fields(ScheduleRecord)]


class ScheduleStore:
    def __init__(self, path: Path | None = None) -> None:
        self.registry = Registry(path)
        self.path = self.registry.path
        with self.registry._connect() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    def add(self, record: ScheduleRecord) -> None:
        cols = ", ".join(_SCHEDULE_FIELDS)
        with self.registry._connect() as db:
            db.execute(
                f"INSERT INTO schedules ({cols}) VALUES ({', '.join('?' * len(_SCHEDULE_FIELDS))})",
                [getattr(record, f) for f in _SCHEDULE_FIELDS],
            )

    def get(self, schedule_id: str) -> ScheduleRecord:
        """A schedule by id or unique id prefix."""
        with self.registry._connect() as db:
            row = by_prefix(
                db, "schedules", "schedule_id", schedule_id, "schedule", "maelstrom schedules list"
            )
        return ScheduleRecord(**dict(row))

    def list(self) -> list[ScheduleRecord]:
        with self.registry._connect() as db:
            rows = db.execute("SELECT * FROM schedules ORDER BY created").fetchall()
        return [ScheduleRecord(**dict(r)) for r in rows]

    def set_state(self, schedule_id: str, state: str, checked_until: float | None = None) -> None:
        with self.registry._connect() as db:
            if checked_until is None:
                db.execute("UPDATE schedules SET state = ? WHERE schedule_id = ?", (state, schedule_id))
            else:
                db.execute(
                    "UPDATE schedules SET state = ?, checked_until = MAX(checked_until, ?) WHERE schedule_id = ?",
                    (state, checked_until, schedule_id),
                )

    def remove(self, schedule_id: str) -> int:
        """Delete a schedule and its firings (its runs stay in the registry); returns the firings deleted."""
        with self.registry._connect() as db:
            n = db.execute("DELETE FROM firings WHERE schedule_id = ?", (schedule_id,)).rowcount
            db.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,))
        return n

    def claim(
        self, schedule_id: str, slot: str, due: float, state: str = CLAIMED, message: str | None = None
    ) -> bool:
        """Record a firing of ``slot`` and move the schedule past it, in one transaction.

        False when the slot was recorded before (it is never fired twice)."""
        with self.registry._connect() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO firings (schedule_id, slot, due, state, message, recorded)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (schedule_id, slot, due, state, message, time.time()),
            )
            db.execute(
                "UPDATE schedules SET checked_until = MAX(checked_until, ?) WHERE schedule_id = ?",
                (due, schedule_id),
            )
            return cur.rowcount == 1

    def update_firing(self, schedule_id: str, slot: str, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        with self.registry._connect() as db:
            db.execute(
                f"UPDATE firings SET {cols} WHERE schedule_id = ? AND slot = ?",
                (*values.values(), schedule_id, slot),
            )

    def advance(
        self, schedule_id: str, checked_until: float, skipped: int = 0, state: str | None = None
    ) -> None:
        """Mark slots up to ``checked_until`` as considered (``skipped`` of them missed, not fired)."""
        with self.registry._connect() as db:
            db.execute(
                "UPDATE schedules SET checked_until = MAX(checked_until, ?), skipped = skipped + ?,"
                " state = COALESCE(?, state) WHERE schedule_id = ?",
                (checked_until, skipped, state, schedule_id),
            )

    def firings(
        self, schedule_id: str, limit: int | None = None, states: list[str] | None = None
    ) -> list[FiringRecord]:
        query, args = "SELECT * FROM firings WHERE schedule_id = ?", [schedule_id]
        if states:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            args.extend(states)
        query += " ORDER BY due DESC, slot DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        with self.registry._connect() as db:
            return [FiringRecord(**dict(r)) for r in db.execute(query, args).fetchall()]
