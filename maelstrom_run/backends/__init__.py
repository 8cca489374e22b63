"""Backends: one module per kind, imported lazily by :func:`get_backend`."""

from __future__ import annotations

import importlib
from typing import Any

from ..config import ConfigError
from .base import Backend, JobRef, JobState, JobStatus, Rendered

_KINDS = {
    "local": "maelstrom_run.backends.local:LocalBackend",
    "slurm": "maelstrom_run.backends.slurm:SlurmBackend",
}
#: Kinds that have configs but cannot submit from this version yet.
_PLANNED = ("slurmrest", "unicore", "firecrest")


def get_backend(conf: dict[str, Any]) -> Backend:
    kind = conf.get("kind")
    if kind in _PLANNED:
        raise ConfigError(
            f"backend.kind: {kind!r} ({conf.get('name')}) cannot submit in this version of maelstrom-run; "
            f"inspect it with --cfg job, or run with backend=local"
        )
    if kind not in _KINDS:
        raise ConfigError(f"backend.kind: unknown kind {kind!r}; one of {', '.join([*_KINDS, *_PLANNED])}")
    module, _, cls = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)(conf)


__all__ = ["Backend", "JobRef", "JobState", "JobStatus", "Rendered", "get_backend"]
