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
    match = re.search(r"(toy-\d{8}-\d{6}-[0-9a-f]{6})", output)
    assert match, output
    return match.group(1)


def _sweep_id(output: str) -> str:
    match = re.search(r"(sweep-toy-\d{8}-\d{6}-[0-9a-f]{6})", output)
    assert match, output
    return match.group(1)


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
def test_freeze_round_trips_on_a_fresh_clone(run_cli, cli_env, toy_project, tmp_path, maelstrom_home):
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
    out = run_cli([*maelstrom, run_id, "--config-dir", "conf", "--name", "toy_run"], cwd=toy_project, env=env)
    assert out.returncode == 0, out.stderr
    assert "maelstrom-run +experiment=toy_run --config-dir conf" in out.stdout
    frozen = (toy_project / "conf" / "experiment" / "toy_run.yaml").read_text()
    assert run.config_hash in frozen and git(toy_project, "rev-parse", "HEAD").strip() in frozen
    assert "${secret:env:MY_TOKEN}" in frozen and "s3cr3t-value" not in frozen
    body = yaml.safe_load(frozen)
    assert {"override /app": "toy"} in body["defaults"]
    assert body["model"] == {"learning_rate": 0.002} and body["tags"] == {"who": "me"}
    out = run_cli([*maelstrom, "--sweep", sweep_id, "--name", "toy_sweep"], cwd=toy_project, env=sweep_env)
    assert out.returncode == 0, out.stderr
    out = run_cli([*maelstrom, jobs[1].run_id, "--name", "toy_job"], cwd=toy_project, env=sweep_env)
    assert out.returncode == 0, out.stderr
    again = run_cli(
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

    # and maelstrom-run, run in the clone, records the same hashes (the sweep: every job's)
    result = run_cli(["+experiment=toy_run", "--config-dir", "conf"], cwd=clone, env=env, check=True)
    assert registry.get(_run_id(result.stderr)).config_hash == run.config_hash
    clone_env = {**env, "MAELSTROM_CONFIG_PATH": str(clone / "conf")}
    result = run_cli(["-m", "+experiment=toy_sweep"], cwd=clone, env=clone_env)
    assert result.returncode == 0, result.stderr
    rerun = registry.list(sweep_id=_sweep_id(result.stdout + result.stderr), limit=None)
    assert sorted(r.config_hash for r in rerun) == sorted(j.config_hash for j in jobs)

    # bad input: one line, exit 2, nothing recorded lost
    before = len(registry.list(limit=None))
    for args, what in (
        ([*maelstrom, "toy-nope"], "not in the registry"),
        ([*maelstrom, "--sweep", "sweep-nope"], "not in the registry"),
        ([*maelstrom, run_id, "--name", "a b"], "--name"),
    ):
        bad = run_cli(args, cwd=toy_project, env=env)
        assert bad.returncode == 2 and what in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, (
            bad.stderr
        )
    # an experiment file that no longer composes (a key removed since): one line, exit 2
    broken = clone / "conf" / "experiment" / "toy_run.yaml"
    broken.write_text(broken.read_text().replace("learning_rate:", "learning_ratez:"))
    bad = run_cli(["+experiment=toy_run", "--config-dir", "conf"], cwd=clone, env=env)
    assert (
        bad.returncode == 2 and "learning_ratez" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    )
    assert len(registry.list(limit=None)) == before

    # a run whose commit exists only in a clone that is gone: freezing it elsewhere is refused
    (clone / "toyapp.py").write_text((clone / "toyapp.py").read_text() + "\n# clone only\n")
    git(clone, "commit", "-q", "-am", "clone only")
    result = run_cli(["+experiment=toy_job"], cwd=clone, env=clone_env, check=True)
    lost = _run_id(result.stderr)
    shutil.rmtree(clone)
    bad = run_cli([*maelstrom, lost, "--name", "lost"], cwd=toy_project, env=sweep_env)
    assert bad.returncode == 2 and "is not in the repository" in bad.stderr, bad.stderr
    assert not (toy_project / "conf" / "experiment" / "lost.yaml").exists()
