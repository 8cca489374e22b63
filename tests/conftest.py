"""Shared fixtures of the maelstrom-run tests.

Every test runs with ``MAELSTROM_HOME`` in a temporary directory (never ``~/.maelstrom``)
and without ``MLFLOW_TRACKING_URI``. Fixtures:

- ``maelstrom_home``: the temporary ``MAELSTROM_HOME`` (set in ``os.environ`` for the test).
- ``cli_env``: an environment dict for subprocesses (same ``MAELSTROM_HOME``, wide rich
  output, no ``MAELSTROM_CONFIG_PATH``); copy it and add to it as needed.
- ``run_cli``: ``run_cli(args, cwd, env, check=False)`` runs ``maelstrom-run`` (or ``maelstrom``
  when ``args[0] == "maelstrom"``) from this virtualenv and returns the CompletedProcess.
- ``git``: ``git(cwd, *args, check=True) -> stdout``, with a committer identity set.
- ``mlflow_server``: the URL of a real ``mlflow server`` on a free loopback port, its store (sqlite)
  and artefacts in the test's directory; stopped after the test.
- ``toy_project``: a git repository with ``toyapp.py`` (entry ``toyapp:main``, no framework,
  fails with ``RuntimeError("diverged")`` when ``model.learning_rate > 0.05``) and
  ``conf/app/toy.yaml``; use it with ``MAELSTROM_CONFIG_PATH=<project>/conf`` and cwd=<project>.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The virtualenv's ``bin`` (the console scripts live beside the interpreter running the tests).
BIN = Path(sys.executable).parent
PROGRAMS = ("maelstrom-run", "maelstrom")

#: Identity for commits made by tests (no global git config needed).
GIT_IDENTITY = ["-c", "user.name=maelstrom tests", "-c", "user.email=tests@maelstrom.invalid"]

TOYAPP = '''\
"""A toy maelstrom-run application: no framework, milliseconds per epoch."""

import random


def main(ctx):
    cfg = ctx.cfg
    lr = float(cfg.model.learning_rate)
    rng = random.Random(int(cfg.train.seed))
    loss = 1.0
    for epoch in range(int(cfg.train.epochs)):
        with ctx.timer.phase("io"):
            batch = [rng.random() for _ in range(int(cfg.train.batch_size))]
        with ctx.timer.phase("forward"):
            noise = sum(batch) / len(batch) * 1e-3
            loss = loss * (1.0 + 10 * lr) if lr > 0.05 else loss * (1.0 - lr) + noise
        ctx.end_epoch(epoch, {"loss": loss})
        if lr > 0.05:
            raise RuntimeError("diverged")
    if lr > 0.05:  # also with train.epochs=0
        raise RuntimeError("diverged")
    return {"loss": loss}
'''

TOY_CONF = """\
# @package _global_
defaults:
  - /dataset: ap1
  - /loader: ap1
  - /model: ap1_unet
  - /labels: ap1
  - _self_
app:
  name: toy
  entry: toyapp:main
"""


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd`` with a test identity; return stdout."""
    out = subprocess.run(
        ["git", *GIT_IDENTITY, "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
    )
    return out.stdout


def program(name: str) -> str:
    """Absolute path of a console script of this virtualenv (falls back to PATH)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed in {BIN} nor on PATH")
    return found


@pytest.fixture(autouse=True)
def _isolate_hydra(hydra_restore_singletons: None) -> None:
    """Hydra keeps global state (version base, config store, plugins): restore it after every test,
    and start every test without a version base (module-scoped fixtures may have set one)."""
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    Singleton._instances.pop(VersionBase, None)


@pytest.fixture
def maelstrom_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``MAELSTROM_HOME`` for this test; tracking and user config paths unset."""
    home = tmp_path / "maelstrom-home"
    home.mkdir()
    monkeypatch.setenv("MAELSTROM_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "MAELSTROM_CONFIG_PATH", "MAELSTROM_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def cli_env(maelstrom_home: Path) -> dict[str, str]:
    """Environment for subprocesses: the test's ``MAELSTROM_HOME``, this venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MAELSTROM_CONFIG_PATH", "MAELSTROM_CACHE", "HYDRA_FULL_ERROR")
    }
    env["MAELSTROM_HOME"] = str(maelstrom_home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # rich wraps at 80 columns when not on a terminal: keep lines whole for assertions
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def _run_cli(
    args: Sequence[str],
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    *,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    args = [str(a) for a in args]
    if args and args[0] in PROGRAMS:
        command = [program(args[0]), *args[1:]]
    else:
        command = [program("maelstrom-run"), *args]
    environ = dict(os.environ if env is None else env)
    if "MAELSTROM_HOME" not in environ:
        raise AssertionError(
            "run_cli: set MAELSTROM_HOME (use the cli_env fixture) so ~/.maelstrom stays untouched"
        )
    result = subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout, input=input
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(args, cwd, env, check=False, *, timeout=120, input=None)``.

    ``args`` is the command line; a leading ``"maelstrom-run"`` or ``"maelstrom"`` picks the program,
    otherwise ``maelstrom-run`` is run. ``check=True`` fails the test (showing both streams) on a
    non-zero exit.
    """
    return _run_cli


@pytest.fixture(name="git")
def git_fixture() -> Callable[..., str]:
    """``git(cwd, *args, check=True) -> stdout`` with a test identity (for commits in tmp repositories)."""
    return git


@pytest.fixture
def toy_project(tmp_path: Path) -> Iterator[Path]:
    """A committed git repository with a toy app; ``MAELSTROM_CONFIG_PATH=<project>/conf``, cwd=<project>."""
    root = tmp_path / "toy-project"
    (root / "conf" / "app").mkdir(parents=True)
    (root / "toyapp.py").write_text(TOYAPP)
    (root / "conf" / "app" / "toy.yaml").write_text(TOY_CONF)
    (root / ".gitignore").write_text(
        textwrap.dedent(
            """\
            __pycache__/
            *.pyc
            *.log
            outputs/
            multirun/
            mlruns/
            """
        )
    )
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "toy project")
    yield root


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    from mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop(signal.SIGTERM)
