"""The one resumable copy: bytes written into a file from an offset, keeping what lies before it.

Every copy that can continue where it stopped (an HTTP Range download, a local copy, a gateway's
file) writes through :func:`write_from`, so a partial file is continued the same way everywhere.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

#: ``progress(n)``: n more bytes have moved.
Progress = Callable[[int], None]
#: Errors of a disk (or quota) that is full: the caller names the file, a retry would not help.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether a full disk is behind ``exc`` or what it wraps (SQLite says "disk is full")."""
    for _ in range(10):
        if exc is None:
            return False
        if (
            getattr(exc, "errno", None) in DISK_FULL
            or "disk is full" in str(exc)
            or "No space left" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Meter(Protocol):
    """How a long transfer shows its progress: the command layer hands one in (a terminal bar);
    libraries draw nothing themselves."""

    def start(self, what: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None:
        """``n`` more bytes have moved (negative when a download starts over); called from any thread."""

    def finish(self, completed: int, total: int | None) -> None: ...


def write_from(
    dest: Path, blocks: Iterable[bytes], *, offset: int = 0, progress: Progress | None = None
) -> int:
    """Write ``blocks`` into ``dest`` from byte ``offset``: what is before it stays, anything after it is
    dropped (0: the file anew). Returns the bytes written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(dest, "r+b" if offset and dest.exists() else "wb") as out:
        out.seek(offset)
        out.truncate()
        for block in blocks:
            out.write(block)
            written += len(block)
            if progress:
                progress(len(block))
    return written


def read_blocks(path: Path, offset: int = 0, chunk: int = 8 << 20) -> Iterator[bytes]:
    """A file's bytes from ``offset`` on, ``chunk`` at a time."""
    with open(path, "rb") as src:
        src.seek(offset)
        while block := src.read(chunk):
            yield block


def copy_file(source: Path, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> int:
    """Copy ``source`` to ``dest``, continuing from ``offset`` (bytes both already share)."""
    return write_from(dest, read_blocks(Path(source), offset), offset=offset, progress=progress)


def size_of(path: Path) -> int:
    """Bytes of ``path``, 0 when there is no such file (a copy not started yet)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
