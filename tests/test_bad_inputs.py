"""Bad inputs to both commands: each ends in one line naming what is wrong, exit code 2, no traceback,
and leaves a seeded registry, schedule store and dataset cache exactly as they were.

The commands' mains run in this process (hundreds of subprocesses would take minutes); a few cases
at the end run the installed console scripts, end to end.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maelstrom_run.core.spec import RunSpec

RUN_A = "ap1-20260101-000000-aaaaaa"
RUN_B = "ap1-20260101-000000-aabbbb"
SWEEP = "sweep-ap1-20260101-000000-cccccc"
SCHED_A = "sched-ap1-20260101-000000-dddddd"
SCHED_B = "sched-ap1-20260101-000000-ddeeee"


@dataclass
class Case:
    program: str  # "maelstrom-run" or "maelstrom"
    args: list[str]
    #: Text the one error line must contain (the key, file or id).
    expected: str
    env: dict[str, str] = field(default_factory=dict)
    #: Append ``dry_run=true`` (maelstrom-run): a bad input that slipped through submits nothing.
    dry: bool = True


def R(*args: str, expected: str, dry: bool = True, **env: str) -> Case:
    return Case("maelstrom-run", list(args), expected, env, dry)


def M(*args: str, expected: str, **env: str) -> Case:
    return Case("maelstrom", list(args), expected, env)


def _spec(run_id: str, sweep_id: str | None = None, index: int | None = None) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        kind="app",
        app="ap1",
        entry="toyapp:main",
        config={
            "app": {"name": "ap1", "entry": "toyapp:main"},
            "backend": {"name": "local", "kind": "local"},
            "tracking": {"uri": None},
        },
        overrides=["app=ap1"],
        run_dir=f"/nowhere/runs/{run_id}",
        config_hash="0" * 64,
        sweep_id=sweep_id,
        sweep_index=index,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A MAELSTROM_HOME with two runs of one sweep, two schedules and a cached sample set (one of its
    files damaged), and the bad files the cases point at."""
    root = tmp_path_factory.mktemp("bad-inputs")
    home = root / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("MAELSTROM_HOME", str(home))
    for name in ("MAELSTROM_CACHE", "MAELSTROM_CONFIG_PATH", "MLFLOW_TRACKING_URI"):
        mp.delenv(name, raising=False)
    try:
        from maelstrom_run.data.datasets import load_dataset
        from maelstrom_run.launch.registry import Registry
        from maelstrom_run.schedule.store import ScheduleRecord, ScheduleStore

        registry = Registry()
        registry.add_runs([_spec(RUN_A, SWEEP, 0), _spec(RUN_B, SWEEP, 1)], state="running")
        registry.add_sweep(SWEEP, "ap1", 2, "local", [["train.seed=1"], ["train.seed=2"]], None, None)
        store = ScheduleStore()
        for sid in (SCHED_A, SCHED_B):
            store.add(
                ScheduleRecord(
                    schedule_id=sid, app="ap1", preset="daily", cron="0 0 * * *", timezone="UTC",
                    start=time.time(), end=None, catchup="last", max_concurrent=1, pinned_commit=None,
                    state="active", checked_until=time.time(), skipped=0, code_dir=None,
                    overrides='["app=ap1"]', spec="{}", created=time.time(),
                )
            )  # fmt: skip
        files = load_dataset("ap1", "tiny").files
        files[0].write_bytes(b"\x89garbage, not NetCDF" * 50)  # damaged in the cache
    finally:
        mp.undo()

    afile = root / "afile"
    afile.write_text("a regular file\n")
    bad_yaml = root / "badconf"
    (bad_yaml / "app").mkdir(parents=True)
    (bad_yaml / "app" / "broken.yaml").write_text("name: broken\nentry: [a, b\n")
    taxonomy = root / "taxconf"
    taxonomy.mkdir()
    (taxonomy / "taxonomy.yaml").write_text("scopes: [app, run]\ncategories: nope\n")
    binary = root / "binproject"
    binary.mkdir()
    (binary / "MLproject").write_bytes(bytes(range(256)) * 4)
    project = root / "okproject"
    project.mkdir()
    (project / "MLproject").write_text("name: okp\nentry_points:\n  main:\n    command: python a.py\n")
    return {
        "root": root,
        "home": home,
        "afile": afile,
        "bad_yaml": bad_yaml,
        "taxonomy": taxonomy,
        "binary": binary,
        "project": project,
        "damaged": files[0],
    }


