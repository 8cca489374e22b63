"""What runs on the target: ``python -m maelstrom_run.worker RUN_DIR/spec.yaml``.

For an application spec: start the MLflow run (child of the sweep's parent run, named
after the app and the overrides that vary), log the run's params (its resolved config
without nulls and unused tiers), the spec as artefacts, tags, then call the app's entry
point with a :class:`RunContext`; at the end the phase table, the datasets it loaded
(as MLflow inputs) and the plots. Success marks the run FINISHED;
an exception marks it FAILED and the process exits non-zero. The outcome is also
written to ``result.json`` in the run directory (the registry is never opened here).

For a ``hydra`` spec (any Hydra app on the maelstrom launcher): run the pickled task
function with Hydra's ``run_job`` and pickle the JobReturn beside the spec.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .core.errors import EXIT_USER_ERROR, ConfigError, UserError
from .core.rundir import Result, RunDir
from .core.spec import RunSpec
from .core.states import JobState

EXIT_APP_FAILED, EXIT_SETUP_FAILED = 1, 3


class Requeue(BaseException):
    """The cluster warned that the job is about to be stopped (USR1): checkpoint and requeue."""


def _warned(signum: int, frame: Any) -> None:
    raise Requeue()


def _requeue(run_dir: RunDir) -> None:
    """Ask Slurm to requeue this job (it is stopped and starts again later) and record it."""
    job = os.environ.get("SLURM_JOB_ID", "")
    run_dir.add_requeue(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} job {job}")
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"maelstrom-run: could not requeue job {job}: {proc.stderr.strip()}", file=sys.stderr)
        return
    print(
        f"maelstrom-run: job {job} requeued; it resumes in the same MLflow run", file=sys.stderr, flush=True
    )
    time.sleep(60)  # Slurm stops this job now; never report it as finished


def _rank() -> int:
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def load_entry(entry: str, code_dir: str | None) -> Any:
    module_name, _, func = entry.partition(":")
    if not module_name or not func:
        raise ConfigError(f"app.entry: {entry!r} must look like 'package.module:function'")
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"app.entry: cannot import {module_name!r} ({exc}); code dir {code_dir}") from None
    if not hasattr(module, func):
        raise ConfigError(f"app.entry: module {module_name!r} has no function {func!r}")
    return getattr(module, func)


def _escape(value: Any) -> Any:
    """Resolved values are final: keep ``${...}`` text (secret references) from being re-interpolated."""
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, str):
        return value.replace("${", "\\${")
    return value


def run_app(spec: RunSpec) -> int:

    from .tracking import mlflow_run

    run_dir = RunDir(spec.run_dir)
    if _rank() > 0:
        return run_rank(spec)
    previous = run_dir.read_result() or Result()
    requeues = run_dir.requeues()
    resumed = previous.mlflow_run_id if requeues else None
    result = Result(run_id=spec.run_id, state=JobState.RUNNING, started=time.time())
    if resumed:
        result.started, result.requeues = previous.started or result.started, requeues
    run_dir.write_result(result)
    try:
        uri = mlflow_run.connect(spec.tracking)
        import mlflow

        experiment_id = mlflow_run.ensure_experiment(mlflow_run.experiment_name(spec), uri)
        if resumed:  # started again after a requeue: continue the same MLflow run
            run = mlflow.start_run(run_id=resumed)
            mlflow.set_tag("maelstrom.requeues", str(requeues))
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id,
                tags=mlflow_run.run_tags(spec),
                run_name=mlflow_run.run_name(spec, mlflow_run.sweep_varying_keys(spec.parent_run_id)),
            )
    except Exception as exc:  # noqa: BLE001 - any tracking failure fails the run cleanly
        message = f"tracking: {exc}".splitlines()[0]
        print(f"maelstrom-run: {message}", file=sys.stderr)
        _finish(run_dir, result, JobState.FAILED, EXIT_SETUP_FAILED, error=message)
        return EXIT_SETUP_FAILED

    result.mlflow_run_id, result.experiment_id, result.tracking_uri = run.info.run_id, experiment_id, uri
    run_dir.write_result(result)
    epochs = mlflow_run.EpochLog()  # the history for the plots, the phase statistics for their table

    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        mlflow.log_metrics(epochs.add(clean, step), step=step)

    ctx = _context(spec, log_metrics=log_metrics, log_artifact=mlflow.log_artifact, requeues=requeues)
    try:
        if not resumed:
            params = mlflow_run.run_params(spec.config)
            items = list(params.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
            mlflow.log_text(spec.to_yaml(), "maelstrom/spec.yaml")
            mlflow.log_text("\n".join(spec.overrides) + "\n", "maelstrom/overrides.txt")
            if spec.git and spec.git.get("diff"):
                mlflow.log_text(spec.git["diff"], "maelstrom/git.diff")
        entry = load_entry(spec.entry, spec.code_dir)
        metrics = entry(ctx) or {}
        final = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        mlflow.log_metrics({f"final.{k}": v for k, v in final.items()})
        _log_outputs(spec, ctx, epochs)
    except Requeue:
        if ctx.checkpoint_hook is not None:
            ctx.checkpoint_hook()
        mlflow.set_tag("maelstrom.requeues", str(requeues + 1))
        mlflow.end_run("SCHEDULED")
        result.state, result.message = JobState.QUEUED, "requeued"
        run_dir.write_result(result)
        _requeue(run_dir)
        return EXIT_APP_FAILED
    except BaseException as exc:  # noqa: BLE001 - the app's failure is the run's failure
        trace = traceback.format_exc()
        # a mistake in the config or the data that the app found: its one line, and exit code 2
        user = isinstance(exc, UserError)
        print(f"maelstrom-run: error: {exc}" if user else trace, file=sys.stderr, flush=True)
        message = str(exc).splitlines()[0] if user else f"{type(exc).__name__}: {exc}".splitlines()[0]
        code = EXIT_USER_ERROR if user else EXIT_APP_FAILED
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
        try:
            mlflow.set_tag("maelstrom.error", message[:5000])
            mlflow.log_text(trace, "maelstrom/error.txt")
            mlflow.end_run(status)
        finally:
            state = JobState.CANCELLED if run_dir.cancelled else JobState.FAILED
            _finish(run_dir, result, state, code, error=message)
        return code
    mlflow.end_run("FINISHED")
    result.metrics = final
    _finish(run_dir, result, JobState.SUCCEEDED, 0)
    return 0


def _finish(
    run_dir: RunDir, result: Result, state: JobState, exit_code: int, error: str | None = None
) -> None:
    result.state, result.exit_code, result.error, result.ended = state, exit_code, error, time.time()
    run_dir.write_result(result)


def _context(spec: RunSpec, **extra: Any) -> Any:
    """The :class:`RunContext` an entry point receives (config read-only, references kept as text)."""
    from omegaconf import OmegaConf

    from .core import paths
    from .tracking.context import RunContext

    return RunContext(
        cfg=OmegaConf.create(_escape(spec.config), flags={"readonly": True}),
        run_id=spec.run_id,
        run_dir=Path(spec.run_dir),
        cache_dir=paths.cache_dir(),
        **extra,
    )


def run_rank(spec: RunSpec) -> int:
    """A rank > 0 of a multi-task job: the same entry point, reporting nothing (rank 0 tracks the run)."""

    ctx = _context(spec, requeues=RunDir(spec.run_dir).requeues(), rank=_rank())
    try:
        load_entry(spec.entry, spec.code_dir)(ctx)
    except Requeue:
        if ctx.checkpoint_hook is not None:
            ctx.checkpoint_hook()
        time.sleep(60)  # rank 0 requeues the job
        return EXIT_APP_FAILED
    return 0


def _log_outputs(spec: RunSpec, ctx: Any, epochs: Any) -> None:
    """What a run logs at its end besides its final metrics: seconds per phase, the phase table, the
    dataset as an input, the plots."""
    import mlflow

    from .tracking import mlflow_run

    summary = ctx.timer.run_summary()
    mlflow.log_metrics(mlflow_run.run_totals(summary))
    if epochs.phase_rows or summary:
        mlflow.log_text(epochs.phase_table(summary), mlflow_run.PHASE_TABLE)
    datasets = sys.modules.get("maelstrom_run.data.datasets")  # imported only by apps that load one
    for found in datasets.loaded() if datasets is not None else []:
        mlflow.log_input(mlflow_run.dataset_input(found), context="training")
    if spec.tracking.get("plots", True):
        _log_plots(spec, epochs, ctx.timer.samples(), ctx.units)


def _log_plots(spec: RunSpec, epochs: Any, samples: dict[str, list[float]], units: dict[str, str]) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from .tracking import plots
    from .tracking.mlflow_run import streams_data

    history, who = epochs.history, {"app": spec.app, "run_id": spec.run_id}
    figures = []
    if plots.curve_panels(history):
        figures.append((plots.curves(history, units=units, **who), "plots/training_curves.png"))
    if samples:
        figures.append((plots.phases(epochs.phase_rows, samples, **who), "plots/phase_times.png"))
    # bytes per second of a loader that reads while training; in-memory loaders read once, up front
    if streams_data(spec.config) and any(name.startswith("rate.") for name in history):
        figures.append((plots.throughput(history, **who), "plots/throughput.png"))
    for fig, name in figures:
        mlflow.log_figure(fig, name)
        plt.close(fig)


def run_hydra(spec: RunSpec) -> int:
    """Run one job of a Hydra sweep for any Hydra app (task function pickled by the launcher)."""
    import pickle

    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    run_dir = RunDir(spec.run_dir)
    result = Result(run_id=spec.run_id, state=JobState.RUNNING, started=time.time())
    run_dir.write_result(result)
    with open(run_dir.path / spec.payload, "rb") as fh:
        payload = cloudpickle.load(fh)
    Singleton.set_state(payload["singleton_state"])
    setup_globals()
    if spec.code_dir and spec.code_dir not in sys.path:
        sys.path.insert(0, spec.code_dir)
    ret = run_job(
        hydra_context=payload["hydra_context"],
        task_function=payload["task_function"],
        config=payload["config"],
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001 - an unpicklable return value is reported, not lost silently
        ret.return_value = RuntimeError(
            f"job return value of type {type(ret._return_value)} cannot be pickled"
        )
        ret.status = JobStatus.FAILED
        data = pickle.dumps(ret)
    run_dir.job_return.write_bytes(data)
    ok = ret.status == JobStatus.COMPLETED
    error = None if ok else f"{type(ret._return_value).__name__}: {ret._return_value}"
    _finish(run_dir, result, JobState.SUCCEEDED if ok else JobState.FAILED, 0 if ok else 1, error)
    return 0 if ok else EXIT_APP_FAILED


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m maelstrom_run.worker RUN_DIR/spec.yaml", file=sys.stderr)
        return 2
    spec = RunSpec.read(Path(argv[0]))
    # Gateways without a shared filesystem upload the spec with ``run_dir: .`` and a relative
    # ``code_dir``: both are relative to the directory the spec was uploaded to.
    here = Path(argv[0]).resolve().parent
    spec.run_dir = os.path.normpath(here / spec.run_dir)
    if spec.code_dir and not os.path.isabs(spec.code_dir):
        spec.code_dir = os.path.normpath(here / spec.code_dir)
    # cancel (local process group, scancel) sends SIGTERM: unwind so the MLflow run is closed as KILLED
    signal.signal(signal.SIGTERM, _terminate)
    if "SLURM_JOB_ID" in os.environ:  # Slurm's warning before the time limit or preemption
        signal.signal(signal.SIGUSR1, _warned)
    run_dir = RunDir(spec.run_dir)
    if run_dir.cancelled:
        run_dir.write_result(Result(run_id=spec.run_id, state=JobState.CANCELLED, ended=time.time()))
        return 0
    return run_hydra(spec) if spec.kind == "hydra" else run_app(spec)


if __name__ == "__main__":
    sys.exit(main())
