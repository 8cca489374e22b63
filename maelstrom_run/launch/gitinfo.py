"""Record the user's code (commit + uncommitted diff) and materialise it again for re-runs."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

#: Diffs larger than this are not recorded (a warning says so in the spec).
MAX_DIFF_BYTES = 5_000_000
#: Untracked files larger than this (data, checkpoints) are left out of the recorded diff.
MAX_UNTRACKED_BYTES = 1_000_000


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None, input: str | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=input, capture_output=True, text=True, check=True
    )
    return out.stdout


def capture(path: Path) -> dict[str, Any] | None:
    """Commit, branch and full diff (tracked and untracked, not ignored) of the repository at ``path``."""
    try:  # one call for all three (the start-up of a run pays for every git process)
        root_s, commit, branch = _git(
            ["rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"], path
        ).splitlines()
        root = Path(root_s)
    except (OSError, subprocess.CalledProcessError, ValueError):
        try:
            root = Path(_git(["rev-parse", "--show-toplevel"], path).strip())
        except (OSError, subprocess.CalledProcessError):
            return None
        commit = branch = None  # a repository without commits yet
    diff, skipped = "", []
    if commit:
        # A throw-away index so untracked files are in the diff without touching the user's index.
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            _git(["read-tree", "HEAD"], root, env)
            _git(["add", "-u"], root, env)
            untracked = [
                f
                for f in _git(["ls-files", "-z", "--others", "--exclude-standard"], root, env).split("\0")
                if f
            ]
            # data files and checkpoints lying untracked in a repository are not code: leave them out
            small = [
                f
                for f in untracked
                if (root / f).is_file() and (root / f).stat().st_size <= MAX_UNTRACKED_BYTES
            ]
            skipped = sorted(set(untracked) - set(small))
            if small:
                _git(
                    ["add", "--pathspec-from-file=-", "--pathspec-file-nul"],
                    root,
                    env,
                    input="\0".join(small),
                )
            diff = _git(["diff", "--cached", "--binary", "HEAD"], root, env)
    info: dict[str, Any] = {"root": str(root), "commit": commit, "branch": branch, "dirty": bool(diff)}
    if skipped:
        info["untracked_not_recorded"] = skipped
    if len(diff.encode()) > MAX_DIFF_BYTES:
        info["diff"] = None
        info["warning"] = f"uncommitted diff larger than {MAX_DIFF_BYTES} bytes was not recorded"
    else:
        info["diff"] = diff
    return info


def repository_with(commit: str, places: list[Path]) -> Path | None:
    """The top level of the first repository of ``places`` that has ``commit``; None when none has."""
    for where in places:
        try:
            _git(["cat-file", "-e", f"{commit}^{{commit}}"], where)
            return Path(_git(["rev-parse", "--show-toplevel"], where).strip())
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


def materialise(git: dict[str, Any], dest: Path) -> Path:
    """Check out the recorded commit plus the recorded diff into ``dest`` (a detached worktree)."""
    root = Path(git["root"])
    if not (root / ".git").exists():
        raise ConfigError(
            f"rerun: the recorded repository {root} is gone; clone it there or rerun with --current-code"
        )
    if not git.get("commit"):
        raise ConfigError("rerun: the original run had no commit recorded; rerun with --current-code")
    if git.get("diff") is None and git.get("dirty"):
        raise ConfigError("rerun: the original diff was too large to record; rerun with --current-code")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _git(["worktree", "add", "--detach", str(dest), git["commit"]], root)
        if git.get("diff"):
            _git(["apply", "--binary", "--whitespace=nowarn", "-"], dest, input=git["diff"])
    except subprocess.CalledProcessError as exc:
        raise ConfigError(
            f"rerun: cannot restore commit {git['commit'][:12]} in {dest}: {exc.stderr.strip()}"
        ) from None
    return dest
