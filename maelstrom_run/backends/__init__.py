"""Backends: one module per kind, imported lazily by :func:`get_backend`."""

from __future__ import annotations

import importlib
from typing import Any

from ..config import ConfigError
from .base import Backend, JobRef, JobState, JobStatus, Rendered

_KINDS = {
    "local": "maelstrom_run.backends.local:LocalBackend",
    "slurm": "maelstrom_run.backends.slurm:SlurmBackend",
    "slurmrest": "maelstrom_run.backends.slurmrest:SlurmRestBackend",
    "unicore": "maelstrom_run.backends.unicore:UnicoreBackend",
    "firecrest": "maelstrom_run.backends.firecrest:FirecrestBackend",
}


def get_backend(conf: dict[str, Any]) -> Backend:
    kind = conf.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"backend.kind: unknown kind {kind!r}; one of {', '.join(_KINDS)}")
    module, _, cls = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)(conf)


__all__ = ["Backend", "JobRef", "JobState", "JobStatus", "Rendered", "get_backend"]
