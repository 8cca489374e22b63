"""Small file helpers shared by the submitting side and the worker."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULT = "result.json"
#: Marker a cancel leaves in the run directory; the worker checks it when it starts and when it fails.
CANCELLED = "cancelled"
#: One line per time the cluster requeued the job (written by the worker, counted by the backend).
REQUEUES = "requeues.log"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """The worker's report to the submitting side (never the registry itself)."""
    write_atomic(Path(run_dir) / RESULT, json.dumps(result, indent=2, sort_keys=True, default=str))


def count_requeues(run_dir: Path) -> int:
    try:
        return sum(1 for line in (Path(run_dir) / REQUEUES).read_text().splitlines() if line.strip())
    except OSError:
        return 0


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / RESULT).read_text())
    except (OSError, ValueError):
        return None
