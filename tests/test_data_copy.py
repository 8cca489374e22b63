"""``maelstrom data copy`` between this machine and a backend whose filesystem it shares (Slurm).

The gateway backends' files (UNICORE storages, FirecREST filesystem) are tested with their
servers in their own modules; the copy logic (plan, skip, resume, exclude) is the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maelstrom_run.backends.files import LocalFiles
from maelstrom_run.data.copy import Side, copy

MAELSTROM = [sys.executable, "-m", "maelstrom_run.commands.main"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "big.bin").write_bytes(os.urandom(3_000_000))
    (src / "x.txt").write_text("hello\n")
    (src / "scratch.tmp").write_text("not wanted\n")
    return src


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAELSTROM_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run([*MAELSTROM, "data", "copy", *args], capture_output=True, text=True, env=env)
    # one line each, however narrow the terminal: compare words
    done.stdout, done.stderr = " ".join(done.stdout.split()), " ".join(done.stderr.split())
    return done


def test_copy_to_a_backend_skips_excluded_and_complete_files(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    first = run(str(source), f"slurm:{dst}", "--exclude", "*.tmp", "-q", home=tmp_path / "home")
    assert first.returncode == 0, first.stderr
    assert "2 file(s), 0 resumed, 0 already there, 1 excluded" in first.stdout
    assert _tree(dst) == {k: v for k, v in _tree(source).items() if not k.endswith(".tmp")}
    again = run(str(source), f"slurm:{dst}", "--exclude", "*.tmp", "-q", home=tmp_path / "home")
    assert "0 file(s), 0 resumed, 2 already there" in again.stdout


def test_an_interrupted_copy_is_resumed(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    big = source / "a" / "b" / "big.bin"
    (dst / "a" / "b").mkdir(parents=True)
    (dst / "a" / "b" / "big.bin").write_bytes(big.read_bytes()[:1_000_000])  # cut short
    moved: list[int] = []
    result = copy(
        Side(str(source), None, LocalFiles()), Side(str(dst), "slurm", LocalFiles()), progress=False
    )
    moved.append(result.nbytes)
    assert (result.resumed, result.copied) == (1, 2)
    assert result.nbytes == 2_000_000 + len("hello\n") + len("not wanted\n")
    assert (dst / "a" / "b" / "big.bin").read_bytes() == big.read_bytes()


def test_copy_one_file_from_a_backend_into_a_directory(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = run(f"slurm:{source / 'x.txt'}", str(out), "-q", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert (out / "x.txt").read_text() == "hello\n"


@pytest.mark.parametrize(
    "src, dst, message",
    [
        ("nosuch:/data", "out", "nosuch: no backend config of that name"),
        ("slurm:/no/such/dir", "out", "slurm:/no/such/dir: no such file or directory"),
        ("slurm:relative/path", "out", "the path on slurm must be absolute"),
        ("in", "out", "both SRC and DST are local"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, src: str, dst: str, message: str) -> None:
    done = run(src, str(tmp_path / dst), home=tmp_path / "home")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