def _state(home: Path) -> dict[str, str]:
    """A digest of everything recorded under ``home``: databases by content, other files by bytes
    (not ``logs/``, nor ``hydra/``: Hydra's own note of each sweep it was asked for)."""
    digest = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home)
        if (
            not path.is_file()
            or rel.parts[0] in ("logs", "hydra")
            or path.name.endswith(("-wal", "-shm", ".lock"))
        ):
            continue
        if path.suffix == ".db":
            with sqlite3.connect(path) as db:
                text = "\n".join(db.iterdump())
            digest[str(rel)] = hashlib.sha256(text.encode()).hexdigest()
        else:
            digest[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


CASES: list[Case] = [
    # -- Hydra's own flags ---------------------------------------------------------------------
    R("app=ap1", "--nope", expected="unrecognized arguments: --nope; overrides are key=value"),
    R("--cfg", "bogus", expected="argument --cfg/-c: invalid choice: 'bogus'"),
    R("app=ap1", "--cfg", "job", "train.epochs=2", expected="put all key=value overrides together"),
    # -- app -----------------------------------------------------------------------------------
    R("app=nope", expected="app=nope: no such option"),
    R("app=ap1", "~app", expected="app: missing config group"),
    R("app=ap1", "app.framework=jax", expected="app.framework"),
    R("app=ap1", "app.sections=3", expected="app.sections"),
    R("app=ap1", "+app.param_types.lr=float64", expected="app.param_types.lr"),
    R("app=ap1", "app.nmae=x", expected="app.nmae: unknown key; did you mean 'name'?"),
    # -- train ---------------------------------------------------------------------------------
    R("app=ap1", "train.epochs=-1", expected="train.epochs: -1 is out of range; it must be >= 0"),
    R("app=ap1", "train.epochs=three", expected="train.epochs: expected an integer, got 'three'"),
    R("app=ap1", "train.epochs=2.5", expected="train.epochs"),
    R("app=ap1", "train.batch_size=-1", expected="train.batch_size: -1 is out of range"),
    R("app=ap1", "train.batch_size=0", expected="train.batch_size: 0 is out of range"),
    R("app=ap1", "train.seed=-3", expected="train.seed"),
    R("app=ap1", "train.tier=huge", expected="train.tier: 'huge' is not one of"),
    R("app=ap1", "train.steps_per_epoch=0", expected="train.steps_per_epoch"),
    R("app=ap1", "train=nope", expected="train=nope: no such option"),
    R("app=ap1", "train.epochz=1", expected="train.epochz: unknown key; did you mean 'epochs'?"),
    # -- dataset -------------------------------------------------------------------------------
    R(
        "app=ap1",
        "dataset.validation_fraction=1.5",
        expected="dataset.validation_fraction: 1.5 is out of range",
    ),
    R("app=ap1", "dataset.validation_fraction=1", expected="in [0, 1)"),
    R("app=ap1", "dataset.validation_fraction=-0.1", expected="dataset.validation_fraction"),
    R("app=ap1", "dataset.source=web", expected="dataset.source: 'web' is not one of"),
    R("app=ap1", "dataset.tiers.tiny.runs=0", expected="dataset.tiers.tiny.runs: 0 is out of range"),
    R("app=ap1", "dataset.tiers.tiny.y=-1", expected="dataset.tiers.tiny.y"),
    R("app=ap1", "dataset.kind=ap9", expected="dataset.kind: unknown value 'ap9'"),
    R("app=ap1", "dataset=nope", expected="dataset=nope: no such option"),
    R("app=ap1", "dataset.path=[1]", expected="dataset.path"),
    R("app=ap6", "dataset.turbine=0", expected="dataset.turbine: 0 is out of range"),
    R("app=ap4", "dataset.step=-1", expected="dataset.step"),
    R("app=ap4", "dataset.target=t999", expected="dataset.target: 't999' is not one of"),
    R("app=ap4", "dataset.tiers.tiny.levels=[0]", expected="dataset.tiers.tiny.levels[0]: 0 is out of range"),
    R("app=ap2", "dataset.validation_fraction=2", expected="dataset.validation_fraction"),
    R("app=ap3", "dataset.tiers.tiny.levels=0", expected="dataset.tiers.tiny.levels"),
    R("app=ap5", "dataset.tiers.tiny.variant=tier-3", expected="dataset.tiers.tiny.variant"),
    # -- loader --------------------------------------------------------------------------------
    R("app=ap1", "loader.threads=-2", expected="loader.threads: -2 is out of range; it must be >= 1"),
    R("app=ap1", "loader.threads=0", expected="loader.threads"),
    R("app=ap1", "loader.prefetch=-1", expected="loader.prefetch"),
    R("app=ap1", "loader.patch_size=0", expected="loader.patch_size"),
    R("app=ap1", "loader.features=[bogus]", expected="loader.features[0]: 'bogus' is not one of"),
    R("app=ap1", "loader.features=leadtime", expected="loader.features: expected a list"),
    R("app=ap1", "loader.target=max", expected="loader.target"),
    R("app=ap1", "loader.kind=image", expected="loader.kind"),
    R("app=ap1", "loader.shuffle=maybe", expected="loader.shuffle"),
    R("app=ap1", "loader=nope", expected="loader=nope: no such option"),
    # -- model ---------------------------------------------------------------------------------
    R("app=ap1", "model.learning_rate=0", expected="model.learning_rate: 0 is out of range; it must be > 0"),
    R("app=ap1", "model.learning_rate=-1", expected="model.learning_rate"),
    R("app=ap1", "model.learning_rate=fast", expected="model.learning_rate: expected a number"),
    R("app=ap1", "model.dropout=1.0", expected="model.dropout"),
    R("app=ap1", "model.filters=0", expected="model.filters"),
    R("app=ap1", "model.levels=0", expected="model.levels"),
    R("app=ap1", "model.kernel_size=-3", expected="model.kernel_size"),
    R("app=ap1", "model.weight_decay=-1", expected="model.weight_decay"),
    R("app=ap1", "model.optimizer=lbfgs", expected="model.optimizer: 'lbfgs' is not one of"),
    R("app=ap1", "model.arch=resnet", expected="model.arch: unknown value 'resnet'"),
    R("app=ap1", "model=nope", expected="model=nope: no such option"),
    R("app=ap2", "model.heads=0", expected="model.heads"),
    R("app=ap2", "model.dropout=2", expected="model.dropout"),
    R("app=ap4", "model.hidden=[0]", expected="model.hidden[0]"),
    R("app=ap5", "model.critic_steps=0", expected="model.critic_steps"),
    R("app=ap6", "model.regimes=0", expected="model.regimes"),
    R("app=ap3", "model.layers=0", expected="model.layers"),
    # -- backend -------------------------------------------------------------------------------
    R("app=ap1", "backend.max_parallel=0", expected="backend.max_parallel: 0 is out of range"),
    R("app=ap1", "backend.retries=-1", expected="backend.retries: -1 is out of range"),
    R("app=ap1", "backend.retries=0", expected="backend.retries"),
    R("app=ap1", "backend.retry_delay=-1", expected="backend.retry_delay"),
    R("app=ap1", "backend.resources.nodes=-1", expected="backend.resources.nodes: -1 is out of range"),
    R("app=ap1", "backend.resources.nodes=0", expected="backend.resources.nodes"),
    R("app=ap1", "backend.resources.gpus_per_node=-4", expected="backend.resources.gpus_per_node"),
    R(
        "app=ap1",
        "backend.resources.memory=lots",
        expected="backend.resources.memory: 'lots' is not a memory size",
    ),
    R("app=ap1", "backend.resources.memory=-4G", expected="backend.resources.memory"),
    R("app=ap1", "backend.resources.tasks_per_node=0", expected="backend.resources.tasks_per_node"),
    R("app=ap1", "backend.resources.cpus_per_task=0", expected="backend.resources.cpus_per_task"),
    R(
        "app=ap1",
        "backend.resources.time=forever",
        expected="backend.resources.time: 'forever' is not a time",
    ),
    R("app=ap1", "backend.resources.time=0", expected="backend.resources.time"),
    R("app=ap1", "backend.resources.nodez=1", expected="backend.resources.nodez: unknown key; did you mean"),
    R("app=ap1", "backend=nope", expected="backend=nope: no such option"),
    R("app=ap1", "backend.kind=cloud", expected="backend.kind: unknown value 'cloud'"),
    R("app=ap1", "~backend", expected="backend: missing config group"),
    R("app=ap1", "backend=slurm", "backend.max_array_size=0", expected="backend.max_array_size"),
    R("app=ap1", "backend.credentials.user=x", expected="add it with +backend.credentials.user"),
    # -- tracking ------------------------------------------------------------------------------
    R("app=ap1", "tracking.timeout_s=-1", expected="tracking.timeout_s: -1 is out of range; it must be > 0"),
    R("app=ap1", "tracking.timeout_s=0", expected="tracking.timeout_s"),
    R("app=ap1", "tracking.backend=wandb", expected="tracking.backend"),
    R("app=ap1", "tracking.plots=often", expected="tracking.plots"),
    R("app=ap1", "tracking=nope", expected="tracking=nope: no such option"),
    R("app=ap1", "tracking.credentials.token=x", expected="add it with +tracking.credentials.token"),
    R("app=ap1", "+tracking.credentials.tokn=${secret:env:X}", expected="tracking.credentials.tokn: unknown"),
    R("app=ap1", "+tracking.credentials.token=${secret:env:}", expected="tracking.credentials.token: secret"),
    # -- schedule ------------------------------------------------------------------------------
    R(
        "app=ap1",
        "schedule=daily",
        "schedule.end=2020-01-01",
        expected="schedule.end: 2020-01-01 is already past",
    ),
    R("app=ap1", "schedule=daily", "schedule.max_concurrent=0", expected="schedule.max_concurrent"),
    R("app=ap1", "schedule=daily", "schedule.catchup=some", expected="schedule.catchup"),
    R("app=ap1", "schedule=daily", "schedule.timezone=Mars/Base", expected="schedule.timezone"),
    R("app=ap1", "schedule=daily", "schedule.start=notadate", expected="schedule.start"),
    R("app=ap1", "schedule=nope", expected="schedule=nope: no such option"),
    # -- labels --------------------------------------------------------------------------------
    R("app=ap1", "labels.task=nonsense", expected="labels.task: 'nonsense' is not a known task"),
    R("app=ap1", "labels.run.hardware=gpu", expected="add it with +labels.run.hardware"),
    # -- overrides, Hydra, interpolations ------------------------------------------------------
    R("=value", expected="an override has nothing before '='"),
    R("app=ap1", "train.epochs=[1", expected="override 'train.epochs=[1'"),
    R("app=ap1", "dry_run=maybe", expected="dry_run", dry=False),
    R("app=ap1", "run_name=${oc.env:MAELSTROM_TEST_NOPE}", expected="run_name: Environment variable"),
    R(
        "app=ap1",
        "run_name=${secret:env:}",
        expected="run_name: secret reference ${secret:env:} is incomplete",
    ),
    R("app=ap1", "app.name=${nope.x}", expected="app.name: Interpolation key 'nope.x' not found"),
    R("app=ap1", "tags=[1]", expected="tags"),
    R("--config-dir", "/nope/conf", "app=ap1", expected="'/nope/conf' not found"),
    R(
        "app=ap1",
        "train.epochs=three",
        "--cfg",
        "job",
        expected="train.epochs: expected an integer",
        dry=False,
    ),
    R("app=ap1", "loader.threads=-2", "--cfg", "job", expected="loader.threads: -2", dry=False),
    R("-m", "app=ap1", "train.seed=range(1,5,0)", expected="train.seed=range(1,5,0): range() arg 3"),
    R("-m", "app=ap1", "train.epochs=1,-1", expected="train.epochs: -1 is out of range"),
    R("-m", "app=ap1", "schedule=daily", "train.seed=1,2", expected="schedule= and --multirun"),
    # -- nothing recorded for a run that never starts (no dry run: these would really submit) ---
    R(
        "app=ap1",
        "+tracking.credentials.token=${secret:env:MAELSTROM_TEST_NOPE}",
        dry=False,
        expected="MAELSTROM_TEST_NOPE is not set",
    ),  # fmt: skip
    # -- maelstrom: numeric options --------------------------------------------------------------
    M("runs", "list", "--limit", "-5", expected="--limit: -5 is out of range"),
    M("runs", "list", "--limit", "many", expected="--limit: 'many' is not an integer"),
    M("runs", "watch", RUN_A, "--interval", "-5", expected="--interval: -5 is out of range"),
    M("runs", "watch", RUN_A, "--interval", "0", expected="--interval"),
    M("data", "get", "ap1", "--jobs", "-2", expected="--jobs: -2 is out of range"),
    M("data", "get", "ap1", "--jobs", "0", expected="--jobs"),
    M("data", "get", "ap1", "--retries", "0", expected="--retries"),
    M("data", "get", "ap1", "--show", "-1", expected="--show"),
    M("schedules", "next", SCHED_A, "-n", "-3", expected="-n/--count: -3 is out of range"),
    M("schedules", "show", SCHED_A, "--limit", "-1", expected="--limit"),
    M("scheduler", "run", "--once", "--grace", "-1", expected="--grace: -1 is out of range"),
    M("scheduler", "run", "--interval", "0", expected="--interval"),
    M("search", "--limit", "0", expected="--limit"),
    M("recommend", "app=ap1", "--limit", "-1", expected="--limit"),
    M("runs", "frobnicate", expected="invalid choice: 'frobnicate'"),
    # -- maelstrom: ids ----------------------------------------------------------------------------
    M("runs", "info", "", expected="empty run id"),
    M("runs", "info", " ", expected="empty run id"),
    M("runs", "info", "nope", expected="run 'nope' is not in the registry"),
    M("runs", "info", "ap1-2026", expected=f"is ambiguous: it matches {RUN_A}, {RUN_B}"),
    M("runs", "status", "", expected="give a run id"),
    M("runs", "status", "--sweep", "", expected="empty sweep id"),
    M("runs", "status", "--sweep", "nope", expected="sweep 'nope' is not in the registry"),
    M("runs", "logs", "", expected="empty run id"),
    M("runs", "logs", "ap1-2026", expected="is ambiguous"),
    M("runs", "download", "", expected="empty run id"),
    M("runs", "download", RUN_A, "{afile}", expected="is a file; give a directory"),
    M("runs", "rerun", "", expected="give a run id"),
    M("runs", "rerun", "--sweep", "", "--failed", expected="empty sweep id"),
    M("runs", "list", "--sweep", "", expected="empty sweep id"),
    M("runs", "list", "--sweep", "sweep-nope", expected="sweep 'sweep-nope' is not in the registry"),
    M("runs", "watch", "", expected="empty"),
    M("runs", "resume", "", expected="empty sweep id"),
    M("runs", "cancel", expected="give a run id"),
    M("runs", "cancel", "", expected="give a run id"),
    M("runs", "cancel", "--sweep", "", expected="empty sweep id"),
    M("runs", "cancel", "--sweep", SWEEP, expected=f"cancel 2 unfinished job(s) of sweep {SWEEP}"),
    M("schedules", "remove", "", expected="empty schedule id"),
    M("schedules", "remove", "nope", expected="schedule 'nope' does not exist"),
    M("schedules", "remove", "sched-ap1", expected=f"is ambiguous: it matches {SCHED_A}, {SCHED_B}"),
    M("schedules", "remove", SCHED_A, expected=f"remove schedule {SCHED_A}"),
    M("schedules", "show", "", expected="empty schedule id"),
    M("schedules", "pause", "", expected="empty schedule id"),
    M("schedules", "resume", "sched-ap1", expected="is ambiguous"),
    M("schedules", "next", "", expected="empty schedule id"),
    # -- maelstrom: data ---------------------------------------------------------------------------
    M("data", "cache", "clear", "--dataset", "ap9", expected="dataset 'ap9' does not exist"),
    M("data", "cache", "clear", "--dataset", "ap3", expected="nothing of dataset ap3 is cached"),
    M("data", "cache", "clear", expected="--yes"),
    M("data", "cache", "clear", "--dataset", "ap1", expected="of ap1 from"),
    M("data", "get", "ap9", expected="ap9"),
    M("data", "get", "ap1", "--tier", "huge", expected="no tier 'huge'"),
    M("data", "get", "ap1", "--verify", expected="{damaged}: not a NetCDF file"),
    M("data", "preprocess", "app=ap4", "dataset.step=-1", expected="dataset.step"),
    # -- maelstrom: files and directories ----------------------------------------------------------
    M("import", "mantik", "{binary}", "--out", "{root}/imp", expected="MLproject: not a text file"),
    M("import", "mantik", "{project}", "--out", "{afile}", expected="{afile}"),
    M("import", "mantik", "/nope/MLproject", expected="/nope/MLproject"),
    M("export", "mlproject", "app=ap1", "--out", "{afile}", expected="{afile}"),
    M(
        "export",
        "mlproject",
        "app=ap1",
        "--config-dir",
        "/nope",
        "--out",
        "{root}/exp",
        expected="--config-dir /nope: no such directory",
    ),  # fmt: skip
    M("export", "mlproject", "app=nope", "--out", "{root}/exp", expected="app=nope"),
    M("export", "mlproject", "app=ap1", "train.epochs=-1", "--out", "{root}/exp", expected="train.epochs"),
    M(
        "labels",
        "list",
        expected="label taxonomy {taxonomy}/taxonomy.yaml: scopes: expected a mapping",
        MAELSTROM_CONFIG_PATH="{taxonomy}",
    ),
    M("runs", "list", expected="{afile}/home", MAELSTROM_HOME="{afile}/home"),
    R("app=ap1", "train.epochs=0", dry=False, expected="{afile}/home", MAELSTROM_HOME="{afile}/home"),
    M("data", "get", "ap2", expected="MAELSTROM_CACHE", MAELSTROM_CACHE="{afile}/cache"),
    R(
        "--config-dir",
        "{bad_yaml}",
        "app=broken",
        expected="{bad_yaml}/app/broken.yaml: not valid YAML (line 3, column 1)",
    ),
]


def _fill(text: str, world: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in world.items()}) if "{" in text and "${" not in text else text


