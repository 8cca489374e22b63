"""Hydra apps on ``hydra/launcher=maelstrom`` behave as on Hydra's basic launcher.

Each app of ``tests/hydra_apps/`` (written in the style of Hydra's examples) runs as a script from
another directory, once with Hydra's basic launcher (the oracle) and once with the maelstrom launcher
on the local backend; the exit codes, the job directories, the ``.hydra/`` files and the values
the jobs returned (``PickleJobInfoCallback``'s ``job_return.pickle``) must agree, up to the launcher's
own keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

APPS = Path(__file__).resolve().parent / "hydra_apps"
#: Every job pickles its config and return value (Hydra's own callback), for the comparison.
SAVE_JOB_INFO = "+hydra.callbacks.save_job_info._target_=hydra.experimental.callbacks.PickleJobInfoCallback"
MAELSTROM = ["hydra/launcher=maelstrom"]
ON_SLURM = [
    *MAELSTROM,
    "hydra.launcher.wait=true",
    "++hydra.launcher.backend={name: slurm, kind: slurm, max_parallel: 4, resources: {time: 5m}}",
]

#: app -> (sweep overrides, exit code of the sweep)
CASES: dict[str, tuple[list[str], int]] = {
    "groups": (["db=mysql,postgresql"], 0),
    "structured": (["db.port=3306,3307", "mode=FAST"], 0),
    "callbacks": (["lr=0.1,0.2"], 0),
    "override_dirname": (["lr=0.1,0.01", "batch=16", "seed=1"], 0),
    "siblings": (["+value=1,2"], 0),
    "failing": (["+divisor=0"], 1),
}


def start_app(app: str, launcher: list[str], out: Path, overrides: list[str], env: dict[str, str]) -> Any:
    """Start ``python APP/my_app.py -m ...`` from a directory that is not the app's."""
    cwd = out.parent / "elsewhere"
    cwd.mkdir(exist_ok=True)
    extra = [] if app == "callbacks" else [SAVE_JOB_INFO]
    cmd = [sys.executable, str(APPS / app / "my_app.py"), "-m", f"hydra.sweep.dir={out}"]
    return subprocess.Popen(
        [*cmd, *launcher, *extra, *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: Any) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_app(app: str, launcher: list[str], out: Path, overrides: list[str], env: dict[str, str]) -> Any:
    return finish(start_app(app, launcher, out, overrides, env))


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def without_launcher(path: Path, out: Path, launcher: list[str]) -> Any:
    """A ``hydra.yaml`` or ``multirun.yaml`` with the launcher's own keys taken out and the
    output directory written as OUT."""
    data = yaml.safe_load(path.read_text().replace(str(out), "OUT"))
    hydra = data["hydra"]
    hydra.pop("launcher")
    hydra["job"].pop("id")  # the basic launcher's job_id_for_N, the maelstrom run id
    hydra["runtime"]["choices"].pop("hydra/launcher")
    overrides = hydra["overrides"]["hydra"]
    hydra["overrides"]["hydra"] = [o for o in overrides if o not in launcher]
    return data


def log_lines(path: Path, out: Path) -> list[str]:
    text = path.read_text().replace(str(out), "OUT")
    return [re.sub(r"^\[[0-9-]+ [0-9:,]+\]", "[TIME]", line) for line in text.splitlines()]


def app_module(app: str) -> Any:
    """The app's script as a module (not as ``__main__``: its ``my_app()`` is not called)."""
    spec = importlib.util.spec_from_file_location(f"hydra_app_{app}", APPS / app / "my_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(APPS / app))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(APPS / app))
    return module


def load_job_return(path: Path, app: str) -> Any:
    """``job_return.pickle`` as the job wrote it; the script's classes are the script's ``__main__``."""
    module = app_module(app)

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod: str, name: str) -> Any:
            return getattr(module, name) if mod == "__main__" else super().find_class(mod, name)

    with open(path, "rb") as fh:
        ret = Unpickler(fh).load()
    value = ret._return_value
    if isinstance(value, BaseException):
        value = (type(value).__name__, str(value))
    cfg = OmegaConf.to_container(ret.cfg, enum_to_str=True)
    return {"status": ret.status.name, "value": value, "overrides": ret.overrides, "cfg": cfg}


@pytest.fixture
def env(maelstrom_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "PYTHONPATH"))}
    return {**env, "MAELSTROM_HOME": str(maelstrom_home), "COLUMNS": "200"}


