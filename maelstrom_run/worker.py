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
from .core.transfer import is_disk_full

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

    from .tracking import benchmarking, mlflow_run
    from .tracking.outbox import Outbox

    run_dir = RunDir(spec.run_dir)
    if _rank() > 0:
        return run_rank(spec)
    reserve = _Reserve(run_dir.path)
    previous = run_dir.read_result() or Result()
    requeues = run_dir.requeues()
    resumed = previous.mlflow_run_id if requeues else None
    result = Result(run_id=spec.run_id, state=JobState.RUNNING, started=time.time())
    if resumed:
        result.started, result.requeues = previous.started or result.started, requeues
    run_dir.write_result(result)
    # the outbox tries again by itself; MLflow's own retries would only hold the app up
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    timeout = float(spec.tracking.get("timeout_s") or 10)
    down = False
    try:
        uri = mlflow_run.connect(spec.tracking)
    except mlflow_run.TrackingUnreachable as exc:  # the run goes on; its calls wait in the run dir
        uri, down = mlflow_run.tracking_uri(spec.tracking), True
        _say(
            f"maelstrom-run: {exc}".split("; start it")[0]
            + f"; tracking waits in {run_dir.path / 'tracking'}"
        )
    except Exception as exc:  # noqa: BLE001 - refused credentials, a bad URI: the run fails cleanly
        message = f"tracking: {exc}".splitlines()[0]
        _say(f"maelstrom-run: {message}")
        _finish(run_dir, result, JobState.FAILED, EXIT_SETUP_FAILED, error=message, reserve=reserve)
        return EXIT_SETUP_FAILED
    tracking = Outbox(run_dir.path, uri)
    tracking.lock(wait=True)
    if resumed and not tracking.has_run():  # a run directory from before the outbox
        tracking.state.update(run_id=resumed, experiment_id=previous.experiment_id)
    # started inside an MLflow run (`mlflow run` of an exported MLproject): track into that run
    adopted = None if resumed or tracking.has_run() else os.environ.get("MLFLOW_RUN_ID")
    if adopted:
        tracking.state.update(run_id=adopted, experiment_id=os.environ.get("MLFLOW_EXPERIMENT_ID") or None)
    reopened = tracking.has_run() and not adopted
    if reopened:  # started again after a requeue: continue the same MLflow run
        tracking.reopen(requeues)
    elif adopted:
        tracking.set_tags(mlflow_run.run_tags(spec))
    else:
        keys = spec.sweep_varying
        if keys is None:  # a spec of an earlier version: the parent run has them
            keys = [] if down else mlflow_run.sweep_varying_keys(spec.parent_run_id, uri)
        # a job submitted before its sweep's parent run existed looks the parent up when its run is made
        tracking.create(
            mlflow_run.experiment_name(spec),
            mlflow_run.run_tags(spec),
            mlflow_run.run_name(spec, keys),
            sweep_id=spec.sweep_id if not spec.parent_run_id else None,
        )
    tracking.start()
    if not down:  # the run's id in result.json while it runs, unless the server fails meanwhile
        tracking.wait(600, until=lambda: tracking.run_id is not None or tracking.failures > 0)
    _tracked(result, tracking)
    run_dir.write_result(result)
    epochs = mlflow_run.EpochLog()  # the history for the plots, the phase statistics for their table

    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        tracking.log_metrics(epochs.add(clean, step), step=step)

    ctx = _context(spec, log_metrics=log_metrics, log_artifact=tracking.log_artifact, requeues=requeues)
    try:
        if not reopened:
            tracking.log_params(mlflow_run.run_params(spec.config))
            tracking.log_text(spec.to_yaml(), "maelstrom/spec.yaml")
            tracking.log_text("\n".join(spec.overrides) + "\n", "maelstrom/overrides.txt")
            if spec.git and spec.git.get("diff"):
                tracking.log_text(spec.git["diff"], "maelstrom/git.diff")
        # before the entry's module is imported: it may import deep500 at its top
        session = benchmarking.Session.start(spec, run_dir.path, tracking)
        entry = load_entry(spec.entry, spec.code_dir)
        metrics = entry(ctx) or {}
        session.finish(ctx.timer.samples())
        final = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        tracking.log_metrics({f"final.{k}": v for k, v in final.items()})
        _log_outputs(spec, ctx, epochs, tracking)
    except Requeue:
        if ctx.checkpoint_hook is not None:
            ctx.checkpoint_hook()
        tracking.set_tags({"maelstrom.requeues": str(requeues + 1)})
        tracking.end("SCHEDULED")
        tracking.close(timeout)
        result.state, result.message = JobState.QUEUED, "requeued"
        _tracked(result, tracking)
        run_dir.write_result(result)
        _requeue(run_dir)
        return EXIT_APP_FAILED
    except BaseException as exc:  # noqa: BLE001 - the app's failure is the run's failure
        full = is_disk_full(exc)
        if full:  # the space kept aside lets the report below be written
            reserve.release()
        # a mistake in the config or the data that the app found: its one line, and exit code 2;
        # anything else: the app's traceback (from its entry point on) in stderr.log, and for the
        # run's record the error line and where in the app it was raised
        user = isinstance(exc, UserError)
        killed = isinstance(exc, KeyboardInterrupt | SystemExit)  # cancelled (SIGTERM) or interrupted
        if user:
            _say(f"maelstrom-run: error: {exc}")
            trace = traceback.format_exc()
        elif killed:
            trace = traceback.format_exc()
        else:
            trace = _quietly(print_app_error, exc) or traceback.format_exc()
        message = str(exc).splitlines()[0] if user else f"{type(exc).__name__}: {exc}".splitlines()[0]
        error = message if user else (_quietly(app_error, exc) or message)
        if killed:  # a time limit's SIGTERM, without the cancel marker, is named by the target
            message = error = (
                "cancelled" if run_dir.cancelled else f"stopped by a signal ({_signal_name(exc)})"
            )
            _say(f"maelstrom-run: {message}")
        if full and "No space left" not in message:
            message = error = f"No space left on device: {message}"
        code = EXIT_USER_ERROR if user else EXIT_APP_FAILED
        # nothing here may raise: the outbox keeps calls in memory when the disk is full
        if killed:  # closed first (the canceller kills it after a grace time), then its plots
            tracking.end("KILLED")
            _finish(run_dir, result, _ended_state(run_dir), code, error=error)
            _log_plots_quietly(spec, epochs, ctx, tracking)
        else:
            tracking.set_tags({"maelstrom.error": message[:5000]})
            tracking.log_text(trace, "maelstrom/error.txt")
            tracking.end("FAILED")
        _close_tracking(spec, result, tracking, timeout)
        _finish(run_dir, result, _ended_state(run_dir), code, error=error, reserve=reserve)
        return code
    tracking.end("FINISHED")
    _close_tracking(spec, result, tracking, timeout)
    if tracking.run_id and not tracking.pending:
        _judge_benchmark(spec, tracking.run_id, uri)
    result.metrics = final
    _finish(run_dir, result, JobState.SUCCEEDED, 0, reserve=reserve)
    return 0


