"""Files on a backend's side of the wire (``maelstrom data copy``, downloads): the contract, and this
machine's filesystem (local runs, and clusters whose filesystem is shared with it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.transfer import Progress, copy_file


@dataclasses.dataclass(frozen=True)
class RemoteEntry:
    path: str  #: absolute on the target
    size: int


class RemoteFiles:
    """Files on a backend's side of the wire; paths are absolute paths on the target.

    Every backend offers one through ``Backend.files()``: the local filesystem for local and
    Slurm (a shared filesystem), the storage API of UNICORE, FirecREST's filesystem API.
    """

    #: Whether :meth:`download` can continue a partial file from ``offset`` (HTTP Range).
    resumable_download = False
    #: Whether :meth:`upload` can continue a partial remote file from ``offset``.
    resumable_upload = False

    def walk(self, path: str) -> list[RemoteEntry]:
        """Every file at or under ``path`` (a file gives itself); a missing path raises FileNotFoundError."""
        raise NotImplementedError

    def size(self, path: str) -> int | None:
        """The size of the file at ``path``, None when there is none."""
        raise NotImplementedError

    def download(self, path: str, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> None:
        """Copy ``path`` to ``dest``; with ``offset`` > 0 (when resumable) append from there."""
        raise NotImplementedError

    def upload(self, source: Path, path: str, *, offset: int = 0, progress: Progress | None = None) -> None:
        """Copy ``source`` to ``path`` (parents created); with ``offset`` > 0 (when resumable) append."""
        raise NotImplementedError


class LocalFiles(RemoteFiles):
    """This machine's filesystem (local runs, and clusters whose filesystem is shared with it)."""

    resumable_download = True
    resumable_upload = True

    def walk(self, path: str) -> list[RemoteEntry]:
        root = Path(path)
        if root.is_file():
            return [RemoteEntry(str(root), root.stat().st_size)]
        if not root.is_dir():
            raise FileNotFoundError(path)
        return [RemoteEntry(str(p), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]

    def size(self, path: str) -> int | None:
        p = Path(path)
        return p.stat().st_size if p.is_file() else None

    def download(self, path: str, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> None:
        copy_file(Path(path), Path(dest), offset=offset, progress=progress)

    def upload(self, source: Path, path: str, *, offset: int = 0, progress: Progress | None = None) -> None:
        copy_file(Path(source), Path(path), offset=offset, progress=progress)
