"""Experiments: the shipped ``conf/experiment/`` files, ``runs freeze`` round trips (same config hash
on a fresh clone, through Hydra's own composition), ``runs env`` and the drift report, ``runs
export``/``import``, and seeded determinism of an app's tiny tier."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import git


def _registry(home: Path):
    from maelstrom_run.launch.registry import Registry

    return Registry(home / "registry.db")


def _run_id(output: str) -> str:
    """The new run's id: the one its summary's ``next:`` line names (the output may name others)."""
    match = re.search(r"next: maelstrom runs info (toy-\d{8}-\d{6}-[0-9a-f]{6})", output)
    assert match, output
    return match.group(1)


def _sweep_id(output: str) -> str:
    match = re.search(r"(sweep-toy-\d{8}-\d{6}-[0-9a-f]{6})", output)
    assert match, output
    return match.group(1)


@pytest.fixture
def maelstrom_here(monkeypatch, capsys):
    """``run_cli`` for ``maelstrom ...`` in this process (the same ``main``, no interpreter start-up):
    ``MAELSTROM_HOME`` and ``MAELSTROM_CONFIG_PATH`` from ``env``, in ``cwd``."""
    import subprocess

    from maelstrom_run.commands.main import main

    def call(args, cwd=None, env=None, check=False):
        with monkeypatch.context() as patch:
            if cwd is not None:
                patch.chdir(cwd)
            for key in ("MAELSTROM_HOME", "MAELSTROM_CONFIG_PATH"):
                if key in (env or {}):
                    patch.setenv(key, env[key])
                elif key == "MAELSTROM_CONFIG_PATH":
                    patch.delenv(key, raising=False)
            patch.setenv("COLUMNS", "200")
            patch.setenv("NO_COLOR", "1")
            capsys.readouterr()
            try:
                main([str(a) for a in args[1:]])
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
            out = capsys.readouterr()
        if check and code:
            raise AssertionError(f"{args} exited with {code}\n{out.out}\n{out.err}")
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


def _hydra_compose(overrides: list[str], config_dir: Path | None = None) -> tuple[dict, dict]:
    """Hydra's own composition (not maelstrom-run's): the resolved job config and the hydra node."""
    import os

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from maelstrom_run.config.resolvers import register

    register()
    GlobalHydra.instance().clear()
    if config_dir is not None:
        os.environ["MAELSTROM_CONFIG_PATH"] = str(config_dir)
    try:
        with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    finally:
        os.environ.pop("MAELSTROM_CONFIG_PATH", None)
        GlobalHydra.instance().clear()
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True), hydra


def test_shipped_experiments_compose(maelstrom_home):
    config, hydra = _hydra_compose(["+experiment=ap1_benchmark"])
    assert hydra["runtime"]["choices"]["experiment"] == "ap1_benchmark"
    assert hydra["runtime"]["choices"]["train"] == "small"
    assert (config["train"]["batch_size"], config["loader"]["patch_size"], config["model"]["levels"]) == (
        36,
        32,
        3,
    )
    # the command line still wins over the experiment
    config, _ = _hydra_compose(["+experiment=ap1_benchmark", "train.epochs=1"])
    assert config["train"]["epochs"] == 1
    _, hydra = _hydra_compose(["+experiment=ap1_lr_sweep"])
    assert hydra["sweeper"]["params"] == {"model.learning_rate": "0.01,0.003,0.001"}
    from maelstrom_run.config import validate

    validate(_hydra_compose(["+experiment=ap1_benchmark"])[0])


def test_sweep_grid_is_recovered_from_the_jobs_overrides():
    from maelstrom_run.core.errors import ConfigError
    from maelstrom_run.launch.freeze import sweep_grid

    jobs = [["app=toy", f"a={a}", f"b={b}"] for a in (1, 2) for b in ("x", "y", "z")]
    assert sweep_grid(jobs) == (["app=toy"], {"a": ["1", "2"], "b": ["x", "y", "z"]})
    with pytest.raises(ConfigError, match="not the grid"):
        sweep_grid(jobs[:-1])


@pytest.mark.slow
def test_freeze_round_trips_on_a_fresh_clone(
    run_cli, maelstrom_here, cli_env, toy_project, tmp_path, maelstrom_home
):
    """A run with overrides and a secret (user config dir by --config-dir), a sweep (user config dir
    by MAELSTROM_CONFIG_PATH) and one of its jobs: frozen, committed, cloned, run again: same hashes."""
    env = {**cli_env, "MY_TOKEN": "s3cr3t-value"}
    result = run_cli(
        [
            "--config-dir",
            "conf",
            "app=toy",
            "train.epochs=2",
            "model.learning_rate=0.002",
            "+tags.who=me",
            "+backend.credentials.token=${secret:env:MY_TOKEN}",
        ],
        cwd=toy_project,
        env=env,
        check=True,
    )
    run_id = _run_id(result.stderr)
    sweep_env = {**env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    result = run_cli(
        ["-m", "app=toy", "model.learning_rate=0.01,0.001", "train.epochs=1"], cwd=toy_project, env=sweep_env
    )
    assert result.returncode == 0, result.stderr
    sweep_id = _sweep_id(result.stdout + result.stderr)
    registry = _registry(maelstrom_home)
    run = registry.get(run_id)
    jobs = registry.list(sweep_id=sweep_id, limit=None)
    assert len(jobs) == 2

    maelstrom = ["maelstrom", "runs", "freeze"]
    out = maelstrom_here(
        [*maelstrom, run_id, "--config-dir", "conf", "--name", "toy_run"], cwd=toy_project, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "maelstrom-run +experiment=toy_run --config-dir conf" in out.stdout
    frozen = (toy_project / "conf" / "experiment" / "toy_run.yaml").read_text()
    assert run.config_hash in frozen and git(toy_project, "rev-parse", "HEAD").strip() in frozen
    assert "${secret:env:MY_TOKEN}" in frozen and "s3cr3t-value" not in frozen
    body = yaml.safe_load(frozen)
    assert {"override /app": "toy"} in body["defaults"]
    assert body["model"] == {"learning_rate": 0.002} and body["tags"] == {"who": "me"}
    out = maelstrom_here(
        [*maelstrom, "--sweep", sweep_id, "--name", "toy_sweep"], cwd=toy_project, env=sweep_env
    )
    assert out.returncode == 0, out.stderr
    out = maelstrom_here([*maelstrom, jobs[1].run_id, "--name", "toy_job"], cwd=toy_project, env=sweep_env)
    assert out.returncode == 0, out.stderr
    again = maelstrom_here(
        [*maelstrom, run_id, "--config-dir", "conf", "--name", "toy_run"], cwd=toy_project, env=env
    )
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1

    git(toy_project, "add", "conf/experiment")
    git(toy_project, "commit", "-q", "-m", "frozen experiments")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(toy_project), str(clone))

    # Hydra's own composition of the committed files in the clone gives the recorded hashes
    from maelstrom_run.core.spec import config_hash

    assert config_hash(_hydra_compose(["+experiment=toy_run"], clone / "conf")[0]) == run.config_hash
    assert config_hash(_hydra_compose(["+experiment=toy_job"], clone / "conf")[0]) == jobs[1].config_hash
    _, hydra = _hydra_compose(["+experiment=toy_sweep"], clone / "conf")
    assert hydra["sweeper"]["params"] == {"model.learning_rate": "0.01,0.001"}

    # the clone's environment "differs" from the record: its header says numpy 1.0.0
    frozen_file = clone / "conf" / "experiment" / "toy_run.yaml"
    recorded = yaml.safe_load(run.spec)["packages"]
    frozen_file.write_text(
        frozen_file.read_text().replace(f'"numpy": "{recorded["numpy"]}"', '"numpy": "1.0.0"')
    )
    before = len(registry.list(limit=None))
    strict = run_cli(["+experiment=toy_run", "--config-dir", "conf", "--strict-env"], cwd=clone, env=env)
    assert strict.returncode == 2 and f"numpy 1.0.0 -> {recorded['numpy']}" in strict.stderr, strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1 and len(registry.list(limit=None)) == before
    sweep_file = clone / "conf" / "experiment" / "toy_sweep.yaml"
    sweep_file.write_text(
        sweep_file.read_text().replace(f'"numpy": "{recorded["numpy"]}"', '"numpy": "1.0.0"')
    )
    clone_env = {**env, "MAELSTROM_CONFIG_PATH": str(clone / "conf")}
    strict = run_cli(["-m", "+experiment=toy_sweep", "--strict-env"], cwd=clone, env=clone_env)
    assert strict.returncode == 2 and f"sweep {sweep_id} (experiment toy_sweep): numpy 1.0.0" in strict.stderr
    assert len(registry.list(limit=None)) == before
    # a commit only the clone has: the run made from it cannot be frozen or imported elsewhere later
    (clone / "notes.txt").write_text("clone only\n")
    git(clone, "add", "notes.txt")
    git(clone, "commit", "-q", "-m", "clone only")
    # maelstrom-run, run in the clone, records the same hashes (the sweep: every job's)
    result = run_cli(["+experiment=toy_run", "--config-dir", "conf"], cwd=clone, env=env, check=True)
    assert (
        f"environment: 1 package(s) differ from run {run_id} (experiment toy_run): numpy 1.0.0"
        in result.stderr
    )
    again_id = _run_id(result.stderr)
    assert registry.get(again_id).config_hash == run.config_hash
    info = maelstrom_here(["maelstrom", "runs", "info", again_id], env=env, check=True).stdout
    assert re.search(
        rf"environment differs from run {run_id} .*numpy 1.0.0 -> {re.escape(recorded['numpy'])}",
        " ".join(info.split()),
    ), info
    # the sweep: each job of the grid Hydra's sweeper makes of the file's params composes to a job's hash
    # (`maelstrom-run -m +experiment=toy_sweep` itself would run them: seconds each on a loaded machine)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in hydra["sweeper"]["params"].items()]
    (grid,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    hashes = [config_hash(_hydra_compose(["+experiment=toy_sweep", *o], clone / "conf")[0]) for o in grid]
    assert sorted(hashes) == sorted(j.config_hash for j in jobs)

    # runs env: pip's requirements format (read by packaging, pip's parser), Python as a comment
    from packaging.requirements import Requirement

    text = maelstrom_here(["maelstrom", "runs", "env", run_id], env=env, check=True).stdout
    assert f"# python=={recorded['python']}" in text.splitlines()
    parsed = {str(Requirement(line)) for line in text.splitlines() if line and not line.startswith("#")}
    assert parsed == {f"{k}=={v}" for k, v in recorded.items() if k != "python"}

    # export, import into another MAELSTROM_HOME: info and rerun work there
    archive = tmp_path / "run.tar.gz"
    maelstrom_here(["maelstrom", "runs", "export", run_id, archive], env=env, check=True)
    lost_archive = tmp_path / "lost.tar.gz"
    maelstrom_here(["maelstrom", "runs", "export", again_id, lost_archive], env=env, check=True)
    other = tmp_path / "other-home"
    # the same MLflow store as before: a fresh one would spend seconds creating its tables
    mlflow_db = f"sqlite:///{maelstrom_home / 'mlflow.db'}"
    other_env = {**env, "MAELSTROM_HOME": str(other), "MLFLOW_TRACKING_URI": mlflow_db}
    result = maelstrom_here(["maelstrom", "runs", "import", archive], cwd=tmp_path, env=other_env, check=True)
    assert f"imported run {run_id} (succeeded)" in result.stdout
    info = maelstrom_here(["maelstrom", "runs", "info", run_id], env=other_env, check=True).stdout
    assert run.config_hash in info and "loss=" in info and str(other / "runs" / run_id) in info
    result = run_cli(["maelstrom", "runs", "rerun", run_id], cwd=tmp_path, env=other_env, check=True)
    assert f"environment: the same package versions as run {run_id}" in result.stderr
    (copy,) = [r for r in _registry(other).list(limit=None) if r.rerun_of == run_id]
    assert copy.state == "succeeded" and copy.config_hash == run.config_hash
    again = maelstrom_here(["maelstrom", "runs", "import", archive], cwd=tmp_path, env=other_env)
    assert again.returncode == 2 and "already in the registry" in again.stderr
    assert len(_registry(other).list(limit=None)) == 2

    # bad input: one line, exit 2, nothing recorded lost
    before = len(registry.list(limit=None))
    for args, what in (
        ([*maelstrom, "toy-nope"], "not in the registry"),
        ([*maelstrom, "--sweep", "sweep-nope"], "not in the registry"),
        ([*maelstrom, run_id, "--name", "a b"], "--name"),
        (["maelstrom", "runs", "export", "toy-nope", tmp_path / "x.tar.gz"], "not in the registry"),
    ):
        bad = maelstrom_here(args, cwd=toy_project, env=env)
        assert bad.returncode == 2 and what in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, (
            bad.stderr
        )
    # an experiment file that no longer composes (a key removed since): one line, exit 2
    frozen_file.write_text(frozen_file.read_text().replace("learning_rate:", "learning_ratez:"))
    bad = run_cli(["+experiment=toy_run", "--config-dir", "conf"], cwd=clone, env=env)
    assert (
        bad.returncode == 2 and "learning_ratez" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    )
    assert len(registry.list(limit=None)) == before

    # the clone is gone: its commit is in no repository here
    shutil.rmtree(clone)
    bad = maelstrom_here([*maelstrom, again_id, "--name", "lost"], cwd=toy_project, env=env)
    assert bad.returncode == 2 and "is not in the repository" in bad.stderr, bad.stderr
    assert not (toy_project / "conf" / "experiment" / "lost.yaml").exists()
    bad = maelstrom_here(["maelstrom", "runs", "import", lost_archive], cwd=toy_project, env=other_env)
    assert bad.returncode == 2 and "is not in the repository" in bad.stderr, bad.stderr
    assert len(_registry(other).list(limit=None)) == 2


def _archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "links", "what"),
    [
        ({"maelstrom-run-export/../../evil.txt": b"x"}, None, "unexpected member"),
        ({"/etc/evil": b"x"}, None, "not a maelstrom-run export"),
        (
            {"maelstrom-run-export/manifest.json": b"{}"},
            {"maelstrom-run-export/spec.json": "/etc/passwd"},
            "unexpected",
        ),
        (
            {
                "maelstrom-run-export/manifest.json": b'{"format": "other"}',
                "maelstrom-run-export/spec.json": b"{}",
            },
            None,
            "format",
        ),
        (
            {"maelstrom-run-export/manifest.json": b"{not json", "maelstrom-run-export/spec.json": b"{}"},
            None,
            "damaged",
        ),
        ({"maelstrom-run-export/result.json": b"{}"}, None, "no manifest.json"),
    ],
)
def test_import_refuses_foreign_and_unsafe_archives(tmp_path, maelstrom_home, members, links, what):
    from maelstrom_run.core.errors import ConfigError
    from maelstrom_run.launch.portable import import_run

    path = _archive(tmp_path / "a.tar.gz", members, links)
    with pytest.raises(ConfigError, match=what):
        import_run(_registry(maelstrom_home), path, cwd=tmp_path)
    assert not (tmp_path.parent / "evil.txt").exists() and not list((maelstrom_home).glob("runs/*"))
    assert _registry(maelstrom_home).list(limit=None) == []


def test_drift_lines():
    from maelstrom_run.launch import envdrift

    assert envdrift.differences(
        {"python": "3.11.7", "numpy": "1.0", "torch": "2.0"},
        {"python": "3.11.7", "numpy": "2.0", "mlflow": "3"},
    ) == [
        ("mlflow", None, "3"),
        ("numpy", "1.0", "2.0"),
        ("torch", "2.0", None),
    ]
    text = envdrift.requirements({"python": "3.11.7", "numpy": "2.0"})
    assert text.splitlines()[1:] == ["# python==3.11.7", "numpy==2.0"]


#: Same seed, same machine, same thread count: the metrics agree to this relative tolerance (on
#: CPU they are bitwise equal; threads summing in another order may move the last digits).
DETERMINISM_RTOL = 1e-6


@pytest.mark.slow
def test_a_fixed_seed_gives_the_same_metrics(tmp_path, maelstrom_home):
    """AP4's tiny tier (the cheapest app; PyTorch, NumPy and Python's random, shuffled batches)."""
    from app_runner import run_main

    overrides = ("app=ap4", "train.epochs=1", "tracking.plots=false")
    first, _, _ = run_main(tmp_path, *overrides)
    second, _, _ = run_main(tmp_path, *overrides)
    assert first.keys() == second.keys() and len(first) >= 3
    assert second == pytest.approx(first, rel=DETERMINISM_RTOL)
    other, _, _ = run_main(tmp_path, *overrides, "train.seed=7")
    assert other["loss"] != pytest.approx(first["loss"], rel=DETERMINISM_RTOL)  # the seed is what matters