def _judge_benchmark(spec: RunSpec, mlflow_run_id: str, uri: str) -> None:
    """``schedule.benchmark.baseline`` set: tag the run with its verdict against the baseline."""
    conf = (spec.config.get("schedule") or {}).get("benchmark") or {}
    if not conf.get("baseline"):
        return
    import mlflow

    from .schedule.benchmark import evaluate

    client = mlflow.MlflowClient(uri)
    try:
        verdict = evaluate(client, mlflow_run_id, conf)
    except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why it was not judged
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _quietly(client.set_tag, mlflow_run_id, "benchmark.regression", "unknown")
        print(f"maelstrom-run: benchmark not compared with {conf['baseline']}: {message}", file=sys.stderr)
        return
    what = "; ".join(verdict.offending) if verdict.regression else "no regression"
    print(f"maelstrom-run: benchmark against {conf['baseline']}: {what}", flush=True)


def _quietly(call: Any, *args: Any) -> Any:
    """``call(*args)``, or None where it raises (on a full disk, say): a report must not fail the report."""
    try:
        return call(*args)
    except Exception:  # noqa: BLE001
        return None


def _tracked(result: Result, tracking: Any) -> None:
    if tracking.run_id:
        result.mlflow_run_id, result.experiment_id = tracking.run_id, tracking.experiment_id
        # a command app (interop) logs to the same run
        os.environ.update(
            MLFLOW_RUN_ID=tracking.run_id,
            MLFLOW_EXPERIMENT_ID=tracking.experiment_id or "",
            MLFLOW_TRACKING_URI=tracking.uri,
        )
    result.tracking_uri = tracking.uri


