"""Backends: one module per kind behind the contract of :mod:`.base`, found by name (:func:`get_backend`).

A site can ship its own backend in a package of its own: an entry point in the group
``maelstrom_run.backends`` named by its ``kind``, pointing at a :class:`~.base.Backend` subclass whose
``Conf`` is its config dataclass. Stands on core and config.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config.schema import BACKENDS, BackendConf
from ..config.validate import BACKEND_ENTRY_POINTS, plugin_backends, typed
from ..core.errors import ConfigError, did_you_mean
from .base import Backend, Rendered

#: The backends shipped here, imported only when used.
BUILTIN = {
    "local": "maelstrom_run.backends.local:LocalBackend",
    "slurm": "maelstrom_run.backends.slurm:SlurmBackend",
    "slurmrest": "maelstrom_run.backends.slurmrest:SlurmRestBackend",
    "unicore": "maelstrom_run.backends.unicore:UnicoreBackend",
    "firecrest": "maelstrom_run.backends.firecrest:FirecrestBackend",
}


def backend_class(kind: str) -> type[Backend]:
    """The class of a backend kind: a shipped one, else an installed package's entry point."""
    if kind in BUILTIN:
        module, _, name = BUILTIN[kind].partition(":")
        return getattr(importlib.import_module(module), name)
    found = plugin_backends()
    if kind in found:
        cls = found[kind].load()
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise ConfigError(
                f"backend.kind: the entry point {kind!r} ({BACKEND_ENTRY_POINTS}) is not a Backend class"
            )
        return cls
    hint = did_you_mean(str(kind), [*BUILTIN, *found], noun="known kinds")
    raise ConfigError(
        f"backend.kind: unknown kind {kind!r}{hint} (a site's backend package registers its kind "
        f"under the entry point group {BACKEND_ENTRY_POINTS})"
    )


def get_backend(conf: dict[str, Any] | BackendConf) -> Backend:
    """The backend a ``backend`` config describes, given its typed config (validated, defaults filled)."""
    kind = conf.kind if isinstance(conf, BackendConf) else conf.get("kind")
    cls = backend_class(str(kind))
    return cls(conf if isinstance(conf, BackendConf) else typed(conf, "backend"))


__all__ = ["BACKENDS", "Backend", "Rendered", "backend_class", "get_backend"]