def compare(app: str, launcher: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[Any, Any]:
    overrides, code = CASES[app]
    basic_out, ours_out = tmp_path / "basic", tmp_path / "maelstrom"
    # both at once: the oracle and the launcher under test share nothing but the app's files
    started = (
        start_app(app, [], basic_out, overrides, env),
        start_app(app, launcher, ours_out, overrides, env),
    )
    basic, ours = (finish(p) for p in started)
    assert basic.returncode == code, basic.stderr
    assert ours.returncode == code, f"{ours.stdout}\n{ours.stderr}"

    # the same job directories with the same files
    assert files(ours_out) == files(basic_out)
    jobs = sorted({Path(f).parts[0] for f in files(basic_out) if "/" in f})
    assert len(jobs) == len(list(_sweep(overrides))), jobs
    for name in ("config.yaml", "overrides.yaml"):
        for job in jobs:
            assert (ours_out / job / ".hydra" / name).read_text() == (
                basic_out / job / ".hydra" / name
            ).read_text(), f"{job}/.hydra/{name}"
    assert without_launcher(ours_out / "multirun.yaml", ours_out, launcher) == without_launcher(
        basic_out / "multirun.yaml", basic_out, []
    )
    for job in jobs:
        ours_hydra = without_launcher(ours_out / job / ".hydra" / "hydra.yaml", ours_out, launcher)
        assert ours_hydra == without_launcher(basic_out / job / ".hydra" / "hydra.yaml", basic_out, [])
        # what each job returned, pickled by Hydra's callback in the job
        ours_ret = load_job_return(ours_out / job / ".hydra" / "job_return.pickle", app)
        assert ours_ret == load_job_return(basic_out / job / ".hydra" / "job_return.pickle", app)
        assert (ours_out / job / ".hydra" / "config.pickle").stat().st_size > 0
        # the job's log (Hydra's job logging), but for the time stamps
        for log in (basic_out / job).glob("*.log"):
            ours_log = log_lines(ours_out / job / log.name, ours_out)
            assert ours_log == log_lines(log, basic_out), log.name
    return basic, ours


def _sweep(overrides: list[str]) -> list[str]:
    """The jobs of a cartesian sweep (``a=1,2 b=3`` -> 2)."""
    n = 1
    for o in overrides:
        n *= len(o.split("=", 1)[1].split(","))
    return ["job"] * n


@pytest.mark.parametrize("app", list(CASES))
def test_app_as_with_basic_launcher(
    app: str, tmp_path: Path, env: dict[str, str], maelstrom_home: Path
) -> None:
    basic, ours = compare(app, MAELSTROM, tmp_path, env)
    if app == "callbacks":  # the app's own callback, imported from the script's directory
        for job in ("0", "1"):
            for name in ("marker.start", "marker.end"):
                assert (tmp_path / "maelstrom" / job / name).read_text() == (
                    tmp_path / "basic" / job / name
                ).read_text()
    if app == "override_dirname":
        assert sorted(p.name for p in (tmp_path / "maelstrom").iterdir() if p.is_dir()) == [
            "batch=16,lr=0.01",
            "batch=16,lr=0.1",
        ]
    if app == "failing":
        check_failure_frames(basic.stderr, ours.stderr, maelstrom_home)


def job_dirs(maelstrom_home: Path) -> list[Path]:
    """The run directories of the jobs (a Slurm sweep also has one of its own, for the array)."""
    return [p for p in (maelstrom_home / "runs").iterdir() if (p / "spec.yaml").exists()]


def traceback_block(stderr: str) -> str:
    """What Hydra shows of a failed job: from its "Error executing job" line to the exception."""
    start = stderr.index("Error executing job with overrides")
    return stderr[start : stderr.index("\nSet the environment variable HYDRA_FULL_ERROR", start)]


def check_failure_frames(basic: str, ours: str, maelstrom_home: Path) -> None:
    """The console shows the app's own frames exactly as the basic launcher's does, and so does the
    job's ``stderr.log``; the job's record names the app's line."""
    script = str(APPS / "failing" / "my_app.py")
    expected = traceback_block(basic)
    assert f'File "{script}", line 8, in ratio\n    return a / b\n' in expected, expected
    assert traceback_block(ours) == expected
    (run,) = job_dirs(maelstrom_home)
    log = (run / "stderr.log").read_text()
    assert expected in log, log
    record = json.loads((run / "result.json").read_text())
    assert record["error"] == "my_app.py:8 in ratio: ZeroDivisionError: division by zero"


class CodedError(Exception):
    """An exception whose ``__init__`` takes other arguments than its message (pickle cannot call it)."""

    def __init__(self, code: int, where: str) -> None:
        super().__init__(f"code {code} at {where}")


def _nested_failure() -> BaseException:
    def inner(table: dict[str, int], key: str) -> int:
        return table[key] + 1

    try:
        try:
            inner({"a": 1}, "b")
        except KeyError as exc:
            raise ValueError("no b") from exc
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def test_traceback_survives_pickling() -> None:
    """A job's exception, pickled with its traceback, prints as it did in the job (Python's own
    formatting is the oracle: files, lines, marked columns, chained causes)."""
    import cloudpickle

    from maelstrom_run.core.tracebacks import keep_traceback

    exc = _nested_failure()
    before = traceback.format_exception(exc)
    keep_traceback(exc)
    again = pickle.loads(cloudpickle.dumps(exc))
    assert traceback.format_exception(again) == before
    assert "~~~~~^^^^^" in "".join(before)  # the subscript's marks travel too

    try:
        _nested_inner_raises()
    except CodedError as coded:
        before = traceback.format_exception(coded)
        keep_traceback(coded)
        again = pickle.loads(cloudpickle.dumps(coded))
    assert type(again) is CodedError and str(again) == "code 3 at inner"
    assert traceback.format_exception(again) == before


def _nested_inner_raises() -> None:
    raise CodedError(3, "inner")


@pytest.mark.slow  # an MLflow run
def test_maelstrom_app_failure_shows_app_frames(run_cli, cli_env, toy_project, maelstrom_home) -> None:
    """maelstrom-run's own apps: the app's frames, not the worker's, on the console and in stderr.log;
    the run's summary names the app's line."""
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    result = run_cli(["app=toy", "model.learning_rate=0.5", "train.epochs=1"], cwd=toy_project, env=env)
    assert result.returncode == 1
    frame = f'File "{toy_project / "toyapp.py"}", line 19, in main\n    raise RuntimeError("diverged")\n'
    assert frame in result.stderr, result.stderr
    assert "maelstrom_run" not in result.stderr.split("Traceback", 1)[1].split("RuntimeError: diverged")[0]
    assert "toyapp.py:19 in main: RuntimeError: diverged" in result.stderr
    (run,) = job_dirs(maelstrom_home)
    assert frame in (run / "stderr.log").read_text()


def test_unpicklable_return_value_is_reported(
    tmp_path: Path, env: dict[str, str], maelstrom_home: Path
) -> None:
    """The basic launcher keeps the value in its process; a job must send it back, and says why it
    cannot (the job's HydraConfig pickles, so the report itself does)."""
    basic = run_app("unpicklable", [], tmp_path / "basic", [], env)
    assert basic.returncode == 0, basic.stderr
    ours = run_app("unpicklable", MAELSTROM, tmp_path / "maelstrom", [], env)
    assert ours.returncode == 1
    assert "RuntimeError: job return value of type lock cannot be pickled" in ours.stderr, ours.stderr
    (run,) = job_dirs(maelstrom_home)
    error = json.loads((run / "result.json").read_text())["error"]
    assert error.startswith("RuntimeError: job return value of type lock cannot be pickled"), error


def test_no_wait_says_how_to_follow(tmp_path: Path, env: dict[str, str]) -> None:
    proc = run_app("siblings", [*MAELSTROM, "hydra.launcher.wait=false"], tmp_path / "out", ["+value=1"], env)
    assert proc.returncode == 0, proc.stderr
    sweep = re.search(r"maelstrom runs watch (sweep-my_app-\S+)", proc.stderr)
    assert sweep, proc.stderr
    watch = subprocess.run(
        [str(Path(sys.executable).parent / "maelstrom"), "runs", "watch", sweep[1]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert watch.returncode == 0, watch.stderr
    assert "1 succeeded" in watch.stderr + watch.stdout


@pytest.mark.slow
@pytest.mark.parametrize("app", ["siblings", "failing"])
def test_app_on_local_slurm(
    app: str,
    tmp_path: Path,
    env: dict[str, str],
    maelstrom_home: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    basic, ours = compare(app, ON_SLURM, tmp_path, env)
    if app == "failing":
        check_failure_frames(basic.stderr, ours.stderr, maelstrom_home)
