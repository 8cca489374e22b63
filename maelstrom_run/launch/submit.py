"""Submit RunSpecs to their backends, recorded in the registry first; optionally wait."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..backends import Backend, get_backend
from ..config import secrets
from ..core.errors import ConfigError, UserError
from ..core.spec import RunSpec
from . import monitor
from .registry import Registry, RunRecord

#: Backend kinds whose run directories are on this machine (or its shared file system).
LOCAL_RUN_DIRS = ("local", "slurm")


def default_wait(backend: dict, wait: bool | None) -> bool:
    """Whether to block until jobs end: as asked, else yes for local runs and no on clusters."""
    return (backend.get("kind", "local") == "local") if wait is None else bool(wait)


def connect(specs: Sequence[RunSpec], known: dict[str, Backend] | None = None) -> dict[str, Backend]:
    """The backends of ``specs`` by name, each connected (credentials accepted) before anything is
    recorded: refused credentials or a dead gateway leave the registry as it was. ``known``: those
    connected already."""
    preflight(specs)
    backends: dict[str, Backend] = dict(known or {})
    for spec in specs:
        name = spec.backend.get("name", "local")
        if name not in backends:
            backends[name] = get_backend(spec.backend)
            try:
                backends[name].connect()
            except UserError as exc:
                raise type(exc)(f"{exc}; nothing was submitted or recorded") from None
    return backends


def preflight(specs: Sequence[RunSpec]) -> None:
    """What can fail before a job exists, checked before the registry or MLflow is touched: every
    secret reference resolves (in memory, the values dropped), and local run directories can be made."""
    references = secrets.references(*(spec.config for spec in specs))
    parents = {
        Path(os.path.dirname(spec.run_dir))
        for spec in specs
        if spec.backend.get("kind", "local") in LOCAL_RUN_DIRS
    }
    try:
        for ref in sorted(references):
            secrets.resolve(ref)
    except UserError as exc:
        raise type(exc)(f"{exc}; nothing was submitted or recorded") from None
    for parent in sorted(parents):
        try:
            parent.mkdir(parents=True, exist_ok=True)
            writable = os.access(parent, os.W_OK | os.X_OK)
        except OSError as exc:
            writable, parent = False, Path(exc.filename or parent)
        if not writable:
            raise ConfigError(
                f"run directory {parent}: cannot be written; set backend.workdir (or MAELSTROM_HOME) to a "
                "writable directory; nothing was submitted or recorded"
            )


def submit(
    specs: Sequence[RunSpec],
    *,
    wait: bool,
    registry: Registry | None = None,
    backends: dict[str, Backend] | None = None,
    view: monitor.WaitView | None = None,
) -> list[RunRecord]:
    """Record, submit (one ``submit_many`` per backend) and, with ``wait``, block until done.

    ``backends``: from :func:`connect`, when the caller connected before recording anything itself.
    ``view``: what to show while waiting (see :class:`.monitor.WaitView`); nothing when None.
    """
    registry = registry or Registry()
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.backend.get("name", "local"), []).append(spec)
    backends = connect(specs, backends)
    registry.add_runs(list(specs))
    for name, group in groups.items():
        submit_group(registry, backends[name], group)
    run_ids = [s.run_id for s in specs]
    if wait:
        return monitor.wait(registry, run_ids, view=view)
    return registry.get_many(run_ids)


def submit_group(registry: Registry, backend: Backend, specs: Sequence[RunSpec]) -> None:
    """``submit_many`` on one backend; job ids reach the registry as each part is accepted."""
    recorded: set[str] = set()

    def accepted(part: Sequence[RunSpec], job_ids: Sequence[str]) -> None:
        now = time.time()
        registry.update_many(
            [
                (s.run_id, {"job_id": j, "submitted": now, "message": None})
                for s, j in zip(part, job_ids, strict=True)
            ]
        )
        recorded.update(s.run_id for s in part)

    try:
        job_ids = backend.submit_many(specs, on_submitted=accepted)
    except OSError as exc:
        _mark_failed(registry, [s for s in specs if s.run_id not in recorded], f"submission failed: {exc}")
        where = exc.filename or specs[0].run_dir
        raise ConfigError(
            f"run directory {where}: {exc.strerror or exc}; set backend.workdir or MAELSTROM_HOME "
            "to a writable directory"
        ) from None
    except BaseException as exc:
        _mark_failed(registry, [s for s in specs if s.run_id not in recorded], f"submission failed: {exc}")
        raise
    accepted(
        [s for s in specs if s.run_id not in recorded],
        [j for s, j in zip(specs, job_ids, strict=True) if s.run_id not in recorded],
    )


def _mark_failed(registry: Registry, specs: Sequence[RunSpec], message: str) -> None:
    """Jobs the cluster never accepted: failed, without a job id (``maelstrom runs resume`` submits them)."""
    now = time.time()
    first = (message.splitlines() or [""])[0]
    registry.update_many([(s.run_id, {"state": "failed", "message": first, "ended": now}) for s in specs])
