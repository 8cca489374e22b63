"""Finding a record by its id or a unique prefix of it (runs, sweeps, schedules): the one rule.

An empty id matches nothing (it would be a prefix of every id); an exact id wins over longer ids it
is a prefix of; an ambiguous prefix is refused with its candidates, so nothing is ever acted on by
a guess.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .errors import ConfigError

#: Candidates named when a prefix is ambiguous.
SHOWN = 8


def by_prefix(
    db: sqlite3.Connection,
    table: str,
    column: str,
    given: Any,
    noun: str,
    listing: str,
    missing: str = "does not exist",
) -> Any:
    """The row of ``table`` whose ``column`` is ``given`` or the only one starting with it.

    ``noun`` names the record (``run``), ``listing`` the command that lists them, ``missing`` how
    an unknown one is said.
    """
    text = "" if given is None else str(given)
    if not text.strip():
        raise ConfigError(f"empty {noun} id; give an id or a unique prefix of one (see `{listing}`)")
    row = db.execute(f"SELECT * FROM {table} WHERE {column} = ?", (text,)).fetchone()
    if row is not None:
        return row
    rows = db.execute(
        f"SELECT * FROM {table} WHERE substr({column}, 1, ?) = ? ORDER BY {column} LIMIT ?",
        (len(text), text, SHOWN + 1),
    ).fetchall()
    if not rows:
        raise ConfigError(f"{noun} {text!r} {missing}; see `{listing}`")
    if len(rows) > 1:
        shown = ", ".join(r[column] for r in rows[:SHOWN]) + (", ..." if len(rows) > SHOWN else "")
        raise ConfigError(f"{noun} id prefix {text!r} is ambiguous: it matches {shown}; give more of the id")
    return rows[0]
