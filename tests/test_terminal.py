"""What a person sees in the terminal: a run's own output without framework noise, the summaries at
the end of a run and a sweep, Ctrl-C, the help pages and shell completion; and the small rules behind
what is shown (the config hash of a dry run, word search, a schedule's last day)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maelstrom_run.commands.console import NoiseFilter

#: Lines a real ``maelstrom-run app=ap1`` (TensorFlow 2, MLflow 3) wrote to the job's stderr.
FRAMEWORK_LINES = """\
2026/12/02 03:46:23 INFO mlflow.store.db.utils: Creating initial MLflow database tables...
2026/12/02 03:46:24 INFO mlflow.store.db.utils: Updating database tables
INFO  [alembic.runtime.migration] Context impl SQLiteImpl.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796183187.668290    8838 port.cc:153] oneDNN custom operations are on. You may see slightly \
different numerical results due to floating-point round-off errors from different computation orders.
I0000 00:00:1796183690.717351   24230 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use \
available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the \
appropriate compiler flags.
2024-03-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.
WARNING:absl:absl says hello
/venv/lib/python3.11/site-packages/keras/src/layers/core.py:87: UserWarning: Do not pass an `input_shape`
  super().__init__(**kwargs)
"""


def test_framework_lines_are_left_off_and_the_run_s_own_kept_even_when_split():
    own = "epoch 1/2  loss=0.5  [0.20 s, 50 samples/s; io 10%]\nmaelstrom-run: error: dataset.path missing\n"
    text = FRAMEWORK_LINES + own + 'Traceback (most recent call last):\n  File "train.py", line 3\n'
    noise = NoiseFilter()
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]  # a log file read as it grows
    shown = "".join(noise.feed(piece) for piece in pieces) + noise.flush()
    assert shown == own + 'Traceback (most recent call last):\n  File "train.py", line 3\n'


NOISY_APP = '''\
"""A toy app whose dependencies are noisy, as TensorFlow's and MLflow's are."""

import sys
import time
from pathlib import Path


def main(ctx):
    sys.path.insert(0, str(Path(__file__).parent / "vendor" / "site-packages"))
    import noisydep

    noisydep.old_api()
    from absl import logging as absl_logging

    absl_logging.warning("absl says hello")
    for epoch in range(int(ctx.cfg.train.epochs)):
        with ctx.timer.phase("io"):
            time.sleep(float((ctx.cfg.app.get("params") or {}).get("pause", 0.0)))
        ctx.timer.count("samples", 32)
        ctx.end_epoch(epoch, {"loss": 1.0 / (epoch + 1)})
    return {"loss": 1.0 / max(1, int(ctx.cfg.train.epochs))}
'''

NOISY_DEP = """\
import warnings


def old_api():
    warnings.warn("old_api() is deprecated", FutureWarning, stacklevel=1)
