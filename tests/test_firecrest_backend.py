"""The FirecREST backend against the FirecREST v2 test server (``tests/firecrest_server.py``), driven only
through pyfirecrest, with the jobs running on the real local Slurm.

The shared contract suite, the request and dry run (also with the shipped ``daint`` config), a
job's secret in the request's environment, refused and forbidden credentials, an unreachable
gateway, an HTTP 500 in the middle of a sweep and ``maelstrom runs resume``, adopting jobs, a job
the gateway forgets, cancel and logs, and files (walk, download with resume, upload, staged
transfers of large files).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_contract import BackendContract, wait_all, wait_state
from firecrest_server import PREFIX, SYSTEM, FirecrestServer
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

from maelstrom_run.backends import get_backend
from maelstrom_run.backends.files import LocalFiles
from maelstrom_run.backends.firecrest import parse_job_ref
from maelstrom_run.backends.remote import GatewayError
from maelstrom_run.config.resolvers import register
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.data.copy import Side, copy
from maelstrom_run.launch.registry import Registry
from maelstrom_run.launch.submit import submit

pytestmark = pytest.mark.slow

CLIENT, SECRET = "maelstrom-ci", "s3cret-7f2a"
EXCLUDE = [".git/**", ".venv/**", "**/__pycache__/**", "mlruns/**", "outputs/**", "multirun/**"]


@pytest.fixture(scope="module")
def firecrest(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirecrestServer]:  # noqa: F811
    server = FirecrestServer(
        tmp_path_factory.mktemp("firecrest-system"),
        clients={CLIENT: SECRET, "guest": "guest"},
        forbidden={"guest"},
    ).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _gateway(firecrest: FirecrestServer, maelstrom_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRECREST_TEST_CLIENT_ID", CLIENT)
    monkeypatch.setenv("FIRECREST_TEST_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("MAELSTROM_TEST_FIRECREST_URL", firecrest.base)
    monkeypatch.setenv("MAELSTROM_TEST_FIRECREST_TOKEN_URL", firecrest.token_url)
    monkeypatch.setenv("MAELSTROM_TEST_FIRECREST_WORKDIR", str(firecrest.root / "scratch" / "maelstrom"))
    # as the launcher plugin does when a process imports it (the Hydra fixtures reset resolvers per test)
    register()


def firecrest_conf(server: FirecrestServer) -> dict:
    """One job at a time on the two-CPU test node (``cpus_per_task`` 2), so that "queued" means queued."""
    return {
        "name": "firecrest",
        "kind": "firecrest",
        "max_parallel": 1,
        "retries": 2,
        "retry_delay": 0.1,
        "url": server.base,
        "token_url": server.token_url,
        "machine": SYSTEM,
        "workdir": str(server.root / "scratch" / "maelstrom"),
        "credentials": {
            "client_id": "${secret:env:FIRECREST_TEST_CLIENT_ID}",
            "client_secret": "${secret:env:FIRECREST_TEST_CLIENT_SECRET}",
        },
        "resources": {"time": "10m", "cpus_per_task": 2},
        "environment": {"venv": sys.prefix},
        "exclude": EXCLUDE,
    }


class TestFirecrestBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, firecrest: FirecrestServer) -> dict:
        return firecrest_conf(firecrest)


def _ref(spec: RunSpec, job_id: str) -> JobRef:
    return JobRef(spec.run_id, job_id, spec.run_dir)


class TestOnTheSystem:
    """Jobs and files of the test system, with the contract suite's specs."""

    make_spec = BackendContract.make_spec

    @pytest.fixture
    def backend_conf(self, firecrest: FirecrestServer) -> dict:
        return firecrest_conf(firecrest)

    # -- the request ------------------------------------------------------------------------------

    def test_the_request_is_rendered_without_talking_to_the_gateway(
        self,
        make_spec: Callable[..., RunSpec],
        backend_conf: dict,
        firecrest: FirecrestServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        conf = {
            **backend_conf,
            "resources": {
                "queue": "normal",
                "nodes": 1,
                "time": "1h",
                "account": "s1234",
                "constraint": "gpu",
            },
            "environment": {
                "modules": ["cray-python"],
                "venv": "/users/me/venv",
                "variables": {"OMP_NUM_THREADS": "12", "TOKEN": "${secret:env:FC_TEST_JOB_TOKEN}"},
            },
        }
        monkeypatch.setenv("FC_TEST_JOB_TOKEN", "s3cr3t-value")
        spec = make_spec("ok", index=2)
        spec.config["backend"] = conf
        seen = len(firecrest.requests)
        rendered = get_backend(conf).render(spec)
        job_dir = f"{conf['workdir']}/{spec.run_id}"
        lines = rendered.text.splitlines()
        assert f"#   POST {firecrest.base}/compute/{SYSTEM}/jobs" in lines
        assert f"#   job.working_directory: {job_dir}" in lines
        assert "TOKEN=${secret:env:FC_TEST_JOB_TOKEN}" in rendered.text
        assert "s3cr3t-value" not in rendered.text
        script = lines[lines.index("#!/bin/bash") :]
        for line in (
            f"#SBATCH --job-name={spec.run_id}",
            "#SBATCH --partition=normal",
            "#SBATCH --account=s1234",
            "#SBATCH --constraint=gpu",
            "#SBATCH --time=01:00:00",
            f"#SBATCH --output={job_dir}/slurm-%j.out",
            f"RUN_DIR={job_dir}",
            f"cd {job_dir}/code/tests || exit 2",
            "module load cray-python",
            'source "/users/me/venv"/bin/activate',
            "export OMP_NUM_THREADS=12",
            "# TOKEN: a secret, passed in the job's environment at submission",
        ):
            assert line in script, line
        assert rendered.files[0] == f"{job_dir}/spec.yaml"
        assert f"{job_dir}/code/tests/contract_app.py" in rendered.files
        assert not any("/.venv/" in f or "/__pycache__/" in f for f in rendered.files)
        assert len(firecrest.requests) == seen, "rendering does not talk to the gateway"

    def test_a_job_gets_its_secret_and_downloads_without_code(
        self,
        make_spec: Callable[..., RunSpec],
        backend_conf: dict,
        firecrest: FirecrestServer,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        env = {
            **backend_conf["environment"],
            "variables": {"JOB_TOKEN": "${secret:env:FC_TOK}"},
            "pre_commands": ['echo "token length ${#JOB_TOKEN}"'],
        }
        conf = {**backend_conf, "environment": env}
        monkeypatch.setenv("FC_TOK", "value-only-the-job-sees")
        spec = make_spec("ok")
        spec.config["backend"] = conf
        backend = get_backend(conf)
        job_id = backend.submit(spec)
        slurm_id, job_dir = parse_job_ref(job_id)
        assert job_dir == f"{conf['workdir']}/{spec.run_id}"
        assert firecrest.jobs[slurm_id].env["JOB_TOKEN"] == "value-only-the-job-sees"
        assert "value-only-the-job-sees" not in backend.render(spec).text
        ref = _ref(spec, job_id)
        assert wait_all(backend, [ref]) == {spec.run_id: JobState.SUCCEEDED}
        assert "token length 23" in backend.logs(ref)
        # the worker's result reached the local run directory; the job directory comes back whole
        assert backend.status([ref])[spec.run_id].result.state == "succeeded"
        assert (Path(spec.run_dir) / "result.json").exists()
        target = backend.download(ref, tmp_path / "download")
        names = {p.name for p in target.iterdir()}
        assert {"spec.yaml", "result.json", "stdout.log", "stderr.log"} <= names
        assert not (target / "code").exists() and not (target / ".maelstrom-inputs.tar.gz").exists()

    # -- refused credentials, an unreachable gateway ----------------------------------------------

    def test_forbidden_and_unknown_clients_and_systems(
        self,
        make_spec: Callable[..., RunSpec],
        backend_conf: dict,
        firecrest: FirecrestServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        home = str(firecrest.home)
        assert isinstance(get_backend(backend_conf).files().walk(home), list)
        with pytest.raises(ConfigError, match="backend.resources.account: 'nope' .*accounts: .*maelstrom"):
            get_backend({**backend_conf, "resources": {"account": "nope"}}).connect()
        monkeypatch.setenv("FIRECREST_TEST_CLIENT_ID", "guest")
        monkeypatch.setenv("FIRECREST_TEST_CLIENT_SECRET", "guest")
        with pytest.raises(GatewayError, match="HTTP 403"):
            get_backend(backend_conf).files().walk(home)
        spec, registry, before = make_spec("ok"), Registry(), firecrest.submissions
        with pytest.raises(GatewayError, match="HTTP 403.*nothing was submitted or recorded"):
            submit([spec], wait=False, registry=registry)
        assert registry.list(limit=None) == [] and firecrest.submissions == before
        monkeypatch.setenv("FIRECREST_TEST_CLIENT_SECRET", "wrong")
        with pytest.raises(GatewayError, match="HTTP 401.*backend.credentials"):
            get_backend(backend_conf).files().walk(home)
        monkeypatch.setenv("FIRECREST_TEST_CLIENT_ID", CLIENT)
        monkeypatch.setenv("FIRECREST_TEST_CLIENT_SECRET", SECRET)
        with pytest.raises(ConfigError, match="backend.machine: 'daint' is not a system of .*testsys"):
            get_backend({**backend_conf, "machine": "daint"}).files().walk(home)
        with pytest.raises(ConfigError, match="client_id and client_secret"):
            get_backend({**backend_conf, "credentials": {}}).files().walk(home)
        with pytest.raises(ConfigError, match="backend.workdir"):
            get_backend({**backend_conf, "workdir": None}).render(make_spec("ok"))

    def test_an_unreachable_gateway_is_retried_then_named(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dead = f"http://127.0.0.1:{port}"
        spec = make_spec("ok")
        spec.config["backend"] = {
            **backend_conf,
            "url": f"{dead}/hpc/firecrest/v2",
            "token_url": f"{dead}/token",
            "retries": 3,
            "retry_delay": 0.05,
        }
        registry = Registry()
        started = time.monotonic()
        with pytest.raises(GatewayError, match="could not be reached after 3 tries") as error:
            submit([spec], wait=False, registry=registry)
        assert "backend.url" in str(error.value) and time.monotonic() - started < 30
        assert registry.list(limit=None) == []  # connected before anything was recorded

    # -- adopt, a job the gateway forgets, cancel and logs ----------------------------------------

    def test_adopt_finds_accepted_jobs_by_name(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict
    ) -> None:
        backend = get_backend(backend_conf)
        accepted, never = make_spec("ok", index=0), make_spec("ok", index=1)
        job_id = backend.submit(accepted)  # accepted by the gateway, never recorded
        assert backend.adopt([accepted, never]) == {accepted.run_id: job_id}
        assert wait_all(backend, [_ref(accepted, job_id)]) == {accepted.run_id: JobState.SUCCEEDED}

    def test_a_job_the_gateway_no_longer_knows_is_unknown(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, firecrest: FirecrestServer
    ) -> None:
        backend = get_backend(backend_conf)
        spec = make_spec("sleep", seconds=60)
        ref = _ref(spec, backend.submit(spec))
        wait_state(backend, ref, JobState.RUNNING)
        firecrest.vanish(parse_job_ref(ref.job_id)[0])
        backend._statuses.clear()
        status = backend.status([ref])[spec.run_id]
        assert status.state is JobState.UNKNOWN and "no longer knows" in status.message

    def test_cancel_a_running_job_after_reading_its_output(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, firecrest: FirecrestServer
    ) -> None:
        backend = get_backend(backend_conf)
        spec = make_spec("sleep", seconds=60)
        ref = _ref(spec, backend.submit(spec))
        wait_state(backend, ref, JobState.RUNNING)
        deadline = time.monotonic() + 30
        while "sleeping" not in backend.logs(ref):
            assert time.monotonic() < deadline, "no output from the running job"
            time.sleep(0.2)
        backend.cancel([ref])
        assert wait_all(backend, [ref], timeout=30) == {spec.run_id: JobState.CANCELLED}
        assert (
            "DELETE",
            f"{PREFIX}/compute/{SYSTEM}/jobs/{parse_job_ref(ref.job_id)[0]}",
            "",
        ) in firecrest.requests
        assert backend.status([ref])[spec.run_id].message == "cancelled"

    # -- files ------------------------------------------------------------------------------------

    # pyfirecrest posts the completion of a staged upload as ``data=str``, which httpx deprecates
    @pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
    def test_files_walk_download_resume_and_upload(
        self, backend_conf: dict, firecrest: FirecrestServer, tmp_path: Path
    ) -> None:
        data = firecrest.root / "data"
        (data / "a").mkdir(parents=True)
        big = os.urandom(2_500_000)  # above pyfirecrest's 1 MiB: staged through a transfer job
        (data / "a" / "big.bin").write_bytes(big)
        (data / "x.txt").write_text("hello\n")
        (data / ".hidden").write_text("h")
        files = get_backend(backend_conf).files()
        assert files.resumable_download and not files.resumable_upload
        entries = {e.path: e.size for e in files.walk(str(data))}
        assert entries == {f"{data}/.hidden": 1, f"{data}/a/big.bin": 2_500_000, f"{data}/x.txt": 6}
        assert [(e.path, e.size) for e in files.walk(f"{data}/x.txt")] == [(f"{data}/x.txt", 6)]
        assert files.size(f"{data}/x.txt") == 6 and files.size(f"{data}/none") is None
        assert files.size(str(data)) is None
        with pytest.raises(FileNotFoundError):
            files.walk(f"{data}/none")
        with pytest.raises(GatewayError, match="HTTP 403"):
            files.walk("/etc")

        # an interrupted download continues where it stopped (HTTP Range on the staged file)
        local = tmp_path / "local"
        (local / "a").mkdir(parents=True)
        (local / "a" / "big.bin").write_bytes(big[:1_000_000])
        result = copy(Side(str(data), "fc", files), Side(str(local), None, LocalFiles()), progress=False)
        assert (result.copied, result.resumed, result.failed) == (2, 1, [])
        assert (local / "a" / "big.bin").read_bytes() == big
        assert (local / "x.txt").read_text() == "hello\n"
        assert any(
            m == "GET" and p.startswith("/s3/") and r == "bytes=1000000-" for m, p, r in firecrest.requests
        )
        moved: list[int] = []
        files.download(f"{data}/x.txt", tmp_path / "x.txt", progress=moved.append)
        assert (tmp_path / "x.txt").read_text() == "hello\n" and sum(moved) == 6

        # an upload creates the parents; a large one goes through the staging area and a transfer job
        (tmp_path / "up.bin").write_bytes(big[:123_456])
        files.upload(tmp_path / "up.bin", f"{firecrest.root}/new/dir/up.bin", progress=moved.append)
        assert (firecrest.root / "new" / "dir" / "up.bin").read_bytes() == big[:123_456]
        (tmp_path / "big.bin").write_bytes(big)
        files.upload(tmp_path / "big.bin", f"{firecrest.root}/new/big.bin", progress=moved.append)
        assert (firecrest.root / "new" / "big.bin").read_bytes() == big
        assert sum(moved) == 6 + 123_456 + len(big)
        assert files.size(f"{firecrest.root}/new/big.bin") == len(big)


# -- through the command line ---------------------------------------------------------------------


@pytest.fixture
def toy_env(cli_env: dict[str, str], toy_project: Path, firecrest: FirecrestServer) -> dict[str, str]:
    """The toy project, with a backend ``fc`` for the test system (one submission at a time)."""
    (toy_project / "conf" / "backend").mkdir()
    (toy_project / "conf" / "backend" / "fc.yaml").write_text(
        "defaults:\n  - local\n  - _self_\n"
        "name: fc\nkind: firecrest\nmax_parallel: 1\nretries: 2\nretry_delay: 0.1\n"
        f"url: {firecrest.base}\ntoken_url: {firecrest.token_url}\nmachine: {SYSTEM}\n"
        f"workdir: {firecrest.root / 'scratch' / 'toy'}\n"
        "credentials:\n"
        "  client_id: ${secret:env:FIRECREST_TEST_CLIENT_ID}\n"
        "  client_secret: ${secret:env:FIRECREST_TEST_CLIENT_SECRET}\n"
        "resources: {time: 10m}\n"
        f"environment: {{venv: {sys.prefix}}}\n"
    )
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}


def test_dry_run_with_the_shipped_daint_config_submits_nothing(
    run_cli, toy_env: dict[str, str], toy_project: Path, firecrest: FirecrestServer
) -> None:
    env = {k: v for k, v in toy_env.items() if not k.startswith("FIRECREST_")}  # no credentials needed
    seen = len(firecrest.requests)
    result = run_cli(
        ["app=toy", "backend=daint", f"backend.url={firecrest.base}", "dry_run=true"],
        toy_project,
        env,
        check=True,
    )
    out = "\n".join(line.rstrip() for line in result.stdout.splitlines())  # rich pads the lines
    assert f"POST {firecrest.base}/compute/daint/jobs" in out
    for line in (
        "#SBATCH --partition=normal",
        "#SBATCH --account=s1234",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --cpus-per-task=12",
        "module load daint-gpu",
    ):
        assert line in out, line
    assert "job.working_directory: /" in out and "/spec.yaml" in out and "/code/toyapp.py" in out
    assert "nothing was submitted" in out
    assert len(firecrest.requests) == seen, "a dry run does not talk to the gateway"
    assert Registry().list(limit=None) == []


def test_wrong_client_secret_is_refused_and_nothing_is_submitted(
    run_cli, toy_env: dict[str, str], toy_project: Path, firecrest: FirecrestServer
) -> None:
    before, created = firecrest.submissions, len([r for r in firecrest.requests if "/ops/" in r[1]])
    bad = run_cli(
        ["app=toy", "backend=fc"], toy_project, {**toy_env, "FIRECREST_TEST_CLIENT_SECRET": "pw-x7"}
    )
    assert bad.returncode != 0
    assert "HTTP 401" in bad.stderr and "backend.credentials" in bad.stderr
    assert "nothing was submitted" in bad.stderr
    assert "Traceback" not in bad.stderr and "pw-x7" not in bad.stderr + bad.stdout
    assert firecrest.submissions == before
    assert len([r for r in firecrest.requests if "/ops/" in r[1]]) == created, "nothing was uploaded"
    assert Registry().list(limit=None) == []  # the registry as it was


def test_http_500_mid_sweep_then_resume_submits_only_the_rest(
    run_cli, toy_env: dict[str, str], toy_project: Path, firecrest: FirecrestServer
) -> None:
    firecrest.fail_submission(2)
    cut = run_cli(["-m", "app=toy", "backend=fc", "model.learning_rate=0.01,0.02,0.03"], toy_project, toy_env)
    assert cut.returncode != 0
    assert "HTTP 500" in cut.stderr and "maelstrom runs resume" in cut.stderr
    registry = Registry()
    records = sorted(registry.list(limit=None), key=lambda r: r.sweep_index)
    assert [bool(r.job_id) for r in records] == [True, False, False]
    sweep_id = records[0].sweep_id
    run_ids = {r.run_id for r in records}
    assert _job_names(firecrest, run_ids) == [records[0].run_id]

    resumed = run_cli(["maelstrom", "runs", "resume", sweep_id], toy_project, toy_env, check=True)
    assert "0 job(s) found on the cluster and recorded, 2 submitted now" in resumed.stdout
    records = registry.list(limit=None)
    assert all(r.job_id for r in records) and len({r.job_id for r in records}) == 3
    assert sorted(_job_names(firecrest, run_ids)) == sorted(run_ids), "none twice"
    watch = run_cli(
        ["maelstrom", "runs", "watch", sweep_id, "--interval", "1"], toy_project, toy_env, timeout=180
    )
    assert "3 succeeded" in watch.stderr, watch.stderr


def _job_names(server: FirecrestServer, run_ids: set[str]) -> list[str]:
    """The names of the server's jobs that are among ``run_ids``, one entry per job."""
    infos = server.slurm_info(server.compute_jobs(CLIENT))
    return [str(i["JobName"]) for i in infos.values() if i["JobName"] in run_ids]


# -- Hydra's launcher suites ------------------------------------------------------------------------

#: Hydra apps that are not maelstrom-run apps take their backend from ``hydra.launcher.backend``:
#: the test system from the environment, the credentials as secret references.
ON_FIRECREST = [
    "hydra.launcher.wait=true",
    "++hydra.launcher.backend={name: firecrest, kind: firecrest, max_parallel: 4, retries: 2,"
    f" machine: {SYSTEM}, url: '${{oc.env:MAELSTROM_TEST_FIRECREST_URL}}',"
    " token_url: '${oc.env:MAELSTROM_TEST_FIRECREST_TOKEN_URL}',"
    " workdir: '${oc.env:MAELSTROM_TEST_FIRECREST_WORKDIR}',"
    " credentials: {client_id: '${secret:env:FIRECREST_TEST_CLIENT_ID}',"
    " client_secret: '${secret:env:FIRECREST_TEST_CLIENT_SECRET}'},"
    f" resources: {{time: 10m}}, environment: {{venv: '{sys.prefix}'}}}}",
]


@pytest.mark.parametrize("launcher_name, overrides", [("maelstrom", ON_FIRECREST)], ids=["firecrest"])
class TestMaelstromLauncherOnFirecrest(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=maelstrom", *ON_FIRECREST])],
    ids=["firecrest"],
)
class TestMaelstromLauncherIntegrationOnFirecrest(IntegrationTestSuite):
    pass