def _close_tracking(spec: RunSpec, result: Result, tracking: Any, timeout: float) -> None:
    """Deliver what is left (while the server answers); say what waits for ``maelstrom runs sync``."""
    left = tracking.close(timeout)
    _tracked(result, tracking)
    if left:
        result.message = (
            f"tracking: {left} calls not delivered ({tracking.last_error}); "
            f"`maelstrom runs sync {spec.run_id}` sends them"
        )
        _say(f"maelstrom-run: {result.message}")


def _say(text: str) -> None:
    """A line on stderr that never raises (stderr may be a file on a full disk)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


class _Reserve:
    """Space kept aside in the run directory, given back on a full disk so the failure is recorded."""

    SIZE = 256 * 1024

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".space-reserve"
        try:
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * self.SIZE)
        except OSError:
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _signal_name(exc: BaseException) -> str:
    """``SIGTERM`` for the SystemExit our handler raises (128 + signal), ``SIGINT`` for Ctrl-C."""
    code = exc.code if isinstance(exc, SystemExit) else 128 + signal.SIGINT
    try:
        return signal.Signals(int(code or 0) - 128).name
    except (TypeError, ValueError):
        return f"exit {code}"


def _ended_state(run_dir: RunDir) -> JobState:
    """Cancelled when asked to stop (the cancel marker), else failed (also a time limit's SIGTERM)."""
    return JobState.CANCELLED if run_dir.cancelled else JobState.FAILED


def _log_plots_quietly(spec: RunSpec, epochs: Any, ctx: Any, tracking: Any) -> None:
    """The plots of a cancelled run, if they can be drawn in the moments it has left."""
    if not spec.tracking.get("plots", True):
        return
    try:
        _log_plots(spec, epochs, ctx.timer.samples(), ctx.units, tracking)
    except Exception as exc:  # noqa: BLE001 - closing the run as KILLED matters more than its plots
        _say(f"maelstrom-run: plots of the cancelled run: {exc}")


def _finish(
    run_dir: RunDir,
    result: Result,
    state: JobState,
    exit_code: int,
    error: str | None = None,
    reserve: _Reserve | None = None,
) -> None:
    result.state, result.exit_code, result.error, result.ended = state, exit_code, error, time.time()
    if reserve is not None:
        reserve.release()
    try:
        run_dir.write_result(result)
    except OSError as exc:  # the disk filled up after the reserve was given back: say so at least
        _say(f"maelstrom-run: error: cannot write {run_dir.result_file}: {exc}; the job {state}")
        raise SystemExit(exit_code or EXIT_APP_FAILED) from None


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

    from .tracking.deep500_capture import make_importable

    ctx = _context(spec, requeues=RunDir(spec.run_dir).requeues(), rank=_rank())
    make_importable()  # the app's Deep500 timers work on every rank; rank 0 records its own
    try:
        load_entry(spec.entry, spec.code_dir)(ctx)
    except Requeue:
        if ctx.checkpoint_hook is not None:
            ctx.checkpoint_hook()
        time.sleep(60)  # rank 0 requeues the job
        return EXIT_APP_FAILED
    return 0


def _log_outputs(spec: RunSpec, ctx: Any, epochs: Any, tracking: Any) -> None:
    """What a run logs at its end besides its final metrics: seconds per phase, the phase table, the
    dataset as an input, the plots."""
    from .tracking import mlflow_run

    summary = ctx.timer.run_summary()
    tracking.log_metrics(mlflow_run.run_totals(summary))
    if epochs.phase_rows or summary:
        tracking.log_text(epochs.phase_table(summary), mlflow_run.PHASE_TABLE)
    datasets = sys.modules.get("maelstrom_run.data.datasets")  # imported only by apps that load one
    for found in datasets.loaded() if datasets is not None else []:
        tracking.log_input(mlflow_run.dataset_input(found), context="training")
    if spec.tracking.get("plots", True):
        _log_plots(spec, epochs, ctx.timer.samples(), ctx.units, tracking)


def _log_plots(
    spec: RunSpec, epochs: Any, samples: dict[str, list[float]], units: dict[str, str], tracking: Any
) -> None:
    import matplotlib.pyplot as plt

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
        tracking.log_figure(fig, name)
        plt.close(fig)


def _app_frames(exc: BaseException) -> Any:
    """The traceback of ``exc`` from the app's first frame on: the worker's own frames, and
    Hydra's ``run_job`` that called the task function, are not the app's."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__
        or (
            tb.tb_frame.f_code.co_name == "run_job"
            and tb.tb_frame.f_globals.get("__name__") == "hydra.core.utils"
        )
    ):
        tb = tb.tb_next
    return tb or exc.__traceback__


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(
        {os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    )


def app_error(exc: BaseException) -> str:
    """One line for the run's record: where in the app it failed (the innermost frame outside the
    standard library and installed packages) and the error line."""
    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    libraries = _library_dirs()
    where = None
    for frame, lineno in traceback.walk_tb(_app_frames(exc)):
        filename = frame.f_code.co_filename
        if not os.path.realpath(filename).startswith(libraries) and not filename.startswith("<"):
            where = f"{os.path.basename(filename)}:{lineno} in {frame.f_code.co_name}"
    return f"{where}: {line}" if where else line


def print_app_error(exc: BaseException, header: str = "") -> str:
    """Write the app's traceback to stderr (the job's ``stderr.log``) and return it."""
    text = header + "".join(traceback.format_exception(type(exc), exc, _app_frames(exc)))
    print(text, file=sys.stderr, end="", flush=True)
    return text


def _hydra_sys_path(spec: RunSpec) -> None:
    """``sys.path`` as the submitting process had it, as Hydra's basic launcher runs the job there:
    the script's directory first, so that the app imports its sibling modules."""
    recorded = spec.config.get("sys_path")
    if not recorded:  # a spec written before the path was recorded
        if spec.code_dir and spec.code_dir not in sys.path:
            sys.path.insert(0, spec.code_dir)
        return
    # the worker's own entries follow, except its working directory (``python -m`` puts it first)
    sys.path[:] = [*recorded, *(p for p in sys.path[1:] if p not in recorded)]