"""


@pytest.fixture
def noisy_project(toy_project: Path, cli_env: dict) -> tuple[Path, dict]:
    (toy_project / "noisy.py").write_text(NOISY_APP)
    vendor = toy_project / "vendor" / "site-packages"
    vendor.mkdir(parents=True)
    (vendor / "noisydep.py").write_text(NOISY_DEP)
    return toy_project, {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}


def _mlflow(home: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


@pytest.mark.slow
def test_a_run_shows_its_own_output_and_a_summary(noisy_project, run_cli, maelstrom_home):
    project, env = noisy_project
    args = ["app=toy", "app.entry=noisy:main", "train.epochs=2"]
    dry = run_cli([*args, "dry_run=true"], cwd=project, env=env, check=True)
    dry_hash = re.search(r"config hash ([0-9a-f]{12})", dry.stdout).group(1)
    assert "\x1b[" not in dry.stdout  # plain text to copy
    command = next(line for line in dry.stdout.splitlines() if "maelstrom_run.worker" in line)
    assert command.startswith("cd ") and command.endswith("stderr.log")  # one whole line

    result = run_cli(args, cwd=project, env=env, check=True)
    shown = result.stdout + result.stderr
    for noise in ("Creating initial MLflow database tables", "absl says hello", "FutureWarning", "old_api()"):
        assert noise not in shown, shown
    assert re.search(r"^epoch 1/2  loss=1  \[\d+\.\d\d s, [\d,]+ samples/s; io 100%\]$", result.stdout, re.M)
    run_id = re.search(r"(toy-\d{8}-\d{6}-[0-9a-f]{6}) succeeded after \d+s", result.stderr).group(1)
    assert "final metrics: loss=0.5" in result.stderr
    uri = f"sqlite:///{maelstrom_home / 'mlflow.db'}"
    assert (
        f"see it: mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/#/experiments/"
        in (result.stderr)
    )
    assert [line for line in result.stderr.splitlines() if line.startswith("next:")] == [
        f"next: maelstrom runs info {run_id}"
    ]
    # the job's log file keeps everything the frameworks said
    log = (maelstrom_home / "runs" / run_id / "stderr.log").read_text()
    for noise in ("Creating initial MLflow database tables", "absl says hello", "FutureWarning"):
        assert noise in log

    client = _mlflow(maelstrom_home)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.data.tags["maelstrom.config_hash"].startswith(dry_hash)  # a dry run shows the real hash
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]

    verbose = run_cli([*args, "--verbose"], cwd=project, env=env, check=True)
    assert "absl says hello" in verbose.stderr and "FutureWarning" in verbose.stderr


def _wait_for(path_glob: str, home: Path, text: str, count: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while sum(text in p.read_text() for p in home.glob(path_glob)) < count:
        assert time.monotonic() < deadline, f"no {text!r} in {path_glob}"
        time.sleep(0.2)


def _interrupt(project: Path, env: dict, home: Path, args: list[str], line: str, jobs: int):
    """Start a long run of the noisy app, press Ctrl-C (SIGINT) once ``jobs`` job logs show ``line``."""
    command = [str(Path(sys.executable).parent / "maelstrom-run"), *args, "app=toy", "app.entry=noisy:main"]
    proc = subprocess.Popen(
        [*command, "train.epochs=200", "+app.params.pause=0.3"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for("runs/*/stdout.log", home, line, count=jobs)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, stderr


@pytest.mark.slow
def test_ctrl_c_on_a_run_names_it_cancelled_and_keeps_its_mlflow_record(noisy_project, maelstrom_home):
    project, env = noisy_project
    proc, stderr = _interrupt(project, env, maelstrom_home, [], "epoch 2/200", 1)
    assert proc.returncode == 130 and "cancelling the unfinished jobs" in stderr
    assert re.search(r"toy-\d{8}-\d{6}-[0-9a-f]{6} cancelled after \d+s", stderr), stderr
    assert "SystemExit" not in stderr and "Traceback" not in stderr
    assert re.search(r"^next: maelstrom runs rerun toy-", stderr, re.M)
    client = _mlflow(maelstrom_home)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps[:2] == [1, 2]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} >= {"plots/training_curves.png"}


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_kills_its_parent_run(noisy_project, maelstrom_home):
    project, env = noisy_project
    args = ["--multirun", "train.seed=1,2", "backend.max_parallel=2"]
    proc, stderr = _interrupt(project, env, maelstrom_home, args, "epoch 1/200", 2)
    assert proc.returncode == 130, stderr
    assert "2 jobs: 2 cancelled" in stderr and "train.seed=1" in stderr and "SystemExit" not in stderr
    client = _mlflow(maelstrom_home)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert sorted(r.info.status for r in runs if r is not parent) == ["KILLED", "KILLED"]
    assert f"MLflow parent run {parent.info.run_id}" in stderr
    assert f"next: maelstrom runs rerun --sweep {parent.data.tags['maelstrom.sweep_id']} --failed" in stderr


# -- summaries of sweeps ---------------------------------------------------------------------------
def test_a_sweep_summary_shows_what_varies_the_best_job_and_hints_only_on_failure(maelstrom_home, capsys):
    from maelstrom_run.commands.summaries import print_sweep_summary, varying
    from maelstrom_run.core.rundir import Result
    from maelstrom_run.launch.registry import RunRecord
    from maelstrom_run.launch.sweep import SweepSummary

    overrides = [["app=toy", f"model.learning_rate={lr}", "train.epochs=1"] for lr in (0.1, 0.01, 0.001)]
    assert varying(overrides) == [
        ["model.learning_rate=0.1"],
        ["model.learning_rate=0.01"],
        ["model.learning_rate=0.001"],
    ]

    def record(i: int, state: str) -> RunRecord:
        return RunRecord(
            f"toy-{i}", "sweep-toy-1", i, "toy", "local", "local", str(i), state, "/nowhere", None, None,
            None, None, None, None, 0.0, None, None, None, "{}",
        )  # fmt: skip

    losses = (0.3, 0.1, 0.2)
    results = [Result(metrics={"loss": v, "val_loss": v + 0.05}) for v in losses]
    ok = [record(i, "succeeded") for i in range(3)]
    print_sweep_summary(SweepSummary("sweep-toy-1", ok, overrides, results, True))
    out = capsys.readouterr().err
    assert "best: toy-1  model.learning_rate=0.01  val_loss=0.15" in out
    assert "train.epochs" not in out and "rerun" not in out
    assert "next: maelstrom runs list --sweep sweep-toy-1" in out

    failed = [record(0, "failed"), *ok[1:]]
    print_sweep_summary(SweepSummary("sweep-toy-1", failed, overrides, [Result(), *results[1:]], True))
    out = capsys.readouterr().err
    assert "next: maelstrom runs rerun --sweep sweep-toy-1 --failed" in out


# -- help and completion ---------------------------------------------------------------------------
_MARKUP = re.compile(r"``|:(?:class|func|meth|mod|data|attr):`")


def _parsers(parser: argparse.ArgumentParser, path: str = "maelstrom"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_plain_help():
    from maelstrom_run.commands.main import parser

    seen = 0
    for path, p in _parsers(parser()):
        for text in (p.description or "", p.epilog or "", p.format_help()):
            assert not _MARKUP.search(text), f"{path}: reStructuredText in its help"
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            seen += 1
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{path} {action.option_strings or action.dest}"
            )
    assert seen > 40


def test_maelstrom_run_help_is_plain_text_and_imports_no_framework(run_cli, cli_env):
    code = (
        "import sys; sys.argv = ['maelstrom-run', '--help']\n"
        "from maelstrom_run.commands.run import main; main()\n"
        "assert not {'hydra', 'mlflow', 'torch', 'tensorflow'} & set(sys.modules), sorted(sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, check=True
    )
    assert "--verbose" in result.stdout and not _MARKUP.search(result.stdout)


def _complete(line: str, env: dict, tmp_path: Path) -> list[str]:
    """What bash would offer after ``line`` (argcomplete's own protocol, as the shell hook runs it)."""
    out = tmp_path / "completions"
    environ = {
        **env,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    probe = "import sys\nfrom maelstrom_run.commands.main import main\nmain()\n"
    subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, timeout=60)
    text = out.read_text() if out.exists() else ""
    return [c.strip() for c in text.split("\n")] if text else []  # one completion ends with a space


def test_shell_completion_offers_commands_and_the_ids_in_the_registry(cli_env, maelstrom_home, tmp_path):
    from maelstrom_run.launch.registry import Registry
    from maelstrom_run.schedule.store import ScheduleRecord, ScheduleStore

    assert "runs" in _complete("maelstrom ru", cli_env, tmp_path)
    assert "--sweep" in _complete("maelstrom runs list --sw", cli_env, tmp_path)
    registry = Registry(maelstrom_home / "registry.db")
    with registry._connect() as db:
        for run_id in (
            "ap1-20261201-100000-aaaaaa",
            "ap1-20261201-110000-bbbbbb",
            "ap2-20261201-100000-cccccc",
        ):
            db.execute(
                "INSERT INTO runs (run_id, app, backend, backend_kind, state, run_dir, created, spec) "
                "VALUES (?, 'ap1', 'local', 'local', 'succeeded', '/x', 0, '{}')",
                (run_id,),
            )
    registry.add_sweep("sweep-ap1-20261201-120000-dddddd", "ap1", 2, "local", [["a=1"], ["a=2"]], None, None)
    schedule = ScheduleRecord(
        "sched-ap1-daily-eeeeee", "ap1", "daily", "0 6 * * *", "UTC", 0.0, None, "none", 1, None, "active",
        0.0, 0, None, "[]", "{}", 0.0,
    )  # fmt: skip
    ScheduleStore(maelstrom_home / "registry.db").add(schedule)
    assert sorted(_complete("maelstrom runs info ap1", cli_env, tmp_path)) == [
        "ap1-20261201-100000-aaaaaa",
        "ap1-20261201-110000-bbbbbb",
    ]
    assert _complete("maelstrom runs watch sweep-", cli_env, tmp_path) == ["sweep-ap1-20261201-120000-dddddd"]
    assert _complete("maelstrom runs list --sweep sw", cli_env, tmp_path) == [
        "sweep-ap1-20261201-120000-dddddd"
    ]
    assert _complete("maelstrom schedules show sch", cli_env, tmp_path) == ["sched-ap1-daily-eeeeee"]


def test_completion_reads_the_registry_without_mlflow(maelstrom_home):
    code = (
        "import sys\n"
        "from maelstrom_run.commands.completion import run_ids\n"
        "print(run_ids(''))\n"
        "assert 'mlflow' not in sys.modules and 'hydra' not in sys.modules\n"
    )
    env = {**os.environ, "MAELSTROM_HOME": str(maelstrom_home)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (maelstrom_home / "registry.db").exists()  # completing creates nothing


# -- data get, config hash, search, schedules --------------------------------------------------------
def test_data_get_fails_at_once_on_a_host_that_does_not_resolve(run_cli, cli_env, tmp_path):
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "nohost.yaml").write_text(
        "kind: ap1\nname: nohost\nsource: sample\npath: null\ntiers:\n"
        "  tiny: {runs: 6, leadtimes: 4, y: 32, x: 32, predictors: 8, static_predictors: 6}\n"
        "validation_fraction: 0.2\nremote:\n  url: https://no-such-host.invalid/data\n"
        "  tiers:\n    one: {files: [a.nc]}\n"
    )
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(tmp_path / "conf")}
    result = run_cli(["maelstrom", "data", "get", "nohost", "--tier", "one", "--retries", "5"], env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "'no-such-host.invalid' does not resolve" in line and "retry" not in line.lower()


def test_the_config_hash_ignores_what_does_not_change_the_run():
    from maelstrom_run.core.spec import config_hash

    config = {"model": {"learning_rate": 0.01}, "train": {"epochs": 3}, "dry_run": False, "tags": {}}
    same = {
        **config,
        "dry_run": True,
        "run_name": "try 2",
        "tags": {"who": "me"},
        "schedule": {"name": "daily"},
    }
    assert config_hash(same) == config_hash(config)
    assert config_hash({**config, "train": {"epochs": 4}}) != config_hash(config)


def test_search_text_matches_words_not_parts_of_names():
    from maelstrom_run.labels.search import Item, search

    train = Item("run", "toy-1", [], "toy-1 toy toy train.epochs=3 model.learning_rate=0.01")
    rain = Item("run", "ap1-2", [], "ap1-2 ap1 ap1 rain-rate precipitation")
    raining = Item("app", "ap2", [], "ap2 will it be raining tomorrow")
    assert search([train, rain, raining], [], ["rain"]) == [rain, raining]
    assert search([train, rain], [], ["train"]) == [train]
    assert search([train, rain], [], ["Epochs"]) == [train]
    assert search([train, rain], [], ["learning_rate=0.01"]) == [train]


def test_a_schedule_s_end_day_is_included():
    from maelstrom_run.schedule import timing

    conf = timing.check(
        {
            "name": "daily",
            "cron": "0 23 * * *",
            "timezone": "Europe/Berlin",
            "start": "2026-12-29",
            "end": "2026-12-31",
            "catchup": "none",
            "max_concurrent": 1,
        }
    )
    after = dt.datetime(2026, 12, 28, 23, 30, tzinfo=dt.UTC)
    due = [s.key for s in timing.slots(conf["cron"], "Europe/Berlin", after, until=conf["end"])]
    assert due == ["2026-12-29T23:00", "2026-12-30T23:00", "2026-12-31T23:00"]
    later = timing.check({**conf, "start": None, "end": "2026-12-31T12:00"})["end"]
    assert later == dt.datetime(2026, 12, 31, 11, 0, tzinfo=dt.UTC)  # a time of day is kept as given
