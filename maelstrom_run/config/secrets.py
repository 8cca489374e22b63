"""Secret references: ``${secret:env:NAME}``, ``${secret:file:/path}``.

At composition time the ``secret`` resolver returns the reference itself, so every
file written (RunSpec, job scripts, MLflow params) holds the reference, never the
value. :func:`resolve` turns a reference into its value, in memory, at the moment a
backend or the tracking client connects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .validate import ConfigError

_REF = re.compile(r"^\$\{secret:(?:'(?P<quoted>[^']*)'|(?P<plain>[^}]*))\}$")
_PLAIN_OK = re.compile(r"^[A-Za-z0-9_./:-]*$")
KINDS = ("env", "file")


def reference(*parts: Any) -> str:
    """The canonical text of a reference (also the ``secret`` resolver)."""
    body = ":".join(str(p) for p in parts)
    return f"${{secret:{body}}}" if _PLAIN_OK.match(body) else f"${{secret:'{body}'}}"


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


def resolve(value: str) -> str:
    """Value of a reference (a plain string is returned unchanged)."""
    match = _REF.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    body = match.group("quoted") if match.group("quoted") is not None else match.group("plain")
    kind, _, what = body.partition(":")
    if kind == "env":
        if what not in os.environ:
            raise ConfigError(f"secret {value}: environment variable {what} is not set; export it and retry")
        return os.environ[what]
    if kind == "file":
        path = Path(what).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"secret {value}: cannot read {path} ({exc.strerror})") from None
    raise ConfigError(f"secret {value}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def resolve_mapping(mapping: dict[str, Any]) -> dict[str, str]:
    """Resolve every reference in a flat mapping (e.g. ``backend.credentials``)."""
    return {k: resolve(v) for k, v in mapping.items() if v is not None}
