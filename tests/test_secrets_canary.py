"""A secret never leaks: a unique value, referenced from the config, goes through a whole local
and Slurm sweep; afterwards nothing under ``MAELSTROM_HOME`` (run directories, job scripts, staged
code, logs, the registry, the MLflow store and artefacts) and no CLI output contains it."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import TOY_CONF
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

from maelstrom_run.launch.registry import Registry

pytestmark = pytest.mark.slow

SECRET_APP = '''\
"""Checks that the job received its secrets, without ever printing them."""

import os

from maelstrom_run.config.secrets import resolve


def main(ctx):
    token = os.environ.get("API_TOKEN")
    via_reference = resolve(str(ctx.cfg.tags.token_ref))
    ok = bool(token) and token == via_reference
    print(f"secret received: {ok}", flush=True)
    if not ok:
        raise RuntimeError("the job did not receive its secret")
    ctx.end_epoch(0, {"loss": 0.5})
    return {"loss": 0.5}
'''

SECRET_CONF = TOY_CONF.replace(
    "name: toy\n  entry: toyapp:main", "name: secretive\n  entry: secretapp:main"
) + ("tags:\n  token_ref: ${secret:env:MR_CANARY}\n")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [
        str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_a_secret_never_reaches_disk_logs_or_mlflow(
    backend: str,
    request: pytest.FixtureRequest,
    run_cli,
    cli_env: dict[str, str],
    toy_project: Path,
    git,
    maelstrom_home: Path,
) -> None:
    if backend == "slurm":
        cluster: SlurmCluster = request.getfixturevalue("slurm")
    canary = f"canary-{secrets.token_hex(16)}"
    (toy_project / "secretapp.py").write_text(SECRET_APP)
    (toy_project / "conf" / "app" / "secretive.yaml").write_text(SECRET_CONF)
    git(toy_project, "add", "-A")
    git(toy_project, "commit", "-qm", "secret app")
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf"), "MR_CANARY": canary}
    result = run_cli(
        [
            "-m",
            "app=secretive",
            f"backend={backend}",
            "hydra.launcher.wait=true",
            "+backend.environment.variables.API_TOKEN=${secret:env:MR_CANARY}",
            "+tracking.credentials.token=${secret:env:MR_CANARY}",
            "model.learning_rate=0.01,0.02",
        ],
        toy_project,
        env,
        check=True,
        timeout=240,
    )
    records = Registry().list(limit=None)
    if backend == "slurm":
        cluster.submitted.extend({r.job_id.split("_")[0] for r in records})
    assert {r.state for r in records} == {"succeeded"}, [r.message for r in records]
    outputs = [result.stdout, result.stderr]
    for record in records:
        info = run_cli(["maelstrom", "runs", "info", record.run_id], toy_project, env, check=True)
        logs = run_cli(["maelstrom", "runs", "logs", record.run_id], toy_project, env, check=True)
        assert "secret received: True" in logs.stdout
        outputs += [info.stdout, info.stderr, logs.stdout, logs.stderr]
    # the references themselves are recorded: that is how the run is re-run
    assert "${secret:env:MR_CANARY}" in (Path(records[0].run_dir) / "spec.yaml").read_text()
    assert not [o for o in outputs if canary in o]
    assert _files_containing(maelstrom_home, canary.encode()) == []
