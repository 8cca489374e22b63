"""The Slurm backend over SSH (``backend.ssh``) against a real sshd on loopback in front of the local Slurm.

The "cluster" side has its own run directories (``ssh.workdir``) and its own ``MAELSTROM_HOME``;
the submitting side only has the mirror. The shared contract suite runs on it, and a host key that
is unknown or changed, a refused key and a dead host are each one line with nothing recorded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from backend_contract import BackendContract
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)
from ssh_server import SSHServer, free_port, keygen, sshd_server  # noqa: F401  (fixture)

from maelstrom_run.backends import get_backend
from maelstrom_run.core.errors import BackendError
from maelstrom_run.launch.registry import Registry

pytestmark = pytest.mark.slow

VENV = str(Path(sys.executable).parent.parent)


def _conf(server: SSHServer, **ssh: Any) -> dict[str, Any]:
    return {
        "name": "cluster",
        "kind": "slurm",
        "max_parallel": 1,
        "retries": 1,
        "resources": {"time": "10m"},
        # the cluster's venv with maelstrom-run (this one: the "cluster" is this machine)
        "environment": {"venv": VENV},
        "ssh": server.conf(**ssh),
    }


class TestSSHBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, sshd_server: SSHServer, slurm: SlurmCluster) -> dict:  # noqa: F811
        return _conf(sshd_server)

    def test_render_names_the_paths_on_the_cluster(
        self,
        backend: Any,
        make_spec: Any,
        sshd_server: SSHServer,  # noqa: F811
    ) -> None:
        specs = [make_spec("ok", index=i) for i in range(2)]
        (rendered,) = backend.render_many(specs)
        assert rendered.files and all(f.startswith(f"{sshd_server.workdir}/") for f in rendered.files)
        assert f"cd {sshd_server.workdir}/sweep-contract/code/tests" in rendered.text
        assert f"MAP={sshd_server.workdir}/sweep-contract/arrays/000.txt" in rendered.text
        assert f"--output={sshd_server.workdir}/sweep-contract/slurm/%A_%a.out" in rendered.text
        assert not any(Path(s.run_dir).exists() for s in specs)


def _inline(fields: dict[str, Any]) -> str:
    """A mapping as a Hydra override value (``{host: '127.0.0.1', port: 2222}``)."""
    return (
        "{" + ", ".join(f"{k}: '{v}'" if isinstance(v, str) else f"{k}: {v}" for k, v in fields.items()) + "}"
    )


def _run(run_cli: Any, env: dict[str, str], project: Path, server: SSHServer, **ssh: Any) -> Any:
    inline = _inline({**server.conf(), **ssh})
    return run_cli(["app=toy", "backend=slurm", "backend.retries=1", f"++backend.ssh={inline}"], project, env)


@pytest.fixture
def other_key(tmp_path: Path) -> Path:
    keygen(tmp_path / "stranger")
    return tmp_path / "stranger"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown", "is not in"),
        ("changed", "has CHANGED since it was recorded"),
        ("refused", "refused the key of user"),
        ("dead", "cannot reach 127.0.0.1:"),
    ],
)
def test_bad_host_is_one_line_and_nothing_recorded(
    case: str,
    expected: str,
    run_cli: Any,
    cli_env: dict[str, str],
    toy_project: Path,
    sshd_server: SSHServer,  # noqa: F811
    other_key: Path,
    tmp_path: Path,
    maelstrom_home: Path,
) -> None:
    known = tmp_path / "known_hosts"
    ssh: dict[str, Any] = {}
    if case == "unknown":
        known.write_text("")
        ssh["known_hosts"] = str(known)
    elif case == "changed":
        stranger = other_key.with_name("stranger.pub").read_text().split()
        known.write_text(f"[127.0.0.1]:{sshd_server.port} {stranger[0]} {stranger[1]}\n")
        ssh["known_hosts"] = str(known)
    elif case == "refused":
        ssh["identity_file"] = str(other_key)
    else:
        ssh["port"] = free_port()
    before = sorted(p.name for p in sshd_server.workdir.glob("*")) if sshd_server.workdir.exists() else []
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    result = _run(run_cli, env, toy_project, sshd_server, **ssh)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert Registry().list(limit=None) == []  # nothing recorded
    assert not (maelstrom_home / "runs").exists() or not any((maelstrom_home / "runs").iterdir())
    after = sorted(p.name for p in sshd_server.workdir.glob("*")) if sshd_server.workdir.exists() else []
    assert after == before  # nothing sent


def test_a_key_given_as_a_secret_goes_to_a_private_agent(
    sshd_server: SSHServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SSH_KEY", sshd_server.identity.read_text())
    conf = _conf(sshd_server, identity_file=None, private_key="${secret:env:TEST_SSH_KEY}", persist_s=1)
    backend = get_backend(conf)
    backend.connect()
    assert backend.transport.ssh.run("echo $MAELSTROM_HOME").stdout.strip() == str(sshd_server.remote_home)
    backend.transport.ssh.close()
    monkeypatch.setenv("TEST_SSH_KEY", "not a key")
    with pytest.raises(BackendError, match="backend.ssh.private_key is not a usable private key"):
        get_backend({**conf, "ssh": {**conf["ssh"], "private_key": "${secret:env:TEST_SSH_KEY}"}}).connect()


def test_ssh_reaches_only_through_the_shared_connection(sshd_server: SSHServer) -> None:  # noqa: F811
    """After connecting, commands go through the master (``ssh -O check`` answers)."""
    backend = get_backend(_conf(sshd_server))
    backend.connect()
    ssh = backend.transport.ssh
    check = subprocess.run(["ssh", *ssh.options(), "-O", "check", ssh.host], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    ssh.close()


def test_a_sweep_from_the_command_line_over_ssh(
    run_cli: Any,
    cli_env: dict[str, str],
    toy_project: Path,
    sshd_server: SSHServer,  # noqa: F811
    slurm: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`maelstrom-run -m` to a cluster reached over SSH, then `maelstrom runs` watch, logs and
    download: each rebuilds the backend from the recorded config and goes through the connection."""
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    fields = _inline(sshd_server.conf())
    result = run_cli(
        [
            "-m",
            "app=toy",
            "backend=slurm",
            "backend.resources.cpus_per_task=1",
            "backend.max_parallel=1",  # two jobs creating one fresh MLflow database would race
            f"backend.environment.venv={VENV}",
            f"++backend.ssh={fields}",
            "model.learning_rate=0.01,0.1",
            "train.epochs=1",
        ],
        toy_project,
        env,
    )
    assert result.returncode == 0, result.stderr
    records = Registry().list(limit=None)
    assert len(records) == 2
    slurm.submitted.extend({r.job_id.split("_")[0] for r in records})
    sweep = records[0].sweep_id
    watched = run_cli(["maelstrom", "runs", "watch", sweep], toy_project, env, timeout=240)
    states = {r.run_id: r.state for r in Registry().list(limit=None)}
    assert sorted(states.values()) == ["failed", "succeeded"], watched.stdout + watched.stderr
    failed = next(r for r, s in states.items() if s == "failed")
    logs = run_cli(["maelstrom", "runs", "logs", failed, "--stderr"], toy_project, env)
    assert "RuntimeError: diverged" in logs.stdout + logs.stderr
    ok = next(r for r, s in states.items() if s == "succeeded")
    download = run_cli(["maelstrom", "runs", "download", ok, str(tmp_path / "dl")], toy_project, env)
    assert download.returncode == 0, download.stderr
    assert (tmp_path / "dl" / ok / "result.json").exists()
    assert not (tmp_path / "dl" / ok / "code").exists()
    # the runs live on the cluster (ssh.workdir), the local run directories are their mirror
    records = Registry().list(limit=None)
    for record in records:
        remote = sshd_server.workdir / record.run_id
        there = yaml.safe_load((remote / "spec.yaml").read_text())
        assert there["run_dir"] == "." and there["code_dir"] == f"../{sweep}/code"
        assert (remote / "result.json").exists() and (Path(record.run_dir) / "result.json").exists()
        assert Path(record.run_dir).resolve() != remote.resolve()
    # the map file names the run directories there; the jobs' MLflow store is the cluster side's
    map_file = sshd_server.workdir / sweep / "arrays" / "000.txt"
    assert sorted(map_file.read_text().split()) == sorted(
        str(sshd_server.workdir / r.run_id) for r in records
    )
    assert (sshd_server.remote_home / "mlflow.db").exists()
    # the cluster's files (maelstrom data copy) through the same connection
    files = get_backend(_conf(sshd_server)).files()
    entries = files.walk(str(sshd_server.workdir / ok))
    assert any(e.path.endswith("/result.json") and e.size > 0 for e in entries)
    files.download(str(sshd_server.workdir / ok / "result.json"), tmp_path / "copy.json", offset=0)
    assert (tmp_path / "copy.json").read_bytes() == (sshd_server.workdir / ok / "result.json").read_bytes()