def _call(case: Case, world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> int:
    args = [_fill(a, world) for a in case.args]
    if case.program == "maelstrom-run" and case.dry:
        args.append("dry_run=true")
    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, world))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: deletions need --yes
    if case.program == "maelstrom":
        from maelstrom_run.commands.main import main

        with pytest.raises(SystemExit) as exit_:
            main(args)
    else:
        from maelstrom_run.commands import run

        monkeypatch.setattr(sys, "argv", ["maelstrom-run", *args])
        with pytest.raises(SystemExit) as exit_:
            run.main()
    return exit_.value.code


def _id(case: Case) -> str:
    return f"{case.program}:{' '.join(case.args)[:60]}"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 100
    groups = ("app", "train", "dataset", "loader", "model", "backend", "tracking", "schedule", "labels")
    for group in groups:
        assert any(group in " ".join(c.args) for c in CASES if c.program == "maelstrom-run"), group


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input(
    case: Case, world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAELSTROM_HOME", str(world["home"]))
    for name in ("MAELSTROM_CACHE", "MAELSTROM_CONFIG_PATH", "MLFLOW_TRACKING_URI", "MAELSTROM_TEST_NOPE"):
        monkeypatch.delenv(name, raising=False)
    before = _state(world["home"])
    code = _call(case, world, monkeypatch)
    out = capsys.readouterr()
    text = out.err + out.out
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert len(lines) == 1 and lines[0].startswith(f"{case.program}"), text
    assert _fill(case.expected, world) in lines[0], text
    assert _state(world["home"]) == before


def test_a_bug_is_one_line_with_its_traceback_in_a_log(
    world: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Anything that is not a user error: one line saying it is a bug and where its traceback is, exit 1."""
    from maelstrom_run.commands import labels

    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path))

    def broken(args: Any) -> int:
        raise ZeroDivisionError("a planted bug")

    monkeypatch.setattr(labels, "cmd_list", broken)
    from maelstrom_run.commands.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["labels", "list"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    (line,) = err.splitlines()
    assert line.startswith(
        "maelstrom: internal error (a bug): ZeroDivisionError: a planted bug; traceback written to "
    )
    (log,) = (tmp_path / "logs").glob("maelstrom-*.log")
    assert str(log) in line
    assert "Traceback" in log.read_text() and "a planted bug" in log.read_text()


def test_a_bug_in_maelstrom_run_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from maelstrom_run.commands import run
    from maelstrom_run.launch import spec

    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path))

    def broken(*args: Any, **kw: Any) -> Any:
        raise KeyError("planted")

    monkeypatch.setattr(spec, "build", broken)
    monkeypatch.setattr(sys, "argv", ["maelstrom-run", "app=ap1", "dry_run=true"])
    with pytest.raises(SystemExit) as exit_:
        run.main()
    (line,) = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 1
    assert line.startswith(
        "maelstrom-run: internal error (a bug): KeyError: 'planted'; traceback written to "
    )
    (log,) = (tmp_path / "logs").glob("maelstrom-run-*.log")
    assert "broken" in log.read_text()


def test_an_exact_id_wins_over_longer_ids_it_is_a_prefix_of(maelstrom_home: Path) -> None:
    from maelstrom_run.launch.registry import Registry

    registry = Registry()
    registry.add_runs([_spec("ap1-1"), _spec("ap1-10"), _spec("ap1-11")])
    assert registry.get("ap1-1").run_id == "ap1-1"
    assert registry.get("ap1-10").run_id == "ap1-10"


def test_yes_removes_what_it_said(world: dict[str, Path], maelstrom_home: Path, capsys: Any) -> None:
    """With --yes the deletion happens (the refusals above are not a command that never deletes)."""
    from maelstrom_run.commands.main import main
    from maelstrom_run.schedule.store import ScheduleRecord, ScheduleStore

    store = ScheduleStore()
    store.add(
        ScheduleRecord(
            schedule_id=SCHED_A, app="ap1", preset="daily", cron="0 0 * * *", timezone="UTC", start=0.0,
            end=None, catchup="last", max_concurrent=1, pinned_commit=None, state="active",
            checked_until=0.0, skipped=0, code_dir=None, overrides="[]", spec="{}", created=0.0,
        )
    )  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(["schedules", "remove", SCHED_A[:12], "--yes"])
    assert exit_.value.code == 0
    assert store.list() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["maelstrom-run", "app=ap1", "train.batch_size=-1", "dry_run=true"], "train.batch_size: -1"),
        (["maelstrom-run", "app=ap1", "~app"], "app: missing config group"),
        (["maelstrom", "schedules", "remove", ""], "empty schedule id"),
        (["maelstrom", "runs", "list", "--limit", "-5"], "--limit"),
    ],
)
def test_end_to_end(
    run_cli: Any, cli_env: dict[str, str], tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run_cli(args, tmp_path, cli_env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert expected in line