def _config_types(config: Any) -> list[Any]:
    """The classes a config's nodes are typed with (structured configs, enums)."""
    from omegaconf import DictConfig, EnumNode, ListConfig

    found, todo = [], [config]
    while todo:
        node = todo.pop()
        found += [node._metadata.object_type, node._metadata.ref_type]
        if isinstance(node, EnumNode):
            found.append(node.enum_type)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            todo += [node._get_node(k) for k in node.keys()]
        elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
            todo += [node._get_node(i) for i in range(len(node))]
    return found


def _adopt_main(payload: dict[str, Any]) -> None:
    """Make the script's own functions and classes, which cloudpickle sent by value, what they were
    in the submitting process: named after the script's file (tracebacks show its file, line and
    source, as with the basic launcher) and found in ``__main__`` (so that ``pickle`` can save a
    config typed with the script's dataclasses, as ``PickleJobInfoCallback`` does)."""
    import types

    filename = payload["main_file"]

    def fix(code: types.CodeType) -> types.CodeType:
        if code.co_filename != "<dynamic-code>":
            return code
        consts = tuple(fix(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
        return code.replace(co_filename=filename, co_consts=consts)

    main = types.ModuleType("__main__")
    main.__file__ = filename
    seen: set[int] = set()
    objects = payload.get("main_objects") or {}
    for name, obj in objects.items():  # under the names the script gave them
        setattr(main, name, obj)
    todo = [payload["task_function"], *objects.values(), *_config_types(payload["config"])]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or getattr(obj, "__module__", None) != "__main__":
            continue
        seen.add(id(obj))
        if "." not in getattr(obj, "__qualname__", "."):
            setattr(main, obj.__qualname__, obj)
        if isinstance(obj, types.FunctionType):
            obj.__code__ = fix(obj.__code__)
            todo += [*obj.__globals__.values(), *vars(obj).values()]
            for cell in obj.__closure__ or ():
                try:
                    todo.append(cell.cell_contents)
                except ValueError:  # a cell not yet filled
                    pass
        elif isinstance(obj, type):
            todo += [getattr(v, "__func__", v) for v in vars(obj).values()]
    # the worker's own code keeps its globals; only lookups by module name see the script's objects
    if seen:
        sys.modules["__main__"] = main


def run_hydra(spec: RunSpec) -> int:
    """Run one job of a Hydra sweep for any Hydra app (task function pickled by the launcher)."""
    import pickle

    import cloudpickle
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    from .core.tracebacks import keep_traceback

    run_dir = RunDir(spec.run_dir)
    result = Result(run_id=spec.run_id, state=JobState.RUNNING, started=time.time())
    run_dir.write_result(result)
    # Hydra's plugin scan executes again every plugin module that is already imported, rebinding its
    # classes; scanned after the payload was unpickled (``Singleton.set_state`` scans when its state
    # has no plugin registry), the job's config would hold classes that no longer pickle. So: scan
    # first, then unpickle (which imports the scanned modules), and keep this one registry.
    try:
        _hydra_sys_path(spec)
        plugins = Plugins.instance()
        with open(run_dir.path / spec.payload, "rb") as fh:
            payload = cloudpickle.load(fh)
        if payload.get("main_file"):
            _adopt_main(payload)
    except Exception as exc:  # noqa: BLE001 - e.g. a module of the app that cannot be imported here
        print_app_error(exc, "maelstrom-run: cannot load the job's task function\n")
        _finish(run_dir, result, JobState.FAILED, EXIT_SETUP_FAILED, f"cannot load the job: {app_error(exc)}")
        return EXIT_SETUP_FAILED
    state = payload["singleton_state"]
    Singleton.set_state({**state, "instances": {**state["instances"], Plugins: plugins}})
    setup_globals()
    ret = run_job(
        hydra_context=payload["hydra_context"],
        task_function=payload["task_function"],
        config=payload["config"],
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    failure = ret._return_value if ret.status == JobStatus.FAILED else None
    if isinstance(failure, BaseException):
        print_app_error(failure, f"Error executing job with overrides: {list(ret.overrides or [])}\n")
        # the exception travels with its traceback, so Hydra shows the app's frames where it is raised
        keep_traceback(failure)
    try:
        data = cloudpickle.dumps(ret)
        cloudpickle.loads(data)  # what the submitting process will do (an exception's arguments)
    except Exception:  # noqa: BLE001 - an unpicklable return value is reported, not lost silently
        what = "exception" if failure is not None else "return value"
        shown = str(ret._return_value).splitlines()[0][:200] if str(ret._return_value) else ""
        ret.return_value = RuntimeError(
            f"job {what} of type {type(ret._return_value).__name__} cannot be pickled: {shown}"
        )
        ret.status = JobStatus.FAILED
        data = pickle.dumps(ret)
    run_dir.job_return.write_bytes(data)
    ok = ret.status == JobStatus.COMPLETED
    error = None
    if not ok:
        value = ret._return_value
        error = (
            app_error(failure) if isinstance(failure, BaseException) else f"{type(value).__name__}: {value}"
        )
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
    # the job's log files keep MLflow's own lines (store set-up); the console leaves them off
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO")
    if "SLURM_JOB_ID" in os.environ:  # Slurm's warning before the time limit or preemption
        signal.signal(signal.SIGUSR1, _warned)
    run_dir = RunDir(spec.run_dir)
    if run_dir.cancelled:
        run_dir.write_result(Result(run_id=spec.run_id, state=JobState.CANCELLED, ended=time.time()))
        return 0
    previous = run_dir.read_result()
    if previous is not None and previous.succeeded and _rank() == 0:
        # started again by the cluster after it ran to the end (a controller restored from its
        # state): the report stands, and running again could only overwrite it with a failure
        _say(f"maelstrom-run: {spec.run_id} already succeeded; not run again")
        return 0
    try:
        return run_hydra(spec) if spec.kind == "hydra" else run_app(spec)
    except OSError as exc:  # the run directory's disk is full before the job could even start
        if not is_disk_full(exc):
            raise
        _say(f"maelstrom-run: error: {run_dir.path}: No space left on device ({exc}); free space there")
        return EXIT_SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
