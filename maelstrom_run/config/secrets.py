"""Secret references: ``${secret:env:NAME}``, ``${secret:file:/path}``,
``${secret:'vault:MOUNT/PATH#KEY'}`` (Vault KV v2, see :mod:`.vault`; quoted, as ``#`` is not
allowed unquoted in an interpolation).

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

from ..core.errors import ConfigError

_REF = re.compile(r"^\$\{secret:(?:'(?P<quoted>[^']*)'|(?P<plain>[^}]*))\}$")
_PLAIN_OK = re.compile(r"^[A-Za-z0-9_./:-]*$")
KINDS = ("env", "file", "vault")


def reference(*parts: Any) -> str:
    """The canonical text of a reference (also the ``secret`` resolver)."""
    body = ":".join(str(p) for p in parts)
    kind, _, what = body.partition(":")
    if kind not in KINDS or not what.strip():
        # refused when composed, so a run never starts with a reference nothing can resolve
        raise ConfigError(
            f"secret reference ${{secret:{body}}} is incomplete; write ${{secret:env:NAME}}, "
            "${secret:file:/path} or ${secret:'vault:MOUNT/PATH#KEY'}"
        )
    return f"${{secret:{body}}}" if _PLAIN_OK.match(body) else f"${{secret:'{body}'}}"


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


def resolve(value: str) -> str:
    """Value of a reference (a plain string is returned unchanged)."""
    match = _REF.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    passed = os.environ.get(env_name(value))
    if passed is not None:  # resolved at submission and handed to the job in its environment
        return passed
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
    if kind == "vault":
        from . import vault

        return vault.read(value, what)
    raise ConfigError(f"secret {value}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def resolve_mapping(mapping: dict[str, Any]) -> dict[str, str]:
    """Resolve every reference in a flat mapping (e.g. ``backend.credentials``)."""
    return {k: resolve(v) for k, v in mapping.items() if v is not None}


#: Prefix of the environment variables that carry resolved secrets into a job.
ENV_PREFIX = "MAELSTROM_SECRET_"


def env_name(ref: str) -> str:
    """The job environment variable that carries the value of ``ref`` (named by a digest, not the value)."""
    import hashlib

    return ENV_PREFIX + hashlib.sha256(ref.encode()).hexdigest()[:16].upper()


def references(*nodes: Any) -> set[str]:
    """Every secret reference in config containers; a subtree they share (the jobs of a sweep share
    all but the values they change) is looked at once."""
    seen: set[int] = set()
    found: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            if id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.values() if isinstance(node, dict) else node)
        elif isinstance(node, str) and node.startswith("${secret:") and is_reference(node):
            found.add(node)
    return found


def job_environment(configs: list[dict[str, Any]], *, resolved: bool = True) -> dict[str, str]:
    """Environment that hands a job the secrets its config refers to, resolved now, in memory.

    ``backend.environment.variables`` that are references arrive under their own name; every
    other reference (tracking credentials, app settings) under :func:`env_name`. References to
    files are left to the job (the file may exist only on the cluster), as are environment
    references not set here; ``backend.credentials`` stay with the submitting side. With
    ``resolved=False`` each value is the reference itself (what a dry run may show).
    """
    out: dict[str, str] = {}
    rests, variables = [], {}
    for config in configs:
        backend = config.get("backend") or {}
        variables.update((backend.get("environment") or {}).get("variables") or {})
        rest = {k: v for k, v in config.items() if k != "backend"}
        rest["backend"] = {k: v for k, v in backend.items() if k != "credentials"}
        rests.append(rest)
    for ref in sorted(references(*rests)):
        kind = _kind(ref)
        if kind == "file" or (kind == "env" and ref[len("${secret:env:") : -1] not in os.environ):
            continue
        out[env_name(ref)] = resolve(ref) if resolved else ref
    for name, value in variables.items():
        if is_reference(value) and env_name(value) in out:
            out[name] = out[env_name(value)]
    return out


def _kind(ref: str) -> str:
    match = _REF.match(ref)
    assert match is not None
    body = match.group("quoted") if match.group("quoted") is not None else match.group("plain")
    return body.partition(":")[0]