HYDRA_APP = """\
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None)
def main(cfg: DictConfig) -> int:
    print("x is", cfg.x, flush=True)
    return 2 * int(cfg.x)


if __name__ == "__main__":
    main()
"""


def test_a_hydra_app_sweeps_over_ssh(
    sshd_server: SSHServer,  # noqa: F811
    slurm: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    cli_env: dict[str, str],
) -> None:
    """Any Hydra app through ``hydra/launcher=maelstrom`` to the cluster over SSH: its directory (no
    git repository) is staged, the pickled task runs there, the return values come back."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "my_app.py").write_text(HYDRA_APP)
    fields = _inline(sshd_server.conf())
    backend = (
        "{name: cluster, kind: slurm, max_parallel: 1, resources: {time: 10m}, "
        f"environment: {{venv: '{VENV}'}}, ssh: {fields}}}"
    )
    command = [sys.executable, "app/my_app.py", "-m", "hydra/launcher=maelstrom", "hydra.launcher.wait=true"]
    result = subprocess.run(
        [*command, f"++hydra.launcher.backend={backend}", "+x=1,2"],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 succeeded" in result.stdout + result.stderr
    records = Registry().list(limit=None)
    slurm.submitted.extend({r.job_id.split("_")[0] for r in records})
    assert len(records) == 2
    for record in records:
        remote = sshd_server.workdir / record.run_id
        assert (remote / "payload.pkl").exists() and (Path(record.run_dir) / "job_return.pkl").exists()
        assert "x is" in (remote / "stdout.log").read_text()
    shared = sshd_server.workdir / records[0].sweep_id / "code"
    assert (shared / "app" / "my_app.py").exists()
    assert not (shared / "maelstrom-home").exists()  # maelstrom-run's own state is never staged
