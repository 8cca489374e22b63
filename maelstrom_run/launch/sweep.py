"""The body of the maelstrom Hydra launcher: a sweep becomes one ``submit_many`` per backend.

Two kinds of task function arrive here:

- maelstrom-run's own (``__maelstrom_app__``): each job's config is composed and
  validated into a RunSpec before anything is submitted; an MLflow parent run is
  created for the sweep and every job becomes its child run.
- any other Hydra app: each job's task function, config and Hydra context are
  pickled into the job's run directory and run there by the worker with Hydra's
  ``run_job``, which makes this a conforming Hydra launcher.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import sys
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core import paths
from ..core.errors import JobError
from ..core.rundir import Result, RunDir
from ..core.spec import RunSpec, config_hash, new_id, package_versions
from .monitor import WaitView
from .registry import Registry, RunRecord
from .spec import from_config

log = logging.getLogger(__name__)


class JobFailed(JobError):
    """A job of a sweep did not succeed (the error Hydra raises when its result is read)."""


@dataclass
class SweepSummary:
    """How a sweep of maelstrom-run apps went, for the caller to show."""

    sweep_id: str
    records: list[RunRecord]
    overrides: list[list[str]]
    results: list[Result]
    #: Whether the jobs were waited for (else ``records`` are their submission records).
    waited: bool


class SweepReporter(Protocol):
    """What the caller (the Hydra launcher plugin, through the commands layer) shows of a sweep;
    this module itself writes nothing to the terminal."""

    def dry_run(self, specs: Sequence[RunSpec]) -> None: ...

    def wait_view(self) -> WaitView | None: ...

    def summary(self, summary: SweepSummary) -> None: ...


def launch(
    launcher: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    reporter: SweepReporter | None = None,
) -> list[Any]:
    from hydra.core.utils import setup_globals

    setup_globals()
    if getattr(launcher.task_function, "__maelstrom_app__", False):
        return _launch_apps(launcher, job_overrides, initial_job_idx, reporter)
    return _launch_hydra_tasks(launcher, job_overrides, initial_job_idx, reporter)


@contextlib.contextmanager
def _uncollected() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: a sweep's configs and specs are many small containers
    that all live until it is submitted, and the collector would only walk them again and again (a
    tenth of a 5,000-job submission)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _sweep_id(launcher: Any, app: str) -> str:
    # one id for all batches a sweeper hands to the same launcher
    if getattr(launcher, "sweep_id", None) is None:
        launcher.sweep_id = new_id(f"sweep-{app}")
    return launcher.sweep_id


def _launch_apps(
    launcher: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    reporter: SweepReporter | None,
) -> list[Any]:
    from ..tracking.mlflow_run import start_parent_run_async, tracking_uri, varying
    from .compose import compose_jobs
    from .gitinfo import capture
    from .submit import connect, default_wait, submit

    registry = Registry()
    size = initial_job_idx + len(job_overrides)
    git = capture(Path.cwd())  # every job of the sweep runs the same code
    swept = varying(job_overrides)
    jobs, specs = [], []
    parent, pending = getattr(launcher, "parent_run", None), None
    backends: dict[str, Any] = {}
    with _uncollected():
        for index, job in enumerate(compose_jobs(launcher.config_loader, launcher.config, job_overrides)):
            sweep_id = _sweep_id(launcher, job.config["app"]["name"])
            spec = from_config(
                job.config,
                job.overrides,
                sweep_id=sweep_id,
                sweep_index=initial_job_idx + index,
                sweep_size=size,
                git=git,
            )
            spec.sweep_varying = list(swept)
            if parent is not None:  # a later batch of the same sweep (a sweeper's next trials)
                spec.parent_run_id = parent[0]
            jobs.append(job)
            specs.append(spec)
            if index == 0 and not spec.config.get("dry_run"):
                backends = connect([spec])  # refused credentials: nothing recorded, no MLflow run
                # recorded before its parent run exists, so a submitter killed from now on leaves a
                # sweep that `maelstrom runs resume` finds; the URI says the sweep has a parent run
                uri = parent[1] if parent else tracking_uri(spec.tracking)
                registry.add_sweep(
                    sweep_id,
                    spec.app,
                    size,
                    spec.backend.get("name", ""),
                    [list(o) for o in job_overrides],
                    parent[0] if parent else None,
                    uri,
                )
                if parent is None:
                    # made and recorded by another process while this one composes and submits: jobs
                    # never wait for it (they find it when they start, or the sweep's close links them)
                    then = functools.partial(_record_parent, registry.path, sweep_id)
                    pending = start_parent_run_async(spec, size, swept, then)
    sweep_id = specs[0].sweep_id
    if any(s.config.get("dry_run") for s in specs):
        if pending is not None:
            _discard(pending)
        if reporter is not None:
            reporter.dry_run(specs)
        return [
            _job_return(launcher, job, spec.run_dir, {"dry_run": True, "run_id": spec.run_id})
            for job, spec in zip(jobs, specs, strict=True)
        ]
    wait = default_wait(specs[0].backend, launcher.wait)
    try:
        with _uncollected():
            records = submit(specs, wait=False, registry=registry, backends=backends)
    except BaseException:
        parent = _settle(launcher, pending, parent)
        if parent is not None and pending is not None and not registry.count(sweep_id=sweep_id):
            _abandon(registry, sweep_id, parent)
        raise
    _settle(launcher, pending, parent)
    if wait:
        from .monitor import wait as wait_for

        view = reporter.wait_view() if reporter is not None else None
        records = wait_for(registry, [s.run_id for s in specs], view=view)
    results = [(RunDir(r.run_dir).read_result() or Result()) if wait else Result() for r in records]
    if reporter is not None:
        reporter.summary(SweepSummary(sweep_id, records, [list(o) for o in job_overrides], results, wait))
    returns = []
    for job, record, result in zip(jobs, records, results, strict=True):
        if not wait:
            value: Any = {
                "run_id": record.run_id,
                "job_id": record.job_id,
                "backend": record.backend,
                "run_dir": record.run_dir,
                "sweep_id": sweep_id,
            }
            returns.append(_job_return(launcher, job, record.run_dir, value))
            continue
        if record.state == "succeeded":
            returns.append(_job_return(launcher, job, record.run_dir, result.metrics))
        else:
            error = JobFailed(
                f"run {record.run_id} {record.state}: {record.message or result.error or ''}"
                f" (see `maelstrom runs logs {record.run_id}`)"
            )
            returns.append(_job_return(launcher, job, record.run_dir, error, failed=True))
    return returns


def _settle(launcher: Any, pending: Any, parent: tuple[str, str] | None) -> tuple[str, str] | None:
    """The sweep's parent run once its making (``pending``, if any) is over; None where the tracking
    server could not be reached (the sweep's close makes it later)."""
    from ..tracking.mlflow_run import TrackingError

    if pending is not None:
        try:
            parent = pending()
        except TrackingError as exc:
            log.warning(
                "maelstrom: %s; the sweep's MLflow parent run is not made yet: it is made once the "
                "server answers (`maelstrom runs sync --sweep %s`)",
                str(exc).split("; ")[0],
                launcher.sweep_id,
            )
        launcher.parent_run = parent
    return parent


def _abandon(registry: Registry, sweep_id: str, parent: tuple[str, str]) -> None:
    """Close the parent run of a sweep whose jobs were refused before any was recorded."""
    from ..tracking.mlflow_run import kill_parent_run

    if registry.close_parent(sweep_id):
        try:
            kill_parent_run(*parent)
        except Exception as exc:  # noqa: BLE001 - the refusal is what the user must see
            log.warning("maelstrom: could not close the sweep's MLflow parent run: %s", exc)


def _record_parent(path: Path, sweep_id: str, run_id: str, uri: str) -> None:
    """Record a sweep's parent run, in the process that made it (picklable, for that process)."""
    Registry(path).set_parent(sweep_id, run_id, uri)


def _discard(pending: Any) -> None:
    """Wait for a parent run that will not be used and mark it so (a dry run of a sweep)."""
    try:
        run_id, uri = pending()
    except Exception:  # noqa: BLE001 - nothing was recorded for a dry run anyway
        return
    from ..tracking.mlflow_run import end_parent_run

    end_parent_run(run_id, uri, {}, {})


def _describe(task_function: Any) -> str:
    name = getattr(task_function, "__qualname__", type(task_function).__qualname__)
    return f"{getattr(task_function, '__module__', '?')}:{name}"


def _set_job(cfg: Any, sweep_id: str, idx: int) -> None:
    """Give a job's config its Hydra job id and number, and make it the current Hydra config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hydra.job.id = f"{sweep_id}_{idx}"
        cfg.hydra.job.num = idx
    HydraConfig.instance().set_config(cfg)


def _job_return(launcher: Any, job: Any, working_dir: str, value: Any, failed: bool = False) -> Any:
    """The JobReturn of a composed maelstrom-run job; its configs are composed only if read."""
    from hydra.core.utils import JobStatus

    from .compose import job_config

    ret = _lazy_job_return_class()()
    ret.factory = lambda: job_config(job, launcher.config_loader, launcher.config)
    ret.overrides = list(job.overrides)
    ret.working_dir = working_dir
    ret.task_name = launcher.config.hydra.job.name
    ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    ret.return_value = value
    return ret


@functools.cache
def _lazy_job_return_class() -> type:
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf, open_dict

    class LazyJobReturn(JobReturn):
        """A JobReturn whose ``hydra_cfg`` and ``cfg`` are composed when first read (a sweep of
        1,000 jobs composes each group combination once, not each job)."""

        factory: Any = None
        _hydra: Any = None
        _task: Any = None

        @property  # type: ignore[override]
        def hydra_cfg(self) -> Any:
            if self._hydra is None and self.factory is not None:
                self._hydra = self.factory()
            return self._hydra

        @hydra_cfg.setter
        def hydra_cfg(self, value: Any) -> None:
            self._hydra = value

        @property  # type: ignore[override]
        def cfg(self) -> Any:
            if self._task is None and self.hydra_cfg is not None:
                task = OmegaConf.create(OmegaConf.to_container(self.hydra_cfg, resolve=False))
                with open_dict(task):
                    task.pop("hydra", None)
                self._task = task
            return self._task

        @cfg.setter
        def cfg(self, value: Any) -> None:
            self._task = value

        @property  # type: ignore[override]
        def return_value(self) -> Any:
            # the sweep's summary has named the failed job: no "Error executing job" line of Hydra's
            if self.status == JobStatus.FAILED:
                raise self._return_value
            return self._return_value

        @return_value.setter
        def return_value(self, value: Any) -> None:
            self._return_value = value

    return LazyJobReturn


def _hydra_job_return(
    cfg: Any, overrides: Sequence[str], working_dir: str, value: Any, failed: bool = False
) -> Any:
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf, open_dict

    ret = JobReturn()
    ret.overrides = list(overrides)
    ret.hydra_cfg = cfg
    task_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(task_cfg):
        task_cfg.pop("hydra", None)
    ret.cfg = task_cfg
    ret.working_dir = working_dir
    ret.task_name = cfg.hydra.job.name
    ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    ret.return_value = value
    return ret


def _script(task_function: Any) -> tuple[str | None, dict[str, Any]]:
    """The file of the script that defines the task function, and the classes and functions it
    defines. cloudpickle sends them by value, without their file name; the job puts them back in
    its ``__main__`` (as for an ``_target_: __main__.Model`` that the task function does not name)."""
    import cloudpickle

    main = sys.modules.get("__main__")
    if getattr(task_function, "__module__", None) != "__main__" or not getattr(main, "__file__", None):
        return None, {}
    objects = {}
    for name, obj in vars(main).items():
        if isinstance(obj, type | types.FunctionType) and getattr(obj, "__module__", None) == "__main__":
            try:
                cloudpickle.dumps(obj)
            except Exception:  # noqa: BLE001 - what cannot travel stays behind, as it would be
                continue
            objects[name] = obj
    return os.path.abspath(main.__file__), objects


def _launch_hydra_tasks(
    launcher: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    reporter: SweepReporter | None,
) -> list[Any]:
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log
    from omegaconf import OmegaConf

    from .submit import connect, default_wait, submit

    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    name = launcher.config.hydra.job.name
    sweep_id = _sweep_id(launcher, name)
    chosen = OmegaConf.to_container(OmegaConf.create(launcher.backend or {}), resolve=True)
    backend = {"name": "local", "kind": "local", "max_parallel": 2, **chosen}
    # the job imports what this process can (the script's own directory first, as Hydra's basic
    # launcher runs the job in this process); an empty entry is the current directory
    sys_path = [os.path.abspath(p or os.curdir) for p in sys.path]
    main_file, main_objects = _script(launcher.task_function)
    specs, configs = [], []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        cfg = launcher.config_loader.load_sweep_config(launcher.config, list(overrides))
        _set_job(cfg, sweep_id, idx)
        run_id = f"{sweep_id}-{idx}"
        run_dir = paths.runs_dir() / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "task_function": launcher.task_function,
            "config": cfg,
            "hydra_context": launcher.hydra_context,
            "singleton_state": Singleton.get_state(),
            "main_file": main_file,
            "main_objects": main_objects,
        }
        (run_dir / "payload.pkl").write_bytes(cloudpickle.dumps(payload))
        job = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
        job.pop("hydra", None)
        config = {"backend": backend, "tracking": {}, "hydra_job": job, "sys_path": sys_path}
        specs.append(
            RunSpec(
                run_id=run_id,
                kind="hydra",
                app=name,
                entry=_describe(launcher.task_function),
                config=config,
                overrides=list(overrides),
                run_dir=str(run_dir),
                config_hash=config_hash(config),
                code_dir=os.getcwd(),
                packages=package_versions(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                sweep_id=sweep_id,
                sweep_index=idx,
                payload="payload.pkl",
            )
        )
        configs.append(cfg)
    registry = Registry()
    backends = connect(specs)  # refused credentials: nothing recorded
    size = initial_job_idx + len(specs)
    registry.add_sweep(sweep_id, name, size, backend["name"], [list(o) for o in job_overrides], None, None)
    wait = default_wait(backend, launcher.wait)
    view = reporter.wait_view() if reporter is not None else None
    records = submit(specs, wait=wait, registry=registry, backends=backends, view=view)
    if reporter is not None and not wait:  # Hydra shows nothing more: say where the jobs are
        results = [Result() for _ in records]
        reporter.summary(SweepSummary(sweep_id, records, [list(o) for o in job_overrides], results, False))
    returns = []
    for cfg, overrides, record in zip(configs, job_overrides, records, strict=True):
        pickled = Path(record.run_dir) / "job_return.pkl"
        if wait and pickled.exists():
            returns.append(cloudpickle.loads(pickled.read_bytes()))
            continue
        if wait:
            error = (RunDir(record.run_dir).read_result() or Result()).error or record.message or record.state
            ret = _hydra_job_return(
                cfg,
                overrides,
                record.run_dir,
                JobFailed(f"job {record.run_id} {record.state}: {error}; logs in {record.run_dir}"),
                failed=True,
            )
        else:
            ret = _hydra_job_return(
                cfg,
                overrides,
                record.run_dir,
                {"run_id": record.run_id, "job_id": record.job_id, "sweep_id": sweep_id},
            )
        returns.append(ret)
    return returns
