"""The code snapshot staged with a job: the repository's files (tracked and untracked, not ignored)
minus the backend's ``exclude`` globs, as they are in the working tree at submission."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Never staged outside a git repository (where .gitignore cannot say so).
_DEFAULT_EXCLUDE = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)


def excluded(relpath: str, patterns: Sequence[str]) -> bool:
    """True when ``relpath``, a parent directory or a path component matches a glob (``data/*``, ``*.nc``)."""
    parts = relpath.split("/")
    candidates = {relpath, *parts, *("/".join(parts[:i]) for i in range(1, len(parts)))}
    return any(fnmatch.fnmatch(c, p.rstrip("/")) for p in patterns for c in candidates)


def repository_root(path: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out.stdout.strip())


def snapshot_files(root: Path, exclude: Sequence[str] = ()) -> list[str]:
    """Relative paths of the files to stage from ``root`` (a git work tree, or any directory)."""
    root = Path(root)
    if (root / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
        names = sorted({n.decode() for n in out.stdout.split(b"\0") if n})
        names = [n for n in names if (root / n).is_file()]  # deleted but still in the index
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            dirnames[:] = [
                d for d in dirnames if not excluded(os.path.normpath(f"{rel}/{d}"), _DEFAULT_EXCLUDE)
            ]
            names += [os.path.normpath(f"{rel}/{f}") for f in filenames]
        names = sorted(n for n in names if not excluded(n, _DEFAULT_EXCLUDE))
    return [n for n in names if not excluded(n, exclude)]


def stage(root: Path, files: Sequence[str], dest: Path) -> None:
    """Copy ``files`` (relative to ``root``) to ``dest``, keeping modes (scripts stay executable)."""
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = root / name
        if source.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
