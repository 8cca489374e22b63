"""Capture the Deep500 timers an application uses, the real MAELSTROM fork's or the stand-in's.

:func:`prepare` (in the worker, before the entry point) puts the stand-in package
(``maelstrom_run/deep500``) on the path after everything else, tells the processes the job starts
where to report, and :func:`install` s an import hook that wraps the ``__init__`` of the timer
classes of whichever ``deep500.utils.timer*`` modules get imported, so every timer made is known.
:func:`collect` returns every sample of every timer: of this process, and of the commands it ran
(each writes ``RUN_DIR/deep500/PID.json`` when it exits).
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..core.rundir import write_atomic
from ..deep500.deep500.utils.timer import key_name

#: The directory whose ``deep500`` package stands in for the fork.
FALLBACK_ROOT = Path(__file__).resolve().parents[1] / "deep500"
#: Where the processes of a job write their timers (set by :func:`prepare`).
DIR_ENV = "MAELSTROM_DEEP500_DIR"
#: The worker's pid: it collects its own timers in memory, the others write them at exit.
WORKER_ENV = "MAELSTROM_DEEP500_WORKER"
OBSERVER_ENV = "DEEP500_TIMER_OBSERVER"
MODULES = (
    "deep500.utils.timer",
    "deep500.utils.timer_cpugpu",
    "deep500.utils.timer_torch",
    "deep500.utils.timer_tf",
)

# id(timer) -> [timer, label, group]; strong references, the timers are read at the end
_timers: dict[int, list[Any]] = {}
_groups = itertools.count()
_installed = False


def register(timer: Any, label: str = "", group: int | None = None) -> None:
    """Know ``timer``; ``label`` is ``CPU`` or ``GPU`` for the halves of a CPU/GPU timer."""
    entry = _timers.get(id(timer))
    if entry is None:
        _timers[id(timer)] = [timer, label, next(_groups) if group is None else group]
    elif label:
        entry[1], entry[2] = label, group if group is not None else entry[2]


def _pair(timer: Any) -> None:
    group = next(_groups)
    register(timer.cpu_timer, "CPU", group)
    register(timer.gpu_timer, "GPU", group)


def _after_init(cls: Any, then: Any) -> None:
    init = cls.__dict__.get("__init__") if isinstance(cls, type) else None
    if init is None or getattr(init, "_maelstrom_observed", False):
        return

    @functools.wraps(init)
    def observed(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        try:
            then(self)
        except Exception:  # noqa: BLE001, S110 - capturing must never break the application
            pass

    observed._maelstrom_observed = True  # type: ignore[attr-defined]
    cls.__init__ = observed


def observe(module: Any) -> None:
    """Wrap the timer classes of a loaded ``deep500.utils.timer*`` module."""
    _after_init(module.__dict__.get("Timer"), register)
    for name in ("CPUGPUTimerBase", "CPUGPUTimer"):
        cls = module.__dict__.get(name)
        if isinstance(cls, type) and cls.__module__ == module.__name__:
            _after_init(cls, _pair)


class _ObservingLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        observe(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Observer(importlib.abc.MetaPathFinder):
    """Finds the timer modules as the other finders do, and observes them once loaded."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ObservingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Observe the timer modules (those loaded already, and those to come); idempotent. In a process
    the worker started, also write the timers at exit."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in MODULES:
        if name in sys.modules:
            observe(sys.modules[name])
    sys.meta_path.insert(0, _Observer())
    if os.environ.get(DIR_ENV) and os.environ.get(WORKER_ENV) != str(os.getpid()):
        atexit.register(_write)


def prepare(run_dir: Path | str) -> Path:
    """Set this process and the commands it starts up to capture Deep500 timers; returns the directory
    they report into."""
    directory = Path(run_dir) / "deep500"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {DIR_ENV: str(directory), WORKER_ENV: str(os.getpid()), OBSERVER_ENV: f"{__name__}:install"}
    )
    make_importable()
    install()
    return directory


def make_importable() -> None:
    """``import deep500.utils.timer`` works here and in the processes started from here (the ranks
    after the first of a job, which report nothing, need only this)."""
    root = str(FALLBACK_ROOT)
    if root not in sys.path:
        sys.path.append(root)  # after site-packages: an installed fork comes first
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        # on PYTHONPATH it precedes site-packages, so the stand-in hands over to an installed fork itself
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, root])


def snapshot() -> list[dict[str, Any]]:
    """Every known timer of this process with its samples: ``{group, label, times: {KEY: [s, ...]}}``."""
    out = []
    for timer, label, group in list(_timers.values()):
        try:
            timer.complete_all()  # regions still open are left out
        except Exception:  # noqa: BLE001, S110 - a GPU timer whose context is gone: what was read
            pass
        times = {
            key_name(k): [float(t) for t in v] for k, v in dict(getattr(timer, "times", {})).items() if v
        }
        if times:
            out.append({"group": f"{os.getpid()}.{group}", "label": label, "times": times})
    return out


def _write() -> None:
    directory = os.environ.get(DIR_ENV)
    timers = snapshot()
    if directory and timers:
        try:
            write_atomic(Path(directory) / f"{os.getpid()}.json", json.dumps(timers))
        except OSError as exc:
            print(f"maelstrom-run: Deep500 timings not saved: {exc}", file=sys.stderr)


def collect(directory: Path | str | None = None) -> list[dict[str, Any]]:
    """The timers of this process and those the job's commands wrote into ``directory``."""
    timers = snapshot()
    if directory is not None and Path(directory).is_dir():
        for path in sorted(Path(directory).glob("*.json")):
            try:
                timers.extend(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                print(f"maelstrom-run: Deep500 timings in {path} unreadable: {exc}", file=sys.stderr)
    return timers


def reset() -> None:
    """Forget the timers known so far (a worker that runs several jobs, tests)."""
    _timers.clear()
