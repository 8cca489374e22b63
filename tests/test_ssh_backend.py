"""The Slurm backend over SSH (``backend.ssh``) against a real sshd on loopback in front of the local Slurm.

The "cluster" side has its own run directories (``ssh.workdir``) and its own ``MAELSTROM_HOME``;
the submitting side only has the mirror. The shared contract suite runs on it, and a host key that
is unknown or changed, a refused key and a dead host are each one line with nothing recorded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from backend_contract import BackendContract, wait_all
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)
from ssh_server import SSHServer, free_port, keygen, sshd_server  # noqa: F401  (fixture)

from maelstrom_run.backends import get_backend
from maelstrom_run.backends.slurm import SlurmSSH
from maelstrom_run.core.errors import BackendError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.launch.registry import Registry

pytestmark = pytest.mark.slow


def _conf(server: SSHServer, **ssh: Any) -> dict[str, Any]:
    return {
        "name": "cluster",
        "kind": "slurm",
        "max_parallel": 1,
        "retries": 1,
        "resources": {"time": "10m"},
        "ssh": server.conf(**ssh),
    }


class TestSSHBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, sshd_server: SSHServer, slurm: SlurmCluster) -> dict:  # noqa: F811
        return _conf(sshd_server)

    def test_the_run_lives_on_the_cluster_and_comes_back(
        self,
        backend: Any,
        make_spec: Any,
        sshd_server: SSHServer,  # noqa: F811
        slurm: SlurmCluster,  # noqa: F811
        tmp_path: Path,
    ) -> None:
        """Staged over SSH into ssh.workdir (not the local run directory), run there by Slurm, the
        result fetched into the local mirror; the spec there is the worker's relative form."""
        assert isinstance(backend.transport, SlurmSSH)
        specs: list[RunSpec] = [make_spec("ok", index=i) for i in range(2)]
        rendered = backend.render_many(specs)
        assert all(f.startswith(str(sshd_server.workdir)) for r in rendered for f in r.files)
        assert f"cd {sshd_server.workdir}/sweep-contract/code/tests" in rendered[0].text
        ids = backend.submit_many(specs)
        slurm.submitted.extend({i.split("_")[0] for i in ids})
        refs = [JobRef(s.run_id, j, s.run_dir) for s, j in zip(specs, ids, strict=True)]
        assert set(wait_all(backend, refs).values()) == {JobState.SUCCEEDED}
        for spec in specs:
            remote = sshd_server.workdir / spec.run_id
            there = yaml.safe_load((remote / "spec.yaml").read_text())
            assert there["run_dir"] == "." and there["code_dir"] == "../sweep-contract/code/tests"
            assert (remote / "result.json").exists() and (Path(spec.run_dir) / "result.json").exists()
            assert Path(spec.run_dir).resolve() != remote.resolve()
        # the map file names the run directories on the cluster
        map_file = sshd_server.workdir / "sweep-contract" / "arrays" / "000.txt"
        assert map_file.read_text().split() == [str(sshd_server.workdir / s.run_id) for s in specs]
        # the jobs' MLflow store is the cluster's own
        assert (sshd_server.remote_home / "mlflow.db").exists()
        # adopting finds the array by its name, through the same connection
        share = Path(specs[0].run_dir).parent / "sweep-contract"
        assert ids[0].split("_")[0] in backend.existing_arrays(share)[str(share / "arrays" / "000.txt")]
        # the cluster's files (maelstrom data copy)
        files = backend.files()
        entries = files.walk(str(sshd_server.workdir / specs[0].run_id))
        assert any(e.path.endswith("/result.json") and e.size > 0 for e in entries)
        local = tmp_path / "copy.json"
        files.download(str(sshd_server.workdir / specs[0].run_id / "result.json"), local)
        assert local.read_bytes() == (sshd_server.workdir / specs[0].run_id / "result.json").read_bytes()


def _run(run_cli: Any, env: dict[str, str], project: Path, server: SSHServer, **ssh: Any) -> Any:
    fields = {**server.conf(), **ssh}
    inline = ", ".join(f"{k}: '{v}'" if isinstance(v, str) else f"{k}: {v}" for k, v in fields.items())
    return run_cli(
        ["app=toy", "backend=slurm", "backend.retries=1", f"++backend.ssh={{{inline}}}"], project, env
    )


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
