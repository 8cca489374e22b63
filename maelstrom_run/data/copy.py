"""Copy files to, from and between backends (``maelstrom data copy SRC DST``).

Either side is a local path or ``BACKEND:PATH`` with a backend config name
(``juwels:/p/project/deepacf/maelstrom/ap1``). Each backend reaches its files its own way
(``Backend.files()``): the UNICORE storage API, FirecREST's filesystem API, the filesystem
itself for Slurm clusters whose filesystem this machine shares.

A file that is already at the destination with the same size is skipped; a shorter one is
continued from where it stopped when the protocol allows (HTTP Range downloads, local files),
else copied again. So an interrupted copy is resumed by running the same command again.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, UserError


@dataclass
class Side:
    """One end of a copy: a backend's files (None for this machine) and a path there."""

    path: str
    backend: str | None = None
    files: Any = None

    def __str__(self) -> str:
        return f"{self.backend}:{self.path}" if self.backend else self.path


@dataclass
class CopyResult:
    copied: int = 0
    resumed: int = 0
    skipped: int = 0
    excluded: int = 0
    nbytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def parse_side(text: str, overrides: Sequence[str] = ()) -> Side:
    """``NAME:PATH`` when NAME is a backend config, else a local path."""
    from ..backends import get_backend
    from ..backends.files import LocalFiles

    name, sep, path = text.partition(":")
    if sep and re.fullmatch(r"[A-Za-z0-9_][\w.-]*", name) and not os.path.exists(text):
        if not path.startswith("/"):
            raise ConfigError(f"{text}: the path on {name} must be absolute (BACKEND:/path)")
        backend = get_backend(_backend_config(name, overrides))
        return Side(posixpath.normpath(path), name, backend.files())
    return Side(str(Path(text).expanduser().absolute()), None, LocalFiles())


def _backend_config(name: str, overrides: Sequence[str]) -> dict[str, Any]:
    from hydra.errors import MissingConfigException

    from ..config.compose import compose_config

    try:
        return compose_config([f"backend={name}", *overrides])["backend"]
    except MissingConfigException:
        raise ConfigError(
            f"{name}: no backend config of that name (conf/backend/{name}.yaml); see "
            "`maelstrom-run --help` for the backends, or write a local path"
        ) from None


def _join(base: str, rel: str, local: bool) -> str:
    return str(Path(base) / rel) if local else posixpath.join(base, rel)


def plan(src: Side, dst: Side, exclude: Sequence[str]) -> tuple[list[tuple[str, str, int]], int]:
    """``(source path, destination path, size)`` of every file to consider, and how many were excluded."""
    from ..backends.staging import excluded

    try:
        entries = src.files.walk(src.path)
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such file or directory") from None
    single = len(entries) == 1 and entries[0].path.rstrip("/") == src.path.rstrip("/")
    out, skipped = [], 0
    for entry in entries:
        if single:
            rel = posixpath.basename(entry.path)
            target = dst.path if not dst.path.endswith("/") else _join(dst.path, rel, dst.backend is None)
            if dst.backend is None and Path(dst.path).is_dir():
                target = _join(dst.path, rel, True)
        else:
            rel = (
                posixpath.relpath(entry.path, src.path)
                if src.backend
                else os.path.relpath(entry.path, src.path)
            )
            rel = rel.replace(os.sep, "/")
            target = _join(dst.path, rel, dst.backend is None)
        if exclude and excluded(rel, exclude):
            skipped += 1
            continue
        out.append((entry.path, target, entry.size))
    return out, skipped


def copy(
    src: Side,
    dst: Side,
    exclude: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CopyResult:
    """Copy every file of ``src`` to ``dst``; skip complete files, resume partial ones.

    ``on_total(nbytes)`` is called once with the bytes to consider, then ``progress(n)`` with the
    bytes done as they move (skipped and already present bytes count as done)."""
    files, excluded_count = plan(src, dst, exclude)
    result = CopyResult(excluded=excluded_count)
    advance = progress or (lambda n: None)
    if on_total is not None:
        on_total(sum(size for _, _, size in files))
    for source, target, size in files:
        have = dst.files.size(target) or 0
        if have == size:
            result.skipped += 1
            advance(size)
            continue
        resumable = 0 < have < size and _resumable(src, dst)
        offset = have if resumable else 0
        advance(offset)
        try:
            _transfer(src, dst, source, target, offset, advance)
        except UserError as exc:
            result.failed.append((source, str(exc)))
            continue
        except OSError as exc:
            result.failed.append((source, f"{exc.strerror or exc}"))
            continue
        result.resumed += bool(offset)
        result.copied += not offset
        result.nbytes += size - offset
    return result


def _resumable(src: Side, dst: Side) -> bool:
    if src.backend is None:
        return bool(dst.files.resumable_upload)
    if dst.backend is None:
        return bool(src.files.resumable_download)
    return False  # between two backends a file goes through a local temporary copy


def _transfer(src: Side, dst: Side, source: str, target: str, offset: int, moved: Any) -> None:
    if src.backend is None:
        dst.files.upload(Path(source), target, offset=offset, progress=moved)
    elif dst.backend is None:
        src.files.download(source, Path(target), offset=offset, progress=moved)
    else:  # backend to backend: through a temporary local file, counted once
        with tempfile.TemporaryDirectory(prefix="maelstrom-copy-") as tmp:
            local = Path(tmp) / posixpath.basename(source)
            src.files.download(source, local, progress=None)
            dst.files.upload(local, target, progress=moved)
